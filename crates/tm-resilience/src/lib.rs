//! Guards that keep the registry answering under load and faults: rate limits (GCRA),
//! the database circuit breaker, bulkheads, request coalescing and retries with backoff. Shared, fleet-wide limits plug in behind the same [`RateLimiter`] trait.

mod breaker;
mod bulkhead;
mod rate_limit;
mod retry;
mod singleflight;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, Ticket};
pub use bulkhead::{Bulkhead, Full, Slot};
pub use rate_limit::{LocalRateLimiter, RateClass, RateDecision, RateLimiter, Subject};
pub use retry::{retry, RetryPolicy};
pub use singleflight::Singleflight;
