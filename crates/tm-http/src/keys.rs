//! API key management: create (the secret is shown once), list, revoke.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tm_domain::{ApiKey, FieldErrors, Grant, KeyId, Role, TenantId};
use tm_store::{KeyRecord, KeyView};

use crate::auth::{Action, Caller};
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

const MAX_NAME_LEN: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    name: Option<String>,
    role: Option<String>,
    tenant: Option<String>,
}

impl CreateKeyBody {
    fn parse(self) -> Result<(String, Grant), ApiError> {
        let mut errors = FieldErrors::default();
        let name = match self.name {
            None => {
                errors.push("name", "is required");
                None
            }
            Some(name) if name.trim().is_empty() || name.chars().count() > MAX_NAME_LEN => {
                errors.push("name", format!("must be 1 to {MAX_NAME_LEN} characters"));
                None
            }
            Some(name) if name.chars().any(char::is_control) => {
                errors.push("name", "must not contain control characters");
                None
            }
            Some(name) => Some(name),
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
    state.store.create_key(&record).await?;
    state.keys.insert(record.clone());
    tracing::info!(key.id = %record.id, key.role = %record.grant.role(), by = %caller.actor().as_str(), "API key created");
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

pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let scope = caller.scope(Action::ManageKeys)?;
    let records = state.store.list_keys(scope).await?;
    let items = records.iter().map(KeyRecord::view).collect();
    Ok(Json(KeyList { items }).into_response())
}

pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(raw): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let scope = caller.scope(Action::ManageKeys)?;
    let id: KeyId = raw.parse().map_err(|_| ApiError::NotFound)?;
    let record = state.store.get_key(id).await?.ok_or(ApiError::NotFound)?;
    if scope.is_some_and(|own| record.grant.tenant() != Some(own)) {
        return Err(ApiError::NotFound);
    }
    if scope.is_some() && record.grant.role() != Role::Reader {
        return Err(ApiError::Forbidden(
            "a tenant_admin key may only revoke reader keys".into(),
        ));
    }
    state.store.revoke_key(id).await?;
    state.keys.remove(id);
    tracing::info!(key.id = %id, by = %caller.actor().as_str(), "API key revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}
