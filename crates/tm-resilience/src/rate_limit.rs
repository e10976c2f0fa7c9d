//! Rate limits by endpoint class, per API key and per tenant (all its keys together) —
//! or per client address for requests that fail to authenticate (a brute-force guard).
//! Local limits use governor's GCRA; [`RateLimiter`] is the seam for a shared store
//! across instances. The quotas are settings ([`tm_config::RateLimits`]); this module
//! turns them into budgets.

use std::net::IpAddr;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::NotUntil;
use tm_config::{Quota, RateLimits};
use tm_domain::{KeyId, TenantId};

/// Which budget a request draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateClass {
    Resolve,
    Read,
    Write,
    Keys,
    /// Requests without a valid key, per client address.
    Unauthenticated,
}

impl RateClass {
    pub const ALL: [RateClass; 5] = [
        RateClass::Resolve,
        RateClass::Read,
        RateClass::Write,
        RateClass::Keys,
        RateClass::Unauthenticated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RateClass::Resolve => "resolve",
            RateClass::Read => "read",
            RateClass::Write => "write",
            RateClass::Keys => "keys",
            RateClass::Unauthenticated => "unauthenticated",
        }
    }
}

/// Whose budget: a key, the operator's bootstrap key, or a client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    Key(KeyId),
    BootstrapKey,
    Address(IpAddr),
}

impl RateClass {
    /// This class's quota in `limits`.
    pub fn quota(self, limits: &RateLimits) -> Quota {
        match self {
            RateClass::Resolve => limits.resolve,
            RateClass::Read => limits.read,
            RateClass::Write => limits.write,
            RateClass::Keys => limits.keys,
            RateClass::Unauthenticated => limits.unauthenticated,
        }
    }

    /// This class's quota for all the keys of one tenant together; `None` for requests
    /// without a key, which have no tenant.
    pub fn tenant_quota(self, limits: &RateLimits) -> Option<Quota> {
        match self {
            RateClass::Resolve => Some(limits.tenant_resolve),
            RateClass::Read => Some(limits.tenant_read),
            RateClass::Write => Some(limits.tenant_write),
            RateClass::Keys => Some(limits.tenant_keys),
            RateClass::Unauthenticated => None,
        }
    }

    /// Where this class's budgets are in arrays of one per class.
    fn index(self) -> usize {
        self as usize
    }
}

impl Subject {
    /// Whether `limits` exempt this subject from every limit.
    pub fn is_exempt(&self, limits: &RateLimits) -> bool {
        match self {
            Subject::Key(id) => limits.exempt_keys.contains(id),
            Subject::BootstrapKey => false,
            Subject::Address(ip) => limits.exempt_networks.iter().any(|net| net.contains(ip)),
        }
    }
}

/// The outcome of one check, with what the `X-Rate-Limit-*` headers report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct RateDecision {
    pub allowed: bool,
    /// Requests allowed per period (`X-Rate-Limit-Limit`).
    pub limit: u32,
    /// Requests left in the current burst (`X-Rate-Limit-Remaining`).
    pub remaining: u32,
    /// Time until the budget is whole again (`X-Rate-Limit-Reset`).
    pub reset_after: Duration,
    /// When refused: time until one more request is allowed (`Retry-After`).
    pub retry_after: Duration,
}

impl RateDecision {
    /// A decision for `quota` from GCRA's outcome: `remaining` of the burst left after
    /// an allowed request, or, refused, `retry_after` until the next one.
    pub fn of(quota: Quota, outcome: Result<u32, Duration>) -> Self {
        let per_request = quota.period / quota.count.get();
        let limit = quota.count.get();
        match outcome {
            Ok(remaining) => RateDecision {
                allowed: true,
                limit,
                remaining,
                reset_after: per_request * (limit - remaining.min(limit)),
                retry_after: Duration::ZERO,
            },
            Err(retry_after) => RateDecision {
                allowed: false,
                limit,
                remaining: 0,
                reset_after: per_request * limit,
                retry_after,
            },
        }
    }

    /// Of a key's decision and its tenant's, the one to answer with: a refusal if
    /// either refused (the longer wait if both did), else the budget with fewer requests
    /// left.
    pub fn tighter(self, other: RateDecision) -> RateDecision {
        match (self.allowed, other.allowed) {
            (false, true) => self,
            (true, false) => other,
            (false, false) if other.retry_after > self.retry_after => other,
            (false, false) => self,
            (true, true) if other.remaining < self.remaining => other,
            (true, true) => self,
        }
    }
}

/// A rate limit store. The local one keeps budgets in this process; a shared one keeps
/// them where every instance sees them.
pub trait RateLimiter: Send + Sync + 'static {
    /// Draws one request of `class` from `subject`'s budget and, for a key bound to a
    /// `tenant`, from that tenant's budget too; answers with the tighter of the two
    /// (see [`RateDecision::tighter`]). A request its key's budget refuses draws
    /// nothing from the tenant's, so a key that exceeds its own budget cannot spend its
    /// tenant's. `None`: not limited.
    fn check(
        &self,
        class: RateClass,
        subject: Subject,
        tenant: Option<&TenantId>,
    ) -> Option<RateDecision>;

    /// Forgets budgets that are whole again, to bound memory.
    fn forget_idle(&self) {}
}

type Keyed = governor::RateLimiter<
    Subject,
    DefaultKeyedStateStore<Subject>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// Tenants' budgets, keyed by the tenant itself: a lookup borrows the id, so a
/// request of a tenant already seen allocates nothing.
type TenantKeyed = governor::RateLimiter<
    TenantId,
    DefaultKeyedStateStore<TenantId>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// Budgets kept in this process.
pub struct LocalRateLimiter {
    limits: RateLimits,
    /// One limiter per class, by [`RateClass::index`].
    keys: [Keyed; RateClass::ALL.len()],
    /// One per class that tenants have a budget for, by [`RateClass::index`].
    tenants: [Option<TenantKeyed>; RateClass::ALL.len()],
    clock: DefaultClock,
}

/// GCRA parameters for `quota`: a request every `period / count`, bursts of `count`.
fn gcra(quota: Quota) -> governor::Quota {
    let per_request = quota.period / quota.count.get();
    governor::Quota::with_period(per_request.max(Duration::from_nanos(1)))
        .expect("a positive period")
        .allow_burst(quota.count)
}

impl LocalRateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        let keys = RateClass::ALL.map(|class| {
            governor::RateLimiter::keyed(gcra(class.quota(&limits)))
                .with_middleware::<StateInformationMiddleware>()
        });
        let tenants = RateClass::ALL.map(|class| {
            class.tenant_quota(&limits).map(|quota| {
                governor::RateLimiter::keyed(gcra(quota))
                    .with_middleware::<StateInformationMiddleware>()
            })
        });
        Self {
            limits,
            keys,
            tenants,
            clock: DefaultClock::default(),
        }
    }

    /// The decision of one GCRA check against `quota`.
    fn decide(
        &self,
        quota: Quota,
        outcome: Result<StateSnapshot, NotUntil<<DefaultClock as Clock>::Instant>>,
    ) -> RateDecision {
        RateDecision::of(
            quota,
            outcome
                .map(|state| state.remaining_burst_capacity())
                .map_err(|not_until| not_until.wait_time_from(self.clock.now())),
        )
    }
}

impl RateLimiter for LocalRateLimiter {
    fn check(
        &self,
        class: RateClass,
        subject: Subject,
        tenant: Option<&TenantId>,
    ) -> Option<RateDecision> {
        if subject.is_exempt(&self.limits) {
            return None;
        }
        let quota = class.quota(&self.limits);
        let own = self.decide(quota, self.keys[class.index()].check_key(&subject));
        if !own.allowed {
            return Some(own);
        }
        let (Some(tenant), Some(limiter), Some(quota)) = (
            tenant,
            self.tenants[class.index()].as_ref(),
            class.tenant_quota(&self.limits),
        ) else {
            return Some(own);
        };
        let shared = self.decide(quota, limiter.check_key(tenant));
        Some(own.tighter(shared))
    }

    fn forget_idle(&self) {
        for limiter in &self.keys {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        for limiter in self.tenants.iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn per_minute(count: u32) -> Quota {
        Quota {
            count: NonZeroU32::new(count).expect("positive"),
            period: Duration::from_secs(60),
        }
    }

    /// `count` a minute per key, ten keys' worth per tenant.
    fn limits(count: u32) -> RateLimits {
        let quota = per_minute(count);
        let tenant = per_minute(10 * count);
        RateLimits {
            resolve: quota,
            read: quota,
            write: quota,
            keys: quota,
            unauthenticated: quota,
            tenant_resolve: tenant,
            tenant_read: tenant,
            tenant_write: tenant,
            tenant_keys: tenant,
            exempt_keys: Vec::new(),
            exempt_networks: vec!["10.0.0.0/8".parse().expect("cidr")],
            max_keys_per_tenant: NonZeroU32::new(10).expect("positive"),
        }
    }

    #[test]
    fn classes_index_their_own_budgets() {
        for (i, class) in RateClass::ALL.into_iter().enumerate() {
            assert_eq!(class.index(), i, "{class:?}");
        }
    }

    #[test]
    fn a_budget_runs_out_and_says_when_to_retry() {
        let limiter = LocalRateLimiter::new(limits(3));
        let key = Subject::Key(KeyId::generate());
        let remaining: Vec<u32> = (0..3)
            .map(|_| {
                limiter
                    .check(RateClass::Write, key, None)
                    .expect("limited")
                    .remaining
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.check(RateClass::Write, key, None).expect("limited");
        assert!(!refused.allowed);
        assert!(
            refused.retry_after > Duration::from_secs(15)
                && refused.retry_after <= Duration::from_secs(20)
        );
        // Other classes and other keys have budgets of their own.
        assert!(
            limiter
                .check(RateClass::Read, key, None)
                .expect("limited")
                .allowed
        );
        assert!(
            limiter
                .check(RateClass::Write, Subject::Key(KeyId::generate()), None)
                .expect("limited")
                .allowed
        );
    }

    #[test]
    fn exempt_networks_are_not_limited() {
        let limiter = LocalRateLimiter::new(limits(1));
        let inside = Subject::Address("10.1.2.3".parse().expect("ip"));
        for _ in 0..5 {
            assert!(limiter
                .check(RateClass::Unauthenticated, inside, None)
                .is_none());
        }
        let outside = Subject::Address("192.0.2.1".parse().expect("ip"));
        assert!(
            limiter
                .check(RateClass::Unauthenticated, outside, None)
                .expect("limited")
                .allowed
        );
        assert!(
            !limiter
                .check(RateClass::Unauthenticated, outside, None)
                .expect("limited")
                .allowed
        );
    }

    #[test]
    fn the_keys_of_a_tenant_share_its_budget() {
        let mut limits = limits(3);
        limits.tenant_read = per_minute(4);
        let limiter = LocalRateLimiter::new(limits);
        let acme = TenantId::parse("acme").expect("valid");
        let (a, b) = (
            Subject::Key(KeyId::generate()),
            Subject::Key(KeyId::generate()),
        );
        let read = |key, tenant| {
            limiter
                .check(RateClass::Read, key, tenant)
                .expect("limited")
        };
        // The headers tell of the budget with fewer requests left: the key's (3 a
        // minute) while the tenant's (4) has more, then the tenant's.
        let seen: Vec<(u32, u32)> = [a, a, b, b]
            .into_iter()
            .map(|key| {
                let decision = read(key, Some(&acme));
                assert!(decision.allowed);
                (decision.limit, decision.remaining)
            })
            .collect();
        assert_eq!(seen, [(3, 2), (3, 1), (4, 1), (4, 0)]);
        // Each key is within its own budget, the tenant's is spent.
        for key in [a, b] {
            let refused = read(key, Some(&acme));
            assert!(!refused.allowed);
            assert_eq!(refused.limit, 4);
            assert!(refused.retry_after > Duration::from_secs(5));
        }
        // A key refused by its own budget draws nothing from its tenant's.
        let mut limits = self::limits(1);
        limits.tenant_read = per_minute(2);
        let limiter = LocalRateLimiter::new(limits);
        let (c, d) = (
            Subject::Key(KeyId::generate()),
            Subject::Key(KeyId::generate()),
        );
        for _ in 0..5 {
            let _ = limiter.check(RateClass::Read, c, Some(&acme));
        }
        assert!(
            limiter
                .check(RateClass::Read, d, Some(&acme))
                .expect("limited")
                .allowed
        );
        // Another tenant, and a key without one, have budgets of their own.
        let globex = TenantId::parse("globex").expect("valid");
        let e = Subject::Key(KeyId::generate());
        assert!(
            limiter
                .check(RateClass::Read, e, Some(&globex))
                .expect("limited")
                .allowed
        );
        assert!(
            limiter
                .check(RateClass::Read, Subject::BootstrapKey, None)
                .expect("limited")
                .allowed
        );
    }
}
