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

/// Every configured dependency, checked with the configured timeout.
async fn checks(state: &AppState) -> (bool, Value) {
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
        .map(|p| {
            (
                p.pool.to_owned(),
                json!({"size": p.size, "idle": p.idle, "in_use": p.in_use, "waiting": p.waiting, "max": p.max}),
            )
        })
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
    (healthy, json!({ "database": database }))
}

pub async fn ready(State(state): State<AppState>) -> Response {
    let (healthy, checks) = checks(&state).await;
    if healthy {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": checks})),
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
    let (healthy, checks) = checks(&state).await;
    let snapshot = state.routing.snapshot();
    Json(json!({
        "status": if healthy { "ready" } else { "not_ready" },
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

/// Copies pool figures and snapshot size and age into the metrics.
pub fn sample(state: &AppState) {
    let metrics = &state.metrics;
    for pool in state.store.pool_stats() {
        metrics.set_pool(tm_telemetry::PoolFigures {
            pool: pool.pool,
            idle: pool.idle,
            in_use: pool.in_use,
            waiting: pool.waiting,
            max: pool.max,
        });
    }
    state.guard.observe_pools();
    metrics.set_snapshot(
        state.routing.snapshot().route_count(),
        state.routing.age().as_secs_f64(),
    );
}
