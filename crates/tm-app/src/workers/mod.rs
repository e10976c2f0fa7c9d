//! The background workers and the set that runs them. A worker is a struct holding
//! what it needs, with a [`Worker::run`] that works until told to stop; the
//! composition root registers each one with [`Workers::spawn`].

mod backup;
mod follow;
mod jobs;
mod probe;
mod purge;
mod rebuild;
mod relay;
mod sample;
mod schedule;
mod webhooks;

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) use backup::{Backup, BACKUP, BACKUP_EVERY};
pub(crate) use follow::{subscribe, Follow};
pub(crate) use jobs::{Handlers, JobRunner};
pub(crate) use probe::{probe_kinds, Probes, PROBE_EVERY};
pub(crate) use purge::{Purge, PURGE, PURGE_EVERY};
pub(crate) use rebuild::Rebuild;
pub(crate) use relay::{relay_kind, Relay, Sink, RELAY_EVERY};
pub(crate) use sample::Sample;
pub(crate) use schedule::{Recurring, Schedule};
pub(crate) use webhooks::{Deliver, FanOut, Reseal, DELIVER, RESEAL};

/// A background task of the registry.
pub(crate) trait Worker: Send + 'static {
    /// How logs and [`crate::RunError::TaskDied`] name it.
    const NAME: &'static str;

    /// Works until `shutdown` is cancelled. Returning before that (or panicking) is a
    /// failure: the application stops on it.
    fn run(self, shutdown: CancellationToken) -> impl Future<Output = ()> + Send;
}

/// The running workers, each with its name, and the token that stops them all.
/// Dropping the set stops them too, so none outlives an application never run.
pub(crate) struct Workers {
    stop: CancellationToken,
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Workers {
    pub(crate) fn new() -> Self {
        Self {
            stop: CancellationToken::new(),
            running: Vec::new(),
        }
    }

    /// Starts `worker` on a task of its own.
    pub(crate) fn spawn<W: Worker>(&mut self, worker: W) {
        let handle = tokio::spawn(worker.run(self.stop.clone()));
        self.running.push((W::NAME, handle));
    }

    /// Waits until any worker stops (ends or panics), takes it out of the set and says
    /// which; never, with none. Cancel-safe: the workers run on whether or not anyone
    /// waits.
    pub(crate) async fn first_stopped(&mut self) -> &'static str {
        if self.running.is_empty() {
            return std::future::pending().await;
        }
        let handles = self.running.iter_mut().map(|(_, handle)| handle);
        let (_, index, _) = futures::future::select_all(handles).await;
        // A finished handle must not be awaited again.
        self.running.remove(index).0
    }

    /// Cancelled when the workers are told to stop: for work that should end early then.
    pub(crate) fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Tells every worker to stop and waits until all have.
    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        for (_, handle) in std::mem::take(&mut self.running) {
            let _ = handle.await;
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Ticks every `every`, the first one a period from now; a late tick delays the next.
pub(crate) fn ticker(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}
