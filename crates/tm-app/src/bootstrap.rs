//! Key material made on first start and kept in the data directory: the first admin
//! key of a store that never had one, and the key that seals secrets at rest when none
//! is configured.
//!
//! The file is written before the key is stored: a key that works is always in the
//! file. A start that cannot write the file stores nothing, so a later start still
//! makes the first key. A start that wrote the file but could not store the key leaves
//! the file, and the next start stores the key it holds. The file is created anew
//! (never through a symbolic link, never over an existing file) and readable by its
//! owner only.

use std::io::{self, Read, Write};
use std::path::Path;

use tm_domain::{ApiKey, Grant, KeyId};
use tm_store::{KeyRecord, KeyRing};

use crate::StartError;

/// Where in the data directory the key is kept.
const FILE_NAME: &str = "bootstrap-admin.key";

/// Where in the data directory the secret key is kept when none is configured.
const SECRETS_FILE_NAME: &str = "secrets.key";

/// The keys that seal secrets at rest: `TM_SECRETS_KEY`, the file `TM_SECRETS_KEY_FILE`
/// names, or `<data_dir>/secrets.key`, made with a fresh key on first start (mode 0600).
/// Losing that file makes the secrets sealed with it unreadable: keep it with the
/// database's backups, or configure the key.
pub(crate) fn secret_keys(
    source: &tm_config::SecretKeySource,
    data_dir: &Path,
) -> Result<tm_secrets::SecretKeys, StartError> {
    use secrecy::ExposeSecret;
    let (path, spec) = match source {
        tm_config::SecretKeySource::Given(spec) => {
            return tm_secrets::SecretKeys::parse(spec.expose_secret()).map_err(|err| {
                StartError::SecretKeys {
                    path: None,
                    source: io::Error::other(err.to_string()),
                }
            })
        }
        tm_config::SecretKeySource::File(path) => {
            let spec = read_private_file(path)
                .and_then(|found| found.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound)));
            (path.clone(), spec)
        }
        tm_config::SecretKeySource::DataDir => {
            let path = data_dir.join(SECRETS_FILE_NAME);
            let spec = match read_private_file(&path) {
                Ok(Some(spec)) => Ok(spec),
                Ok(None) => {
                    let spec = tm_secrets::SecretKeys::generate_spec();
                    match create_key_file(&path, &spec) {
                        Ok(()) => {
                            tracing::info!(path = %path.display(), "secret key created; keep it with the database's backups");
                            Ok(spec)
                        }
                        // Another instance sharing this directory was quicker.
                        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                            read_private_file(&path).and_then(|found| found.ok_or(err))
                        }
                        Err(err) => Err(err),
                    }
                }
                Err(err) => Err(err),
            };
            (path, spec)
        }
    };
    let error = |source| StartError::SecretKeys {
        path: Some(path.clone()),
        source,
    };
    let spec = spec.map_err(error)?;
    tm_secrets::SecretKeys::parse(spec.trim())
        .map_err(|err| error(io::Error::other(err.to_string())))
}

/// On a store that never had a key, makes an admin key (usable at once through `keys`)
/// kept in `<data_dir>/bootstrap-admin.key` (mode 0600); returns it so that the caller
/// can show it once. Only one instance of a fleet wins; the others find a key already
/// made and return `None`.
pub(crate) async fn admin_key(
    keys: &KeyRing,
    data_dir: &Path,
) -> Result<Option<ApiKey>, StartError> {
    if !keys.is_empty() {
        return Ok(None);
    }
    let path = data_dir.join(FILE_NAME);
    let file_error = |source| StartError::BootstrapFile {
        path: path.clone(),
        source,
    };
    let (key, written) = match read_key_file(&path).map_err(file_error)? {
        // Left by an earlier start that could not store it.
        Some(key) => (key, false),
        None => {
            let key = ApiKey::new(KeyId::generate(), rand::random());
            match create_key_file(&path, &key.expose()) {
                Ok(()) => (key, true),
                // Another instance sharing this directory was quicker: its key it is.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    let theirs = read_key_file(&path).map_err(file_error)?;
                    (theirs.ok_or_else(|| file_error(err))?, false)
                }
                Err(err) => return Err(file_error(err)),
            }
        }
    };
    let id = key.id();
    let record = KeyRecord::new(&key, "bootstrap admin".to_owned(), Grant::Admin);
    // On an error the file stays: whether or not the key was stored, the file holds
    // the key a later start stores or finds stored.
    if !keys.create_first(record).await.map_err(StartError::Keys)? {
        // The store has had a key (another instance made the first one): a key made
        // here works nowhere, and its file goes.
        if written {
            if let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!(error = %err, path = %path.display(), "could not remove an unused bootstrap key file");
            }
        }
        return Ok(None);
    }
    tracing::info!(key.id = %id, path = %path.display(), "bootstrap admin key created");
    Ok(Some(key))
}

/// The key in the file at `path`, if there is a file (see [`read_private_file`]).
fn read_key_file(path: &Path) -> io::Result<Option<ApiKey>> {
    match read_private_file(path)? {
        None => Ok(None),
        Some(contents) => match ApiKey::parse(contents.trim()) {
            Some(key) => Ok(Some(key)),
            None => Err(io::Error::other("it holds no API key; remove it")),
        },
    }
}

/// What the file at `path` holds, if there is a file. The file must be a regular file
/// (a symbolic link is not followed), readable by its owner only, and short (key
/// material, not data).
fn read_private_file(path: &Path) -> io::Result<Option<String>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    no_follow(&mut options);
    let file = match options.open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(explain_symlink(err)),
    };
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::other("it is not a regular file; remove it"));
    }
    #[cfg(unix)]
    if std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o077 != 0 {
        return Err(io::Error::other(
            "others than its owner may read or change it; remove it",
        ));
    }
    let mut contents = String::new();
    // Keys are tens of bytes: anything much longer is not key material.
    file.take(4096).read_to_string(&mut contents)?;
    Ok(Some(contents))
}

/// Writes `contents` to a new file at `path` readable by its owner only; fails if
/// anything (a file, a symbolic link) is there already. A failed write removes the file.
fn create_key_file(path: &Path, contents: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    no_follow(&mut options);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(explain_symlink)?;
    let written = fill(&mut file, contents);
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

fn fill(file: &mut std::fs::File, contents: &str) -> io::Result<()> {
    // The mode given at creation is reduced by the umask; this one is not.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    writeln!(file, "{contents}")?;
    file.sync_all()
}

/// Opening fails on a symbolic link rather than following it.
fn no_follow(options: &mut std::fs::OpenOptions) {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(options, libc::O_NOFOLLOW);
    #[cfg(not(unix))]
    let _ = options;
}

/// `ELOOP` from `O_NOFOLLOW`, said plainly.
fn explain_symlink(err: io::Error) -> io::Error {
    #[cfg(unix)]
    if err.raw_os_error() == Some(libc::ELOOP) {
        return io::Error::other("it is a symbolic link, which is not followed; remove it");
    }
    err
}
