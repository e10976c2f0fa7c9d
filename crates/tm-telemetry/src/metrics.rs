//! The Prometheus metrics of the contract, in a registry owned by the application.
//!
//! Counters and histograms are updated where things happen; gauges that describe state
//! (pools, snapshot, uptime) are set by a sampler and again just before each scrape.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use foldhash::fast::RandomState;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The label value for requests whose path matched no route (bounded cardinality).
pub const UNMATCHED: &str = "unmatched";
/// The tenant label for tenants beyond the configured cap.
pub const OTHER_TENANT: &str = "other";
/// Where change events are relayed: the `sink` label of the event metrics.
pub const EVENT_SINKS: [&str; 2] = ["kafka", "webhook"];

const PROPAGATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const JOB_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    started: Instant,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    tenant_requests: IntCounterVec,
    /// Series handles by endpoint, then method.
    request_series: RwLock<HashMap<Box<str>, SeriesByMethod, RandomState>>,
    /// The counter of each tenant with a label of its own (at most `max_tenants`).
    tenant_series: RwLock<HashMap<Box<str>, IntCounter, RandomState>>,
    max_tenants: usize,
    /// Requests of tenants beyond the cap.
    other_tenant: IntCounter,
    db_pool_connections: IntGaugeVec,
    db_pool_max: IntGaugeVec,
    db_pool_waiting: IntGaugeVec,
    db_pool_usage_percent: GaugeVec,
    db_replica_lag: GaugeVec,
    /// Queries and transactions sent to the database (a transaction counts once).
    pub db_queries: IntCounter,
    /// Failed attempts to get a working database connection.
    pub db_connection_errors: IntCounter,
    /// Stored routes the domain refuses, left out of the routing snapshot when read.
    pub snapshot_rejected_rows: IntCounter,
    rate_limit_hits: IntCounterVec,
    circuit_breaker_state: IntGaugeVec,
    /// Reads answered from the read cache.
    pub cache_hits: IntCounter,
    /// Reads that had to go to the database.
    pub cache_misses: IntCounter,
    read_cache_bytes: IntGaugeVec,
    routing_snapshot_routes: IntGauge,
    routing_snapshot_age_seconds: Gauge,
    routing_propagation: Histogram,
    /// Time per Redis command (`command`: what it was for, e.g. `rate_limit`).
    pub redis_command_duration: HistogramVec,
    /// Redis commands that failed or timed out, by what they were for.
    pub redis_errors: IntCounterVec,
    /// 1 while Redis is configured but unusable (its work done locally meanwhile).
    pub redis_degraded: IntGauge,
    /// Work done without Redis while it was unusable, by feature.
    redis_fallbacks: IntCounterVec,
    app_uptime_seconds: Gauge,
    /// Log lines dropped because the log writer could not keep up.
    log_lines_dropped: IntCounter,
    queue_depth: IntGaugeVec,
    dlq_size: IntGauge,
    jobs_processed: IntCounterVec,
    job_duration: HistogramVec,
    events_published: IntCounterVec,
    events_failed: IntCounterVec,
    outbox_lag: GaugeVec,
    /// Watches (long polls and event streams of `/api/v1/watch`) held now.
    pub watches_held: IntGauge,
    health_probes: IntCounterVec,
    /// 1 while this instance serves from its cold-start file (its database not yet
    /// reached since it started), else 0.
    pub routing_snapshot_cold_start: IntGauge,
    endpoint_health: IntGaugeVec,
    backup_last_success: Gauge,
    backup_duration: Gauge,
    backup_failures: IntCounter,
    backup_verify_failures: IntCounter,
    /// The label sets of `endpoint_health` set by the last sample.
    endpoint_series: std::sync::Mutex<std::collections::BTreeSet<[String; 4]>>,
}

type SeriesByMethod = Vec<(&'static str, Arc<RequestSeries>)>;

/// The series of one `(method, endpoint)`.
struct RequestSeries {
    duration: Histogram,
    by_status: RwLock<Vec<(u16, IntCounter)>>,
}

impl RequestSeries {
    fn counter(
        &self,
        family: &IntCounterVec,
        method: &str,
        endpoint: &str,
        status: u16,
    ) -> IntCounter {
        let known = read(&self.by_status)
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, counter)| counter.clone());
        known.unwrap_or_else(|| {
            let mut all = write(&self.by_status);
            if let Some((_, counter)) = all.iter().find(|(s, _)| *s == status) {
                return counter.clone();
            }
            let counter = family.with_label_values(&[method, endpoint, &status.to_string()]);
            all.push((status, counter.clone()));
            counter
        })
    }
}

/// The `method` label: the standard methods by name, anything else as `OTHER`, so that
/// clients cannot create series at will.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("OTHER")
}

// A panic while holding one of these locks leaves a consistent map (every change is one
// insert), so a poisoned lock is used as is.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Figures of one connection pool (a database pool, or Redis's): what `/metrics` and the
/// health probes show of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PoolFigures {
    /// Its name, e.g. `primary`, `critical`, `replica1`, `writer`, `reader`, `redis`; the
    /// health probes key pools by it rather than repeat it.
    #[serde(skip)]
    pub pool: &'static str,
    /// Connections open now, idle or in use.
    pub size: u32,
    pub idle: u32,
    pub in_use: u32,
    /// Tasks waiting for a connection right now.
    pub waiting: u32,
    pub max: u32,
}

/// `family` with a zero-valued series for each of `values` of its one label, so that
/// each is scrapeable from the start.
/// `family` with a zero series for every sink and event type.
fn event_series(family: IntCounterVec) -> IntCounterVec {
    for sink in EVENT_SINKS {
        for kind in tm_domain::EventType::ALL {
            family.with_label_values(&[sink, kind.as_str()]);
        }
    }
    family
}

/// Brings a counter that mirrors a count kept elsewhere up to it (never down).
fn raise(counter: &IntCounter, count: u64) {
    let current = counter.get();
    if count > current {
        counter.inc_by(count - current);
    }
}

/// What the store records of backups, for the backup metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackupState {
    /// When the last backup that was written and verified finished.
    pub last_success_unix: Option<f64>,
    /// How long the last finished backup took.
    pub last_duration_seconds: f64,
    /// Backups that could not be written.
    pub failures: u64,
    /// Backups written whose verification failed.
    pub verify_failures: u64,
}

fn declared(family: IntGaugeVec, values: &[&str]) -> IntGaugeVec {
    for value in values {
        family.with_label_values(&[value]);
    }
    family
}

/// Creates metrics and registers each in one registry: one call per metric.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn add<C: prometheus::core::Collector + Clone + 'static>(&self, collector: C) -> C {
        self.0
            .register(Box::new(collector.clone()))
            .expect("metric names are unique and valid");
        collector
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    fn int_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.add(Gauge::new(name, help).expect("valid metric"))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(Histogram::with_opts(opts).expect("valid metric"))
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("valid metric"))
    }
}

impl Metrics {
    /// A registry with every metric of the contract, present from the start. The body is
    /// the table of metrics: name, help and labels of each.
    #[expect(
        clippy::too_many_lines,
        reason = "a table of metrics: one declaration each"
    )]
    pub fn new(max_tenants: usize, version: &str) -> Self {
        let registry = Registry::new();
        let r = Registrar(&registry);
        let tenant_requests = r.counter_vec(
            "tenant_requests_total",
            "API requests per tenant; tenants beyond the cap are counted as \"other\".",
            &["tenant"],
        );
        r.int_gauge_vec(
            "build_info",
            "Build of the running binary; always 1.",
            &["version"],
        )
        .with_label_values(&[version])
        .set(1);
        Self {
            other_tenant: tenant_requests.with_label_values(&[OTHER_TENANT]),
            tenant_requests,
            http_requests: r.counter_vec(
                "http_requests_total",
                "HTTP requests answered, by method, route template and status.",
                &["method", "endpoint", "status"],
            ),
            http_duration: r.histogram_vec(
                "http_request_duration_seconds",
                "Time to answer an HTTP request, by method and route template.",
                LATENCY_BUCKETS,
                &["method", "endpoint"],
            ),
            request_series: RwLock::default(),
            tenant_series: RwLock::default(),
            max_tenants,
            db_pool_connections: r.int_gauge_vec(
                "db_pool_connections",
                "Open database connections by pool and state (idle, in_use).",
                &["pool", "state"],
            ),
            db_pool_max: r.int_gauge_vec(
                "db_pool_max",
                "Largest size of each database pool.",
                &["pool"],
            ),
            db_pool_waiting: r.int_gauge_vec(
                "db_pool_waiting",
                "Tasks waiting for a connection from each database pool.",
                &["pool"],
            ),
            db_pool_usage_percent: r.gauge_vec(
                "db_pool_usage_percent",
                "Connections in use as a percentage of each pool's maximum.",
                &["pool"],
            ),
            db_replica_lag: r.gauge_vec(
                "db_replica_lag_seconds",
                "Seconds each read replica is behind the primary; -1 when it cannot be reached.",
                &["replica"],
            ),
            db_queries: r.counter(
                "db_queries_total",
                "Queries and transactions sent to the database (a transaction counts once).",
            ),
            db_connection_errors: r.counter(
                "db_connection_errors_total",
                "Failed attempts to get a working database connection.",
            ),
            snapshot_rejected_rows: r.counter(
                "snapshot_rejected_rows_total",
                "Stored routes the domain refuses (e.g. a URL with user-info), left out of the \
                 routing snapshot; counted each time such a row is read (full loads, refreshes).",
            ),
            circuit_breaker_state: r.int_gauge_vec(
                "circuit_breaker_state",
                "State of each circuit breaker: 0 closed, 1 open, 2 half-open.",
                &["breaker"],
            ),
            cache_hits: r.counter("cache_hits_total", "Reads answered from the read cache."),
            cache_misses: r.counter(
                "cache_misses_total",
                "Reads that had to go to the database.",
            ),
            read_cache_bytes: declared(
                r.int_gauge_vec(
                    "read_cache_bytes",
                    "Estimated bytes held by each read cache (get: single routes, list: \
                     listings), as counted against TM_READ_CACHE_BYTES.",
                    &["cache"],
                ),
                &["get", "list"],
            ),
            rate_limit_hits: r.counter_vec(
                "rate_limit_hits_total",
                "Requests refused with 429, by rate-limit class.",
                &["class"],
            ),
            routing_snapshot_routes: r.int_gauge(
                "routing_snapshot_routes",
                "Active routes in the in-memory routing snapshot.",
            ),
            routing_snapshot_age_seconds: r.gauge(
                "routing_snapshot_age_seconds",
                "Seconds since the routing snapshot was last known to match the database.",
            ),
            routing_propagation: r.histogram(
                "routing_propagation_seconds",
                "Time from a change being made (by any instance) to its being applied to this \
                 instance's snapshot through the change feed.",
                PROPAGATION_BUCKETS,
            ),
            redis_command_duration: r.histogram_vec(
                "redis_command_duration_seconds",
                "Time per Redis command, by what it was for.",
                LATENCY_BUCKETS,
                &["command"],
            ),
            redis_errors: r.counter_vec(
                "redis_errors_total",
                "Redis commands that failed or timed out, by what they were for.",
                &["command"],
            ),
            redis_degraded: r.int_gauge(
                "redis_degraded",
                "1 while Redis is configured but unusable; its work is then done without it.",
            ),
            redis_fallbacks: r.counter_vec(
                "redis_fallbacks_total",
                "Work done without Redis while it was unusable, by feature \
                 (rate_limit: local buckets, idempotency: the database, lock: none taken, \
                 fan_out: left to the database and the periodic reload).",
                &["feature"],
            ),
            app_uptime_seconds: r.gauge(
                "app_uptime_seconds",
                "Seconds since the process started serving.",
            ),
            log_lines_dropped: r.counter(
                "log_lines_dropped_total",
                "Log lines dropped, not written, because the log writer's buffer was full.",
            ),
            queue_depth: declared(
                r.int_gauge_vec(
                    "queue_depth",
                    "Jobs waiting or running in each queue of the job queue (fleet-wide, as \
                     last sampled).",
                    &["queue"],
                ),
                &["high", "default", "bulk"],
            ),
            dlq_size: r.int_gauge(
                "dlq_size",
                "Jobs in the dead-letter queue (fleet-wide, as last sampled).",
            ),
            jobs_processed: r.counter_vec(
                "jobs_processed_total",
                "Job attempts run by this process, by kind and outcome (done, retried, dead, \
                 lost: the lease ran out before the outcome was recorded).",
                &["kind", "outcome"],
            ),
            job_duration: r.histogram_vec(
                "job_duration_seconds",
                "Time per job attempt run by this process, by kind.",
                JOB_BUCKETS,
                &["kind"],
            ),
            events_published: event_series(r.counter_vec(
                "events_published_total",
                "Change events handed on by this process, by sink (kafka: acknowledged by the \
                 brokers; webhook: delivered) and type.",
                &["sink", "type"],
            )),
            events_failed: event_series(r.counter_vec(
                "events_failed_total",
                "Change events whose hand-on failed in this process (to be tried again), by \
                 sink and type.",
                &["sink", "type"],
            )),
            outbox_lag: {
                let lag = r.gauge_vec(
                    "outbox_lag_seconds",
                    "Age of the oldest change event a sink has yet to take (0: none waits), as \
                     last sampled.",
                    &["sink"],
                );
                for sink in EVENT_SINKS {
                    lag.with_label_values(&[sink]);
                }
                lag
            },
            watches_held: r.int_gauge(
                "watches_held",
                "Watches (long polls and event streams of /api/v1/watch) held now.",
            ),
            routing_snapshot_cold_start: r.int_gauge(
                "routing_snapshot_cold_start",
                "1 while this instance serves the routing snapshot and keys of its cold-start \
                 file, its database not yet reached since it started; else 0.",
            ),
            health_probes: {
                let probes = r.counter_vec(
                    "health_probes_total",
                    "Endpoint health probes made by this process, by outcome (ok, failed).",
                    &["outcome"],
                );
                for outcome in ["ok", "failed"] {
                    probes.with_label_values(&[outcome]);
                }
                probes
            },
            endpoint_health: r.int_gauge_vec(
                "endpoint_health",
                "Health of each checked active route, fleet-wide, as last sampled: 1 online, \
                 0 degraded (routes of tenants beyond the tenant cap are left out).",
                &["tenant", "service", "env", "version"],
            ),
            backup_last_success: r.gauge(
                "backup_last_success_timestamp_seconds",
                "Unix time at which the last backup that was written and verified finished \
                 (0: none yet), fleet-wide, as last sampled.",
            ),
            backup_duration: r.gauge(
                "backup_duration_seconds",
                "Seconds the last finished backup took, writing and verifying it, fleet-wide, \
                 as last sampled.",
            ),
            backup_failures: r.counter(
                "backup_failures_total",
                "Backups that could not be written, fleet-wide, as last sampled.",
            ),
            backup_verify_failures: r.counter(
                "backup_verify_failures_total",
                "Backups written whose verification (restored into a scratch store and \
                 compared) failed, fleet-wide, as last sampled.",
            ),
            endpoint_series: std::sync::Mutex::default(),
            started: Instant::now(),
            registry,
        }
    }

    /// Creates the zero-valued series of an endpoint, so it is scrapeable before use.
    pub fn declare_endpoint(&self, method: &str, endpoint: &str) {
        self.request_series(method_label(method), endpoint).counter(
            &self.http_requests,
            method_label(method),
            endpoint,
            200,
        );
    }

    /// Records one answered request.
    pub fn observe_request(&self, method: &str, endpoint: &str, status: u16, seconds: f64) {
        let method = method_label(method);
        let series = self.request_series(method, endpoint);
        series
            .counter(&self.http_requests, method, endpoint, status)
            .inc();
        series.duration.observe(seconds);
    }

    /// The series of `(method, endpoint)`, created on first use. Requests look their
    /// series up here rather than through the label hashing of the metric families.
    fn request_series(&self, method: &'static str, endpoint: &str) -> Arc<RequestSeries> {
        let known = read(&self.request_series)
            .get(endpoint)
            .and_then(|methods| methods.iter().find(|(m, _)| *m == method))
            .map(|(_, series)| series.clone());
        known.unwrap_or_else(|| {
            let mut all = write(&self.request_series);
            let methods = all.entry(endpoint.into()).or_default();
            if let Some((_, series)) = methods.iter().find(|(m, _)| *m == method) {
                return series.clone();
            }
            let series = Arc::new(RequestSeries {
                duration: self.http_duration.with_label_values(&[method, endpoint]),
                by_status: RwLock::default(),
            });
            methods.push((method, series.clone()));
            series
        })
    }

    /// Counts one API request of `tenant`, under its own label while under the cap.
    pub fn observe_tenant(&self, tenant: &str) {
        let full = {
            let seen = read(&self.tenant_series);
            if let Some(counter) = seen.get(tenant) {
                counter.inc();
                return;
            }
            seen.len() >= self.max_tenants
        };
        let mut seen = write(&self.tenant_series);
        // Checked again under the write lock: others may have filled the cap meanwhile.
        let full = full || seen.len() >= self.max_tenants;
        if full && !seen.contains_key(tenant) {
            drop(seen);
            self.other_tenant.inc();
            return;
        }
        seen.entry(tenant.into())
            .or_insert_with(|| self.tenant_requests.with_label_values(&[tenant]))
            .inc();
    }

    /// Sets the state of `breaker`: 0 closed, 1 open, 2 half-open.
    pub fn set_breaker(&self, breaker: &str, state: i64) {
        self.circuit_breaker_state
            .with_label_values(&[breaker])
            .set(state);
    }

    /// Sets the estimated bytes held by a read cache (`get` or `list`).
    pub fn set_read_cache_bytes(&self, cache: &str, bytes: u64) {
        self.read_cache_bytes
            .with_label_values(&[cache])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Counts one request refused by a rate limit.
    pub fn observe_rate_limited(&self, class: &str) {
        self.rate_limit_hits.with_label_values(&[class]).inc();
    }

    /// Creates the zero-valued series of a rate-limit class.
    pub fn declare_rate_class(&self, class: &str) {
        self.rate_limit_hits.with_label_values(&[class]);
    }

    pub fn set_pool(&self, figures: &PoolFigures) {
        let pool = figures.pool;
        self.db_pool_connections
            .with_label_values(&[pool, "idle"])
            .set(i64::from(figures.idle));
        self.db_pool_connections
            .with_label_values(&[pool, "in_use"])
            .set(i64::from(figures.in_use));
        self.db_pool_max
            .with_label_values(&[pool])
            .set(i64::from(figures.max));
        self.db_pool_waiting
            .with_label_values(&[pool])
            .set(i64::from(figures.waiting));
        let usage = if figures.max == 0 {
            0.0
        } else {
            100.0 * f64::from(figures.in_use) / f64::from(figures.max)
        };
        self.db_pool_usage_percent
            .with_label_values(&[pool])
            .set(usage);
    }

    pub fn set_replica_lag(&self, replica: &str, seconds: f64) {
        self.db_replica_lag
            .with_label_values(&[replica])
            .set(seconds);
    }

    /// Counts one piece of work done without Redis (`feature`: `rate_limit`,
    /// `idempotency`, `lock`, `fan_out`).
    pub fn observe_redis_fallback(&self, feature: &str) {
        self.redis_fallbacks.with_label_values(&[feature]).inc();
    }

    /// Records how long a change took to reach this instance's snapshot.
    pub fn observe_propagation(&self, seconds: f64) {
        self.routing_propagation.observe(seconds.max(0.0));
    }

    pub fn set_snapshot(&self, routes: usize, age_seconds: f64) {
        self.routing_snapshot_routes
            .set(i64::try_from(routes).unwrap_or(i64::MAX));
        self.routing_snapshot_age_seconds.set(age_seconds);
    }

    /// The job queue's depths as last sampled: live jobs per queue, and dead ones.
    pub fn set_queue_depths(&self, live: &[(&str, u64)], dead: u64) {
        for (queue, jobs) in live {
            self.queue_depth
                .with_label_values(&[queue])
                .set(i64::try_from(*jobs).unwrap_or(i64::MAX));
        }
        self.dlq_size.set(i64::try_from(dead).unwrap_or(i64::MAX));
    }

    /// The backups' record as last sampled from the store. The two counts only grow
    /// (the records of failed runs are kept), so they are exported as counters.
    pub fn set_backups(&self, state: &BackupState) {
        self.backup_last_success
            .set(state.last_success_unix.unwrap_or(0.0));
        self.backup_duration.set(state.last_duration_seconds);
        raise(&self.backup_failures, state.failures);
        raise(&self.backup_verify_failures, state.verify_failures);
    }

    /// One job attempt of `kind`, how it ended and how long it took.
    pub fn observe_job(&self, kind: &str, outcome: &str, seconds: f64) {
        self.jobs_processed
            .with_label_values(&[kind, outcome])
            .inc();
        self.job_duration
            .with_label_values(&[kind])
            .observe(seconds);
    }

    /// `count` events of `kind` handed on to `sink`.
    pub fn events_published(&self, sink: &str, kind: &str, count: u64) {
        self.events_published
            .with_label_values(&[sink, kind])
            .inc_by(count);
    }

    /// `count` events of `kind` that failed to reach `sink` this time.
    pub fn events_failed(&self, sink: &str, kind: &str, count: u64) {
        self.events_failed
            .with_label_values(&[sink, kind])
            .inc_by(count);
    }

    /// How long the oldest event `sink` has yet to take has waited.
    pub fn set_outbox_lag(&self, sink: &str, seconds: f64) {
        self.outbox_lag.with_label_values(&[sink]).set(seconds);
    }

    /// Brings `log_lines_dropped_total` up to `total`, the lines dropped since start-up.
    /// Counts one endpoint health probe.
    pub fn observe_probe(&self, ok: bool) {
        self.health_probes
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    }

    /// Sets `endpoint_health` to `routes` (tenant, service, env, version, online), in
    /// key order, keeping at most the tenant cap's number of tenants, and removes the
    /// series of routes no longer among them.
    pub fn set_endpoint_health(&self, routes: &[([&str; 4], bool)]) {
        let mut tenants: Vec<&str> = Vec::new();
        let mut now = std::collections::BTreeSet::new();
        for (labels, online) in routes {
            if !tenants.contains(&labels[0]) {
                if tenants.len() >= self.max_tenants {
                    continue;
                }
                tenants.push(labels[0]);
            }
            self.endpoint_health
                .with_label_values(labels)
                .set(i64::from(*online));
            now.insert(labels.map(str::to_owned));
        }
        let mut series = self
            .endpoint_series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for gone in series.difference(&now) {
            let labels: Vec<&str> = gone.iter().map(String::as_str).collect();
            let _ = self.endpoint_health.remove_label_values(&labels);
        }
        *series = now;
    }

    pub fn set_log_lines_dropped(&self, total: u64) {
        let counted = self.log_lines_dropped.get();
        if total > counted {
            self.log_lines_dropped.inc_by(total - counted);
        }
    }

    /// The registry in the Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        self.app_uptime_seconds
            .set(self.started.elapsed().as_secs_f64());
        self.set_log_lines_dropped(crate::dropped_log_lines());
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to memory cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_metric_is_present_from_the_start() {
        let metrics = Metrics::new(10, "1.2.3");
        metrics.declare_endpoint("GET", "/healthz");
        metrics.set_breaker("database", 0);
        metrics.declare_rate_class("read");
        metrics.set_pool(&PoolFigures {
            pool: "primary",
            size: 1,
            idle: 1,
            in_use: 0,
            waiting: 0,
            max: 10,
        });
        let text = metrics.encode();
        for name in [
            "http_requests_total",
            "http_request_duration_seconds",
            "tenant_requests_total",
            "db_pool_connections",
            "db_pool_max",
            "db_pool_waiting",
            "db_pool_usage_percent",
            "db_queries_total",
            "db_connection_errors_total",
            "cache_hits_total",
            "cache_misses_total",
            "read_cache_bytes",
            "circuit_breaker_state",
            "rate_limit_hits_total",
            "routing_snapshot_routes",
            "routing_snapshot_age_seconds",
            "routing_propagation_seconds",
            "snapshot_rejected_rows_total",
            "app_uptime_seconds",
            "log_lines_dropped_total",
            "build_info",
            "queue_depth",
            "dlq_size",
            "backup_last_success_timestamp_seconds",
            "backup_duration_seconds",
            "backup_failures_total",
            "backup_verify_failures_total",
        ] {
            assert!(
                text.contains(&format!("\n{name}")) || text.starts_with(name),
                "{name} missing:\n{text}"
            );
        }
        assert!(text.contains("build_info{version=\"1.2.3\"} 1"));
    }

    #[test]
    fn tenants_beyond_the_cap_are_other() {
        let metrics = Metrics::new(2, "0");
        for tenant in ["a", "b", "c", "d", "a"] {
            metrics.observe_tenant(tenant);
        }
        let text = metrics.encode();
        assert!(
            text.contains("tenant_requests_total{tenant=\"a\"} 2"),
            "{text}"
        );
        assert!(text.contains("tenant_requests_total{tenant=\"b\"} 1"));
        assert!(text.contains("tenant_requests_total{tenant=\"other\"} 2"));
        assert!(!text.contains("tenant=\"c\""));
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let metrics = Metrics::new(2, "0");
        metrics.observe_request("BREW", "unmatched", 405, 0.001);
        metrics.observe_request("PROPFIND", "unmatched", 405, 0.001);
        let text = metrics.encode();
        assert!(
            text.contains(
                "http_requests_total{endpoint=\"unmatched\",method=\"OTHER\",status=\"405\"} 2"
            ),
            "{text}"
        );
        assert!(!text.contains("BREW"));
    }

    #[test]
    fn requests_are_counted_by_template_and_status() {
        let metrics = Metrics::new(2, "0");
        metrics.observe_request("GET", "/api/v1/routes/{id}", 404, 0.001);
        metrics.observe_request("GET", "/api/v1/routes/{id}", 404, 0.002);
        let text = metrics.encode();
        assert!(
            text.contains("http_requests_total{endpoint=\"/api/v1/routes/{id}\",method=\"GET\",status=\"404\"} 2"),
            "{text}"
        );
    }
}
