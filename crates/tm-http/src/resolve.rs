//! `GET /api/v1/routes/resolve`: the hot path, answered from the in-memory snapshot.

use axum::extract::State;
use std::borrow::Cow;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use tm_domain::{
    ActiveRoute, EnvName, FieldErrors, Pick, RoutingSnapshot, ServiceName, TenantId, Version,
};

use crate::auth::{Action, Caller};
use crate::extract::{if_none_match, parse_query};
use crate::wire::{AnswerHeaders, RequestHead};
use crate::{ApiError, AppState};

/// Longest accepted stickiness key, in characters (as the document's `maxLength` counts).
const MAX_KEY_LEN: usize = 256;

#[derive(Debug, Default, PartialEq, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResolveQuery<'a> {
    /// Tenant.
    #[param(required = true, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    #[serde(borrow)]
    tenant: Option<Cow<'a, str>>,
    /// Service.
    #[param(required = true, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    #[serde(borrow)]
    service: Option<Cow<'a, str>>,
    /// Environment.
    #[param(required = true, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    #[serde(borrow)]
    env: Option<Cow<'a, str>>,
    /// This version, if active, whatever its weight.
    #[param(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    #[serde(borrow)]
    version: Option<Cow<'a, str>>,
    /// Stickiness key (e.g. a user id): the same key gets the same version.
    #[param(value_type = Option<String>, min_length = 1, max_length = 256)]
    #[serde(borrow)]
    pub(crate) key: Option<Cow<'a, str>>,
    /// `true`: instead of the answer, how it is chosen (see `Explanation`).
    #[param(value_type = Option<bool>)]
    #[serde(borrow)]
    explain: Option<Cow<'a, str>>,
}

/// A resolve's query, read in place: parameters without escapes are borrowed from the
/// request line. Decoded as a form, as serde_urlencoded decodes it, straight into the
/// five parameters; a query that names another parameter or one twice is left to
/// serde_urlencoded, whose refusal names the problem.
fn read_query(query: &str) -> Result<ResolveQuery<'_>, ApiError> {
    let mut read = ResolveQuery::default();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match &*name {
            "tenant" => &mut read.tenant,
            "service" => &mut read.service,
            "env" => &mut read.env,
            "version" => &mut read.version,
            "key" => &mut read.key,
            "explain" => &mut read.explain,
            _ => return parse_query(query),
        };
        if slot.replace(value).is_some() {
            return parse_query(query);
        }
    }
    Ok(read)
}

/// Resolve: the URL to call for a tenant's service in an environment.
///
/// Without `version`, a version is chosen by weight (weight 0 never) among the active
/// ones the service's policy serves (see the service policy: health and failover), the
/// same one every time for the same `key`. Answered from memory. With `explain=true`,
/// answers how the choice is made instead (an `Explanation`).
#[utoipa::path(
    get,
    path = "/api/v1/routes/resolve",
    operation_id = "resolve",
    tag = "routes",
    params(ResolveQuery, crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "Where to call (a `ResolveAnswer`); with `explain=true`, how the choice is made (an `Explanation`)", body = crate::openapi::ResolvedDoc,
            headers(("ETag" = String, description = "Opaque strong validator"), ("Cache-Control" = String))),
        (status = 304, description = "Unchanged since the `If-None-Match` tag",
            headers(("ETag" = String, description = "Opaque strong validator"), ("Cache-Control" = String))),
        (status = 503, description = "No version is healthy and the service's policy is `healthy_only`", body = crate::openapi::ProblemDoc, content_type = "application/problem+json",
            headers(("Retry-After" = String))),
        crate::openapi::Problems,
    ),
)]
pub async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let snapshot = state.routing.snapshot();
    if wants_explain(uri.query()) {
        if let Some(explained) = crate::explain::explain(&state, &snapshot, &caller, uri.query())? {
            return Ok(explained);
        }
    }
    Ok(answer(&snapshot, &caller, uri.query(), &headers)?.into_response(&state))
}

/// Whether `query` may ask for an explanation, which only the router's handler gives: a
/// cheap look for the parameter's name, so that the fast path passes such a request on.
pub(crate) fn wants_explain(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.contains("explain"))
}

/// A resolve answered from a snapshot: the route's answer, or that it is unchanged since
/// the client's tag (304).
pub(crate) struct Resolved<'s> {
    route: ActiveRoute<'s>,
    unchanged: bool,
}

static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

impl Resolved<'_> {
    pub(crate) fn status(&self) -> StatusCode {
        if self.unchanged {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::OK
        }
    }

    /// Entity tag, caching and, with a body, its type.
    pub(crate) fn add_headers(&self, state: &AppState, headers: &mut impl AnswerHeaders) {
        headers.put_ascii(&header::ETAG, self.route.etag().as_bytes());
        headers.put(&header::CACHE_CONTROL, &state.cache_control);
        if !self.unchanged {
            headers.put(&header::CONTENT_TYPE, &APPLICATION_JSON);
        }
    }

    /// The body: the route's answer, none on a 304.
    pub(crate) fn body(&self) -> &[u8] {
        if self.unchanged {
            &[]
        } else {
            self.route.body()
        }
    }

    pub(crate) fn into_response(self, state: &AppState) -> Response {
        let mut response = Response::new(if self.unchanged {
            Body::empty()
        } else {
            Body::from(Bytes::copy_from_slice(self.route.body()))
        });
        *response.status_mut() = self.status();
        // Room for every header the answer will carry, made once.
        let headers = response.headers_mut();
        headers.reserve(crate::observe::ANSWER_HEADERS);
        self.add_headers(state, headers);
        response
    }
}

/// The answer to a resolve whose caller is authenticated and within its budget: the
/// handler's, and the fast path's (see [`crate::fast`]).
pub(crate) fn answer<'s>(
    snapshot: &'s RoutingSnapshot,
    caller: &Caller,
    query: Option<&str>,
    headers: &(impl RequestHead + ?Sized),
) -> Result<Resolved<'s>, ApiError> {
    let (asked, query) = checked_query(caller, query)?;
    let pick = match (&asked.version, query.key.as_deref()) {
        (Some(version), _) => Pick::Version(version),
        (None, Some(key)) => Pick::Sticky(key),
        (None, None) => Pick::Random(rand::random()),
    };
    let Some(route) = snapshot.resolve(&asked.tenant, &asked.service, &asked.env, pick) else {
        return Err(miss(snapshot, &asked));
    };
    Ok(Resolved {
        unchanged: if_none_match(headers, route.etag()),
        route,
    })
}

/// Why nothing was chosen: no version serves because the policy serves nothing while
/// none is healthy (503), or there is no active version to choose (404).
fn miss(snapshot: &RoutingSnapshot, asked: &Asked) -> ApiError {
    let none_healthy = asked.version.is_none()
        && snapshot
            .service(&asked.tenant, &asked.service, &asked.env)
            .is_some_and(|view| view.outcome() == tm_domain::Outcome::NoneHealthy);
    if none_healthy {
        ApiError::NoHealthyRoute
    } else {
        ApiError::NoActiveRoute
    }
}

/// What a resolve asks for, checked.
pub(crate) struct Asked {
    pub(crate) tenant: TenantId,
    pub(crate) service: ServiceName,
    pub(crate) env: EnvName,
    pub(crate) version: Option<Version>,
    pub(crate) explain: bool,
}

/// The query of a resolve, read and checked, its tenant authorized for `caller`.
pub(crate) fn checked_query<'q>(
    caller: &Caller,
    query: Option<&'q str>,
) -> Result<(Asked, ResolveQuery<'q>), ApiError> {
    let query = read_query(query.unwrap_or_default())?;
    let (tenant, service, env) = match (&query.tenant, &query.service, &query.env) {
        (Some(t), Some(s), Some(e)) => (t, s, e),
        _ => {
            return Err(ApiError::Malformed(
                "tenant, service and env are required query parameters".into(),
            ))
        }
    };
    let mut errors = FieldErrors::default();
    let tenant = errors.check("tenant", TenantId::parse(tenant));
    let service = errors.check("service", ServiceName::parse(service));
    let env = errors.check("env", EnvName::parse(env));
    let version = errors.optional("version", query.version.as_deref(), Version::parse);
    if let Some(key) = query.key.as_deref() {
        // Counting characters only when the bytes alone may be too many.
        if key.is_empty() || (key.len() > MAX_KEY_LEN && key.chars().count() > MAX_KEY_LEN) {
            errors.push("key", format!("must be 1 to {MAX_KEY_LEN} characters"));
        }
    }
    let explain = match query.explain.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            errors.push("explain", "must be true or false");
            false
        }
    };
    let (Some(tenant), Some(service), Some(env)) = (tenant, service, env) else {
        return Err(ApiError::Invalid(errors));
    };
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    caller.authorize(Action::Resolve, &tenant)?;
    let asked = Asked {
        tenant,
        service,
        env,
        version,
        explain,
    };
    Ok((asked, query))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A query made of parameter names, separators, escapes and text.
    fn queries() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("tenant"),
            Just("service"),
            Just("env"),
            Just("version"),
            Just("key"),
            Just("colour"),
            Just("="),
            Just("&"),
            Just("+"),
            Just("%2"),
            Just("%41"),
            Just("%E2%9C%93"),
            Just("%ZZ"),
            Just("%FF"),
            Just("acme"),
            Just("v1"),
        ];
        proptest::collection::vec(token, 0..12).prop_map(|t| t.concat())
    }

    proptest! {
        #[test]
        fn reading_in_place_agrees_with_serde_urlencoded(query in queries()) {
            let serde: Result<ResolveQuery<'_>, ApiError> = parse_query(&query);
            match (read_query(&query), serde) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                (a, b) => prop_assert!(false, "{query:?}: {a:?} vs {b:?}"),
            }
        }
    }
}
