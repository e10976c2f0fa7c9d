//! The `backup` job: makes a backup when the last verified one is older than
//! `TM_BACKUP_INTERVAL`. It is scheduled every [`BACKUP_EVERY`] (and at every start)
//! by [`super::Schedule`], so that the fleet makes one a day however often its
//! instances restart, and a failed backup is tried again within the hour.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tm_config::BackupConfig;
use tm_store::{ClaimedJob, Store};

use super::jobs::{Handler, JobError};

/// The job's kind.
pub(crate) const BACKUP: &str = "backup";

/// How often it is scheduled: how often it looks whether a backup is due.
pub(crate) const BACKUP_EVERY: Duration = Duration::from_secs(3600);

/// How long one backup may take (a store of millions of routes takes minutes).
const TIME_LIMIT: Duration = Duration::from_secs(3 * 3600);

pub(crate) struct Backup {
    store: Arc<dyn Store>,
    config: BackupConfig,
    /// Every how long a backup is due.
    interval: Duration,
}

impl Backup {
    /// `None` when no backups are scheduled (`TM_BACKUP_INTERVAL=0s`).
    pub(crate) fn new(store: Arc<dyn Store>, config: &BackupConfig) -> Option<Self> {
        Some(Self {
            store,
            interval: config.interval?,
            config: config.clone(),
        })
    }

    async fn backup(&self) -> Result<(), JobError> {
        let state = self
            .store
            .backup_state()
            .await
            .map_err(|e| JobError::Transient(format!("reading the record of backups: {e}")))?;
        let now = tm_domain::now().timestamp_millis() as f64 / 1000.0;
        // A little early rather than a day late: a run takes time, and the schedule's
        // hour is not aligned with the last backup.
        let due_after = self.interval.as_secs_f64() - BACKUP_EVERY.as_secs_f64() / 2.0;
        if state
            .last_success_unix
            .is_some_and(|last| now - last < due_after)
        {
            return Ok(());
        }
        match tm_backup::run(self.store.as_ref(), &self.config, env!("CARGO_PKG_VERSION")).await {
            Ok(report) => {
                tracing::info!(
                    backup = %report.location,
                    bytes = report.manifest.bytes(),
                    seconds = report.seconds,
                    deleted = report.deleted.len(),
                    "backup made and verified"
                );
                Ok(())
            }
            // Recorded as failed already (what the alerts see); tried again within the
            // hour by the next scheduled job, so not retried here.
            Err(e) => {
                tracing::error!(target = %self.config.target, error = %e, "backup failed");
                Ok(())
            }
        }
    }
}

impl Handler for Backup {
    fn run<'a>(&'a self, _job: &'a ClaimedJob) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(self.backup())
    }

    fn time_limit(&self, _default: Duration) -> Duration {
        TIME_LIMIT
    }
}
