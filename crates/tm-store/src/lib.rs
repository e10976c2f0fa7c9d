//! Persistence: the [`Store`] traits (one per concern), their SQLite and PostgreSQL
//! backends, and the [`RoutingTable`] that keeps the in-memory snapshot in step with
//! what is stored.
//!
//! Every write stores the route and its audit row in one transaction, and commits when
//! it succeeds: writes go through the pool's `write` or `transaction`, never a hand-made
//! commit.

mod backup;
mod coldstart;
mod error;
mod history;
mod jobs;
mod keys;
mod notify;
mod pool;
mod postgres;
mod routing;
mod row;
mod sql;
mod sqlite;
mod traits;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tm_config::{PoolConfig, StorageConfig};
use tm_domain::{
    EnvName, Event, GroupKey, Route, RouteId, ServedRoute, ServiceFacts, ServiceName, TenantId,
    Version,
};

pub use backup::{compare, hex, BackupOutcome, BackupRun, Export, SequenceValue, TableSummary};
pub use coldstart::{
    read_snapshot, write_snapshot, ColdSnapshot, ColdSnapshotError, SnapshotKey,
    MIN_SNAPSHOT_KEY_LEN, SNAPSHOT_VERSION,
};
pub use error::StoreError;
pub use jobs::{ClaimedJob, DeadJob, DeadPage, JobOutcome, NewJob, Queue, QueueDepths};
pub use keys::{KeyAuditAction, KeyAuditEntry, KeyPage, KeyRecord, KeyRing, KeyView, Principal};
pub use notify::{ChangeSubscription, Changed};
pub use pool::StoreCounters;
pub use postgres::PostgresStore;
pub use routing::{RoutingTable, ServiceWatch};
pub use sqlite::SqliteStore;
pub use traits::{
    BackupStore, ChangeFeed, EventStore, IdempotencyStore, JobStore, KeyStore, RouteStore,
    ServiceStore, Store, StoreOps, WebhookStore,
};

/// A webhook subscription as stored: the subscription, and its signing secret sealed
/// (see `tm_secrets`; the context it is bound to is the subscription's id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRecord {
    pub webhook: tm_domain::Webhook,
    pub sealed_secret: String,
}

/// Who made a change, as recorded in the audit log: a name (an API key's id, or what
/// made the change without one) and, for a change made through the API, the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    name: String,
    request_id: Option<String>,
}

impl Actor {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            request_id: None,
        }
    }

    /// The same actor, making the change in the request `request_id`.
    pub fn in_request(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
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
    /// A route switched on or off by a rollback of its service.
    Rollback,
    /// The service's policy changed (no route).
    Policy,
    /// A route's health changed.
    Health,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Activate => "activate",
            Self::Deactivate => "deactivate",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Rollback => "rollback",
            Self::Policy => "policy",
            Self::Health => "health",
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

/// A position in the outbox: opaque outside the store. Events are read in position
/// order, which is their commit order for any two events of one route or key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventPosition {
    /// PostgreSQL: the transaction id of the event (SQLite, whose writes commit in seq
    /// order: always 0).
    txid: i64,
    seq: i64,
}

/// An event as the outbox holds it: where it stands, the event, and the trace context
/// of the span that wrote it (none when tracing was off).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub position: EventPosition,
    pub event: Event,
    pub trace: Option<tm_telemetry::trace::TraceContext>,
}

/// Which events a reading of the outbox returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this tenant's; all (admin keys' included) when none.
    pub tenant: Option<TenantId>,
    /// Whether API key events are included, or only route events.
    pub key_events: bool,
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
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// Who made the change (see [`Actor`]).
    pub actor: String,
    /// The request that made it, when made through the API.
    pub request_id: Option<String>,
    pub action: String,
    /// The route changed; none for a change of the service's policy.
    pub route_id: Option<RouteId>,
    pub service: GroupKey,
    /// The service's generation after the change (none for changes made before
    /// generations were kept).
    pub generation: Option<i64>,
    /// For a change of which versions are active: those active after it, in order.
    pub active_after: Option<Vec<String>>,
    /// For a rollback: the entry whose activation state it restored.
    pub rollback_to: Option<i64>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// Which audit entries a reading of the audit log returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this tenant's; every tenant's when none.
    pub tenant: Option<TenantId>,
    pub service: Option<ServiceName>,
    pub env: Option<EnvName>,
}

/// A route's health as its checks last found it (the `route_health` row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteHealth {
    pub state: tm_domain::HealthState,
    /// Probes failed in a row.
    pub failures: u32,
    /// Why the last probe failed, if it did.
    pub last_error: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
    /// When a probe last passed.
    pub last_online_at: Option<DateTime<Utc>>,
}

/// An active route whose health is checked: its key and URL, its check, and its health
/// so far (none before its first probe).
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedRoute {
    pub id: RouteId,
    pub key: tm_domain::RouteKey,
    pub url: tm_domain::UpstreamUrl,
    pub check: tm_domain::HealthCheck,
    pub health: Option<RouteHealth>,
}

/// A route whose health is kept, by its key: for the health metric and for stopping the
/// health of routes no longer checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptHealth {
    pub id: Option<RouteId>,
    pub key: tm_domain::RouteKey,
    pub state: tm_domain::HealthState,
}

/// What a rollback did: the service's active versions now, the entry of the audit log
/// whose state they are, and the routes it switched on or off (as they are now).
#[derive(Clone, Debug, PartialEq)]
pub struct RolledBack {
    pub active: Vec<Version>,
    pub restored: i64,
    pub generation: i64,
    pub changed: Vec<Route>,
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

/// What claiming an idempotency key found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key is this request's now, held as pending until answered.
    Claimed,
    /// What is kept under the key already: a request still being answered, or an answer.
    Kept(IdempotencyRecord),
    /// The caller holds as many records as it may: nothing was claimed.
    Full,
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

/// One page of a full load of the active routes (see
/// [`RouteStore::active_routes_page`]).
#[derive(Debug)]
pub struct ActivePage {
    /// The routes of the page that the domain accepts. A stored row it refuses (written
    /// behind the registry's back, or under an older, weaker rule) is left out, logged
    /// with what is wrong and counted in `snapshot_rejected_rows_total`.
    pub routes: Vec<ServedRoute>,
    /// The facts of the services of those routes.
    pub services: HashMap<GroupKey, ServiceFacts>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<LoadCursor>,
}

/// The active routes of some services, as the routing snapshot reads them, and the
/// services' facts (every one of them that has a row, whether or not it has an active
/// route).
#[derive(Clone, Debug, Default)]
pub struct ServingState {
    pub routes: Vec<ServedRoute>,
    pub services: HashMap<GroupKey, ServiceFacts>,
}

/// Where a page of a full load starts: after the natural key of the last row read, as
/// stored (a refused row's key may be no valid key at all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadCursor {
    pub(crate) tenant: String,
    pub(crate) service: String,
    pub(crate) env: String,
    pub(crate) version: String,
}

/// Which revisions a conditional write accepts (from `If-Match`); the write fails with
/// [`StoreError::StaleRevision`] when the stored revision is not among them.
pub type ExpectedRevisions<'a> = Option<&'a [i64]>;

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

/// The configured store without connecting to it, for a start from the cold-start
/// file while the database is unreachable: PostgreSQL only (SQLite is a local file, which
/// is either there or not). `None` for SQLite.
pub async fn connect_lazy(
    storage: &StorageConfig,
    pool: &PoolConfig,
    counters: StoreCounters,
) -> Result<Option<Arc<dyn Store>>, StoreError> {
    Ok(match storage {
        StorageConfig::Sqlite(_) => None,
        StorageConfig::Postgres(postgres) => Some(Arc::new(
            PostgresStore::connect_lazy(postgres, pool, counters).await?,
        )),
    })
}

/// What names the configured database in a cold-start file: a hash of where it is (the
/// URL without its password), so that a file written for another database is refused.
pub fn store_id(storage: &StorageConfig) -> String {
    use secrecy::ExposeSecret;
    use sha2::Digest;
    let place = match storage {
        StorageConfig::Sqlite(sqlite) => format!("sqlite:{}", sqlite.path.display()),
        StorageConfig::Postgres(postgres) => {
            let raw = postgres.url.expose_secret();
            match url::Url::parse(raw) {
                Ok(mut url) => {
                    let _ = url.set_password(None);
                    url.to_string()
                }
                Err(_) => String::from("postgres:unparsable"),
            }
        }
    };
    let digest = sha2::Sha256::digest(place.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
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
