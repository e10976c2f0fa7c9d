//! Admission and the one authorization policy every handler asks.
//!
//! [`admit`] takes every `/api/v1` request through the same steps, in this order, before
//! its body is read: authenticate the bearer key against the in-memory key ring (no
//! database round trip), draw from the key's rate budget, and check that the key's role
//! may do the operation at all. A refused request costs nothing more. Handlers then
//! ask the admitted [`Caller`], never the role directly: `authorize` for data named in
//! the request (another tenant: 403), `scope` for listings and lookups by id (another
//! tenant's data is simply not there: 404).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};
use tm_domain::{Grant, Role, TenantId};
use tm_resilience::{RateClass, RateDecision, Subject};
use tm_store::{Actor, Principal};

use crate::observe::RequestContext;
use crate::wire::RequestHead;
use crate::{ApiError, AppState};

/// What a request wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Resolve,
    ReadRoutes,
    /// The audit log: who changed what, in which request.
    ReadAudit,
    WriteRoutes,
    ManageKeys,
    /// The dead-letter queue: list, replay, purge.
    ManageJobs,
    /// Webhook subscriptions: create, list, get, delete.
    ManageWebhooks,
}

impl Action {
    /// The rate budget a request doing this draws from.
    fn rate_class(self) -> RateClass {
        match self {
            Action::Resolve => RateClass::Resolve,
            Action::ReadRoutes | Action::ReadAudit => RateClass::Read,
            Action::WriteRoutes => RateClass::Write,
            Action::ManageKeys | Action::ManageJobs | Action::ManageWebhooks => RateClass::Keys,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Action::Resolve => "resolve routes",
            Action::ReadRoutes => "read routes",
            Action::ReadAudit => "read the audit log",
            Action::WriteRoutes => "change routes",
            Action::ManageKeys => "manage keys",
            Action::ManageJobs => "manage the dead-letter queue",
            Action::ManageWebhooks => "manage webhooks",
        }
    }
}

/// Whether `role` may do `action` at all (within its tenant, for tenant-bound roles).
fn permits(role: Role, action: Action) -> bool {
    match role {
        Role::Admin | Role::TenantAdmin => true,
        Role::Reader => matches!(action, Action::Resolve | Action::ReadRoutes),
    }
}

/// The authenticated caller of an `/api/v1` request.
#[derive(Clone, Debug)]
pub struct Caller {
    principal: Principal,
    context: RequestContext,
}

impl Caller {
    pub fn grant(&self) -> &Grant {
        &self.principal.grant
    }

    /// Whether this caller's role may do `action` at all (within its tenant, for a
    /// tenant-bound key).
    pub fn may(&self, action: Action) -> bool {
        permits(self.principal.grant.role(), action)
    }

    /// How this caller is recorded in the audit log: its key id, and the request.
    pub fn actor(&self) -> Actor {
        let actor = self.principal.actor();
        match self.context.request_id() {
            Some(id) => actor.in_request(id),
            None => actor,
        }
    }

    /// Notes the tenant this request acts on, for its log line and the tenant metric.
    fn acting_on(&self, tenant: &TenantId) {
        self.context.set_tenant(tenant);
    }

    fn require(&self, action: Action) -> Result<(), ApiError> {
        let role = self.principal.grant.role();
        if permits(role, action) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "a {role} key may not {}",
                action.describe()
            )))
        }
    }

    /// Allows `action` on data of `tenant`, named by the request itself; 403 otherwise.
    pub fn authorize(&self, action: Action, tenant: &TenantId) -> Result<(), ApiError> {
        self.require(action)?;
        match self.principal.grant.tenant() {
            Some(own) if own != tenant => Err(ApiError::Forbidden(format!(
                "this key is bound to another tenant than {tenant}"
            ))),
            _ => {
                self.acting_on(tenant);
                Ok(())
            }
        }
    }

    /// The tenant that lookups by id and listings are confined to (`None`: every
    /// tenant). Data outside it is reported as not found, so its existence is not leaked.
    pub fn scope(&self, action: Action) -> Result<Option<&TenantId>, ApiError> {
        self.require(action)?;
        let scope = self.principal.grant.tenant();
        if let Some(own) = scope {
            self.acting_on(own);
        }
        Ok(scope)
    }

    /// The tenant a listing covers: the one asked for, which must be in scope, or the
    /// caller's own.
    pub fn list_scope(
        &self,
        action: Action,
        asked: Option<TenantId>,
    ) -> Result<Option<TenantId>, ApiError> {
        match (self.scope(action)?, asked) {
            (Some(own), Some(asked)) if own != &asked => Err(ApiError::Forbidden(format!(
                "this key is bound to another tenant than {asked}"
            ))),
            (Some(own), _) => Ok(Some(own.clone())),
            (None, asked) => Ok(asked),
        }
    }
}

/// Admits a request that wants to do `action`: authenticates its key (401, and a draw
/// from the client address's budget when that fails), draws from the key's budget for
/// the action (429), then checks that the key's role may do it at all (403). Whether
/// the tenant named in the body is the key's is for the handler to ask, once parsed.
pub(crate) async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
    action: Action,
) -> Result<Caller, ApiError> {
    let context = extensions
        .get::<RequestContext>()
        .cloned()
        .unwrap_or_default();
    let principal = match authenticate(headers, state) {
        Ok(principal) => principal,
        Err(refusal) => {
            // Failed authentications draw from the client address's budget, so that
            // guessing keys is slow.
            let client = extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            if let Some(ip) = client {
                check_rate(
                    state,
                    &context,
                    RateClass::Unauthenticated,
                    Subject::Address(ip),
                    None,
                )
                .await?;
            }
            return Err(refusal);
        }
    };
    if action == Action::Resolve {
        return Caller::admit_resolve(state, principal, context);
    }
    context.authenticated(&principal);
    let tenant = principal.grant.tenant();
    check_rate(
        state,
        &context,
        action.rate_class(),
        subject_of(&principal),
        tenant,
    )
    .await?;
    let caller = Caller { principal, context };
    caller.require(action)?;
    Ok(caller)
}

impl Caller {
    /// `principal` as the caller of a resolve, once its budgets allow it and its role
    /// may. Resolve's budgets never leave memory, so this does not wait: the resolve
    /// fast path's way in, and [`admit`]'s for resolve.
    pub(crate) fn admit_resolve(
        state: &AppState,
        principal: Principal,
        context: RequestContext,
    ) -> Result<Self, ApiError> {
        context.authenticated(&principal);
        let decision = state.limiter.check(
            RateClass::Resolve,
            subject_of(&principal),
            principal.grant.tenant(),
        );
        settle(state, &context, RateClass::Resolve, decision)?;
        let caller = Caller { principal, context };
        caller.require(Action::Resolve)?;
        Ok(caller)
    }
}

/// For an endpoint open to anyone that shows more to an admin: whether the request
/// presents an admin key. No key is no admin; a key presented is admitted as any other
/// (a bad one is a 401, and a draw from the address's budget).
pub(crate) async fn presents_admin(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<bool, ApiError> {
    if !headers.contains_key(AUTHORIZATION) {
        return Ok(false);
    }
    let caller = admit(state, headers, extensions, Action::ReadRoutes).await?;
    Ok(matches!(caller.grant(), Grant::Admin))
}

/// A request that reached its handler without admission: a wiring mistake.
#[derive(Debug, thiserror::Error)]
#[error("the operation was routed without its admission step")]
struct NotAdmitted;

/// The caller admitted by [`admit`] before the handler ran.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .remove::<Caller>()
            .ok_or_else(|| ApiError::internal("finding the admitted caller", NotAdmitted))
    }
}

/// The budget a key draws from.
fn subject_of(principal: &Principal) -> Subject {
    principal.key_id.map_or(Subject::BootstrapKey, Subject::Key)
}

/// The principal of the bearer key in `headers`; 401 without one that is live.
pub(crate) fn authenticate(
    headers: &(impl RequestHead + ?Sized),
    state: &AppState,
) -> Result<Principal, ApiError> {
    let header = headers.first(&AUTHORIZATION).ok_or(ApiError::Unauthorized(
        "an Authorization: Bearer <key> header is required",
    ))?;
    let presented = crate::wire::text(header)
        .and_then(|v| {
            let (scheme, key) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        })
        .filter(|key| !key.is_empty())
        .ok_or(ApiError::Unauthorized(
            "the Authorization header must be Bearer <key>",
        ))?;
    state
        .keys
        .authenticate(presented)
        .ok_or(ApiError::Unauthorized("the key is not valid"))
}

/// Draws from `subject`'s budget and, for a key bound to a `tenant`, from the tenant's
/// too; a refusal by either is a 429, an allowance sets the headers of the tighter.
///
/// With Redis, every class but resolve draws from fleet-wide budgets (resolve never
/// leaves memory, so its budgets are per instance); while Redis is unusable, from this
/// instance's own buckets.
async fn check_rate(
    state: &AppState,
    context: &RequestContext,
    class: RateClass,
    subject: Subject,
    tenant: Option<&TenantId>,
) -> Result<(), ApiError> {
    let shared = match &state.redis {
        Some(redis) if class != RateClass::Resolve => {
            match redis
                .rate_limit(&state.config.rate_limits, class, subject, tenant)
                .await
            {
                Ok(decision) => Some(decision),
                Err(tm_redis::Unavailable) => {
                    state.metrics.observe_redis_fallback("rate_limit");
                    None
                }
            }
        }
        _ => None,
    };
    let decision = match shared {
        Some(decision) => decision,
        None => state.limiter.check(class, subject, tenant),
    };
    settle(state, context, class, decision)
}

/// What a budget's decision means for the request: 429 when refused; either way the
/// answer carries the budget's headers.
fn settle(
    state: &AppState,
    context: &RequestContext,
    class: RateClass,
    decision: Option<RateDecision>,
) -> Result<(), ApiError> {
    let Some(decision) = decision else {
        return Ok(());
    };
    context.set_rate(decision);
    if decision.allowed {
        Ok(())
    } else {
        state.metrics.observe_rate_limited(class.as_str());
        Err(ApiError::RateLimited {
            retry_after: decision.retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, tenant: Option<&str>) -> Caller {
        let tenant = tenant.map(|t| TenantId::parse(t).expect("valid"));
        Caller {
            principal: Principal {
                key_id: None,
                grant: Grant::new(role, tenant).expect("valid grant"),
            },
            context: RequestContext::default(),
        }
    }

    #[test]
    fn the_policy_table() {
        let acme = TenantId::parse("acme").expect("valid");
        let globex = TenantId::parse("globex").expect("valid");
        let admin = caller(Role::Admin, None);
        let boss = caller(Role::TenantAdmin, Some("acme"));
        let reader = caller(Role::Reader, Some("acme"));
        for action in [
            Action::Resolve,
            Action::ReadRoutes,
            Action::WriteRoutes,
            Action::ManageKeys,
        ] {
            assert!(admin.authorize(action, &globex).is_ok());
            assert!(boss.authorize(action, &acme).is_ok());
            assert!(boss.authorize(action, &globex).is_err());
            assert!(reader.authorize(action, &globex).is_err());
        }
        assert!(reader.authorize(Action::Resolve, &acme).is_ok());
        assert!(reader.authorize(Action::ReadRoutes, &acme).is_ok());
        assert!(reader.authorize(Action::WriteRoutes, &acme).is_err());
        assert!(reader.authorize(Action::ManageKeys, &acme).is_err());
        assert_eq!(admin.scope(Action::ReadRoutes).expect("ok"), None);
        assert_eq!(reader.scope(Action::ReadRoutes).expect("ok"), Some(&acme));
        assert!(reader
            .list_scope(Action::ReadRoutes, Some(globex.clone()))
            .is_err());
        assert_eq!(
            reader.list_scope(Action::ReadRoutes, None).expect("ok"),
            Some(acme.clone())
        );
        assert_eq!(
            admin
                .list_scope(Action::ReadRoutes, Some(globex.clone()))
                .expect("ok"),
            Some(globex)
        );
    }
}
