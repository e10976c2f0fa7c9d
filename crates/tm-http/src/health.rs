//! Probes: `/healthz` and `/health/live` touch nothing; `/health/ready` checks the
//! database within a bound; `/health/detailed` adds the routing snapshot's figures.

use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::AppState;

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

/// Redis: a round trip (refused at once while its breaker is open), mode and pool.
async fn redis_check(redis: &tm_redis::Redis) -> (bool, Value) {
    let ping = redis.ping().await;
    let pool = redis.pool_figures();
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
            "latency_ms": ping.map_or(Value::Null, |d| json!((d.as_secs_f64() * 10_000.0).round() / 10.0)),
            "circuit_breaker": redis.breaker_state().as_str(),
            "pool": pool,
        }),
    )
}

/// Every configured dependency, checked with the configured timeout.
async fn checks(state: &AppState) -> (Readiness, Value) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(state.config.health_check_timeout, state.store.ping()).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (healthy, message) = match outcome {
        Ok(Ok(())) => (true, "database is reachable".to_owned()),
        Ok(Err(err)) => (false, format!("database check failed: {err}")),
        Err(_) => (
            false,
            format!(
                "database did not answer within {} ms",
                state.config.health_check_timeout.as_millis()
            ),
        ),
    };
    let pools: Map<String, Value> = state
        .store
        .pool_stats()
        .into_iter()
        .map(|p| (p.pool.to_owned(), json!(p)))
        .collect();
    let database = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "backend": state.store.backend(),
        "message": message,
        "latency_ms": (latency_ms * 10.0).round() / 10.0,
        "pools": pools,
        // A replica out of the rotation leaves reads on the primary: not a reason to
        // take this instance out of the load balancer.
        "replicas": state.replicas(),
    });
    let mut checks = json!({ "database": database });
    let mut readiness = if healthy {
        Readiness::Ready
    } else {
        Readiness::NotReady
    };
    if let Some(redis) = &state.redis {
        let (redis_healthy, redis) = redis_check(redis).await;
        checks["redis"] = redis;
        if !redis_healthy && readiness == Readiness::Ready {
            readiness = Readiness::Degraded;
        }
    }
    (readiness, checks)
}

pub async fn ready(State(state): State<AppState>) -> Response {
    let (readiness, checks) = checks(&state).await;
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

pub async fn detailed(State(state): State<AppState>) -> Json<Value> {
    let (readiness, checks) = checks(&state).await;
    let snapshot = state.routing.snapshot();
    Json(json!({
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
        "uptime_seconds": state.started_at.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
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
}
