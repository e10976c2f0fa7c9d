//! The job queue on the store: enqueue (deduplicated by key), claim by lease, finish,
//! and the dead-letter queue.

use std::time::Duration;

use async_trait::async_trait;
use tm_domain::{now, TenantId};
use uuid::Uuid;

use super::{conflict_or, insert_sql, Backend, Conn, Value};
use crate::row::{ClaimedRow, CountRow, DeadRow};
use crate::{
    ClaimedJob, DeadJob, DeadPage, JobOutcome, JobStore, NewJob, Queue, QueueDepths, StoreError,
};

const JOB_COLUMNS: [&str; 13] = [
    "id",
    "queue",
    "priority",
    "kind",
    "payload",
    "dedup_key",
    "tenant",
    "state",
    "attempts",
    "max_attempts",
    "run_at",
    "created_at",
    "updated_at",
];

/// A lease in milliseconds, as PostgreSQL adds it to its own clock.
fn lease_ms(lease: Duration) -> Value<'static> {
    Value::Int(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

fn chrono_lease(lease: Duration) -> chrono::Duration {
    chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

fn scope_value(scope: Option<&TenantId>) -> Value<'_> {
    Value::OptText(scope.map(TenantId::as_str))
}

#[async_trait]
impl<B: Backend> JobStore for B {
    #[tracing::instrument(level = "debug", name = "store.enqueue", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn enqueue(&self, job: &NewJob) -> Result<bool, StoreError> {
        let at = now();
        let sql = insert_sql::<B>(
            "jobs",
            &JOB_COLUMNS,
            &["payload"],
            1,
            " ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND state <> 'dead' DO NOTHING",
        );
        let values = vec![
            Value::id(Uuid::now_v7()),
            Value::Text(job.queue.as_str()),
            Value::Int(job.queue.priority()),
            Value::Text(&job.kind),
            Value::String(Some(job.payload.to_string())),
            Value::OptText(job.dedup_key.as_deref()),
            Value::OptText(job.tenant.as_ref().map(TenantId::as_str)),
            Value::Text("queued"),
            Value::Int(0),
            Value::Int(i64::from(job.max_attempts.max(1))),
            Value::Time(job.run_at),
            Value::Time(at),
            Value::Time(at),
        ];
        let inserted = self
            .writer()
            .write(async |conn: &mut Conn<B>| B::execute(conn, &sql, values).await)
            .await?;
        Ok(inserted == 1)
    }

    #[tracing::instrument(level = "debug", name = "store.claim_jobs", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn claim_jobs(
        &self,
        worker: &str,
        kinds: &[&str],
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let at = now();
        let reap = vec![Value::Time(at)];
        let kinds = serde_json::to_string(kinds).expect("strings serialize");
        let values = vec![
            lease_ms(lease),
            Value::Time(at + chrono_lease(lease)),
            Value::Text(worker),
            Value::Time(at),
            Value::Int(i64::from(limit)),
            Value::String(Some(kinds)),
        ];
        // Two statements, each its own transaction: a claim dropped half-way (its task
        // cancelled) leaves no transaction open behind it.
        self.writer()
            .write(async |conn: &mut Conn<B>| B::execute(conn, &B::sql().reap_leases, reap).await)
            .await?;
        let rows: Vec<ClaimedRow> = self
            .writer()
            .write(async |conn: &mut Conn<B>| {
                B::fetch_all(conn, &B::sql().claim_jobs, values).await
            })
            .await?;
        let mut jobs = rows
            .into_iter()
            .map(ClaimedJob::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        jobs.sort_by_key(|job| (job.queue, job.created_at));
        Ok(jobs)
    }

    #[tracing::instrument(level = "debug", name = "store.extend_lease", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn extend_lease(
        &self,
        id: Uuid,
        attempt: u32,
        worker: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let values = vec![
            lease_ms(lease),
            Value::Time(now() + chrono_lease(lease)),
            Value::id(id),
            Value::Text(worker),
            Value::Int(i64::from(attempt)),
        ];
        let updated = self
            .writer()
            .write(async |conn: &mut Conn<B>| {
                B::execute(conn, &B::sql().extend_lease, values).await
            })
            .await?;
        Ok(updated == 1)
    }

    #[tracing::instrument(level = "debug", name = "store.finish_job", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn finish_job(
        &self,
        id: Uuid,
        attempt: u32,
        worker: &str,
        outcome: &JobOutcome,
    ) -> Result<bool, StoreError> {
        let held = [
            Value::id(id),
            Value::Text(worker),
            Value::Int(i64::from(attempt)),
        ];
        let failed = |state: &'static str, run_at, error| {
            let mut values = vec![
                Value::Text(state),
                Value::Time(run_at),
                Value::Text(error),
                Value::Time(now()),
            ];
            values.extend(held.iter().cloned());
            (&B::sql().finish_failed, values)
        };
        let (sql, values) = match outcome {
            JobOutcome::Done => (&B::sql().finish_done, held.to_vec()),
            JobOutcome::Retry { error, run_at } => failed("queued", *run_at, error.as_str()),
            JobOutcome::Dead { error } => failed("dead", now(), error.as_str()),
        };
        let changed = self
            .writer()
            .write(async |conn: &mut Conn<B>| B::execute(conn, sql, values).await)
            .await?;
        Ok(changed == 1)
    }

    #[tracing::instrument(level = "debug", name = "store.queue_depths", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn queue_depths(&self) -> Result<QueueDepths, StoreError> {
        let mut conn = self.reader(crate::ReadFrom::Primary).0.acquire().await?;
        let rows: Vec<CountRow> = B::fetch_all(&mut conn, &B::sql().count_jobs, Vec::new()).await?;
        let mut depths = QueueDepths {
            live: Queue::ALL.into_iter().map(|q| (q, 0)).collect(),
            dead: 0,
        };
        for row in rows {
            let queue: Queue = row
                .queue
                .parse()
                .map_err(|()| StoreError::Corrupt(format!("a job's queue: {}", row.queue)))?;
            let count = u64::try_from(row.jobs).unwrap_or(0);
            if row.state == "dead" {
                depths.dead += count;
            } else if let Some((_, live)) = depths.live.iter_mut().find(|(q, _)| *q == queue) {
                *live += count;
            }
        }
        Ok(depths)
    }

    #[tracing::instrument(level = "debug", name = "store.dead_jobs", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn dead_jobs(&self, page: DeadPage<'_>) -> Result<Vec<DeadJob>, StoreError> {
        let mut conn = self.reader(crate::ReadFrom::Primary).0.acquire().await?;
        let values = vec![
            scope_value(page.tenant),
            Value::opt_id(page.after),
            Value::Int(i64::from(page.limit)),
        ];
        let rows: Vec<DeadRow> = B::fetch_all(&mut conn, &B::sql().dead_jobs, values).await?;
        rows.into_iter().map(DeadJob::try_from).collect()
    }

    #[tracing::instrument(level = "debug", name = "store.replay_dead_job", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn replay_dead_job(&self, id: Uuid, scope: Option<&TenantId>) -> Result<(), StoreError> {
        let values = vec![Value::Time(now()), Value::id(id), scope_value(scope)];
        let replayed = self
            .writer()
            .write(async |conn: &mut Conn<B>| {
                B::execute(conn, &B::sql().replay_dead_job, values)
                    .await
                    .map_err(conflict_or)
            })
            .await?;
        if replayed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", name = "store.purge_dead_job", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn purge_dead_job(&self, id: Uuid, scope: Option<&TenantId>) -> Result<(), StoreError> {
        let values = vec![Value::id(id), scope_value(scope)];
        let purged = self
            .writer()
            .write(async |conn: &mut Conn<B>| {
                B::execute(conn, &B::sql().purge_dead_job, values).await
            })
            .await?;
        if purged == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", name = "store.purge_dead_jobs", skip_all, fields(db.system = B::DB_SYSTEM))]
    async fn purge_dead_jobs(&self, scope: Option<&TenantId>) -> Result<u64, StoreError> {
        let values = vec![scope_value(scope)];
        self.writer()
            .write(async |conn: &mut Conn<B>| {
                B::execute(conn, &B::sql().purge_dead_jobs, values).await
            })
            .await
    }
}
