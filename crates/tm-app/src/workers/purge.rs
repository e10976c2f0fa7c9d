//! The `purge` job: deletes what the database keeps for a bounded time, expired
//! idempotency records and events older than `TM_EVENTS_RETENTION`. Scheduled every
//! [`PURGE_EVERY`] by [`super::Schedule`], run by whichever job runner claims it.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tm_store::{ClaimedJob, Store};

use super::jobs::{Handler, JobError};

/// The job's kind.
pub(crate) const PURGE: &str = "purge";

/// How often it is scheduled.
pub(crate) const PURGE_EVERY: Duration = Duration::from_secs(600);

pub(crate) struct Purge {
    store: Arc<dyn Store>,
    event_retention: Duration,
}

impl Purge {
    pub(crate) fn new(store: Arc<dyn Store>, event_retention: Duration) -> Self {
        Self {
            store,
            event_retention,
        }
    }

    async fn purge(&self) -> Result<(), JobError> {
        let failed = |what: &str, err: tm_store::StoreError| {
            JobError::Transient(format!("deleting {what} failed: {err}"))
        };
        let purged = self
            .store
            .purge_idempotency_keys()
            .await
            .map_err(|e| failed("expired idempotency records", e))?;
        if purged > 0 {
            tracing::debug!(purged, "expired idempotency records deleted");
        }
        let retention = chrono::Duration::from_std(self.event_retention)
            .map_err(|_| JobError::Permanent("TM_EVENTS_RETENTION is out of range".into()))?;
        let purged = self
            .store
            .purge_events(tm_domain::now() - retention)
            .await
            .map_err(|e| failed("events past their retention", e))?;
        if purged > 0 {
            tracing::debug!(purged, "events past their retention deleted");
        }
        Ok(())
    }
}

impl Handler for Purge {
    fn run<'a>(&'a self, _job: &'a ClaimedJob) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(self.purge())
    }
}
