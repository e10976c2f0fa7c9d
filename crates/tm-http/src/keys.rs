//! API key management: create (the secret is shown once, within the tenant's cap on
//! live keys), list a page at a time, revoke. Creations and revocations are audited.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tm_domain::{ApiKey, FieldErrors, Grant, KeyId, Role, TenantId};
use tm_store::{KeyPage, KeyRecord, KeyView};

use crate::auth::{Action, Caller};
use crate::extract::{ApiJson, ApiQuery};
use crate::guard::WriteKind;
use crate::page::{self, KEY_CURSORS};
use crate::{ApiError, AppState};

const MAX_NAME_LEN: usize = 100;

/// A key to create (documented as [`crate::openapi::NewKeyDoc`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    name: Option<String>,
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    role: Option<String>,
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    tenant: Option<String>,
}

/// Whether `name` is a key name: 1 to [`MAX_NAME_LEN`] characters, none of them a
/// control character, not all of them white space (the pattern of `KeyName` in the
/// OpenAPI document says the same).
fn check_name(name: &str) -> Result<(), String> {
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(format!(
            "must be 1 to {MAX_NAME_LEN} characters, not all of them white space"
        ));
    }
    Ok(())
}

impl CreateKeyBody {
    fn parse(self) -> Result<(String, Grant), ApiError> {
        let mut errors = FieldErrors::default();
        let name = match self.name {
            None => {
                errors.push("name", "is required");
                None
            }
            Some(name) => match check_name(&name) {
                Ok(()) => Some(name),
                Err(why) => {
                    errors.push("name", why);
                    None
                }
            },
        };
        let role = match self.role.as_deref() {
            None => {
                errors.push("role", "is required");
                None
            }
            Some(role) => errors.check("role", role.parse::<Role>()),
        };
        let tenant = self
            .tenant
            .as_deref()
            .map(|t| errors.check("tenant", TenantId::parse(t)));
        let grant = match (role, tenant) {
            (Some(role), Some(Some(tenant))) => {
                errors.check("tenant", Grant::new(role, Some(tenant)))
            }
            (Some(role), None) => errors.check("tenant", Grant::new(role, None)),
            _ => None,
        };
        match (name, grant) {
            (Some(name), Some(grant)) if errors.is_empty() => Ok((name, grant)),
            _ => Err(ApiError::Invalid(errors)),
        }
    }
}

/// The answer to a creation: the key's view plus the secret, shown only here.
#[derive(Serialize)]
struct CreatedKey<'a> {
    #[serde(flatten)]
    view: KeyView<'a>,
    key: String,
}

#[derive(Serialize)]
struct KeyList<'a> {
    items: Vec<KeyView<'a>>,
    next_cursor: Option<String>,
}

/// Which page of keys to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyListQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page of this listing; any other is a 400.
    #[param(pattern = "^azE6[A-Za-z0-9_-]{21}[AQgw]$")]
    cursor: Option<String>,
}

/// Admins create any key; a tenant admin only reader keys of its own tenant.
fn may_create(caller: &Caller, grant: &Grant) -> Result<(), ApiError> {
    match caller.grant() {
        Grant::Admin => Ok(()),
        Grant::TenantAdmin(own) => match grant {
            Grant::Reader(tenant) if tenant == own => Ok(()),
            Grant::Reader(tenant) => caller.authorize(Action::ManageKeys, tenant),
            _ => Err(ApiError::Forbidden(
                "a tenant_admin key may only create reader keys of its own tenant".into(),
            )),
        },
        Grant::Reader(_) => caller.scope(Action::ManageKeys).map(|_| ()),
    }
}

/// Create an API key. The secret is in this answer only.
///
/// `Idempotency-Key` is refused here (422): the secret is never kept, so the answer
/// could not be replayed.
#[utoipa::path(
    post,
    path = "/api/v1/keys",
    operation_id = "create_key",
    tag = "keys",
    request_body = crate::openapi::NewKeyDoc,
    responses(
        (status = 201, description = "Created", body = crate::openapi::CreatedKeyDoc, headers(("Location" = String))),
        (status = 409, description = "The key's tenant holds `TM_MAX_KEYS_PER_TENANT` live keys already (revoke one first)",
            body = crate::openapi::ProblemDoc, content_type = "application/problem+json"),
        crate::openapi::Problems,
        crate::openapi::BodyProblems,
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<Response, ApiError> {
    caller.scope(Action::ManageKeys)?;
    let (name, grant) = body.parse()?;
    may_create(&caller, &grant)?;
    let key = ApiKey::new(KeyId::generate(), rand::random());
    let record = KeyRecord::new(&key, name, grant);
    let actor = caller.actor();
    let most = state.config.rate_limits.max_keys_per_tenant.get();
    state
        .guard
        .write(
            WriteKind::Ordinary,
            state.keys.create(record.clone(), &actor, Some(most)),
        )
        .await?;
    tracing::info!(key.id = %record.id, key.role = %record.grant.role(), by = %actor.as_str(), "API key created");
    announce_key_change(&state).await;
    let location = HeaderValue::from_str(&format!("/api/v1/keys/{}", record.id))
        .expect("a path is a valid header value");
    let body = CreatedKey {
        view: record.view(),
        key: key.expose(),
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// List live keys (all for admins, the tenant's for tenant admins), without secrets, a
/// page at a time, in id order.
#[utoipa::path(
    get,
    path = "/api/v1/keys",
    operation_id = "list_keys",
    tag = "keys",
    params(KeyListQuery),
    responses(
        (status = 200, description = "A page of keys", body = crate::openapi::KeyListDoc),
        crate::openapi::Problems,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<KeyListQuery>,
) -> Result<Response, ApiError> {
    let scope = caller.scope(Action::ManageKeys)?;
    let after = query
        .cursor
        .as_deref()
        .map(|raw| KEY_CURSORS.decode(raw))
        .transpose()?;
    let mut errors = FieldErrors::default();
    let limit = page::limit(query.limit, &mut errors);
    errors.into_result()?;
    // One more than asked tells whether another page exists.
    let asked = KeyPage {
        after,
        limit: limit + 1,
    };
    let mut records = state
        .guard
        .read_uncached(|| state.store.list_keys(scope, asked))
        .await?;
    let next_cursor = if records.len() > limit as usize {
        records.truncate(limit as usize);
        records.last().map(|k| KEY_CURSORS.encode(k.id))
    } else {
        None
    };
    let items = records.iter().map(KeyRecord::view).collect();
    Ok(Json(KeyList { items, next_cursor }).into_response())
}

/// Revoke a key; it stops working at once.
#[utoipa::path(
    delete,
    path = "/api/v1/keys/{id}",
    operation_id = "revoke_key",
    tag = "keys",
    params(
        ("id" = String, Path, format = "uuid", description = "Key id"),
        crate::openapi::IdempotencyKey,
    ),
    responses(
        (status = 204, description = "Revoked"),
        crate::openapi::Problems,
        crate::openapi::IdempotencyProblems,
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(raw): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let scope = caller.scope(Action::ManageKeys)?;
    let id: KeyId = raw.parse().map_err(|_| ApiError::NotFound)?;
    let record = state
        .guard
        .read_uncached(|| state.store.get_key(id))
        .await?
        .ok_or(ApiError::NotFound)?;
    if scope.is_some_and(|own| record.grant.tenant() != Some(own)) {
        return Err(ApiError::NotFound);
    }
    if scope.is_some() && record.grant.role() != Role::Reader {
        return Err(ApiError::Forbidden(
            "a tenant_admin key may only revoke reader keys".into(),
        ));
    }
    let actor = caller.actor();
    state
        .guard
        .write(WriteKind::Ordinary, state.keys.revoke(id, &actor))
        .await?;
    tracing::info!(key.id = %id, by = %actor.as_str(), "API key revoked");
    announce_key_change(&state).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Tells the fleet, through Redis when configured, that the keys changed, so that a
/// revoked key stops working everywhere at once. (Without Redis, or when it is down,
/// the database's change notifications and the periodic key reload carry the news.)
async fn announce_key_change(state: &AppState) {
    state.relays.written();
    if let Some(redis) = &state.redis {
        if redis.publish(KEYS_CHANNEL, "changed").await.is_err() {
            state.metrics.observe_redis_fallback("fan_out");
        }
    }
}

/// The Redis channel that key changes are announced on.
pub const KEYS_CHANNEL: &str = "keys";

#[cfg(test)]
mod tests {
    use super::*;

    /// The name rule and the pattern the document states for it accept the same names.
    #[test]
    fn the_name_rule_is_the_documented_pattern() {
        let pattern = regex_automata::meta::Regex::new(crate::openapi::KEY_NAME_PATTERN)
            .expect("the pattern compiles");
        let pool = [
            'a',
            'Z',
            '7',
            ' ',
            '-',
            'é',
            '\t',
            '\n',
            '\u{1c}',
            '\u{7f}',
            '\u{85}',
            '\u{a0}',
            '\u{1680}',
            '\u{2000}',
            '\u{200a}',
            '\u{200b}',
            '\u{2028}',
            '\u{202f}',
            '\u{205f}',
            '\u{3000}',
            '\u{feff}',
            '\u{10ffff}',
        ];
        let mut names: Vec<String> = ["", "a", " a ", "\u{3000}", "a\u{0}b"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        names.push("n".repeat(100));
        names.push("n".repeat(101));
        names.push("é".repeat(100));
        for _ in 0..20_000 {
            let len = usize::from(rand::random::<u8>() % 6);
            names.push(
                (0..len)
                    .map(|_| pool[usize::from(rand::random::<u8>()) % pool.len()])
                    .collect(),
            );
        }
        for name in &names {
            let documented = pattern.is_match(name) && name.chars().count() <= 100;
            assert_eq!(check_name(name).is_ok(), documented, "{name:?}");
        }
    }
}
