//! The periodic sample of pool figures, replica lag and snapshot size into the metrics
//! and the health probes.

use std::time::Duration;

use tm_http::AppState;
use tokio_util::sync::CancellationToken;

use super::Worker;

/// Every period: checks the read replicas, probes Redis while it is marked unusable,
/// samples the metrics (the job queue's depths and the outbox lag included) and forgets idle rate-limit
/// buckets.
pub(crate) struct Sample {
    state: AppState,
    every: Duration,
}

impl Sample {
    pub(crate) fn new(state: &AppState, every: Duration) -> Self {
        Self {
            state: state.clone(),
            every,
        }
    }

    async fn sample(&self) {
        let state = &self.state;
        state.check_replicas().await;
        if let Some(redis) = &state.redis {
            if redis.degraded() {
                // The probe that lets the breaker close when Redis is back.
                let _ = redis.ping().await;
            }
        }
        tm_http::sample_metrics(state);
        match state.store.queue_depths().await {
            Ok(depths) => {
                let live: Vec<(&str, u64)> =
                    depths.live.iter().map(|(q, n)| (q.as_str(), *n)).collect();
                state.metrics.set_queue_depths(&live, depths.dead);
            }
            Err(err) => tracing::debug!(error = %err, "sampling the job queue's depth failed"),
        }
        super::relay::sample_lag(state.store.as_ref(), &state.relays, &state.metrics).await;
        match state.store.backup_state().await {
            Ok(backups) => state.metrics.set_backups(&backups),
            Err(err) => tracing::debug!(error = %err, "sampling the record of backups failed"),
        }
        match state.store.active_health().await {
            Ok(kept) => {
                let routes: Vec<([&str; 4], bool)> = kept
                    .iter()
                    .map(|h| {
                        let k = &h.key;
                        (
                            [
                                k.tenant.as_str(),
                                k.service.as_str(),
                                k.env.as_str(),
                                k.version.as_str(),
                            ],
                            h.state == tm_domain::HealthState::Online,
                        )
                    })
                    .collect();
                state.metrics.set_endpoint_health(&routes);
            }
            Err(err) => tracing::debug!(error = %err, "sampling the endpoints' health failed"),
        }
        state.limiter.forget_idle();
    }
}

impl Worker for Sample {
    const NAME: &'static str = "metrics sampler";

    async fn run(self, shutdown: CancellationToken) {
        // The first sample at once, then one every period.
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.sample().await,
            }
        }
    }
}
