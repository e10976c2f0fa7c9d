//! The embedded backend: one SQLite file in WAL mode.
//!
//! SQLite allows one writer at a time, so writes go through a pool of exactly one
//! connection (queueing in-process instead of spinning on `SQLITE_BUSY`), and reads
//! through a separate read-only pool that WAL lets run beside the writer.

mod backup;
mod statements;

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions,
    SqliteSynchronous as Sync,
};
use sqlx::{Arguments, Connection, Sqlite, SqliteConnection};
use tm_config::{PoolConfig, SqliteConfig, SqliteSynchronous};
use tm_domain::GroupKey;

use crate::pool::{CountedPool, StoreCounters};
use crate::sql::{run_statements, Backend, Own, ReadVia, Statements, Value};
use crate::{
    changed_groups, ChangeFeed, ChangePosition, ChangeRow, Changes, ReadFrom, StoreError, StoreOps,
};

/// Groups read by one statement (three bound values each, well under SQLite's limit).
const GROUPS_PER_QUERY: usize = 200;

/// How long a statement waits for a lock held by another process (e.g. `migrate`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What opens a write transaction: it takes the write lock at once, so that a
/// transaction that reads before it writes cannot fail to upgrade its lock.
const BEGIN: &str = "BEGIN IMMEDIATE";

/// The SQLite store.
pub struct SqliteStore {
    writer: CountedPool<Sqlite>,
    /// A second writer connection for critical writes, so the rollback path does not
    /// queue behind ordinary writes (SQLite's own lock still orders the two).
    critical: CountedPool<Sqlite>,
    reader: CountedPool<Sqlite>,
    /// How its connections are opened, for the backups' connections of their own.
    options: SqliteConnectOptions,
}

impl SqliteStore {
    /// Opens (creating if needed) the configured database file and applies migrations.
    pub async fn connect(
        config: &SqliteConfig,
        pool: &PoolConfig,
        counters: StoreCounters,
    ) -> Result<Self, StoreError> {
        let SqliteConfig { path, synchronous } = config;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match *synchronous {
                SqliteSynchronous::Full => Sync::Full,
                SqliteSynchronous::Normal => Sync::Normal,
            })
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(pool.acquire_timeout)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let critical = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(pool.acquire_timeout)
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(pool.max_connections)
            .min_connections(pool.min_connections)
            .acquire_timeout(pool.acquire_timeout)
            .idle_timeout(pool.idle_timeout)
            .max_lifetime(pool.max_lifetime)
            .connect_with(options.clone().read_only(true))
            .await?;
        Ok(Self {
            writer: CountedPool::new("writer", writer, counters.clone())
                .transactions_begin_with(BEGIN),
            critical: CountedPool::new("critical", critical, counters.clone())
                .transactions_begin_with(BEGIN),
            reader: CountedPool::new("reader", reader, counters),
            options,
        })
    }
}

#[cfg(feature = "test-support")]
impl SqliteStore {
    /// The writer and reader pools (not the critical one), for tests.
    pub fn pools(&self) -> (&sqlx::SqlitePool, &sqlx::SqlitePool) {
        (&self.writer.pool, &self.reader.pool)
    }
}

/// `values` as SQLite binds them: ids as text, weights as integers.
fn arguments(values: Vec<Value<'_>>) -> Result<SqliteArguments<'_>, StoreError> {
    crate::sql::arguments::<Sqlite>(values, |args, own| match own {
        Own::Id(v) => args.add(v.to_string()),
        Own::OptId(v) => args.add(v.map(|id| id.to_string())),
        Own::Weight(v) => args.add(i64::from(v)),
        Own::Texts(_) => Err("SQLite binds no arrays".into()),
    })
}

impl Backend for SqliteStore {
    type Db = Sqlite;

    const DB_SYSTEM: &'static str = "sqlite";

    const JSON_CAST: &'static str = "";

    const GROUPS_PER_QUERY: usize = GROUPS_PER_QUERY;

    fn sql() -> &'static Statements {
        &statements::STATEMENTS
    }

    /// Anonymous: values are bound in order. SQLite lists numbered placeholders, and the
    /// driver asks each one's name by walking that list, which made a thousand-row
    /// insert (ten thousand values) quadratic: 86% of an import's time.
    fn placeholder(_n: usize) -> String {
        "?".to_owned()
    }

    fn active_routes_in(groups: &[GroupKey]) -> (Cow<'static, str>, Vec<Value<'_>>) {
        let (from, values) = groups_then(groups, "routes");
        let sql = format!(
            "SELECT {} FROM {from} WHERE routes.active = 1 AND {}",
            statements::ROUTE_COLUMNS,
            in_group("routes")
        );
        (Cow::Owned(sql), values)
    }

    fn served_in(groups: &[GroupKey]) -> (Cow<'static, str>, Vec<Value<'_>>) {
        let (from, values) = groups_then(groups, statements::SERVED_FROM);
        let sql = format!(
            "SELECT {} FROM {from} WHERE routes.active = 1 AND {}",
            statements::SERVED_COLUMNS,
            in_group("routes")
        );
        (Cow::Owned(sql), values)
    }

    fn services_in(groups: &[GroupKey]) -> (Cow<'static, str>, Vec<Value<'_>>) {
        let (from, values) = groups_then(groups, "services");
        let sql = format!(
            "SELECT tenant, service, env, generation, policy FROM {from} WHERE {}",
            in_group("services")
        );
        (Cow::Owned(sql), values)
    }

    fn writer(&self) -> &CountedPool<Sqlite> {
        &self.writer
    }

    fn critical(&self) -> &CountedPool<Sqlite> {
        &self.critical
    }

    /// Every read goes to the reader pool: there are no replicas.
    fn reader(&self, _from: ReadFrom) -> (&CountedPool<Sqlite>, ReadVia<'_>) {
        (&self.reader, ReadVia(None))
    }

    run_statements!(SqliteConnection, arguments);
}

#[async_trait]
impl ChangeFeed for SqliteStore {
    async fn change_position(&self) -> Result<ChangePosition, StoreError> {
        let mut conn = self.reader.acquire().await?;
        // Writes are serialized, so audit ids commit in order: the newest id is the position.
        let id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM audit_log")
            .fetch_one(&mut *conn)
            .await?;
        Ok(ChangePosition { txid: 0, id })
    }

    async fn changes_after(&self, from: ChangePosition, limit: u32) -> Result<Changes, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let rows: Vec<ChangeRow> = sqlx::query_as(
            "SELECT 0 AS txid, id, tenant, service, env \
             FROM audit_log WHERE id > ?1 ORDER BY id LIMIT ?2",
        )
        .bind(from.id)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        Ok(changed_groups(rows, from, limit))
    }
}

/// `groups` as a table of values `g`, cross-joined with `table`, and its values. The
/// groups come first in the join so that each is looked up by the table's key; SQLite
/// answers `(tenant, service, env) IN (<row values>)` by scanning the whole table.
fn groups_then<'a>(groups: &'a [GroupKey], table: &str) -> (String, Vec<Value<'a>>) {
    let tuples = vec!["(?, ?, ?)"; groups.len()].join(", ");
    let values = groups
        .iter()
        .flat_map(|k| [k.tenant.as_str(), k.service.as_str(), k.env.as_str()])
        .map(Value::Text)
        .collect();
    (format!("(VALUES {tuples}) AS g CROSS JOIN {table}"), values)
}

/// The condition joining `table`'s rows to the groups of [`groups_then`].
fn in_group(table: &str) -> String {
    format!(
        "{table}.tenant = g.column1 AND {table}.service = g.column2 AND {table}.env = g.column3"
    )
}

#[async_trait]
impl StoreOps for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.reader.acquire().await?;
        conn.ping().await?;
        Ok(())
    }

    fn pool_stats(&self) -> Vec<tm_telemetry::PoolFigures> {
        vec![
            self.writer.stats(),
            self.reader.stats(),
            self.critical.stats(),
        ]
    }

    async fn close(&self) {
        self.reader.pool.close().await;
        self.writer.pool.close().await;
        self.critical.pool.close().await;
    }

    #[cfg(feature = "test-support")]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What SQLite plans for `sql` with `values`: one line per step.
    async fn plan(store: &SqliteStore, sql: &str, values: Vec<Value<'_>>) -> Vec<String> {
        let mut conn = store.reader.pool.acquire().await.expect("a connection");
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as_with(&explain, arguments(values).expect("binds"))
                .fetch_all(&mut *conn)
                .await
                .expect("planned");
        rows.into_iter().map(|(_, _, _, step)| step).collect()
    }

    /// Reading some groups' routes or services looks each group up by its key: a write's
    /// snapshot refresh and an import read a few groups out of millions; the reads of
    /// the checked routes start from the few that are.
    #[tokio::test]
    async fn reads_of_some_groups_look_each_up_rather_than_scan_the_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = tm_config::RawConfig {
            process: tm_config::ProcessRaw {
                data_dir: dir.path().into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let config = tm_config::Config::try_from(raw).expect("valid");
        let sqlite = SqliteConfig {
            path: dir.path().join("plan.db"),
            synchronous: SqliteSynchronous::Normal,
        };
        let store = SqliteStore::connect(&sqlite, &config.pool, StoreCounters::default())
            .await
            .expect("opens");
        let groups: Vec<GroupKey> = (0..3)
            .map(|i| GroupKey {
                tenant: tm_domain::TenantId::parse("acme").expect("valid"),
                service: tm_domain::ServiceName::parse(&format!("svc-{i}")).expect("valid"),
                env: tm_domain::EnvName::parse("prod").expect("valid"),
            })
            .collect();
        for (name, (sql, values)) in [
            ("active_routes_in", SqliteStore::active_routes_in(&groups)),
            ("served_in", SqliteStore::served_in(&groups)),
            ("services_in", SqliteStore::services_in(&groups)),
        ] {
            let steps = plan(&store, &sql, values).await;
            for table in ["routes", "services", "route_health"] {
                assert!(
                    !steps
                        .iter()
                        .any(|step| step.starts_with(&format!("SCAN {table}"))),
                    "{name} scans {table}: {steps:?}"
                );
            }
            assert!(
                steps.iter().any(|step| step.starts_with("SEARCH")),
                "{name} looks nothing up: {steps:?}"
            );
        }
        // What the probes and the health gauges read every few seconds: the checked
        // routes, few among many, found from the health table or the services with a
        // policy.
        let sql = &statements::STATEMENTS;
        for (name, statement) in [
            ("checked_routes", &sql.checked_routes),
            ("active_health", &sql.active_health),
            ("health_not_stopped", &sql.health_not_stopped),
            ("all_health", &sql.all_health),
        ] {
            let steps = plan(&store, statement, Vec::new()).await;
            assert!(
                steps
                    .iter()
                    .filter(|step| step.starts_with("SCAN"))
                    .all(|step| step == "SCAN h"
                        || step == "SCAN route_health"
                        || step.ends_with("USING INDEX services_with_policy")),
                "{name} scans more than the checked routes: {steps:?}"
            );
        }
        store.close().await;
    }
}
