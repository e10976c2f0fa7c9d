//! The job queue's workers: whether `serve` runs jobs too, how many at once, their
//! lease, how often an idle worker looks for work, and the retry policy.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::render::Lines;

/// The job settings as read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct JobsRaw {
    /// Whether `serve` runs jobs beside the API (`worker` always does).
    pub jobs_in_serve: bool,
    /// Jobs a process runs at once; each relay of the outbox holds one while it runs.
    pub job_concurrency: u32,
    /// How long a claimed job is leased to its worker; the worker renews the lease
    /// while the job runs, so this is how soon a dead worker's job runs again.
    #[serde(with = "humantime_serde")]
    pub job_lease: Duration,
    /// How long one attempt may run.
    #[serde(with = "humantime_serde")]
    pub job_timeout: Duration,
    /// How often an idle worker looks for due jobs (it is also woken by new ones).
    #[serde(with = "humantime_serde")]
    pub job_poll_interval: Duration,
    /// Attempts before a job goes to the dead-letter queue.
    pub job_max_attempts: u32,
    /// The first retry's longest delay; each retry doubles it, up to the maximum
    /// (exponential backoff with full jitter).
    #[serde(with = "humantime_serde")]
    pub job_backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub job_backoff_max: Duration,
    /// Shards the endpoint health probes are split into: each is a job held by one
    /// instance at a time (holding one of its job slots), so the probes spread over at
    /// most this many instances.
    pub probe_shards: u32,
}

impl Default for JobsRaw {
    fn default() -> Self {
        Self {
            jobs_in_serve: true,
            job_concurrency: 8,
            job_lease: Duration::from_secs(30),
            job_timeout: Duration::from_secs(60),
            job_poll_interval: Duration::from_secs(1),
            job_max_attempts: 8,
            job_backoff_base: Duration::from_secs(1),
            job_backoff_max: Duration::from_secs(300),
            probe_shards: 2,
        }
    }
}

/// The job queue's workers.
#[derive(Clone, Debug)]
pub struct JobsConfig {
    pub in_serve: bool,
    pub concurrency: u32,
    pub lease: Duration,
    pub timeout: Duration,
    pub poll_interval: Duration,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub probe_shards: u32,
}

impl JobsRaw {
    pub(crate) fn check(self, problems: &mut Problems) -> JobsConfig {
        problems.at_least_one(&[
            ("job_concurrency", self.job_concurrency.into()),
            ("job_max_attempts", self.job_max_attempts.into()),
        ]);
        problems.positive(&[
            ("job_lease", self.job_lease),
            ("job_timeout", self.job_timeout),
            ("job_poll_interval", self.job_poll_interval),
            ("job_backoff_base", self.job_backoff_base),
        ]);
        if self.job_lease < Duration::from_secs(1) {
            problems.add(
                "job_lease",
                "must be at least 1s: the lease is renewed at a third of it",
            );
        }
        if !(1..=16).contains(&self.probe_shards) {
            problems.add("probe_shards", "must be from 1 to 16");
        }
        if self.job_backoff_max < self.job_backoff_base {
            problems.add("job_backoff_max", "must be at least TM_JOB_BACKOFF_BASE");
        }
        JobsConfig {
            in_serve: self.jobs_in_serve,
            concurrency: self.job_concurrency,
            lease: self.job_lease,
            timeout: self.job_timeout,
            poll_interval: self.job_poll_interval,
            max_attempts: self.job_max_attempts,
            backoff_base: self.job_backoff_base,
            backoff_max: self.job_backoff_max,
            probe_shards: self.probe_shards,
        }
    }
}

impl JobsConfig {
    /// The job lines of `check-config`.
    pub(crate) fn render(&self, out: &mut Lines) {
        out.plain("jobs_in_serve", self.in_serve);
        out.plain("job_concurrency", self.concurrency);
        out.duration("job_lease", self.lease);
        out.duration("job_timeout", self.timeout);
        out.duration("job_poll_interval", self.poll_interval);
        out.plain("job_max_attempts", self.max_attempts);
        out.duration("job_backoff_base", self.backoff_base);
        out.duration("job_backoff_max", self.backoff_max);
        out.plain("probe_shards", self.probe_shards);
    }
}
