//! The OpenAPI 3.1 document of API v1, generated from the handlers' annotations and the
//! request and response types, served at `/openapi.json`.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tm_domain::{EventType, FieldError, Role, Route};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ArrayItems, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::{dlq, events, history, keys, resolve, routes, services, watch, webhooks};

/// An RFC 9457 problem document, as every error is answered.
#[derive(Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDoc {
    /// A URI naming the kind of problem, e.g. `urn:traffic-manager:problem:route-exists`.
    #[serde(rename = "type")]
    #[schema(format = "uri")]
    pub kind: String,
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    pub detail: String,
    /// For 422: each invalid field and what is wrong with it.
    #[schema(nullable = false)]
    pub errors: Option<Vec<FieldError>>,
}

/// The answer of resolve: where to call.
#[derive(Serialize, ToSchema)]
#[schema(as = ResolveAnswer)]
pub struct ResolveAnswerDoc {
    pub tenant: String,
    pub service: String,
    pub env: String,
    pub version: String,
    #[schema(value_type = tm_domain::UpstreamUrl)]
    pub url: String,
}

/// What resolve answers: where to call, or with `explain=true`, how it chooses.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = Resolved)]
#[expect(dead_code, reason = "only documents a response")]
pub enum ResolvedDoc {
    Answer(ResolveAnswerDoc),
    Explanation(crate::explain::Explanation),
}

/// One page of routes.
#[derive(Serialize, ToSchema)]
#[schema(as = RouteList)]
pub struct RouteListDoc {
    pub items: Vec<Route>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A change event, in the CloudEvents 1.0 structured JSON format. The format's version
/// is `dataschema`; fields may be added within a version, never removed or retyped.
#[derive(Serialize, ToSchema)]
#[schema(as = Event)]
pub struct EventDoc {
    /// Always `1.0`.
    #[schema(pattern = "^1\\.0$")]
    pub specversion: String,
    /// Unique, time-ordered (UUIDv7): the key consumers deduplicate by.
    #[schema(format = "uuid")]
    pub id: String,
    /// Always `/traffic-manager`.
    pub source: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// What changed: `tenant/service/env/version` of a route, `keys/<key id>` of a key.
    pub subject: String,
    #[schema(format = "date-time")]
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// `urn:traffic-manager:event:v1`.
    pub dataschema: String,
    /// The tenant the change belongs to; absent for an admin key's events.
    #[schema(nullable = false, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub tenant: Option<String>,
    pub data: EventDataDoc,
}

/// What changed: a route (the `route.*` types) or an API key (the `key.*` types).
#[derive(Serialize, ToSchema)]
#[schema(as = EventData)]
#[serde(untagged)]
#[expect(dead_code, reason = "only documents a schema")]
pub enum EventDataDoc {
    Route(Box<RouteEventDoc>),
    Key(KeyEventDoc),
}

/// A route's change: the route before (`null` for a creation) and after (`null` for a
/// deletion), as the API shows a route.
#[derive(Serialize, ToSchema)]
#[schema(as = RouteEventData)]
pub struct RouteEventDoc {
    pub tenant: String,
    pub service: String,
    pub env: String,
    pub version: String,
    #[schema(format = "uuid")]
    pub route_id: String,
    /// The route's revision after the change (at its deletion, for a deletion).
    pub revision: i64,
    /// Who made the change: the id of the key that made it (`bootstrap` for the
    /// configured admin key).
    pub actor: String,
    #[schema(required = true)]
    pub before: Option<Route>,
    #[schema(required = true)]
    pub after: Option<Route>,
}

/// An API key created or revoked; never its secret.
#[derive(Serialize, ToSchema)]
#[schema(as = KeyEventData)]
pub struct KeyEventDoc {
    #[schema(format = "uuid")]
    pub key_id: String,
    pub name: String,
    pub role: Role,
    /// `null` for an admin key.
    #[schema(required = true)]
    pub tenant: Option<String>,
    /// Who made the change: the id of the key that made it (`bootstrap` for the first
    /// admin key and for the configured one).
    pub actor: String,
}

/// One page of events, oldest first.
#[derive(Serialize, ToSchema)]
#[schema(as = EventList)]
pub struct EventListDoc {
    pub items: Vec<EventDoc>,
    /// Pass as `after` to read on: the last event's id, or the `after` asked when there
    /// is nothing new; `null` when there are no events at all.
    #[schema(required = true, format = "uuid")]
    pub next_after: Option<String>,
}

/// One change of a route, as the audit log keeps it.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditEntry)]
pub struct AuditEntryDoc {
    /// The entry's id: pass it as `after` to read on from it.
    pub id: i64,
    #[schema(format = DateTime)]
    pub at: String,
    #[schema(value_type = String, pattern = "^(create|activate|deactivate|update|delete|rollback|policy|health)$")]
    pub action: String,
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub tenant: String,
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub service: String,
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub env: String,
    #[schema(required = true, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub version: Option<String>,
    /// The route changed; `null` for a change of the service's policy.
    #[schema(required = true, format = "uuid")]
    pub route_id: Option<String>,
    /// Who made the change: the id of the key that made it, `bootstrap` for the
    /// configured admin key, `health-probe` for a change of health.
    pub actor: String,
    /// The id of the stored key that made the change; `null` for the configured admin
    /// key.
    #[schema(required = true, format = "uuid")]
    pub actor_key_id: Option<String>,
    /// The `X-Request-ID` of the request that made the change.
    #[schema(required = true)]
    pub request_id: Option<String>,
    /// The service's generation after the change.
    #[schema(required = true)]
    pub generation: Option<i64>,
    /// For a change of which versions are active: the active versions after it.
    #[schema(required = true)]
    pub active_versions: Option<Vec<String>>,
    /// For a rollback: the id of the entry whose activation state it restored.
    #[schema(required = true)]
    pub rollback_to: Option<i64>,
    /// The route before the change (`null` for a creation); for `policy` and `health`,
    /// the policy or health before.
    #[schema(required = true, value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// The route after the change (`null` for a deletion); for `policy` and `health`, the
    /// policy or health after.
    #[schema(required = true, value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    /// Each field that differs between `before` and `after`.
    pub changes: std::collections::BTreeMap<String, FieldChangeDoc>,
}

/// A field's value before and after a change.
#[derive(Serialize, ToSchema)]
#[schema(as = FieldChange)]
pub struct FieldChangeDoc {
    /// Any JSON value (`null` when the field was absent).
    #[schema(value_type = Value)]
    pub from: serde_json::Value,
    /// Any JSON value (`null` when the field is gone).
    #[schema(value_type = Value)]
    pub to: serde_json::Value,
}

/// One page of the audit log, oldest first.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditList)]
pub struct AuditListDoc {
    pub items: Vec<AuditEntryDoc>,
    /// Pass as `after` to read on: the last entry's id, or the `after` asked when there
    /// is nothing new; `null` when there are no entries at all.
    #[schema(required = true)]
    pub next_after: Option<i64>,
}

/// A service's routing policy.
#[derive(Serialize, ToSchema)]
#[schema(as = ServicePolicy)]
pub struct ServicePolicyDoc {
    pub tenant: String,
    pub service: String,
    pub env: String,
    pub resolve_policy: tm_domain::ResolvePolicy,
    pub failover: Vec<FailoverTierDoc>,
    /// How every version's health is checked; `null`: not checked.
    #[schema(required = true)]
    pub health_check: Option<HealthCheckDoc>,
    /// Per version: its own check (a `HealthCheckView`), or `null` (not checked).
    #[schema(value_type = Object)]
    pub version_health_checks: std::collections::BTreeMap<String, Option<HealthCheckDoc>>,
    /// The service's generation, moved on by every change to it.
    pub generation: i64,
}

/// One tier of a failover chain.
#[derive(Serialize, ToSchema)]
#[schema(as = FailoverTierView)]
pub struct FailoverTierDoc {
    pub versions: Vec<String>,
    pub min_healthy: u8,
}

/// How a version's health is checked.
#[derive(Serialize, ToSchema)]
#[schema(as = HealthCheckView)]
pub struct HealthCheckDoc {
    pub protocol: tm_domain::ProbeProtocol,
    pub path: String,
    pub expected_status: Vec<String>,
    pub interval_seconds: u32,
    pub timeout_seconds: u32,
    pub tolerated_failures: u32,
}

/// A route's health.
#[derive(Serialize, ToSchema)]
#[schema(as = RouteHealth)]
pub struct RouteHealthDoc {
    #[schema(format = "uuid")]
    pub route_id: String,
    pub state: tm_domain::HealthState,
    /// Whether its service's policy checks its health now.
    pub checked: bool,
    /// Probes failed in a row.
    pub failures: u32,
    #[schema(required = true)]
    pub last_error: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub checked_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub last_online_at: Option<String>,
}

/// A service's routing state, as a watch answers it.
#[derive(Serialize, ToSchema)]
#[schema(as = WatchState)]
pub struct WatchStateDoc {
    pub tenant: String,
    pub service: String,
    pub env: String,
    /// The service's generation: pass it as `since` to wait for the next one.
    pub generation: u64,
    /// Whether the generation is later than `since` (false: the wait ran out).
    pub changed: bool,
    /// `null` when no version is active.
    #[schema(required = true)]
    pub policy: Option<tm_domain::ResolvePolicy>,
    pub versions: Vec<WatchedVersionDoc>,
}

/// One active version of a watched service.
#[derive(Serialize, ToSchema)]
#[schema(as = WatchedVersion)]
pub struct WatchedVersionDoc {
    pub version: String,
    #[schema(format = "uri")]
    pub url: String,
    pub weight: u8,
    pub healthy: bool,
    /// Whether resolve without `version` may pick it.
    pub serves: bool,
}

/// What a rollback did.
#[derive(Serialize, ToSchema)]
#[schema(as = RolledBack)]
pub struct RolledBackDoc {
    pub tenant: String,
    pub service: String,
    pub env: String,
    /// The service's active versions now.
    pub active_versions: Vec<String>,
    /// The id of the audit entry whose activation state was restored.
    pub restored_entry: i64,
    /// The service's generation after the rollback.
    pub generation: i64,
    /// The routes switched on or off, as they are now.
    pub changed: Vec<Route>,
}

/// A job in the dead-letter queue.
#[derive(Serialize, ToSchema)]
#[schema(as = DeadJob)]
pub struct DeadJobDoc {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(value_type = String, pattern = "^(high|default|bulk)$")]
    pub queue: String,
    /// What the job does, e.g. `webhook.deliver`.
    pub kind: String,
    /// The job's input.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// The tenant it worked for; `null` for the registry's own jobs.
    #[schema(required = true, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub tenant: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    #[schema(required = true)]
    pub last_error: Option<String>,
    #[schema(format = "date-time")]
    pub created_at: String,
    /// When it went dead.
    #[schema(format = "date-time")]
    pub failed_at: String,
}

/// One page of the dead-letter queue.
#[derive(Serialize, ToSchema)]
#[schema(as = DeadJobList)]
pub struct DeadJobListDoc {
    pub items: Vec<DeadJobDoc>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// How many dead jobs were deleted.
#[derive(Serialize, ToSchema)]
#[schema(as = Purged)]
pub struct PurgedDoc {
    pub purged: u64,
}

/// A webhook subscription, without its secret.
#[derive(Serialize, ToSchema)]
#[schema(as = Webhook)]
pub struct WebhookDoc {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub tenant: String,
    /// Where the tenant's events are POSTed.
    #[schema(format = "uri")]
    pub url: String,
    /// The event types delivered; empty: every type.
    pub event_types: Vec<EventType>,
    #[schema(required = true, max_length = 200)]
    pub description: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A newly created subscription: the only answer that carries its signing secret.
#[derive(Serialize, ToSchema)]
#[schema(as = CreatedWebhook)]
pub struct CreatedWebhookDoc {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub tenant: String,
    #[schema(format = "uri")]
    pub url: String,
    pub event_types: Vec<EventType>,
    #[schema(required = true, max_length = 200)]
    pub description: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The signing secret (`whsec_` and the base64 of its 32 bytes), for the receiver
    /// to verify each request's `webhook-signature`. Shown only here.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{43}=$")]
    pub secret: String,
}

/// One page of the subscriptions the caller may see.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookList)]
pub struct WebhookListDoc {
    pub items: Vec<WebhookDoc>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A subscription to create.
#[derive(Serialize, ToSchema)]
#[schema(as = NewWebhook)]
#[serde(deny_unknown_fields)]
pub struct NewWebhookDoc {
    /// The tenant whose events are delivered.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub tenant: String,
    /// An absolute http or https URL (at most 2048 bytes, no user info, no fragment);
    /// internal addresses are refused unless `TM_WEBHOOK_ALLOW_NETWORKS` allows them.
    #[schema(format = "uri", max_length = 2048)]
    pub url: String,
    /// The event types to deliver, each once; absent or empty: every type.
    #[schema(nullable = false, max_items = 7)]
    pub event_types: Option<Vec<EventType>>,
    /// At most 200 characters, none a control character.
    #[schema(
        nullable = false,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub description: Option<String>,
}

/// An API key, without its secret.
#[derive(Serialize, ToSchema)]
#[schema(as = ApiKey)]
pub struct KeyDoc {
    #[schema(format = "uuid")]
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The tenant of a `tenant_admin` or `reader` key; `null` for `admin`.
    #[schema(required = true)]
    pub tenant: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A newly created key: the only answer that carries its secret.
#[derive(Serialize, ToSchema)]
#[schema(as = CreatedApiKey)]
pub struct CreatedKeyDoc {
    #[schema(format = "uuid")]
    pub id: String,
    pub name: String,
    pub role: Role,
    #[schema(required = true)]
    pub tenant: Option<String>,
    /// The secret; send it as `Authorization: Bearer <key>`. Shown only here.
    pub key: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// One page of the live keys the caller may see.
#[derive(Serialize, ToSchema)]
#[schema(as = ApiKeyList)]
pub struct KeyListDoc {
    pub items: Vec<KeyDoc>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A key to create. An `admin` key names no tenant; a `tenant_admin` or `reader` key
/// names the one it is bound to.
#[derive(Serialize, ToSchema)]
#[schema(as = NewApiKey)]
#[serde(untagged)]
#[expect(dead_code, reason = "only documents a schema")]
pub enum NewKeyDoc {
    Admin(NewAdminKeyDoc),
    Tenant(NewTenantKeyDoc),
}

/// A new `admin` key: every tenant, so none is named.
#[derive(Serialize, ToSchema)]
#[schema(as = NewAdminKey)]
#[serde(deny_unknown_fields)]
pub struct NewAdminKeyDoc {
    pub name: KeyNameDoc,
    pub role: AdminRoleDoc,
}

/// A new `tenant_admin` or `reader` key, bound to one tenant.
#[derive(Serialize, ToSchema)]
#[schema(as = NewTenantKey)]
#[serde(deny_unknown_fields)]
pub struct NewTenantKeyDoc {
    pub name: KeyNameDoc,
    pub role: TenantRoleDoc,
    /// The tenant the key is bound to.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub tenant: String,
}

/// What a key is for: 1 to 100 characters, none of them a control character, not all
/// of them white space (what `keys::check_name` accepts).
pub const KEY_NAME_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// The name of a new key, as [`KEY_NAME_PATTERN`] says.
#[derive(Serialize)]
pub struct KeyNameDoc(String);

impl utoipa::PartialSchema for KeyNameDoc {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("What the key is for: 1 to 100 characters, no control characters, not only white space."))
            .min_length(Some(1))
            .max_length(Some(100))
            .pattern(Some(KEY_NAME_PATTERN))
            .into()
    }
}

impl ToSchema for KeyNameDoc {
    fn name() -> std::borrow::Cow<'static, str> {
        "KeyName".into()
    }
}

/// The role of a key that names no tenant.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = AdminRole)]
#[expect(dead_code, reason = "only documents a schema")]
pub enum AdminRoleDoc {
    Admin,
}

/// The roles of keys bound to a tenant.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = TenantRole)]
#[expect(dead_code, reason = "only documents a schema")]
pub enum TenantRoleDoc {
    TenantAdmin,
    Reader,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer tm_…`"))
                    .build(),
            ),
        );
    }
}

/// The headers of every answer, declared here once and added to each response.
struct CommonHeaders;

impl Modify for CommonHeaders {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let text = |description: &str| {
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some(description))
                .build()
        };
        let count = |description: &str| {
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                )
                .description(Some(description))
                .build()
        };
        let replayed = HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["true"])),
            )
            .description(Some(
                "`true` when this is the kept answer to an earlier request with the same `Idempotency-Key`",
            ))
            .build();
        let headers = [
            ("X-Request-ID", text("This request's id: the incoming `X-Request-ID` when it is 1–128 characters of `A-Z a-z 0-9 . _ -`, else a new one")),
            ("X-Correlation-ID", text("The incoming `X-Correlation-ID` when sane, else the request id")),
            ("X-Rate-Limit-Limit", count("Requests allowed per period by the budget this request drew from (sent whenever it drew from one)")),
            ("X-Rate-Limit-Remaining", count("Requests left in that budget")),
            ("X-Rate-Limit-Reset", count("Seconds until that budget is whole again")),
        ];
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.put,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let idempotent = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| p.name == "Idempotency-Key");
                for (status, response) in &mut operation.responses.responses {
                    if let RefOr::T(response) = response {
                        for (name, header) in &headers {
                            response.headers.insert((*name).to_owned(), header.clone());
                        }
                        if idempotent && status.starts_with('2') {
                            response
                                .headers
                                .insert("Idempotent-Replayed".to_owned(), replayed.clone());
                        }
                    }
                }
            }
        }
    }
}

/// What the derive cannot say: `RoutePatch` needs at least one property (utoipa 5.5
/// writes its `min_properties` as `maxProperties`); a new webhook's `event_types` names
/// each type once; a policy's `version_health_checks` is keyed by version names, each
/// a `HealthCheck` or null; a failover tier names versions, each once; a health check's
/// `expected_status` holds status ranges.
struct Constraints;

/// An array's items: strings matching `pattern`.
fn string_items(pattern: &str) -> ArrayItems {
    let item = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern));
    ArrayItems::RefOrSchema(Box::new(RefOr::T(item.into())))
}

impl Modify for Constraints {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let schemas = &mut openapi
            .components
            .get_or_insert_with(Default::default)
            .schemas;
        if let Some(RefOr::T(Schema::Object(patch))) = schemas.get_mut("RoutePatch") {
            patch.min_properties = Some(1);
            patch.max_properties = None;
        }
        if let Some(RefOr::T(Schema::Object(policy))) = schemas.get_mut("NewServicePolicy") {
            let check = OneOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(Type::Null))
                .item(Ref::from_schema_name("HealthCheck"));
            let checks = ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
                .description(Some(
                    "Per version (the keys are versions), its own check, or `null` for none, \
                     whatever `health_check` says; at most 64 versions.",
                ))
                .property_names(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(tm_domain::IDENTIFIER_PATTERN)),
                ))
                .max_properties(Some(64))
                .additional_properties(Some(Schema::OneOf(check.build())));
            policy
                .properties
                .insert("version_health_checks".to_owned(), RefOr::T(checks.into()));
        }
        if let Some(RefOr::T(Schema::Object(tier))) = schemas.get_mut("FailoverTier") {
            if let Some(RefOr::T(Schema::Array(versions))) = tier.properties.get_mut("versions") {
                versions.items = string_items(tm_domain::IDENTIFIER_PATTERN);
                versions.unique_items = true;
            }
        }
        if let Some(RefOr::T(Schema::Object(check))) = schemas.get_mut("HealthCheck") {
            if let Some(RefOr::T(Schema::Array(ranges))) =
                check.properties.get_mut("expected_status")
            {
                ranges.items = string_items("^[1-5][0-9]{2}(-[1-5][0-9]{2})?$");
            }
        }
        if let Some(RefOr::T(Schema::Object(webhook))) = schemas.get_mut("NewWebhook") {
            if let Some(RefOr::T(Schema::Array(types))) = webhook.properties.get_mut("event_types")
            {
                types.unique_items = true;
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "traffic-manager",
        description = "A multi-tenant service-routing registry: versioned endpoints per tenant, service and environment.",
    ),
    paths(
        resolve::resolve,
        routes::create,
        routes::activate,
        routes::deactivate,
        routes::list,
        routes::get,
        routes::patch,
        routes::delete,
        history::rollback,
        history::list,
        services::get,
        services::put,
        watch::watch,
        services::health,
        keys::create,
        keys::list,
        keys::revoke,
        events::list,
        dlq::list,
        dlq::replay,
        dlq::purge_one,
        dlq::purge_all,
        webhooks::create,
        webhooks::list,
        webhooks::get,
        webhooks::delete,
    ),
    components(schemas(ProblemDoc, FieldError, Route, ResolveAnswerDoc, ResolvedDoc, crate::explain::Explanation, crate::explain::SnapshotFacts, crate::explain::CandidateView, crate::explain::PickView, crate::explain::Score, RouteListDoc, KeyDoc, CreatedKeyDoc, KeyListDoc, NewKeyDoc, Role, EventDoc, EventListDoc, EventType, DeadJobDoc, DeadJobListDoc, PurgedDoc, WebhookDoc, CreatedWebhookDoc, WebhookListDoc, NewWebhookDoc, AuditEntryDoc, FieldChangeDoc, AuditListDoc, RolledBackDoc, history::ServiceBody, ServicePolicyDoc, FailoverTierDoc, HealthCheckDoc, services::PolicyBody, services::TierBody, services::CheckBody, WatchStateDoc, WatchedVersionDoc, RouteHealthDoc)),
    modifiers(&BearerAuth, &CommonHeaders, &Constraints),
    security(("bearer" = [])),
    tags((name = "routes", description = "Routes and resolution"), (name = "keys", description = "API keys"), (name = "events", description = "Change events"), (name = "jobs", description = "The job queue's dead-letter queue"), (name = "webhooks", description = "Webhook subscriptions"), (name = "history", description = "The audit log and rollback"), (name = "services", description = "Routing policies: health checks and failover")),
)]
pub struct ApiDoc;

pub async fn document() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

/// Errors any `/api/v1` operation may answer.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "only documents responses")]
pub enum Problems {
    /// Malformed request: unreadable JSON, an unknown or repeated query parameter, a
    /// `cursor` this server did not issue, an `Idempotency-Key` outside its pattern.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemDoc),
    /// No valid `Authorization: Bearer <key>`.
    #[response(
        status = 401,
        content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "`Bearer`"))
    )]
    Unauthorized(ProblemDoc),
    /// The key's role or tenant does not allow this.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(ProblemDoc),
    /// Nothing there (or not visible to this key).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemDoc),
    /// Well-formed input with invalid values or unknown fields (`errors` names each), or
    /// an `Idempotency-Key` already used with another request within 24 hours
    /// (`errors` names the header).
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(ProblemDoc),
    /// This key's or its tenant's (or, unauthenticated, this address's) budget is spent
    /// (the `X-Rate-Limit-*` headers tell of the budget that refused), or the key holds as
    /// many `Idempotency-Key` records as it may.
    #[response(
        status = 429,
        content_type = "application/problem+json",
        headers(("Retry-After" = u32, description = "Seconds to wait"))
    )]
    TooManyRequests(ProblemDoc),
    /// Refused to protect the server: the database is unavailable or too slow, or too
    /// many requests are in flight; retry after `Retry-After` seconds.
    #[response(
        status = 503,
        content_type = "application/problem+json",
        headers(("Retry-After" = u32, description = "Seconds to wait"))
    )]
    Unavailable(ProblemDoc),
}

/// The `Idempotency-Key` header of the writes that honour it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(dead_code, reason = "only documents a parameter")]
pub struct IdempotencyKey {
    /// 1–255 visible ASCII characters (anything else is a 400): a repeat of this request
    /// with the same key within 24 hours gets the first answer again, with
    /// `Idempotent-Replayed: true`; the same key with another request answers 422.
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]{1,255}$"
    )]
    key: Option<String>,
}

/// The id of the route an operation is about. Anything that is not a route id names no
/// route: 404.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "only documents a parameter")]
pub struct RouteIdParam {
    /// Route id.
    #[param(format = "uuid")]
    id: String,
}

/// The `If-Match` header of the writes to one route.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(dead_code, reason = "only documents a parameter")]
pub struct IfMatch {
    /// `"<revision>"` (several, comma-separated, allowed) or `*`: the write happens only
    /// if the route is at one of these revisions, else 412. Tags are compared strongly,
    /// so a weak or unreadable tag matches no revision.
    #[param(rename = "If-Match", nullable = false)]
    tags: Option<String>,
}

/// The `If-None-Match` header of the reads that answer 304.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(dead_code, reason = "only documents a parameter")]
pub struct IfNoneMatch {
    /// The `ETag` of an earlier answer (several, comma-separated, allowed) or `*`: when
    /// it still matches, the answer is 304 without a body.
    #[param(rename = "If-None-Match", nullable = false)]
    tags: Option<String>,
}

/// What a write sent with `Idempotency-Key` may answer besides its own answers (a
/// repeat gets the first answer again, with `Idempotent-Replayed: true`).
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "only documents responses")]
pub enum IdempotencyProblems {
    /// The first request with this `Idempotency-Key` is still being answered.
    #[response(
        status = 409,
        content_type = "application/problem+json",
        headers(("Retry-After" = u32, description = "Seconds to wait"))
    )]
    InUse(ProblemDoc),
}

/// Errors only requests with a body may answer.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "only documents responses")]
pub enum BodyProblems {
    /// The body did not arrive whole in the time allowed (`TM_HTTP_BODY_READ_TIMEOUT`).
    #[response(status = 408, content_type = "application/problem+json")]
    Timeout(ProblemDoc),
    /// The body is larger than the configured limit (64 KiB by default).
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(ProblemDoc),
    /// The body is not sent as JSON (`application/json` or `application/*+json`).
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(ProblemDoc),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn document() -> Value {
        serde_json::to_value(ApiDoc::openapi()).expect("the document serializes")
    }

    fn operations(doc: &Value) -> Vec<(String, &Value)> {
        let mut all = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                all.push((format!("{} {path}", method.to_uppercase()), operation));
            }
        }
        all
    }

    fn parameter<'a>(operation: &'a Value, name: &str) -> Option<&'a Value> {
        operation["parameters"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = document();
        let mut ids: Vec<&str> = operations(&doc)
            .iter()
            .map(|(_, op)| op["operationId"].as_str().expect("an operationId"))
            .collect();
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count, "{ids:?}");
    }

    #[test]
    fn the_cursor_patterns_are_the_readable_cursors() {
        let doc = document();
        let ops = operations(&doc);
        let cursor = |label: &str| {
            let (_, op) = ops.iter().find(|(l, _)| l == label).expect(label);
            parameter(op, "cursor").expect("a cursor")["schema"]["pattern"].clone()
        };
        assert_eq!(
            cursor("GET /api/v1/routes"),
            crate::page::ROUTE_CURSORS.pattern()
        );
        assert_eq!(
            cursor("GET /api/v1/keys"),
            crate::page::KEY_CURSORS.pattern()
        );
        assert_eq!(
            cursor("GET /api/v1/dlq"),
            crate::page::DEAD_JOB_CURSORS.pattern()
        );
        assert_eq!(
            cursor("GET /api/v1/webhooks"),
            crate::page::WEBHOOK_CURSORS.pattern()
        );
    }

    /// Every answer an operation can give is listed, with the headers that come with it.
    #[test]
    fn every_operation_lists_the_answers_it_can_give() {
        let doc = document();
        for (label, op) in operations(&doc) {
            let responses = op["responses"].as_object().expect("responses");
            let has = |status: &str| responses.contains_key(status);
            for status in ["400", "401", "403", "404", "422", "429", "503"] {
                assert!(has(status), "{label} lists no {status}");
            }
            if op.get("requestBody").is_some() {
                for status in ["408", "413", "415"] {
                    assert!(has(status), "{label} lists no {status}");
                }
            }
            if parameter(op, "Idempotency-Key").is_some() {
                assert!(has("409"), "{label} lists no 409 for a key in use");
            }
            if parameter(op, "If-Match").is_some() {
                assert!(has("412"), "{label} lists no 412");
            }
            for (status, response) in responses {
                let headers = &response["headers"];
                for name in ["X-Request-ID", "X-Correlation-ID", "X-Rate-Limit-Remaining"] {
                    assert!(headers.get(name).is_some(), "{label} {status} lacks {name}");
                }
                if ["429", "503"].contains(&status.as_str()) {
                    assert!(headers.get("Retry-After").is_some(), "{label} {status}");
                }
            }
        }
    }

    #[test]
    fn a_patch_must_change_something() {
        let doc = document();
        let patch = &doc["components"]["schemas"]["RoutePatch"];
        assert_eq!(patch["minProperties"], 1);
        assert!(patch.get("maxProperties").is_none(), "{patch}");
    }

    #[test]
    fn a_new_webhook_names_each_event_type_once_and_nothing_as_null() {
        let doc = document();
        let new = &doc["components"]["schemas"]["NewWebhook"];
        let types = &new["properties"]["event_types"];
        assert_eq!(types["uniqueItems"], true, "{new}");
        assert_eq!(types["type"], "array", "not nullable: {new}");
        assert_eq!(new["properties"]["description"]["type"], "string", "{new}");
    }
}
