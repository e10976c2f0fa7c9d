//! Opening the pools: the session settings every connection carries, the migrations,
//! and the lazy replica pools.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tm_config::{PoolConfig, PostgresConfig};

use super::pooling::{begin_with_settings, split_startup_options};
use super::replicas::{Replica, REPLICA_POOLS};
use super::PostgresStore;
use crate::pool::{CountedPool, StoreCounters};
use crate::StoreError;

impl PostgresStore {
    /// Connects to the configured primary and applies migrations.
    pub async fn connect(
        config: &PostgresConfig,
        pool: &PoolConfig,
        counters: StoreCounters,
    ) -> Result<Self, StoreError> {
        Self::open(config, pool, counters, false).await
    }

    /// The store of the configured primary without connecting to it (nor migrating it):
    /// its pools connect when first used. For an instance started from its cold-start
    /// file while the database is unreachable; it migrates (see [`crate::migrate`])
    /// before it reads anything once the database answers.
    pub async fn connect_lazy(
        config: &PostgresConfig,
        pool: &PoolConfig,
        counters: StoreCounters,
    ) -> Result<Self, StoreError> {
        Self::open(config, pool, counters, true).await
    }

    async fn open(
        config: &PostgresConfig,
        pool: &PoolConfig,
        counters: StoreCounters,
        lazy: bool,
    ) -> Result<Self, StoreError> {
        let PostgresConfig {
            url,
            statement_timeout,
            idle_in_transaction_timeout,
            statement_cache,
            transaction_pooling,
            direct_url,
            replicas,
            replica_max_lag,
        } = config;
        // Every connection, to the primary or a replica, carries the same time-outs.
        let settings = Settings {
            instance: uuid::Uuid::now_v7().simple().to_string(),
            timeouts: [
                (
                    "statement_timeout",
                    format!("{}ms", statement_timeout.as_millis()),
                ),
                (
                    "idle_in_transaction_session_timeout",
                    format!("{}ms", idle_in_transaction_timeout.as_millis()),
                ),
            ],
            statement_cache: *statement_cache,
            transaction_pooling: *transaction_pooling,
        };
        let (options, pin) = settings.lent(url, true)?;
        let critical = pool_options(pool, pool.critical_connections, 1);
        let primary = pool_options(pool, pool.max_connections, pool.min_connections);
        let (critical, primary) = if lazy {
            (
                critical.connect_lazy_with(options.clone()),
                primary.connect_lazy_with(options),
            )
        } else {
            (
                critical.connect_with(options.clone()).await?,
                primary.connect_with(options).await?,
            )
        };
        // Migrations and LISTEN need a session: PostgreSQL itself, not a pooling proxy.
        let direct = settings
            .session(direct_url.as_ref().unwrap_or(url))?
            .options([("traffic_manager.instance", &settings.instance)]);
        if !lazy {
            migrate(&direct, pool).await?;
        }
        let listen = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(pool.acquire_timeout)
            .connect_lazy_with(direct.clone());
        let replicas = settings.replicas(replicas, pool, &counters)?;
        Ok(Self {
            instance: settings.instance,
            replicas,
            replica_max_lag: *replica_max_lag,
            next_replica: AtomicUsize::new(0),
            listen,
            direct,
            primary: CountedPool::new("primary", primary, counters.clone()).pinned(pin.clone()),
            critical: CountedPool::new("critical", critical, counters).pinned(pin),
        })
    }
}

/// The pool settings shared by the primary, critical and replica pools.
fn pool_options(pool: &PoolConfig, max: u32, min: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(min)
        .acquire_timeout(pool.acquire_timeout)
        .idle_timeout(pool.idle_timeout)
        .max_lifetime(pool.max_lifetime)
}

/// Applies the migrations over a connection of its own, closed afterwards.
async fn migrate(direct: &PgConnectOptions, pool: &PoolConfig) -> Result<(), StoreError> {
    let migrator = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(pool.acquire_timeout)
        .connect_with(direct.clone())
        .await?;
    let migrated = sqlx::migrate!("./migrations/postgres").run(&migrator).await;
    migrator.close().await;
    Ok(migrated?)
}

/// What every connection carries.
struct Settings {
    /// This process's name in the change notifications of its writes.
    instance: String,
    timeouts: [(&'static str, String); 2],
    statement_cache: bool,
    transaction_pooling: bool,
}

impl Settings {
    /// A session of its own: settings as startup options.
    fn session(&self, url: &SecretString) -> Result<PgConnectOptions, StoreError> {
        let options = PgConnectOptions::from_str(url.expose_secret())?
            .application_name("traffic-manager")
            .options(self.timeouts.clone());
        Ok(if self.statement_cache {
            options
        } else {
            options.statement_cache_capacity(0)
        })
    }

    /// Connect options and, behind a transaction-pooling proxy, the statement that opens
    /// each lease's transaction with the settings (see `Lease`). `tagged`: writes name
    /// this instance in their change notifications.
    fn lent(
        &self,
        url: &SecretString,
        tagged: bool,
    ) -> Result<(PgConnectOptions, Option<Arc<str>>), StoreError> {
        if !self.transaction_pooling {
            let options = self.session(url)?;
            return Ok((
                if tagged {
                    options.options([("traffic_manager.instance", &self.instance)])
                } else {
                    options
                },
                None,
            ));
        }
        let (stripped, from_url) = split_startup_options(url.expose_secret())?;
        let options = PgConnectOptions::from_str(&stripped)?
            .application_name("traffic-manager")
            .statement_cache_capacity(0);
        let mut settings: Vec<(String, String)> = self
            .timeouts
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .chain(from_url)
            .collect();
        if tagged {
            settings.push(("traffic_manager.instance".into(), self.instance.clone()));
        }
        Ok((options, Some(begin_with_settings(&settings).into())))
    }

    /// A lazy pool per replica URL: a replica that is down at start-up leaves the
    /// rotation, not the process.
    fn replicas(
        &self,
        urls: &[SecretString],
        pool: &PoolConfig,
        counters: &StoreCounters,
    ) -> Result<Vec<Replica>, StoreError> {
        let mut replicas = Vec::with_capacity(urls.len());
        for (url, name) in urls.iter().zip(REPLICA_POOLS) {
            let (options, pin) = self.lent(url, false)?;
            let lazy = pool_options(pool, pool.max_connections, 0).connect_lazy_with(options);
            replicas.push(Replica {
                pool: CountedPool::new(name, lazy, counters.clone()).pinned(pin),
                in_rotation: AtomicBool::new(false),
            });
        }
        Ok(replicas)
    }
}
