//! Read replicas: which one serves a read, and the lag checks that take a replica out of
//! (or back into) the rotation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::Postgres;

use super::PostgresStore;
use crate::pool::CountedPool;
use crate::{ReadFrom, ReplicaStatus};

/// Pool names (and `replica` labels) of the read replicas, in configuration order.
pub(super) const REPLICA_POOLS: [&str; tm_config::MAX_REPLICAS] = [
    "replica1", "replica2", "replica3", "replica4", "replica5", "replica6", "replica7", "replica8",
];

/// How long a replica's lag check may take before the replica counts as unreachable.
const REPLICA_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// One read replica and whether it serves reads now.
pub(super) struct Replica {
    pub(super) pool: CountedPool<Postgres>,
    pub(super) in_rotation: AtomicBool,
}

impl Replica {
    /// Seconds this replica is behind a primary at `primary_lsn`: 0 once it has replayed
    /// that far, else the age of the last transaction it replayed; `None` if unreachable.
    async fn measure_lag(&self, primary_lsn: &str) -> Option<f64> {
        tokio::time::timeout(REPLICA_CHECK_TIMEOUT, self.query_lag(primary_lsn))
            .await
            .ok()
            .flatten()
    }

    async fn query_lag(&self, primary_lsn: &str) -> Option<f64> {
        let mut conn = self.pool.acquire().await.ok()?;
        sqlx::query_scalar(
            "SELECT CASE WHEN pg_last_wal_replay_lsn() >= $1::pg_lsn THEN 0::float8 \
             ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)::float8 END",
        )
        .bind(primary_lsn)
        .fetch_one(&mut *conn)
        .await
        .ok()
    }
}

impl PostgresStore {
    /// The replica a read goes to: one in the rotation (round robin) when `from` allows
    /// it; `None` for the primary.
    pub(super) fn replica(&self, from: ReadFrom) -> Option<&Replica> {
        if from == ReadFrom::AnyReplica && !self.replicas.is_empty() {
            let start = self.next_replica.fetch_add(1, Ordering::Relaxed);
            let count = self.replicas.len();
            for offset in 0..count {
                let replica = &self.replicas[(start + offset) % count];
                if replica.in_rotation.load(Ordering::Acquire) {
                    return Some(replica);
                }
            }
        }
        None
    }

    /// Measures each replica's lag behind the primary and puts it in the rotation if it
    /// is within the allowed lag, else takes it out.
    pub(super) async fn check_replica_lag(&self) -> Vec<ReplicaStatus> {
        if self.replicas.is_empty() {
            return Vec::new();
        }
        let primary_lsn: Option<String> = async {
            let mut conn = self.primary.acquire().await.ok()?;
            sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
                .fetch_one(&mut *conn)
                .await
                .ok()
        }
        .await;
        let mut statuses = Vec::with_capacity(self.replicas.len());
        for replica in &self.replicas {
            let lag = match &primary_lsn {
                Some(lsn) => replica.measure_lag(lsn).await,
                None => None,
            };
            let in_rotation = lag.is_some_and(|lag| lag <= self.replica_max_lag.as_secs_f64());
            replica.in_rotation.store(in_rotation, Ordering::Release);
            statuses.push(ReplicaStatus {
                name: replica.pool.name,
                lag_seconds: lag,
                in_rotation,
            });
        }
        statuses
    }
}
