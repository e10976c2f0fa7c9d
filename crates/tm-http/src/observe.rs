//! Request identity and observation: every request gets its `X-Request-ID`,
//! `X-Correlation-ID` and trace id, is counted in the metrics and, by the access-log
//! policy, logged in one line when it is answered. The router's middleware
//! ([`observe`]) and the resolve fast path call the same functions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tm_config::AccessLogConfig;
use tm_domain::{KeyId, TenantId};
use tm_resilience::RateDecision;
use tm_store::Principal;
use tm_telemetry::trace::{self, TraceParent};
use tracing::{Instrument, Span};

use crate::error::ServerFault;
use crate::fast::RESOLVE_PATH;
use crate::wire::{AnswerHeaders, RequestHead};
use crate::{ApiError, AppState};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

const MAX_ID_LEN: usize = 128;

/// Headers this middleware may add to an answer: ids, rate limit, security.
const ADDED_HEADERS: usize = 12;

/// Room for every header of a resolve answer: its own (entity tag, caching, content
/// type), CORS's and those added here.
pub(crate) const ANSWER_HEADERS: usize = ADDED_HEADERS + 4;

/// What the handlers learn about a request that its answer and log line should carry:
/// the key that made it, the tenant it acted on (for the per-tenant metric) and its
/// rate-limit budget (for the headers).
#[derive(Clone, Debug, Default)]
pub struct RequestContext(Arc<ContextSlots>);

#[derive(Debug, Default)]
struct ContextSlots {
    request_id: OnceLock<HeaderValue>,
    key: OnceLock<Option<KeyId>>,
    tenant: OnceLock<TenantId>,
    rate: OnceLock<RateDecision>,
}

impl RequestContext {
    /// Notes the id the request is answered with.
    fn identified(&self, ids: &RequestIds) {
        let _ = self.0.request_id.set(ids.request_id.clone());
    }

    /// The id the request is answered with (none for a request that was not observed).
    pub fn request_id(&self) -> Option<&str> {
        self.0.request_id.get().map(text)
    }

    /// Notes the key the request was authenticated with.
    pub fn authenticated(&self, principal: &Principal) {
        if self.0.key.set(principal.key_id).is_ok() {
            tracing::Span::current().record(
                "key_id",
                tracing::field::display(KeyLabel(principal.key_id)),
            );
        }
    }

    /// Notes the tenant the request acts on.
    pub fn set_tenant(&self, tenant: &TenantId) {
        if self.0.tenant.set(tenant.clone()).is_ok() {
            tracing::Span::current().record("tenant", tracing::field::display(tenant));
        }
    }

    pub fn set_rate(&self, decision: RateDecision) {
        let _ = self.0.rate.set(decision);
    }

    fn tenant(&self) -> Option<&TenantId> {
        self.0.tenant.get()
    }

    /// Records what is known into `span`, made after the fact.
    fn record_on(&self, span: &Span) {
        if let Some(key) = self.0.key.get() {
            span.record("key_id", tracing::field::display(KeyLabel(*key)));
        }
        if let Some(tenant) = self.tenant() {
            span.record("tenant", tracing::field::display(tenant));
        }
    }
}

/// A key as logs name it: its id, or `bootstrap` for the configured admin key.
struct KeyLabel(Option<KeyId>);

impl std::fmt::Display for KeyLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(id) => id.fmt(f),
            None => f.write_str("bootstrap"),
        }
    }
}

/// Which answered requests get an access-log line: every error, every slow request,
/// every request but a successful resolve, and one in `resolve_sample` of those.
pub(crate) struct AccessLog {
    config: AccessLogConfig,
    resolves: AtomicU64,
}

impl AccessLog {
    pub(crate) fn new(config: AccessLogConfig) -> Self {
        Self {
            config,
            resolves: AtomicU64::new(0),
        }
    }

    fn wanted(&self, endpoint: &str, status: u16, elapsed: Duration) -> bool {
        if endpoint != RESOLVE_PATH || status >= 400 || elapsed >= self.config.slow {
            return true;
        }
        match u64::from(self.config.resolve_sample) {
            0 => false,
            n => self
                .resolves
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(n),
        }
    }
}

pub static X_RATE_LIMIT_LIMIT: HeaderName = HeaderName::from_static("x-rate-limit-limit");
pub static X_RATE_LIMIT_REMAINING: HeaderName = HeaderName::from_static("x-rate-limit-remaining");
pub static X_RATE_LIMIT_RESET: HeaderName = HeaderName::from_static("x-rate-limit-reset");

/// `X-Rate-Limit-Limit`, `-Remaining` and `-Reset` (whole seconds, rounded up).
fn rate_headers(headers: &mut impl AnswerHeaders, decision: &RateDecision) {
    headers.put_number(&X_RATE_LIMIT_LIMIT, u64::from(decision.limit));
    headers.put_number(&X_RATE_LIMIT_REMAINING, u64::from(decision.remaining));
    let reset = decision.reset_after.as_secs() + u64::from(decision.reset_after.subsec_nanos() > 0);
    headers.put_number(&X_RATE_LIMIT_RESET, reset);
}

/// A UUID v7 from the thread-local generator (no system call per request).
fn new_request_id() -> HeaderValue {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &rand::random()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

/// 1–128 characters of `A-Z a-z 0-9 . _ -`: the only identifiers echoed back.
fn sane_id(s: &[u8]) -> Option<HeaderValue> {
    (!s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
    .then(|| HeaderValue::from_bytes(s).ok())
    .flatten()
}

/// The text of a header value known to be ASCII.
fn text(value: &HeaderValue) -> &str {
    value.to_str().unwrap_or_default()
}

/// A 128-bit trace id, written as 32 hex digits only when a log line needs it.
struct TraceId(u128);

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The valid W3C `traceparent` of `headers`, if any.
fn traceparent_of(headers: &(impl RequestHead + ?Sized)) -> Option<TraceParent> {
    TraceParent::parse(crate::wire::text(headers.first(&TRACEPARENT)?)?)
}

/// A span of the request's trace, by its id and W3C flags (the trace id is the
/// request's): kept small, as the fast path moves these ids about.
#[derive(Clone, Copy, Debug)]
struct SpanOf {
    span_id: u64,
    flags: u8,
}

impl SpanOf {
    fn of(parent: TraceParent) -> Self {
        Self {
            span_id: parent.span_id,
            flags: parent.flags,
        }
    }

    fn in_trace(self, trace_id: &TraceId) -> TraceParent {
        TraceParent {
            trace_id: trace_id.0,
            span_id: self.span_id,
            flags: self.flags,
        }
    }
}

/// The ids a request is answered and logged with.
pub(crate) struct RequestIds {
    request_id: HeaderValue,
    correlation_id: HeaderValue,
    /// The caller's trace when it sent a valid `traceparent`, else one chosen here: the
    /// request's trace whether or not spans are exported.
    trace_id: TraceId,
    /// The caller's span.
    parent: Option<SpanOf>,
    /// The caller's `tracestate`, read only when spans are exported.
    tracestate: Option<Box<str>>,
    /// The request's own span, once it is known to be recorded (tracing on, sampled).
    traced: Option<SpanOf>,
}

impl RequestIds {
    /// The sane incoming ids of `headers`, new ones for the rest.
    pub(crate) fn of(headers: &(impl RequestHead + ?Sized)) -> Self {
        let request_id = headers
            .first(&X_REQUEST_ID)
            .and_then(sane_id)
            .unwrap_or_else(new_request_id);
        // A copy, not a clone: cloning a value just made allocates as well.
        let correlation_id = headers
            .first(&X_CORRELATION_ID)
            .and_then(sane_id)
            .unwrap_or_else(|| {
                HeaderValue::from_bytes(request_id.as_bytes())
                    .expect("an id is a valid header value")
            });
        let parent = traceparent_of(headers);
        let trace_id = TraceId(parent.map_or_else(rand::random, |p| p.trace_id));
        let tracestate = match parent {
            Some(_) if trace::enabled() => headers
                .first(&TRACESTATE)
                .and_then(crate::wire::text)
                .map(Box::from),
            _ => None,
        };
        Self {
            request_id,
            correlation_id,
            trace_id,
            parent: parent.map(SpanOf::of),
            tracestate,
            traced: None,
        }
    }

    /// Where the request's trace comes from.
    fn origin(&self) -> trace::Origin<'_> {
        trace::Origin {
            trace_id: self.trace_id.0,
            parent: self.parent.map(|p| p.in_trace(&self.trace_id)),
            tracestate: self.tracestate.as_deref(),
        }
    }

    /// Whether the request is to be recorded (never, with tracing off): decided before
    /// its span is made, so that one not recorded costs no span on the fast path.
    pub(crate) fn sampled(&self) -> bool {
        trace::samples(&self.origin())
    }

    /// The one span of the request they identify, in the request's trace.
    pub(crate) fn span(&mut self, method: &Method, endpoint: &str) -> Span {
        let span = tracing::info_span!(
            trace::REQUEST_SPAN,
            method = %method,
            route = %endpoint,
            request_id = text(&self.request_id),
            correlation_id = text(&self.correlation_id),
            trace_id = %self.trace_id,
            tenant = tracing::field::Empty,
            key_id = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        // Adopted even when made only to log in: the sampler then decides as it did.
        self.traced = trace::adopt(&span, &self.origin()).map(SpanOf::of);
        span
    }
}

/// The router's middleware: ids, span, metrics, access log and headers for every
/// request the fast path did not take.
pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut ids = RequestIds::of(request.headers());
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let endpoint = matched
        .as_ref()
        .map_or(tm_telemetry::UNMATCHED, MatchedPath::as_str);
    let method = request.method().clone();
    let context = RequestContext::default();
    context.identified(&ids);
    request.extensions_mut().insert(context.clone());
    let span = ids.span(&method, endpoint);
    let mut response = next.run(request).instrument(span.clone()).await;
    let exchange = Exchange {
        method: &method,
        endpoint,
        started,
        context: &context,
    };
    answered(&state, &exchange, ids, Some(span), &mut response);
    response
}

/// A request that has been answered, as the metrics and the log see it.
pub(crate) struct Exchange<'a> {
    pub method: &'a Method,
    /// The route template (never the raw path).
    pub endpoint: &'a str,
    pub started: Instant,
    pub context: &'a RequestContext,
}

/// Everything done once a request is answered, on either path: counts it, logs it as the
/// access-log policy says (in `span`, or a span made now if it has none), and adds the
/// id, rate-limit and security headers.
pub(crate) fn answered(
    state: &AppState,
    exchange: &Exchange<'_>,
    mut ids: RequestIds,
    span: Option<Span>,
    response: &mut Response,
) {
    let fault = response.extensions_mut().remove::<ServerFault>();
    observed(
        state,
        exchange,
        &mut ids,
        span,
        response.status().as_u16(),
        fault,
    );
    let headers = response.headers_mut();
    headers.reserve(ADDED_HEADERS);
    add_headers(state, exchange.context, ids, headers);
}

/// Counts an answered request and logs it as the access-log policy says (in `span`, or
/// a span made now if it has none), with the server fault behind a 5xx answer if any.
pub(crate) fn observed(
    state: &AppState,
    exchange: &Exchange<'_>,
    ids: &mut RequestIds,
    span: Option<Span>,
    status: u16,
    fault: Option<ServerFault>,
) {
    let Exchange {
        method,
        endpoint,
        started,
        context,
    } = exchange;
    let elapsed = started.elapsed();
    state
        .metrics
        .observe_request(method.as_str(), endpoint, status, elapsed.as_secs_f64());
    if let Some(tenant) = context.tenant() {
        state.metrics.observe_tenant(tenant.as_str());
    }
    let logged = fault.is_some() || state.access_log.wanted(endpoint, status, elapsed);
    if logged {
        let made;
        let span = match &span {
            Some(span) => span,
            None => {
                made = ids.span(method, endpoint);
                context.record_on(&made);
                &made
            }
        };
        span.in_scope(|| {
            if let Some(ServerFault(fault)) = fault {
                log_fault(status, &fault);
            }
            tracing::info!(
                status,
                latency_ms = elapsed.as_secs_f64() * 1000.0,
                "{method} {endpoint} answered {status}"
            );
        });
    }
    // Recorded once the log lines are written, which need not repeat it: for the
    // exported span only.
    if let (Some(span), Some(_)) = (&span, &ids.traced) {
        span.record("http.response.status_code", status);
        if status >= 500 {
            span.record("otel.status_code", "error");
        }
    }
}

/// The headers every answer carries: security, the rate budget's (when one was drawn
/// from) and the request's ids.
pub(crate) fn add_headers(
    state: &AppState,
    context: &RequestContext,
    ids: RequestIds,
    headers: &mut impl AnswerHeaders,
) {
    crate::security::add_headers(headers, state.config.behind_tls);
    if let Some(decision) = context.0.rate.get() {
        rate_headers(headers, decision);
    }
    headers.put(&X_REQUEST_ID, &ids.request_id);
    headers.put(&X_CORRELATION_ID, &ids.correlation_id);
    if let Some(traced) = ids.traced.map(|t| t.in_trace(&ids.trace_id)) {
        // The recorded span, for the caller to find the request in its trace.
        let mut text = [0u8; 55];
        let mut out = &mut text[..];
        if std::io::Write::write_fmt(&mut out, format_args!("{traced}")).is_ok() {
            headers.put_ascii(&TRACEPARENT, &text);
        }
    }
}

/// Logs the error behind a 5xx answer once, with its whole `source()` chain.
fn log_fault(status: u16, fault: &ApiError) {
    if status == 503 {
        // Refusing to protect the database is the design working, not a fault.
        tracing::warn!(error = %ErrorChain(fault), "request refused");
    } else {
        tracing::error!(error = %ErrorChain(fault), "request failed");
    }
}

/// An error and its sources, as `outer: inner: innermost`.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn successful_resolves_are_sampled_and_everything_else_is_logged() {
        let policy = AccessLog::new(AccessLogConfig {
            resolve_sample: 10,
            slow: Duration::from_millis(100),
        });
        let quick = Duration::from_millis(1);
        let logged = (0..100)
            .filter(|_| policy.wanted(RESOLVE_PATH, 200, quick))
            .count();
        assert_eq!(logged, 10);
        for status in [400, 401, 404, 429, 500, 503] {
            assert!(policy.wanted(RESOLVE_PATH, status, quick), "{status}");
        }
        assert!(policy.wanted(RESOLVE_PATH, 200, Duration::from_millis(100)));
        assert!(policy.wanted("/api/v1/routes", 200, quick));
        assert!(policy.wanted("/api/v1/routes/{id}", 304, quick));

        let silent = AccessLog::new(AccessLogConfig {
            resolve_sample: 0,
            slow: Duration::from_millis(100),
        });
        assert!(!(0..100).any(|_| silent.wanted(RESOLVE_PATH, 304, quick)));
        assert!(silent.wanted(RESOLVE_PATH, 404, quick));
    }

    #[test]
    fn an_error_chain_names_every_cause() {
        let inner = std::io::Error::other("connection reset");
        let outer = ApiError::internal("reading from the database", inner);
        assert_eq!(
            ErrorChain(&outer).to_string(),
            "internal error: reading from the database: connection reset"
        );
    }

    /// What a subscriber writes, kept for the test to read.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(status: u16, fault: &ApiError) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || log_fault(status, fault));
        let bytes = captured.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes).expect("text")
    }

    #[test]
    fn a_fault_is_logged_once_with_its_causes_and_a_refusal_as_a_warning() {
        let failed = ApiError::internal(
            "reading from the database",
            std::io::Error::other("disk on fire"),
        );
        let line = logged(500, &failed);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains("request failed"), "{line}");
        assert!(
            line.contains("reading from the database: disk on fire"),
            "{line}"
        );

        let refused = logged(503, &ApiError::Unavailable("the breaker is open"));
        assert!(refused.contains("WARN"), "{refused}");
        assert!(refused.contains("request refused"), "{refused}");
    }

    #[test]
    fn only_sane_ids_are_kept() {
        for ok in ["a", "req-1.2_3", &"x".repeat(128), "ABC-def"] {
            assert!(sane_id(ok.as_bytes()).is_some(), "{ok}");
        }
        for bad in ["", &"x".repeat(129), "a b", "a/b", "a;b", "é"] {
            assert!(sane_id(bad.as_bytes()).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_valid_traceparent_names_the_trace_and_the_caller() {
        let mut headers = HeaderMap::new();
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert(&TRACEPARENT, HeaderValue::from_static(valid));
        let ids = RequestIds::of(&headers);
        assert_eq!(ids.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ids.parent.map(|p| p.span_id), Some(0x00f0_67aa_0ba9_02b7));
        headers.insert(
            &TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
        );
        let ids = RequestIds::of(&headers);
        assert!(ids.parent.is_none());
        assert_ne!(ids.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn with_tracing_off_no_traceparent_is_answered() {
        let mut ids = RequestIds::of(&HeaderMap::new());
        let _span = ids.span(&Method::GET, "/api/v1/routes");
        assert!(!ids.sampled());
        assert!(ids.traced.is_none());
    }
}
