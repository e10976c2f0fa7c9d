//! Bulkheads: a bounded number of concurrent operations per class, so that saturating
//! one class (slow listings, say) cannot starve another (activate). A caller waits a
//! bounded time for a slot, then is refused.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct Bulkhead {
    name: &'static str,
    slots: Arc<Semaphore>,
    capacity: usize,
    max_wait: Duration,
}

/// A slot, held until dropped.
#[derive(Debug)]
pub struct Slot(#[expect(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit);

/// No slot came free within the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    pub bulkhead: &'static str,
}

impl Bulkhead {
    pub fn new(name: &'static str, capacity: usize, max_wait: Duration) -> Self {
        Self {
            name,
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
            max_wait,
        }
    }

    /// Waits up to the configured time for a slot.
    pub async fn enter(&self) -> Result<Slot, Full> {
        let full = Full {
            bulkhead: self.name,
        };
        match tokio::time::timeout(self.max_wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot(permit)),
            _ => Err(full),
        }
    }

    /// A slot now, or refused at once.
    pub fn try_enter(&self) -> Result<Slot, Full> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(Slot)
            .map_err(|_| Full {
                bulkhead: self.name,
            })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Slots in use now.
    pub fn in_use(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_bulkhead_refuses_after_the_wait_and_others_are_untouched() {
        let reads = Bulkhead::new("reads", 2, Duration::from_secs(1));
        let writes = Bulkhead::new("writes", 1, Duration::from_secs(1));
        let _a = reads.enter().await.expect("slot");
        let _b = reads.enter().await.expect("slot");
        assert_eq!(reads.enter().await.unwrap_err(), Full { bulkhead: "reads" });
        assert!(reads.try_enter().is_err());
        assert!(writes.enter().await.is_ok(), "another class still has room");
        drop(_a);
        assert!(reads.try_enter().is_ok());
    }
}
