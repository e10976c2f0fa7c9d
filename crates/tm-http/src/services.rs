//! A service's routing policy: its resolve policy, failover chain and health checks, read
//! and replaced as one document.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tm_domain::{
    EnvName, FailoverTier, FieldErrors, GroupKey, HealthCheck, ProbeProtocol, ResolvePolicy,
    ServiceName, ServicePolicy, StatusRange, TenantId, Version,
};

use crate::auth::{Action, Caller};
use crate::extract::{ApiJson, ApiQuery};
use crate::guard::WriteKind;
use crate::routes::required;
use crate::{ApiError, AppState};

/// A probe's settings as the API takes them: every field but `protocol` has a default.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = HealthCheck)]
pub struct CheckBody {
    /// `http` and `https` GET `path` on the route URL's host and port; `tcp` connects.
    protocol: ProbeProtocol,
    /// For HTTP(S): the path (and query) to GET; default `/`.
    #[serde(default)]
    #[schema(
        max_length = 512,
        pattern = "^/[^\\s#\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    path: Option<String>,
    /// For HTTP(S): status ranges that count as healthy, like `200-299` or `204`; default
    /// `["200-299"]`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, min_items = 1, max_items = 10)]
    expected_status: Option<Vec<String>>,
    /// Seconds between probes, 1 to 3600; default 10.
    #[serde(default, deserialize_with = "crate::extract::nullable_integer")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 3600)]
    interval_seconds: Option<i64>,
    /// Seconds a probe may take, 1 to 60 and at most the interval; default 2 (or the
    /// interval, if shorter).
    #[serde(default, deserialize_with = "crate::extract::nullable_integer")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 60)]
    timeout_seconds: Option<i64>,
    /// Failed probes in a row tolerated before the route is degraded, 0 to 10; default 2.
    #[serde(default, deserialize_with = "crate::extract::nullable_integer")]
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 10)]
    tolerated_failures: Option<i64>,
}

impl CheckBody {
    fn parse(self, field: &str, errors: &mut FieldErrors) -> Option<HealthCheck> {
        let mut ranges = Vec::new();
        for raw in self
            .expected_status
            .unwrap_or_else(|| vec!["200-299".to_owned()])
        {
            ranges.push(errors.check(
                &format!("{field}.expected_status"),
                StatusRange::parse(&raw),
            )?);
        }
        // Out of range for the type: out of range for the check too, which says so.
        let whole = |n: Option<i64>, default: u32| {
            n.map_or(default, |n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        let interval = whole(self.interval_seconds, 10);
        let check = HealthCheck {
            protocol: self.protocol,
            path: self.path.unwrap_or_else(|| "/".to_owned()),
            expected_status: ranges,
            interval_seconds: interval,
            timeout_seconds: whole(self.timeout_seconds, 2.min(interval)),
            tolerated_failures: whole(self.tolerated_failures, 2),
        };
        errors.check(field, check.check().map(|()| check))
    }
}

/// One tier of a failover chain, as the API takes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = FailoverTier)]
pub struct TierBody {
    /// The versions of the tier, 1 to 64, none named in another tier.
    #[schema(value_type = Vec<String>, min_items = 1, max_items = 64)]
    versions: Vec<String>,
    /// The fewest healthy versions for the tier to serve; default 1.
    #[serde(default, deserialize_with = "crate::extract::nullable_integer")]
    #[schema(value_type = Option<u8>, minimum = 1)]
    min_healthy: Option<i64>,
}

/// A service's routing policy, whole: what it replaces.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewServicePolicy)]
pub struct PolicyBody {
    #[schema(required = true, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    tenant: Option<String>,
    #[schema(required = true, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    service: Option<String>,
    #[schema(required = true, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    env: Option<String>,
    /// What resolve serves when no version is healthy; default `healthy_or_all`.
    #[serde(default)]
    resolve_policy: Option<ResolvePolicy>,
    /// Tiers in order of preference, at most 8; versions not named form a last tier.
    #[serde(default)]
    #[schema(max_items = 8)]
    failover: Option<Vec<TierBody>>,
    /// How every version's health is checked; none: not checked.
    #[serde(default)]
    health_check: Option<CheckBody>,
    /// Per version (the keys are versions), its own check (a `HealthCheck`), or `null`
    /// for none, whatever `health_check` says; at most 64 versions.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    version_health_checks: Option<BTreeMap<String, Option<CheckBody>>>,
}

impl PolicyBody {
    fn parse(self) -> Result<(GroupKey, ServicePolicy), ApiError> {
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
        let mut failover = Vec::new();
        for (i, tier) in self.failover.unwrap_or_default().into_iter().enumerate() {
            let versions: Vec<Version> = tier
                .versions
                .iter()
                .filter_map(|v| errors.check(&format!("failover[{i}].versions"), Version::parse(v)))
                .collect();
            failover.push(FailoverTier {
                versions,
                // Out of range: 0, which the chain's check refuses.
                min_healthy: tier.min_healthy.map_or(1, |n| u8::try_from(n).unwrap_or(0)),
            });
        }
        let health_check = self
            .health_check
            .and_then(|check| check.parse("health_check", &mut errors));
        let mut version_checks = BTreeMap::new();
        for (raw, check) in self.version_health_checks.unwrap_or_default() {
            let field = format!("version_health_checks.{raw}");
            let Some(version) = errors.check(&field, Version::parse(&raw)) else {
                continue;
            };
            let check = match check {
                None => None,
                Some(check) => match check.parse(&field, &mut errors) {
                    Some(check) => Some(check),
                    None => continue,
                },
            };
            version_checks.insert(version, check);
        }
        let policy = ServicePolicy {
            resolve: self.resolve_policy.unwrap_or_default(),
            failover,
            health_check,
            version_checks,
        };
        let policy = if errors.is_empty() {
            errors.check("failover", policy.checked())
        } else {
            None
        };
        match (tenant, service, env, policy) {
            (Some(tenant), Some(service), Some(env), Some(policy)) if errors.is_empty() => Ok((
                GroupKey {
                    tenant,
                    service,
                    env,
                },
                policy,
            )),
            _ => Err(ApiError::Invalid(errors)),
        }
    }
}

/// A service's routing policy, as the API shows it.
#[derive(Serialize)]
struct PolicyView<'a> {
    tenant: &'a TenantId,
    service: &'a ServiceName,
    env: &'a EnvName,
    resolve_policy: ResolvePolicy,
    failover: &'a [FailoverTier],
    health_check: Option<&'a HealthCheck>,
    version_health_checks: &'a BTreeMap<Version, Option<HealthCheck>>,
    /// The service's generation: moved on by every change to the service.
    generation: i64,
}

fn view(key: &GroupKey, policy: &ServicePolicy, generation: i64) -> Response {
    Json(PolicyView {
        tenant: &key.tenant,
        service: &key.service,
        env: &key.env,
        resolve_policy: policy.resolve,
        failover: &policy.failover,
        health_check: policy.health_check.as_ref(),
        version_health_checks: &policy.version_checks,
        generation,
    })
    .into_response()
}

/// Names one service.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ServiceQuery {
    #[param(required = true, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    tenant: Option<String>,
    #[param(required = true, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    service: Option<String>,
    #[param(required = true, value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    env: Option<String>,
}

/// A service's routing policy: the default one (no chain, `healthy_or_all`, no checks)
/// until one is set.
#[utoipa::path(
    get,
    path = "/api/v1/services/policy",
    operation_id = "get_service_policy",
    tag = "services",
    params(ServiceQuery),
    responses(
        (status = 200, description = "The service's policy", body = crate::openapi::ServicePolicyDoc),
        crate::openapi::Problems,
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ServiceQuery>,
) -> Result<Response, ApiError> {
    let mut errors = FieldErrors::default();
    let tenant = required(
        &mut errors,
        "tenant",
        query.tenant.as_deref(),
        TenantId::parse,
    );
    let service = required(
        &mut errors,
        "service",
        query.service.as_deref(),
        ServiceName::parse,
    );
    let env = required(&mut errors, "env", query.env.as_deref(), EnvName::parse);
    let (Some(tenant), Some(service), Some(env)) = (tenant, service, env) else {
        return Err(ApiError::Invalid(errors));
    };
    caller.authorize(Action::ReadRoutes, &tenant)?;
    let key = GroupKey {
        tenant,
        service,
        env,
    };
    let (policy, generation) = state
        .guard
        .read_uncached(|| state.store.service_policy(&key))
        .await?;
    Ok(view(&key, &policy, generation))
}

/// Replaces a service's routing policy, whole (fields left out take their defaults). The
/// change is audited (`policy`) and applies to resolve at once on this instance, and on
/// the others as every change does.
#[utoipa::path(
    put,
    path = "/api/v1/services/policy",
    operation_id = "set_service_policy",
    tag = "services",
    params(crate::openapi::IdempotencyKey),
    request_body = PolicyBody,
    responses(
        (status = 200, description = "The service's policy now", body = crate::openapi::ServicePolicyDoc),
        crate::openapi::Problems,
        crate::openapi::IdempotencyProblems,
        crate::openapi::BodyProblems,
    ),
)]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PolicyBody>,
) -> Result<Response, ApiError> {
    caller.scope(Action::WriteRoutes)?;
    let (key, policy) = body.parse()?;
    caller.authorize(Action::WriteRoutes, &key.tenant)?;
    let generation = state
        .guard
        .write(
            WriteKind::Ordinary,
            state
                .store
                .set_service_policy(&key, &policy, &caller.actor()),
        )
        .await?;
    state.wrote(&caller);
    if let Err(err) = state
        .routing
        .refresh_services(std::slice::from_ref(&key))
        .await
    {
        // Stored: the change feed brings it to the snapshot as soon as the store answers.
        tracing::warn!(error = %err, "could not re-read the service after its policy changed");
    }
    tracing::info!(
        tenant = %key.tenant, service = %key.service, env = %key.env, generation,
        by = %caller.actor().as_str(), "service policy set"
    );
    Ok(view(&key, &policy, generation))
}

/// A route's health, as the API shows it.
#[derive(Serialize)]
struct HealthView {
    route_id: String,
    /// `online`, `degraded` or `stopped`.
    state: tm_domain::HealthState,
    /// Whether its service's policy checks its health now.
    checked: bool,
    /// Probes failed in a row.
    failures: u32,
    last_error: Option<String>,
    #[serde(with = "optional_time")]
    checked_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(with = "optional_time")]
    last_online_at: Option<chrono::DateTime<chrono::Utc>>,
}

mod optional_time {
    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(
        time: &Option<chrono::DateTime<chrono::Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => tm_domain::rfc3339::serialize(time, serializer),
            None => serializer.serialize_none(),
        }
    }
}

/// A route's health: `online` (its probes pass, or it is not checked), `degraded` (more
/// probes failed in a row than its check tolerates) or `stopped` (inactive, or no longer
/// checked), with its last error.
#[utoipa::path(
    get,
    path = "/api/v1/routes/{id}/health",
    operation_id = "get_route_health",
    tag = "services",
    params(crate::openapi::RouteIdParam),
    responses(
        (status = 200, description = "The route's health", body = crate::openapi::RouteHealthDoc),
        crate::openapi::Problems,
    ),
)]
pub async fn health(
    State(state): State<AppState>,
    caller: Caller,
    crate::extract::RouteIdPath(id): crate::extract::RouteIdPath,
) -> Result<Response, ApiError> {
    let scope = caller.scope(Action::ReadRoutes)?;
    let route = state
        .guard
        .read_uncached(|| state.store.get_route(id, tm_store::ReadFrom::Primary))
        .await?
        .filter(|route| scope.is_none_or(|own| own == &route.tenant))
        .ok_or(ApiError::NotFound)?;
    let group = route.group();
    let (policy, _) = state
        .guard
        .read_uncached(|| state.store.service_policy(&group))
        .await?;
    let kept = state
        .guard
        .read_uncached(|| state.store.route_health(id))
        .await?;
    let checked = route.active && policy.check_of(route.version.as_str()).is_some();
    let view = match kept {
        Some(kept) => HealthView {
            route_id: id.to_string(),
            state: kept.state,
            checked,
            failures: kept.failures,
            last_error: kept.last_error,
            checked_at: kept.checked_at,
            last_online_at: kept.last_online_at,
        },
        None => HealthView {
            route_id: id.to_string(),
            state: if route.active {
                tm_domain::HealthState::Online
            } else {
                tm_domain::HealthState::Stopped
            },
            checked,
            failures: 0,
            last_error: None,
            checked_at: None,
            last_online_at: None,
        },
    };
    Ok(Json(view).into_response())
}
