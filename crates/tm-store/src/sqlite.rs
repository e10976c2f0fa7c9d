//! The embedded backend: one SQLite file in WAL mode.
//!
//! SQLite allows one writer at a time, so writes go through a pool of exactly one
//! connection (queueing in-process instead of spinning on `SQLITE_BUSY`), and reads
//! through a separate read-only pool that WAL lets run beside the writer.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous as Sync,
};
use sqlx::{Connection, Sqlite, SqliteConnection};
use tm_config::{PoolConfig, SqliteConfig, SqliteSynchronous};
use tm_domain::{now, GroupKey, KeyId, NewRoute, Route, RouteId, RouteKey, RoutePatch, TenantId};

use crate::pool::{CountedPool, StoreCounters};
use crate::row::{audit_json, keys, routes, AuditRow, KeyRow, RouteRow};
use crate::{
    changed_groups, check_access, Actor, AuditAction, AuditEntry, ChangePosition, ChangeRow,
    Changes, ExpectedRevisions, KeyRecord, Page, PoolStats, ReadFrom, RouteFilter, Store,
    StoreError,
};

/// Routes per statement in a bulk import.
const IMPORT_BATCH: usize = 1000;

fn conflict_or(err: sqlx::Error) -> StoreError {
    if crate::error::is_unique_violation(&err) {
        StoreError::Conflict
    } else {
        err.into()
    }
}

const ROUTE_COLUMNS: &str =
    "id, tenant, service, env, version, url, active, weight, revision, created_at, updated_at";

/// Groups read by one statement (three bound values each, well under SQLite's limit).
const GROUPS_PER_QUERY: usize = 200;

/// How long a statement waits for a lock held by another process (e.g. `migrate`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    writer: CountedPool<Sqlite>,
    /// A second writer connection for critical writes, so the rollback path does not
    /// queue behind ordinary writes (SQLite's own lock still orders the two).
    critical: CountedPool<Sqlite>,
    reader: CountedPool<Sqlite>,
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
            .synchronous(match synchronous {
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
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self {
            writer: CountedPool::new("writer", writer, counters.clone()),
            critical: CountedPool::new("critical", critical, counters.clone()),
            reader: CountedPool::new("reader", reader, counters),
        })
    }
}

async fn route_by_key(conn: &mut SqliteConnection, key: &RouteKey) -> Result<Route, StoreError> {
    let row: Option<RouteRow> = sqlx::query_as(&format!(
        "SELECT {ROUTE_COLUMNS} FROM routes WHERE tenant = ?1 AND service = ?2 AND env = ?3 AND version = ?4"
    ))
    .bind(key.tenant.as_str())
    .bind(key.service.as_str())
    .bind(key.env.as_str())
    .bind(key.version.as_str())
    .fetch_optional(conn)
    .await?;
    row.ok_or(StoreError::NotFound)?.try_into()
}

async fn route_by_id(
    conn: &mut SqliteConnection,
    id: RouteId,
) -> Result<Option<Route>, StoreError> {
    let row: Option<RouteRow> =
        sqlx::query_as(&format!("SELECT {ROUTE_COLUMNS} FROM routes WHERE id = ?1"))
            .bind(id.to_string())
            .fetch_optional(conn)
            .await?;
    row.map(Route::try_from).transpose()
}

/// Stores `next` over `current` (same id), guarded by `current`'s revision.
async fn write_update(
    conn: &mut SqliteConnection,
    current: &Route,
    next: &Route,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE routes SET url = ?1, active = ?2, weight = ?3, revision = ?4, updated_at = ?5 \
         WHERE id = ?6 AND revision = ?7",
    )
    .bind(next.url.as_str())
    .bind(next.active)
    .bind(i64::from(next.weight.get()))
    .bind(next.revision)
    .bind(next.updated_at)
    .bind(current.id.to_string())
    .bind(current.revision)
    .execute(conn)
    .await?;
    Ok(())
}

async fn audit(
    conn: &mut SqliteConnection,
    actor: &Actor,
    action: AuditAction,
    id: RouteId,
    before: Option<&Route>,
    after: Option<&Route>,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit_log (at, actor, action, route_id, before, after) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
        .bind(now())
        .bind(actor.as_str())
        .bind(action.as_str())
        .bind(id.to_string())
        .bind(audit_json(before))
        .bind(audit_json(after))
        .execute(conn)
        .await?;
    Ok(())
}

const KEY_COLUMNS: &str = "id, name, role, tenant, secret_hash, created_at";

async fn insert_key(conn: &mut SqliteConnection, record: &KeyRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO api_keys (id, name, role, tenant, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(record.id.to_string())
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
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn create_route(&self, new: NewRoute, actor: &Actor) -> Result<Route, StoreError> {
        let route = new.into_route(RouteId::generate(), now());
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let inserted = sqlx::query(
            "INSERT INTO routes (id, tenant, service, env, version, url, active, weight, revision, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
             ON CONFLICT (tenant, service, env, version) DO NOTHING",
        )
        .bind(route.id.to_string())
        .bind(route.tenant.as_str())
        .bind(route.service.as_str())
        .bind(route.env.as_str())
        .bind(route.version.as_str())
        .bind(route.url.as_str())
        .bind(route.active)
        .bind(i64::from(route.weight.get()))
        .bind(route.revision)
        .bind(route.created_at)
        .bind(route.updated_at)
        .execute(&mut *tx)
        .await?;
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
        Ok(route)
    }

    async fn import_routes(&self, routes: &[Route], actor: &Actor) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let at = now();
        // SQLite allows 32766 bound parameters per statement: 11 per route.
        for chunk in routes.chunks(IMPORT_BATCH) {
            let mut insert = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO routes (id, tenant, service, env, version, url, active, weight, revision, created_at, updated_at) ",
            );
            insert.push_values(chunk, |mut row, r| {
                row.push_bind(r.id.to_string())
                    .push_bind(r.tenant.as_str())
                    .push_bind(r.service.as_str())
                    .push_bind(r.env.as_str())
                    .push_bind(r.version.as_str())
                    .push_bind(r.url.as_str())
                    .push_bind(r.active)
                    .push_bind(i64::from(r.weight.get()))
                    .push_bind(r.revision)
                    .push_bind(r.created_at)
                    .push_bind(r.updated_at);
            });
            insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(conflict_or)?;
            let mut audit = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO audit_log (at, actor, action, route_id, before, after) ",
            );
            audit.push_values(chunk, |mut row, r| {
                row.push_bind(at)
                    .push_bind(actor.as_str())
                    .push_bind(AuditAction::Create.as_str())
                    .push_bind(r.id.to_string())
                    .push_bind(None::<String>)
                    .push_bind(audit_json(Some(r)));
            });
            audit.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_active(
        &self,
        key: &RouteKey,
        active: bool,
        actor: &Actor,
    ) -> Result<Route, StoreError> {
        let mut conn = self.critical.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let current = route_by_key(&mut tx, key).await?;
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
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let current = route_by_id(&mut tx, id)
            .await?
            .ok_or(StoreError::NotFound)?;
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
        Ok(next)
    }

    async fn delete_route(
        &self,
        id: RouteId,
        scope: Option<&TenantId>,
        expected: ExpectedRevisions<'_>,
        actor: &Actor,
    ) -> Result<Route, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let current = route_by_id(&mut tx, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        check_access(&current, scope, expected)?;
        sqlx::query("DELETE FROM routes WHERE id = ?1")
            .bind(id.to_string())
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
        Ok(current)
    }

    async fn get_route(&self, id: RouteId, _from: ReadFrom) -> Result<Option<Route>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        route_by_id(&mut conn, id).await
    }

    async fn list_routes(
        &self,
        filter: &RouteFilter,
        page: Page,
        _from: ReadFrom,
    ) -> Result<Vec<Route>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let rows: Vec<RouteRow> = sqlx::query_as(&format!(
            "SELECT {ROUTE_COLUMNS} FROM routes \
             WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR service = ?2) AND (?3 IS NULL OR env = ?3) \
               AND (?4 IS NULL OR active = ?4) AND (?5 IS NULL OR id > ?5) \
             ORDER BY id LIMIT ?6"
        ))
        .bind(filter.tenant.as_ref().map(|t| t.as_str()))
        .bind(filter.service.as_ref().map(|s| s.as_str()))
        .bind(filter.env.as_ref().map(|e| e.as_str()))
        .bind(filter.active)
        .bind(page.after.map(|id| id.to_string()))
        .bind(i64::from(page.limit))
        .fetch_all(&mut *conn)
        .await?;
        routes(rows)
    }

    async fn active_routes_in_groups(&self, keys: &[GroupKey]) -> Result<Vec<Route>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let mut found = Vec::new();
        for chunk in keys.chunks(GROUPS_PER_QUERY) {
            let mut query = sqlx::QueryBuilder::<Sqlite>::new(format!(
                "SELECT {ROUTE_COLUMNS} FROM routes WHERE active = 1 AND (tenant, service, env) IN "
            ));
            query.push_tuples(chunk, |mut row, key| {
                row.push_bind(key.tenant.as_str())
                    .push_bind(key.service.as_str())
                    .push_bind(key.env.as_str());
            });
            let rows: Vec<RouteRow> = query.build_query_as().fetch_all(&mut *conn).await?;
            found.extend(routes(rows)?);
        }
        Ok(found)
    }

    async fn active_routes_page(
        &self,
        after: Option<&RouteKey>,
        limit: u32,
    ) -> Result<Vec<Route>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let rows: Vec<RouteRow> = match after {
            None => {
                sqlx::query_as(&format!(
                    "SELECT {ROUTE_COLUMNS} FROM routes WHERE active = 1 \
                     ORDER BY tenant, service, env, version LIMIT ?1"
                ))
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?
            }
            Some(key) => {
                sqlx::query_as(&format!(
                    "SELECT {ROUTE_COLUMNS} FROM routes WHERE active = 1 \
                     AND (tenant, service, env, version) > (?1, ?2, ?3, ?4) \
                     ORDER BY tenant, service, env, version LIMIT ?5"
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
            "SELECT 0 AS txid, id, \
                    json_extract(COALESCE(after, before), '$.tenant') AS tenant, \
                    json_extract(COALESCE(after, before), '$.service') AS service, \
                    json_extract(COALESCE(after, before), '$.env') AS env \
             FROM audit_log WHERE id > ?1 ORDER BY id LIMIT ?2",
        )
        .bind(from.id)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        Ok(changed_groups(rows, from, limit))
    }

    async fn audit_log(&self, route_id: RouteId) -> Result<Vec<AuditEntry>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, at, actor, action, route_id, before, after FROM audit_log WHERE route_id = ?1 ORDER BY id",
        )
        .bind(route_id.to_string())
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter().map(AuditEntry::try_from).collect()
    }

    async fn create_key(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        insert_key(&mut conn, record).await
    }

    async fn create_first_key(&self, record: &KeyRecord) -> Result<bool, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let claimed = sqlx::query(
            "INSERT INTO bootstrap (id, key_id, created_at) VALUES (1, ?1, ?2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(record.id.to_string())
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
        Ok(true)
    }

    async fn get_key(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let row: Option<KeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1 AND revoked_at IS NULL"
        ))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
        row.map(KeyRecord::try_from).transpose()
    }

    async fn list_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRecord>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let rows: Vec<KeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL AND (?1 IS NULL OR tenant = ?1) ORDER BY id"
        ))
        .bind(tenant.map(|t| t.as_str()))
        .fetch_all(&mut *conn)
        .await?;
        keys(rows)
    }

    async fn revoke_key(&self, id: KeyId) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        let revoked =
            sqlx::query("UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL")
                .bind(now())
                .bind(id.to_string())
                .execute(&mut *conn)
                .await?;
        if revoked.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn active_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let mut conn = self.reader.acquire().await?;
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
        let mut conn = self.writer.acquire().await?;
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND expires_at <= ?3",
        )
        .bind(scope)
        .bind(key)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, response, expires_at) \
             VALUES (?1, ?2, ?3, NULL, ?4) ON CONFLICT (scope, key) DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(fingerprint)
        .bind(now.saturating_add(crate::row::millis(pending_for)))
        .execute(&mut *conn)
        .await?;
        if claimed.rows_affected() == 1 {
            return Ok(None);
        }
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT fingerprint, response FROM idempotency_keys WHERE scope = ?1 AND key = ?2",
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
        let mut conn = self.writer.acquire().await?;
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, response, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (scope, key) DO UPDATE \
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
        Ok(())
    }

    async fn release_idempotency_key(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND response IS NULL",
        )
        .bind(scope)
        .bind(key)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn get_idempotency_key(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<crate::IdempotencyRecord>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT fingerprint, response FROM idempotency_keys \
             WHERE scope = ?1 AND key = ?2 AND expires_at > ?3",
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
        let mut conn = self.writer.acquire().await?;
        let purged = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= ?1")
            .bind(crate::row::unix_ms(std::time::SystemTime::now()))
            .execute(&mut *conn)
            .await?;
        Ok(purged.rows_affected())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.reader.acquire().await?;
        conn.ping().await?;
        Ok(())
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
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

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl SqliteStore {
    /// The writer and reader pools (not the critical one), for tools and tests.
    pub fn pools(&self) -> (&sqlx::SqlitePool, &sqlx::SqlitePool) {
        (&self.writer.pool, &self.reader.pool)
    }
}
