//! The guards on the database path: circuit breaker, bulkheads, time-outs, requests in
//! flight and the read cache.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::render::Lines;

/// Limits that keep the database path answering under load and faults. Read as they
/// are (every field is a plain number or duration) and checked in place.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct GuardConfig {
    /// Pool usage (percent) at which the database circuit breaker opens.
    pub breaker_usage_percent: f64,
    /// Tasks waiting for a connection at which the breaker opens.
    pub breaker_max_waiting: u32,
    /// How long pool pressure must last before it opens the breaker.
    #[serde(with = "humantime_serde")]
    pub breaker_pressure_for: Duration,
    /// Consecutive database failures or timeouts at which the breaker opens.
    pub breaker_failures: u32,
    #[serde(with = "humantime_serde")]
    pub breaker_open_for: Duration,
    /// Concurrent database reads (list, get).
    pub bulkhead_reads: u32,
    /// Concurrent ordinary writes.
    pub bulkhead_writes: u32,
    /// Concurrent critical writes (activate, deactivate).
    pub bulkhead_critical: u32,
    /// How long a request waits for a bulkhead slot before 503.
    #[serde(with = "humantime_serde")]
    pub bulkhead_wait: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout_read: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout_write: Duration,
    /// In-flight API requests other than resolve beyond which new ones are shed with
    /// 503 at once.
    pub max_in_flight: u32,
    /// The same for resolve, which has a budget of its own: writes and slow clients
    /// holding every other slot never starve it.
    pub resolve_max_in_flight: u32,
    /// Watches (long polls and event streams of `/api/v1/watch`) held at once, beyond
    /// which new ones get 503 at once: a budget of their own, as they are held for long.
    pub watch_max_in_flight: u32,
    /// How long a list or get answer is served from cache.
    #[serde(with = "humantime_serde")]
    pub read_cache_ttl: Duration,
    /// Answers the read caches hold at most (get and list, half each).
    pub read_cache_entries: u64,
    /// Bytes the read caches hold at most, by an estimate of each answer's size (get and
    /// list, half each): list answers of up to 1,000 routes under client-chosen cursors
    /// are bounded by their size, not only by their number.
    pub read_cache_bytes: u64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            breaker_usage_percent: 85.0,
            breaker_max_waiting: 5,
            breaker_pressure_for: Duration::from_secs(1),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(5),
            bulkhead_reads: 4,
            bulkhead_writes: 4,
            bulkhead_critical: 2,
            bulkhead_wait: Duration::from_secs(2),
            timeout_read: Duration::from_secs(2),
            timeout_write: Duration::from_secs(5),
            max_in_flight: 4096,
            resolve_max_in_flight: 4096,
            watch_max_in_flight: 4096,
            read_cache_ttl: Duration::from_secs(1),
            read_cache_entries: 10_000,
            read_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

impl GuardConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        if !(self.breaker_usage_percent > 0.0 && self.breaker_usage_percent <= 100.0) {
            problems.add("breaker_usage_percent", "must be above 0 and at most 100");
        }
        problems.at_least_one(&[
            ("breaker_max_waiting", self.breaker_max_waiting.into()),
            ("breaker_failures", self.breaker_failures.into()),
            ("bulkhead_reads", self.bulkhead_reads.into()),
            ("bulkhead_writes", self.bulkhead_writes.into()),
            ("bulkhead_critical", self.bulkhead_critical.into()),
            ("max_in_flight", self.max_in_flight.into()),
            ("resolve_max_in_flight", self.resolve_max_in_flight.into()),
            ("watch_max_in_flight", self.watch_max_in_flight.into()),
        ]);
        problems.positive(&[
            ("bulkhead_wait", self.bulkhead_wait),
            ("timeout_read", self.timeout_read),
            ("timeout_write", self.timeout_write),
        ]);
        if self.bulkhead_wait < Duration::from_secs(1) {
            problems.add(
                "bulkhead_wait",
                "must be at least 1s, so that bursts of writers wait rather than fail",
            );
        }
    }

    /// The guards' lines of `check-config`.
    pub(crate) fn render(&self, out: &mut Lines) {
        out.plain("breaker_usage_percent", self.breaker_usage_percent);
        out.plain("breaker_max_waiting", self.breaker_max_waiting);
        out.duration("breaker_pressure_for", self.breaker_pressure_for);
        out.plain("breaker_failures", self.breaker_failures);
        out.duration("breaker_open_for", self.breaker_open_for);
        out.plain("bulkhead_reads", self.bulkhead_reads);
        out.plain("bulkhead_writes", self.bulkhead_writes);
        out.plain("bulkhead_critical", self.bulkhead_critical);
        out.duration("bulkhead_wait", self.bulkhead_wait);
        out.duration("timeout_read", self.timeout_read);
        out.duration("timeout_write", self.timeout_write);
        out.plain("max_in_flight", self.max_in_flight);
        out.plain("resolve_max_in_flight", self.resolve_max_in_flight);
        out.plain("watch_max_in_flight", self.watch_max_in_flight);
        out.duration("read_cache_ttl", self.read_cache_ttl);
        out.plain("read_cache_entries", self.read_cache_entries);
        out.plain("read_cache_bytes", self.read_cache_bytes);
    }
}
