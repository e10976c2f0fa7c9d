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
/// A connection lent by a [`CountedPool`]. Behind a transaction-pooling proxy
/// (PgBouncer with `pool_mode = transaction`), the proxy may hand each statement outside
/// a transaction to another server connection, and sqlx sends a statement's parse and
/// its execution as two exchanges: so there, every lease is one transaction, opened with
/// the session's settings (`SET LOCAL`, as startup options cannot pass the proxy).
/// Transactions begun on a lease nest as savepoints; [`Lease::finish`] commits. A lease
/// dropped unfinished rolls back, which is what reads and failed writes want.
pub(crate) enum Lease<DB: Database> {
    Session(PoolConnection<DB>),
    Pinned(sqlx::Transaction<'static, DB>),
}

impl<DB: Database> std::ops::Deref for Lease<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        match self {
            Lease::Session(conn) => conn,
            Lease::Pinned(tx) => tx,
        }
    }
}

impl<DB: Database> std::ops::DerefMut for Lease<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        match self {
            Lease::Session(conn) => conn,
            Lease::Pinned(tx) => tx,
        }
    }
}

impl<DB: Database> Lease<DB> {
    /// Makes what was written on this lease durable: a no-op for a session connection
    /// (its statements commit as they run), the commit of a pinned lease.
    pub(crate) async fn finish(self) -> Result<(), StoreError> {
        match self {
            Lease::Session(_) => Ok(()),
            Lease::Pinned(tx) => tx.commit().await.map_err(StoreError::from),
        }
    }
}

pub(crate) struct CountedPool<DB: Database> {
    pub(crate) name: &'static str,
    pub(crate) pool: Pool<DB>,
    /// Behind a transaction-pooling proxy: what opens each lease's transaction.
    pin: Option<std::sync::Arc<str>>,
    waiting: AtomicU32,
    counters: StoreCounters,
}

impl<DB: Database> CountedPool<DB> {
    pub(crate) fn new(name: &'static str, pool: Pool<DB>, counters: StoreCounters) -> Self {
        Self {
            name,
            pool,
            pin: None,
            waiting: AtomicU32::new(0),
            counters,
        }
    }

    /// Lends every connection inside a transaction opened with `begin` (see [`Lease`]).
    pub(crate) fn pinned(mut self, begin: Option<std::sync::Arc<str>>) -> Self {
        self.pin = begin;
        self
    }

    pub(crate) async fn acquire(&self) -> Result<Lease<DB>, StoreError> {
        struct Waiting<'a>(&'a AtomicU32);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        // Decremented on every exit, including when the caller's future is dropped.
        let _waiting = Waiting(&self.waiting);
        let acquired = match &self.pin {
            None => self.pool.acquire().await.map(Lease::Session),
            Some(begin) => {
                let begin: std::borrow::Cow<'static, str> = begin.to_string().into();
                self.pool.begin_with(begin).await.map(Lease::Pinned)
            }
        };
        match acquired {
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
