//! Webhook subscriptions: a tenant's URL that receives the tenant's change events, each
//! request signed (Standard Webhooks) with the subscription's secret. The secret is
//! shown once, in the answer to the creation, and kept sealed: encrypted with the
//! service's secret key, bound to the subscription's id. Admins manage any tenant's
//! subscriptions, tenant admins their own tenant's; readers none.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tm_domain::{EventType, FieldErrors, TenantId, Webhook, WebhookId, MAX_WEBHOOK_DESCRIPTION};
use tm_store::WebhookRecord;

use crate::auth::{Action, Caller};
use crate::extract::{ApiJson, ApiQuery};
use crate::guard::WriteKind;
use crate::page::{self, WEBHOOK_CURSORS};
use crate::{ApiError, AppState};

/// What webhook subscriptions need of the process: the keys that seal their secrets,
/// the networks deliveries may reach, and the cap per tenant.
pub struct WebhookKit {
    pub keys: Arc<tm_secrets::SecretKeys>,
    pub policy: Arc<tm_webhooks::NetworkPolicy>,
    pub max_per_tenant: u32,
}

/// A subscription to create (documented as [`crate::openapi::NewWebhookDoc`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookBody {
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    tenant: Option<String>,
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    url: Option<String>,
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    event_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    description: Option<String>,
}

/// A creation's parts, checked.
struct NewWebhook {
    tenant: TenantId,
    url: String,
    event_types: Vec<EventType>,
    description: Option<String>,
}

impl CreateWebhookBody {
    fn parse(self, policy: &tm_webhooks::NetworkPolicy) -> Result<NewWebhook, ApiError> {
        let mut errors = FieldErrors::default();
        let tenant = match self.tenant.as_deref() {
            None => {
                errors.push("tenant", "is required");
                None
            }
            Some(raw) => errors.check("tenant", TenantId::parse(raw)),
        };
        let url = match self.url.as_deref() {
            None => {
                errors.push("url", "is required");
                None
            }
            // Kept as given (its parsed form may be longer, or differ).
            Some(raw) => match tm_webhooks::check_url(raw) {
                Err(why) => {
                    errors.push("url", why.to_string());
                    None
                }
                Ok(url) => match refused_literal(&url, policy) {
                    Some(why) => {
                        errors.push("url", why);
                        None
                    }
                    None => Some(raw.to_owned()),
                },
            },
        };
        let mut event_types = Vec::new();
        for raw in self.event_types.unwrap_or_default() {
            match EventType::parse(&raw) {
                Some(kind) if !event_types.contains(&kind) => event_types.push(kind),
                Some(_) => errors.push("event_types", format!("names {raw} twice")),
                None => errors.push(
                    "event_types",
                    format!("{raw:?} is not an event type (see the EventType schema)"),
                ),
            }
        }
        if let Some(description) = &self.description {
            if description.chars().any(char::is_control)
                || description.chars().count() > MAX_WEBHOOK_DESCRIPTION
            {
                errors.push(
                    "description",
                    format!(
                        "must be at most {MAX_WEBHOOK_DESCRIPTION} characters, none a control \
                         character"
                    ),
                );
            }
        }
        match (tenant, url) {
            (Some(tenant), Some(url)) if errors.is_empty() => Ok(NewWebhook {
                tenant,
                url,
                event_types,
                description: self.description,
            }),
            _ => Err(ApiError::Invalid(errors)),
        }
    }
}

/// Why a URL naming an address literal is refused at once, if it is: an internal
/// address that `TM_WEBHOOK_ALLOW_NETWORKS` does not allow. (A host name is resolved,
/// and its addresses checked, at each delivery.)
fn refused_literal(url: &url::Url, policy: &tm_webhooks::NetworkPolicy) -> Option<String> {
    let ip = match url.host()? {
        url::Host::Ipv4(ip) => std::net::IpAddr::V4(ip),
        url::Host::Ipv6(ip) => std::net::IpAddr::V6(ip),
        url::Host::Domain(_) => return None,
    };
    (!policy.permits(ip)).then(|| {
        format!(
            "names {ip}, an internal address (loopback, private, link-local, metadata or \
             reserved) that TM_WEBHOOK_ALLOW_NETWORKS does not allow"
        )
    })
}

/// The answer to a creation: the subscription plus its secret, shown only here.
#[derive(Serialize)]
struct CreatedWebhook<'a> {
    #[serde(flatten)]
    webhook: &'a Webhook,
    secret: String,
}

#[derive(Serialize)]
struct WebhookList {
    items: Vec<Webhook>,
    next_cursor: Option<String>,
}

/// Which page of subscriptions to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WebhookListQuery {
    /// Only this tenant's; a tenant admin's key lists its own tenant's only.
    #[param(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    tenant: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page of this listing; any other is a 400.
    #[param(pattern = "^dzE6[A-Za-z0-9_-]{21}[AQgw]$")]
    cursor: Option<String>,
}

/// A subscription's id from the path; one that is no id names none.
fn webhook_id(raw: &str) -> Result<WebhookId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

/// Create a webhook subscription. The signing secret is in this answer only.
///
/// `Idempotency-Key` is refused here (422): the secret is never kept in the clear, so
/// the answer could not be replayed.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    operation_id = "create_webhook",
    tag = "webhooks",
    request_body = crate::openapi::NewWebhookDoc,
    responses(
        (status = 201, description = "Created", body = crate::openapi::CreatedWebhookDoc, headers(("Location" = String))),
        (status = 409, description = "The tenant holds `TM_MAX_WEBHOOKS_PER_TENANT` subscriptions already (delete one first)",
            body = crate::openapi::ProblemDoc, content_type = "application/problem+json"),
        crate::openapi::Problems,
        crate::openapi::BodyProblems,
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateWebhookBody>,
) -> Result<Response, ApiError> {
    caller.scope(Action::ManageWebhooks)?;
    let kit = &state.webhooks;
    let new = body.parse(&kit.policy)?;
    caller.authorize(Action::ManageWebhooks, &new.tenant)?;
    let webhook = Webhook {
        id: WebhookId::generate(),
        tenant: new.tenant,
        url: new.url,
        event_types: new.event_types,
        description: new.description,
        created_at: tm_domain::now(),
    };
    let secret = tm_webhooks::new_secret();
    let record = WebhookRecord {
        sealed_secret: kit
            .keys
            .seal(secret.as_bytes(), webhook.id.to_string().as_bytes()),
        webhook,
    };
    state
        .guard
        .write(
            WriteKind::Ordinary,
            state.store.create_webhook(&record, kit.max_per_tenant),
        )
        .await?;
    let webhook = &record.webhook;
    tracing::info!(webhook.id = %webhook.id, tenant = %webhook.tenant, by = %caller.actor().as_str(), "webhook created");
    let location = HeaderValue::from_str(&format!("/api/v1/webhooks/{}", webhook.id))
        .expect("a path is a valid header value");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(CreatedWebhook { webhook, secret }),
    )
        .into_response())
}

/// List webhook subscriptions, a page at a time, in id order.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    operation_id = "list_webhooks",
    tag = "webhooks",
    params(WebhookListQuery),
    responses(
        (status = 200, description = "A page of subscriptions", body = crate::openapi::WebhookListDoc),
        crate::openapi::Problems,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<WebhookListQuery>,
) -> Result<Response, ApiError> {
    let mut errors = FieldErrors::default();
    let asked = errors.optional("tenant", query.tenant.as_deref(), TenantId::parse);
    let limit = page::limit(query.limit, &mut errors);
    errors.into_result()?;
    let tenant = caller.list_scope(Action::ManageWebhooks, asked)?;
    let after = query
        .cursor
        .as_deref()
        .map(|raw| WEBHOOK_CURSORS.decode(raw))
        .transpose()?;
    // One more than asked tells whether another page exists.
    let mut items = state
        .guard
        .read_uncached(|| state.store.list_webhooks(tenant.as_ref(), after, limit + 1))
        .await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|w| WEBHOOK_CURSORS.encode(w.id))
    } else {
        None
    };
    Ok(Json(WebhookList { items, next_cursor }).into_response())
}

/// One webhook subscription, without its secret.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    operation_id = "get_webhook",
    tag = "webhooks",
    params(("id" = String, Path, format = "uuid", description = "Webhook id")),
    responses(
        (status = 200, description = "The subscription", body = crate::openapi::WebhookDoc),
        crate::openapi::Problems,
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let scope = caller.scope(Action::ManageWebhooks)?.cloned();
    let id = webhook_id(&raw)?;
    let record = state
        .guard
        .read_uncached(|| state.store.get_webhook(id))
        .await?
        .filter(|r| scope.as_ref().is_none_or(|own| *own == r.webhook.tenant))
        .ok_or(ApiError::NotFound)?;
    Ok(Json(record.webhook).into_response())
}

/// Delete a webhook subscription; deliveries waiting for it are dropped.
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    operation_id = "delete_webhook",
    tag = "webhooks",
    params(
        ("id" = String, Path, format = "uuid", description = "Webhook id"),
        crate::openapi::IdempotencyKey,
    ),
    responses(
        (status = 204, description = "Deleted"),
        crate::openapi::Problems,
        crate::openapi::IdempotencyProblems,
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let scope = caller.scope(Action::ManageWebhooks)?.cloned();
    let id = webhook_id(&raw)?;
    let deleted = state
        .guard
        .write(
            WriteKind::Ordinary,
            state.store.delete_webhook(id, scope.as_ref()),
        )
        .await?;
    if !deleted {
        return Err(ApiError::NotFound);
    }
    tracing::info!(webhook.id = %id, by = %caller.actor().as_str(), "webhook deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}
