//! The guarded path to the database for everything but resolve.
//!
//! Route reads (list, get) are served from a short-lived cache when fresh, coalesced
//! when identical, run in their own bulkhead with a time-out and retried when the
//! failure is transient; while the circuit breaker is open they are answered from the
//! last known data, marked stale, or refused with 503. Key reads take the same path
//! without the cache. Ordinary writes fail fast with 503 while the
//! breaker is open; critical writes (activate, deactivate) bypass it and use a bulkhead
//! and a connection pool of their own.
//!
//! The caches are bounded in bytes (an estimate of each answer's size) as well as in
//! number of answers: list answers under client-chosen cursors cannot take more memory
//! than configured.

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tm_config::GuardConfig;
use tm_domain::{Route, RouteId};
use tm_resilience::{
    retry, BreakerConfig, BreakerState, Bulkhead, CircuitBreaker, RetryPolicy, Singleflight,
};
use tm_store::{Page, ReadFrom, RouteFilter, Store, StoreError};
use tm_telemetry::Metrics;

use crate::ApiError;

/// A listing as cached: filter and page in a canonical text form, and where it was read.
type ListKey = (String, ReadFrom);

/// Whether an answer is current or the last known data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Served while the database path is refused; marked with a `Warning` header.
    Stale,
}

#[derive(Debug)]
struct Cached<V> {
    value: V,
    fetched: Instant,
    generation: u64,
}

/// What a coalesced read shares with its waiters.
#[derive(Clone, Debug)]
enum ReadFailure {
    /// The breaker is open, a bulkhead is full or the database did not answer.
    Unavailable(&'static str),
    Internal(Arc<StoreError>),
}

/// The cached answers of one kind of read, and the reads of that kind in flight.
struct ReadCache<K, V> {
    entries: moka::sync::Cache<K, Arc<Cached<V>>>,
    flights: Singleflight<K, Result<V, ReadFailure>>,
}

impl<K, V> ReadCache<K, V>
where
    K: Footprint + Hash + Eq + Clone + Send + Sync + 'static,
    V: Footprint + Clone + Send + Sync + 'static,
{
    /// A cache of at most `max_bytes` (by [`Footprint`]) and `max_entries` answers: each
    /// answer counts at least `max_bytes / max_entries`, so that one weight bounds both.
    fn new(max_bytes: u64, max_entries: u64) -> Self {
        let floor = max_bytes.checked_div(max_entries).unwrap_or(u64::MAX);
        let capacity = if max_entries == 0 { 0 } else { max_bytes };
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .weigher(move |key: &K, cached: &Arc<Cached<V>>| {
                    let bytes = ENTRY_OVERHEAD + key.footprint() + cached.value.footprint();
                    let weight = u64::try_from(bytes).unwrap_or(u64::MAX).max(floor);
                    u32::try_from(weight).unwrap_or(u32::MAX)
                })
                .build(),
            flights: Singleflight::default(),
        }
    }

    /// The estimated bytes held, once pending evictions are done.
    fn weighed(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

/// What the cache's own bookkeeping and the `Arc<Cached>` around an answer take, roughly.
const ENTRY_OVERHEAD: usize = 160;

/// Roughly the bytes a cached key or answer holds, on the heap and inline.
trait Footprint {
    fn footprint(&self) -> usize;
}

impl Footprint for Route {
    fn footprint(&self) -> usize {
        std::mem::size_of::<Route>()
            + self.tenant.as_str().len()
            + self.service.as_str().len()
            + self.env.as_str().len()
            + self.version.as_str().len()
            + self.url.as_str().len()
    }
}

impl Footprint for Option<Route> {
    fn footprint(&self) -> usize {
        self.as_ref()
            .map_or(std::mem::size_of::<Self>(), Route::footprint)
    }
}

impl Footprint for Vec<Route> {
    fn footprint(&self) -> usize {
        let spare = self.capacity() - self.len();
        std::mem::size_of::<Self>()
            + spare * std::mem::size_of::<Route>()
            + self.iter().map(Route::footprint).sum::<usize>()
    }
}

impl Footprint for ListKey {
    fn footprint(&self) -> usize {
        std::mem::size_of::<Self>() + self.0.len()
    }
}

impl Footprint for (RouteId, ReadFrom) {
    fn footprint(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

/// Critical writes keep the rollback path open when everything else is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    Ordinary,
    Critical,
}

pub struct Guard {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    breaker: CircuitBreaker,
    reads: Bulkhead,
    writes: Bulkhead,
    critical: Bulkhead,
    read_timeout: Duration,
    write_timeout: Duration,
    retry: RetryPolicy,
    /// Single routes and listings, each kind of read with a cache of its own; the two
    /// share `read_cache_bytes` and `read_cache_entries`, half each.
    routes: ReadCache<(RouteId, ReadFrom), Option<Route>>,
    lists: ReadCache<ListKey, Vec<Route>>,
    cache_ttl: Duration,
    /// Bumped by every write: cached reads of an older generation are no longer fresh.
    generation: AtomicU64,
}

impl Guard {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, config: &GuardConfig) -> Self {
        let slots = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        Self {
            store,
            metrics,
            breaker: CircuitBreaker::new(BreakerConfig {
                usage_percent: config.breaker_usage_percent,
                max_waiting: config.breaker_max_waiting,
                pressure_for: config.breaker_pressure_for,
                failures: config.breaker_failures,
                open_for: config.breaker_open_for,
            }),
            reads: Bulkhead::new("reads", slots(config.bulkhead_reads), config.bulkhead_wait),
            writes: Bulkhead::new(
                "writes",
                slots(config.bulkhead_writes),
                config.bulkhead_wait,
            ),
            critical: Bulkhead::new(
                "critical",
                slots(config.bulkhead_critical),
                config.bulkhead_wait,
            ),
            read_timeout: config.timeout_read,
            write_timeout: config.timeout_write,
            retry: RetryPolicy {
                attempts: 3,
                base: Duration::from_millis(25),
                max: Duration::from_millis(250),
            },
            // TM_READ_CACHE_BYTES and TM_READ_CACHE_ENTRIES bound both kinds together,
            // half each.
            routes: ReadCache::new(
                config.read_cache_bytes.div_ceil(2),
                config.read_cache_entries.div_ceil(2),
            ),
            lists: ReadCache::new(config.read_cache_bytes / 2, config.read_cache_entries / 2),
            cache_ttl: config.read_cache_ttl,
            generation: AtomicU64::new(0),
        }
    }

    /// Makes every cached read stale (kept only as a fallback while the database is
    /// unusable): for changes made by other instances, which this one hears about.
    pub fn forget_cached_reads(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    pub fn breaker_reason(&self) -> &'static str {
        self.breaker.reason()
    }

    /// `(name, in use, capacity)` of each bulkhead.
    pub fn bulkheads(&self) -> [(&'static str, usize, usize); 3] {
        [&self.reads, &self.writes, &self.critical].map(|b| (b.name(), b.in_use(), b.capacity()))
    }

    /// Copies the read caches' estimated sizes into the metrics.
    pub fn observe_caches(&self) {
        self.metrics
            .set_read_cache_bytes("get", self.routes.weighed());
        self.metrics
            .set_read_cache_bytes("list", self.lists.weighed());
    }

    /// Feeds the pools' pressure to the breaker and its state to the metrics.
    pub fn observe_pools(&self) {
        let (mut in_use, mut max, mut waiting) = (0u32, 0u32, 0u32);
        for pool in self
            .store
            .pool_stats()
            .iter()
            // Pressure on the primary is what the breaker guards; read replicas have pools
            // of their own that would dilute it.
            .filter(|p| p.pool != "critical" && !p.pool.starts_with("replica"))
        {
            in_use += pool.in_use;
            max += pool.max;
            // A pool still opening connections makes callers wait for the connect, not
            // for a busy pool: only waiters of a pool at its maximum signal pressure.
            if pool.size >= pool.max {
                waiting += pool.waiting;
            }
        }
        if max > 0 {
            self.breaker
                .observe_pool(100.0 * f64::from(in_use) / f64::from(max), waiting);
        }
        self.metrics
            .set_breaker("database", self.breaker.state() as i64);
    }

    /// One route; `from` says whether a replica may answer (see [`ReadFrom`]).
    pub async fn get_route(
        &self,
        id: RouteId,
        from: ReadFrom,
    ) -> Result<(Option<Route>, Freshness), ApiError> {
        let store = &self.store;
        self.read(&self.routes, (id, from), move || async move {
            store.get_route(id, from).await
        })
        .await
    }

    pub async fn list_routes(
        &self,
        filter: RouteFilter,
        page: Page,
        from: ReadFrom,
    ) -> Result<(Vec<Route>, Freshness), ApiError> {
        let key = (
            format!(
                "{:?}|{:?}|{:?}|{:?}|{:?}|{}",
                filter.tenant.as_ref().map(|t| t.as_str()),
                filter.service.as_ref().map(|s| s.as_str()),
                filter.env.as_ref().map(|e| e.as_str()),
                filter.active,
                page.after,
                page.limit
            ),
            from,
        );
        let (store, filter) = (&self.store, &filter);
        self.read(&self.lists, key, move || async move {
            store.list_routes(filter, page, from).await
        })
        .await
    }

    /// A read that is never cached (keys, whose listing must show a revocation at once):
    /// through the breaker and the read bulkhead, within the read time-out, retried
    /// while the failure is transient; refused with 503 while the database path is.
    pub async fn read_uncached<V, F, Fut>(&self, load: F) -> Result<V, ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, StoreError>>,
    {
        let outcome = self.fetch(&load).await;
        self.metrics
            .set_breaker("database", self.breaker.state() as i64);
        match outcome {
            Ok(value) => Ok(value),
            Err(ReadFailure::Unavailable(why)) => Err(ApiError::Unavailable(why)),
            Err(ReadFailure::Internal(err)) => {
                Err(ApiError::internal("reading from the database", err))
            }
        }
    }

    async fn read<K, V, F, Fut>(
        &self,
        cache: &ReadCache<K, V>,
        key: K,
        load: F,
    ) -> Result<(V, Freshness), ApiError>
    where
        K: Footprint + Hash + Eq + Clone + Send + Sync + 'static,
        V: Footprint + Clone + Send + Sync + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, StoreError>>,
    {
        let generation = self.generation.load(Ordering::Acquire);
        let cached = cache.entries.get(&key);
        if let Some(entry) = cached
            .as_ref()
            .filter(|e| e.generation == generation && e.fetched.elapsed() < self.cache_ttl)
        {
            self.metrics.cache_hits.inc();
            return Ok((entry.value.clone(), Freshness::Fresh));
        }
        self.metrics.cache_misses.inc();

        let outcome = cache
            .flights
            .run(key.clone(), || async {
                let value = self.fetch(&load).await?;
                // Cached before the flight ends, so that no request arriving between the
                // two finds neither and queries again.
                cache.entries.insert(
                    key.clone(),
                    Arc::new(Cached {
                        value: value.clone(),
                        fetched: Instant::now(),
                        generation,
                    }),
                );
                Ok(value)
            })
            .await;
        self.metrics
            .set_breaker("database", self.breaker.state() as i64);

        match outcome {
            Ok(value) => Ok((value, Freshness::Fresh)),
            Err(ReadFailure::Unavailable(why)) => {
                match cached.or_else(|| cache.entries.get(&key)) {
                    Some(last) => Ok((last.value.clone(), Freshness::Stale)),
                    None => Err(ApiError::Unavailable(why)),
                }
            }
            Err(ReadFailure::Internal(err)) => {
                Err(ApiError::internal("reading from the database", err))
            }
        }
    }

    /// One read from the database, if the breaker and the read bulkhead let it through:
    /// within the read time-out, retried while the failure is transient.
    async fn fetch<V, F, Fut>(&self, load: &F) -> Result<V, ReadFailure>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, StoreError>>,
    {
        self.observe_pools();
        let Some(ticket) = self.breaker.admit() else {
            return Err(ReadFailure::Unavailable(
                "the database circuit breaker is open",
            ));
        };
        let Ok(_slot) = self.reads.enter().await else {
            ticket.neutral();
            return Err(ReadFailure::Unavailable(
                "too many reads are waiting for the database",
            ));
        };
        let attempt = || async {
            match tokio::time::timeout(self.read_timeout, load()).await {
                Ok(result) => result.map_err(Some),
                Err(_) => Err(None), // timed out
            }
        };
        let transient =
            |e: &Option<StoreError>| matches!(e, None | Some(StoreError::Unavailable(_)));
        match retry(self.retry, transient, attempt).await {
            Ok(value) => {
                ticket.succeeded();
                Ok(value)
            }
            Err(None) => {
                ticket.failed();
                Err(ReadFailure::Unavailable(
                    "the database did not answer in time",
                ))
            }
            Err(Some(StoreError::Unavailable(err))) => {
                ticket.failed();
                tracing::warn!(error = %err, "database read failed");
                Err(ReadFailure::Unavailable("the database is unavailable"))
            }
            Err(Some(other)) => {
                // The database answered, if not with what was wanted: it is up.
                ticket.succeeded();
                Err(ReadFailure::Internal(Arc::new(other)))
            }
        }
    }

    /// Runs a write: ordinary ones only while the breaker lets them, critical ones always;
    /// each in its bulkhead, within the write time-out.
    pub async fn write<T, Fut>(&self, kind: WriteKind, op: Fut) -> Result<T, ApiError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let outcome = self.admit_write(kind, op).await;
        // Whatever happened, cached reads may now be out of date.
        self.generation.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    /// Runs the database work a write does beside its route or key (an idempotency
    /// claim), admitted as a write of `kind` is, but leaving cached reads fresh.
    pub async fn write_aside<T, Fut>(&self, kind: WriteKind, op: Fut) -> Result<T, ApiError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.admit_write(kind, op).await
    }

    async fn admit_write<T, Fut>(&self, kind: WriteKind, op: Fut) -> Result<T, ApiError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.observe_pools();
        let ticket = match kind {
            WriteKind::Ordinary => Some(self.breaker.admit().ok_or(ApiError::Unavailable(
                "the database circuit breaker is open; only activate and deactivate are accepted",
            ))?),
            WriteKind::Critical => None,
        };
        let bulkhead = match kind {
            WriteKind::Ordinary => &self.writes,
            WriteKind::Critical => &self.critical,
        };
        let Ok(_slot) = bulkhead.enter().await else {
            if let Some(t) = ticket {
                t.neutral();
            }
            return Err(ApiError::Unavailable(
                "too many writes are waiting for the database",
            ));
        };
        let outcome = tokio::time::timeout(self.write_timeout, op).await;
        let healthy = !matches!(outcome, Err(_) | Ok(Err(StoreError::Unavailable(_))));
        if let Some(t) = ticket {
            if healthy {
                t.succeeded();
            } else {
                t.failed();
            }
        }
        self.metrics
            .set_breaker("database", self.breaker.state() as i64);
        match outcome {
            Ok(result) => result.map_err(ApiError::from),
            Err(_) => Err(ApiError::Unavailable("the database did not answer in time")),
        }
    }
}
