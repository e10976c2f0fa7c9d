//! The periodic deletion of expired idempotency records from the database.

use std::sync::Arc;
use std::time::Duration;

use tm_http::AppState;
use tm_store::Store;
use tokio_util::sync::CancellationToken;

use super::Worker;

/// How often expired idempotency records are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Deletes expired idempotency records at start and every [`PURGE_EVERY`] after.
pub(crate) struct Purge {
    store: Arc<dyn Store>,
}

impl Purge {
    pub(crate) fn new(state: &AppState) -> Self {
        Self {
            store: state.store.clone(),
        }
    }

    async fn purge(&self) {
        match self.store.purge_idempotency_keys().await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired idempotency records deleted"),
            Err(err) => tracing::warn!(error = %err, "deleting expired idempotency records failed"),
        }
    }
}

impl Worker for Purge {
    const NAME: &'static str = "idempotency purge";

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
