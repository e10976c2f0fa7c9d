//! The HTTP layer: the API v1 router, its extractors, and problem+json errors.
//!
//! Handlers parse input into domain types at the edge, call the store or the routing
//! snapshot, and return domain values as JSON. `resolve` never touches the store.

mod auth;
mod deprecation;
mod dlq;
mod error;
mod events;
mod explain;
mod extract;
pub mod fast;
mod front;
mod guard;
mod health;
mod history;
mod idempotency;
mod keys;
mod observe;
mod openapi;
mod page;
mod relays;
mod resolve;
mod routes;
mod security;
mod serve;
mod services;
mod watch;
mod webhooks;
mod wire;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderValue, Method};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, MethodFilter, MethodRouter};
use axum::Router;
use tm_config::HttpConfig;
use tm_resilience::RateLimiter;
use tm_store::{KeyRing, ReadFrom, RoutingTable, Store};
use tm_telemetry::Metrics;

use auth::Action;
pub use error::{ApiError, PROBLEM_TYPE_PREFIX};
pub use guard::Guard;
use guard::WriteKind;
pub use health::{error_chain, sample as sample_metrics};
pub use keys::KEYS_CHANNEL;
pub use openapi::ApiDoc;
pub use relays::{Relays, LAG_DEGRADED};
pub use serve::serve;
pub use webhooks::WebhookKit;

/// What every handler may use. Cloned for every request, so it is one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub routing: Arc<RoutingTable>,
    pub keys: Arc<KeyRing>,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<dyn RateLimiter>,
    /// Redis, when configured: fleet-wide rate limits and idempotency records.
    pub redis: Option<Arc<tm_redis::Redis>>,
    /// The guarded path to the database for everything but resolve.
    pub guard: Arc<Guard>,
    /// Sheds API requests other than resolve beyond the configured number in flight.
    in_flight: tm_resilience::Bulkhead,
    /// The same for resolve, so that nothing else can take its slots.
    resolve_in_flight: tm_resilience::Bulkhead,
    /// Watches held, with a budget of their own (they are held for long).
    watch_in_flight: tm_resilience::Bulkhead,
    /// Cancelled when the server begins to shut down: watches answer and end.
    pub closing: tokio_util::sync::CancellationToken,
    pub config: HttpConfig,
    pub started_at: Instant,
    /// `Cache-Control` of resolve answers, built once from the configuration.
    cache_control: HeaderValue,
    /// Which answers are logged.
    access_log: observe::AccessLog,
    /// What CORS adds to an answer to a request without `Origin`.
    cors_without_origin: axum::http::HeaderMap,
    /// Callers (by key) that wrote recently: their reads go to the primary, so that they
    /// see their own writes (present only with read replicas).
    recent_writers: Option<moka::sync::Cache<String, ()>>,
    /// The read replicas as last checked.
    replicas: std::sync::RwLock<Vec<tm_store::ReplicaStatus>>,
    /// The dependencies as last checked by a health probe.
    health: health::HealthChecks,
    /// The relays of change events, and what wakes them.
    pub relays: Arc<Relays>,
    /// What webhook subscriptions need: secret keys, network policy, cap.
    pub webhooks: Arc<WebhookKit>,
    /// Whether this instance serves from its cold-start file, and which.
    pub cold_start: Arc<ColdStart>,
}

/// Whether an instance serves from its cold-start file: set when it started from the
/// file (its database unreachable), cleared once the database has been read.
#[derive(Debug, Default)]
pub struct ColdStart {
    /// When the file it started from was written, while it still serves from it.
    serving: std::sync::RwLock<Option<(std::path::PathBuf, chrono::DateTime<chrono::Utc>)>>,
}

impl ColdStart {
    /// An instance serving from `file`, written `written_at`.
    pub fn serving(file: std::path::PathBuf, written_at: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            serving: std::sync::RwLock::new(Some((file, written_at))),
        }
    }

    /// The database has been read: the instance serves from it now.
    pub fn recovered(&self) {
        *self
            .serving
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// The file served from and when it was written, if the instance still does.
    pub fn file(&self) -> Option<(std::path::PathBuf, chrono::DateTime<chrono::Utc>)> {
        self.serving
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl AppState {
    /// Notes that `caller` has just written: for a while its reads go to the primary.
    /// The write's events wait in the outbox: the relays are woken.
    pub fn wrote(&self, caller: &auth::Caller) {
        if let Some(writers) = &self.recent_writers {
            writers.insert(caller.actor().as_str().to_owned(), ());
        }
        self.relays.written();
    }

    /// Where `caller`'s reads may be served from: the primary if it wrote within the
    /// read-your-writes window (the replicas' lag bound plus one lag check, so any
    /// replica still in the rotation has its write), else any replica.
    pub fn read_from(&self, caller: &auth::Caller) -> ReadFrom {
        match &self.recent_writers {
            Some(writers) if writers.contains_key(caller.actor().as_str()) => ReadFrom::Primary,
            _ => ReadFrom::AnyReplica,
        }
    }

    /// A place among the API requests in flight for a request to `path` (resolve has a
    /// budget of its own, every other operation shares one), or 503 at once when that
    /// budget is spent: shedding rather than queueing without bound. The slot is held
    /// until the request is answered.
    pub fn admit(&self, path: &str) -> Result<tm_resilience::Slot, ApiError> {
        let budget = if path == fast::RESOLVE_PATH {
            &self.resolve_in_flight
        } else if path == watch::WATCH_PATH {
            &self.watch_in_flight
        } else {
            &self.in_flight
        };
        budget
            .try_enter()
            .map_err(|_| ApiError::Unavailable("the server is at its limit of requests in flight"))
    }

    /// Measures the read replicas' lag, moves them in or out of the rotation, and
    /// records what it found in the metrics and for the health probes.
    pub async fn check_replicas(&self) {
        let statuses = self.store.check_replicas().await;
        for status in &statuses {
            self.metrics
                .set_replica_lag(status.name, status.lag_seconds.unwrap_or(-1.0));
        }
        *self
            .replicas
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = statuses;
    }

    /// The read replicas as last checked.
    pub fn replicas(&self) -> Vec<tm_store::ReplicaStatus> {
        self.replicas
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn new(
        store: Arc<dyn Store>,
        routing: Arc<RoutingTable>,
        keys: Arc<KeyRing>,
        metrics: Arc<Metrics>,
        limiter: Arc<dyn RateLimiter>,
        config: HttpConfig,
        fleet: Fleet,
    ) -> Self {
        let Fleet {
            redis,
            read_your_writes,
            event_sinks,
            webhooks,
            cold_start,
        } = fleet;
        let cache_control = HeaderValue::try_from(format!(
            "private, max-age={}, stale-while-revalidate={}",
            config.resolve_max_age.as_secs(),
            config.resolve_stale_while_revalidate.as_secs()
        ))
        .expect("digits and ASCII are a valid header value");
        let (store_for_guard, metrics_for_guard) = (store.clone(), metrics.clone());
        Self(Arc::new(Shared {
            store,
            routing,
            keys,
            metrics,
            limiter,
            redis,
            guard: Arc::new(Guard::new(
                store_for_guard,
                metrics_for_guard,
                &config.guards,
            )),
            in_flight: tm_resilience::Bulkhead::new(
                "in_flight",
                usize::try_from(config.guards.max_in_flight).unwrap_or(usize::MAX),
                std::time::Duration::ZERO,
            ),
            access_log: observe::AccessLog::new(config.access_log),
            cors_without_origin: security::cors_headers_without_origin(&config.cors),
            resolve_in_flight: tm_resilience::Bulkhead::new(
                "resolve_in_flight",
                usize::try_from(config.guards.resolve_max_in_flight).unwrap_or(usize::MAX),
                std::time::Duration::ZERO,
            ),
            watch_in_flight: tm_resilience::Bulkhead::new(
                "watch_in_flight",
                usize::try_from(config.guards.watch_max_in_flight).unwrap_or(usize::MAX),
                std::time::Duration::ZERO,
            ),
            closing: tokio_util::sync::CancellationToken::new(),
            config,
            started_at: Instant::now(),
            cache_control,
            recent_writers: read_your_writes.map(|window| {
                moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(window)
                    .build()
            }),
            replicas: std::sync::RwLock::default(),
            health: health::HealthChecks::default(),
            relays: Arc::new(Relays::new(&event_sinks)),
            webhooks,
            cold_start,
        }))
    }
}

/// What an instance shares with the rest of its fleet.
pub struct Fleet {
    /// Redis, when configured.
    pub redis: Option<Arc<tm_redis::Redis>>,
    /// With read replicas: how long a caller that wrote reads from the primary.
    pub read_your_writes: Option<std::time::Duration>,
    /// Where change events are relayed (`tm_telemetry::EVENT_SINKS`).
    pub event_sinks: Vec<&'static str>,
    pub webhooks: Arc<WebhookKit>,
    /// Set when the instance started from its cold-start file.
    pub cold_start: Arc<ColdStart>,
}

/// What an operation does with `Idempotency-Key`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Idempotency {
    /// Honoured: the claim is admitted as a write of this kind is.
    Honoured(WriteKind),
    /// Refused with 422: the answer cannot be replayed.
    Refused,
    Ignored,
}

/// Whether an operation's body is JSON (checked before an idempotency claim).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    Json,
    None,
}

/// How a request for an operation is admitted before its handler runs.
#[derive(Clone, Copy)]
struct Policy {
    action: Action,
    idempotency: Idempotency,
    input: Input,
}

/// One operation of API v1: its path under `/api/v1`, its method, its policy, and its
/// handler.
struct Operation {
    path: &'static str,
    method: Method,
    policy: Policy,
    handler: MethodRouter<AppState>,
}

fn operation<H, T>(
    path: &'static str,
    method: Method,
    (action, idempotency, input): (Action, Idempotency, Input),
    handler: H,
) -> Operation
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
    Operation {
        path,
        method,
        policy: Policy {
            action,
            idempotency,
            input,
        },
        handler: on(filter, handler),
    }
}

/// API v1: the one list the router, the admission of each request and the metrics'
/// declared endpoints are made from.
fn api_operations() -> Vec<Operation> {
    let mut operations = route_operations();
    operations.extend(management_operations());
    operations
}

/// Resolve and the routes.
fn route_operations() -> Vec<Operation> {
    use Action::{ReadRoutes, Resolve, WriteRoutes};
    use Idempotency::{Honoured, Ignored};
    use WriteKind::{Critical, Ordinary};
    let read = |action| (action, Ignored, Input::None);
    vec![
        // Per path, in the order of the `Allow` header a 405 answers with.
        operation(
            "/routes",
            Method::POST,
            (WriteRoutes, Honoured(Ordinary), Input::Json),
            routes::create,
        ),
        operation("/routes", Method::GET, read(ReadRoutes), routes::list),
        operation(
            "/routes/resolve",
            Method::GET,
            read(Resolve),
            resolve::resolve,
        ),
        operation(
            "/routes/activate",
            Method::POST,
            (WriteRoutes, Honoured(Critical), Input::Json),
            routes::activate,
        ),
        operation(
            "/routes/deactivate",
            Method::POST,
            (WriteRoutes, Honoured(Critical), Input::Json),
            routes::deactivate,
        ),
        operation(
            "/routes/{id}",
            Method::PATCH,
            (WriteRoutes, Honoured(Ordinary), Input::Json),
            routes::patch,
        ),
        operation(
            "/routes/{id}",
            Method::DELETE,
            (WriteRoutes, Honoured(Ordinary), Input::None),
            routes::delete,
        ),
        operation("/routes/{id}", Method::GET, read(ReadRoutes), routes::get),
        operation(
            "/routes/{id}/health",
            Method::GET,
            read(ReadRoutes),
            services::health,
        ),
        operation(
            "/services/policy",
            Method::PUT,
            (WriteRoutes, Honoured(Ordinary), Input::Json),
            services::put,
        ),
        operation(
            "/services/policy",
            Method::GET,
            read(ReadRoutes),
            services::get,
        ),
        operation(
            "/routes/rollback",
            Method::POST,
            (WriteRoutes, Honoured(Critical), Input::Json),
            history::rollback,
        ),
    ]
}

/// Keys, events, the dead-letter queue and webhooks.
fn management_operations() -> Vec<Operation> {
    use Action::{ManageJobs, ManageKeys, ManageWebhooks, ReadAudit, ReadRoutes};
    use Idempotency::{Honoured, Ignored, Refused};
    use WriteKind::Ordinary;
    let read = |action| (action, Ignored, Input::None);
    vec![
        operation(
            "/keys",
            Method::POST,
            (ManageKeys, Refused, Input::Json),
            keys::create,
        ),
        operation("/keys", Method::GET, read(ManageKeys), keys::list),
        operation(
            "/keys/{id}",
            Method::DELETE,
            (ManageKeys, Honoured(Ordinary), Input::None),
            keys::revoke,
        ),
        operation("/events", Method::GET, read(ReadRoutes), events::list),
        operation("/audit", Method::GET, read(ReadAudit), history::list),
        operation("/watch", Method::GET, read(ReadRoutes), watch::watch),
        operation("/dlq", Method::GET, read(ManageJobs), dlq::list),
        operation(
            "/dlq",
            Method::DELETE,
            (ManageJobs, Honoured(Ordinary), Input::None),
            dlq::purge_all,
        ),
        operation(
            "/dlq/{id}/replay",
            Method::POST,
            (ManageJobs, Honoured(Ordinary), Input::None),
            dlq::replay,
        ),
        operation(
            "/dlq/{id}",
            Method::DELETE,
            (ManageJobs, Honoured(Ordinary), Input::None),
            dlq::purge_one,
        ),
        operation(
            "/webhooks",
            Method::POST,
            (ManageWebhooks, Refused, Input::Json),
            webhooks::create,
        ),
        operation(
            "/webhooks",
            Method::GET,
            read(ManageWebhooks),
            webhooks::list,
        ),
        operation(
            "/webhooks/{id}",
            Method::GET,
            read(ManageWebhooks),
            webhooks::get,
        ),
        operation(
            "/webhooks/{id}",
            Method::DELETE,
            (ManageWebhooks, Honoured(Ordinary), Input::None),
            webhooks::delete,
        ),
    ]
}

/// The whole HTTP surface: API v1, health probes and metrics.
pub fn router(state: AppState) -> Router {
    for class in tm_resilience::RateClass::ALL {
        state.metrics.declare_rate_class(class.as_str());
    }
    let mut api = Router::new();
    let operations = if state.config.serve_api {
        api_operations()
    } else {
        Vec::new()
    };
    for op in operations {
        // Full paths rather than a nested router: nesting rewrites every request's URI.
        let path = format!("/api/v1{}", op.path);
        state.metrics.declare_endpoint(op.method.as_str(), &path);
        let admitted = middleware::from_fn_with_state((state.clone(), op.policy), admission);
        api = api.route(&path, op.handler.layer(admitted));
    }
    let api = api.layer(middleware::from_fn_with_state(state.clone(), shed));
    let config = state.config.clone();
    let router = Router::new()
        .merge(api)
        .route("/healthz", get(health::healthz))
        .route(
            deprecation::HEALTH.path,
            deprecation::deprecated(get(health::live), &deprecation::HEALTH),
        )
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health/detailed", get(health::detailed))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.body_limit_bytes));
    let router = security::with_cors(router, &config.cors);
    router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}

/// The steps every API request takes before its handler, in this order: authenticate,
/// rate-limit, authorize the operation; then, for a write sent with `Idempotency-Key`,
/// read the body, check its form and claim the key (through the write guards). A
/// request refused at any step costs no database work and leaves nothing kept.
async fn admission(
    State((state, policy)): State<(AppState, Policy)>,
    mut request: Request,
    next: middleware::Next,
) -> Response {
    let caller = match auth::admit(
        &state,
        request.headers(),
        request.extensions(),
        policy.action,
    )
    .await
    {
        Ok(caller) => caller,
        Err(refusal) => return refusal.into_response(),
    };
    match policy.idempotency {
        Idempotency::Ignored => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Idempotency::Refused => {
            request.extensions_mut().insert(caller);
            idempotency::refuse(request, next).await
        }
        Idempotency::Honoured(kind) => {
            let actor = caller.actor();
            request.extensions_mut().insert(caller);
            let json = policy.input == Input::Json;
            idempotency::honour(&state, kind, json, actor, request, next).await
        }
    }
}

/// Answers 503 at once when too many API requests are already in flight (see
/// [`AppState::admit`]).
async fn shed(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    match state.admit(request.uri().path()) {
        Ok(_slot) => next.run(request).await,
        Err(refusal) => axum::response::IntoResponse::into_response(refusal),
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
