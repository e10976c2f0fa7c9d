//! Request identity and observation: one middleware that gives every request its
//! `X-Request-ID`, `X-Correlation-ID` and trace id, runs it inside one span, counts it in
//! the metrics and logs one line when it is answered.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tm_resilience::RateDecision;
use tracing::Instrument;

use crate::AppState;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

const MAX_ID_LEN: usize = 128;

/// What the handlers learn about a request that the answer should carry: the tenant it
/// acted on (for the per-tenant metric) and its rate-limit budget (for the headers).
#[derive(Clone, Debug, Default)]
pub struct RequestContext(Arc<ContextSlots>);

#[derive(Debug, Default)]
struct ContextSlots {
    tenant: OnceLock<String>,
    rate: OnceLock<RateDecision>,
}

impl RequestContext {
    pub fn set_tenant(&self, tenant: &str) {
        let _ = self.0.tenant.set(tenant.to_owned());
    }

    pub fn set_rate(&self, decision: RateDecision) {
        let _ = self.0.rate.set(decision);
    }

    fn tenant(&self) -> Option<&str> {
        self.0.tenant.get().map(String::as_str)
    }
}

pub static X_RATE_LIMIT_LIMIT: HeaderName = HeaderName::from_static("x-rate-limit-limit");
pub static X_RATE_LIMIT_REMAINING: HeaderName = HeaderName::from_static("x-rate-limit-remaining");
pub static X_RATE_LIMIT_RESET: HeaderName = HeaderName::from_static("x-rate-limit-reset");

/// `X-Rate-Limit-Limit`, `-Remaining` and `-Reset` (whole seconds, rounded up).
fn rate_headers(headers: &mut HeaderMap, decision: &RateDecision) {
    headers.insert(
        X_RATE_LIMIT_LIMIT.clone(),
        HeaderValue::from(decision.limit),
    );
    headers.insert(
        X_RATE_LIMIT_REMAINING.clone(),
        HeaderValue::from(decision.remaining),
    );
    let reset = decision.reset_after.as_secs() + u64::from(decision.reset_after.subsec_nanos() > 0);
    headers.insert(X_RATE_LIMIT_RESET.clone(), HeaderValue::from(reset));
}

/// A UUID v7 from the thread-local generator (no system call per request).
fn new_request_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    uuid::Builder::from_unix_timestamp_millis(millis, &rand::random())
        .into_uuid()
        .to_string()
}

/// 1–128 characters of `A-Z a-z 0-9 . _ -`: the only identifiers echoed back.
fn sane_id(value: &HeaderValue) -> Option<&str> {
    let s = value.to_str().ok()?;
    (!s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
    .then_some(s)
}

/// The trace id of a valid W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn trace_id_of(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(&TRACEPARENT)?.to_str().ok()?;
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && hex(flags, 2)
        && (version != "00" || parts.next().is_none());
    valid.then(|| trace.to_owned())
}

pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let headers = request.headers();
    let request_id = headers
        .get(&X_REQUEST_ID)
        .and_then(sane_id)
        .map_or_else(new_request_id, str::to_owned);
    let correlation_id = headers
        .get(&X_CORRELATION_ID)
        .and_then(sane_id)
        .map_or_else(|| request_id.clone(), str::to_owned);
    let trace_id =
        trace_id_of(headers).unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let endpoint = matched
        .as_ref()
        .map_or(tm_telemetry::UNMATCHED, MatchedPath::as_str);
    let method = request.method().clone();
    let context = RequestContext::default();
    request.extensions_mut().insert(context.clone());

    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %endpoint,
        request_id = %request_id,
        correlation_id = %correlation_id,
        trace_id = %trace_id,
        tenant = tracing::field::Empty,
        key_id = tracing::field::Empty,
    );
    let mut response = next.run(request).instrument(span.clone()).await;

    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.observe_request(
        method.as_str(),
        endpoint,
        response.status().as_str(),
        elapsed.as_secs_f64(),
    );
    if let Some(tenant) = context.tenant() {
        state.metrics.observe_tenant(tenant);
    }
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "{method} {endpoint} answered {status}"
        );
    });

    let headers = response.headers_mut();
    crate::security::add_headers(headers, state.config.behind_tls);
    if let Some(decision) = context.0.rate.get() {
        rate_headers(headers, decision);
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(X_REQUEST_ID.clone(), value);
    }
    if let Ok(value) = HeaderValue::from_str(&correlation_id) {
        headers.insert(X_CORRELATION_ID.clone(), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_ids_are_kept() {
        for ok in ["a", "req-1.2_3", &"x".repeat(128), "ABC-def"] {
            assert!(
                sane_id(&HeaderValue::from_str(ok).expect("header")).is_some(),
                "{ok}"
            );
        }
        for bad in ["", &"x".repeat(129), "a b", "a/b", "a;b", "é"] {
            let value = HeaderValue::from_bytes(bad.as_bytes()).expect("header");
            assert!(sane_id(&value).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn traceparent_is_honoured_only_when_valid() {
        let mut headers = HeaderMap::new();
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert(&TRACEPARENT, HeaderValue::from_static(valid));
        assert_eq!(
            trace_id_of(&headers).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            headers.insert(&TRACEPARENT, HeaderValue::from_static(bad));
            assert!(trace_id_of(&headers).is_none(), "{bad}");
        }
    }
}
