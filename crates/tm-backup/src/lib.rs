//! Backups of the registry's store, and their restore.
//!
//! A backup is the store's consistent export ([`tm_store::BackupStore::export`]), each
//! file compressed with Zstandard and uploaded to the [`Target`] under a folder of its
//! own (`tm-backup-<UTC time>`), then its [`Manifest`] — time, build version, backend,
//! schema version, every table's rows and digest, every file's size and SHA-256 —
//! written last. It is then verified: downloaded back, checked against the manifest,
//! restored into a scratch store and compared table by table; the manifest records when
//! it was verified. Every run is recorded in the store, whatever its outcome (what the
//! backup metrics show), and retention deletes the backups no longer kept.

pub mod retention;
mod target;

use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tm_config::{BackupConfig, Retention};
use tm_store::{BackupOutcome, BackupRun, Export, Store, StoreError};

pub use target::{Target, MANIFEST};

/// How every backup's folder name starts; the rest is its UTC start time.
pub const NAME_PREFIX: &str = "tm-backup-";

/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;

/// A folder with no manifest older than this is a backup that did not finish, and is
/// deleted by retention (a younger one may be in the making).
const UNFINISHED_AFTER: chrono::Duration = chrono::Duration::days(1);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Target(String),
    #[error("local file: {0}")]
    Io(#[from] std::io::Error),
    /// The backup is not what its manifest says, or its restore differs from it.
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("{0}")]
    NotFound(String),
}

/// What a backup holds, written last into its folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The build that made it.
    pub version: String,
    pub compression: String,
    /// The compressed files, as stored.
    pub files: Vec<StoredFile>,
    /// The store's export: backend, schema version, tables with rows and digests.
    pub store: Export,
    /// When it was downloaded back, restored into a scratch store and found equal.
    pub verified_at: Option<DateTime<Utc>>,
}

/// One file of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    /// Its name in the backup's folder.
    pub name: String,
    /// The export's file it holds, compressed.
    pub source: String,
    /// That file's size.
    pub source_bytes: u64,
    pub bytes: u64,
    pub sha256: String,
}

impl Manifest {
    /// Bytes stored, the manifest aside.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// What a backup run did.
#[derive(Clone, Debug)]
pub struct Report {
    pub location: String,
    pub manifest: Manifest,
    pub seconds: f64,
    /// Backups retention deleted.
    pub deleted: Vec<String>,
}

/// Makes a backup to the configured target, verifies it, records the run and applies
/// retention. A backup that was written but could not be verified is an error too
/// ([`BackupError::Verify`]); it stays in the target, recorded as unverified.
pub async fn run(
    store: &dyn Store,
    config: &BackupConfig,
    version: &str,
) -> Result<Report, BackupError> {
    let run = Run::start(store);
    let target = match Target::open(&config.target) {
        Ok(target) => target,
        Err(e) => {
            return Err(run
                .failed(BackupOutcome::Failed, &config.target, 0, e)
                .await)
        }
    };
    let name = format!(
        "{NAME_PREFIX}{}",
        run.started_at.format("%Y%m%dT%H%M%S%3fZ")
    );
    let location = target.location(&name);
    let mut manifest = match write(store, &target, &name, run.started_at, version).await {
        Ok(manifest) => manifest,
        Err(e) => return Err(run.failed(BackupOutcome::Failed, &location, 0, e).await),
    };
    let bytes = manifest.bytes();
    if let Err(e) = verify(store, &target, &manifest).await {
        return Err(run
            .failed(BackupOutcome::Unverified, &location, bytes, e)
            .await);
    }
    manifest.verified_at = Some(Utc::now());
    if let Err(e) = target.put(&name, MANIFEST, manifest_json(&manifest)).await {
        return Err(run
            .failed(BackupOutcome::Unverified, &location, bytes, e)
            .await);
    }
    let held = format!(
        "{} routes, {} keys, {} audit rows",
        manifest.store.rows("routes").unwrap_or(0),
        manifest.store.rows("api_keys").unwrap_or(0),
        manifest.store.rows("audit_log").unwrap_or(0)
    );
    let seconds = run
        .record(BackupOutcome::Verified, &location, bytes, held)
        .await?;
    // A backup made and verified stands even if old ones could not be deleted.
    let deleted = match prune(&target, Utc::now(), config.retention).await {
        Ok(deleted) => deleted,
        Err(e) => {
            tracing::warn!(target = %target, error = %e, "backup retention failed");
            Vec::new()
        }
    };
    Ok(Report {
        location,
        manifest,
        seconds,
        deleted,
    })
}

/// One backup run, recorded in the store when it ends.
struct Run<'a> {
    store: &'a dyn Store,
    id: uuid::Uuid,
    started_at: DateTime<Utc>,
    clock: Instant,
}

impl<'a> Run<'a> {
    fn start(store: &'a dyn Store) -> Self {
        Self {
            store,
            id: uuid::Uuid::now_v7(),
            started_at: Utc::now(),
            clock: Instant::now(),
        }
    }

    /// Records how the run ended; how long it took.
    async fn record(
        &self,
        outcome: BackupOutcome,
        location: &str,
        bytes: u64,
        detail: String,
    ) -> Result<f64, StoreError> {
        let seconds = self.clock.elapsed().as_secs_f64();
        let run = BackupRun {
            id: self.id,
            started_at: self.started_at,
            finished_at: Utc::now(),
            outcome,
            location: location.to_owned(),
            bytes,
            duration_seconds: seconds,
            detail,
        };
        self.store.record_backup(&run).await?;
        Ok(seconds)
    }

    /// Records a run that did not end verified, and gives back its error; a failure to
    /// record it is logged (the run's own error is what the caller reports).
    async fn failed(
        &self,
        outcome: BackupOutcome,
        location: &str,
        bytes: u64,
        error: BackupError,
    ) -> BackupError {
        if let Err(e) = self
            .record(outcome, location, bytes, error.to_string())
            .await
        {
            tracing::error!(error = %e, run = %self.id, "the backup run could not be recorded");
        }
        error
    }
}

/// Exports the store, compresses and uploads each file, then the manifest.
async fn write(
    store: &dyn Store,
    target: &Target,
    name: &str,
    started_at: DateTime<Utc>,
    version: &str,
) -> Result<Manifest, BackupError> {
    let scratch = tempfile::tempdir()?;
    let export_dir = scratch.path().join("export");
    tokio::fs::create_dir(&export_dir).await?;
    let export = store.export(&export_dir).await?;
    let mut files = Vec::new();
    for source in &export.files {
        let compressed = scratch.path().join(format!("{source}.zst"));
        let source_bytes = tokio::fs::metadata(export_dir.join(source)).await?.len();
        compress(&export_dir.join(source), &compressed).await?;
        // The export's file is no longer needed: keep the scratch space to one copy.
        tokio::fs::remove_file(export_dir.join(source)).await?;
        let stored = format!("{source}.zst");
        let (bytes, sha256) = target.upload(name, &stored, &compressed).await?;
        tokio::fs::remove_file(&compressed).await?;
        files.push(StoredFile {
            name: stored,
            source: source.clone(),
            source_bytes,
            bytes,
            sha256,
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        name: name.to_owned(),
        started_at,
        finished_at: Utc::now(),
        version: version.to_owned(),
        compression: "zstd".into(),
        files,
        store: export,
        verified_at: None,
    };
    target.put(name, MANIFEST, manifest_json(&manifest)).await?;
    Ok(manifest)
}

fn manifest_json(manifest: &Manifest) -> Vec<u8> {
    let mut json = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
    json.push(b'\n');
    json
}

/// Downloads the backup's files into `dir`, checks each against the manifest and
/// decompresses it: the export as it was written.
async fn fetch(target: &Target, manifest: &Manifest, dir: &Path) -> Result<(), BackupError> {
    for file in &manifest.files {
        let compressed = dir.join(&file.name);
        let (bytes, sha256) = target
            .download(&manifest.name, &file.name, &compressed)
            .await?;
        if bytes != file.bytes || sha256 != file.sha256 {
            return Err(BackupError::Verify(format!(
                "{} of {} holds {bytes} bytes with SHA-256 {sha256}; the manifest says {} \
                 bytes with {}",
                file.name, manifest.name, file.bytes, file.sha256
            )));
        }
        decompress(&compressed, &dir.join(&file.source)).await?;
        tokio::fs::remove_file(&compressed).await?;
    }
    Ok(())
}

/// Downloads the backup back, restores it into a scratch store and compares every table
/// with the manifest.
pub async fn verify(
    store: &dyn Store,
    target: &Target,
    manifest: &Manifest,
) -> Result<(), BackupError> {
    let scratch = tempfile::tempdir()?;
    fetch(target, manifest, scratch.path()).await?;
    let restored = store
        .restore_scratch(scratch.path(), &manifest.store)
        .await
        .map_err(|e| match e {
            StoreError::Refused(why) => BackupError::Verify(why),
            other => BackupError::Store(other),
        })?;
    let differences = tm_store::compare(&manifest.store.tables, &restored);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(BackupError::Verify(differences.join("; ")))
    }
}

/// Restores the backup at `from` — a backup's own location (`<target>/tm-backup-…`),
/// or a target, whose newest verified backup is taken — into `store`. Refused over a
/// store holding routes, keys, audit rows or webhooks unless `force`.
pub async fn restore(store: &dyn Store, from: &str, force: bool) -> Result<Manifest, BackupError> {
    let from = from.trim_end_matches('/');
    let (target, name) = match from.rsplit_once('/') {
        Some((parent, last)) if last.starts_with(NAME_PREFIX) => (
            Target::open(if parent.is_empty() { "/" } else { parent })?,
            last.to_owned(),
        ),
        _ => {
            let target = Target::open(from)?;
            let newest = list(&target)
                .await?
                .into_iter()
                .rev()
                .find_map(|(name, manifest)| {
                    manifest.filter(|m| m.verified_at.is_some()).map(|_| name)
                })
                .ok_or_else(|| BackupError::NotFound(format!("{from} holds no verified backup")))?;
            (target, newest)
        }
    };
    let manifest = read_manifest(&target, &name).await?.ok_or_else(|| {
        BackupError::NotFound(format!(
            "{} has no {MANIFEST}: not a backup, or one that did not finish",
            target.location(&name)
        ))
    })?;
    let scratch = tempfile::tempdir()?;
    fetch(&target, &manifest, scratch.path()).await?;
    store
        .restore(scratch.path(), &manifest.store, force)
        .await?;
    Ok(manifest)
}

/// Every backup folder of `target`, oldest first, with its manifest if it has one.
pub async fn list(target: &Target) -> Result<Vec<(String, Option<Manifest>)>, BackupError> {
    let mut backups = Vec::new();
    for name in target.backups().await? {
        let manifest = read_manifest(target, &name).await?;
        backups.push((name, manifest));
    }
    Ok(backups)
}

async fn read_manifest(target: &Target, name: &str) -> Result<Option<Manifest>, BackupError> {
    let Some(bytes) = target.read(name, MANIFEST).await? else {
        return Ok(None);
    };
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        BackupError::Verify(format!("the manifest of {}: {e}", target.location(name)))
    })?;
    if manifest.format != FORMAT {
        return Err(BackupError::Verify(format!(
            "{} is of manifest format {}; this build reads {FORMAT}",
            target.location(name),
            manifest.format
        )));
    }
    Ok(Some(manifest))
}

/// Deletes the backups retention no longer keeps: verified ones beyond the policy,
/// unverified ones older than the newest verified, and unfinished ones older than a
/// day. Returns the names deleted.
pub async fn prune(
    target: &Target,
    now: DateTime<Utc>,
    policy: Retention,
) -> Result<Vec<String>, BackupError> {
    let backups = list(target).await?;
    let verified: Vec<(&str, DateTime<Utc>)> = backups
        .iter()
        .filter_map(|(name, m)| {
            m.as_ref()
                .filter(|m| m.verified_at.is_some())
                .map(|m| (name.as_str(), m.started_at))
        })
        .collect();
    let times: Vec<DateTime<Utc>> = verified.iter().map(|(_, t)| *t).collect();
    let keep = retention::kept(&times, now, policy);
    let newest_verified = times.iter().max().copied();
    let mut doomed: Vec<&str> = verified
        .iter()
        .enumerate()
        .filter(|(i, _)| !keep.contains(i))
        .map(|(_, (name, _))| *name)
        .collect();
    for (name, manifest) in &backups {
        match manifest {
            Some(m) if m.verified_at.is_none() => {
                if newest_verified.is_some_and(|newest| m.started_at < newest) {
                    doomed.push(name);
                }
            }
            Some(_) => {}
            None => {
                if started(name).is_some_and(|t| now - t > UNFINISHED_AFTER) {
                    doomed.push(name);
                }
            }
        }
    }
    let mut deleted = Vec::new();
    for name in doomed {
        target.delete(name).await?;
        tracing::info!(backup = %target.location(name), "backup deleted by retention");
        deleted.push(name.to_owned());
    }
    Ok(deleted)
}

/// When the backup named `name` started, from its name.
fn started(name: &str) -> Option<DateTime<Utc>> {
    let time = name.strip_prefix(NAME_PREFIX)?;
    chrono::NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%S%3fZ")
        .ok()
        .map(|t| t.and_utc())
}

/// Zstandard's default level: fast, and most of the gain.
const LEVEL: i32 = 3;

async fn compress(from: &Path, to: &Path) -> Result<(), BackupError> {
    let (from, to) = (from.to_owned(), to.to_owned());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let input = std::fs::File::open(from)?;
        let mut output = std::fs::File::create(to)?;
        zstd::stream::copy_encode(input, &mut output, LEVEL)?;
        output.sync_all()
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    Ok(())
}

async fn decompress(from: &Path, to: &Path) -> Result<(), BackupError> {
    let (from, to) = (from.to_owned(), to.to_owned());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let input = std::fs::File::open(from)?;
        let mut output = std::fs::File::create(to)?;
        zstd::stream::copy_decode(input, &mut output)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_name_tells_when_it_started() {
        let t = Utc::now();
        let name = format!("{NAME_PREFIX}{}", t.format("%Y%m%dT%H%M%S%3fZ"));
        let back = started(&name).expect("parsed");
        assert_eq!(back.timestamp_millis(), t.timestamp_millis());
        assert_eq!(started("tm-backup-garbage"), None);
        assert_eq!(started("other-20260101T000000000Z"), None);
    }
}
