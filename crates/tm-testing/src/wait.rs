//! Waiting on a condition rather than for a while: poll it until it holds or the time
//! allowed runs out, and say how long it took.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again: short, as some tests report how long a change
/// took to show.
const POLL: Duration = Duration::from_millis(5);
const POLL_BLOCKING: Duration = Duration::from_millis(50);

/// Polls `check` until it holds; how long it took. Panics naming `what` if it does not
/// hold within `within` (checked once at least, so `Duration::ZERO` asserts it now).
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(POLL).await;
    }
    started.elapsed()
}

/// [`eventually`] for a condition checked by blocking calls, off any runtime. Checked
/// less often: each check runs external programs (`redis-cli`).
pub fn eventually_blocking(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(POLL_BLOCKING);
    }
}
