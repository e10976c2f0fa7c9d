//! The resolve fast path: a plain `GET /api/v1/routes/resolve` answered ahead of the
//! router, with no per-request boxing or routing, by the very functions the router's
//! layers and handler call — the same key check, budget, ids, metrics, access log and
//! headers. Everything else, and any resolve it does not take, goes to the router.

use std::time::Instant;

use axum::http::{header, Method, Request};
use axum::response::{IntoResponse, Response};

use crate::auth::{authenticate, Caller};
use crate::observe::{answered, Exchange, RequestContext, RequestIds};
use crate::AppState;

/// The path resolve is served on.
pub const RESOLVE_PATH: &str = "/api/v1/routes/resolve";

/// The answer to `request` if it is a resolve the fast path takes: a `GET` of the resolve
/// path with a live key, not a browser's (CORS is the router's). `None` leaves it to the
/// router, which answers a refused key after charging the client address's budget.
pub fn resolve<B>(state: &AppState, request: &Request<B>) -> Option<Response> {
    if !state.config.resolve_fast_path
        || request.method() != Method::GET
        || request.uri().path() != RESOLVE_PATH
        || request.headers().contains_key(header::ORIGIN)
    {
        return None;
    }
    let started = Instant::now();
    let headers = request.headers();
    let principal = authenticate(headers, state).ok()?;
    let ids = RequestIds::of(headers);
    let context = RequestContext::default();
    let mut response = Caller::admit_resolve(state, principal, context.clone())
        .and_then(|caller| crate::resolve::answer(state, &caller, request.uri().query(), headers))
        .unwrap_or_else(IntoResponse::into_response);
    let exchange = Exchange {
        method: &Method::GET,
        endpoint: RESOLVE_PATH,
        started,
        context: &context,
    };
    answered(state, &exchange, ids, None, &mut response);
    for (name, value) in &state.cors_without_origin {
        response.headers_mut().append(name, value.clone());
    }
    Some(response)
}
