//! The OpenAPI 3.1 document of API v1, generated from the handlers' annotations and the
//! request and response types, served at `/openapi.json`.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tm_domain::{FieldError, Role, Route};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::{keys, resolve, routes};

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

/// One page of routes.
#[derive(Serialize, ToSchema)]
#[schema(as = RouteList)]
pub struct RouteListDoc {
    pub items: Vec<Route>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
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
        keys::create,
        keys::list,
        keys::revoke,
    ),
    components(schemas(ProblemDoc, FieldError, Route, ResolveAnswerDoc, RouteListDoc, KeyDoc, CreatedKeyDoc, KeyListDoc, Role)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "routes", description = "Routes and resolution"), (name = "keys", description = "API keys")),
)]
pub struct ApiDoc;

pub async fn document() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

/// Errors any `/api/v1` operation may answer.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "only documents responses")]
pub enum Problems {
    /// Malformed request: unreadable JSON, query string or cursor.
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
    /// Well-formed input with invalid values or unknown fields; `errors` names each.
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(ProblemDoc),
    /// This key's or its tenant's (or, unauthenticated, this address's) budget is spent
    /// (the headers tell of the budget that refused), or the key holds as many
    /// `Idempotency-Key` records as it may.
    #[response(
        status = 429,
        content_type = "application/problem+json",
        headers(
            ("Retry-After" = u32, description = "Seconds to wait"),
            ("X-Rate-Limit-Limit" = u32, description = "Requests allowed per period"),
            ("X-Rate-Limit-Remaining" = u32, description = "Requests left in the budget"),
            ("X-Rate-Limit-Reset" = u32, description = "Seconds until the budget is whole again"),
        )
    )]
    TooManyRequests(ProblemDoc),
    /// The database is unavailable; retry after `Retry-After` seconds.
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
    /// 1–255 visible ASCII characters: a repeat of this request with the same key within 24 hours gets the first answer; the same key with another request answers 422
    #[param(rename = "Idempotency-Key")]
    key: Option<String>,
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
    /// The body is larger than the configured limit (64 KiB by default).
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(ProblemDoc),
    /// The body is not sent as JSON.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(ProblemDoc),
}
