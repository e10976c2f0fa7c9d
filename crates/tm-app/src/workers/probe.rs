//! Endpoint health probes: each active route whose service's policy checks it is probed
//! on its check's interval, and its health kept in the store (`route_health`).
//!
//! The routes are split into shards by route id; each shard is a job of its own kind
//! (`health.probe.<n>`), scheduled every second under a dedup key, so one instance
//! probes a shard at a time and the shards spread over the instances that run jobs.
//! A job works for a slice of time, then ends and the next one (perhaps elsewhere) takes
//! over, starting from what the store keeps: the failures in a row, the state, when each
//! route was last probed.
//!
//! A slice whose shard has no route to probe ends at once, so that a fleet without
//! health checks gives the probes no job slot but for an instant each second; while a
//! shard has routes, its job holds one of its instance's slots (`TM_JOB_CONCURRENCY`).
//!
//! A route is degraded when more probes in a row fail than its check tolerates, and
//! online again at the first that passes. A change of state is written in the service's
//! lock with an audit row (`health`), which is how every instance's snapshot hears of
//! it; failures in a row are written as they happen (so that the next slice goes on
//! counting), and a passing route's times at most every [`REFRESH_EVERY`]. A route no
//! longer checked (deactivated, its check removed) is marked `stopped`.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use tm_domain::{HealthState, ProbeProtocol, RouteId};
use tm_store::{CheckedRoute, ClaimedJob, RouteHealth, Store, StoreError};
use tm_telemetry::Metrics;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::jobs::{Handler, JobError};

/// How often the probe shards are scheduled.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How often a slice reads the checked routes again (new routes, changed checks).
const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// How often a passing route's probe times are written (its state is written at once).
const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// Probes one slice runs at once.
const CONCURRENCY: usize = 32;

/// Who health changes are audited as.
const ACTOR: &str = "health-probe";

/// The job kinds of `shards` probe shards: `health.probe.0`, … (made once, at start-up).
pub(crate) fn probe_kinds(shards: u32) -> Vec<&'static str> {
    (0..shards)
        .map(|n| &*Box::leak(format!("health.probe.{n}").into_boxed_str()))
        .collect()
}

/// The shard a route belongs to: by the random tail of its id (a UUIDv7's last 62 bits
/// are random).
fn shard_of(id: RouteId, shards: u32) -> u32 {
    let uuid = id.as_uuid();
    let bytes = uuid.as_bytes();
    let tail = u64::from_be_bytes(bytes[8..].try_into().expect("a UUID has 16 bytes"));
    u32::try_from(tail % u64::from(shards.max(1))).unwrap_or(0)
}

/// One route as a slice follows it.
struct Tracked {
    route: CheckedRoute,
    health: RouteHealth,
    /// When the store last got its probe times.
    saved_at: Option<Instant>,
    next_at: Instant,
}

/// The handler of one probe shard.
pub(crate) struct Probes {
    store: Arc<dyn Store>,
    prober: tm_webhooks::Prober,
    metrics: Arc<Metrics>,
    shard: u32,
    shards: u32,
    slice: Duration,
    stopping: CancellationToken,
}

impl Probes {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        prober: tm_webhooks::Prober,
        metrics: Arc<Metrics>,
        (shard, shards): (u32, u32),
        slice: Duration,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            store,
            prober,
            metrics,
            shard,
            shards,
            slice,
            stopping,
        }
    }

    /// One slice: probes the shard's routes as they fall due until it ends.
    async fn run_slice(&self) -> Result<(), JobError> {
        let ends = Instant::now() + self.slice;
        let mut tracked: HashMap<RouteId, Tracked> = HashMap::new();
        let mut reload_at = Instant::now();
        while Instant::now() < ends && !self.stopping.is_cancelled() {
            if Instant::now() >= reload_at {
                self.reload(&mut tracked).await.map_err(|err| {
                    JobError::Transient(format!("the checked routes are out of reach: {err}"))
                })?;
                if tracked.is_empty() {
                    // Nothing to probe: the job slot goes back at once (the next job, a
                    // second from now, looks again).
                    return Ok(());
                }
                reload_at = Instant::now() + RELOAD_EVERY;
            }
            let now = Instant::now();
            let due: Vec<RouteId> = tracked
                .iter()
                .filter(|(_, t)| t.next_at <= now)
                .map(|(id, _)| *id)
                .collect();
            if !due.is_empty() {
                let results: Vec<(RouteId, Result<(), String>)> =
                    futures::stream::iter(due.into_iter().filter_map(|id| {
                        tracked.get(&id).map(|t| {
                            let route = t.route.clone();
                            async move { (id, self.probe(&route).await) }
                        })
                    }))
                    .buffer_unordered(CONCURRENCY)
                    .collect()
                    .await;
                for (id, result) in results {
                    if let Some(t) = tracked.get_mut(&id) {
                        self.observe(t, result).await;
                    }
                }
                continue;
            }
            let wake = tracked
                .values()
                .map(|t| t.next_at)
                .chain([reload_at, ends])
                .min()
                .unwrap_or(ends);
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = self.stopping.cancelled() => {}
            }
        }
        Ok(())
    }

    /// Reads the checked routes again: routes new to the shard are followed (due when
    /// their interval has passed since their last probe), routes no longer checked are
    /// dropped and their kept health stopped.
    async fn reload(&self, tracked: &mut HashMap<RouteId, Tracked>) -> Result<(), StoreError> {
        let (checked, kept) = self.store.checked_routes().await?;
        let mine: HashMap<RouteId, CheckedRoute> = checked
            .into_iter()
            .filter(|r| shard_of(r.id, self.shards) == self.shard)
            .map(|r| (r.id, r))
            .collect();
        tracked.retain(|id, _| mine.contains_key(id));
        for (id, route) in mine {
            match tracked.get_mut(&id) {
                Some(t) => t.route = route,
                None => {
                    let health = route.health.clone().unwrap_or(RouteHealth {
                        state: HealthState::Online,
                        failures: 0,
                        last_error: None,
                        checked_at: None,
                        last_online_at: None,
                    });
                    let since = health
                        .checked_at
                        .and_then(|at| (tm_domain::now() - at).to_std().ok());
                    let interval = Duration::from_secs(u64::from(route.check.interval_seconds));
                    let wait = since.map_or(Duration::ZERO, |since| interval.saturating_sub(since));
                    tracked.insert(
                        id,
                        Tracked {
                            route,
                            health,
                            saved_at: None,
                            next_at: Instant::now() + wait,
                        },
                    );
                }
            }
        }
        for stale in kept {
            let Some(id) = stale.id else { continue };
            if tracked.contains_key(&id) || shard_of(id, self.shards) != self.shard {
                continue;
            }
            let stopped = RouteHealth {
                state: HealthState::Stopped,
                failures: 0,
                last_error: None,
                checked_at: None,
                last_online_at: None,
            };
            self.store
                .save_health(
                    id,
                    &stale.key,
                    &stopped,
                    Some(stale.state),
                    &tm_store::Actor::new(ACTOR),
                )
                .await?;
        }
        Ok(())
    }

    /// Probes `route` once; the reason it failed, if it did.
    async fn probe(&self, route: &CheckedRoute) -> Result<(), String> {
        let check = &route.check;
        let url = url::Url::parse(route.url.as_str()).map_err(|e| e.to_string())?;
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => return Err("the route's URL has no host".into()),
        };
        let port = url
            .port_or_known_default()
            .ok_or("the route's URL has no port")?;
        let expected: Vec<RangeInclusive<u16>> = check
            .expected_status
            .iter()
            .map(|r| r.first..=r.last)
            .collect();
        let request = tm_webhooks::ProbeRequest {
            protocol: match check.protocol {
                ProbeProtocol::Http => tm_webhooks::ProbeProtocol::Http,
                ProbeProtocol::Https => tm_webhooks::ProbeProtocol::Https,
                ProbeProtocol::Tcp => tm_webhooks::ProbeProtocol::Tcp,
            },
            host: &host,
            port,
            path: &check.path,
            expected: &expected,
            timeout: Duration::from_secs(u64::from(check.timeout_seconds)),
        };
        let outcome = self.prober.probe(&request).await;
        self.metrics.observe_probe(outcome.is_ok());
        outcome.map(|_| ()).map_err(|failure| failure.to_string())
    }

    /// Takes in one probe's result: the route's next probe, its health, and what of it
    /// the store gets.
    async fn observe(&self, t: &mut Tracked, result: Result<(), String>) {
        let now = tm_domain::now();
        let before = t.health.state;
        let interval = Duration::from_secs(u64::from(t.route.check.interval_seconds));
        t.next_at = Instant::now() + interval;
        t.health.checked_at = Some(now);
        let failed = result.is_err();
        match result {
            Ok(()) => {
                t.health.failures = 0;
                t.health.last_error = None;
                t.health.last_online_at = Some(now);
                t.health.state = HealthState::Online;
            }
            Err(error) => {
                t.health.failures = t.health.failures.saturating_add(1);
                t.health.last_error = Some(error.chars().take(500).collect());
                if t.health.failures > t.route.check.tolerated_failures {
                    t.health.state = HealthState::Degraded;
                } else if before == HealthState::Stopped {
                    t.health.state = HealthState::Online;
                }
            }
        }
        let changed = (t.health.state != before).then_some(before);
        let stale = t.saved_at.is_none_or(|at| at.elapsed() >= REFRESH_EVERY);
        if changed.is_none() && !failed && !stale {
            return;
        }
        if changed.is_some() {
            tracing::info!(
                route.id = %t.route.id, tenant = %t.route.key.tenant, service = %t.route.key.service,
                env = %t.route.key.env, version = %t.route.key.version,
                from = before.as_str(), to = t.health.state.as_str(),
                error = t.health.last_error.as_deref().unwrap_or(""),
                "route health changed"
            );
        }
        match self
            .store
            .save_health(
                t.route.id,
                &t.route.key,
                &t.health,
                changed,
                &tm_store::Actor::new(ACTOR),
            )
            .await
        {
            Ok(()) => t.saved_at = Some(Instant::now()),
            Err(err) => {
                // Kept in memory: written with the next probe's result, or by the next slice.
                tracing::warn!(route.id = %t.route.id, error = %err, "keeping a route's health failed");
                if changed.is_some() {
                    // Not written: the change must be seen again to be written again.
                    t.health.state = before;
                }
            }
        }
    }
}

impl Handler for Probes {
    fn run<'a>(&'a self, _job: &'a ClaimedJob) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(self.run_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_spread_over_the_shards() {
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            counts[shard_of(RouteId::generate(), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|n| (800..1200).contains(n)), "{counts:?}");
        let id = RouteId::generate();
        assert_eq!(shard_of(id, 4), shard_of(id, 4));
        assert_eq!(shard_of(id, 1), 0);
    }
}
