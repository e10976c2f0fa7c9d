//! The resolve fast path: a plain `GET /api/v1/routes/resolve` answered ahead of the
//! router, with no per-request boxing or routing, by the very functions the router's
//! layers and handler call — the same key check, budget, ids, metrics, access log and
//! headers. Everything else, and any resolve it does not take, goes to the router.
//!
//! It is reached two ways: from hyper, for a request hyper has parsed ([`resolve`]), and
//! from the HTTP/1 front (see [`crate::front`]), which reads plain HTTP/1.1 requests
//! itself and answers those taken here without hyper at all.

use std::time::Instant;

use axum::http::{header, Method, Request};
use axum::response::{IntoResponse, Response};

use crate::auth::{authenticate, Caller};
use crate::observe::{add_headers, answered, observed, Exchange, RequestContext, RequestIds};
use crate::resolve::Resolved;
use crate::wire::{AnswerHeaders, Http1Answer, RequestHead};
use crate::{ApiError, AppState};
use tm_domain::RoutingSnapshot;

/// The path resolve is served on.
pub const RESOLVE_PATH: &str = "/api/v1/routes/resolve";

/// The answer to `request` if it is a resolve the fast path takes: a `GET` of the resolve
/// path with a live key, not a browser's (CORS is the router's). `None` leaves it to the
/// router, which answers a refused key after charging the client address's budget.
pub fn resolve<B>(state: &AppState, request: &Request<B>) -> Option<Response> {
    if request.method() != Method::GET || request.uri().path() != RESOLVE_PATH {
        return None;
    }
    let snapshot = state.routing.snapshot();
    take(state, &snapshot, request.uri().query(), request.headers())
        .map(|taken| taken.into_response(state))
}

/// A resolve the fast path has taken: its caller admitted (or refused a budget) and its
/// answer decided, to be written out by whichever path read it.
pub(crate) struct Taken<'s> {
    started: Instant,
    ids: RequestIds,
    /// The request's span, made only when it is recorded (tracing on and sampled): one
    /// that is not costs none.
    span: Option<tracing::Span>,
    context: RequestContext,
    outcome: Result<Resolved<'s>, ApiError>,
}

/// Takes a `GET` of the resolve path with `query` and `headers`, to be answered from
/// `snapshot`, if the fast path is on, the request is not a browser's and its key is
/// live; `None`, with nothing done or counted, leaves it to the router.
pub(crate) fn take<'s>(
    state: &AppState,
    snapshot: &'s RoutingSnapshot,
    query: Option<&str>,
    headers: &(impl RequestHead + ?Sized),
) -> Option<Taken<'s>> {
    if !state.config.resolve_ahead()
        || headers.has(&header::ORIGIN)
        || crate::resolve::wants_explain(query)
    {
        return None;
    }
    let started = Instant::now();
    let principal = authenticate(headers, state).ok()?;
    let mut ids = RequestIds::of(headers);
    let span = ids.sampled().then(|| ids.span(&Method::GET, RESOLVE_PATH));
    let context = RequestContext::default();
    let outcome = Caller::admit_resolve(state, principal, context.clone())
        .and_then(|caller| crate::resolve::answer(snapshot, &caller, query, headers));
    Some(Taken {
        started,
        ids,
        span,
        context,
        outcome,
    })
}

fn exchange(started: Instant, context: &RequestContext) -> Exchange<'_> {
    Exchange {
        method: &Method::GET,
        endpoint: RESOLVE_PATH,
        started,
        context,
    }
}

impl Taken<'_> {
    /// The answer as a response for hyper to send.
    pub(crate) fn into_response(self, state: &AppState) -> Response {
        let Taken {
            started,
            ids,
            span,
            context,
            outcome,
        } = self;
        let mut response = match outcome {
            Ok(resolved) => resolved.into_response(state),
            Err(refused) => refused.into_response(),
        };
        answered(
            state,
            &exchange(started, &context),
            ids,
            span,
            &mut response,
        );
        add_cors(state, response.headers_mut());
        response
    }

    /// The answer as an HTTP/1.1 response, appended to `out`; a refusal is made by the
    /// same code as on the router's path, as a response to write with [`write_response`].
    pub(crate) fn write(mut self, state: &AppState, out: &mut Vec<u8>) -> Option<Response> {
        let resolved = match &self.outcome {
            Ok(resolved) => resolved,
            Err(_) => return Some(self.into_response(state)),
        };
        let status = resolved.status();
        observed(
            state,
            &exchange(self.started, &self.context),
            &mut self.ids,
            self.span.take(),
            status.as_u16(),
            None,
        );
        let mut answer = Http1Answer::start(out, status);
        resolved.add_headers(state, &mut answer);
        add_headers(state, &self.context, self.ids, &mut answer);
        add_cors(state, &mut answer);
        answer.finish(status, resolved.body());
        None
    }
}

/// What CORS adds to an answer to a request without `Origin`.
fn add_cors(state: &AppState, headers: &mut impl AnswerHeaders) {
    for (name, value) in &state.cors_without_origin {
        headers.add(name, value);
    }
}

/// `response`, whose body is whole already (a problem document), as HTTP/1.1.
pub(crate) async fn write_response(out: &mut Vec<u8>, response: Response) {
    let (parts, body) = response.into_parts();
    // Made from bytes in memory: never fails, never waits.
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut answer = Http1Answer::start(out, parts.status);
    for (name, value) in &parts.headers {
        answer.add(name, value);
    }
    answer.finish(parts.status, &body);
}
