//! Request coalescing: concurrent calls for the same key share one execution.
//!
//! A flight's entry lives exactly as long as someone takes part in it: the last caller
//! to leave, by finishing or by being cancelled, removes it. Keys chosen by clients
//! (cursors, filters) therefore leave nothing behind when clients hang up.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

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

impl<K: Hash + Eq, V> Singleflight<K, V> {
    fn calls(&self) -> MutexGuard<'_, HashMap<K, Arc<OnceCell<V>>>> {
        // Every change to the map is one insert or one remove: a panic elsewhere while
        // holding the lock leaves it consistent.
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keys with a flight under way.
    pub fn in_flight(&self) -> usize {
        self.calls().len()
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Singleflight<K, V> {
    /// Runs `work` for `key`, unless a call for `key` is already running, in which case
    /// its result is shared. If the running call is cancelled, a waiter takes over with
    /// its own `work`; if nobody waits, the flight is forgotten and the next call for
    /// `key` starts afresh.
    pub async fn run<F, Fut>(&self, key: K, work: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = V>,
    {
        let cell = self.calls().entry(key.clone()).or_default().clone();
        let seat = Seat {
            flights: self,
            key,
            cell: Some(cell),
        };
        let value = seat.cell().get_or_init(work).await.clone();
        drop(seat);
        value
    }
}

/// One caller's part in a flight. Leaving it (on completion, or when the caller's
/// future is dropped) removes the flight's entry if the flight is over, or if no one
/// else takes part in it any more.
struct Seat<'a, K: Hash + Eq, V> {
    flights: &'a Singleflight<K, V>,
    key: K,
    /// `Some` until dropped.
    cell: Option<Arc<OnceCell<V>>>,
}

impl<K: Hash + Eq, V> Seat<'_, K, V> {
    fn cell(&self) -> &OnceCell<V> {
        self.cell.as_ref().expect("taken only on drop")
    }
}

impl<K: Hash + Eq, V> Drop for Seat<'_, K, V> {
    fn drop(&mut self) {
        let Some(cell) = self.cell.take() else {
            return;
        };
        let mut calls = self.flights.calls();
        let current = calls.get(&self.key).filter(|c| Arc::ptr_eq(c, &cell));
        // Counted under the lock, which every caller takes to join a flight and to leave
        // it (this one's handle is released before the lock): two is the map's and ours.
        if current.is_some_and(|c| c.initialized() || Arc::strong_count(c) == 2) {
            calls.remove(&self.key);
        }
        drop(cell);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

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
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_flight_leaves_nothing_behind() {
        let flights = Singleflight::<String, usize>::default();
        for cursor in 0..100 {
            let slow = flights.run(format!("cursor-{cursor}"), || async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                1
            });
            // The client hangs up before the database answers.
            assert!(tokio::time::timeout(Duration::from_millis(10), slow)
                .await
                .is_err());
        }
        assert_eq!(
            flights.in_flight(),
            0,
            "no entry kept for abandoned flights"
        );
        assert_eq!(flights.run("cursor-0".into(), || async { 7 }).await, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_takes_over_when_the_leader_is_cancelled() {
        let flights = Arc::new(Singleflight::<&str, usize>::default());
        let leader = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run("k", || async {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        1
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        let waiter = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run("k", || async {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        2
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(
            flights.in_flight(),
            1,
            "the waiter joined the leader's flight"
        );
        leader.abort();
        assert!(leader.await.expect_err("aborted").is_cancelled());
        assert_eq!(flights.in_flight(), 1, "the waiter still takes part");
        assert_eq!(
            waiter.await.expect("waiter"),
            2,
            "the waiter ran its own work"
        );
        assert_eq!(flights.in_flight(), 0);
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
