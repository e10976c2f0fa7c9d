//! The fleet backend: PostgreSQL through one pool of primary connections.
//!
//! Every connection starts with `statement_timeout` and
//! `idle_in_transaction_session_timeout` set, so a stuck query or a forgotten
//! transaction cannot hold a connection for long.

use std::str::FromStr;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres};
use tm_config::{PoolConfig, PostgresConfig};
use tm_domain::{now, GroupKey, KeyId, NewRoute, Route, RouteId, RouteKey, RoutePatch, TenantId};

use crate::pool::{CountedPool, StoreCounters};
use crate::row::{audit_json, keys, routes, AuditRow, KeyRow, RouteRow};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{
    changed_groups, check_access, error::is_unique_violation, Actor, AuditAction, AuditEntry,
    ChangePosition, ChangeRow, ChangeSubscription, Changes, ExpectedRevisions, KeyRecord, Page,
    PoolStats, ReadFrom, ReplicaStatus, RouteFilter, Store, StoreError,
};

/// Routes per statement in a bulk import (11 parameters each, under the 65535 limit).
const IMPORT_BATCH: usize = 1000;

/// Pool names (and `replica` labels) of the read replicas, in configuration order.
const REPLICA_POOLS: [&str; tm_config::MAX_REPLICAS] = [
    "replica1", "replica2", "replica3", "replica4", "replica5", "replica6", "replica7", "replica8",
];

/// How long a replica's lag check may take before the replica counts as unreachable.
const REPLICA_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// One read replica and whether it serves reads now.
struct Replica {
    pool: CountedPool<Postgres>,
    in_rotation: AtomicBool,
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

/// The replica a read went to, if any: a read that fails for want of the replica takes
/// it out of the rotation until the next check finds it well.
#[derive(Clone, Copy)]
struct ReadVia<'a>(Option<&'a Replica>);

impl ReadVia<'_> {
    fn track<T>(self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let (Some(replica), Err(StoreError::Unavailable(_))) = (self.0, &result) {
            replica.in_rotation.store(false, Ordering::Release);
        }
        result
    }
}

impl PostgresStore {
    /// The pool a read goes to: a replica in the rotation (round robin) when `from`
    /// allows it, else the primary.
    fn reader(&self, from: ReadFrom) -> (&CountedPool<Postgres>, ReadVia<'_>) {
        if from == ReadFrom::AnyReplica && !self.replicas.is_empty() {
            let start = self.next_replica.fetch_add(1, Ordering::Relaxed);
            let count = self.replicas.len();
            for offset in 0..count {
                let replica = &self.replicas[(start + offset) % count];
                if replica.in_rotation.load(Ordering::Acquire) {
                    return (&replica.pool, ReadVia(Some(replica)));
                }
            }
        }
        (&self.primary, ReadVia(None))
    }
}

/// Groups read by one statement.
const GROUPS_PER_QUERY: usize = 1_000;

const ROUTE_COLUMNS: &str =
    "id::text AS id, tenant, service, env, version, url, active, weight::int8 AS weight, \
                             revision, created_at, updated_at";

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
    primary: CountedPool<Postgres>,
    /// Reserved for critical writes, so the rollback path works when `primary` is full.
    critical: CountedPool<Postgres>,
}

impl PostgresStore {
    /// Connects to the configured primary and applies migrations.
    pub async fn connect(
        config: &PostgresConfig,
        pool: &PoolConfig,
        counters: StoreCounters,
    ) -> Result<Self, StoreError> {
        let PostgresConfig {
            url,
            statement_timeout,
            idle_in_transaction_timeout,
            statement_cache,
            transaction_pooling,
            direct_url,
            replicas,
            replica_max_lag,
        } = config;
        // Every connection, to the primary or a replica, carries the same time-outs.
        let instance = uuid::Uuid::now_v7().simple().to_string();
        let timeouts = [
            (
                "statement_timeout",
                format!("{}ms", statement_timeout.as_millis()),
            ),
            (
                "idle_in_transaction_session_timeout",
                format!("{}ms", idle_in_transaction_timeout.as_millis()),
            ),
        ];
        // A session of its own: settings as startup options.
        let session = |url: &SecretString| -> Result<PgConnectOptions, StoreError> {
            let options = PgConnectOptions::from_str(url.expose_secret())?
                .application_name("traffic-manager")
                .options(timeouts.clone());
            Ok(if *statement_cache {
                options
            } else {
                options.statement_cache_capacity(0)
            })
        };
        // Connect options and, behind a transaction-pooling proxy, the statement that
        // opens each lease's transaction with the settings (see `Lease`).
        let lent = |url: &SecretString,
                    tagged: bool|
         -> Result<(PgConnectOptions, Option<Arc<str>>), StoreError> {
            if !*transaction_pooling {
                let options = session(url)?;
                return Ok((
                    if tagged {
                        options.options([("traffic_manager.instance", &instance)])
                    } else {
                        options
                    },
                    None,
                ));
            }
            let (stripped, from_url) = split_startup_options(url.expose_secret())?;
            let options = PgConnectOptions::from_str(&stripped)?
                .application_name("traffic-manager")
                .statement_cache_capacity(0);
            let mut settings: Vec<(String, String)> = timeouts
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .chain(from_url)
                .collect();
            if tagged {
                settings.push(("traffic_manager.instance".into(), instance.clone()));
            }
            Ok((options, Some(begin_with_settings(&settings).into())))
        };
        let (options, pin) = lent(url, true)?;
        let critical = PgPoolOptions::new()
            .max_connections(pool.critical_connections)
            .min_connections(1)
            .acquire_timeout(pool.acquire_timeout)
            .idle_timeout(pool.idle_timeout)
            .max_lifetime(pool.max_lifetime)
            .connect_with(options.clone())
            .await?;
        let primary = PgPoolOptions::new()
            .max_connections(pool.max_connections)
            .min_connections(pool.min_connections)
            .acquire_timeout(pool.acquire_timeout)
            .idle_timeout(pool.idle_timeout)
            .max_lifetime(pool.max_lifetime)
            .connect_with(options.clone())
            .await?;
        // Migrations and LISTEN need a session: PostgreSQL itself, not a pooling proxy.
        let direct = session(direct_url.as_ref().unwrap_or(url))?
            .options([("traffic_manager.instance", &instance)]);
        {
            let migrator = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(pool.acquire_timeout)
                .connect_with(direct.clone())
                .await?;
            let migrated = sqlx::migrate!("./migrations/postgres").run(&migrator).await;
            migrator.close().await;
            migrated?;
        }
        let listen = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(pool.acquire_timeout)
            .connect_lazy_with(direct);
        let mut replica_pools = Vec::with_capacity(replicas.len());
        for (url, name) in replicas.iter().zip(REPLICA_POOLS) {
            let (options, pin) = lent(url, false)?;
            // Lazy: a replica that is down at start-up leaves the rotation, not the process.
            let pool = PgPoolOptions::new()
                .max_connections(pool.max_connections)
                .min_connections(0)
                .acquire_timeout(pool.acquire_timeout)
                .idle_timeout(pool.idle_timeout)
                .max_lifetime(pool.max_lifetime)
                .connect_lazy_with(options);
            replica_pools.push(Replica {
                pool: CountedPool::new(name, pool, counters.clone()).pinned(pin),
                in_rotation: AtomicBool::new(false),
            });
        }
        Ok(Self {
            instance,
            replicas: replica_pools,
            replica_max_lag: *replica_max_lag,
            next_replica: AtomicUsize::new(0),
            listen,
            primary: CountedPool::new("primary", primary, counters.clone()).pinned(pin.clone()),
            critical: CountedPool::new("critical", critical, counters).pinned(pin),
        })
    }
}

impl PostgresStore {
    /// The primary pool, for tools and tests that need a raw connection.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.primary.pool
    }
}

/// The route with `key`, locked until the transaction ends.
async fn lock_by_key(conn: &mut PgConnection, key: &RouteKey) -> Result<Route, StoreError> {
    let row: Option<RouteRow> = sqlx::query_as(&format!(
        "SELECT {ROUTE_COLUMNS} FROM routes WHERE tenant = $1 AND service = $2 AND env = $3 AND version = $4 FOR UPDATE"
    ))
    .bind(key.tenant.as_str())
    .bind(key.service.as_str())
    .bind(key.env.as_str())
    .bind(key.version.as_str())
    .fetch_optional(conn)
    .await?;
    row.ok_or(StoreError::NotFound)?.try_into()
}

/// The route with `id`, locked until the transaction ends.
async fn lock_by_id(conn: &mut PgConnection, id: RouteId) -> Result<Route, StoreError> {
    let row: Option<RouteRow> = sqlx::query_as(&format!(
        "SELECT {ROUTE_COLUMNS} FROM routes WHERE id = $1 FOR UPDATE"
    ))
    .bind(id.as_uuid())
    .fetch_optional(conn)
    .await?;
    row.ok_or(StoreError::NotFound)?.try_into()
}

/// Stores `next` over `current` (same id); the row is locked, so the update cannot miss.
async fn write_update(
    conn: &mut PgConnection,
    current: &Route,
    next: &Route,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE routes SET url = $1, active = $2, weight = $3, revision = $4, updated_at = $5 \
         WHERE id = $6 AND revision = $7",
    )
    .bind(next.url.as_str())
    .bind(next.active)
    .bind(i16::from(next.weight.get()))
    .bind(next.revision)
    .bind(next.updated_at)
    .bind(current.id.as_uuid())
    .bind(current.revision)
    .execute(conn)
    .await?;
    Ok(())
}

async fn audit(
    conn: &mut PgConnection,
    actor: &Actor,
    action: AuditAction,
    id: RouteId,
    before: Option<&Route>,
    after: Option<&Route>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, route_id, before, after) \
         VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)",
    )
    .bind(now())
    .bind(actor.as_str())
    .bind(action.as_str())
    .bind(id.as_uuid())
    .bind(audit_json(before))
    .bind(audit_json(after))
    .execute(conn)
    .await?;
    Ok(())
}

const KEY_COLUMNS: &str = "id::text AS id, name, role, tenant, secret_hash, created_at";

async fn insert_key(conn: &mut PgConnection, record: &KeyRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO api_keys (id, name, role, tenant, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(record.id.as_uuid())
    .bind(&record.name)
    .bind(record.grant.role().as_str())
    .bind(record.grant.tenant().map(|t| t.as_str()))
    .bind(record.secret_hash.as_bytes().as_slice())
    .bind(record.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn create_route(&self, new: NewRoute, actor: &Actor) -> Result<Route, StoreError> {
        let route = new.into_route(RouteId::generate(), now());
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO routes (id, tenant, service, env, version, url, active, weight, revision, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (tenant, service, env, version) DO NOTHING",
        )
        .bind(route.id.as_uuid())
        .bind(route.tenant.as_str())
        .bind(route.service.as_str())
        .bind(route.env.as_str())
        .bind(route.version.as_str())
        .bind(route.url.as_str())
        .bind(route.active)
        .bind(i16::from(route.weight.get()))
        .bind(route.revision)
        .bind(route.created_at)
        .bind(route.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict } else { e.into() })?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict);
        }
        audit(
            &mut tx,
            actor,
            AuditAction::Create,
            route.id,
            None,
            Some(&route),
        )
        .await?;
        tx.commit().await?;
        conn.finish().await?;
        Ok(route)
    }

    async fn import_routes(&self, routes: &[Route], actor: &Actor) -> Result<(), StoreError> {
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        let at = now();
        for chunk in routes.chunks(IMPORT_BATCH) {
            let mut insert = sqlx::QueryBuilder::<Postgres>::new(
                "INSERT INTO routes (id, tenant, service, env, version, url, active, weight, revision, created_at, updated_at) ",
            );
            insert.push_values(chunk, |mut row, r| {
                row.push_bind(r.id.as_uuid())
                    .push_bind(r.tenant.as_str())
                    .push_bind(r.service.as_str())
                    .push_bind(r.env.as_str())
                    .push_bind(r.version.as_str())
                    .push_bind(r.url.as_str())
                    .push_bind(r.active)
                    .push_bind(i16::from(r.weight.get()))
                    .push_bind(r.revision)
                    .push_bind(r.created_at)
                    .push_bind(r.updated_at);
            });
            insert.build().execute(&mut *tx).await.map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict
                } else {
                    e.into()
                }
            })?;
            let mut audit = sqlx::QueryBuilder::<Postgres>::new(
                "INSERT INTO audit_log (at, actor, action, route_id, before, after) ",
            );
            audit.push_values(chunk, |mut row, r| {
                row.push_bind(at)
                    .push_bind(actor.as_str())
                    .push_bind(AuditAction::Create.as_str())
                    .push_bind(r.id.as_uuid())
                    .push_bind(None::<String>)
                    .push_unseparated("::jsonb")
                    .push_bind(audit_json(Some(r)))
                    .push_unseparated("::jsonb");
            });
            audit.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        conn.finish().await?;
        Ok(())
    }

    async fn set_active(
        &self,
        key: &RouteKey,
        active: bool,
        actor: &Actor,
    ) -> Result<Route, StoreError> {
        let mut conn = self.critical.acquire().await?;
        let mut tx = conn.begin().await?;
        let current = lock_by_key(&mut tx, key).await?;
        let Some(next) = current.with_active(active, now()) else {
            return Ok(current);
        };
        write_update(&mut tx, &current, &next).await?;
        let action = if active {
            AuditAction::Activate
        } else {
            AuditAction::Deactivate
        };
        audit(&mut tx, actor, action, next.id, Some(&current), Some(&next)).await?;
        tx.commit().await?;
        conn.finish().await?;
        Ok(next)
    }

    async fn update_route(
        &self,
        id: RouteId,
        scope: Option<&TenantId>,
        patch: &RoutePatch,
        expected: ExpectedRevisions<'_>,
        actor: &Actor,
    ) -> Result<Route, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        let current = lock_by_id(&mut tx, id).await?;
        check_access(&current, scope, expected)?;
        let Some(next) = current.with_patch(patch, now()) else {
            return Ok(current);
        };
        write_update(&mut tx, &current, &next).await?;
        audit(
            &mut tx,
            actor,
            AuditAction::Update,
            id,
            Some(&current),
            Some(&next),
        )
        .await?;
        tx.commit().await?;
        conn.finish().await?;
        Ok(next)
    }

    async fn delete_route(
        &self,
        id: RouteId,
        scope: Option<&TenantId>,
        expected: ExpectedRevisions<'_>,
        actor: &Actor,
    ) -> Result<Route, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        let current = lock_by_id(&mut tx, id).await?;
        check_access(&current, scope, expected)?;
        sqlx::query("DELETE FROM routes WHERE id = $1")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            actor,
            AuditAction::Delete,
            id,
            Some(&current),
            None,
        )
        .await?;
        tx.commit().await?;
        conn.finish().await?;
        Ok(current)
    }

    async fn get_route(&self, id: RouteId, from: ReadFrom) -> Result<Option<Route>, StoreError> {
        let (pool, replica) = self.reader(from);
        let mut conn = replica.track(pool.acquire().await)?;
        let row: Result<Option<RouteRow>, _> =
            sqlx::query_as(&format!("SELECT {ROUTE_COLUMNS} FROM routes WHERE id = $1"))
                .bind(id.as_uuid())
                .fetch_optional(&mut *conn)
                .await;
        let row = replica.track(row.map_err(StoreError::from))?;
        row.map(Route::try_from).transpose()
    }

    async fn list_routes(
        &self,
        filter: &RouteFilter,
        page: Page,
        from: ReadFrom,
    ) -> Result<Vec<Route>, StoreError> {
        let (pool, replica) = self.reader(from);
        let mut conn = replica.track(pool.acquire().await)?;
        let rows: Result<Vec<RouteRow>, _> = sqlx::query_as(&format!(
            "SELECT {ROUTE_COLUMNS} FROM routes \
             WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR service = $2) \
               AND ($3::text IS NULL OR env = $3) AND ($4::bool IS NULL OR active = $4) \
               AND ($5::uuid IS NULL OR id > $5) \
             ORDER BY id LIMIT $6"
        ))
        .bind(filter.tenant.as_ref().map(|t| t.as_str()))
        .bind(filter.service.as_ref().map(|s| s.as_str()))
        .bind(filter.env.as_ref().map(|e| e.as_str()))
        .bind(filter.active)
        .bind(page.after.map(|id| id.as_uuid()))
        .bind(i64::from(page.limit))
        .fetch_all(&mut *conn)
        .await;
        routes(replica.track(rows.map_err(StoreError::from))?)
    }

    async fn active_routes_in_groups(&self, keys: &[GroupKey]) -> Result<Vec<Route>, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let mut found = Vec::new();
        for chunk in keys.chunks(GROUPS_PER_QUERY) {
            let column = |part: fn(&GroupKey) -> &str| chunk.iter().map(part).collect::<Vec<_>>();
            let rows: Vec<RouteRow> = sqlx::query_as(&format!(
                "SELECT {ROUTE_COLUMNS} FROM routes WHERE active AND (tenant, service, env) IN \
                 (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))"
            ))
            .bind(column(|k| k.tenant.as_str()))
            .bind(column(|k| k.service.as_str()))
            .bind(column(|k| k.env.as_str()))
            .fetch_all(&mut *conn)
            .await?;
            found.extend(routes(rows)?);
        }
        Ok(found)
    }

    async fn active_routes_page(
        &self,
        after: Option<&RouteKey>,
        limit: u32,
    ) -> Result<Vec<Route>, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let rows: Vec<RouteRow> = match after {
            None => {
                sqlx::query_as(&format!(
                    "SELECT {ROUTE_COLUMNS} FROM routes WHERE active \
                     ORDER BY tenant, service, env, version LIMIT $1"
                ))
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?
            }
            Some(key) => {
                sqlx::query_as(&format!(
                    "SELECT {ROUTE_COLUMNS} FROM routes WHERE active \
                     AND (tenant, service, env, version) > ($1, $2, $3, $4) \
                     ORDER BY tenant, service, env, version LIMIT $5"
                ))
                .bind(key.tenant.as_str())
                .bind(key.service.as_str())
                .bind(key.env.as_str())
                .bind(key.version.as_str())
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?
            }
        };
        routes(rows)
    }

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
            "SELECT txid::text::int8 AS txid, id, \
                    COALESCE(after, before)->>'tenant' AS tenant, \
                    COALESCE(after, before)->>'service' AS service, \
                    COALESCE(after, before)->>'env' AS env \
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

    async fn audit_log(&self, route_id: RouteId) -> Result<Vec<AuditEntry>, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, at, actor, action, route_id::text AS route_id, before::text AS before, after::text AS after \
             FROM audit_log WHERE route_id = $1 ORDER BY id",
        )
        .bind(route_id.as_uuid())
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter().map(AuditEntry::try_from).collect()
    }

    async fn create_key(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let mut conn = self.primary.acquire().await?;
        insert_key(&mut conn, record).await?;
        conn.finish().await
    }

    async fn create_first_key(&self, record: &KeyRecord) -> Result<bool, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let mut tx = conn.begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO bootstrap (id, key_id, created_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(record.id.as_uuid())
        .bind(record.created_at)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            return Ok(false);
        }
        let any: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
            .fetch_one(&mut *tx)
            .await?;
        if any > 0 {
            // Keys made before the bootstrap row existed (e.g. with the CLI) count too.
            return Ok(false);
        }
        insert_key(&mut tx, record).await?;
        tx.commit().await?;
        conn.finish().await?;
        Ok(true)
    }

    async fn get_key(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let row: Option<KeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND revoked_at IS NULL"
        ))
        .bind(id.as_uuid())
        .fetch_optional(&mut *conn)
        .await?;
        row.map(KeyRecord::try_from).transpose()
    }

    async fn list_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRecord>, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let rows: Vec<KeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL AND ($1::text IS NULL OR tenant = $1) ORDER BY id"
        ))
        .bind(tenant.map(|t| t.as_str()))
        .fetch_all(&mut *conn)
        .await?;
        keys(rows)
    }

    async fn revoke_key(&self, id: KeyId) -> Result<(), StoreError> {
        let mut conn = self.primary.acquire().await?;
        let revoked =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now())
                .bind(id.as_uuid())
                .execute(&mut *conn)
                .await?;
        if revoked.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        conn.finish().await
    }

    async fn active_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let rows: Vec<KeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL"
        ))
        .fetch_all(&mut *conn)
        .await?;
        keys(rows)
    }

    async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        pending_for: std::time::Duration,
    ) -> Result<Option<crate::IdempotencyRecord>, StoreError> {
        let now = crate::row::unix_ms(std::time::SystemTime::now());
        let mut conn = self.primary.acquire().await?;
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND expires_at <= $3",
        )
        .bind(scope)
        .bind(key)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, response, expires_at) \
             VALUES ($1, $2, $3, NULL, $4) ON CONFLICT (scope, key) DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(fingerprint)
        .bind(now.saturating_add(crate::row::millis(pending_for)))
        .execute(&mut *conn)
        .await?;
        if claimed.rows_affected() == 1 {
            conn.finish().await?;
            return Ok(None);
        }
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT fingerprint, response FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            Some((fingerprint, response)) => {
                crate::row::idempotency_record(fingerprint, response).map(Some)
            }
            // Expired and deleted by another claim between the two statements: that claim
            // holds the key now.
            None => Ok(Some(crate::IdempotencyRecord {
                fingerprint: fingerprint.to_owned(),
                response: None,
            })),
        }
    }

    async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        response: &crate::StoredResponse,
        keep_for: std::time::Duration,
    ) -> Result<(), StoreError> {
        let expires_at = crate::row::unix_ms(std::time::SystemTime::now())
            .saturating_add(crate::row::millis(keep_for));
        let mut conn = self.primary.acquire().await?;
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, response, expires_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, key) DO UPDATE \
             SET fingerprint = excluded.fingerprint, response = excluded.response, \
                 expires_at = excluded.expires_at",
        )
        .bind(scope)
        .bind(key)
        .bind(fingerprint)
        .bind(crate::row::response_json(response))
        .bind(expires_at)
        .execute(&mut *conn)
        .await?;
        conn.finish().await
    }

    async fn release_idempotency_key(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        let mut conn = self.primary.acquire().await?;
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND response IS NULL",
        )
        .bind(scope)
        .bind(key)
        .execute(&mut *conn)
        .await?;
        conn.finish().await
    }

    async fn get_idempotency_key(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<crate::IdempotencyRecord>, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT fingerprint, response FROM idempotency_keys \
             WHERE scope = $1 AND key = $2 AND expires_at > $3",
        )
        .bind(scope)
        .bind(key)
        .bind(crate::row::unix_ms(std::time::SystemTime::now()))
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|(fingerprint, response)| crate::row::idempotency_record(fingerprint, response))
            .transpose()
    }

    async fn purge_idempotency_keys(&self) -> Result<u64, StoreError> {
        let mut conn = self.primary.acquire().await?;
        let purged = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
            .bind(crate::row::unix_ms(std::time::SystemTime::now()))
            .execute(&mut *conn)
            .await?;
        conn.finish().await?;
        Ok(purged.rows_affected())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.primary.acquire().await?;
        conn.ping().await?;
        Ok(())
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        let mut stats = vec![self.primary.stats(), self.critical.stats()];
        stats.extend(self.replicas.iter().map(|r| r.pool.stats()));
        stats
    }

    async fn close(&self) {
        self.primary.pool.close().await;
        self.critical.pool.close().await;
        self.listen.close().await;
        for replica in &self.replicas {
            replica.pool.pool.close().await;
        }
    }

    async fn check_replicas(&self) -> Vec<ReplicaStatus> {
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

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// `url` without its `options` parameter, and the `-c name=value` settings that were in
/// it (a pooling proxy refuses startup options; they are applied per transaction).
fn split_startup_options(url: &str) -> Result<(String, Vec<(String, String)>), StoreError> {
    let bad = |why: &str| StoreError::Corrupt(format!("database URL: {why}"));
    let mut parsed = url::Url::parse(url).map_err(|_| bad("not a URL"))?;
    let mut settings = Vec::new();
    let mut kept = Vec::new();
    for (key, value) in parsed.query_pairs() {
        if key != "options" {
            kept.push((key.into_owned(), value.into_owned()));
            continue;
        }
        let mut words = value.split_whitespace();
        while let Some(word) = words.next() {
            let setting = match word.strip_prefix("-c") {
                Some("") => words.next().unwrap_or_default(),
                Some(inline) => inline,
                None => return Err(bad("options may only hold -c name=value settings")),
            };
            let (name, value) = setting
                .split_once('=')
                .ok_or_else(|| bad("an option without a value"))?;
            settings.push((name.to_owned(), value.to_owned()));
        }
    }
    parsed.set_query(None);
    if !kept.is_empty() {
        parsed.query_pairs_mut().extend_pairs(kept);
    }
    Ok((parsed.to_string(), settings))
}

/// `BEGIN` and the settings for the rest of the transaction, as one round trip.
fn begin_with_settings(settings: &[(String, String)]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let calls: Vec<String> = settings
        .iter()
        .map(|(name, value)| format!("set_config({}, {}, true)", quote(name), quote(value)))
        .collect();
    format!("BEGIN; SELECT {}", calls.join(", "))
}

#[cfg(test)]
mod pooling_tests {
    use super::*;

    #[test]
    fn startup_options_become_transaction_settings() {
        let (url, settings) = split_startup_options(
            "postgres://u:p@127.0.0.1:6432/db?sslmode=disable&options=-c%20search_path%3Dtest_1%20-cwork_mem%3D4MB",
        )
        .expect("valid");
        assert_eq!(url, "postgres://u:p@127.0.0.1:6432/db?sslmode=disable");
        assert_eq!(
            settings,
            [
                ("search_path".to_owned(), "test_1".to_owned()),
                ("work_mem".to_owned(), "4MB".to_owned())
            ]
        );
        assert!(split_startup_options("postgres://h/db?options=--search_path%3Dx").is_err());
        assert_eq!(
            begin_with_settings(&[("search_path".into(), "it's".into())]),
            "BEGIN; SELECT set_config('search_path', 'it''s', true)"
        );
    }
}
