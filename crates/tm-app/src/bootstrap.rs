//! The first admin key of a store that never had one, and the file it is kept in.

use std::path::Path;

use tm_domain::{ApiKey, Grant, KeyId};
use tm_store::{KeyRecord, KeyRing};

use crate::StartError;

/// On a store that never had a key, makes an admin key (usable at once through `keys`)
/// and writes it to `<data_dir>/bootstrap-admin.key` (mode 0600); returns it so that the
/// caller can show it once. Only one instance of a fleet wins; the others find a key
/// already made and return `None`.
pub(crate) async fn admin_key(
    keys: &KeyRing,
    data_dir: &Path,
) -> Result<Option<ApiKey>, StartError> {
    let key = ApiKey::new(KeyId::generate(), rand::random());
    let record = KeyRecord::new(&key, "bootstrap admin".to_owned(), Grant::Admin);
    let id = record.id;
    if !keys.create_first(record).await.map_err(StartError::Keys)? {
        return Ok(None);
    }
    let path = data_dir.join("bootstrap-admin.key");
    write_secret_file(&path, &key.expose()).map_err(|source| StartError::BootstrapFile {
        path: path.clone(),
        source,
    })?;
    tracing::info!(key.id = %id, path = %path.display(), "bootstrap admin key created");
    Ok(Some(key))
}

/// Writes `contents` to a new file readable by its owner only.
fn write_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    writeln!(file, "{contents}")?;
    file.sync_all()
}
