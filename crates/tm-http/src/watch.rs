//! `GET /api/v1/watch`: a service's routing state, answered as soon as it changes, as a
//! long poll or as a stream of Server-Sent Events.
//!
//! A service's state is what resolve serves for it: its active versions (with weight,
//! health and whether each serves) and its policy, at a generation. Generations are the
//! store's, the same on every instance, so a client may resume from the generation it
//! last saw on any instance: it is answered once this instance holds a later one. A
//! client far behind gets the current state at once: there is no history to run out of.
//!
//! Watches wait on the routing table's notification of the service (no polling), and
//! have an in-flight budget of their own (`TM_WATCH_MAX_IN_FLIGHT`), so that many held
//! watches never take the slots of other requests.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tm_domain::{EnvName, FieldErrors, GroupKey, ServiceName, TenantId};
use tm_store::ServiceWatch;

use crate::auth::{Action, Caller};
use crate::extract::ApiQuery;
use crate::routes::required;
use crate::{ApiError, AppState};

/// The path watches are served on.
pub(crate) const WATCH_PATH: &str = "/api/v1/watch";

/// The longest a long poll waits.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// How long a long poll waits when `wait` is not given.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Counts a watch in `watches_held` while it is held.
struct Held(AppState);

impl Held {
    fn new(state: &AppState) -> Self {
        state.metrics.watches_held.inc();
        Self(state.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.metrics.watches_held.dec();
    }
}

/// What a watch asks for.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    #[param(required = true, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    tenant: Option<String>,
    #[param(required = true, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    service: Option<String>,
    #[param(required = true, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    env: Option<String>,
    /// The generation the client holds: answered once a later one is held (at once when
    /// absent). For an event stream, `Last-Event-ID` says the same.
    #[param(value_type = Option<u64>, minimum = 0)]
    since: Option<String>,
    /// Long poll: seconds to wait for a change, 1 to 60 (default 30); then the state as
    /// it is. Not for event streams.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 60)]
    wait: Option<String>,
}

/// A service's routing state.
#[derive(Serialize)]
struct WatchState {
    tenant: TenantId,
    service: ServiceName,
    env: EnvName,
    /// The service's generation: compare, and pass as `since` to wait for the next one.
    generation: u64,
    /// Whether it is later than `since` (false: the wait ran out, or the server is
    /// shutting down).
    changed: bool,
    /// `healthy_only`, `healthy_or_all` or `last_known_good`; null when no version is
    /// active.
    policy: Option<&'static str>,
    /// The active versions, in version order.
    versions: Vec<VersionState>,
}

#[derive(Serialize)]
struct VersionState {
    version: String,
    url: Value,
    weight: u8,
    healthy: bool,
    /// Whether resolve (without `version`) may pick it.
    serves: bool,
}

/// The state of `key` in this instance's snapshot now.
fn state_of(
    state: &AppState,
    key: &GroupKey,
    watch: &ServiceWatch,
    since: Option<u64>,
) -> WatchState {
    let snapshot = state.routing.snapshot();
    let view = snapshot.service(&key.tenant, &key.service, &key.env);
    let generation = view.map_or_else(|| watch.empty_generation(), |v| v.generation());
    let versions = view
        .map(|v| {
            v.routes()
                .map(|route| {
                    let answer: Value = serde_json::from_slice(route.body()).unwrap_or(Value::Null);
                    VersionState {
                        version: route.version().to_owned(),
                        url: answer.get("url").cloned().unwrap_or(Value::Null),
                        weight: route.weight(),
                        healthy: route.healthy(),
                        serves: route.serves(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    WatchState {
        tenant: key.tenant.clone(),
        service: key.service.clone(),
        env: key.env.clone(),
        generation,
        changed: since.is_none_or(|since| generation > since),
        policy: view.map(|v| v.policy().as_str()),
        versions,
    }
}

/// Waits until `key` holds a generation later than `since` (or `until` passes, or the
/// server closes), then its state.
async fn next_state(
    state: &AppState,
    key: &GroupKey,
    watch: &ServiceWatch,
    since: Option<u64>,
    until: Option<tokio::time::Instant>,
) -> WatchState {
    loop {
        // Made and enabled before the look, so that a publication in between wakes it.
        let changed = watch.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = state_of(state, key, watch, since);
        if now.changed {
            return now;
        }
        let expired = async {
            match until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = changed => {}
            () = expired => return now,
            () = state.closing.cancelled() => return now,
        }
    }
}

/// A service's routing state, as soon as it is later than `since`.
///
/// As a long poll (the default): answered at once when the service is at a later
/// generation than `since` (or `since` is absent), else when it changes, or after `wait`
/// seconds with the state as it is (`changed` false). As Server-Sent Events (`Accept:
/// text/event-stream`): an event `state` (its `id` the generation, its data the state)
/// whenever the service reaches a later generation, from `since` or `Last-Event-ID`;
/// comments keep the stream alive. Watches have a budget of their own
/// (`TM_WATCH_MAX_IN_FLIGHT`); beyond it, 503.
#[utoipa::path(
    get,
    path = "/api/v1/watch",
    operation_id = "watch_service",
    tag = "services",
    params(WatchQuery),
    responses(
        (status = 200, description = "The service's routing state (JSON), or a stream of it (text/event-stream)", body = crate::openapi::WatchStateDoc),
        crate::openapi::Problems,
    ),
)]
pub async fn watch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<WatchQuery>,
) -> Result<Response, ApiError> {
    let mut errors = FieldErrors::default();
    let tenant = required(
        &mut errors,
        "tenant",
        query.tenant.as_deref(),
        TenantId::parse,
    );
    let service = required(
        &mut errors,
        "service",
        query.service.as_deref(),
        ServiceName::parse,
    );
    let env = required(&mut errors, "env", query.env.as_deref(), EnvName::parse);
    let since = match query.since.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(since)) => Some(since),
        Some(Err(_)) => {
            errors.push("since", "must be a generation: a whole number from 0");
            None
        }
    };
    let wait = match query.wait.as_deref().map(str::parse::<u64>) {
        None => DEFAULT_WAIT,
        Some(Ok(seconds)) if (1..=MAX_WAIT.as_secs()).contains(&seconds) => {
            Duration::from_secs(seconds)
        }
        Some(_) => {
            errors.push("wait", "must be a number of seconds from 1 to 60");
            DEFAULT_WAIT
        }
    };
    let (Some(tenant), Some(service), Some(env)) = (tenant, service, env) else {
        return Err(ApiError::Invalid(errors));
    };
    errors.into_result()?;
    caller.authorize(Action::ReadRoutes, &tenant)?;
    let key = GroupKey {
        tenant,
        service,
        env,
    };
    let watch = state.routing.watch(&key);
    let held = Held::new(&state);
    let streams = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    if streams {
        let resume = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|id| id.trim().parse::<u64>().ok());
        let events = events(state, key, watch, resume.or(since), held);
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response());
    }
    let until = tokio::time::Instant::now() + wait;
    let now = next_state(&state, &key, &watch, since, Some(until)).await;
    drop(held);
    let mut response = Json(now).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The event stream of a watch: one event per later generation, until the server
/// closes.
fn events(
    state: AppState,
    key: GroupKey,
    watch: ServiceWatch,
    since: Option<u64>,
    held: Held,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(
        (state, key, watch, since, held),
        |(state, key, watch, since, held)| async move {
            if state.closing.is_cancelled() {
                return None;
            }
            let now = next_state(&state, &key, &watch, since, None).await;
            if !now.changed {
                // The server is closing.
                return None;
            }
            let generation = now.generation;
            let event = Event::default()
                .event("state")
                .id(generation.to_string())
                .json_data(&now)
                .unwrap_or_else(|_| Event::default().comment("unserializable state"));
            Some((Ok(event), (state, key, watch, Some(generation), held)))
        },
    )
}
