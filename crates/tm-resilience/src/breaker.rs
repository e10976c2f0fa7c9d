//! The database circuit breaker: closed, open, half-open.
//!
//! It opens on pool pressure (usage at or over a threshold, or too many waiters) and on
//! consecutive failures; after a cool-down it lets one probe through (half-open), whose
//! outcome closes or re-opens it. Callers ask [`CircuitBreaker::admit`] before touching
//! the database and report the outcome on the returned [`Ticket`].

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
/// [`Ticket::failed`]. A probe ticket dropped unsettled counts as a failure.
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

    /// Settles without a verdict (the outcome said nothing about the database's health).
    pub fn neutral(mut self) {
        self.settled = true;
        if self.probe {
            self.breaker.on_success(true);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.breaker.on_failure(true);
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

    #[test]
    fn an_abandoned_probe_reopens_it() {
        let b = breaker(Duration::ZERO);
        b.observe_pool(100.0, 0);
        drop(b.admit().expect("probe"));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit().is_some(), "and a new probe may follow");
    }
}
