//! Probes: `/healthz` and `/health/live` touch nothing; `/health/ready` checks the
//! database (and Redis) within a bound; `/health/detailed` adds the routing snapshot's
//! figures, the breakers and the bulkheads.
//!
//! One check of the dependencies answers every probe for `TM_HEALTH_CHECK_INTERVAL`
//! (probes arriving meanwhile wait for it and share it), so that probes, however many,
//! cost the database one round trip per interval. A breaker changing state since is news
//! enough to check again at once. The database's own error text is shown to callers
//! presenting an admin key only; others get a generic reason.

use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tm_resilience::BreakerState;

use crate::{ApiError, AppState};

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn live(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "uptime_seconds": state.started_at.elapsed().as_secs()}))
}

/// How the dependencies are: the database decides readiness; Redis, being optional to
/// every request, can only make the instance degraded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Readiness {
    Ready,
    Degraded,
    NotReady,
}

impl Readiness {
    fn as_str(self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::Degraded => "degraded",
            Readiness::NotReady => "not_ready",
        }
    }
}

/// The last check of the dependencies, shared by the probes while it is recent.
#[derive(Default)]
pub(crate) struct HealthChecks(tokio::sync::Mutex<Option<Checked>>);

/// What one check of the dependencies found.
#[derive(Clone)]
struct Checked {
    at: Instant,
    /// The database's and Redis's breakers just after the check.
    breakers: [Option<BreakerState>; 2],
    database: DatabaseProbe,
    database_latency: Duration,
    /// Redis's round trip, when Redis is configured.
    redis: Option<Result<Duration, tm_redis::Unavailable>>,
}

#[derive(Clone)]
enum DatabaseProbe {
    Reachable,
    /// The database's error with its causes, as they said it.
    Failed(String),
    TimedOut,
}

impl HealthChecks {
    /// A check no older than the interval, made since the breakers last changed state:
    /// the last one, or a new one.
    async fn current(&self, state: &AppState) -> Checked {
        let mut last = self.0.lock().await;
        if let Some(checked) = last.as_ref().filter(|c| {
            c.at.elapsed() < state.config.health_check_interval && c.breakers == breakers(state)
        }) {
            return checked.clone();
        }
        let checked = check(state).await;
        *last = Some(checked.clone());
        checked
    }
}

fn breakers(state: &AppState) -> [Option<BreakerState>; 2] {
    [
        Some(state.guard.breaker_state()),
        state.redis.as_ref().map(|r| r.breaker_state()),
    ]
}

/// One round trip to each dependency, each within the health check time-out.
async fn check(state: &AppState) -> Checked {
    let started = Instant::now();
    let outcome = tokio::time::timeout(state.config.health_check_timeout, state.store.ping()).await;
    let database_latency = started.elapsed();
    let database = match outcome {
        Ok(Ok(())) => DatabaseProbe::Reachable,
        Ok(Err(err)) => DatabaseProbe::Failed(error_chain(&err)),
        Err(_) => DatabaseProbe::TimedOut,
    };
    let redis = match &state.redis {
        Some(redis) => Some(redis.ping().await),
        None => None,
    };
    Checked {
        at: Instant::now(),
        breakers: breakers(state),
        database,
        database_latency,
        redis,
    }
}

/// An error and its sources, as `outer: inner: innermost`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Redis: its round trip (refused at once while its breaker is open), mode and pool.
fn redis_check(
    redis: &tm_redis::Redis,
    ping: Result<Duration, tm_redis::Unavailable>,
) -> (bool, Value) {
    let healthy = ping.is_ok();
    (
        healthy,
        json!({
            "status": if healthy { "healthy" } else { "degraded" },
            "mode": redis.mode(),
            "message": if healthy {
                "redis is reachable"
            } else {
                "redis is unavailable: rate limits are per instance and idempotency records are kept in the database meanwhile"
            },
            "latency_ms": ping.map_or(Value::Null, |d| json!(round_ms(d))),
            "circuit_breaker": redis.breaker_state().as_str(),
            "pool": redis.pool_figures(),
        }),
    )
}

/// Every configured dependency, as last checked; the database's error text for admins.
async fn checks(state: &AppState, admin: bool) -> (Readiness, Value) {
    let checked = state.health.current(state).await;
    let healthy = matches!(checked.database, DatabaseProbe::Reachable);
    let message = match &checked.database {
        DatabaseProbe::Reachable => "database is reachable".to_owned(),
        DatabaseProbe::Failed(_) => "database check failed".to_owned(),
        DatabaseProbe::TimedOut => format!(
            "database did not answer within {} ms",
            state.config.health_check_timeout.as_millis()
        ),
    };
    let pools: Map<String, Value> = state
        .store
        .pool_stats()
        .into_iter()
        .map(|p| (p.pool.to_owned(), json!(p)))
        .collect();
    let mut database = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "backend": state.store.backend(),
        "message": message,
        "latency_ms": round_ms(checked.database_latency),
        "pools": pools,
        // A replica out of the rotation leaves reads on the primary: not a reason to
        // take this instance out of the load balancer.
        "replicas": state.replicas(),
    });
    if let (true, DatabaseProbe::Failed(error)) = (admin, &checked.database) {
        database["error"] = json!(error);
    }
    let mut checks = json!({ "database": database });
    let mut readiness = if healthy {
        Readiness::Ready
    } else {
        Readiness::NotReady
    };
    if let (Some(redis), Some(ping)) = (&state.redis, checked.redis) {
        let (redis_healthy, redis) = redis_check(redis, ping);
        checks["redis"] = redis;
        if !redis_healthy && readiness == Readiness::Ready {
            readiness = Readiness::Degraded;
        }
    }
    // A sink in trouble leaves the instance serving: its events wait in the outbox.
    if let Some((events_healthy, events)) = state.relays.check() {
        checks["events"] = events;
        if !events_healthy && readiness == Readiness::Ready {
            readiness = Readiness::Degraded;
        }
    }
    (readiness, checks)
}

pub async fn ready(State(state): State<AppState>, request: Request) -> Response {
    let admin =
        match crate::auth::presents_admin(&state, request.headers(), request.extensions()).await {
            Ok(admin) => admin,
            Err(refusal) => return refusal.into_response(),
        };
    let (readiness, checks) = checks(&state, admin).await;
    if readiness != Readiness::NotReady {
        (
            StatusCode::OK,
            Json(json!({"status": readiness.as_str(), "checks": checks})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "2")],
            Json(json!({"status": "not_ready", "checks": checks})),
        )
            .into_response()
    }
}

pub async fn detailed(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let admin =
        crate::auth::presents_admin(&state, request.headers(), request.extensions()).await?;
    let (readiness, checks) = checks(&state, admin).await;
    let snapshot = state.routing.snapshot();
    Ok(Json(json!({
        "status": readiness.as_str(),
        "checks": checks,
        "circuit_breakers": {
            "database": {
                "state": state.guard.breaker_state().as_str(),
                "last_opened_for": state.guard.breaker_reason(),
            }
        },
        "bulkheads": state.guard.bulkheads().iter().map(|(name, in_use, capacity)| {
            (name.to_string(), json!({"in_use": in_use, "capacity": capacity}))
        }).collect::<Map<String, Value>>(),
        "snapshot": {
            "routes": snapshot.route_count(),
            "age_seconds": state.routing.age().as_secs_f64(),
            "changed_seconds_ago": snapshot.built_at().elapsed().as_secs_f64(),
        },
        "cold_start": match state.cold_start.file() {
            Some((file, written_at)) => json!({
                "serving_from_file": true,
                "file": file.display().to_string(),
                "written_at": written_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }),
            None => json!({"serving_from_file": false}),
        },
        "uptime_seconds": state.started_at.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    })))
}

/// Refreshes the state gauges, then renders every metric in the Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    sample(&state);
    (
        [(header::CONTENT_TYPE, tm_telemetry::METRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

/// Copies pool figures, read cache sizes and snapshot size and age into the metrics.
pub fn sample(state: &AppState) {
    let metrics = &state.metrics;
    for pool in state.store.pool_stats() {
        metrics.set_pool(&pool);
    }
    if let Some(redis) = &state.redis {
        metrics.set_pool(&redis.pool_figures());
    }
    state.guard.observe_pools();
    state.guard.observe_caches();
    metrics.set_snapshot(
        state.routing.snapshot().route_count(),
        state.routing.age().as_secs_f64(),
    );
    metrics
        .routing_snapshot_cold_start
        .set(i64::from(state.cold_start.file().is_some()));
}
