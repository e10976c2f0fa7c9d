//! The database connection pools: sizes (per process type), the critical-write pool,
//! and how long connections wait, idle and live.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::process::ProcessType;
use crate::render::Lines;

/// The pool settings as read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolRaw {
    pub db_pool_max: u32,
    /// The primary pool's size in `web` processes (default: `db_pool_max`).
    pub db_pool_max_web: Option<u32>,
    /// The primary pool's size in `worker` processes (default: `db_pool_max`).
    pub db_pool_max_worker: Option<u32>,
    pub db_pool_min: u32,
    /// Connections reserved for critical writes (activate, deactivate).
    pub db_critical_pool: u32,
    #[serde(with = "humantime_serde")]
    pub db_acquire_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub db_idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub db_max_lifetime: Duration,
}

impl Default for PoolRaw {
    fn default() -> Self {
        Self {
            db_pool_max: 10,
            db_pool_max_web: None,
            db_pool_max_worker: None,
            db_pool_min: 1,
            db_critical_pool: 2,
            db_acquire_timeout: Duration::from_secs(5),
            db_idle_timeout: Duration::from_secs(600),
            db_max_lifetime: Duration::from_secs(1800),
        }
    }
}

/// The database pools of this process.
#[derive(Clone, Debug, Serialize)]
pub struct PoolConfig {
    /// The primary pool's size, for this process's type.
    pub max_connections: u32,
    /// Size of the separate pool that only critical writes use.
    pub critical_connections: u32,
    pub min_connections: u32,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
}

impl PoolRaw {
    /// The pools of a process of `process_type`.
    pub(crate) fn check(self, process_type: ProcessType, problems: &mut Problems) -> PoolConfig {
        problems.at_least_one(&[
            ("db_pool_max", self.db_pool_max.into()),
            ("db_critical_pool", self.db_critical_pool.into()),
        ]);
        for (key, value) in [
            ("db_pool_max_web", self.db_pool_max_web),
            ("db_pool_max_worker", self.db_pool_max_worker),
        ] {
            if value == Some(0) {
                problems.add(key, "must be at least 1");
            }
        }
        let max_connections = match process_type {
            ProcessType::Web => self.db_pool_max_web,
            ProcessType::Worker => self.db_pool_max_worker,
        }
        .unwrap_or(self.db_pool_max);
        if self.db_pool_min > max_connections {
            problems.add(
                "db_pool_min",
                format!("must not exceed the pool's size ({max_connections})"),
            );
        }
        problems.positive(&[
            ("db_acquire_timeout", self.db_acquire_timeout),
            ("db_idle_timeout", self.db_idle_timeout),
            ("db_max_lifetime", self.db_max_lifetime),
        ]);
        PoolConfig {
            max_connections,
            critical_connections: self.db_critical_pool,
            min_connections: self.db_pool_min,
            acquire_timeout: self.db_acquire_timeout,
            idle_timeout: self.db_idle_timeout,
            max_lifetime: self.db_max_lifetime,
        }
    }
}

impl PoolConfig {
    /// The pool lines of `check-config`.
    pub(crate) fn render(&self, out: &mut Lines) {
        out.plain("db_pool_max", self.max_connections);
        out.plain("db_pool_min", self.min_connections);
        out.duration("db_acquire_timeout", self.acquire_timeout);
        out.duration("db_idle_timeout", self.idle_timeout);
        out.duration("db_max_lifetime", self.max_lifetime);
    }
}
