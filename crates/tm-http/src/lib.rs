//! The HTTP layer: the API v1 router, its extractors, and problem+json errors.
//!
//! Handlers parse input into domain types at the edge, call the store or the routing
//! snapshot, and return domain values as JSON. `resolve` never touches the store.

mod error;
mod extract;
mod health;
mod resolve;
mod routes;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::routing::{get, post};
use axum::Router;
use tm_config::HttpConfig;
use tm_store::{RoutingTable, Store};
use tower_http::trace::TraceLayer;

pub use error::{ApiError, PROBLEM_TYPE_PREFIX};

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub routing: Arc<RoutingTable>,
    pub config: Arc<HttpConfig>,
    pub started_at: Instant,
    /// `Cache-Control` of resolve answers, built once from the configuration.
    cache_control: HeaderValue,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, routing: Arc<RoutingTable>, config: HttpConfig) -> Self {
        let cache_control = HeaderValue::try_from(format!(
            "private, max-age={}, stale-while-revalidate={}",
            config.resolve_max_age.as_secs(),
            config.resolve_stale_while_revalidate.as_secs()
        ))
        .expect("digits and ASCII are a valid header value");
        Self {
            store,
            routing,
            config: Arc::new(config),
            started_at: Instant::now(),
            cache_control,
        }
    }
}

/// The whole HTTP surface: API v1 and health probes.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/routes", post(routes::create).get(routes::list))
        .route("/routes/resolve", get(resolve::resolve))
        .route("/routes/activate", post(routes::activate))
        .route("/routes/deactivate", post(routes::deactivate))
        .route(
            "/routes/{id}",
            get(routes::get).patch(routes::patch).delete(routes::delete),
        );
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(health::healthz))
        .route("/health", get(health::live))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health/detailed", get(health::detailed))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.body_limit_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
