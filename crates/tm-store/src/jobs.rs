//! The job queue's terms: queues and their priorities, a job to enqueue, a job claimed
//! by a worker, and a dead one as the dead-letter queue shows it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tm_domain::TenantId;
use uuid::Uuid;

/// Which queue a job waits in; claims take `High` first, `Bulk` last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Queue {
    High,
    Default,
    Bulk,
}

impl Queue {
    pub const ALL: [Queue; 3] = [Queue::High, Queue::Default, Queue::Bulk];

    pub fn as_str(self) -> &'static str {
        match self {
            Queue::High => "high",
            Queue::Default => "default",
            Queue::Bulk => "bulk",
        }
    }

    /// The order claims take queues in: lower first.
    pub(crate) fn priority(self) -> i64 {
        match self {
            Queue::High => 0,
            Queue::Default => 1,
            Queue::Bulk => 2,
        }
    }
}

impl FromStr for Queue {
    type Err = ();

    fn from_str(raw: &str) -> Result<Self, ()> {
        Queue::ALL.into_iter().find(|q| q.as_str() == raw).ok_or(())
    }
}

impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to enqueue.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    pub queue: Queue,
    /// What the job does: names the handler that runs it.
    pub kind: String,
    /// The handler's input.
    pub payload: serde_json::Value,
    /// At most one live (queued or running) job has a given key: enqueueing another is
    /// a no-op.
    pub dedup_key: Option<String>,
    /// The tenant the job works for, if any: who may see it dead.
    pub tenant: Option<TenantId>,
    /// Attempts before it is dead (at least 1).
    pub max_attempts: u32,
    /// Not claimed before then.
    pub run_at: DateTime<Utc>,
}

/// A job as a worker holds it, leased until it reports how it went.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedJob {
    pub id: Uuid,
    pub queue: Queue,
    pub kind: String,
    pub payload: serde_json::Value,
    pub tenant: Option<TenantId>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    pub max_attempts: u32,
    pub created_at: DateTime<Utc>,
}

/// A job in the dead-letter queue.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadJob {
    pub id: Uuid,
    pub queue: Queue,
    pub kind: String,
    pub payload: serde_json::Value,
    pub tenant: Option<TenantId>,
    pub attempts: u32,
    /// Why its last attempt failed.
    pub last_error: Option<String>,
    #[serde(serialize_with = "tm_domain::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    /// When it died.
    #[serde(serialize_with = "tm_domain::rfc3339::serialize")]
    pub failed_at: DateTime<Utc>,
}

/// How a claimed job ends, as its worker reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutcome {
    /// Done: the job is deleted.
    Done,
    /// Failed, to be tried again from `run_at`.
    Retry {
        error: String,
        run_at: DateTime<Utc>,
    },
    /// Failed for good: the job goes to the dead-letter queue.
    Dead { error: String },
}

/// The live jobs of each queue and the dead ones, for the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueDepths {
    /// Queued or running, by queue.
    pub live: Vec<(Queue, u64)>,
    pub dead: u64,
}

/// Which dead jobs a listing covers.
#[derive(Clone, Copy, Debug)]
pub struct DeadPage<'a> {
    /// Only this tenant's (a tenant-bound caller's own); all when none.
    pub tenant: Option<&'a TenantId>,
    pub after: Option<Uuid>,
    pub limit: u32,
}
