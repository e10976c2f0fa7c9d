//! The composition root. [`Application::build`] does every fallible step of start-up —
//! open the store and migrate, load the routing snapshot, bind the listener — and
//! starts the background workers; [`Application::run_until`] only serves, until the
//! given token is cancelled, then stops the workers.

mod bootstrap;
mod coldstart;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tm_config::Config;
use tm_domain::{ApiKey, Grant, KeyId};
use tm_http::AppState;
use tm_resilience::LocalRateLimiter;
use tm_store::{KeyRecord, KeyRing, RoutingTable, Store, StoreCounters, StoreError};
use tm_telemetry::Metrics;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use workers::{
    probe_kinds, relay_kind, Backup, Deliver, FanOut, Follow, Handlers, JobRunner, Probes, Purge,
    Rebuild, Recurring, Relay, Reseal, Sample, Schedule, Sink, Workers, BACKUP, BACKUP_EVERY,
    DELIVER, PROBE_EVERY, PURGE, PURGE_EVERY, RELAY_EVERY, RESEAL,
};

/// What stops [`Application::build`] (and [`create_key`]), naming the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the {backend} store")]
    Store {
        backend: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("loading the routing snapshot")]
    Snapshot(#[source] StoreError),
    /// The database is unreachable and the cold-start file cannot stand in for it.
    #[error("starting without the database: {reason}")]
    ColdStart { reason: String },
    #[error("loading API keys")]
    Keys(#[source] StoreError),
    #[error("keeping the bootstrap admin key in {path}")]
    BootstrapFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the secret keys{}", .path.as_ref().map(|p| format!(" from {}", p.display())).unwrap_or_default())]
    SecretKeys {
        path: Option<std::path::PathBuf>,
        #[source]
        source: std::io::Error,
    },
    #[error("building the webhook client")]
    Webhooks(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("configuring Redis")]
    Redis(#[source] tm_redis::RedisError),
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why [`Application::run_until`] stopped, when it was not asked to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The HTTP server or a background worker, named, ended on its own or panicked.
    #[error("background task {0} stopped unexpectedly")]
    TaskDied(&'static str),
}

/// A built, bound, ready-to-run registry.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
    /// The background workers, running since `build`.
    workers: Workers,
    /// The admin key made on this start, the store having had none.
    bootstrap_key: Option<ApiKey>,
    shutdown_grace: Duration,
}

/// Every background worker, each on a task of its own.
fn spawn_workers(
    state: &AppState,
    config: &Config,
    subscription: Option<tm_store::ChangeSubscription>,
) -> Result<Workers, StartError> {
    let mut workers = Workers::new();
    workers.spawn(Follow::new(
        state,
        subscription,
        config.snapshot_catch_up_interval,
    ));
    workers.spawn(Rebuild::new(state, config.snapshot_reload_interval));
    workers.spawn(Sample::new(state, config.metrics.pool_sample_interval));
    // The job queue: a process that runs jobs (a worker, or `serve` unless it leaves
    // jobs to workers) also schedules the recurring ones; the dedup keys keep one of
    // each in the fleet.
    if config.jobs.in_serve || config.process_type == tm_config::ProcessType::Worker {
        let wake_runner = Arc::new(tokio::sync::Notify::new());
        let sinks = event_sinks(state, config, &wake_runner);
        let probes = probe_kinds(config.jobs.probe_shards);
        workers.spawn(Schedule::new(
            state.store.clone(),
            recurring_jobs(&sinks, &probes, config.backup.interval.is_some()),
            config.jobs.max_attempts,
            wake_runner.clone(),
        ));
        let handlers = job_handlers(state, config, (sinks, &probes), workers.stopping())?;
        workers.spawn(JobRunner::new(
            state.store.clone(),
            state.metrics.clone(),
            handlers,
            config.jobs.clone(),
            wake_runner,
        ));
    }
    Ok(workers)
}

/// The jobs every job-running process schedules.
fn recurring_jobs(
    sinks: &[Arc<dyn Sink>],
    probes: &[&'static str],
    backups: bool,
) -> Vec<Recurring> {
    let mut recurring = vec![
        Recurring {
            kind: PURGE,
            every: PURGE_EVERY,
            queue: tm_store::Queue::Bulk,
        },
        // At every start, then now and then: secrets sealed under a key rotated out are
        // sealed again under the current one.
        Recurring {
            kind: RESEAL,
            every: PURGE_EVERY,
            queue: tm_store::Queue::Bulk,
        },
    ];
    recurring.extend(sinks.iter().map(|sink| Recurring {
        kind: relay_kind(sink.name()),
        every: RELAY_EVERY,
        queue: tm_store::Queue::High,
    }));
    recurring.extend(probes.iter().map(|kind| Recurring {
        kind,
        every: PROBE_EVERY,
        queue: tm_store::Queue::High,
    }));
    if backups {
        recurring.push(Recurring {
            kind: BACKUP,
            every: BACKUP_EVERY,
            queue: tm_store::Queue::Bulk,
        });
    }
    recurring
}

/// The handler of every job kind, the relays to `sinks` among them (ending their slices
/// early once `stopping` is cancelled).
fn job_handlers(
    state: &AppState,
    config: &Config,
    (sinks, probes): (Vec<Arc<dyn Sink>>, &[&'static str]),
    stopping: CancellationToken,
) -> Result<Handlers, StartError> {
    let mut handlers = Handlers::new();
    if let Some(backup) = Backup::new(state.store.clone(), &config.backup) {
        handlers.insert(BACKUP, Arc::new(backup));
    }
    handlers.insert(
        PURGE,
        Arc::new(Purge::new(state.store.clone(), config.events.retention)),
    );
    let client = tm_webhooks::Deliverer::new(
        state.webhooks.policy.clone(),
        config.webhooks.timeout,
        concat!("traffic-manager/", env!("CARGO_PKG_VERSION")),
    )
    .map_err(|err| StartError::Webhooks(Box::new(err)))?;
    handlers.insert(
        DELIVER,
        Arc::new(Deliver::new(
            state.store.clone(),
            state.webhooks.keys.clone(),
            client,
            state.metrics.clone(),
        )),
    );
    handlers.insert(
        RESEAL,
        Arc::new(Reseal::new(
            state.store.clone(),
            state.webhooks.keys.clone(),
        )),
    );
    // A relay works for half a job's time-out at most, then hands over to the next.
    let slice = (config.jobs.timeout / 2).min(Duration::from_secs(60));
    // Probes go where webhooks may (the same network policy), and no further.
    let prober = tm_webhooks::Prober::new(
        state.webhooks.policy.clone(),
        concat!("traffic-manager-probe/", env!("CARGO_PKG_VERSION")),
    )
    .map_err(|err| StartError::Webhooks(Box::new(err)))?;
    let shards = u32::try_from(probes.len()).unwrap_or(1);
    for (shard, kind) in (0..shards).zip(probes) {
        handlers.insert(
            kind,
            Arc::new(Probes::new(
                state.store.clone(),
                prober.clone(),
                state.metrics.clone(),
                (shard, shards),
                slice,
                stopping.clone(),
            )),
        );
    }
    for sink in sinks {
        handlers.insert(
            relay_kind(sink.name()),
            Arc::new(Relay::new(
                state.store.clone(),
                state.metrics.clone(),
                state.relays.clone(),
                sink,
                (slice, config.jobs.poll_interval),
                stopping.clone(),
            )),
        );
    }
    Ok(handlers)
}

/// The sinks change events are relayed to: webhooks (queueing deliveries wakes
/// `wake_runner`), and Kafka when configured.
fn event_sinks(
    state: &AppState,
    config: &Config,
    wake_runner: &Arc<tokio::sync::Notify>,
) -> Vec<Arc<dyn Sink>> {
    let mut sinks: Vec<Arc<dyn Sink>> = vec![Arc::new(FanOut::new(
        state.store.clone(),
        config.jobs.max_attempts,
        wake_runner.clone(),
    ))];
    if let Some(kafka) = &config.events.kafka {
        sinks.push(Arc::new(tm_kafka::KafkaSink::new(kafka.clone())));
    }
    sinks
}

/// The names of the sinks [`event_sinks`] makes.
fn sink_names(config: &Config) -> Vec<&'static str> {
    let mut names = vec!["webhook"];
    if config.events.kafka.is_some() {
        names.push("kafka");
    }
    names
}

impl Application {
    /// Opens the store (migrating it), loads the keys and the routing snapshot, binds the
    /// listener, makes the bootstrap admin key on a store that never had one (see
    /// [`Application::bootstrap_key`]) and starts the background workers.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        if config.http.cors == tm_config::CorsOrigins::Any {
            tracing::warn!("TM_CORS_ORIGINS is *: any web page may call this API from a browser; list the origins instead");
        }
        let metrics = Arc::new(Metrics::new(
            config.metrics.max_tenants,
            env!("CARGO_PKG_VERSION"),
        ));
        let configured_admin = config
            .bootstrap_admin_key
            .as_ref()
            .map(|k| k.expose_secret().to_owned());
        let (store, keys, routing, cold) =
            open(&config, &metrics, configured_admin.as_deref()).await?;
        let secret_keys = bootstrap::secret_keys(&config.webhooks.secret_keys, &config.data_dir)?;
        // Listening before serving: a change committed once this returns is notified.
        let subscription = workers::subscribe(store.as_ref()).await;
        let (listener, local_addr) = bind(config.http.listen).await?;
        let shutdown_grace = config.http.shutdown_grace;
        let limiter = Arc::new(LocalRateLimiter::new(config.http.rate_limits.clone()));
        let redis = match &config.redis {
            Some(redis) => Some(connect_redis(redis, &metrics).await?),
            None => None,
        };
        // Last of the steps that can fail, so that a key made here is always shown. (An
        // instance started from its cold-start file has the keys the file kept.)
        let bootstrap_key = match (&configured_admin, &cold) {
            (Some(_), _) | (None, Some(_)) => None,
            (None, None) => bootstrap::admin_key(&keys, &config.data_dir).await?,
        };
        let serving_from_file = cold.is_some();
        // With replicas, a caller that wrote reads from the primary for the lag bound plus
        // one lag check: any replica still in the rotation then has its write.
        let read_your_writes = match &config.storage {
            tm_config::StorageConfig::Postgres(postgres) if !postgres.replicas.is_empty() => {
                Some(postgres.replica_max_lag + config.metrics.pool_sample_interval)
            }
            _ => None,
        };
        let state = AppState::new(
            store,
            routing,
            keys,
            metrics,
            limiter,
            config.http.clone(),
            tm_http::Fleet {
                redis,
                read_your_writes,
                event_sinks: sink_names(&config),
                webhooks: Arc::new(tm_http::WebhookKit {
                    keys: Arc::new(secret_keys),
                    policy: Arc::new(tm_webhooks::NetworkPolicy::new(
                        config.webhooks.allow_networks.clone(),
                    )),
                    max_per_tenant: config.webhooks.max_per_tenant,
                }),
                cold_start: Arc::new(cold.unwrap_or_default()),
            },
        );
        let mut workers = spawn_workers(&state, &config, subscription)?;
        if serving_from_file {
            state.metrics.routing_snapshot_cold_start.set(1);
            workers.spawn(coldstart::Recover::new(&state, &config));
        }
        if let Some(writer) = coldstart::WriteSnapshot::new(&state, &config)? {
            workers.spawn(writer);
        }
        Ok(Self {
            listener,
            local_addr,
            state,
            workers,
            bootstrap_key,
            shutdown_grace,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The store the application reads and writes.
    pub fn store(&self) -> Arc<dyn Store> {
        self.state.store.clone()
    }

    /// The admin key this start made, the store having had none: for the caller to show
    /// once (it is also in `<data_dir>/bootstrap-admin.key`). `None` when a key existed
    /// already or one is configured.
    pub fn bootstrap_key(&self) -> Option<&ApiKey> {
        self.bootstrap_key.as_ref()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, gives in-flight
    /// requests up to the configured grace period, stops the workers and closes the pools.
    /// A worker that stops on its own stops the application with
    /// [`RunError::TaskDied`] naming it.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let Self {
            listener,
            state,
            mut workers,
            shutdown_grace,
            ..
        } = self;
        let store = state.store.clone();
        let mut server = serve(listener, state, shutdown.clone());
        let outcome = tokio::select! {
            served = &mut server => server_outcome(served),
            name = workers.first_stopped() => Err(RunError::TaskDied(name)),
            _ = shutdown.cancelled() => {
                match tokio::time::timeout(shutdown_grace, &mut server).await {
                    Ok(served) => server_outcome(served),
                    Err(_) => {
                        tracing::warn!(grace = ?shutdown_grace, "in-flight requests outlived the shutdown grace period; dropping them");
                        Ok(())
                    }
                }
            }
        };
        if let Err(err) = &outcome {
            tracing::error!(error = %err, "stopping");
        }
        // Whether the server ended, outlived its grace or outlived a worker, nothing of
        // it runs on once the pools are closed.
        server.abort();
        workers.stop().await;
        store.close().await;
        tracing::info!("stopped");
        outcome
    }
}

/// The [`StoreCounters`] that count into `metrics`.
fn store_counters(metrics: &Metrics) -> StoreCounters {
    StoreCounters {
        queries: metrics.db_queries.clone(),
        connection_errors: metrics.db_connection_errors.clone(),
        rejected_rows: metrics.snapshot_rejected_rows.clone(),
    }
}

/// Makes the Redis client and asks Redis once whether it answers. Not answering is no
/// reason not to start: the application starts degraded, and the metrics sampler's
/// probe lets Redis back in once it answers.
async fn connect_redis(
    config: &tm_config::RedisConfig,
    metrics: &Arc<Metrics>,
) -> Result<Arc<tm_redis::Redis>, StartError> {
    let redis = tm_redis::Redis::new(config, metrics.clone()).map_err(StartError::Redis)?;
    if redis.ping().await.is_err() {
        tracing::warn!("Redis does not answer; starting degraded (local rate limits, idempotency records in the database)");
    }
    Ok(Arc::new(redis))
}

/// Loads the API keys (with `configured_admin` among them, if any) and the routing
/// snapshot from `store`.
async fn load(
    store: &Arc<dyn Store>,
    configured_admin: Option<&str>,
    backend: &'static str,
) -> Result<(Arc<KeyRing>, Arc<RoutingTable>), StartError> {
    let keys = KeyRing::load(store.clone(), configured_admin)
        .await
        .map_err(StartError::Keys)?;
    let routing = RoutingTable::load(store.clone())
        .await
        .map_err(StartError::Snapshot)?;
    tracing::info!(
        backend,
        routes = routing.snapshot().route_count(),
        "routing snapshot loaded"
    );
    Ok((Arc::new(keys), Arc::new(routing)))
}

/// What [`open`] gives: the store, the keys and the routing table, and whether they come
/// from the cold-start file.
type Opened = (
    Arc<dyn Store>,
    Arc<KeyRing>,
    Arc<RoutingTable>,
    Option<tm_http::ColdStart>,
);

/// Opens the store and loads the keys and the routing snapshot from it; from the
/// cold-start file instead when the database is unreachable and one is configured.
async fn open(
    config: &Config,
    metrics: &Arc<Metrics>,
    configured_admin: Option<&str>,
) -> Result<Opened, StartError> {
    let backend = config.storage.backend();
    let connected = tm_store::connect(&config.storage, &config.pool, store_counters(metrics)).await;
    match connected {
        Ok(store) => {
            let (keys, routing) = load(&store, configured_admin, backend).await?;
            Ok((store, keys, routing, None))
        }
        Err(unreachable @ StoreError::Unavailable(_)) if config.cold_start.is_some() => {
            let cold = coldstart::start_cold(
                config,
                store_counters(metrics),
                configured_admin,
                &unreachable,
            )
            .await?;
            let status = tm_http::ColdStart::serving(cold.file.clone(), cold.written_at);
            Ok((cold.store, cold.keys, cold.routing, Some(status)))
        }
        Err(source) => Err(StartError::Store { backend, source }),
    }
}

/// Binds the listener; returns it with the address actually bound.
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((listener, local_addr))
}

/// Serves the API on `listener`, on a task of its own, until `shutdown` is cancelled
/// and the requests in flight are answered.
fn serve(listener: TcpListener, state: AppState, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(tm_http::serve(listener, state, shutdown))
}

/// What the end of the server task means for the application.
fn server_outcome(served: Result<(), tokio::task::JoinError>) -> Result<(), RunError> {
    served.map_err(|_| RunError::TaskDied("http server"))
}

/// Creates an API key directly in the configured store (for automation, offline) and
/// returns it with its record; the key is shown nowhere else. It is audited as made by
/// `cli`, and counts against `TM_MAX_KEYS_PER_TENANT` as any other.
pub async fn create_key(
    config: &Config,
    name: String,
    grant: Grant,
) -> Result<(ApiKey, KeyRecord), StartError> {
    let backend = config.storage.backend();
    let store = tm_store::connect(&config.storage, &config.pool, StoreCounters::default())
        .await
        .map_err(|source| StartError::Store { backend, source })?;
    let key = ApiKey::new(KeyId::generate(), rand::random());
    let record = KeyRecord::new(&key, name, grant);
    let most = config.http.rate_limits.max_keys_per_tenant.get();
    let stored = store
        .create_key(&record, &tm_store::Actor::new("cli"), Some(most))
        .await
        .map_err(StartError::Keys);
    store.close().await;
    stored.map(|()| (key, record))
}
