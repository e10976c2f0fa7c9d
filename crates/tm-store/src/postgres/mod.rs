//! The fleet backend: PostgreSQL through a pool of primary connections, one reserved
//! for critical writes, and optional read replicas.
//!
//! Every connection starts with `statement_timeout` and
//! `idle_in_transaction_session_timeout` set, so a stuck query or a forgotten
//! transaction cannot hold a connection for long.

mod backup;
mod connect;
mod pooling;
mod replicas;
mod statements;

use std::borrow::Cow;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgListener};
use sqlx::{Arguments, Connection, PgConnection, Postgres};
use tm_domain::GroupKey;

use crate::pool::CountedPool;
use crate::sql::{run_statements, Backend, Own, ReadVia, Statements, Value};
use crate::{
    changed_groups, ChangeFeed, ChangePosition, ChangeRow, ChangeSubscription, Changes, ReadFrom,
    ReplicaStatus, StoreError, StoreOps,
};
use replicas::Replica;

/// Groups read by one statement.
const GROUPS_PER_QUERY: usize = 1_000;

/// The PostgreSQL store.
pub struct PostgresStore {
    /// This process's name in the change notifications of its writes.
    instance: String,
    /// Read replicas; reads that may lag go to one in the rotation.
    replicas: Vec<Replica>,
    replica_max_lag: Duration,
    /// Where the next replica read starts looking (round robin).
    next_replica: AtomicUsize,
    /// One connection of its own for `LISTEN`, outside the pools requests use.
    listen: sqlx::PgPool,
    /// How a session of its own is opened on PostgreSQL itself (not a pooling proxy):
    /// for backups, which hold a connection for as long as they take.
    direct: sqlx::postgres::PgConnectOptions,
    primary: CountedPool<Postgres>,
    /// Reserved for critical writes, so the rollback path works when `primary` is full.
    critical: CountedPool<Postgres>,
}

#[cfg(feature = "test-support")]
impl PostgresStore {
    /// The primary pool, for tests that need a raw connection.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.primary.pool
    }
}

/// `values` as PostgreSQL binds them: ids as `uuid`, weights as `int2`.
fn arguments(values: Vec<Value<'_>>) -> Result<PgArguments, StoreError> {
    crate::sql::arguments::<Postgres>(values, |args, own| match own {
        Own::Id(v) => args.add(v),
        Own::OptId(v) => args.add(v),
        Own::Weight(v) => args.add(i16::from(v)),
        Own::Texts(v) => args.add(v),
    })
}

impl Backend for PostgresStore {
    type Db = Postgres;

    const DB_SYSTEM: &'static str = "postgresql";

    const JSON_CAST: &'static str = "::jsonb";

    const GROUPS_PER_QUERY: usize = GROUPS_PER_QUERY;

    fn sql() -> &'static Statements {
        &statements::STATEMENTS
    }

    fn placeholder(n: usize) -> String {
        format!("${n}")
    }

    fn active_routes_in(groups: &[GroupKey]) -> (Cow<'static, str>, Vec<Value<'_>>) {
        let column = |part: fn(&GroupKey) -> &str| Value::texts(groups.iter().map(part).collect());
        let values = vec![
            column(|k| k.tenant.as_str()),
            column(|k| k.service.as_str()),
            column(|k| k.env.as_str()),
        ];
        (Cow::Borrowed(&statements::ACTIVE_IN_GROUPS), values)
    }

    fn served_in(groups: &[GroupKey]) -> (Cow<'static, str>, Vec<Value<'_>>) {
        let (_, values) = Self::active_routes_in(groups);
        (Cow::Borrowed(&statements::SERVED_IN_GROUPS), values)
    }

    fn services_in(groups: &[GroupKey]) -> (Cow<'static, str>, Vec<Value<'_>>) {
        let (_, values) = Self::active_routes_in(groups);
        (Cow::Borrowed(statements::SERVICES_IN_GROUPS), values)
    }

    fn writer(&self) -> &CountedPool<Postgres> {
        &self.primary
    }

    fn critical(&self) -> &CountedPool<Postgres> {
        &self.critical
    }

    fn reader(&self, from: ReadFrom) -> (&CountedPool<Postgres>, ReadVia<'_>) {
        match self.replica(from) {
            Some(replica) => (&replica.pool, ReadVia(Some(&replica.in_rotation))),
            None => (&self.primary, ReadVia(None)),
        }
    }

    run_statements!(PgConnection, arguments);
}

#[async_trait]
impl ChangeFeed for PostgresStore {
    async fn change_position(&self) -> Result<ChangePosition, StoreError> {
        let mut conn = self.primary.acquire().await?;
        // Every transaction older than the oldest one still running has ended: the feed
        // resumes just before it.
        let xmin: i64 =
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8")
                .fetch_one(&mut *conn)
                .await?;
        Ok(ChangePosition {
            txid: xmin - 1,
            id: i64::MAX,
        })
    }

    async fn changes_after(&self, from: ChangePosition, limit: u32) -> Result<Changes, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let rows: Vec<ChangeRow> = sqlx::query_as(
            "SELECT txid::text::int8 AS txid, id, tenant, service, env \
             FROM audit_log \
             WHERE (txid, id) > ($1::text::xid8, $2) \
               AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY txid, id LIMIT $3",
        )
        .bind(from.txid.to_string())
        .bind(from.id)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        Ok(changed_groups(rows, from, limit))
    }

    async fn subscribe(&self) -> Result<Option<ChangeSubscription>, StoreError> {
        let schema: String = {
            let mut conn = self.primary.acquire().await?;
            sqlx::query_scalar("SELECT current_schema()")
                .fetch_one(&mut *conn)
                .await?
        };
        let mut listener = PgListener::connect_with(&self.listen).await?;
        listener.listen(crate::notify::CHANNEL).await?;
        Ok(Some(ChangeSubscription::new(
            listener,
            schema,
            self.instance.clone(),
        )))
    }
}

#[async_trait]
impl StoreOps for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.primary.acquire().await?;
        conn.ping().await?;
        Ok(())
    }

    fn pool_stats(&self) -> Vec<tm_telemetry::PoolFigures> {
        let mut stats = vec![self.primary.stats(), self.critical.stats()];
        stats.extend(self.replicas.iter().map(|r| r.pool.stats()));
        stats
    }

    async fn check_replicas(&self) -> Vec<ReplicaStatus> {
        self.check_replica_lag().await
    }

    async fn close(&self) {
        self.primary.pool.close().await;
        self.critical.pool.close().await;
        self.listen.close().await;
        for replica in &self.replicas {
            replica.pool.pool.close().await;
        }
    }

    #[cfg(feature = "test-support")]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
