//! The periodic full rebuild of the routing snapshot: the safety net for changes made
//! to the database directly, which no notification or change feed reports.

use std::sync::Arc;
use std::time::Duration;

use tm_http::AppState;
use tm_store::RoutingTable;
use tm_telemetry::Metrics;
use tokio_util::sync::CancellationToken;

use super::Worker;

/// How long one instance may hold the rebuild lock; a rebuild taking longer (or an
/// instance dying in one) lets the next instance start its own.
const REBUILD_LOCK_TTL: Duration = Duration::from_secs(300);

/// How often an instance waiting its turn asks for the rebuild lock again.
const LOCK_RETRY: Duration = Duration::from_millis(250);

/// Rebuilds the snapshot from scratch every period. With Redis, instances take turns: a
/// full read of every route is the most expensive query there is, and a fleet doing it
/// at once would load the database N-fold. Without Redis (or while it is unusable), no
/// turns. It runs apart from [`super::Follow`], so that waiting its turn, or a long
/// rebuild, never holds up notifications and catch-ups.
pub(crate) struct Rebuild {
    routing: Arc<RoutingTable>,
    redis: Option<Arc<tm_redis::Redis>>,
    metrics: Arc<Metrics>,
    every: Duration,
}

impl Rebuild {
    pub(crate) fn new(state: &AppState, every: Duration) -> Self {
        Self {
            routing: state.routing.clone(),
            redis: state.redis.clone(),
            metrics: state.metrics.clone(),
            every,
        }
    }

    /// One rebuild, in this instance's turn.
    async fn rebuild(&self) {
        let lock = self.take_turn().await;
        match self.routing.reload().await {
            Ok(routes) => tracing::info!(routes, "routing snapshot reloaded"),
            Err(err) => tracing::warn!(error = %err,
                "routing snapshot reload failed; serving the previous one"),
        }
        if let (Some(redis), Some(lock)) = (&self.redis, lock) {
            let _ = redis.unlock(lock).await;
        }
    }

    /// Waits for the rebuild lock, for as long as another instance may hold it; `None`
    /// without Redis, while it is unusable, or when the holder kept it too long.
    async fn take_turn(&self) -> Option<tm_redis::Lock> {
        let redis = self.redis.as_ref()?;
        let deadline = tokio::time::Instant::now() + REBUILD_LOCK_TTL;
        loop {
            match redis.try_lock("snapshot-rebuild", REBUILD_LOCK_TTL).await {
                Ok(Some(held)) => return Some(held),
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(LOCK_RETRY).await;
                }
                Ok(None) => {
                    tracing::warn!(
                        "another instance held the rebuild lock too long; rebuilding anyway"
                    );
                    return None;
                }
                Err(tm_redis::Unavailable) => {
                    self.metrics.observe_redis_fallback("lock");
                    return None;
                }
            }
        }
    }
}

impl Worker for Rebuild {
    const NAME: &'static str = "snapshot rebuilder";

    async fn run(self, shutdown: CancellationToken) {
        let mut tick = super::ticker(self.every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let rebuild = self.rebuild();
            tokio::pin!(rebuild);
            loop {
                tokio::select! {
                    // Stopping drops a rebuild under way; a lock it held expires with
                    // its TTL.
                    _ = shutdown.cancelled() => return,
                    () = &mut rebuild => break,
                    // One at a time, on a fixed schedule: the periods that pass while a
                    // rebuild runs (or waits its turn) start none of their own.
                    _ = tick.tick() => {}
                }
            }
        }
    }
}
