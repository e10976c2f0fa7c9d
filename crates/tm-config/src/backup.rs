//! Backups: where they go, how often a job-running process makes one, and how many of
//! them are kept.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::render::Lines;

/// The backup settings as read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupRaw {
    /// Where backups go: a directory, or `s3://<bucket>[/<prefix>]` (credentials,
    /// region and endpoint from the standard `AWS_*` variables). Default
    /// `<data_dir>/backups`.
    pub backup_target: Option<String>,
    /// How often a job-running process makes one (`0s`: never; `traffic-manager backup`
    /// still does, e.g. from a CronJob).
    #[serde(with = "humantime_serde")]
    pub backup_interval: Duration,
    /// The newest backup of each of this many last days is kept…
    pub backup_keep_daily: u32,
    /// …of each of this many last weeks (ISO weeks)…
    pub backup_keep_weekly: u32,
    /// …and of each of this many last months; every other one is deleted.
    pub backup_keep_monthly: u32,
}

impl Default for BackupRaw {
    fn default() -> Self {
        Self {
            backup_target: None,
            backup_interval: Duration::from_secs(24 * 3600),
            backup_keep_daily: 7,
            backup_keep_weekly: 4,
            backup_keep_monthly: 12,
        }
    }
}

/// Backups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupConfig {
    /// A directory, or an `s3://` URL.
    pub target: String,
    /// `None`: no scheduled backups.
    pub interval: Option<Duration>,
    pub retention: Retention,
}

/// How many backups are kept: the newest of each of the last `daily` days, `weekly`
/// weeks and `monthly` months.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

impl BackupRaw {
    pub(crate) fn check(self, data_dir: &Path, problems: &mut Problems) -> BackupConfig {
        let target = match self.backup_target {
            Some(target) if target.trim().is_empty() => {
                problems.add("backup_target", "must not be empty");
                target
            }
            Some(target) => {
                if let Some(rest) = target.strip_prefix("s3://") {
                    if rest.split('/').next().is_none_or(str::is_empty) {
                        problems.add("backup_target", "an s3:// target must name its bucket");
                    }
                } else if target.contains("://") {
                    problems.add(
                        "backup_target",
                        "must be a directory or an s3://<bucket>[/<prefix>] URL",
                    );
                }
                target
            }
            None => data_dir.join("backups").display().to_string(),
        };
        if self.backup_keep_daily + self.backup_keep_weekly + self.backup_keep_monthly == 0 {
            problems.add(
                "backup_keep_daily",
                "with every TM_BACKUP_KEEP_* at 0, each backup would be deleted once made",
            );
        }
        BackupConfig {
            target,
            interval: (!self.backup_interval.is_zero()).then_some(self.backup_interval),
            retention: Retention {
                daily: self.backup_keep_daily,
                weekly: self.backup_keep_weekly,
                monthly: self.backup_keep_monthly,
            },
        }
    }
}

impl BackupConfig {
    /// The backup lines of `check-config`.
    pub(crate) fn render(&self, out: &mut Lines) {
        out.plain("backup_target", &self.target);
        out.duration("backup_interval", self.interval.unwrap_or_default());
        out.plain("backup_keep_daily", self.retention.daily);
        out.plain("backup_keep_weekly", self.retention.weekly);
        out.plain("backup_keep_monthly", self.retention.monthly);
    }
}
