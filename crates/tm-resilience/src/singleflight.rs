//! Request coalescing: concurrent calls for the same key share one execution.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

#[derive(Debug)]
pub struct Singleflight<K, V> {
    calls: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K, V> Default for Singleflight<K, V> {
    fn default() -> Self {
        Self {
            calls: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Singleflight<K, V> {
    /// Runs `work` for `key`, unless a call for `key` is already running, in which case
    /// its result is shared. If the running call is cancelled, a waiter takes over.
    pub async fn run<F, Fut>(&self, key: K, work: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = V>,
    {
        let cell = {
            let mut calls = self
                .calls
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            calls.entry(key.clone()).or_default().clone()
        };
        let value = cell.get_or_init(work).await.clone();
        let mut calls = self
            .calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if calls
            .get(&key)
            .is_some_and(|current| Arc::ptr_eq(current, &cell))
        {
            calls.remove(&key);
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn fifty_concurrent_calls_run_once() {
        let flights = Arc::new(Singleflight::<&str, usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let calls = (0..50).map(|_| {
            let (flights, runs) = (flights.clone(), runs.clone());
            tokio::spawn(async move {
                flights
                    .run("route-1", || async {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        runs.fetch_add(1, Ordering::SeqCst) + 100
                    })
                    .await
            })
        });
        let handles: Vec<_> = calls.collect();
        let results = futures_join(handles.into_iter()).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(results.iter().all(|r| *r == 100));
        // Once finished, the next call runs again.
        assert_eq!(flights.run("route-1", || async { 7 }).await, 7);
    }

    async fn futures_join(
        handles: impl Iterator<Item = tokio::task::JoinHandle<usize>>,
    ) -> Vec<usize> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("task"));
        }
        out
    }
}
