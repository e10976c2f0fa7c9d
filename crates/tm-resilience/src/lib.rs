//! Guards that keep the registry answering under load: per-key and per-client rate
//! limits (GCRA). Shared, fleet-wide limits plug in behind the same [`RateLimiter`] trait.

mod rate_limit;

pub use rate_limit::{
    LocalRateLimiter, Quota, QuotaParseError, RateClass, RateDecision, RateLimiter, RateLimits,
    Subject,
};
