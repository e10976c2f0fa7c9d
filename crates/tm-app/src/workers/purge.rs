//! The periodic deletion of what the database keeps for a bounded time: expired
//! idempotency records, and events older than `TM_EVENTS_RETENTION`.

use std::sync::Arc;
use std::time::Duration;

use tm_http::AppState;
use tm_store::Store;
use tokio_util::sync::CancellationToken;

use super::Worker;

/// How often expired records are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Deletes expired records at start and every [`PURGE_EVERY`] after.
pub(crate) struct Purge {
    store: Arc<dyn Store>,
    event_retention: Duration,
}

impl Purge {
    pub(crate) fn new(state: &AppState, event_retention: Duration) -> Self {
        Self {
            store: state.store.clone(),
            event_retention,
        }
    }

    async fn purge(&self) {
        match self.store.purge_idempotency_keys().await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired idempotency records deleted"),
            Err(err) => tracing::warn!(error = %err, "deleting expired idempotency records failed"),
        }
        let Ok(retention) = chrono::Duration::from_std(self.event_retention) else {
            return;
        };
        match self.store.purge_events(tm_domain::now() - retention).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "events past their retention deleted"),
            Err(err) => tracing::warn!(error = %err, "deleting events past their retention failed"),
        }
    }
}

impl Worker for Purge {
    const NAME: &'static str = "purge";

    async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(PURGE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.purge().await,
            }
        }
    }
}
