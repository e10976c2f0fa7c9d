//! `Idempotency-Key` on writes: a repeat of a write with the same key and the same
//! request within 24 hours gets the first answer again, without writing again; the same
//! key with another request is a 422; a repeat while the first is still being answered
//! is a 409.
//!
//! Records are per caller (the key that wrote). They live in Redis when it is configured
//! and usable, else in the database; a record kept in the database during a Redis outage
//! is still found afterwards. Answers worth retrying (401, 429, 5xx) are not kept.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, IF_MATCH};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tm_domain::{FieldError, FieldErrors};
use tm_store::{IdempotencyRecord, StoredResponse};

use crate::{ApiError, AppState};

pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long an answer is kept for repeats.
const KEEP_FOR: Duration = Duration::from_secs(24 * 3600);
/// How long a claim holds at least while its request is answered; a process that dies
/// meanwhile frees the key after this. Longer when the write time-outs are.
const PENDING_FOR: Duration = Duration::from_secs(60);

/// A claim outlives any request it covers: its waits for capacity and its time-out.
fn pending_for(state: &AppState) -> Duration {
    let guards = &state.config.guards;
    PENDING_FOR.max((guards.bulkhead_wait + guards.timeout_write) * 2)
}
/// The headers of an answer that are kept and replayed.
const KEPT_HEADERS: &[&str] = &["content-type", "etag", "location"];
/// Largest answer kept.
const MAX_KEPT_BODY: usize = 1024 * 1024;
/// Bound on looking for a record kept in the database after claiming in Redis.
const DATABASE_LOOKUP: Duration = Duration::from_millis(500);

/// Where a claim was made, so the answer is kept in the same place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Redis,
    Database,
}

/// The layer of the write routes (the router puts it on those alone).
pub async fn idempotency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let key = match idempotency_key(&request) {
        Ok(Some(key)) => key,
        Ok(None) => return next.run(request).await,
        Err(refusal) => return refusal.into_response(),
    };
    // Only a caller with a live key has records; anyone else gets the handler's 401.
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|(_, key)| state.keys.authenticate(key.trim()));
    let Some(principal) = presented else {
        return next.run(request).await;
    };
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    if request.method() == Method::POST && path == "/api/v1/keys" {
        return ApiError::Invalid(FieldErrors(vec![FieldError::new(
            "Idempotency-Key",
            "not accepted when creating a key: its secret is shown once and never kept, so the answer cannot be replayed",
        )]))
        .into_response();
    }

    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, state.config.body_limit_bytes).await {
        Ok(body) => body,
        Err(e) if crate::serve::is_body_timeout(&e) => {
            return ApiError::BodyTimeout.into_response();
        }
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    let claim = Claim {
        scope: principal.actor().as_str().to_owned(),
        fingerprint: fingerprint(&parts, &body),
        key,
    };
    let (backend, kept) = match claim_key(&state, &claim).await {
        Ok(claimed) => claimed,
        Err(refusal) => return refusal.into_response(),
    };
    match kept {
        Some(record) if record.fingerprint != claim.fingerprint => {
            ApiError::IdempotencyKeyReused.into_response()
        }
        Some(record) => match record.response {
            Some(response) => replay(response),
            None => ApiError::IdempotencyKeyInUse.into_response(),
        },
        None => {
            let request = Request::from_parts(parts, Body::from(body));
            answer_and_keep(&state, backend, &claim, next.run(request).await).await
        }
    }
}

/// The request's `Idempotency-Key`, if it has one: 1–255 visible ASCII characters.
fn idempotency_key(request: &Request) -> Result<Option<String>, ApiError> {
    let Some(raw) = request.headers().get(&IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    raw.to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(|k| Some(k.to_owned()))
        .ok_or_else(|| {
            ApiError::Malformed("Idempotency-Key must be 1 to 255 visible ASCII characters".into())
        })
}

/// A key claimed for one request of one caller.
struct Claim {
    /// The caller (the key that wrote): records are per caller.
    scope: String,
    key: String,
    fingerprint: String,
}

/// Keeps `response` under the claimed key, unless it is worth retrying (then the claim
/// is given up so that a retry runs again), and passes it on.
async fn answer_and_keep(
    state: &AppState,
    backend: Backend,
    claim: &Claim,
    response: Response,
) -> Response {
    let status = response.status();
    let worth_retrying = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::UNAUTHORIZED;
    if worth_retrying {
        release(state, backend, claim).await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, MAX_KEPT_BODY).await {
        Ok(body) => body,
        Err(err) => {
            release(state, backend, claim).await;
            return ApiError::internal("keeping an answer too large to keep", err).into_response();
        }
    };
    if let Ok(text) = std::str::from_utf8(&body) {
        let kept = StoredResponse {
            status: parts.status.as_u16(),
            headers: KEPT_HEADERS
                .iter()
                .filter_map(|name| {
                    let value = parts.headers.get(*name)?.to_str().ok()?;
                    Some(((*name).to_owned(), value.to_owned()))
                })
                .collect(),
            body: text.to_owned(),
        };
        keep(state, backend, claim, kept).await;
    } else {
        release(state, backend, claim).await;
    }
    Response::from_parts(parts, Body::from(body))
}

/// Hex SHA-256 of method, path with query, content type, precondition and body.
fn fingerprint(parts: &axum::http::request::Parts, body: &Bytes) -> String {
    let mut digest = Sha256::new();
    digest.update(parts.method.as_str());
    digest.update(b"\n");
    digest.update(parts.uri.path_and_query().map_or("", |p| p.as_str()));
    digest.update(b"\n");
    for name in [CONTENT_TYPE, IF_MATCH] {
        digest.update(
            parts
                .headers
                .get(name)
                .map_or(&b""[..], HeaderValue::as_bytes),
        );
        digest.update(b"\n");
    }
    digest.update(body);
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn replay(kept: StoredResponse) -> Response {
    let mut response = Response::new(Body::from(kept.body));
    *response.status_mut() = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    for (name, value) in kept.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    }
    headers.insert(
        IDEMPOTENT_REPLAYED.clone(),
        HeaderValue::from_static("true"),
    );
    response
}

/// Bounds a database step of idempotency by the write time-out.
async fn bounded<T>(
    state: &AppState,
    work: impl std::future::Future<Output = Result<T, tm_store::StoreError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(state.config.guards.timeout_write, work).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(ApiError::Unavailable("the database did not answer in time")),
    }
}

/// Claims the key, in Redis if usable, else in the database; `Some` is what is kept
/// under it already.
async fn claim_key(
    state: &AppState,
    claim: &Claim,
) -> Result<(Backend, Option<IdempotencyRecord>), ApiError> {
    let Claim {
        scope,
        key,
        fingerprint,
    } = claim;
    if let Some(redis) = &state.redis {
        match redis
            .claim_idempotency_key(scope, key, fingerprint, pending_for(state))
            .await
        {
            Ok(Some(kept)) => return Ok((Backend::Redis, Some(kept))),
            Ok(None) => {
                // What was kept in the database while Redis was unusable still counts:
                // an answer, another request's key, a request still being answered.
                // Looked up briefly: past that, the Redis claim stands.
                let in_database = tokio::time::timeout(
                    DATABASE_LOOKUP,
                    state.store.get_idempotency_key(scope, key),
                )
                .await;
                return match in_database {
                    Ok(Ok(Some(kept))) => {
                        let _ = redis.release_idempotency_key(scope, key, fingerprint).await;
                        Ok((Backend::Database, Some(kept)))
                    }
                    _ => Ok((Backend::Redis, None)),
                };
            }
            Err(tm_redis::Unavailable) => {
                state.metrics.observe_redis_fallback("idempotency");
            }
        }
    }
    let kept = bounded(
        state,
        state
            .store
            .claim_idempotency_key(scope, key, fingerprint, pending_for(state)),
    )
    .await?;
    Ok((Backend::Database, kept))
}

async fn keep(state: &AppState, backend: Backend, claim: &Claim, response: StoredResponse) {
    let Claim {
        scope,
        key,
        fingerprint,
    } = claim;
    if backend == Backend::Redis {
        if let Some(redis) = &state.redis {
            let record = IdempotencyRecord {
                fingerprint: fingerprint.to_owned(),
                response: Some(response.clone()),
            };
            if redis
                .complete_idempotency_key(scope, key, &record, KEEP_FOR)
                .await
                .is_ok()
            {
                return;
            }
            state.metrics.observe_redis_fallback("idempotency");
        }
    }
    let kept = bounded(
        state,
        state
            .store
            .complete_idempotency_key(scope, key, fingerprint, &response, KEEP_FOR),
    )
    .await;
    if let Err(error) = kept {
        // The write is done and answered; only a repeat of it would now write again.
        tracing::warn!(%error, "could not keep the answer to an idempotent request");
    }
}

async fn release(state: &AppState, backend: Backend, claim: &Claim) {
    let Claim {
        scope,
        key,
        fingerprint,
    } = claim;
    match (backend, &state.redis) {
        (Backend::Redis, Some(redis)) => {
            let _ = redis.release_idempotency_key(scope, key, fingerprint).await;
        }
        _ => {
            let _ = bounded(state, state.store.release_idempotency_key(scope, key)).await;
        }
    }
}
