//! Rate limits by endpoint class, per API key — or per client address for requests
//! that fail to authenticate (a brute-force guard). Local limits use governor's GCRA;
//! [`RateLimiter`] is the seam for a shared store across instances. The quotas are
//! settings ([`tm_config::RateLimits`]); this module turns them into budgets.

use std::net::IpAddr;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use tm_config::{Quota, RateLimits};
use tm_domain::KeyId;

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

/// A rate limit store. The local one keeps budgets in this process; a shared one keeps
/// them where every instance sees them.
pub trait RateLimiter: Send + Sync + 'static {
    /// Draws one request from `subject`'s budget for `class`. `None`: not limited.
    fn check(&self, class: RateClass, subject: Subject) -> Option<RateDecision>;

    /// Forgets budgets that are whole again, to bound memory.
    fn forget_idle(&self) {}
}

type Keyed = governor::RateLimiter<
    Subject,
    DefaultKeyedStateStore<Subject>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// Budgets kept in this process.
pub struct LocalRateLimiter {
    limits: RateLimits,
    classes: Vec<(RateClass, Keyed)>,
    clock: DefaultClock,
}

impl LocalRateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        let classes = RateClass::ALL
            .into_iter()
            .map(|class| {
                let quota = class.quota(&limits);
                let per_request = quota.period / quota.count.get();
                let gcra = governor::Quota::with_period(per_request.max(Duration::from_nanos(1)))
                    .expect("a positive period")
                    .allow_burst(quota.count);
                (
                    class,
                    governor::RateLimiter::keyed(gcra)
                        .with_middleware::<StateInformationMiddleware>(),
                )
            })
            .collect();
        Self {
            limits,
            classes,
            clock: DefaultClock::default(),
        }
    }
}

impl RateLimiter for LocalRateLimiter {
    fn check(&self, class: RateClass, subject: Subject) -> Option<RateDecision> {
        if subject.is_exempt(&self.limits) {
            return None;
        }
        let quota = class.quota(&self.limits);
        let limiter = &self.classes.iter().find(|(c, _)| *c == class)?.1;
        let per_request = quota.period / quota.count.get();
        Some(match limiter.check_key(&subject) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                RateDecision {
                    allowed: true,
                    limit: quota.count.get(),
                    remaining,
                    reset_after: per_request * (quota.count.get() - remaining),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                RateDecision {
                    allowed: false,
                    limit: quota.count.get(),
                    remaining: 0,
                    reset_after: per_request * quota.count.get(),
                    retry_after: wait,
                }
            }
        })
    }

    fn forget_idle(&self) {
        for (_, limiter) in &self.classes {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn limits(count: u32) -> RateLimits {
        let quota = Quota {
            count: NonZeroU32::new(count).expect("positive"),
            period: Duration::from_secs(60),
        };
        RateLimits {
            resolve: quota,
            read: quota,
            write: quota,
            keys: quota,
            unauthenticated: quota,
            exempt_keys: Vec::new(),
            exempt_networks: vec!["10.0.0.0/8".parse().expect("cidr")],
            max_keys_per_tenant: NonZeroU32::new(10).expect("positive"),
        }
    }

    #[test]
    fn a_budget_runs_out_and_says_when_to_retry() {
        let limiter = LocalRateLimiter::new(limits(3));
        let key = Subject::Key(KeyId::generate());
        let remaining: Vec<u32> = (0..3)
            .map(|_| {
                limiter
                    .check(RateClass::Write, key)
                    .expect("limited")
                    .remaining
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.check(RateClass::Write, key).expect("limited");
        assert!(!refused.allowed);
        assert!(
            refused.retry_after > Duration::from_secs(15)
                && refused.retry_after <= Duration::from_secs(20)
        );
        // Other classes and other keys have budgets of their own.
        assert!(
            limiter
                .check(RateClass::Read, key)
                .expect("limited")
                .allowed
        );
        assert!(
            limiter
                .check(RateClass::Write, Subject::Key(KeyId::generate()))
                .expect("limited")
                .allowed
        );
    }

    #[test]
    fn exempt_networks_are_not_limited() {
        let limiter = LocalRateLimiter::new(limits(1));
        let inside = Subject::Address("10.1.2.3".parse().expect("ip"));
        for _ in 0..5 {
            assert!(limiter.check(RateClass::Unauthenticated, inside).is_none());
        }
        let outside = Subject::Address("192.0.2.1".parse().expect("ip"));
        assert!(
            limiter
                .check(RateClass::Unauthenticated, outside)
                .expect("limited")
                .allowed
        );
        assert!(
            !limiter
                .check(RateClass::Unauthenticated, outside)
                .expect("limited")
                .allowed
        );
    }
}
