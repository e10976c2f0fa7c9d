//! Retries of transient failures: exponential backoff with full jitter, a bounded
//! number of attempts. The operation is re-run from scratch each time, so it holds no
//! pooled connection while this sleeps.

use std::future::Future;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The longest sleep before attempt `n` (1-based, after the first failure).
    fn ceiling(&self, n: u32) -> Duration {
        self.base
            .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX))
            .min(self.max)
    }
}

/// Runs `op` until it succeeds, fails permanently (`is_transient` false), or the
/// attempts are spent; returns the last result.
pub async fn retry<T, E, F, Fut>(
    policy: RetryPolicy,
    is_transient: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(err) if attempt < policy.attempts && is_transient(&err) => {
                let ceiling = policy.ceiling(attempt);
                // Full jitter: anywhere between zero and the ceiling.
                let sleep = ceiling.mul_f64(rand_fraction());
                tokio::time::sleep(sleep).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn rand_fraction() -> f64 {
    rand::random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const POLICY: RetryPolicy = RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(50),
        max: Duration::from_secs(1),
    };

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result: Result<u32, &str> = retry(
            POLICY,
            |_| true,
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n < 3 {
                    Err("busy")
                } else {
                    Ok(n)
                }
            },
        )
        .await;
        assert_eq!(result, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_fail_at_once_and_attempts_are_bounded() {
        let calls = AtomicU32::new(0);
        let permanent: Result<(), &str> = retry(
            POLICY,
            |e| *e == "busy",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("invalid")
            },
        )
        .await;
        assert_eq!(
            (permanent, calls.load(Ordering::SeqCst)),
            (Err("invalid"), 1)
        );
        calls.store(0, Ordering::SeqCst);
        let _: Result<(), &str> = retry(
            POLICY,
            |_| true,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("busy")
            },
        )
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn no_connection_is_held_while_waiting_to_retry() {
        // A one-connection "pool": each attempt takes the connection and gives it back
        // when it fails, before the backoff sleep.
        let pool = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let calls = AtomicU32::new(0);
        let watcher = {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut free_during_backoff = Vec::new();
                for _ in 0..20 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    free_during_backoff.push(pool.available_permits());
                }
                free_during_backoff
            })
        };
        let _: Result<(), &str> = retry(
            POLICY,
            |_| true,
            || async {
                let _connection = pool.acquire().await.expect("pool open");
                calls.fetch_add(1, Ordering::SeqCst);
                Err("connection reset")
            },
        )
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let seen = watcher.await.expect("watcher");
        assert!(
            seen.iter().all(|free| *free == 1),
            "a connection was held while sleeping: {seen:?}"
        );
    }

    #[test]
    fn the_ceiling_doubles_up_to_the_maximum() {
        let ceilings: Vec<u128> = (1..=6).map(|n| POLICY.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [50, 100, 200, 400, 800, 1000]);
    }
}
