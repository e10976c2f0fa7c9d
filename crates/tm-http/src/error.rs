//! `ApiError`: every way a request can fail, and the one place that turns it into an
//! RFC 9457 `application/problem+json` response.

use std::borrow::Cow;
use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tm_domain::{DomainError, FieldError, FieldErrors};
use tm_store::StoreError;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECONDS: u32 = 2;
/// Seconds before retrying a write with a new `Idempotency-Key` when its caller holds too
/// many: records expire one by one, a day after they were made.
const IDEMPOTENCY_KEYS_RETRY_AFTER_SECONDS: u32 = 60;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Well-formed input with invalid values; each field says what is wrong.
    #[error("invalid fields")]
    Invalid(FieldErrors),
    /// Input that could not be read at all: broken JSON, an unreadable query string.
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("payload too large")]
    PayloadTooLarge,
    /// A request body that did not arrive whole within `TM_HTTP_BODY_READ_TIMEOUT`.
    #[error("request body timed out")]
    BodyTimeout,
    #[error("not found")]
    NotFound,
    #[error("no active route")]
    NoActiveRoute,
    /// No version is healthy and the service's policy serves none then.
    #[error("no healthy route")]
    NoHealthyRoute,
    /// A dead job replayed while a live job has its deduplication key.
    #[error("job key in use")]
    JobKeyInUse,
    /// `after` names an event the outbox does not hold (any more).
    #[error("event not kept")]
    EventNotKept,
    /// `after` names no audit entry the caller may see.
    #[error("audit entry not found")]
    AuditEntryNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// An `Idempotency-Key` already used with another request.
    #[error("idempotency key reused with another request")]
    IdempotencyKeyReused,
    /// An `Idempotency-Key` whose first request is still being answered.
    #[error("idempotency key in use")]
    IdempotencyKeyInUse,
    #[error("rate limited")]
    RateLimited { retry_after: std::time::Duration },
    /// The caller holds as many idempotency records as it may.
    #[error("too many idempotency keys")]
    IdempotencyKeysExhausted,
    /// Refused to protect the database: breaker open, bulkhead full, time-out, shedding.
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
    /// A server fault: what was being done, and the error behind it (logged with its
    /// `source()` chain by the logging middleware, never shown to the client).
    #[error("internal error: {context}")]
    Internal {
        context: &'static str,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    /// A server fault while doing `context`, caused by `source`.
    pub fn internal(
        context: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ApiError::Internal {
            context,
            source: Arc::new(source),
        }
    }
}

/// The error behind a 5xx answer, carried in the response's extensions to the logging
/// middleware, which logs it once, inside the request's span.
#[derive(Clone, Debug)]
pub struct ServerFault(pub Arc<ApiError>);

impl From<DomainError> for ApiError {
    fn from(err: DomainError) -> Self {
        match err {
            DomainError::Invalid(fields) => ApiError::Invalid(fields),
            DomainError::InvalidValue { reason } => {
                ApiError::Invalid(FieldErrors(vec![FieldError::new("body", reason)]))
            }
        }
    }
}

/// The problem document of RFC 9457.
#[derive(Debug, Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: Cow<'static, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

/// Problem types are URNs under this prefix, e.g. `urn:traffic-manager:problem:route-exists`.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:traffic-manager:problem:";

impl ApiError {
    /// Status, problem type (slug), title and detail: the table every answer is made from.
    #[expect(
        clippy::too_many_lines,
        reason = "a table: one arm per kind of problem"
    )]
    fn problem(&self) -> (StatusCode, &'static str, &'static str, Cow<'static, str>) {
        use StatusCode as S;
        match self {
            ApiError::Invalid(_) => (
                S::UNPROCESSABLE_ENTITY,
                "invalid-fields",
                "Invalid fields",
                "One or more fields are invalid; see errors.".into(),
            ),
            ApiError::Malformed(why) => (
                S::BAD_REQUEST,
                "malformed-request",
                "Malformed request",
                why.clone().into(),
            ),
            ApiError::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "The request body must be JSON, sent with Content-Type: application/json.".into(),
            ),
            ApiError::PayloadTooLarge => (
                S::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                "The request body is larger than this server accepts.".into(),
            ),
            ApiError::BodyTimeout => (
                S::REQUEST_TIMEOUT,
                "request-timeout",
                "Request timeout",
                "The request body did not arrive in the time allowed.".into(),
            ),
            ApiError::NotFound | ApiError::Store(StoreError::NotFound) => (
                S::NOT_FOUND,
                "not-found",
                "Not found",
                "No such resource.".into(),
            ),
            ApiError::NoActiveRoute => (
                S::NOT_FOUND,
                "no-active-route",
                "No active route",
                "No active version of this service can be chosen.".into(),
            ),
            ApiError::NoHealthyRoute => (
                S::SERVICE_UNAVAILABLE,
                "no-healthy-route",
                "No healthy route",
                "No active version of this service is healthy, and its policy (healthy_only) \
                 serves none then; retry later."
                    .into(),
            ),
            ApiError::EventNotKept => (
                S::NOT_FOUND,
                "event-not-kept",
                "Event not kept",
                "No event with this id is kept: it is older than the retention \
                 (TM_EVENTS_RETENTION), or was never made. Read again from the oldest kept, \
                 without `after`."
                    .into(),
            ),
            ApiError::AuditEntryNotFound => (
                S::NOT_FOUND,
                "audit-entry-not-found",
                "Audit entry not found",
                "No audit entry with this id is visible to this key; read from the first, \
                 without `after`."
                    .into(),
            ),
            ApiError::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "This resource does not support this method.".into(),
            ),
            ApiError::Unauthorized(why) => (
                S::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                (*why).into(),
            ),
            ApiError::Forbidden(why) => (S::FORBIDDEN, "forbidden", "Forbidden", why.clone().into()),
            ApiError::RateLimited { .. } => (
                S::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                "The request budget of this key, or of all its tenant's keys together, for this kind of request is spent; retry after Retry-After seconds.".into(),
            ),
            ApiError::IdempotencyKeysExhausted => (
                S::TOO_MANY_REQUESTS,
                "idempotency-keys-exhausted",
                "Too many idempotency keys",
                "This key holds as many Idempotency-Key records as it may (each is kept 24 \
                 hours); send writes without Idempotency-Key, or retry after Retry-After \
                 seconds."
                    .into(),
            ),
            ApiError::IdempotencyKeyReused => (
                S::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused",
                "This Idempotency-Key was used with a different request (method, path or body) \
                 within the last 24 hours; use a new key for a new request."
                    .into(),
            ),
            ApiError::IdempotencyKeyInUse => (
                S::CONFLICT,
                "idempotency-key-in-use",
                "Idempotency key in use",
                "The first request with this Idempotency-Key is still being answered; retry \
                 after Retry-After seconds to get its answer."
                    .into(),
            ),
            ApiError::JobKeyInUse => (
                S::CONFLICT,
                "job-key-in-use",
                "Job key in use",
                "A job with this job's deduplication key is queued or running; replay this \
                 one after it ends, or purge it."
                    .into(),
            ),
            ApiError::Store(StoreError::Conflict) => (
                S::CONFLICT,
                "route-exists",
                "Route exists",
                "A route with this tenant, service, env and version already exists.".into(),
            ),
            ApiError::Store(StoreError::NoRollback(why)) => (
                S::CONFLICT,
                "nothing-to-roll-back",
                "Nothing to roll back to",
                format!("Nothing to roll back to: {why}.").into(),
            ),
            ApiError::Store(StoreError::TooManyKeys { max }) => (
                S::CONFLICT,
                "too-many-keys",
                "Too many keys",
                format!(
                    "This tenant holds {max} live keys, the most allowed; revoke one before \
                     creating another."
                )
                .into(),
            ),
            ApiError::Store(StoreError::TooManyWebhooks { max }) => (
                S::CONFLICT,
                "too-many-webhooks",
                "Too many webhooks",
                format!(
                    "This tenant holds {max} webhook subscriptions, the most allowed; delete \
                     one before creating another."
                )
                .into(),
            ),
            ApiError::Store(StoreError::StaleRevision { current }) => (
                S::PRECONDITION_FAILED,
                "stale-revision",
                "Precondition failed",
                format!(
                    "The route is at revision {}; If-Match names another.",
                    current.revision
                )
                .into(),
            ),
            ApiError::Unavailable(why) => (
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                format!("{why}; retry later.").into(),
            ),
            ApiError::Internal { .. } => (
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "The request could not be completed.".into(),
            ),
            ApiError::Store(StoreError::Unavailable(_)) => (
                S::SERVICE_UNAVAILABLE,
                "database-unavailable",
                "Service unavailable",
                "The database is unavailable; retry later.".into(),
            ),
            ApiError::Store(StoreError::Corrupt(_) | StoreError::Refused(_) | StoreError::Other(_)) => (
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "The request could not be completed.".into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use StatusCode as S;
        let (status, slug, title, detail) = self.problem();
        let reused;
        let errors = match &self {
            ApiError::Invalid(fields) => Some(fields.0.as_slice()),
            ApiError::IdempotencyKeyReused => {
                reused = [FieldError::new(
                    "Idempotency-Key",
                    "already used with a different request",
                )];
                Some(reused.as_slice())
            }
            _ => None,
        };
        let problem = Problem {
            kind: format!("{PROBLEM_TYPE_PREFIX}{slug}"),
            title,
            status: status.as_u16(),
            detail,
            errors,
        };
        let body = serde_json::to_vec(&problem).expect("a problem always serializes");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == S::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::RateLimited { retry_after } = &self {
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if status == S::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        if let ApiError::IdempotencyKeysExhausted = &self {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(IDEMPOTENCY_KEYS_RETRY_AFTER_SECONDS),
            );
        }
        if let ApiError::IdempotencyKeyInUse = &self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
        }
        if status.is_server_error() {
            response
                .extensions_mut()
                .insert(ServerFault(Arc::new(self)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_faults_ride_to_the_logging_middleware_and_client_errors_do_not() {
        let io = std::io::Error::other("disk on fire");
        let internal = ApiError::internal("keeping an answer", io).into_response();
        assert_eq!(internal.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let fault = internal
            .extensions()
            .get::<ServerFault>()
            .expect("a 500 carries its error");
        let source = std::error::Error::source(fault.0.as_ref()).expect("the cause is kept");
        assert_eq!(source.to_string(), "disk on fire");

        let refused = ApiError::Unavailable("the breaker is open").into_response();
        assert!(refused.extensions().get::<ServerFault>().is_some());

        let not_found = ApiError::NotFound.into_response();
        assert!(not_found.extensions().get::<ServerFault>().is_none());
    }
}
