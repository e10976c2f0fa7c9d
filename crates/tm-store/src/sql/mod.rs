//! What both SQL backends do, written once: the control flow of every route, key and
//! idempotency operation, over a [`Backend`] that supplies only its dialect (the
//! statements, how values are bound, which pool serves what).

mod backups;
mod events;
mod idempotency;
mod jobs;
mod keys;
mod routes;
mod services;
mod webhooks;

pub(crate) use backups::{backup_state, record_backup, refuse_if_in_use};

pub(crate) use events::write_events;

use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use sqlx::error::BoxDynError;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Arguments, Encode, FromRow, Type};
use tm_domain::GroupKey;

use crate::pool::CountedPool;
use crate::{ReadFrom, StoreError};

/// A value bound to a statement, in the registry's terms.
#[derive(Clone, Debug)]
pub(crate) enum Value<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    /// Owned text, e.g. JSON made for the statement.
    String(Option<String>),
    Bool(bool),
    OptBool(Option<bool>),
    Int(i64),
    OptInt(Option<i64>),
    Time(DateTime<Utc>),
    OptTime(Option<DateTime<Utc>>),
    Bytes(&'a [u8]),
    /// A value each backend stores in a column type of its own.
    Own(Own<'a>),
}

/// The values each backend stores in its own way (an id as `uuid` or text, a weight as
/// `int2` or integer), bound by each backend's own function.
#[derive(Clone, Debug)]
pub(crate) enum Own<'a> {
    Id(uuid::Uuid),
    OptId(Option<uuid::Uuid>),
    Weight(u8),
    /// A column of texts, bound as one array (PostgreSQL only).
    Texts(Vec<&'a str>),
}

impl<'a> Value<'a> {
    pub(crate) fn id(id: uuid::Uuid) -> Self {
        Self::Own(Own::Id(id))
    }

    pub(crate) fn opt_id(id: Option<uuid::Uuid>) -> Self {
        Self::Own(Own::OptId(id))
    }

    pub(crate) fn weight(weight: u8) -> Self {
        Self::Own(Own::Weight(weight))
    }

    pub(crate) fn texts(texts: Vec<&'a str>) -> Self {
        Self::Own(Own::Texts(texts))
    }
}

/// The arguments of `DB` holding `values`, those of its own types bound by `own`.
pub(crate) fn arguments<'q, DB: sqlx::Database>(
    values: Vec<Value<'q>>,
    own: fn(&mut DB::Arguments<'q>, Own<'q>) -> Result<(), BoxDynError>,
) -> Result<DB::Arguments<'q>, StoreError>
where
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    Option<String>: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
    Option<bool>: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    Option<DateTime<Utc>>: Encode<'q, DB> + Type<DB>,
    &'q [u8]: Encode<'q, DB> + Type<DB>,
{
    let mut args = DB::Arguments::default();
    for value in values {
        match value {
            Value::Text(v) => args.add(v),
            Value::OptText(v) => args.add(v),
            Value::String(v) => args.add(v),
            Value::Bool(v) => args.add(v),
            Value::OptBool(v) => args.add(v),
            Value::Int(v) => args.add(v),
            Value::OptInt(v) => args.add(v),
            Value::Time(v) => args.add(v),
            Value::OptTime(v) => args.add(v),
            Value::Bytes(v) => args.add(v),
            Value::Own(v) => own(&mut args, v),
        }
        .map_err(|e| StoreError::Other(sqlx::Error::Encode(e)))?;
    }
    Ok(args)
}

/// The methods of [`Backend`] that run statements: the same code on each driver's own
/// connection type, binding with that backend's `arguments`.
macro_rules! run_statements {
    ($connection:ty, $arguments:path) => {
        async fn execute<'a>(
            conn: &'a mut $connection,
            sql: &'a str,
            values: Vec<$crate::sql::Value<'a>>,
        ) -> Result<u64, $crate::StoreError> {
            let done = sqlx::query_with(sql, $arguments(values)?)
                .execute(conn)
                .await?;
            Ok(done.rows_affected())
        }

        async fn fetch_all<'a, R: $crate::sql::Decoded>(
            conn: &'a mut $connection,
            sql: &'a str,
            values: Vec<$crate::sql::Value<'a>>,
        ) -> Result<Vec<R>, $crate::StoreError> {
            let query = sqlx::query_as_with(sql, $arguments(values)?);
            Ok(query.fetch_all(conn).await?)
        }
    };
}
pub(crate) use run_statements;

/// A row type both backends can read.
pub(crate) trait Decoded:
    for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin + 'static
{
}

impl<T> Decoded for T where
    T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin + 'static
{
}

/// A connection of backend `B`.
pub(crate) type Conn<B> = <<B as Backend>::Db as sqlx::Database>::Connection;

/// The statements that differ between the backends, in their own dialect.
pub(crate) struct Statements {
    /// The route with a natural key (4 values), locked until the transaction ends.
    pub(crate) lock_route_by_key: String,
    /// The route with an id, locked until the transaction ends.
    pub(crate) lock_route_by_id: String,
    pub(crate) route_by_id: String,
    /// url, active, weight, revision, updated_at of the route with an id and revision.
    pub(crate) update_route: String,
    pub(crate) delete_route: String,
    /// Routes by tenant, service, env, active, after id (each may be null), limit.
    pub(crate) list_routes: String,
    pub(crate) active_routes_first: String,
    /// Active routes after a natural key (4 values), limit.
    pub(crate) active_routes_after: String,
    /// The audit log of one route.
    pub(crate) audit_log: String,
    /// Where the audit entry with an id (of a tenant, if not null) stands: txid, id.
    pub(crate) audit_position: String,
    /// Audit entries after a position, in commit order, only those every reader sees in
    /// that order: tenant (unused here: every tenant's), service, env (each may be null),
    /// txid, id, limit.
    pub(crate) audit_after: String,
    /// The same, of one tenant.
    pub(crate) audit_after_in_tenant: String,
    /// The same, of one service (tenant, service and env given).
    pub(crate) audit_after_in_service: String,
    /// Moves a service's (tenant, service, env) generation on, making its row (and so
    /// locking it) if need be, and returns it; with the fourth value true, also the
    /// service's active versions (as the transaction sees them), in order, as JSON.
    pub(crate) bump_service: String,
    /// A service's (tenant, service, env) generation and policy.
    pub(crate) service_policy: String,
    /// Sets a locked service's (tenant, service, env) policy (JSON or null) and moves its
    /// generation on; the new generation.
    pub(crate) set_service_policy: String,
    /// The active routes of services with a policy: id, key, url, the policy, and the
    /// route's health if it has any.
    pub(crate) checked_routes: String,
    /// The routes with a health that is not `stopped`: id, key, state.
    pub(crate) health_not_stopped: String,
    /// The services from one key to another (both included, three values each), as
    /// a page of a full load reads them.
    pub(crate) services_between: String,
    /// Every kept health other than `stopped`: route id, state, last online.
    pub(crate) all_health: String,
    /// A route's kept health (route id).
    pub(crate) route_health: String,
    /// The health of every active route that has one, with its key: for the metric.
    pub(crate) active_health: String,
    /// The routes of a service (tenant, service, env), locked until the transaction ends.
    pub(crate) lock_service_routes: String,
    /// The audit entries of a service (tenant, service, env) that changed which of its
    /// versions are active, oldest first: id, active_after, rollback_to.
    pub(crate) service_history: String,
    pub(crate) claim_bootstrap: String,
    pub(crate) insert_key: String,
    pub(crate) get_key: String,
    /// Live keys by tenant, after id (each may be null), limit.
    pub(crate) list_keys: String,
    /// Revokes a live key by id and returns its role and tenant.
    pub(crate) revoke_key: String,
    /// The live keys of a tenant.
    pub(crate) count_tenant_keys: String,
    /// Serializes key creations of one tenant until the transaction ends, where the
    /// backend does not serialize every write transaction anyway (PostgreSQL).
    pub(crate) lock_tenant_keys: Option<String>,
    pub(crate) insert_key_audit: String,
    pub(crate) key_audit_log: String,
    pub(crate) active_keys: String,
    pub(crate) idempotency_delete_expired: String,
    pub(crate) idempotency_claim: String,
    pub(crate) idempotency_get: String,
    pub(crate) idempotency_complete: String,
    pub(crate) idempotency_release: String,
    /// Unexpired records of a scope, counted up to a bound.
    pub(crate) idempotency_count_live: String,
    pub(crate) idempotency_get_unexpired: String,
    pub(crate) idempotency_purge: String,
    /// The (txid, seq) position of the event with an id (of a tenant, if not null).
    pub(crate) event_position: String,
    /// Events after a position (txid as text, seq), key events or not, limit: in
    /// commit order, only those every reader will see in that order.
    pub(crate) events_after: String,
    /// The same, of one tenant (first value).
    pub(crate) events_after_in_tenant: String,
    /// Deletes up to `PURGE_BATCH` events made before a time.
    pub(crate) purge_events: String,
    /// Stores a webhook (id, tenant, url, event types as a JSON array, description,
    /// sealed secret, created at).
    pub(crate) insert_webhook: String,
    /// A tenant's webhooks, counted.
    pub(crate) count_tenant_webhooks: String,
    /// Holds a tenant's webhook lock until the transaction ends (where one is needed).
    pub(crate) lock_tenant_webhooks: Option<String>,
    pub(crate) get_webhook: String,
    /// Webhooks (of a tenant, if not null) after an id, in id order, limit.
    pub(crate) list_webhooks: String,
    /// Deletes a webhook by id (of a tenant, if not null).
    pub(crate) delete_webhook: String,
    /// The webhooks of the tenants of a JSON array.
    pub(crate) webhooks_of: String,
    /// Every webhook's id and sealed secret.
    pub(crate) webhook_secrets: String,
    /// Replaces a webhook's sealed secret (id, old, new) if it is still the old one.
    pub(crate) reseal_webhook: String,
    /// Records a backup run (id, started at, finished at, outcome, location, bytes,
    /// duration in milliseconds, detail).
    pub(crate) insert_backup_run: String,
    /// A relay's cursor (sink): txid, seq.
    pub(crate) outbox_cursor: String,
    /// Moves a relay's cursor (sink, from txid, from seq, to txid, to seq, now) if it is
    /// still where it was read; makes it if there is none.
    pub(crate) advance_outbox_cursor: String,
    /// Queues again (now) the running jobs whose lease has run out.
    pub(crate) reap_leases: String,
    /// Leases (lease in ms, until, worker, now, limit, kinds as a JSON array) up to a
    /// limit of due jobs of the kinds given, highest priority first; none that another
    /// transaction is claiming. PostgreSQL times the lease by its own clock (the ms);
    /// SQLite by the app's (until, now).
    pub(crate) claim_jobs: String,
    /// Extends (lease in ms, until; id, worker, attempt) the lease of a job its worker
    /// holds in that attempt.
    pub(crate) extend_lease: String,
    /// Deletes a done job (id, worker, attempt) its worker holds in that attempt.
    pub(crate) finish_done: String,
    /// Sets a failed job (state, run_at, error, now; id, worker, attempt) queued again
    /// or dead.
    pub(crate) finish_failed: String,
    /// Jobs by queue and state.
    pub(crate) count_jobs: String,
    /// Dead jobs by tenant, after id (each may be null), limit.
    pub(crate) dead_jobs: String,
    /// Queues a dead job (now; id, tenant or null) again, its attempts reset.
    pub(crate) replay_dead_job: String,
    /// Deletes a dead job (id, tenant or null).
    pub(crate) purge_dead_job: String,
    /// Deletes every dead job (of a tenant, or all if null).
    pub(crate) purge_dead_jobs: String,
}

/// One SQL backend as the shared control flow sees it.
pub(crate) trait Backend: Send + Sync + 'static {
    type Db: sqlx::Database;

    /// The database as OpenTelemetry names it (`db.system` of a store call's span).
    const DB_SYSTEM: &'static str;

    /// What `JSON` values are cast with in an `INSERT` (empty where text is JSON).
    const JSON_CAST: &'static str;

    /// Groups read by one statement.
    const GROUPS_PER_QUERY: usize;

    /// This backend's statements.
    fn sql() -> &'static Statements;

    /// The placeholder of the `n`th bound value (from 1), in a statement that binds its
    /// values in order, each once.
    fn placeholder(n: usize) -> String;

    /// The statement reading the active routes of `groups`, with its values.
    fn active_routes_in(groups: &[GroupKey]) -> (Cow<'static, str>, Vec<Value<'_>>);

    /// The same, as the snapshot reads them: the served columns and the health.
    fn served_in(groups: &[GroupKey]) -> (Cow<'static, str>, Vec<Value<'_>>);

    /// The statement reading the `services` rows of `groups`, with its values.
    fn services_in(groups: &[GroupKey]) -> (Cow<'static, str>, Vec<Value<'_>>);

    /// The pool of ordinary writes.
    fn writer(&self) -> &CountedPool<Self::Db>;

    /// The pool of critical writes, so the rollback path works when `writer` is busy.
    fn critical(&self) -> &CountedPool<Self::Db>;

    /// The pool a read goes to, and the replica behind it if any.
    fn reader(&self, from: ReadFrom) -> (&CountedPool<Self::Db>, ReadVia<'_>);

    /// Runs `sql`; the number of rows it changed.
    fn execute<'a>(
        conn: &'a mut Conn<Self>,
        sql: &'a str,
        values: Vec<Value<'a>>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'a;

    /// Every row `sql` returns.
    fn fetch_all<'a, R: Decoded>(
        conn: &'a mut Conn<Self>,
        sql: &'a str,
        values: Vec<Value<'a>>,
    ) -> impl Future<Output = Result<Vec<R>, StoreError>> + Send + 'a;
}

/// The row `sql` returns, if any: for statements that select by a unique key.
pub(crate) async fn fetch_optional<B: Backend, R: Decoded>(
    conn: &mut Conn<B>,
    sql: &str,
    values: Vec<Value<'_>>,
) -> Result<Option<R>, StoreError> {
    let rows: Vec<R> = B::fetch_all(conn, sql, values).await?;
    Ok(rows.into_iter().next())
}

/// `INSERT` of `rows` (each a row of values for `columns`) in `B`'s dialect, ending with
/// `tail`. `json` names the columns that hold JSON.
fn insert_sql<B: Backend>(
    table: &str,
    columns: &[&str],
    json: &[&str],
    rows: usize,
    tail: &str,
) -> String {
    let mut n = 0;
    let tuples: Vec<String> = (0..rows)
        .map(|_| {
            let values: Vec<String> = columns
                .iter()
                .map(|column| {
                    n += 1;
                    let cast = if json.contains(column) {
                        B::JSON_CAST
                    } else {
                        ""
                    };
                    format!("{}{cast}", B::placeholder(n))
                })
                .collect();
            format!("({})", values.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO {table} ({}) VALUES {}{tail}",
        columns.join(", "),
        tuples.join(", ")
    )
}

/// The replica a read went to, if any: a read that fails for want of the replica takes
/// it out of the rotation until the next check finds it well.
#[derive(Clone, Copy)]
pub(crate) struct ReadVia<'a>(pub(crate) Option<&'a AtomicBool>);

impl ReadVia<'_> {
    pub(crate) fn track<T>(self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let (Some(in_rotation), Err(StoreError::Unavailable(_))) = (self.0, &result) {
            in_rotation.store(false, Ordering::Release);
        }
        result
    }
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
fn conflict_or(err: StoreError) -> StoreError {
    match err {
        StoreError::Other(e) if crate::error::is_unique_violation(&e) => StoreError::Conflict,
        other => other,
    }
}
