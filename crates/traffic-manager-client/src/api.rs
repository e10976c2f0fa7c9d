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
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct VersionState {
    pub version: String,
    pub url: String,
    pub weight: u8,
    pub healthy: bool,
    /// Whether resolve without a version may pick it.
    pub serves: bool,
}
