//! The database circuit breaker: closed, open, half-open.
//!
//! It opens on pool pressure (usage at or over a threshold, or too many waiters) and on
//! consecutive failures; after a cool-down it lets one probe through (half-open), whose
//! outcome closes or re-opens it. Callers ask [`CircuitBreaker::admit`] before touching
//! the database and report the outcome on the returned [`Ticket`].
//!
//! Only the database decides a probe: a probe abandoned by its caller (a client that
//! hung up) or settled without a verdict frees the probe slot and leaves the breaker
//! half-open for the next caller to probe. Time is tokio's, so tests can pause it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct BreakerConfig {
    /// Pool usage (in use / max, percent) at which the breaker opens.
    pub usage_percent: f64,
    /// Tasks waiting for a connection at which the breaker opens.
    pub max_waiting: u32,
    /// How long pressure must last before it opens the breaker. Connections released
    /// under heavy load return to the pool a moment later, so a busy pool briefly looks
    /// full without being so.
    pub pressure_for: Duration,
    /// Consecutive failures or timeouts at which the breaker opens.
    pub failures: u32,
    /// How long it stays open before letting a probe through.
    pub open_for: Duration,
}

/// The state, with the numbers of `circuit_breaker_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    opened_at: Instant,
    probing: bool,
    reason: &'static str,
    /// Since when every observation has shown pressure.
    pressure_since: Option<Instant>,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    /// What it guards, for the logs.
    name: &'static str,
    config: BreakerConfig,
    inner: Mutex<Inner>,
    /// The state, readable without the lock.
    state: AtomicU8,
}

/// Permission to use the database, to be settled with [`Ticket::succeeded`] or
/// [`Ticket::failed`] once the database has answered (or failed to), or with
/// [`Ticket::neutral`] when it was not asked. A ticket dropped unsettled says nothing
/// about the database either: a dropped probe only frees the probe slot.
#[derive(Debug)]
#[must_use]
pub struct Ticket<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    settled: bool,
}

impl Ticket<'_> {
    pub fn succeeded(mut self) {
        self.settled = true;
        self.breaker.on_success(self.probe);
    }

    pub fn failed(mut self) {
        self.settled = true;
        self.breaker.on_failure(self.probe);
    }

    /// Settles without a verdict: the database was not asked (e.g. a bulkhead was
    /// full), so its health is as unknown as before. A probe settled so neither closes
    /// nor re-opens the breaker; the next caller probes instead.
    pub fn neutral(mut self) {
        self.settled = true;
        if self.probe {
            self.breaker.release_probe();
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        // Abandoned: the caller went away before the database answered.
        if !self.settled && self.probe {
            self.breaker.release_probe();
        }
    }
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            name: "database",
            config,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                opened_at: Instant::now(),
                probing: false,
                reason: "",
                pressure_since: None,
            }),
            state: AtomicU8::new(BreakerState::Closed as u8),
        }
    }

    /// Names what it guards (`"database"` unless named).
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Relaxed) {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Why it last opened: `"pool pressure"` or `"failures"`.
    pub fn reason(&self) -> &'static str {
        self.lock().reason
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves consistent data: keep using it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, inner: &mut Inner, state: BreakerState) {
        if inner.state != state {
            tracing::warn!(
                breaker = self.name,
                from = inner.state.as_str(),
                to = state.as_str(),
                reason = inner.reason,
                "circuit breaker changed state"
            );
        }
        inner.state = state;
        self.state.store(state as u8, Ordering::Relaxed);
    }

    fn open(&self, inner: &mut Inner, reason: &'static str) {
        inner.reason = reason;
        inner.opened_at = Instant::now();
        inner.probing = false;
        self.set(inner, BreakerState::Open);
    }

    /// Opens the breaker if the pool has been under pressure for the configured time.
    pub fn observe_pool(&self, usage_percent: f64, waiting: u32) {
        let pressed =
            usage_percent >= self.config.usage_percent || waiting >= self.config.max_waiting;
        let mut inner = self.lock();
        if !pressed {
            inner.pressure_since = None;
            return;
        }
        let since = *inner.pressure_since.get_or_insert_with(Instant::now);
        if inner.state == BreakerState::Closed && since.elapsed() >= self.config.pressure_for {
            tracing::warn!(
                usage_percent,
                waiting,
                "database pool under sustained pressure"
            );
            inner.pressure_since = None;
            self.open(&mut inner, "pool pressure");
        }
    }

    /// `Some(ticket)` if the database may be used now; `None` while open.
    pub fn admit(&self) -> Option<Ticket<'_>> {
        let mut inner = self.lock();
        let probe = match inner.state {
            BreakerState::Closed => false,
            BreakerState::Open if inner.opened_at.elapsed() >= self.config.open_for => {
                self.set(&mut inner, BreakerState::HalfOpen);
                inner.probing = true;
                true
            }
            BreakerState::Open => return None,
            BreakerState::HalfOpen if inner.probing => return None,
            BreakerState::HalfOpen => {
                inner.probing = true;
                true
            }
        };
        Some(Ticket {
            breaker: self,
            probe,
            settled: false,
        })
    }

    /// Frees the probe slot of a probe that brought no verdict: still half-open.
    fn release_probe(&self) {
        let mut inner = self.lock();
        if inner.state == BreakerState::HalfOpen {
            inner.probing = false;
        }
    }

    fn on_success(&self, probe: bool) {
        let mut inner = self.lock();
        inner.failures = 0;
        if probe || inner.state == BreakerState::HalfOpen {
            inner.probing = false;
            self.set(&mut inner, BreakerState::Closed);
        }
    }

    fn on_failure(&self, probe: bool) {
        let mut inner = self.lock();
        inner.failures += 1;
        let tripped = inner.state == BreakerState::Closed && inner.failures >= self.config.failures;
        if probe || inner.state == BreakerState::HalfOpen || tripped {
            self.open(&mut inner, "failures");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_for: Duration) -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            usage_percent: 85.0,
            max_waiting: 5,
            pressure_for: Duration::ZERO,
            failures: 3,
            open_for,
        })
    }

    #[test]
    fn consecutive_failures_open_it_and_a_success_resets_the_count() {
        let b = breaker(Duration::from_secs(60));
        b.admit().expect("closed").failed();
        b.admit().expect("closed").failed();
        b.admit().expect("closed").succeeded();
        b.admit().expect("closed").failed();
        b.admit().expect("closed").failed();
        assert_eq!(b.state(), BreakerState::Closed);
        b.admit().expect("closed").failed();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit().is_none());
    }

    #[test]
    fn pool_pressure_opens_it() {
        let b = breaker(Duration::from_secs(60));
        b.observe_pool(84.9, 4);
        assert_eq!(b.state(), BreakerState::Closed);
        b.observe_pool(85.0, 0);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.reason(), "pool pressure");
        let b = breaker(Duration::from_secs(60));
        b.observe_pool(10.0, 5);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn only_sustained_pressure_opens_it() {
        let b = CircuitBreaker::new(BreakerConfig {
            usage_percent: 85.0,
            max_waiting: 5,
            pressure_for: Duration::from_millis(30),
            failures: 3,
            open_for: Duration::from_secs(60),
        });
        b.observe_pool(100.0, 0);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "a moment of pressure is not enough"
        );
        std::thread::sleep(Duration::from_millis(40));
        b.observe_pool(50.0, 0);
        b.observe_pool(100.0, 0);
        assert_eq!(b.state(), BreakerState::Closed, "relief resets the clock");
        std::thread::sleep(Duration::from_millis(40));
        b.observe_pool(100.0, 0);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn after_the_cool_down_one_probe_decides() {
        let b = breaker(Duration::ZERO);
        b.observe_pool(100.0, 0);
        let probe = b.admit().expect("a probe after the cool-down");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admit().is_none(), "only one probe at a time");
        probe.failed();
        assert_eq!(b.state(), BreakerState::Open);
        let probe = b.admit().expect("another probe");
        probe.succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    /// Open on failures, the cool-down of `open_for` over: the next caller probes.
    async fn cooled_down_after_failures(open_for: Duration) -> CircuitBreaker {
        let b = breaker(open_for);
        for _ in 0..3 {
            b.admit().expect("closed").failed();
        }
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(open_for).await;
        b
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_abandoned_by_its_caller_leaves_the_verdict_to_the_next_probe() {
        let b = cooled_down_after_failures(Duration::from_secs(5)).await;
        // A client that resets its request at each probe, before the database answers.
        for _ in 0..10 {
            let probe = async {
                let ticket = b.admit().expect("a probe after the cool-down");
                tokio::time::sleep(Duration::from_secs(1)).await; // the query
                ticket.succeeded();
            };
            assert!(tokio::time::timeout(Duration::from_millis(10), probe)
                .await
                .is_err());
            assert_eq!(
                b.state(),
                BreakerState::HalfOpen,
                "an abandoned probe is no failure"
            );
        }
        let probe = b
            .admit()
            .expect("the slot is free at once, no new cool-down");
        assert!(b.admit().is_none(), "still one probe at a time");
        probe.succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_did_not_reach_the_database_closes_nothing() {
        let b = cooled_down_after_failures(Duration::from_secs(5)).await;
        b.admit().expect("probe").neutral(); // e.g. its bulkhead was full
        assert_eq!(b.state(), BreakerState::HalfOpen, "no evidence, no closing");
        b.admit().expect("the next caller probes").failed();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit().is_none(), "a new cool-down");
        tokio::time::advance(Duration::from_secs(5)).await;
        b.admit().expect("probe").succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_neutral_outcome_while_closed_changes_nothing() {
        let b = breaker(Duration::from_secs(60));
        b.admit().expect("closed").failed();
        b.admit().expect("closed").failed();
        b.admit().expect("closed").neutral();
        b.admit().expect("closed").failed();
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "the failures were consecutive"
        );
    }
}
