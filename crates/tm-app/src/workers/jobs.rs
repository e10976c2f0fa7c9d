//! The job runner: claims due jobs from the store's queue, runs each with the handler of
//! its kind while keeping its lease, and records how it went: done (deleted), retried
//! later with exponential backoff and full jitter, or dead (the dead-letter queue) when
//! it failed for good or ran out of attempts.
//!
//! Jobs run at least once: a job whose worker dies is claimed again when its lease runs
//! out, so handlers make a repeat harmless (a webhook delivery carries its event id).
//! No database connection is held while a handler runs: claims, lease renewals and
//! outcomes are short statements of their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rand::Rng;
use tm_config::JobsConfig;
use tm_store::{ClaimedJob, JobOutcome, Store};
use tm_telemetry::Metrics;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::Worker;

/// Why a job's attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum JobError {
    /// Worth another attempt later (a time-out, a 5xx, a broker down).
    Transient(String),
    /// Would fail again the same way (a 4xx, a job that names nothing): dead at once.
    Permanent(String),
}

/// Runs the jobs of one kind.
pub(crate) trait Handler: Send + Sync + 'static {
    fn run<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<(), JobError>>;

    /// How long one attempt may run: `default` (`TM_JOB_TIMEOUT`) unless the kind needs
    /// longer.
    fn time_limit(&self, default: Duration) -> Duration {
        default
    }
}

/// The handlers of the job kinds this process runs, by kind.
pub(crate) type Handlers = HashMap<&'static str, Arc<dyn Handler>>;

/// How long to wait before attempt `attempt + 1`, after attempt `attempt` (from 1)
/// failed: a random delay up to `base` doubled per attempt so far, at most `max`.
pub(crate) fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    let ceiling = base.saturating_mul(1u32 << doublings).min(max);
    let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=ceiling_ms))
}

/// What the store is told of an attempt, and the metric's outcome label.
fn decide(
    job: &ClaimedJob,
    result: Result<(), JobError>,
    config: &JobsConfig,
) -> (JobOutcome, &'static str) {
    match result {
        Ok(()) => (JobOutcome::Done, "done"),
        Err(JobError::Permanent(error)) => (JobOutcome::Dead { error }, "dead"),
        Err(JobError::Transient(error)) if job.attempt >= job.max_attempts => (
            JobOutcome::Dead {
                error: format!("{error} (attempt {} of {})", job.attempt, job.max_attempts),
            },
            "dead",
        ),
        Err(JobError::Transient(error)) => {
            let wait = backoff(job.attempt, config.backoff_base, config.backoff_max);
            let run_at = tm_domain::now()
                + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
            (JobOutcome::Retry { error, run_at }, "retried")
        }
    }
}

struct Inner {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    handlers: Handlers,
    config: JobsConfig,
    /// This runner's name in the leases it holds.
    name: String,
    /// The jobs being run (id, attempt), to be released if the runner stops before
    /// they end.
    running: Mutex<Vec<(Uuid, u32)>>,
}

/// The job runner of this process.
pub(crate) struct JobRunner {
    inner: Arc<Inner>,
    wake: Arc<Notify>,
}

impl JobRunner {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        handlers: Handlers,
        config: JobsConfig,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                metrics,
                handlers,
                config,
                name: format!("runner-{}", Uuid::now_v7()),
                running: Mutex::new(Vec::new()),
            }),
            wake,
        }
    }
}

impl Inner {
    fn running(&self) -> std::sync::MutexGuard<'_, Vec<(Uuid, u32)>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Renews the lease of `job` every third of the lease; returns once it is lost: the
    /// store says another holds it, or no renewal has succeeded for a whole lease (the
    /// database is out of reach, and the lease may have run out and the job gone to
    /// another runner).
    async fn keep_leased(&self, job: &ClaimedJob) {
        let mut held_until = Instant::now() + self.config.lease;
        loop {
            tokio::time::sleep(self.config.lease / 3).await;
            let asked = Instant::now();
            match self
                .store
                .extend_lease(job.id, job.attempt, &self.name, self.config.lease)
                .await
            {
                Ok(true) => held_until = asked + self.config.lease,
                Ok(false) => return,
                Err(err) => {
                    tracing::warn!(job.id = %job.id, error = %err, "renewing a job's lease failed");
                    if Instant::now() >= held_until {
                        return;
                    }
                }
            }
        }
    }

    /// One attempt of `job`, its outcome recorded.
    async fn attempt(self: Arc<Self>, job: ClaimedJob, _slot: OwnedSemaphorePermit) {
        let started = Instant::now();
        // Claims name this runner's kinds only; a job of another kind is dead.
        let (kind, handler) = match self.handlers.get_key_value(job.kind.as_str()) {
            Some((kind, handler)) => (*kind, Some(handler.clone())),
            None => ("other", None),
        };
        // The attempt's span: the root of what it does (store calls, deliveries, records
        // published), exported when tracing is on. Its trace id is chosen here, as a
        // request's is, so that its log lines name it whether or not tracing is on.
        let trace_id: u128 = rand::random();
        let span = tracing::info_span!(
            tm_telemetry::trace::JOB_SPAN,
            job.kind = kind,
            job.id = %job.id,
            job.attempt = job.attempt,
            trace_id = %format_args!("{trace_id:032x}"),
            job.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let origin = tm_telemetry::trace::Origin {
            trace_id,
            parent: None,
            tracestate: None,
        };
        tm_telemetry::trace::adopt(&span, &origin);
        let result = if let Some(handler) = handler.filter(|_| job.attempt <= job.max_attempts) {
            let timeout = handler.time_limit(self.config.timeout);
            tokio::select! {
                result = tokio::time::timeout(timeout, handler.run(&job).instrument(span.clone())) => result
                    .unwrap_or_else(|_| Err(JobError::Transient(format!("timed out after {timeout:?}")))),
                () = self.keep_leased(&job) => {
                    tracing::warn!(job.id = %job.id, job.kind = %job.kind, "a job's lease was lost while it ran; its outcome is left to the runner holding it now");
                    self.forget(job.id);
                    self.metrics.observe_job(kind, "lost", started.elapsed().as_secs_f64());
                    return;
                }
            }
        } else if job.attempt <= job.max_attempts {
            Err(JobError::Permanent(format!(
                "no handler for jobs of kind {:?}",
                job.kind
            )))
        } else {
            // Its runner stopped during its last attempt (no outcome was recorded): it
            // is not run again.
            Err(JobError::Permanent(format!(
                "no attempt left: its runner stopped during attempt {} of {}",
                job.max_attempts, job.max_attempts
            )))
        };
        let (outcome, label) = decide(&job, result, &self.config);
        if let JobOutcome::Retry { error, .. } | JobOutcome::Dead { error } = &outcome {
            tracing::warn!(job.id = %job.id, job.kind = %job.kind, job.attempt = job.attempt, outcome = label, error = %error, "a job's attempt failed");
        }
        let label = if self.record(&job, &outcome).await {
            label
        } else {
            "lost"
        };
        span.record("job.outcome", label);
        if !matches!(outcome, JobOutcome::Done) {
            span.record("otel.status_code", "error");
        }
        self.forget(job.id);
        self.metrics
            .observe_job(kind, label, started.elapsed().as_secs_f64());
    }

    /// Records `outcome`, retrying while the store fails (up to the lease: past it, the
    /// job is claimable again anyway). Whether it was recorded.
    async fn record(&self, job: &ClaimedJob, outcome: &JobOutcome) -> bool {
        let id = job.id;
        let give_up = Instant::now() + self.config.lease;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .store
                .finish_job(id, job.attempt, &self.name, outcome)
                .await
            {
                Ok(held) => return held,
                Err(err) if Instant::now() < give_up => {
                    tracing::warn!(job.id = %id, error = %err, "recording a job's outcome failed; retrying");
                    let wait = backoff(attempt, Duration::from_millis(100), Duration::from_secs(2));
                    tokio::time::sleep(wait).await;
                }
                Err(err) => {
                    tracing::error!(job.id = %id, error = %err, "recording a job's outcome failed; it runs again once its lease ends");
                    return false;
                }
            }
        }
    }

    fn forget(&self, id: Uuid) {
        self.running().retain(|(running, _)| *running != id);
    }

    /// Gives back the jobs still running when the runner stops: due again at once.
    async fn release_running(&self) {
        let left: Vec<(Uuid, u32)> = std::mem::take(&mut *self.running());
        for (id, attempt) in left {
            self.release(id, attempt).await;
        }
    }

    /// Gives back a job this runner holds without running it: due again at once.
    async fn release(&self, id: Uuid, attempt: u32) {
        self.forget(id);
        let outcome = JobOutcome::Retry {
            error: "released: its runner stopped before it ended".into(),
            run_at: tm_domain::now(),
        };
        if let Err(err) = self
            .store
            .finish_job(id, attempt, &self.name, &outcome)
            .await
        {
            tracing::warn!(job.id = %id, error = %err, "releasing a job failed; it runs again once its lease ends");
        }
    }
}

impl Worker for JobRunner {
    const NAME: &'static str = "job runner";

    async fn run(self, shutdown: CancellationToken) {
        let inner = self.inner;
        let kinds: Vec<&str> = inner.handlers.keys().copied().collect();
        let slots = Arc::new(Semaphore::new(inner.config.concurrency as usize));
        let mut attempts = JoinSet::new();
        while !shutdown.is_cancelled() {
            while attempts.try_join_next().is_some() {}
            let free = slots.available_permits();
            if free > 0 {
                let limit = u32::try_from(free).unwrap_or(u32::MAX);
                match inner
                    .store
                    .claim_jobs(&inner.name, &kinds, limit, inner.config.lease)
                    .await
                {
                    Ok(jobs) if !jobs.is_empty() => {
                        for job in jobs {
                            inner.running().push((job.id, job.attempt));
                            match slots.clone().try_acquire_owned() {
                                Ok(slot) => {
                                    attempts.spawn(inner.clone().attempt(job, slot));
                                }
                                // More than asked for: given back at once.
                                Err(_) => inner.release(job.id, job.attempt).await,
                            }
                        }
                        // There may be more due: look again at once.
                        continue;
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "claiming jobs failed"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(inner.config.poll_interval) => {}
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
            }
        }
        // Stopping: the attempts under way get a third of a lease to end (a process is
        // usually given less than a lease to stop), then are given back.
        let drained = tokio::time::timeout(inner.config.lease / 3, async {
            while attempts.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            attempts.shutdown().await;
            inner.release_running().await;
        }
    }
}

#[cfg(test)]
mod tests {

    use tm_config::{Config, ProcessRaw, RawConfig};
    use tm_store::{DeadPage, NewJob, Queue, StoreCounters};

    use super::*;

    #[test]
    fn backoff_grows_by_doubling_up_to_the_maximum_with_full_jitter() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 1..=12 {
            let ceiling = (base * 2u32.pow(attempt - 1)).min(max);
            let waits: Vec<Duration> = (0..200).map(|_| backoff(attempt, base, max)).collect();
            assert!(waits.iter().all(|w| *w <= ceiling), "attempt {attempt}");
            // Full jitter: spread over the whole range, not bunched at its top.
            assert!(waits.iter().any(|w| *w < ceiling / 2), "attempt {attempt}");
        }
        assert!(backoff(u32::MAX, base, max) <= max);
    }

    /// A store of its own (SQLite in a temporary directory).
    async fn store() -> (Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let raw = RawConfig {
            process: ProcessRaw {
                data_dir: dir.path().to_path_buf(),
                ..Default::default()
            },
            ..Default::default()
        };
        let config = Config::try_from(raw).expect("valid");
        let store = tm_store::connect(&config.storage, &config.pool, StoreCounters::default())
            .await
            .expect("store");
        (store, dir)
    }

    fn config() -> JobsConfig {
        JobsConfig {
            in_serve: true,
            concurrency: 4,
            lease: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(20),
            max_attempts: 3,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
            probe_shards: 1,
        }
    }

    fn job(kind: &str, n: u32) -> NewJob {
        NewJob {
            queue: Queue::Default,
            kind: kind.into(),
            payload: serde_json::json!({ "n": n }),
            dedup_key: None,
            tenant: None,
            max_attempts: 3,
            run_at: tm_domain::now(),
        }
    }

    /// Fails its first `failures` attempts of each job, transiently or for good; records
    /// every attempt's job number.
    struct Flaky {
        failures: u32,
        permanent: bool,
        attempts: Mutex<Vec<u64>>,
        pause: Duration,
    }

    impl Flaky {
        fn new(failures: u32, permanent: bool) -> Arc<Self> {
            Arc::new(Self {
                failures,
                permanent,
                attempts: Mutex::new(Vec::new()),
                pause: Duration::ZERO,
            })
        }

        /// Succeeds at once, after `pause`.
        fn pausing(pause: Duration) -> Arc<Self> {
            Arc::new(Self {
                failures: 0,
                permanent: false,
                attempts: Mutex::new(Vec::new()),
                pause,
            })
        }

        fn attempts(&self) -> Vec<u64> {
            self.attempts.lock().expect("lock").clone()
        }
    }

    impl Handler for Flaky {
        fn run<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<(), JobError>> {
            Box::pin(async move {
                self.attempts
                    .lock()
                    .expect("lock")
                    .push(job.payload["n"].as_u64().expect("n"));
                tokio::time::sleep(self.pause).await;
                if job.attempt > self.failures {
                    Ok(())
                } else if self.permanent {
                    Err(JobError::Permanent("refused".into()))
                } else {
                    Err(JobError::Transient(format!("failure {}", job.attempt)))
                }
            })
        }
    }

    fn runner(store: &Arc<dyn Store>, handler: Arc<Flaky>, metrics: &Arc<Metrics>) -> JobRunner {
        let mut handlers = Handlers::new();
        handlers.insert("flaky", handler as Arc<dyn Handler>);
        JobRunner::new(
            store.clone(),
            metrics.clone(),
            handlers,
            config(),
            Arc::new(Notify::new()),
        )
    }

    async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
        let started = Instant::now();
        while !check().await {
            assert!(started.elapsed() < Duration::from_secs(10), "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn live_jobs(store: &Arc<dyn Store>) -> u64 {
        let depths = store.queue_depths().await.expect("depths");
        depths.live.iter().map(|(_, n)| n).sum()
    }

    fn processed(metrics: &Metrics, outcome: &str) -> f64 {
        let text = metrics.encode();
        let series = format!("jobs_processed_total{{kind=\"flaky\",outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0.0, |v| v.parse().expect("a number"))
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_until_done_and_a_lasting_one_goes_dead() {
        let (store, _dir) = store().await;
        let metrics = Arc::new(Metrics::new(10, "test"));
        let twice = Flaky::new(2, false);
        store.enqueue(&job("flaky", 1)).await.expect("enqueued");
        let stop = CancellationToken::new();
        let running = tokio::spawn(runner(&store, twice.clone(), &metrics).run(stop.clone()));
        until("done", async || live_jobs(&store).await == 0).await;
        assert_eq!(twice.attempts(), [1, 1, 1]);
        assert_eq!(
            (processed(&metrics, "retried"), processed(&metrics, "done")),
            (2.0, 1.0)
        );
        stop.cancel();
        running.await.expect("stopped");

        // Three attempts allowed, three transient failures: dead, with its last error.
        let always = Flaky::new(u32::MAX, false);
        store.enqueue(&job("flaky", 2)).await.expect("enqueued");
        let stop = CancellationToken::new();
        let running = tokio::spawn(runner(&store, always.clone(), &metrics).run(stop.clone()));
        until("dead", async || {
            store.queue_depths().await.expect("depths").dead == 1
        })
        .await;
        assert_eq!(always.attempts(), [2, 2, 2]);
        let page = DeadPage {
            tenant: None,
            after: None,
            limit: 10,
        };
        let dead = store.dead_jobs(page).await.expect("dead jobs");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 3);
        assert_eq!(
            dead[0].last_error.as_deref(),
            Some("failure 3 (attempt 3 of 3)")
        );

        // Replayed: queued again with its attempts reset, and run again.
        store
            .replay_dead_job(dead[0].id, None)
            .await
            .expect("replayed");
        until("dead again", async || {
            store.queue_depths().await.expect("depths").dead == 1 && always.attempts().len() == 6
        })
        .await;
        store
            .purge_dead_job(dead[0].id, None)
            .await
            .expect("purged");
        assert_eq!(store.queue_depths().await.expect("depths").dead, 0);
        stop.cancel();
        running.await.expect("stopped");

        // A permanent failure: dead after one attempt.
        let refused = Flaky::new(u32::MAX, true);
        store.enqueue(&job("flaky", 3)).await.expect("enqueued");
        let stop = CancellationToken::new();
        let running = tokio::spawn(runner(&store, refused.clone(), &metrics).run(stop.clone()));
        until("dead", async || {
            store.queue_depths().await.expect("depths").dead == 1
        })
        .await;
        assert_eq!(refused.attempts(), [3]);
        stop.cancel();
        running.await.expect("stopped");
    }

    #[tokio::test]
    async fn two_runners_never_run_the_same_job() {
        let (store, _dir) = store().await;
        let metrics = Arc::new(Metrics::new(10, "test"));
        for n in 0..60 {
            store.enqueue(&job("flaky", n)).await.expect("enqueued");
        }
        let shared = Flaky::pausing(Duration::from_millis(5));
        let stop = CancellationToken::new();
        let a = tokio::spawn(runner(&store, shared.clone(), &metrics).run(stop.clone()));
        let b = tokio::spawn(runner(&store, shared.clone(), &metrics).run(stop.clone()));
        until("all done", async || live_jobs(&store).await == 0).await;
        let mut ran = shared.attempts();
        ran.sort_unstable();
        assert_eq!(ran, (0..60).collect::<Vec<u64>>());
        stop.cancel();
        a.await.expect("stopped");
        b.await.expect("stopped");
    }

    #[tokio::test]
    async fn a_job_whose_runner_died_runs_again_once_its_lease_ends() {
        let (store, _dir) = store().await;
        let metrics = Arc::new(Metrics::new(10, "test"));
        store.enqueue(&job("flaky", 7)).await.expect("enqueued");
        // A runner that claims the job and dies: its lease is never renewed.
        let lease = Duration::from_millis(300);
        let claimed = store
            .claim_jobs("dead-runner", &["flaky"], 10, lease)
            .await
            .expect("claimed");
        assert_eq!(claimed.len(), 1);
        assert!(store
            .claim_jobs("other", &["flaky"], 10, lease)
            .await
            .expect("claim")
            .is_empty());

        let handler = Flaky::new(0, false);
        let stop = CancellationToken::new();
        let running = tokio::spawn(runner(&store, handler.clone(), &metrics).run(stop.clone()));
        until("done", async || live_jobs(&store).await == 0).await;
        assert_eq!(handler.attempts(), [7]);
        // The dead runner's late outcome changes nothing.
        let late = store
            .finish_job(claimed[0].id, 1, "dead-runner", &JobOutcome::Done)
            .await
            .expect("finish");
        assert!(!late);
        stop.cancel();
        running.await.expect("stopped");
    }

    #[tokio::test]
    async fn a_job_whose_runner_died_in_its_last_attempt_is_dead_without_running_again() {
        let (store, _dir) = store().await;
        let metrics = Arc::new(Metrics::new(10, "test"));
        let last = NewJob {
            max_attempts: 1,
            ..job("flaky", 4)
        };
        store.enqueue(&last).await.expect("enqueued");
        let lease = Duration::from_millis(200);
        let claimed = store.claim_jobs("dead-runner", &["flaky"], 10, lease).await;
        assert_eq!(claimed.expect("claimed").len(), 1);

        let handler = Flaky::new(0, false);
        let stop = CancellationToken::new();
        let running = tokio::spawn(runner(&store, handler.clone(), &metrics).run(stop.clone()));
        until("dead", async || {
            store.queue_depths().await.expect("depths").dead == 1
        })
        .await;
        assert!(handler.attempts().is_empty(), "not run again");
        let page = DeadPage {
            tenant: None,
            after: None,
            limit: 10,
        };
        let dead = store.dead_jobs(page).await.expect("dead jobs");
        assert!(dead[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no attempt left")));
        stop.cancel();
        running.await.expect("stopped");
    }

    #[tokio::test]
    async fn jobs_are_claimed_by_priority_and_deduplicated_by_key() {
        let (store, _dir) = store().await;
        let keyed = |queue: Queue, key: &str| NewJob {
            queue,
            dedup_key: Some(key.into()),
            ..job("flaky", 0)
        };
        assert!(store
            .enqueue(&keyed(Queue::Bulk, "b"))
            .await
            .expect("enqueued"));
        assert!(store
            .enqueue(&keyed(Queue::Default, "d"))
            .await
            .expect("enqueued"));
        assert!(store
            .enqueue(&keyed(Queue::High, "h"))
            .await
            .expect("enqueued"));
        assert!(!store
            .enqueue(&keyed(Queue::High, "h"))
            .await
            .expect("deduplicated"));
        let lease = Duration::from_secs(30);
        let first = store
            .claim_jobs("r", &["flaky"], 1, lease)
            .await
            .expect("claimed");
        assert_eq!(first[0].queue, Queue::High);
        // Still deduplicated while it runs; free once it is done.
        assert!(!store
            .enqueue(&keyed(Queue::High, "h"))
            .await
            .expect("deduplicated"));
        assert!(store
            .finish_job(first[0].id, 1, "r", &JobOutcome::Done)
            .await
            .expect("done"));
        assert!(store
            .enqueue(&keyed(Queue::High, "h"))
            .await
            .expect("enqueued"));
        // Jobs of kinds a runner does not handle are not claimed.
        store.enqueue(&job("other", 5)).await.expect("enqueued");
        let rest = store
            .claim_jobs("r", &["flaky"], 10, lease)
            .await
            .expect("claimed");
        let queues: Vec<Queue> = rest.iter().map(|j| j.queue).collect();
        assert_eq!(queues, [Queue::High, Queue::Default, Queue::Bulk]);
        // Not due yet: not claimed.
        let later = NewJob {
            run_at: tm_domain::now() + chrono::Duration::seconds(60),
            ..job("flaky", 1)
        };
        store.enqueue(&later).await.expect("enqueued");
        assert!(store
            .claim_jobs("r", &["flaky"], 10, lease)
            .await
            .expect("claim")
            .is_empty());
    }

    /// A job's network I/O or sleep holds no database connection: while a handler
    /// waits, every pool of the store has none in use.
    #[tokio::test]
    async fn no_database_connection_is_held_while_a_job_runs() {
        let (store, _dir) = store().await;
        let metrics = Arc::new(Metrics::new(10, "test"));
        store.enqueue(&job("flaky", 8)).await.expect("enqueued");
        let stalled = Flaky::pausing(Duration::from_millis(1500));
        let mut handlers = Handlers::new();
        handlers.insert("flaky", stalled.clone() as Arc<dyn Handler>);
        // One slot (so no claim runs while the job does) and a lease long enough that
        // no renewal falls within the watch below: any connection in use is the job's.
        let config = JobsConfig {
            concurrency: 1,
            lease: Duration::from_secs(30),
            ..config()
        };
        let runner = JobRunner::new(
            store.clone(),
            metrics,
            handlers,
            config,
            Arc::new(Notify::new()),
        );
        let stop = CancellationToken::new();
        let running = tokio::spawn(runner.run(stop.clone()));
        until("started", async || !stalled.attempts().is_empty()).await;
        for _ in 0..10 {
            let in_use: u32 = store.pool_stats().iter().map(|pool| pool.in_use).sum();
            assert_eq!(in_use, 0, "{:?}", store.pool_stats());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        until("done", async || live_jobs(&store).await == 0).await;
        stop.cancel();
        running.await.expect("stopped");
    }

    #[tokio::test]
    async fn a_stopping_runner_gives_back_the_jobs_it_could_not_finish() {
        let (store, _dir) = store().await;
        let metrics = Arc::new(Metrics::new(10, "test"));
        store.enqueue(&job("flaky", 9)).await.expect("enqueued");
        let slow = Flaky::pausing(Duration::from_secs(30));
        let stop = CancellationToken::new();
        let running = tokio::spawn(runner(&store, slow.clone(), &metrics).run(stop.clone()));
        until("started", async || !slow.attempts().is_empty()).await;
        stop.cancel();
        running.await.expect("stopped");
        // Released at once, not left to its lease: claimable now.
        let lease = Duration::from_secs(30);
        let again = store
            .claim_jobs("next", &["flaky"], 10, lease)
            .await
            .expect("claimed");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempt, 2);
    }
}
