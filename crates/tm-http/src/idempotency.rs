//! `Idempotency-Key` on writes: a repeat of a write with the same key and the same
//! request within 24 hours gets the first answer again, without writing again; the same
//! key with another request is a 422; a repeat while the first is still being answered
//! is a 409.
//!
//! Only an admitted request (authenticated, within its rate budget, of a role that may
//! do the operation) whose body is JSON gets as far as a claim, and the claim is
//! admitted as a write is (circuit breaker, bulkhead, time-out). Records are per caller
//! (the key that wrote), at most `TM_IDEMPOTENCY_MAX_KEYS` of them at once (beyond: 429).
//! They live in Redis when it is configured and usable, else in the database; a record
//! kept in the database during a Redis outage is still found afterwards. Only answers
//! that changed something (2xx) are kept: after any other the key is free again.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header::{CONTENT_TYPE, IF_MATCH};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tm_domain::{FieldError, FieldErrors};
use tm_store::{Actor, IdempotencyClaim, IdempotencyRecord, StoredResponse};

use crate::guard::WriteKind;
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

/// An admitted write of `kind` by `caller`: with an `Idempotency-Key`, its body is read
/// and checked (`json`: as JSON), its key claimed, and a 2xx answer kept; a repeat is
/// answered from what is kept.
pub(crate) async fn honour(
    state: &AppState,
    kind: WriteKind,
    json: bool,
    caller: Actor,
    request: Request,
    next: Next,
) -> Response {
    let key = match idempotency_key(&request) {
        Ok(Some(key)) => key,
        Ok(None) => return next.run(request).await,
        Err(refusal) => return refusal.into_response(),
    };
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, state.config.body_limit_bytes).await {
        Ok(body) => body,
        Err(e) if crate::serve::is_body_timeout(&e) => {
            return ApiError::BodyTimeout.into_response();
        }
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    if json {
        if let Err(refusal) = crate::extract::check_json(&parts.headers, &body) {
            return refusal.into_response();
        }
    }
    let claim = Claim {
        scope: caller.as_str().to_owned(),
        fingerprint: fingerprint(&parts, &body),
        key,
    };
    let (backend, outcome) = match claim_key(state, kind, &claim).await {
        Ok(claimed) => claimed,
        Err(refusal) => return refusal.into_response(),
    };
    match outcome {
        IdempotencyClaim::Full => ApiError::IdempotencyKeysExhausted.into_response(),
        IdempotencyClaim::Kept(record) if record.fingerprint != claim.fingerprint => {
            ApiError::IdempotencyKeyReused.into_response()
        }
        IdempotencyClaim::Kept(record) => match record.response {
            Some(response) => replay(response),
            None => ApiError::IdempotencyKeyInUse.into_response(),
        },
        IdempotencyClaim::Claimed => {
            let request = Request::from_parts(parts, Body::from(body));
            answer_and_keep(state, backend, &claim, next.run(request).await).await
        }
    }
}

/// An operation whose answer cannot be replayed: `Idempotency-Key` is refused with 422.
pub(crate) async fn refuse(request: Request, next: Next) -> Response {
    if !request.headers().contains_key(&IDEMPOTENCY_KEY) {
        return next.run(request).await;
    }
    ApiError::Invalid(FieldErrors(vec![FieldError::new(
        "Idempotency-Key",
        "not accepted when creating a key: its secret is shown once and never kept, so the answer cannot be replayed",
    )]))
    .into_response()
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

/// Keeps `response` under the claimed key if it changed something (2xx), else gives the
/// claim up so that the key is free again; passes it on either way.
async fn answer_and_keep(
    state: &AppState,
    backend: Backend,
    claim: &Claim,
    response: Response,
) -> Response {
    if !response.status().is_success() {
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

/// Claims the key, in Redis if usable, else in the database, the database's part
/// admitted as a write of `kind` is.
async fn claim_key(
    state: &AppState,
    kind: WriteKind,
    claim: &Claim,
) -> Result<(Backend, IdempotencyClaim), ApiError> {
    let Claim {
        scope,
        key,
        fingerprint,
    } = claim;
    let max_live = state.config.idempotency_max_keys;
    if let Some(redis) = &state.redis {
        match redis
            .claim_idempotency_key(scope, key, fingerprint, pending_for(state), max_live)
            .await
        {
            Ok(IdempotencyClaim::Claimed) => {
                // What was kept in the database while Redis was unusable still counts:
                // an answer, another request's key, a request still being answered.
                // Looked up briefly, if the guards let it: past that, the Redis claim
                // stands.
                let in_database = tokio::time::timeout(
                    DATABASE_LOOKUP,
                    state
                        .guard
                        .write_aside(kind, state.store.get_idempotency_key(scope, key)),
                )
                .await;
                return match in_database {
                    Ok(Ok(Some(kept))) => {
                        let _ = redis.release_idempotency_key(scope, key, fingerprint).await;
                        Ok((Backend::Database, IdempotencyClaim::Kept(kept)))
                    }
                    _ => Ok((Backend::Redis, IdempotencyClaim::Claimed)),
                };
            }
            Ok(found) => return Ok((Backend::Redis, found)),
            Err(tm_redis::Unavailable) => {
                state.metrics.observe_redis_fallback("idempotency");
            }
        }
    }
    let outcome = state
        .guard
        .write_aside(
            kind,
            state.store.claim_idempotency_key(
                scope,
                key,
                fingerprint,
                pending_for(state),
                max_live,
            ),
        )
        .await?;
    Ok((Backend::Database, outcome))
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
