//! The composition root. [`Application::build`] does every fallible step of start-up —
//! open the store and migrate, load the routing snapshot, bind the listener — and
//! [`Application::run_until`] only serves, until the given token is cancelled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use tm_config::Config;
use tm_domain::{ApiKey, Grant, KeyId};
use tm_http::{AppState, KEYS_CHANNEL};
use tm_resilience::LocalRateLimiter;
use tm_store::{
    ChangeSubscription, Changed, KeyRecord, KeyRing, RoutingTable, Store, StoreCounters, StoreError,
};
use tm_telemetry::Metrics;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
    #[error("loading API keys")]
    Keys(#[source] StoreError),
    #[error("writing the bootstrap admin key to {path}")]
    BootstrapFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuring Redis")]
    Redis(#[source] tm_redis::RedisError),
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("serving HTTP")]
    Serve(#[source] std::io::Error),
    #[error("background task {0} stopped unexpectedly")]
    TaskDied(&'static str),
}

/// A built, bound, ready-to-run registry.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
    store: Arc<dyn Store>,
    routing: Arc<RoutingTable>,
    keys: Arc<KeyRing>,
    redis: Option<Arc<tm_redis::Redis>>,
    /// Change notifications, listened to before the first request is served.
    subscription: Option<ChangeSubscription>,
    reload_interval: Duration,
    catch_up_interval: Duration,
    sample_interval: Duration,
    shutdown_grace: Duration,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let backend = config.storage.backend();
        if config.http.cors == tm_config::CorsOrigins::Any {
            tracing::warn!("TM_CORS_ORIGINS is *: any web page may call this API from a browser; list the origins instead");
        }
        let metrics = Arc::new(Metrics::new(
            config.metrics.max_tenants,
            env!("CARGO_PKG_VERSION"),
        ));
        let counters = StoreCounters {
            queries: metrics.db_queries.clone(),
            connection_errors: metrics.db_connection_errors.clone(),
        };
        let store = tm_store::connect(&config.storage, &config.pool, counters)
            .await
            .map_err(|source| StartError::Store { backend, source })?;
        let configured_admin = config
            .bootstrap_admin_key
            .as_ref()
            .map(|k| k.expose_secret().to_owned());
        if configured_admin.is_none() {
            bootstrap_admin_key(store.as_ref(), &config.data_dir).await?;
        }
        let keys = Arc::new(
            KeyRing::load(store.clone(), configured_admin.as_deref())
                .await
                .map_err(StartError::Keys)?,
        );
        let routing = Arc::new(
            RoutingTable::load(store.clone())
                .await
                .map_err(StartError::Snapshot)?,
        );
        tracing::info!(
            backend,
            routes = routing.snapshot().route_count(),
            "routing snapshot loaded"
        );
        // Listening before serving: a change committed once this returns is notified.
        let subscription = subscribe(store.as_ref()).await;
        let addr = config.http.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let shutdown_grace = config.http.shutdown_grace;
        let limiter = Arc::new(LocalRateLimiter::new(config.http.rate_limits.clone()));
        let redis = config
            .redis
            .as_ref()
            .map(|redis| {
                tm_redis::Redis::new(redis, metrics.clone())
                    .map(Arc::new)
                    .map_err(StartError::Redis)
            })
            .transpose()?;
        if let Some(redis) = &redis {
            if redis.ping().await.is_err() {
                tracing::warn!("Redis does not answer; starting degraded (local rate limits, idempotency records in the database)");
            }
        }
        // With replicas, a caller that wrote reads from the primary for the lag bound plus
        // one lag check: any replica still in the rotation then has its write.
        let read_your_writes = match &config.storage {
            tm_config::StorageConfig::Postgres(postgres) if !postgres.replicas.is_empty() => {
                Some(postgres.replica_max_lag + config.metrics.pool_sample_interval)
            }
            _ => None,
        };
        let state = AppState::new(
            store.clone(),
            routing.clone(),
            keys.clone(),
            metrics,
            limiter,
            config.http,
            tm_http::Fleet {
                redis: redis.clone(),
                read_your_writes,
            },
        );
        Ok(Self {
            listener,
            local_addr,
            state,
            store,
            routing,
            keys,
            redis,
            subscription,
            reload_interval: config.snapshot_reload_interval,
            catch_up_interval: config.snapshot_catch_up_interval,
            sample_interval: config.metrics.pool_sample_interval,
            shutdown_grace,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, gives in-flight
    /// requests up to the configured grace period, stops the workers and closes the pools.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let workers = CancellationToken::new();
        let mut reloader: JoinHandle<()> = tokio::spawn(follow_changes(
            Followed {
                store: self.store.clone(),
                routing: self.routing.clone(),
                keys: self.keys.clone(),
                redis: self.redis.clone(),
                guard: self.state.guard.clone(),
                metrics: self.state.metrics.clone(),
            },
            self.subscription,
            (self.catch_up_interval, self.reload_interval),
            workers.clone(),
        ));
        let mut sampler: JoinHandle<()> = tokio::spawn(sample_periodically(
            self.state.clone(),
            self.sample_interval,
            workers.clone(),
        ));

        let app = tm_http::router(self.state);
        let graceful = shutdown.clone();
        let mut server = tokio::spawn(async move {
            axum::serve(
                self.listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { graceful.cancelled().await })
            .await
        });

        let outcome = tokio::select! {
            served = &mut server => match served {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(RunError::Serve(e)),
                Err(_) => Err(RunError::TaskDied("http server")),
            },
            _ = &mut reloader => Err(RunError::TaskDied("snapshot reloader")),
            _ = &mut sampler => Err(RunError::TaskDied("metrics sampler")),
            _ = shutdown.cancelled() => {
                match tokio::time::timeout(self.shutdown_grace, &mut server).await {
                    Ok(Ok(Ok(()))) => Ok(()),
                    Ok(Ok(Err(e))) => Err(RunError::Serve(e)),
                    Ok(Err(_)) => Err(RunError::TaskDied("http server")),
                    Err(_) => {
                        tracing::warn!(grace = ?self.shutdown_grace, "in-flight requests outlived the shutdown grace period; dropping them");
                        server.abort();
                        Ok(())
                    }
                }
            }
        };
        if let Err(err) = &outcome {
            tracing::error!(error = %err, "stopping");
        }
        workers.cancel();
        let _ = reloader.await;
        let _ = sampler.await;
        self.store.close().await;
        tracing::info!("stopped");
        outcome
    }
}

/// What [`follow_changes`] keeps in step, and with what.
struct Followed {
    store: Arc<dyn Store>,
    routing: Arc<RoutingTable>,
    keys: Arc<KeyRing>,
    redis: Option<Arc<tm_redis::Redis>>,
    /// Whose cached reads changes made elsewhere make stale.
    guard: Arc<tm_http::Guard>,
    metrics: Arc<Metrics>,
}

/// Keeps the snapshot and the keys in step with the store. Where the store sends change
/// notifications (PostgreSQL), each one triggers a catch-up at once. Every `catch_up`
/// regardless, the snapshot applies the changes recorded since its last look (made by
/// this instance or any other) and the keys are re-read: the bound on how long a missed
/// notification can go unnoticed. Every `reload` the snapshot is rebuilt from scratch,
/// a safety net for changes made to the database directly; with Redis, one instance of
/// the fleet at a time. Key changes published on Redis reload the keys at once.
async fn follow_changes(
    followed: Followed,
    mut subscription: Option<ChangeSubscription>,
    (catch_up_every, reload_every): (Duration, Duration),
    stop: CancellationToken,
) {
    let Followed {
        store,
        routing,
        keys,
        redis,
        guard,
        metrics,
    } = followed;
    let ticker = |every: Duration| {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    };
    let (mut catch_up, mut reload) = (ticker(catch_up_every), ticker(reload_every));
    if subscription.is_none() {
        subscription = subscribe(store.as_ref()).await;
    }
    let mut rebuilding: Option<JoinHandle<()>> = None;
    let mut fan_out = subscribe_redis(redis.as_deref()).await;
    // Whatever committed before the subscription was listening is in the feed: catch
    // up once at the start, as after every new subscription.
    let mut changed = Changed::all();
    let observe = |made_at: &[DateTime<Utc>]| {
        let now = tm_domain::now();
        for made_at in made_at {
            let seconds = (now - *made_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            metrics.observe_propagation(seconds);
        }
    };
    loop {
        if !changed.services.is_empty() {
            let (services, made_at): (Vec<_>, Vec<_>) = changed.services.into_iter().unzip();
            // Cached list and get answers may predate the change.
            guard.forget_cached_reads();
            match routing.refresh_services(&services).await {
                Ok(()) => observe(&made_at),
                Err(err) => {
                    tracing::warn!(error = %err,
                        "re-reading services changed elsewhere failed; catching up from the feed");
                    changed.feed = true;
                }
            }
        }
        if changed.feed {
            match routing.catch_up().await {
                Ok(services) => {
                    if services > 0 {
                        guard.forget_cached_reads();
                        tracing::debug!(services, "routing snapshot caught up");
                    }
                }
                Err(err) => tracing::warn!(error = %err,
                    "reading the change feed failed; serving the snapshot as it is"),
            }
        }
        if changed.keys {
            if let Err(err) = keys.reload().await {
                tracing::warn!(error = %err, "API key reload failed; using the keys already loaded");
            }
        }
        changed = tokio::select! {
            _ = stop.cancelled() => {
                if let Some(rebuild) = rebuilding.take() {
                    rebuild.abort();
                }
                return;
            }
            _ = catch_up.tick() => {
                if subscription.is_none() {
                    subscription = subscribe(store.as_ref()).await;
                }
                if fan_out.is_none() {
                    fan_out = subscribe_redis(redis.as_deref()).await;
                }
                Changed::all()
            }
            _ = reload.tick() => {
                // In a task of its own: waiting its turn, or a long rebuild, must not
                // hold up notifications and catch-ups. One at a time.
                if rebuilding.as_ref().is_none_or(JoinHandle::is_finished) {
                    rebuilding = Some(tokio::spawn(rebuild(
                        routing.clone(),
                        redis.clone(),
                        metrics.clone(),
                    )));
                }
                Changed::default()
            }
            message = next_message(&mut fan_out) => match message {
                Some(_) => Changed { keys: true, ..Changed::default() },
                None => {
                    tracing::warn!("lost the Redis subscription; keys are re-read on the catch-up period");
                    fan_out = None;
                    Changed::default()
                }
            },
            notified = next_notification(&mut subscription) => match notified {
                Ok(changed) => changed,
                Err(err) => {
                    tracing::warn!(error = %err,
                        "lost the change notifications; following the change feed on its period");
                    subscription = None;
                    Changed::all()
                }
            },
        };
    }
}

/// How long one instance may hold the rebuild lock; a rebuild taking longer (or an
/// instance dying in one) lets the next instance start its own.
const REBUILD_LOCK_TTL: Duration = Duration::from_secs(300);

/// Rebuilds the snapshot from scratch. With Redis, instances take turns: a full read of
/// every route is the most expensive query there is, and a fleet doing it at once would
/// load the database N-fold. Without Redis (or while it is unusable), no turns.
async fn rebuild(
    routing: Arc<RoutingTable>,
    redis: Option<Arc<tm_redis::Redis>>,
    metrics: Arc<Metrics>,
) {
    let mut lock = None;
    if let Some(redis) = &redis {
        let deadline = tokio::time::Instant::now() + REBUILD_LOCK_TTL;
        loop {
            match redis.try_lock("snapshot-rebuild", REBUILD_LOCK_TTL).await {
                Ok(Some(held)) => {
                    lock = Some(held);
                    break;
                }
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Ok(None) => {
                    tracing::warn!(
                        "another instance held the rebuild lock too long; rebuilding anyway"
                    );
                    break;
                }
                Err(tm_redis::Unavailable) => {
                    metrics.observe_redis_fallback("lock");
                    break;
                }
            }
        }
    }
    match routing.reload().await {
        Ok(routes) => tracing::info!(routes, "routing snapshot reloaded"),
        Err(err) => tracing::warn!(error = %err,
            "routing snapshot reload failed; serving the previous one"),
    }
    if let (Some(redis), Some(lock)) = (&redis, lock) {
        let _ = redis.unlock(lock).await;
    }
}

/// A subscription to key changes published on Redis, if configured and reachable.
async fn subscribe_redis(
    redis: Option<&tm_redis::Redis>,
) -> Option<futures::stream::BoxStream<'static, String>> {
    // Not while Redis is known to be unusable: each node would be tried in turn.
    let redis = redis.filter(|r| !r.degraded())?;
    redis.subscribe(KEYS_CHANNEL).await.ok()
}

/// The next message published; never, without a subscription; `None` when it ended.
async fn next_message(
    subscription: &mut Option<futures::stream::BoxStream<'static, String>>,
) -> Option<String> {
    use futures::StreamExt;
    match subscription {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// A subscription to change notifications, if the store sends them and one can be made
/// now (if not, the next periodic catch-up tries again).
async fn subscribe(store: &dyn Store) -> Option<ChangeSubscription> {
    match store.subscribe().await {
        Ok(subscription) => subscription,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for change notifications now");
            None
        }
    }
}

/// The next notification; never, without a subscription.
async fn next_notification(
    subscription: &mut Option<ChangeSubscription>,
) -> Result<Changed, StoreError> {
    match subscription {
        Some(subscription) => subscription.next().await,
        None => std::future::pending().await,
    }
}

/// Samples pool figures and snapshot size into the metrics on a fixed period.
async fn sample_periodically(state: AppState, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut purge = tokio::time::interval(Duration::from_secs(600));
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                state.check_replicas().await;
                if let Some(redis) = &state.redis {
                    if redis.degraded() {
                        // The probe that lets the breaker close when Redis is back.
                        let _ = redis.ping().await;
                    }
                }
                tm_http::sample_metrics(&state);
                state.limiter.forget_idle();
            }
            _ = purge.tick() => {
                match state.store.purge_idempotency_keys().await {
                    Ok(0) => {}
                    Ok(purged) => tracing::debug!(purged, "expired idempotency records deleted"),
                    Err(err) => tracing::warn!(error = %err, "deleting expired idempotency records failed"),
                }
            }
        }
    }
}

/// Creates an API key directly in the configured store (for automation, offline) and
/// returns it with its record; the key is shown nowhere else.
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
    let stored = store.create_key(&record).await.map_err(StartError::Keys);
    store.close().await;
    stored.map(|()| (key, record))
}

/// On a store that never had a key, makes an admin key, prints it once on stdout and
/// writes it to `<data_dir>/bootstrap-admin.key` (mode 0600). Only one instance of a
/// fleet wins; the others find a key already made and do nothing.
async fn bootstrap_admin_key(
    store: &dyn Store,
    data_dir: &std::path::Path,
) -> Result<(), StartError> {
    let key = ApiKey::new(KeyId::generate(), rand::random());
    let record = KeyRecord::new(&key, "bootstrap admin".to_owned(), Grant::Admin);
    if !store
        .create_first_key(&record)
        .await
        .map_err(StartError::Keys)?
    {
        return Ok(());
    }
    let path = data_dir.join("bootstrap-admin.key");
    write_secret_file(&path, &key.expose()).map_err(|source| StartError::BootstrapFile {
        path: path.clone(),
        source,
    })?;
    println!("bootstrap admin key: {}", key.expose());
    tracing::info!(key.id = %record.id, path = %path.display(), "bootstrap admin key created");
    Ok(())
}

/// Writes `contents` to a new file readable by its owner only.
fn write_secret_file(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    writeln!(file, "{contents}")?;
    file.sync_all()
}
