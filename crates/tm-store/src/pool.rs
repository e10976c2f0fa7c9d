//! Pool figures, including the number of tasks waiting for a connection, which sqlx does
//! not report: every acquire goes through [`WaitCounter::acquire`], which counts it.

use std::sync::atomic::{AtomicU32, Ordering};

use prometheus::IntCounter;
use serde::Serialize;
use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

use crate::StoreError;

/// A snapshot of one pool's connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// `primary` and `critical` on PostgreSQL; `writer`, `reader` and `critical` on SQLite.
    pub pool: &'static str,
    /// Connections open now, idle or in use.
    pub size: u32,
    pub idle: u32,
    pub in_use: u32,
    /// Tasks waiting for a connection right now.
    pub waiting: u32,
    pub max: u32,
}

/// Counters a store increments; the application registers them for `/metrics`.
#[derive(Clone, Debug)]
pub struct StoreCounters {
    /// Each unit of database work: a query, or a whole transaction.
    pub queries: IntCounter,
    /// Each failure to get a working connection (pool timeout, connect error).
    pub connection_errors: IntCounter,
}

impl Default for StoreCounters {
    /// Counters registered nowhere, for tools and tests.
    fn default() -> Self {
        let counter =
            |name: &str| IntCounter::new(name, "unregistered").expect("valid metric name");
        Self {
            queries: counter("db_queries_total"),
            connection_errors: counter("db_connection_errors_total"),
        }
    }
}

/// A pool that knows how many are waiting on it, and counts what it hands out.
#[derive(Debug)]
pub(crate) struct CountedPool<DB: Database> {
    pub(crate) name: &'static str,
    pub(crate) pool: Pool<DB>,
    waiting: AtomicU32,
    counters: StoreCounters,
}

impl<DB: Database> CountedPool<DB> {
    pub(crate) fn new(name: &'static str, pool: Pool<DB>, counters: StoreCounters) -> Self {
        Self {
            name,
            pool,
            waiting: AtomicU32::new(0),
            counters,
        }
    }

    pub(crate) async fn acquire(&self) -> Result<PoolConnection<DB>, StoreError> {
        struct Waiting<'a>(&'a AtomicU32);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        // Decremented on every exit, including when the caller's future is dropped.
        let _waiting = Waiting(&self.waiting);
        match self.pool.acquire().await {
            Ok(conn) => {
                self.counters.queries.inc();
                Ok(conn)
            }
            Err(err) => {
                self.counters.connection_errors.inc();
                Err(err.into())
            }
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle())
            .unwrap_or(u32::MAX)
            .min(size);
        PoolStats {
            pool: self.name,
            size,
            idle,
            in_use: size - idle,
            waiting: self.waiting.load(Ordering::Relaxed),
            max: self.pool.options().get_max_connections(),
        }
    }
}
