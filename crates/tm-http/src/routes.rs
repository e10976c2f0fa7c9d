//! Route management: create, activate, deactivate, list, get, patch, delete.
//!
//! Every successful write refreshes this instance's routing snapshot before it answers,
//! so a client that wrote can resolve its change at once.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tm_domain::{
    DomainError, EnvName, FieldErrors, NewRoute, Route, RouteChange, RouteKey, RoutePatch,
    ServiceName, TenantId, UpstreamUrl, Version, Weight,
};
use tm_store::{Page, RouteFilter};

use crate::auth::{Action, Caller};
use crate::extract::{if_none_match, ApiJson, ApiQuery, IfMatch, RouteIdPath};
use crate::guard::{Freshness, WriteKind};
use crate::page::ROUTE_CURSORS;
use crate::{ApiError, AppState};

/// Parses a required field, recording a missing or invalid value.
pub(crate) fn required<T>(
    errors: &mut FieldErrors,
    field: &str,
    raw: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, DomainError>,
) -> Option<T> {
    match raw {
        Some(raw) => errors.check(field, parse(raw)),
        None => {
            errors.push(field, "is required");
            None
        }
    }
}

/// Names one route.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RouteKey)]
pub struct KeyBody {
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
    /// Version.
    #[schema(required = true, nullable = false, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    version: Option<String>,
}

impl KeyBody {
    fn parse(&self, errors: &mut FieldErrors) -> Option<RouteKey> {
        let tenant = required(errors, "tenant", self.tenant.as_deref(), TenantId::parse);
        let service = required(
            errors,
            "service",
            self.service.as_deref(),
            ServiceName::parse,
        );
        let env = required(errors, "env", self.env.as_deref(), EnvName::parse);
        let version = required(errors, "version", self.version.as_deref(), Version::parse);
        Some(RouteKey {
            tenant: tenant?,
            service: service?,
            env: env?,
            version: version?,
        })
    }
}

/// A route to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewRoute)]
pub struct CreateBody {
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
    /// Version.
    #[schema(required = true, nullable = false, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    version: Option<String>,
    /// Where to send the service's traffic.
    #[schema(required = true, nullable = false, value_type = tm_domain::UpstreamUrl)]
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    url: Option<String>,
    /// Serve it at once (default false).
    #[schema(required = false, nullable = false, value_type = bool)]
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    active: Option<bool>,
    /// Share of traffic, 0 to 100 (default 100).
    #[schema(required = false, nullable = false, value_type = u8, minimum = 0, maximum = 100)]
    #[serde(default, deserialize_with = "crate::extract::integer")]
    weight: Option<i64>,
}

impl TryFrom<CreateBody> for NewRoute {
    type Error = ApiError;

    fn try_from(body: CreateBody) -> Result<Self, ApiError> {
        let mut errors = FieldErrors::default();
        let key = KeyBody {
            tenant: body.tenant,
            service: body.service,
            env: body.env,
            version: body.version,
        }
        .parse(&mut errors);
        let url = required(&mut errors, "url", body.url.as_deref(), UpstreamUrl::parse);
        let weight = match body.weight {
            Some(w) => errors.check("weight", Weight::parse(w)),
            None => Some(Weight::DEFAULT),
        };
        match (key, url, weight) {
            (Some(key), Some(url), Some(weight)) if errors.is_empty() => Ok(NewRoute {
                key,
                url,
                weight,
                active: body.active.unwrap_or(false),
            }),
            _ => Err(ApiError::Invalid(errors)),
        }
    }
}

/// What to change: url and/or weight.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RoutePatch, min_properties = 1)]
pub struct PatchBody {
    /// Where to send the service's traffic.
    #[schema(required = false, nullable = false, value_type = tm_domain::UpstreamUrl)]
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    url: Option<String>,
    /// Share of traffic, 0 to 100.
    #[schema(required = false, nullable = false, value_type = u8, minimum = 0, maximum = 100)]
    #[serde(default, deserialize_with = "crate::extract::integer")]
    weight: Option<i64>,
}

impl TryFrom<PatchBody> for RoutePatch {
    type Error = ApiError;

    fn try_from(body: PatchBody) -> Result<Self, ApiError> {
        let mut errors = FieldErrors::default();
        if body.url.is_none() && body.weight.is_none() {
            errors.push("body", "must change url and/or weight");
        }
        let url = body
            .url
            .as_deref()
            .and_then(|u| errors.check("url", UpstreamUrl::parse(u)));
        let weight = body
            .weight
            .and_then(|w| errors.check("weight", Weight::parse(w)));
        errors.into_result()?;
        Ok(RoutePatch { url, weight })
    }
}

/// Marks an answer built from the last known data while the database path is refused.
fn mark(freshness: Freshness, mut response: Response) -> Response {
    if freshness == Freshness::Stale {
        response.headers_mut().insert(
            header::WARNING,
            HeaderValue::from_static("110 - \"Response is Stale\""),
        );
    }
    response
}

/// A route with its `ETag` (`"<revision>"`).
fn route_response(status: StatusCode, route: &Route) -> Response {
    (status, [(header::ETAG, route_etag(route))], Json(route)).into_response()
}

fn route_etag(route: &Route) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}\"", route.revision))
        .expect("digits are a valid header value")
}

/// Create a route (inactive unless `"active": true`).
#[utoipa::path(
    post,
    path = "/api/v1/routes",
    operation_id = "create_route",
    tag = "routes",
    params(crate::openapi::IdempotencyKey),
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created", body = Route,
            headers(("Location" = String), ("ETag" = String, description = "`\"<revision>\"`"))),
        (status = 409, description = "A route with this tenant, service, env and version exists, or the first request with this `Idempotency-Key` is still being answered (then with `Retry-After`)",
            body = crate::openapi::ProblemDoc, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait, when the `Idempotency-Key` is in use"))),
        crate::openapi::Problems,
        crate::openapi::BodyProblems,
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    caller.scope(Action::WriteRoutes)?;
    let new = NewRoute::try_from(body)?;
    caller.authorize(Action::WriteRoutes, &new.key.tenant)?;
    let route = state
        .guard
        .write(
            WriteKind::Ordinary,
            state.store.create_route(new, &caller.actor()),
        )
        .await?;
    state.wrote(&caller);
    state
        .routing
        .refresh_group(&route.group(), RouteChange::Stored(&route))
        .await;
    let mut response = route_response(StatusCode::CREATED, &route);
    let location = HeaderValue::from_str(&format!("/api/v1/routes/{}", route.id))
        .expect("a path is a valid header value");
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// Activate a route.
#[utoipa::path(
    post,
    path = "/api/v1/routes/activate",
    operation_id = "activate_route",
    tag = "routes",
    params(crate::openapi::IdempotencyKey),
    request_body = KeyBody,
    responses(
        (status = 200, description = "The route, active", body = Route, headers(("ETag" = String))),
        crate::openapi::Problems,
        crate::openapi::IdempotencyProblems,
        crate::openapi::BodyProblems,
    ),
)]
pub async fn activate(
    state: State<AppState>,
    caller: Caller,
    body: ApiJson<KeyBody>,
) -> Result<Response, ApiError> {
    set_active(state, caller, body, true).await
}

/// Deactivate a route (the rollback path).
#[utoipa::path(
    post,
    path = "/api/v1/routes/deactivate",
    operation_id = "deactivate_route",
    tag = "routes",
    params(crate::openapi::IdempotencyKey),
    request_body = KeyBody,
    responses(
        (status = 200, description = "The route, inactive", body = Route, headers(("ETag" = String))),
        crate::openapi::Problems,
        crate::openapi::IdempotencyProblems,
        crate::openapi::BodyProblems,
    ),
)]
pub async fn deactivate(
    state: State<AppState>,
    caller: Caller,
    body: ApiJson<KeyBody>,
) -> Result<Response, ApiError> {
    set_active(state, caller, body, false).await
}

async fn set_active(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<KeyBody>,
    active: bool,
) -> Result<Response, ApiError> {
    caller.scope(Action::WriteRoutes)?;
    let mut errors = FieldErrors::default();
    let key = body.parse(&mut errors);
    let Some(key) = key.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Invalid(errors));
    };
    caller.authorize(Action::WriteRoutes, &key.tenant)?;
    let route = state
        .guard
        .write(
            WriteKind::Critical,
            state.store.set_active(&key, active, &caller.actor()),
        )
        .await?;
    state.wrote(&caller);
    state
        .routing
        .refresh_group(&route.group(), RouteChange::Stored(&route))
        .await;
    Ok(route_response(StatusCode::OK, &route))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this tenant's routes.
    #[param(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    tenant: Option<String>,
    /// Only this service's routes.
    #[param(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    service: Option<String>,
    /// Only this environment's routes.
    #[param(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    env: Option<String>,
    /// Only active (or inactive) routes.
    active: Option<bool>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page of this listing; any other is a 400.
    #[param(pattern = "^cjE6[A-Za-z0-9_-]{21}[AQgw]$")]
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct RouteList {
    items: Vec<Route>,
    next_cursor: Option<String>,
}

/// List routes, a page at a time, in creation order.
#[utoipa::path(
    get,
    path = "/api/v1/routes",
    operation_id = "list_routes",
    tag = "routes",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of routes", body = crate::openapi::RouteListDoc,
            headers(("Warning" = String, description = "`110 - \"Response is Stale\"` when served from the last known data while the database is refused"))),
        crate::openapi::Problems,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    caller.scope(Action::ReadRoutes)?;
    let after = query
        .cursor
        .as_deref()
        .map(|raw| ROUTE_CURSORS.decode(raw))
        .transpose()?;
    let mut errors = FieldErrors::default();
    let mut filter = RouteFilter {
        tenant: errors.optional("tenant", query.tenant.as_deref(), TenantId::parse),
        service: errors.optional("service", query.service.as_deref(), ServiceName::parse),
        env: errors.optional("env", query.env.as_deref(), EnvName::parse),
        active: query.active,
    };
    let limit = crate::page::limit(query.limit, &mut errors);
    errors.into_result()?;
    filter.tenant = caller.list_scope(Action::ReadRoutes, filter.tenant)?;

    // One more than asked tells whether another page exists.
    let (mut items, freshness) = state
        .guard
        .list_routes(
            filter,
            Page {
                after,
                limit: limit + 1,
            },
            state.read_from(&caller),
        )
        .await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|r| ROUTE_CURSORS.encode(r.id))
    } else {
        None
    };
    Ok(mark(
        freshness,
        Json(RouteList { items, next_cursor }).into_response(),
    ))
}

/// One route.
#[utoipa::path(
    get,
    path = "/api/v1/routes/{id}",
    operation_id = "get_route",
    tag = "routes",
    params(
        crate::openapi::RouteIdParam,
        crate::openapi::IfNoneMatch,
    ),
    responses(
        (status = 200, description = "The route", body = Route, headers(
            ("ETag" = String, description = "`\"<revision>\"`"),
            ("Warning" = String, description = "`110 - \"Response is Stale\"` when served from the last known data while the database is refused"),
        )),
        (status = 304, description = "Unchanged since the `If-None-Match` tag", headers(
            ("ETag" = String, description = "`\"<revision>\"`"),
            ("Warning" = String, description = "`110 - \"Response is Stale\"` when served from the last known data while the database is refused"),
        )),
        crate::openapi::Problems,
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    RouteIdPath(id): RouteIdPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scope = caller.scope(Action::ReadRoutes)?;
    let (route, freshness) = state.guard.get_route(id, state.read_from(&caller)).await?;
    let route = route
        .filter(|route| scope.is_none_or(|own| own == &route.tenant))
        .ok_or(ApiError::NotFound)?;
    let etag = route_etag(&route);
    if if_none_match(&headers, etag.to_str().unwrap_or_default()) {
        return Ok(mark(
            freshness,
            (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response(),
        ));
    }
    Ok(mark(freshness, route_response(StatusCode::OK, &route)))
}

/// Change a route's url and/or weight; honours `If-Match: "<revision>"`.
#[utoipa::path(
    patch,
    path = "/api/v1/routes/{id}",
    operation_id = "patch_route",
    tag = "routes",
    params(
        crate::openapi::RouteIdParam,
        crate::openapi::IfMatch,
        crate::openapi::IdempotencyKey,
    ),
    request_body = PatchBody,
    responses(
        (status = 200, description = "The route, changed", body = Route, headers(("ETag" = String))),
        (status = 412, description = "`If-Match` names no revision the route is at", body = crate::openapi::ProblemDoc,
            content_type = "application/problem+json"),
        crate::openapi::Problems,
        crate::openapi::IdempotencyProblems,
        crate::openapi::BodyProblems,
    ),
)]
pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    RouteIdPath(id): RouteIdPath,
    IfMatch(expected): IfMatch,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Response, ApiError> {
    let scope = caller.scope(Action::WriteRoutes)?;
    let patch = RoutePatch::try_from(body)?;
    let route = state
        .guard
        .write(
            WriteKind::Ordinary,
            state
                .store
                .update_route(id, scope, &patch, expected.as_deref(), &caller.actor()),
        )
        .await?;
    state.wrote(&caller);
    state
        .routing
        .refresh_group(&route.group(), RouteChange::Stored(&route))
        .await;
    Ok(route_response(StatusCode::OK, &route))
}

/// Delete a route; honours `If-Match: "<revision>"`.
#[utoipa::path(
    delete,
    path = "/api/v1/routes/{id}",
    operation_id = "delete_route",
    tag = "routes",
    params(
        crate::openapi::RouteIdParam,
        crate::openapi::IfMatch,
        crate::openapi::IdempotencyKey,
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 412, description = "`If-Match` names no revision the route is at", body = crate::openapi::ProblemDoc,
            content_type = "application/problem+json"),
        crate::openapi::Problems,
        crate::openapi::IdempotencyProblems,
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    RouteIdPath(id): RouteIdPath,
    IfMatch(expected): IfMatch,
) -> Result<Response, ApiError> {
    let scope = caller.scope(Action::WriteRoutes)?;
    let route = state
        .guard
        .write(
            WriteKind::Ordinary,
            state
                .store
                .delete_route(id, scope, expected.as_deref(), &caller.actor()),
        )
        .await?;
    state.wrote(&caller);
    state
        .routing
        .refresh_group(&route.group(), RouteChange::Deleted(&route))
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
