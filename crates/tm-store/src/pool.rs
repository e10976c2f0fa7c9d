//! Pools that count what they lend, and the only place writes commit: every acquire
//! goes through [`CountedPool::acquire`], which counts it and the tasks waiting for a
//! connection (sqlx does not report those), and every write goes through
//! [`CountedPool::write`] or [`CountedPool::transaction`], which commit when the work
//! returns `Ok`.

use std::sync::atomic::{AtomicU32, Ordering};

use prometheus::IntCounter;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Database, Pool};

use tm_telemetry::PoolFigures;

use crate::StoreError;

/// Counters a store increments; the application registers them for `/metrics`.
#[derive(Clone, Debug)]
pub struct StoreCounters {
    /// Each unit of database work: a query, or a whole transaction.
    pub queries: IntCounter,
    /// Each failure to get a working connection (pool timeout, connect error).
    pub connection_errors: IntCounter,
    /// Each stored route the domain refuses, left out of the routing snapshot when read.
    pub rejected_rows: IntCounter,
}

impl Default for StoreCounters {
    /// Counters registered nowhere, for tools and tests.
    fn default() -> Self {
        let counter =
            |name: &str| IntCounter::new(name, "unregistered").expect("valid metric name");
        Self {
            queries: counter("db_queries_total"),
            connection_errors: counter("db_connection_errors_total"),
            rejected_rows: counter("snapshot_rejected_rows_total"),
        }
    }
}

/// A connection lent by a [`CountedPool`]. Behind a transaction-pooling proxy
/// (PgBouncer with `pool_mode = transaction`), the proxy may hand each statement outside
/// a transaction to another server connection, and sqlx sends a statement's parse and
/// its execution as two exchanges: so there, every lease is one transaction, opened with
/// the session's settings (`SET LOCAL`, as startup options cannot pass the proxy).
/// Transactions begun on a lease nest as savepoints. A lease dropped without
/// [`Lease::finish`] rolls back, which is what reads and failed writes want; writes
/// finish through [`CountedPool::write`], never by hand.
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
    async fn finish(self) -> Result<(), StoreError> {
        match self {
            Lease::Session(_) => Ok(()),
            Lease::Pinned(tx) => tx.commit().await.map_err(StoreError::from),
        }
    }
}

/// A pool that knows how many are waiting on it, and counts what it hands out.
pub(crate) struct CountedPool<DB: Database> {
    pub(crate) name: &'static str,
    pub(crate) pool: Pool<DB>,
    /// Behind a transaction-pooling proxy: what opens each lease's transaction.
    pin: Option<std::sync::Arc<str>>,
    /// What opens a transaction of [`Self::transaction`]; `None`: the driver's own
    /// `BEGIN` (a savepoint on a pinned lease).
    begin: Option<&'static str>,
    waiting: AtomicU32,
    counters: StoreCounters,
}

impl<DB: Database> CountedPool<DB> {
    /// The counters this pool's store increments.
    pub(crate) fn counters(&self) -> &StoreCounters {
        &self.counters
    }

    pub(crate) fn new(name: &'static str, pool: Pool<DB>, counters: StoreCounters) -> Self {
        Self {
            name,
            pool,
            pin: None,
            begin: None,
            waiting: AtomicU32::new(0),
            counters,
        }
    }

    /// Lends every connection inside a transaction opened with `begin` (see [`Lease`]).
    pub(crate) fn pinned(mut self, begin: Option<std::sync::Arc<str>>) -> Self {
        self.pin = begin;
        self
    }

    /// Opens the transactions of [`Self::transaction`] with `statement` (SQLite's
    /// `BEGIN IMMEDIATE`, which takes the write lock before the first read).
    pub(crate) fn transactions_begin_with(mut self, statement: &'static str) -> Self {
        self.begin = Some(statement);
        self
    }

    /// A connection for reading. Dropping it rolls back whatever it did (a pinned
    /// lease's transaction), so it must not be used for writes: see [`Self::write`].
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

    /// Runs `work` on a lease and makes what it wrote durable when it returns `Ok`; when
    /// it fails, what it wrote on a pinned lease is rolled back.
    pub(crate) async fn write<T>(
        &self,
        work: impl AsyncFnOnce(&mut DB::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut lease = self.acquire().await?;
        let value = work(&mut lease).await?;
        lease.finish().await?;
        Ok(value)
    }

    /// Runs `work` in one transaction, committed (with its lease) when `work` returns
    /// `Ok` and rolled back when it fails.
    pub(crate) async fn transaction<T>(
        &self,
        work: impl AsyncFnOnce(&mut DB::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write(async move |conn: &mut DB::Connection| {
            let mut tx = match self.begin {
                None => conn.begin().await?,
                Some(statement) => conn.begin_with(statement).await?,
            };
            let value = work(&mut tx).await?;
            tx.commit().await?;
            Ok(value)
        })
        .await
    }

    pub(crate) fn stats(&self) -> PoolFigures {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle())
            .unwrap_or(u32::MAX)
            .min(size);
        PoolFigures {
            pool: self.name,
            size,
            idle,
            in_use: size - idle,
            waiting: self.waiting.load(Ordering::Relaxed),
            max: self.pool.options().get_max_connections(),
        }
    }
}
