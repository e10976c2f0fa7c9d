//! History and rollback: the audit log read a page at a time, and the rollback of a
//! service to the activation state it was in before its current one.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tm_domain::{EnvName, FieldErrors, GroupKey, Route, RouteChange, ServiceName, TenantId};
use tm_store::{AuditEntry, AuditFilter};

use crate::auth::{Action, Caller};
use crate::extract::{ApiJson, ApiQuery};
use crate::guard::WriteKind;
use crate::routes::required;
use crate::{page, ApiError, AppState};

/// Which page of the audit log to read.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this tenant's changes; a key bound to a tenant reads its own tenant's only.
    #[param(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    tenant: Option<String>,
    /// Only this service's changes.
    #[param(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    service: Option<String>,
    /// Only changes in this environment.
    #[param(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    env: Option<String>,
    /// The entries after this one (its `id`); from the first when absent. An id of no
    /// entry (visible to this key) is a 404.
    #[param(value_type = Option<i64>, minimum = 1)]
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// One change of a route, as the audit log keeps it.
#[derive(Serialize)]
struct AuditView {
    id: i64,
    #[serde(with = "tm_domain::rfc3339")]
    at: chrono::DateTime<chrono::Utc>,
    /// `create`, `activate`, `deactivate`, `update`, `delete`, `rollback`, `policy` (the
    /// service's policy; `before` and `after` are policies) or `health` (a route's health;
    /// `before` and `after` are its health).
    action: String,
    tenant: TenantId,
    service: ServiceName,
    env: EnvName,
    version: Option<String>,
    /// None for a change of the service's policy.
    route_id: Option<String>,
    /// Who made it: an API key's id, `bootstrap` for the configured admin key.
    actor: String,
    /// The id of the key that made it, when a stored key did.
    actor_key_id: Option<String>,
    request_id: Option<String>,
    /// The service's generation after the change.
    generation: Option<i64>,
    /// For a change of which versions are active: the active versions after it.
    active_versions: Option<Vec<String>>,
    /// For a rollback: the entry whose activation state it restored.
    rollback_to: Option<i64>,
    before: Option<Value>,
    after: Option<Value>,
    /// Each field of the route that differs between `before` and `after`.
    changes: BTreeMap<String, Change>,
}

#[derive(Serialize)]
struct Change {
    from: Value,
    to: Value,
}

impl From<AuditEntry> for AuditView {
    fn from(entry: AuditEntry) -> Self {
        let field = |route: &Option<Value>, name: &str| {
            route
                .as_ref()
                .and_then(|r| r.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let version = field(&entry.after, "version").or_else(|| field(&entry.before, "version"));
        let actor_key_id = entry
            .actor
            .parse::<uuid::Uuid>()
            .ok()
            .map(|id| id.to_string());
        Self {
            changes: changes(entry.before.as_ref(), entry.after.as_ref()),
            id: entry.id,
            at: entry.at,
            action: entry.action,
            tenant: entry.service.tenant,
            service: entry.service.service,
            env: entry.service.env,
            version,
            route_id: entry.route_id.map(|id| id.to_string()),
            actor: entry.actor,
            actor_key_id,
            request_id: entry.request_id,
            generation: entry.generation,
            active_versions: entry.active_after,
            rollback_to: entry.rollback_to,
            before: entry.before,
            after: entry.after,
        }
    }
}

/// The fields of two routes (as JSON objects, either missing) that differ.
fn changes(before: Option<&Value>, after: Option<&Value>) -> BTreeMap<String, Change> {
    let empty = Map::new();
    let before = before.and_then(Value::as_object).unwrap_or(&empty);
    let after = after.and_then(Value::as_object).unwrap_or(&empty);
    before
        .keys()
        .chain(after.keys())
        .filter_map(|name| {
            let from = before.get(name).cloned().unwrap_or(Value::Null);
            let to = after.get(name).cloned().unwrap_or(Value::Null);
            (from != to).then(|| (name.clone(), Change { from, to }))
        })
        .collect()
}

#[derive(Serialize)]
struct AuditList {
    items: Vec<AuditView>,
    /// Where to go on from: the last entry's id, or the `after` asked when there is
    /// nothing new (none when there is nothing at all).
    next_after: Option<i64>,
}

/// The audit log: every change of a route, oldest first, a page at a time, with the
/// route before and after it, the fields that changed, who made it and in which
/// request. Read on by asking again with `after` set to `next_after`.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    operation_id = "list_audit",
    tag = "history",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of the audit log", body = crate::openapi::AuditListDoc),
        crate::openapi::Problems,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let mut errors = FieldErrors::default();
    let tenant = errors.optional("tenant", query.tenant.as_deref(), TenantId::parse);
    let service = errors.optional("service", query.service.as_deref(), ServiceName::parse);
    let env = errors.optional("env", query.env.as_deref(), EnvName::parse);
    let after = match query.after.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(id)) if id >= 1 => Some(id),
        Some(_) => {
            errors.push(
                "after",
                "must be the id of an audit entry: a positive integer",
            );
            None
        }
    };
    let limit = page::limit(query.limit, &mut errors);
    errors.into_result()?;
    let filter = AuditFilter {
        tenant: caller.list_scope(Action::ReadAudit, tenant)?,
        service,
        env,
    };
    let entries = state
        .guard
        .read_uncached(|| state.store.audit_after(&filter, after, limit))
        .await?
        .ok_or(ApiError::AuditEntryNotFound)?;
    let items: Vec<AuditView> = entries.into_iter().map(AuditView::from).collect();
    let next_after = items.last().map(|e| e.id).or(after);
    Ok(Json(AuditList { items, next_after }).into_response())
}

/// Names one service.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ServiceKey)]
pub struct ServiceBody {
    /// Tenant.
    #[schema(required = true, nullable = false, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    tenant: Option<String>,
    /// Service.
    #[schema(required = true, nullable = false, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    service: Option<String>,
    /// Environment.
    #[schema(required = true, nullable = false, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    env: Option<String>,
}

impl ServiceBody {
    fn parse(&self) -> Result<GroupKey, ApiError> {
        let mut errors = FieldErrors::default();
        let tenant = required(
            &mut errors,
            "tenant",
            self.tenant.as_deref(),
            TenantId::parse,
        );
        let service = required(
            &mut errors,
            "service",
            self.service.as_deref(),
            ServiceName::parse,
        );
        let env = required(&mut errors, "env", self.env.as_deref(), EnvName::parse);
        match (tenant, service, env) {
            (Some(tenant), Some(service), Some(env)) if errors.is_empty() => Ok(GroupKey {
                tenant,
                service,
                env,
            }),
            _ => Err(ApiError::Invalid(errors)),
        }
    }
}

/// What a rollback did.
#[derive(Serialize)]
struct RollbackView<'a> {
    tenant: &'a TenantId,
    service: &'a ServiceName,
    env: &'a EnvName,
    /// The service's active versions now.
    active_versions: Vec<&'a str>,
    /// The audit entry whose activation state was restored.
    restored_entry: i64,
    /// The service's generation after the rollback.
    generation: i64,
    /// The routes switched on or off, as they are now.
    changed: &'a [Route],
}

/// Puts a service back in the activation state it was in before its current one, in
/// one transaction: the versions active then are switched on, the others off. Rolling
/// back again goes back one more state, as an undo does. Each route switched is audited
/// (action `rollback`) and announced as `route.activated` or `route.deactivated`.
#[utoipa::path(
    post,
    path = "/api/v1/routes/rollback",
    operation_id = "rollback_service",
    tag = "history",
    params(crate::openapi::IdempotencyKey),
    request_body = ServiceBody,
    responses(
        (status = 200, description = "The service, rolled back", body = crate::openapi::RolledBackDoc),
        (status = 409, description = "Nothing to roll back to: the service has no earlier activation state, or a version of it was deleted since", body = crate::openapi::ProblemDoc, content_type = "application/problem+json"),
        crate::openapi::Problems,
        crate::openapi::IdempotencyProblems,
        crate::openapi::BodyProblems,
    ),
)]
pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ServiceBody>,
) -> Result<Response, ApiError> {
    caller.scope(Action::WriteRoutes)?;
    let service = body.parse()?;
    caller.authorize(Action::WriteRoutes, &service.tenant)?;
    let done = state
        .guard
        .write(
            WriteKind::Critical,
            state.store.rollback(&service, &caller.actor()),
        )
        .await?;
    state.wrote(&caller);
    for route in &done.changed {
        state
            .routing
            .refresh_group(&service, RouteChange::Stored(route))
            .await;
    }
    tracing::info!(
        tenant = %service.tenant, service = %service.service, env = %service.env,
        restored_entry = done.restored, by = %caller.actor().as_str(),
        "service rolled back"
    );
    Ok(Json(RollbackView {
        tenant: &service.tenant,
        service: &service.service,
        env: &service.env,
        active_versions: done.active.iter().map(|v| v.as_str()).collect(),
        restored_entry: done.restored,
        generation: done.generation,
        changed: &done.changed,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_name_each_differing_field_once() {
        let before = json!({"url": "http://a", "active": false, "weight": 100});
        let after = json!({"url": "http://a", "active": true, "weight": 100});
        let diff = changes(Some(&before), Some(&after));
        assert_eq!(diff.len(), 1);
        assert_eq!(diff["active"].from, json!(false));
        assert_eq!(diff["active"].to, json!(true));

        let created = changes(None, Some(&after));
        assert_eq!(created.len(), 3);
        assert_eq!(created["url"].from, Value::Null);
        assert!(changes(Some(&before), Some(&before)).is_empty());
    }
}
