//! Recurring jobs: each is enqueued at start and every period after, under a dedup key
//! of its kind, so that the fleet holds at most one of each waiting or running however
//! many instances schedule it.

use std::sync::Arc;
use std::time::Duration;

use tm_store::{NewJob, Queue, Store};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Worker;

/// A job enqueued every `every`.
#[derive(Clone, Debug)]
pub(crate) struct Recurring {
    pub(crate) kind: &'static str,
    pub(crate) every: Duration,
    pub(crate) queue: Queue,
}

/// Enqueues the recurring jobs when they are due, and wakes this process's runner.
pub(crate) struct Schedule {
    store: Arc<dyn Store>,
    jobs: Vec<Recurring>,
    max_attempts: u32,
    wake: Arc<Notify>,
}

impl Schedule {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        jobs: Vec<Recurring>,
        max_attempts: u32,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            jobs,
            max_attempts,
            wake,
        }
    }

    async fn enqueue(&self, job: &Recurring) {
        let new = NewJob {
            queue: job.queue,
            kind: job.kind.into(),
            payload: serde_json::Value::Object(serde_json::Map::new()),
            dedup_key: Some(job.kind.into()),
            tenant: None,
            max_attempts: self.max_attempts,
            run_at: tm_domain::now(),
        };
        match self.store.enqueue(&new).await {
            Ok(true) => self.wake.notify_one(),
            // One is waiting or running already.
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(job.kind = job.kind, error = %err, "scheduling a job failed")
            }
        }
    }
}

impl Worker for Schedule {
    const NAME: &'static str = "job schedule";

    async fn run(self, shutdown: CancellationToken) {
        let mut ticks: Vec<tokio::time::Interval> = self
            .jobs
            .iter()
            .map(|job| {
                let mut tick = tokio::time::interval(job.every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick
            })
            .collect();
        loop {
            let due = futures::future::select_all(ticks.iter_mut().map(|t| Box::pin(t.tick())));
            tokio::select! {
                () = shutdown.cancelled() => return,
                (_, index, _) = due => self.enqueue(&self.jobs[index]).await,
            }
        }
    }
}
