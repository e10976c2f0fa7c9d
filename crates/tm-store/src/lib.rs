//! Persistence: the [`Store`] trait, its SQLite and PostgreSQL backends, and the
//! [`RoutingTable`] that keeps the in-memory snapshot in step with what is stored.
//!
//! Every write stores the route and its audit row in one transaction.

mod error;
mod keys;
mod notify;
mod pool;
mod postgres;
mod routing;
mod row;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tm_config::{PoolConfig, StorageConfig};
use tm_domain::{
    EnvName, GroupKey, KeyId, NewRoute, Route, RouteId, RouteKey, RoutePatch, ServiceName, TenantId,
};

pub use error::StoreError;
pub use keys::{KeyRecord, KeyRing, KeyView, Principal};
pub use notify::{ChangeSubscription, Changed};
pub use pool::{PoolStats, StoreCounters};
pub use postgres::PostgresStore;
pub use routing::RoutingTable;
pub use sqlite::SqliteStore;

/// Who made a change, as recorded in the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a write did, as recorded in the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditAction {
    Create,
    Activate,
    Deactivate,
    Update,
    Delete,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Activate => "activate",
            Self::Deactivate => "deactivate",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// Where a read may be served from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadFrom {
    /// The primary: for callers that must see their own latest writes.
    Primary,
    /// A read replica in the rotation if there is one, else the primary.
    AnyReplica,
}

/// One read replica as last checked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplicaStatus {
    pub name: &'static str,
    /// Seconds behind the primary; `None` when it could not be reached.
    pub lag_seconds: Option<f64>,
    /// Whether it serves reads.
    pub in_rotation: bool,
}

/// A position in the change feed (the audit log): opaque outside the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangePosition {
    /// PostgreSQL: the transaction id of the last change read (SQLite, whose writes
    /// commit in id order: always 0).
    txid: i64,
    /// The audit-log id of the last change read.
    id: i64,
}

/// What the change feed holds after a position.
#[derive(Debug)]
pub struct Changes {
    /// The services changed, each once.
    pub groups: Vec<GroupKey>,
    /// The position after the last change read.
    pub position: ChangePosition,
    /// Whether these are all the changes there were (the limit was not reached).
    pub complete: bool,
}

/// A changed service as the change feed names it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ChangeRow {
    txid: i64,
    id: i64,
    tenant: Option<String>,
    service: Option<String>,
    env: Option<String>,
}

/// The services named by `rows` (each once), read with `limit` from `from`.
pub(crate) fn changed_groups(rows: Vec<ChangeRow>, from: ChangePosition, limit: u32) -> Changes {
    let complete = rows.len() < limit as usize;
    let position = rows.last().map_or(from, |r| ChangePosition {
        txid: r.txid,
        id: r.id,
    });
    let mut groups: Vec<GroupKey> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for row in rows {
        let parsed = || -> Option<GroupKey> {
            Some(GroupKey {
                tenant: TenantId::parse(row.tenant.as_deref()?).ok()?,
                service: ServiceName::parse(row.service.as_deref()?).ok()?,
                env: EnvName::parse(row.env.as_deref()?).ok()?,
            })
        };
        // A row that names no valid service (written behind the registry's back) must
        // not stop the feed: it is passed over, and the periodic full reload covers it.
        let Some(key) = parsed() else {
            tracing::warn!(
                audit_id = row.id,
                "an audit log entry names no valid service; passing over it"
            );
            continue;
        };
        if seen.insert(key.clone()) {
            groups.push(key);
        }
    }
    Changes {
        groups,
        position,
        complete,
    }
}

/// One row of the audit log: the route before and after a change.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub route_id: RouteId,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// What is kept of a write sent with an `Idempotency-Key`: what the request was (a
/// digest of method, path and body) and, once answered, the answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct IdempotencyRecord {
    /// Hex SHA-256 of the request.
    pub fingerprint: String,
    /// `None` while the first request is still being answered.
    pub response: Option<StoredResponse>,
}

/// An answer kept to be replayed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Which routes a listing returns. `None` matches anything.
#[derive(Clone, Debug, Default)]
pub struct RouteFilter {
    pub tenant: Option<TenantId>,
    pub service: Option<ServiceName>,
    pub env: Option<EnvName>,
    pub active: Option<bool>,
}

/// A page of a listing ordered by id: at most `limit` routes with ids after `after`.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub after: Option<RouteId>,
    pub limit: u32,
}

/// Which revisions a conditional write accepts (from `If-Match`); the write fails with
/// [`StoreError::StaleRevision`] when the stored revision is not among them.
pub type ExpectedRevisions<'a> = Option<&'a [i64]>;

/// The registry's storage. Implementations keep a route and its audit row in one
/// transaction, and report conflicts and outages as [`StoreError`] variants.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Creates a route; [`StoreError::Conflict`] if its key exists.
    async fn create_route(&self, new: NewRoute, actor: &Actor) -> Result<Route, StoreError>;

    /// Stores many new routes at once (a bulk import), each with its audit row: all of
    /// them or none. A key that exists already fails the whole batch with
    /// [`StoreError::Conflict`].
    async fn import_routes(&self, routes: &[Route], actor: &Actor) -> Result<(), StoreError>;

    /// Switches a route on or off. Setting the state it already has changes nothing.
    async fn set_active(
        &self,
        key: &RouteKey,
        active: bool,
        actor: &Actor,
    ) -> Result<Route, StoreError>;

    /// Changes url and/or weight. A patch that changes nothing leaves the route as it is.
    /// With a `scope`, a route of another tenant is [`StoreError::NotFound`].
    async fn update_route(
        &self,
        id: RouteId,
        scope: Option<&TenantId>,
        patch: &RoutePatch,
        expected: ExpectedRevisions<'_>,
        actor: &Actor,
    ) -> Result<Route, StoreError>;

    /// Deletes a route and returns it as it was. With a `scope`, a route of another
    /// tenant is [`StoreError::NotFound`].
    async fn delete_route(
        &self,
        id: RouteId,
        scope: Option<&TenantId>,
        expected: ExpectedRevisions<'_>,
        actor: &Actor,
    ) -> Result<Route, StoreError>;

    async fn get_route(&self, id: RouteId, from: ReadFrom) -> Result<Option<Route>, StoreError>;

    async fn list_routes(
        &self,
        filter: &RouteFilter,
        page: Page,
        from: ReadFrom,
    ) -> Result<Vec<Route>, StoreError>;

    /// The active routes of the given `(tenant, service, env)` groups.
    async fn active_routes_in_groups(&self, keys: &[GroupKey]) -> Result<Vec<Route>, StoreError>;

    /// Up to `limit` active routes in natural-key order, starting after `after` (from
    /// the first when `None`): what a routing snapshot is built from, one short query
    /// at a time, so that a full load of millions of routes neither holds them all at
    /// once nor runs one statement past its time-out.
    async fn active_routes_page(
        &self,
        after: Option<&RouteKey>,
        limit: u32,
    ) -> Result<Vec<Route>, StoreError>;

    /// Where the change feed stands: every change before this position is visible to
    /// any read that starts after this call.
    async fn change_position(&self) -> Result<ChangePosition, StoreError>;

    /// The services changed after `from`, oldest change first, reading at most `limit`
    /// changes.
    async fn changes_after(&self, from: ChangePosition, limit: u32) -> Result<Changes, StoreError>;

    /// Measures each read replica's lag and takes it out of (or back into) the rotation.
    /// Stores without replicas have nothing to check.
    async fn check_replicas(&self) -> Vec<ReplicaStatus> {
        Vec::new()
    }

    /// Notifications of changes committed by any instance, where the backend sends
    /// them (PostgreSQL); `None` where it does not.
    async fn subscribe(&self) -> Result<Option<ChangeSubscription>, StoreError> {
        Ok(None)
    }

    /// The audit trail of one route, oldest first.
    async fn audit_log(&self, route_id: RouteId) -> Result<Vec<AuditEntry>, StoreError>;

    /// Stores a new key.
    async fn create_key(&self, record: &KeyRecord) -> Result<(), StoreError>;

    /// Stores `record` only if no key was ever stored before; says whether it did. This
    /// is how the first admin key is made exactly once, however many instances start.
    async fn create_first_key(&self, record: &KeyRecord) -> Result<bool, StoreError>;

    /// A live (not revoked) key.
    async fn get_key(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// Live keys, of one tenant or of all (admin keys included only for all).
    async fn list_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRecord>, StoreError>;

    /// Revokes a live key; [`StoreError::NotFound`] if there is none.
    async fn revoke_key(&self, id: KeyId) -> Result<(), StoreError>;

    /// Every live key: what the key ring is loaded from.
    async fn active_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;

    /// Claims `key` within `scope` for a request with `fingerprint`: `None` if claimed
    /// (held as pending for `pending_for`), else what is already kept under it.
    async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        pending_for: std::time::Duration,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Keeps the answer to a claimed key for `keep_for`.
    async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        response: &StoredResponse,
        keep_for: std::time::Duration,
    ) -> Result<(), StoreError>;

    /// Gives up a pending claim (the request failed in a way worth retrying).
    async fn release_idempotency_key(&self, scope: &str, key: &str) -> Result<(), StoreError>;

    /// What is kept under `key`, if anything unexpired.
    async fn get_idempotency_key(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Deletes expired idempotency records; how many.
    async fn purge_idempotency_keys(&self) -> Result<u64, StoreError>;

    /// A round trip to the database.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Connection figures of each pool.
    fn pool_stats(&self) -> Vec<PoolStats>;

    /// Closes every pool, waiting for connections in use to be returned.
    async fn close(&self);

    /// The concrete store, for tools and tests that need its pools.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Opens the configured backend and applies its migrations.
pub async fn connect(
    storage: &StorageConfig,
    pool: &PoolConfig,
    counters: StoreCounters,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match storage {
        StorageConfig::Sqlite(sqlite) => {
            Arc::new(SqliteStore::connect(sqlite, pool, counters).await?)
        }
        StorageConfig::Postgres(postgres) => {
            Arc::new(PostgresStore::connect(postgres, pool, counters).await?)
        }
    })
}

/// Applies the configured backend's migrations, then closes the connection.
pub async fn migrate(
    storage: &StorageConfig,
    pool: &PoolConfig,
) -> Result<&'static str, StoreError> {
    let store = connect(storage, pool, StoreCounters::default()).await?;
    let backend = store.backend();
    store.close().await;
    Ok(backend)
}

/// Fails with [`StoreError::NotFound`] if `current` is outside `scope`, and with
/// [`StoreError::StaleRevision`] unless it has an expected revision.
pub(crate) fn check_access(
    current: &Route,
    scope: Option<&TenantId>,
    expected: ExpectedRevisions<'_>,
) -> Result<(), StoreError> {
    if scope.is_some_and(|tenant| tenant != &current.tenant) {
        return Err(StoreError::NotFound);
    }
    match expected {
        Some(revisions) if !revisions.contains(&current.revision) => {
            Err(StoreError::StaleRevision {
                current: Box::new(current.clone()),
            })
        }
        _ => Ok(()),
    }
}
