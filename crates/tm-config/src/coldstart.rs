//! The cold-start snapshot: the signed file of the routing table and keys that an
//! instance writes while its database answers, and starts from when it does not. Off
//! unless a key to sign it with is given.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::render::Lines;

/// The cold-start settings as read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ColdStartRaw {
    /// The key the file is signed with (HMAC-SHA256): base64 of at least 32 bytes.
    pub snapshot_key: Option<String>,
    /// A file holding the same, instead.
    pub snapshot_key_file: Option<PathBuf>,
    /// Where the file is kept (default `<data_dir>/routing.snapshot`).
    pub snapshot_file: Option<PathBuf>,
    /// How often the file is written again, when the routing table or keys changed.
    #[serde(with = "humantime_serde")]
    pub snapshot_write_interval: Duration,
}

impl Default for ColdStartRaw {
    fn default() -> Self {
        Self {
            snapshot_key: None,
            snapshot_key_file: None,
            snapshot_file: None,
            snapshot_write_interval: Duration::from_secs(30),
        }
    }
}

/// Where the signing key comes from.
#[derive(Clone, Debug)]
pub enum SnapshotKeySource {
    /// `TM_SNAPSHOT_KEY`.
    Given(SecretString),
    /// `TM_SNAPSHOT_KEY_FILE`.
    File(PathBuf),
}

/// Cold start, when configured.
#[derive(Clone, Debug)]
pub struct ColdStartConfig {
    pub key: SnapshotKeySource,
    pub file: PathBuf,
    pub write_interval: Duration,
}

impl ColdStartRaw {
    pub(crate) fn check(self, data_dir: &Path, problems: &mut Problems) -> Option<ColdStartConfig> {
        problems.positive(&[("snapshot_write_interval", self.snapshot_write_interval)]);
        let key = match (self.snapshot_key, self.snapshot_key_file) {
            (Some(_), Some(_)) => {
                problems.add(
                    "snapshot_key",
                    "set TM_SNAPSHOT_KEY or TM_SNAPSHOT_KEY_FILE, not both",
                );
                return None;
            }
            (Some(key), None) => {
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(key.trim())
                    .ok();
                if decoded.is_none_or(|bytes| bytes.len() < 32) {
                    problems.add("snapshot_key", "must be the base64 of at least 32 bytes");
                }
                SnapshotKeySource::Given(SecretString::from(key))
            }
            (None, Some(file)) => SnapshotKeySource::File(file),
            (None, None) => {
                if self.snapshot_file.is_some() {
                    problems.add(
                        "snapshot_file",
                        "needs TM_SNAPSHOT_KEY or TM_SNAPSHOT_KEY_FILE to sign the file with",
                    );
                }
                return None;
            }
        };
        Some(ColdStartConfig {
            key,
            file: self
                .snapshot_file
                .unwrap_or_else(|| data_dir.join("routing.snapshot")),
            write_interval: self.snapshot_write_interval,
        })
    }
}

/// The cold-start lines of `check-config` (never the key).
pub(crate) fn render(config: Option<&ColdStartConfig>, out: &mut Lines) {
    match config {
        None => {
            out.unset("snapshot_key");
            out.unset("snapshot_file");
        }
        Some(config) => {
            match &config.key {
                SnapshotKeySource::Given(_) => out.quoted("snapshot_key", "(set)"),
                SnapshotKeySource::File(file) => out.quoted("snapshot_key_file", file.display()),
            }
            out.quoted("snapshot_file", config.file.display());
            out.duration("snapshot_write_interval", config.write_interval);
        }
    }
}
