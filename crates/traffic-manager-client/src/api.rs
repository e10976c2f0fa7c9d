//! The API's documents, as the server writes and reads them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub id: String,
    pub tenant: String,
    pub service: String,
    pub env: String,
    pub version: String,
    pub url: String,
    pub active: bool,
    pub weight: u8,
    pub revision: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A route to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewRoute {
    pub tenant: String,
    pub service: String,
    pub env: String,
    pub version: String,
    pub url: String,
    /// Active from the start (default: created inactive).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub active: bool,
    /// 0–100; the server's default (100) when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u8>,
}

/// One version of one service: what activate and deactivate name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteKey {
    pub tenant: String,
    pub service: String,
    pub env: String,
    pub version: String,
}

/// One service in one environment: what resolve and watch name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    pub tenant: String,
    pub service: String,
    pub env: String,
}

impl ServiceKey {
    pub fn new(tenant: &str, service: &str, env: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            service: service.to_owned(),
            env: env.to_owned(),
        }
    }
}

/// Which routes a listing returns; every field narrows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteQuery {
    pub tenant: Option<String>,
    pub service: Option<String>,
    pub env: Option<String>,
    pub active: Option<bool>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A page of a listing, and the cursor of the next one (none on the last).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The answer to a resolve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub tenant: String,
    pub service: String,
    pub env: String,
    pub version: String,
    pub url: String,
}

/// A service's routing state, as watch answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchState {
    pub tenant: String,
    pub service: String,
    pub env: String,
    /// The service's generation: pass it as `since` to wait for the next one.
    pub generation: u64,
    /// Whether it is later than the `since` asked with.
    pub changed: bool,
    /// `healthy_only`, `healthy_or_all` or `last_known_good`; none when nothing is
    /// active.
    pub policy: Option<String>,
    /// The active versions, in version order.
    pub versions: Vec<VersionState>,
}

/// An active version of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionState {
    pub version: String,
    pub url: String,
    pub weight: u8,
    pub healthy: bool,
    /// Whether resolve without a version may pick it.
    pub serves: bool,
}

/// An entry of the audit log: one change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Pass it as `after` to read on from it.
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `create`, `activate`, `deactivate`, `update`, `delete`, `rollback`, `policy` or
    /// `health`.
    pub action: String,
    pub tenant: String,
    pub service: String,
    pub env: String,
    pub version: Option<String>,
    pub route_id: Option<String>,
    pub actor: String,
    pub actor_key_id: Option<String>,
    pub request_id: Option<String>,
    pub generation: Option<i64>,
    pub active_versions: Option<Vec<String>>,
    pub rollback_to: Option<i64>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    /// Each field that differs between `before` and `after`.
    pub changes: std::collections::BTreeMap<String, FieldChange>,
}

/// A field's value before and after a change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub from: serde_json::Value,
    pub to: serde_json::Value,
}

/// A page of the audit log; `next_after` reads on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next_after: Option<i64>,
}

/// The answer to a rollback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBack {
    pub tenant: String,
    pub service: String,
    pub env: String,
    /// The service's active versions now.
    pub active_versions: Vec<String>,
    /// The audit entry whose activation state was restored.
    pub restored_entry: i64,
    pub generation: i64,
    /// The routes switched on or off, as they are now.
    pub changed: Vec<Route>,
}

/// An API key, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// `admin`, `tenant_admin` or `reader`.
    pub role: String,
    pub tenant: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A key just created: the only answer that carries its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedKey {
    pub id: String,
    pub name: String,
    pub role: String,
    pub tenant: Option<String>,
    /// The secret, shown only here.
    pub key: String,
    pub created_at: DateTime<Utc>,
}

/// A job in the dead-letter queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadJob {
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub tenant: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub failed_at: DateTime<Utc>,
}
