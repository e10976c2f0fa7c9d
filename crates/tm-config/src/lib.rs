//! Configuration: defaults < TOML file (`--config` / `TM_CONFIG`) < `TM_*` environment,
//! read into [`RawConfig`] and checked once into [`Config`], whose types rule out bad states.
//!
//! Keys are flat and the same in both places: `TM_DATABASE_URL` in the environment is
//! `database_url` in the TOML file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tm_domain::KeyId;
use tm_resilience::{Quota, RateLimits};

/// Settings as read, before validation. Every field is a setting; see the README table.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub profile: String,
    pub listen: String,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    /// `web` (serves the API) or `worker` (background work): picks the pool size.
    pub process_type: String,
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
    #[serde(with = "humantime_serde")]
    pub db_statement_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub db_idle_in_transaction_timeout: Duration,
    pub db_statement_cache: bool,
    /// `TM_DATABASE_URL` points at a transaction-pooling PgBouncer.
    pub db_transaction_pooling: bool,
    /// PostgreSQL directly (not through PgBouncer), for `LISTEN` and migrations.
    pub database_direct_url: Option<String>,
    /// Read replicas, comma-separated PostgreSQL URLs.
    pub database_replica_urls: Option<String>,
    /// Replication lag beyond which a replica leaves the rotation.
    #[serde(with = "humantime_serde")]
    pub replica_max_lag: Duration,
    pub sqlite_synchronous: String,
    /// One Redis server, `redis://host:port[/db]`.
    pub redis_url: Option<String>,
    /// The seed nodes of a Redis Cluster, comma-separated `redis://host:port`.
    pub redis_cluster_urls: Option<String>,
    /// Connections in the Redis pool.
    pub redis_pool_max: u32,
    /// Bound on one Redis command; beyond it the request goes on without Redis.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub redis_connect_timeout: Duration,
    pub log_format: Option<String>,
    pub log_level: String,
    pub body_limit_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub resolve_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub resolve_stale_while_revalidate: Duration,
    #[serde(with = "humantime_serde")]
    pub snapshot_reload_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub snapshot_catch_up_interval: Duration,
    /// Threads serving requests; 0 means one per available CPU.
    pub worker_threads: usize,
    #[serde(with = "humantime_serde")]
    pub health_check_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub bootstrap_admin_key: Option<String>,
    /// Comma-separated origins allowed by CORS, or `*`.
    pub cors_origins: Option<String>,
    /// Set when a TLS-terminating proxy is in front: adds `Strict-Transport-Security`.
    pub behind_tls: bool,
    /// Distinct tenants given their own `tenant_requests_total` series; the rest are `other`.
    pub metrics_max_tenants: usize,
    #[serde(with = "humantime_serde")]
    pub pool_sample_interval: Duration,
    /// Per key: resolve requests, e.g. `20000/s`.
    pub rate_limit_resolve: String,
    /// Per key: other reads.
    pub rate_limit_read: String,
    /// Per key: route writes.
    pub rate_limit_write: String,
    /// Per key: key management.
    pub rate_limit_keys: String,
    /// Per client address: requests without a valid key.
    pub rate_limit_unauthenticated: String,
    /// Comma-separated key ids and networks (CIDR) that no limit applies to.
    pub rate_limit_exempt: String,
    /// Pool usage (percent) at which the database circuit breaker opens.
    pub breaker_usage_percent: f64,
    /// Tasks waiting for a connection at which the breaker opens.
    pub breaker_max_waiting: u32,
    /// How long pool pressure must last before it opens the breaker.
    #[serde(with = "humantime_serde")]
    pub breaker_pressure_for: Duration,
    /// Consecutive database failures or timeouts at which the breaker opens.
    pub breaker_failures: u32,
    #[serde(with = "humantime_serde")]
    pub breaker_open_for: Duration,
    /// Concurrent database reads (list, get).
    pub bulkhead_reads: u32,
    /// Concurrent ordinary writes.
    pub bulkhead_writes: u32,
    /// Concurrent critical writes (activate, deactivate).
    pub bulkhead_critical: u32,
    /// How long a request waits for a bulkhead slot before 503.
    #[serde(with = "humantime_serde")]
    pub bulkhead_wait: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout_read: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout_write: Duration,
    /// In-flight API requests beyond which new ones are shed with 503 at once.
    pub max_in_flight: u32,
    /// How long a list or get answer is served from cache.
    #[serde(with = "humantime_serde")]
    pub read_cache_ttl: Duration,
    pub read_cache_entries: u64,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            profile: "dev".into(),
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            process_type: "web".into(),
            db_pool_max: 10,
            db_pool_max_web: None,
            db_pool_max_worker: None,
            db_pool_min: 1,
            db_critical_pool: 2,
            db_acquire_timeout: Duration::from_secs(5),
            db_idle_timeout: Duration::from_secs(600),
            db_max_lifetime: Duration::from_secs(1800),
            db_statement_timeout: Duration::from_secs(3),
            db_idle_in_transaction_timeout: Duration::from_secs(5),
            db_statement_cache: true,
            db_transaction_pooling: false,
            database_direct_url: None,
            database_replica_urls: None,
            replica_max_lag: Duration::from_secs(5),
            sqlite_synchronous: "full".into(),
            redis_url: None,
            redis_cluster_urls: None,
            redis_pool_max: 16,
            redis_timeout: Duration::from_millis(250),
            redis_connect_timeout: Duration::from_secs(1),
            log_format: None,
            log_level: "info".into(),
            body_limit_bytes: 64 * 1024,
            resolve_max_age: Duration::from_secs(5),
            resolve_stale_while_revalidate: Duration::from_secs(30),
            snapshot_reload_interval: Duration::from_secs(3600),
            snapshot_catch_up_interval: Duration::from_secs(5),
            worker_threads: 0,
            health_check_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(10),
            bootstrap_admin_key: None,
            cors_origins: None,
            behind_tls: false,
            metrics_max_tenants: 100,
            pool_sample_interval: Duration::from_secs(5),
            rate_limit_resolve: "20000/s".into(),
            rate_limit_read: "2000/s".into(),
            rate_limit_write: "500/s".into(),
            rate_limit_keys: "50/s".into(),
            rate_limit_unauthenticated: "100/s".into(),
            rate_limit_exempt: String::new(),
            breaker_usage_percent: 85.0,
            breaker_max_waiting: 5,
            breaker_pressure_for: Duration::from_secs(1),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(5),
            bulkhead_reads: 4,
            bulkhead_writes: 4,
            bulkhead_critical: 2,
            bulkhead_wait: Duration::from_secs(2),
            timeout_read: Duration::from_secs(2),
            timeout_write: Duration::from_secs(5),
            max_in_flight: 4096,
            read_cache_ttl: Duration::from_secs(1),
            read_cache_entries: 10_000,
        }
    }
}

/// The keys that may come from `TM_*` variables. Other `TM_` variables (`TM_CONFIG`, or
/// ones used by tooling) are not settings and are left alone.
const ENV_KEYS: &[&str] = &[
    "profile",
    "listen",
    "data_dir",
    "database_url",
    "process_type",
    "db_pool_max",
    "db_pool_max_web",
    "db_pool_max_worker",
    "db_pool_min",
    "db_critical_pool",
    "db_acquire_timeout",
    "db_idle_timeout",
    "db_max_lifetime",
    "db_statement_timeout",
    "db_idle_in_transaction_timeout",
    "db_statement_cache",
    "db_transaction_pooling",
    "database_direct_url",
    "database_replica_urls",
    "replica_max_lag",
    "sqlite_synchronous",
    "redis_url",
    "redis_cluster_urls",
    "redis_pool_max",
    "redis_timeout",
    "redis_connect_timeout",
    "log_format",
    "log_level",
    "body_limit_bytes",
    "resolve_max_age",
    "resolve_stale_while_revalidate",
    "snapshot_reload_interval",
    "snapshot_catch_up_interval",
    "worker_threads",
    "health_check_timeout",
    "shutdown_grace",
    "bootstrap_admin_key",
    "cors_origins",
    "behind_tls",
    "metrics_max_tenants",
    "pool_sample_interval",
    "rate_limit_resolve",
    "rate_limit_read",
    "rate_limit_write",
    "rate_limit_keys",
    "rate_limit_unauthenticated",
    "rate_limit_exempt",
    "breaker_usage_percent",
    "breaker_max_waiting",
    "breaker_pressure_for",
    "breaker_failures",
    "breaker_open_for",
    "bulkhead_reads",
    "bulkhead_writes",
    "bulkhead_critical",
    "bulkhead_wait",
    "timeout_read",
    "timeout_write",
    "max_in_flight",
    "read_cache_ttl",
    "read_cache_entries",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Dev,
    Staging,
    Prod,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// SQLite's `synchronous` pragma: `full` syncs the WAL on every commit (survives power
/// loss), `normal` only at checkpoints (survives a process crash, not a power cut).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    Full,
    Normal,
}

/// Read replicas one instance can use.
pub const MAX_REPLICAS: usize = 8;

/// Where routes are stored, chosen by the scheme of `database_url`.
#[derive(Clone, Debug)]
pub enum StorageConfig {
    Sqlite {
        path: PathBuf,
        synchronous: SqliteSynchronous,
    },
    Postgres {
        url: SecretString,
        statement_timeout: Duration,
        idle_in_transaction_timeout: Duration,
        /// Server-side prepared statement cache; off behind PgBouncer in transaction mode.
        statement_cache: bool,
        /// `url` is a transaction-pooling proxy (PgBouncer, `pool_mode = transaction`):
        /// every connection is lent inside one transaction, settings travel as `SET LOCAL`.
        transaction_pooling: bool,
        /// PostgreSQL itself, for what needs a session: `LISTEN` and migrations (their
        /// advisory lock). Defaults to `url`; required with `transaction_pooling`.
        direct_url: Option<SecretString>,
        /// Read replicas for reads that may lag (each gets a pool like the primary's).
        replicas: Vec<SecretString>,
        /// Replication lag beyond which a replica serves no reads.
        replica_max_lag: Duration,
    },
}

impl StorageConfig {
    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self {
            StorageConfig::Sqlite { .. } => "sqlite",
            StorageConfig::Postgres { .. } => "postgres",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PoolConfig {
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

#[derive(Clone, Debug, Serialize)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `info,tm_store=debug`.
    pub level: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub body_limit_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub resolve_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub resolve_stale_while_revalidate: Duration,
    #[serde(with = "humantime_serde")]
    pub health_check_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub cors: CorsOrigins,
    pub behind_tls: bool,
    #[serde(skip)]
    pub rate_limits: RateLimits,
    pub guards: GuardConfig,
}

/// Limits that keep the database path answering under load and faults.
#[derive(Clone, Debug, Serialize)]
pub struct GuardConfig {
    pub breaker_usage_percent: f64,
    pub breaker_max_waiting: u32,
    #[serde(with = "humantime_serde")]
    pub breaker_pressure_for: Duration,
    pub breaker_failures: u32,
    #[serde(with = "humantime_serde")]
    pub breaker_open_for: Duration,
    pub bulkhead_reads: u32,
    pub bulkhead_writes: u32,
    pub bulkhead_critical: u32,
    #[serde(with = "humantime_serde")]
    pub bulkhead_wait: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout_read: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout_write: Duration,
    pub max_in_flight: u32,
    #[serde(with = "humantime_serde")]
    pub read_cache_ttl: Duration,
    pub read_cache_entries: u64,
}

/// Which browser origins may call the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CorsOrigins {
    /// No cross-origin access (the default).
    None,
    /// Any origin (`*`); refused in the `prod` profile.
    Any,
    /// These origins, e.g. `https://console.example.com`.
    List(Vec<String>),
}

/// Metrics settings.
#[derive(Clone, Debug, Serialize)]
pub struct MetricsConfig {
    pub max_tenants: usize,
    #[serde(with = "humantime_serde")]
    pub pool_sample_interval: Duration,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub profile: Profile,
    pub data_dir: PathBuf,
    pub storage: StorageConfig,
    pub pool: PoolConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub snapshot_reload_interval: Duration,
    /// How often the snapshot reads the change feed for changes made elsewhere.
    pub snapshot_catch_up_interval: Duration,
    /// Threads serving requests (at least 1; one per available CPU unless configured).
    pub worker_threads: usize,
    /// `TM_BOOTSTRAP_ADMIN_KEY`: an admin key given by the operator (at least 32 characters).
    pub bootstrap_admin_key: Option<SecretString>,
    pub metrics: MetricsConfig,
    pub process_type: ProcessType,
    pub redis: Option<RedisConfig>,
}

/// What a process of this deployment does; each type has its own pool size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessType {
    Web,
    Worker,
}

impl ProcessType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessType::Web => "web",
            ProcessType::Worker => "worker",
        }
    }
}

/// Where Redis is: one server, or the seed nodes of a cluster.
#[derive(Clone, Debug)]
pub enum RedisNodes {
    Single(SecretString),
    Cluster(Vec<SecretString>),
}

/// Redis, when configured: shared rate limits, idempotency keys, the fleet-wide
/// rebuild lock and key-revocation fan-out.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub nodes: RedisNodes,
    pub pool_max: u32,
    /// Bound on one command (and on waiting for a pooled connection).
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

/// One problem with one setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingError {
    /// The environment variable that names the setting, e.g. `TM_LISTEN`.
    pub setting: String,
    pub message: String,
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub struct ConfigError(pub Vec<SettingError>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for e in &self.0 {
            write!(f, "\n  {}: {}", e.setting, e.message)?;
        }
        Ok(())
    }
}

fn env_name(key: &str) -> String {
    format!("TM_{}", key.to_ascii_uppercase())
}

impl Config {
    /// Reads defaults, then the TOML file (`file`, else `TM_CONFIG` if set), then `TM_*`.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("TM_CONFIG").map(PathBuf::from));
        Self::from_figment(figment_for(file.as_deref())?)
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(|errors| {
            ConfigError(
                errors
                    .into_iter()
                    .map(|e| SettingError {
                        setting: if e.path.is_empty() {
                            "configuration".to_owned()
                        } else {
                            env_name(&e.path.join("_"))
                        },
                        message: e.kind.to_string(),
                    })
                    .collect(),
            )
        })?;
        Config::try_from(raw)
    }

    /// The effective settings as TOML-like `key = value` lines, secrets redacted.
    pub fn redacted(&self) -> String {
        let mut lines = vec![
            format!(
                "profile = {:?}",
                format!("{:?}", self.profile).to_lowercase()
            ),
            format!("listen = \"{}\"", self.http.listen),
            format!("data_dir = {:?}", self.data_dir.display().to_string()),
        ];
        match &self.storage {
            StorageConfig::Sqlite { path, synchronous } => {
                lines.push(format!("database_url = \"sqlite://{}\"", path.display()));
                lines.push(format!(
                    "sqlite_synchronous = {:?}",
                    format!("{synchronous:?}").to_lowercase()
                ));
            }
            StorageConfig::Postgres {
                url,
                statement_timeout,
                idle_in_transaction_timeout,
                statement_cache,
                transaction_pooling,
                direct_url,
                replicas,
                replica_max_lag,
            } => {
                lines.push(format!(
                    "database_url = {:?}",
                    redact_url(url.expose_secret())
                ));
                lines.push(format!(
                    "db_statement_timeout = \"{}\"",
                    humantime::format_duration(*statement_timeout)
                ));
                lines.push(format!(
                    "db_idle_in_transaction_timeout = \"{}\"",
                    humantime::format_duration(*idle_in_transaction_timeout)
                ));
                lines.push(format!("db_statement_cache = {statement_cache}"));
                lines.push(format!("db_transaction_pooling = {transaction_pooling}"));
                lines.push(format!(
                    "database_direct_url = {}",
                    direct_url
                        .as_ref()
                        .map_or("(unset)".to_owned(), |u| format!(
                            "{:?}",
                            redact_url(u.expose_secret())
                        ))
                ));
                lines.push(format!(
                    "database_replica_urls = {:?}",
                    replicas
                        .iter()
                        .map(|r| redact_url(r.expose_secret()))
                        .collect::<Vec<_>>()
                        .join(",")
                ));
                lines.push(format!(
                    "replica_max_lag = \"{}\"",
                    humantime::format_duration(*replica_max_lag)
                ));
            }
        }
        let d = |d: Duration| format!("\"{}\"", humantime::format_duration(d));
        lines.push(format!("process_type = \"{}\"", self.process_type.as_str()));
        match &self.redis {
            None => lines.push("redis_url = (unset)".into()),
            Some(redis) => {
                match &redis.nodes {
                    RedisNodes::Single(url) => {
                        lines.push(format!("redis_url = {:?}", redact_url(url.expose_secret())))
                    }
                    RedisNodes::Cluster(urls) => lines.push(format!(
                        "redis_cluster_urls = {:?}",
                        urls.iter()
                            .map(|u| redact_url(u.expose_secret()))
                            .collect::<Vec<_>>()
                            .join(",")
                    )),
                }
                lines.push(format!("redis_pool_max = {}", redis.pool_max));
                lines.push(format!("redis_timeout = {}", d(redis.timeout)));
                lines.push(format!(
                    "redis_connect_timeout = {}",
                    d(redis.connect_timeout)
                ));
            }
        }
        lines.extend([
            format!("db_pool_max = {}", self.pool.max_connections),
            format!("db_pool_min = {}", self.pool.min_connections),
            format!("db_acquire_timeout = {}", d(self.pool.acquire_timeout)),
            format!("db_idle_timeout = {}", d(self.pool.idle_timeout)),
            format!("db_max_lifetime = {}", d(self.pool.max_lifetime)),
            format!(
                "log_format = {:?}",
                format!("{:?}", self.log.format).to_lowercase()
            ),
            format!("log_level = {:?}", self.log.level),
            format!("body_limit_bytes = {}", self.http.body_limit_bytes),
            format!("resolve_max_age = {}", d(self.http.resolve_max_age)),
            format!(
                "resolve_stale_while_revalidate = {}",
                d(self.http.resolve_stale_while_revalidate)
            ),
            format!(
                "snapshot_reload_interval = {}",
                d(self.snapshot_reload_interval)
            ),
            format!(
                "snapshot_catch_up_interval = {}",
                d(self.snapshot_catch_up_interval)
            ),
            format!("worker_threads = {}", self.worker_threads),
            format!(
                "health_check_timeout = {}",
                d(self.http.health_check_timeout)
            ),
            format!("shutdown_grace = {}", d(self.http.shutdown_grace)),
            format!(
                "bootstrap_admin_key = {}",
                if self.bootstrap_admin_key.is_some() {
                    "\"***\""
                } else {
                    "(unset)"
                }
            ),
            format!(
                "cors_origins = {}",
                match &self.http.cors {
                    CorsOrigins::None => "\"\"".to_owned(),
                    CorsOrigins::Any => "\"*\"".to_owned(),
                    CorsOrigins::List(list) => format!("{:?}", list.join(",")),
                }
            ),
            format!("behind_tls = {}", self.http.behind_tls),
            format!("metrics_max_tenants = {}", self.metrics.max_tenants),
            format!(
                "pool_sample_interval = {}",
                d(self.metrics.pool_sample_interval)
            ),
        ]);
        let limits = &self.http.rate_limits;
        lines.extend([
            format!("rate_limit_resolve = \"{}\"", limits.resolve),
            format!("rate_limit_read = \"{}\"", limits.read),
            format!("rate_limit_write = \"{}\"", limits.write),
            format!("rate_limit_keys = \"{}\"", limits.keys),
            format!(
                "rate_limit_unauthenticated = \"{}\"",
                limits.unauthenticated
            ),
            format!(
                "rate_limit_exempt = {:?}",
                limits
                    .exempt_keys
                    .iter()
                    .map(ToString::to_string)
                    .chain(limits.exempt_networks.iter().map(ToString::to_string))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ]);
        lines.join("\n")
    }
}

fn figment_for(file: Option<&Path>) -> Result<Figment, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
    if let Some(path) = file {
        // `Toml::file` quietly skips a missing file; a named file that is not there is an error.
        if !path.is_file() {
            return Err(ConfigError(vec![SettingError {
                setting: "TM_CONFIG".into(),
                message: format!("configuration file {} does not exist", path.display()),
            }]));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    Ok(figment.merge(Env::prefixed("TM_").only(ENV_KEYS)))
}

/// An origin is `scheme://host[:port]`: http or https, nothing after the authority.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    let url = url::Url::parse(origin)
        .map_err(|_| "is not an origin such as https://console.example.com")?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http or https origin");
    }
    if origin.ends_with('/')
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err("must have no path, query or fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user information");
    }
    Ok(())
}

/// `url` with any password replaced by `***`.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            // Query parameters such as `password=` may carry secrets too.
            if url.query().is_some_and(|q| q.contains("password")) {
                url.set_query(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "***".into(),
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, Self::Error> {
        let mut errors = Vec::new();
        let mut fail = |key: &str, message: String| {
            errors.push(SettingError {
                setting: env_name(key),
                message,
            })
        };

        let profile = match raw.profile.as_str() {
            "dev" => Some(Profile::Dev),
            "staging" => Some(Profile::Staging),
            "prod" => Some(Profile::Prod),
            other => {
                fail(
                    "profile",
                    format!("must be dev, staging or prod, not {other:?}"),
                );
                None
            }
        };

        let listen = raw
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| {
                fail(
                    "listen",
                    format!(
                        "must be an address like 127.0.0.1:8080, not {:?}",
                        raw.listen
                    ),
                )
            })
            .ok();

        if raw.data_dir.as_os_str().is_empty() {
            fail("data_dir", "must not be empty".into());
        }

        let synchronous = match raw.sqlite_synchronous.as_str() {
            "full" => Some(SqliteSynchronous::Full),
            "normal" => Some(SqliteSynchronous::Normal),
            other => {
                fail(
                    "sqlite_synchronous",
                    format!("must be full or normal, not {other:?}"),
                );
                None
            }
        };

        let replicas: Vec<SecretString> = raw
            .database_replica_urls
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .filter_map(|url| {
                let valid = (url.starts_with("postgres://") || url.starts_with("postgresql://"))
                    && url::Url::parse(url)
                        .is_ok_and(|p| p.host_str().is_some_and(|h| !h.is_empty()));
                if !valid {
                    fail(
                        "database_replica_urls",
                        format!("{} is not a valid PostgreSQL URL", redact_url(url)),
                    );
                }
                valid.then(|| SecretString::from(url.to_owned()))
            })
            .collect();
        let primary_is_postgres = raw
            .database_url
            .as_deref()
            .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"));
        if !replicas.is_empty() && !primary_is_postgres {
            fail(
                "database_replica_urls",
                "read replicas need a PostgreSQL TM_DATABASE_URL".into(),
            );
        }
        if replicas.len() > MAX_REPLICAS {
            fail(
                "database_replica_urls",
                format!("at most {MAX_REPLICAS} replicas"),
            );
        }
        let postgres_url = |url: &str| {
            (url.starts_with("postgres://") || url.starts_with("postgresql://"))
                && url::Url::parse(url).is_ok_and(|p| p.host_str().is_some_and(|h| !h.is_empty()))
        };
        let direct_url = match raw.database_direct_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) if postgres_url(url) => Some(SecretString::from(url.to_owned())),
            Some(url) => {
                fail(
                    "database_direct_url",
                    format!("{} is not a valid PostgreSQL URL", redact_url(url)),
                );
                None
            }
        };
        if (raw.db_transaction_pooling || direct_url.is_some()) && !primary_is_postgres {
            fail(
                "db_transaction_pooling",
                "transaction pooling and a direct URL need a PostgreSQL TM_DATABASE_URL".into(),
            );
        } else if raw.db_transaction_pooling && direct_url.is_none() {
            fail(
                "database_direct_url",
                "required with TM_DB_TRANSACTION_POOLING: LISTEN and migrations need a session, \
                 which a transaction-pooling proxy does not keep"
                    .into(),
            );
        }
        let storage = match raw.database_url.as_deref() {
            None | Some("") => synchronous.map(|synchronous| StorageConfig::Sqlite {
                path: raw.data_dir.join("traffic-manager.db"),
                synchronous,
            }),
            Some(url) if url.starts_with("sqlite:") => {
                let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
                let path = path.split('?').next().unwrap_or_default();
                if path.is_empty() || path == ":memory:" {
                    fail(
                        "database_url",
                        "a SQLite URL must name a file, e.g. sqlite://./data/traffic-manager.db"
                            .into(),
                    );
                    None
                } else {
                    synchronous.map(|synchronous| StorageConfig::Sqlite {
                        path: PathBuf::from(path),
                        synchronous,
                    })
                }
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                match url::Url::parse(url) {
                    Ok(parsed) if parsed.host_str().is_some_and(|h| !h.is_empty()) => {
                        Some(StorageConfig::Postgres {
                            url: SecretString::from(url.to_owned()),
                            statement_timeout: raw.db_statement_timeout,
                            idle_in_transaction_timeout: raw.db_idle_in_transaction_timeout,
                            statement_cache: raw.db_statement_cache && !raw.db_transaction_pooling,
                            transaction_pooling: raw.db_transaction_pooling,
                            direct_url: direct_url.clone(),
                            replicas: replicas.clone(),
                            replica_max_lag: raw.replica_max_lag,
                        })
                    }
                    _ => {
                        fail(
                            "database_url",
                            format!("{} is not a valid PostgreSQL URL", redact_url(url)),
                        );
                        None
                    }
                }
            }
            Some(url) => {
                fail(
                    "database_url",
                    format!(
                        "unsupported scheme in {}: use sqlite:// or postgres://",
                        redact_url(url)
                    ),
                );
                None
            }
        };

        if raw.db_pool_max == 0 {
            fail("db_pool_max", "must be at least 1".into());
        }
        let process_type = match raw.process_type.as_str() {
            "web" => ProcessType::Web,
            "worker" => ProcessType::Worker,
            other => {
                fail(
                    "process_type",
                    format!("must be web or worker, not {other:?}"),
                );
                ProcessType::Web
            }
        };
        for (key, value) in [
            ("db_pool_max_web", raw.db_pool_max_web),
            ("db_pool_max_worker", raw.db_pool_max_worker),
        ] {
            if value == Some(0) {
                fail(key, "must be at least 1".into());
            }
        }
        let pool_max = match process_type {
            ProcessType::Web => raw.db_pool_max_web,
            ProcessType::Worker => raw.db_pool_max_worker,
        }
        .unwrap_or(raw.db_pool_max);
        // TLS to Redis is not built in: terminate it in a local proxy (stunnel, a sidecar).
        let redis_url_valid = |url: &str| {
            url.starts_with("redis://")
                && url::Url::parse(url).is_ok_and(|p| p.host_str().is_some_and(|h| !h.is_empty()))
        };
        let single = raw
            .redis_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty());
        let cluster: Vec<&str> = raw
            .redis_cluster_urls
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let nodes = match (single, cluster.is_empty()) {
            (Some(_), false) => {
                fail(
                    "redis_cluster_urls",
                    "set either TM_REDIS_URL or TM_REDIS_CLUSTER_URLS, not both".into(),
                );
                None
            }
            (Some(url), true) if !redis_url_valid(url) => {
                fail(
                    "redis_url",
                    format!(
                        "{} is not a redis:// URL (TLS is not built in)",
                        redact_url(url)
                    ),
                );
                None
            }
            (Some(url), true) => Some(RedisNodes::Single(SecretString::from(url.to_owned()))),
            (None, false) => {
                let bad: Vec<String> = cluster
                    .iter()
                    .filter(|u| !redis_url_valid(u))
                    .map(|u| redact_url(u))
                    .collect();
                if bad.is_empty() {
                    Some(RedisNodes::Cluster(
                        cluster
                            .iter()
                            .map(|u| SecretString::from((*u).to_owned()))
                            .collect(),
                    ))
                } else {
                    fail(
                        "redis_cluster_urls",
                        format!(
                            "not redis:// URLs (TLS is not built in): {}",
                            bad.join(", ")
                        ),
                    );
                    None
                }
            }
            (None, true) => None,
        };
        if raw.redis_pool_max == 0 {
            fail("redis_pool_max", "must be at least 1".into());
        }
        for (key, value) in [
            ("redis_timeout", raw.redis_timeout),
            ("redis_connect_timeout", raw.redis_connect_timeout),
        ] {
            if value.is_zero() {
                fail(key, "must be greater than zero".into());
            }
        }
        let redis = nodes.map(|nodes| RedisConfig {
            nodes,
            pool_max: raw.redis_pool_max,
            timeout: raw.redis_timeout,
            connect_timeout: raw.redis_connect_timeout,
        });
        if raw.db_critical_pool == 0 {
            fail("db_critical_pool", "must be at least 1".into());
        }
        if raw.db_pool_min > pool_max {
            fail(
                "db_pool_min",
                format!("must not exceed the pool's size ({pool_max})"),
            );
        }
        for (key, value) in [
            ("db_acquire_timeout", raw.db_acquire_timeout),
            ("db_idle_timeout", raw.db_idle_timeout),
            ("db_max_lifetime", raw.db_max_lifetime),
            ("db_statement_timeout", raw.db_statement_timeout),
            (
                "db_idle_in_transaction_timeout",
                raw.db_idle_in_transaction_timeout,
            ),
            ("snapshot_reload_interval", raw.snapshot_reload_interval),
            ("snapshot_catch_up_interval", raw.snapshot_catch_up_interval),
            ("replica_max_lag", raw.replica_max_lag),
            ("health_check_timeout", raw.health_check_timeout),
        ] {
            if value.is_zero() {
                fail(key, "must be greater than zero".into());
            }
        }

        let log_format = match (raw.log_format.as_deref(), profile) {
            (Some("text"), _) => Some(LogFormat::Text),
            (Some("json"), _) => Some(LogFormat::Json),
            (Some(other), _) => {
                fail("log_format", format!("must be text or json, not {other:?}"));
                None
            }
            (None, Some(Profile::Dev)) => Some(LogFormat::Text),
            (None, _) => Some(LogFormat::Json),
        };
        if raw.log_level.trim().is_empty() {
            fail("log_level", "must not be empty".into());
        }

        const MIN_BODY: usize = 1024;
        const MAX_BODY: usize = 16 * 1024 * 1024;
        if !(MIN_BODY..=MAX_BODY).contains(&raw.body_limit_bytes) {
            fail(
                "body_limit_bytes",
                format!("must be between {MIN_BODY} and {MAX_BODY}"),
            );
        }

        let bootstrap_admin_key = match raw.bootstrap_admin_key {
            Some(key) if key.chars().count() < 32 => {
                fail(
                    "bootstrap_admin_key",
                    "must be at least 32 characters (keep it secret; it is an admin key)".into(),
                );
                None
            }
            Some(key) if key.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                fail(
                    "bootstrap_admin_key",
                    "must not contain whitespace or control characters".into(),
                );
                None
            }
            other => other.map(SecretString::from),
        };

        let cors = match raw.cors_origins.as_deref().map(str::trim) {
            None | Some("") => CorsOrigins::None,
            Some("*") if profile == Some(Profile::Prod) => {
                fail(
                    "cors_origins",
                    "the wildcard * is refused in the prod profile; list the allowed origins"
                        .into(),
                );
                CorsOrigins::None
            }
            Some("*") => CorsOrigins::Any,
            Some(list) => {
                let mut origins = Vec::new();
                for origin in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                    match check_origin(origin) {
                        Ok(()) => origins.push(origin.to_owned()),
                        Err(why) => fail("cors_origins", format!("{origin:?} {why}")),
                    }
                }
                CorsOrigins::List(origins)
            }
        };
        let mut quota = |key: &str, raw: &str| match raw.parse::<Quota>() {
            Ok(q) => Some(q),
            Err(e) => {
                fail(key, e.to_string());
                None
            }
        };
        let quotas = (
            quota("rate_limit_resolve", &raw.rate_limit_resolve),
            quota("rate_limit_read", &raw.rate_limit_read),
            quota("rate_limit_write", &raw.rate_limit_write),
            quota("rate_limit_keys", &raw.rate_limit_keys),
            quota(
                "rate_limit_unauthenticated",
                &raw.rate_limit_unauthenticated,
            ),
        );
        let mut exempt_keys = Vec::new();
        let mut exempt_networks = Vec::new();
        for item in raw
            .rate_limit_exempt
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            if let Ok(id) = item.parse::<KeyId>() {
                exempt_keys.push(id);
            } else if let Ok(net) = item.parse::<IpNet>() {
                exempt_networks.push(net);
            } else if let Ok(ip) = item.parse::<std::net::IpAddr>() {
                exempt_networks.push(IpNet::from(ip));
            } else {
                fail(
                    "rate_limit_exempt",
                    format!("{item:?} is neither a key id nor an address or network (CIDR)"),
                );
            }
        }
        let rate_limits = match quotas {
            (Some(resolve), Some(read), Some(write), Some(keys), Some(unauthenticated)) => {
                Some(RateLimits {
                    resolve,
                    read,
                    write,
                    keys,
                    unauthenticated,
                    exempt_keys,
                    exempt_networks,
                })
            }
            _ => None,
        };

        if !(raw.breaker_usage_percent > 0.0 && raw.breaker_usage_percent <= 100.0) {
            fail(
                "breaker_usage_percent",
                "must be above 0 and at most 100".into(),
            );
        }
        for (key, value) in [
            ("breaker_max_waiting", raw.breaker_max_waiting),
            ("breaker_failures", raw.breaker_failures),
            ("bulkhead_reads", raw.bulkhead_reads),
            ("bulkhead_writes", raw.bulkhead_writes),
            ("bulkhead_critical", raw.bulkhead_critical),
            ("max_in_flight", raw.max_in_flight),
        ] {
            if value == 0 {
                fail(key, "must be at least 1".into());
            }
        }
        for (key, value) in [
            ("bulkhead_wait", raw.bulkhead_wait),
            ("timeout_read", raw.timeout_read),
            ("timeout_write", raw.timeout_write),
        ] {
            if value.is_zero() {
                fail(key, "must be greater than zero".into());
            }
        }
        if raw.bulkhead_wait < Duration::from_secs(1) {
            fail(
                "bulkhead_wait",
                "must be at least 1s, so that bursts of writers wait rather than fail".into(),
            );
        }

        if raw.metrics_max_tenants == 0 {
            fail("metrics_max_tenants", "must be at least 1".into());
        }
        if raw.pool_sample_interval.is_zero() {
            fail("pool_sample_interval", "must be greater than zero".into());
        }

        match (profile, listen, storage, log_format, rate_limits) {
            (Some(profile), Some(listen), Some(storage), Some(format), Some(rate_limits))
                if errors.is_empty() =>
            {
                Ok(Config {
                    profile,
                    data_dir: raw.data_dir,
                    storage,
                    pool: PoolConfig {
                        max_connections: pool_max,
                        critical_connections: raw.db_critical_pool,
                        min_connections: raw.db_pool_min,
                        acquire_timeout: raw.db_acquire_timeout,
                        idle_timeout: raw.db_idle_timeout,
                        max_lifetime: raw.db_max_lifetime,
                    },
                    log: LogConfig {
                        format,
                        level: raw.log_level,
                    },
                    http: HttpConfig {
                        listen,
                        body_limit_bytes: raw.body_limit_bytes,
                        resolve_max_age: raw.resolve_max_age,
                        resolve_stale_while_revalidate: raw.resolve_stale_while_revalidate,
                        health_check_timeout: raw.health_check_timeout,
                        shutdown_grace: raw.shutdown_grace,
                        cors,
                        behind_tls: raw.behind_tls,
                        rate_limits,
                        guards: GuardConfig {
                            breaker_usage_percent: raw.breaker_usage_percent,
                            breaker_max_waiting: raw.breaker_max_waiting,
                            breaker_pressure_for: raw.breaker_pressure_for,
                            breaker_failures: raw.breaker_failures,
                            breaker_open_for: raw.breaker_open_for,
                            bulkhead_reads: raw.bulkhead_reads,
                            bulkhead_writes: raw.bulkhead_writes,
                            bulkhead_critical: raw.bulkhead_critical,
                            bulkhead_wait: raw.bulkhead_wait,
                            timeout_read: raw.timeout_read,
                            timeout_write: raw.timeout_write,
                            max_in_flight: raw.max_in_flight,
                            read_cache_ttl: raw.read_cache_ttl,
                            read_cache_entries: raw.read_cache_entries,
                        },
                    },
                    snapshot_reload_interval: raw.snapshot_reload_interval,
                    snapshot_catch_up_interval: raw.snapshot_catch_up_interval,
                    worker_threads: match raw.worker_threads {
                        0 => std::thread::available_parallelism().map_or(1, usize::from),
                        n => n,
                    },
                    bootstrap_admin_key,
                    metrics: MetricsConfig {
                        max_tenants: raw.metrics_max_tenants,
                        pool_sample_interval: raw.pool_sample_interval,
                    },
                    process_type,
                    redis,
                })
            }
            _ => Err(ConfigError(errors)),
        }
    }
}

#[cfg(test)]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail's closures return figment::Error"
)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_serve_a_laptop() {
        let config = Config::try_from(RawConfig::default()).expect("defaults are valid");
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.profile, Profile::Dev);
        assert_eq!(config.log.format, LogFormat::Text);
        assert!(matches!(
            config.storage,
            StorageConfig::Sqlite { ref path, .. } if path == Path::new("./data/traffic-manager.db")
        ));
        assert_eq!(config.http.body_limit_bytes, 65536);
    }

    #[test]
    fn environment_overrides_file_overrides_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "tm.toml",
                "listen = \"127.0.0.1:9000\"\nlog_level = \"debug\"\ndb_pool_max = 4",
            )?;
            jail.set_env("TM_LISTEN", "127.0.0.1:9100");
            jail.set_env("TM_DB_STATEMENT_TIMEOUT", "750ms");
            jail.set_env("TM_DATABASE_URL", "postgres://tm:hunter2@127.0.0.1:5432/tm");
            let config = Config::load(Some(Path::new("tm.toml"))).expect("valid");
            assert_eq!(config.http.listen.to_string(), "127.0.0.1:9100");
            assert_eq!(config.log.level, "debug");
            assert_eq!(config.pool.max_connections, 4);
            let StorageConfig::Postgres {
                statement_timeout, ..
            } = config.storage
            else {
                panic!("postgres expected");
            };
            assert_eq!(statement_timeout, Duration::from_millis(750));
            Ok(())
        });
    }

    #[test]
    fn replicas_need_postgresql_and_valid_urls() {
        let with = |primary: Option<&str>, replicas: &str| {
            Config::try_from(RawConfig {
                database_url: primary.map(str::to_owned),
                database_replica_urls: Some(replicas.into()),
                ..RawConfig::default()
            })
        };
        let config = with(
            Some("postgres://u@db1/app"),
            "postgres://u@db2/app, postgres://u@db3/app",
        )
        .expect("valid");
        assert!(matches!(config.storage,
            StorageConfig::Postgres { ref replicas, .. } if replicas.len() == 2));
        for (primary, replicas) in [
            (None, "postgres://u@db2/app"),
            (Some("postgres://u@db1/app"), "mysql://db2"),
            (Some("postgres://u@db1/app"), "postgres://"),
        ] {
            let err = with(primary, replicas).expect_err("invalid");
            assert_eq!(
                err.0[0].setting, "TM_DATABASE_REPLICA_URLS",
                "{primary:?} {replicas}"
            );
        }
    }

    #[test]
    fn redis_is_one_server_or_a_cluster() {
        let config = Config::try_from(RawConfig {
            redis_cluster_urls: Some("redis://127.0.0.1:7000, redis://127.0.0.1:7001".into()),
            ..RawConfig::default()
        })
        .expect("valid");
        let redis = config.redis.expect("configured");
        assert!(matches!(redis.nodes, RedisNodes::Cluster(ref urls) if urls.len() == 2));
        assert!(Config::try_from(RawConfig::default())
            .expect("valid")
            .redis
            .is_none());
        for (raw, setting) in [
            (
                RawConfig {
                    redis_url: Some("redis://127.0.0.1:6379".into()),
                    redis_cluster_urls: Some("redis://127.0.0.1:7000".into()),
                    ..RawConfig::default()
                },
                "TM_REDIS_CLUSTER_URLS",
            ),
            (
                RawConfig {
                    redis_url: Some("http://127.0.0.1:6379".into()),
                    ..RawConfig::default()
                },
                "TM_REDIS_URL",
            ),
            (
                RawConfig {
                    redis_url: Some("redis://127.0.0.1".into()),
                    redis_timeout: Duration::ZERO,
                    ..RawConfig::default()
                },
                "TM_REDIS_TIMEOUT",
            ),
        ] {
            let err = Config::try_from(raw).expect_err("invalid");
            assert_eq!(err.0[0].setting, setting);
        }
    }

    #[test]
    fn transaction_pooling_needs_a_direct_url_and_turns_the_statement_cache_off() {
        let pooled = |direct: Option<&str>| RawConfig {
            database_url: Some("postgres://tm@127.0.0.1:6432/tm".into()),
            db_transaction_pooling: true,
            database_direct_url: direct.map(str::to_owned),
            ..RawConfig::default()
        };
        let err = Config::try_from(pooled(None)).expect_err("invalid");
        assert_eq!(err.0[0].setting, "TM_DATABASE_DIRECT_URL");
        let config =
            Config::try_from(pooled(Some("postgres://tm@127.0.0.1:5432/tm"))).expect("valid");
        assert!(matches!(
            config.storage,
            StorageConfig::Postgres {
                transaction_pooling: true,
                statement_cache: false,
                direct_url: Some(_),
                ..
            }
        ));
        let on_sqlite = RawConfig {
            db_transaction_pooling: true,
            ..RawConfig::default()
        };
        let err = Config::try_from(on_sqlite).expect_err("invalid");
        assert_eq!(err.0[0].setting, "TM_DB_TRANSACTION_POOLING");
    }

    #[test]
    fn each_process_type_has_its_pool_size() {
        let raw = |process_type: &str| RawConfig {
            process_type: process_type.into(),
            db_pool_max: 10,
            db_pool_max_worker: Some(3),
            ..RawConfig::default()
        };
        let web = Config::try_from(raw("web")).expect("valid");
        assert_eq!(
            (web.process_type, web.pool.max_connections),
            (ProcessType::Web, 10)
        );
        let worker = Config::try_from(raw("worker")).expect("valid");
        assert_eq!(
            (worker.process_type, worker.pool.max_connections),
            (ProcessType::Worker, 3)
        );
        let err = Config::try_from(raw("cron")).expect_err("invalid");
        assert_eq!(err.0[0].setting, "TM_PROCESS_TYPE");
    }

    #[test]
    fn every_bad_setting_is_named() {
        let raw = RawConfig {
            profile: "production".into(),
            listen: "localhost".into(),
            db_pool_max: 2,
            db_pool_min: 5,
            database_url: Some("mysql://x".into()),
            body_limit_bytes: 1,
            ..RawConfig::default()
        };
        let err = Config::try_from(raw).expect_err("invalid");
        let named: Vec<&str> = err.0.iter().map(|e| e.setting.as_str()).collect();
        assert_eq!(
            named,
            [
                "TM_PROFILE",
                "TM_LISTEN",
                "TM_DATABASE_URL",
                "TM_DB_POOL_MIN",
                "TM_BODY_LIMIT_BYTES"
            ]
        );
    }

    #[test]
    fn type_errors_from_the_environment_name_the_variable() {
        Jail::expect_with(|jail| {
            jail.set_env("TM_DB_POOL_MAX", "many");
            let err = Config::load(None).expect_err("invalid");
            assert_eq!(err.0[0].setting, "TM_DB_POOL_MAX");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        Jail::expect_with(|jail| {
            jail.create_file("tm.toml", "lissten = \"127.0.0.1:1\"")?;
            assert!(Config::load(Some(Path::new("tm.toml"))).is_err());
            Ok(())
        });
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/tm.toml"))).expect_err("missing");
        assert_eq!(err.0[0].setting, "TM_CONFIG");
    }

    #[test]
    fn secrets_are_redacted() {
        let raw = RawConfig {
            database_url: Some("postgres://tm:hunter2@db.internal:5432/tm".into()),
            ..RawConfig::default()
        };
        let shown = Config::try_from(raw).expect("valid").redacted();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://tm:***@db.internal:5432/tm"),
            "{shown}"
        );
    }

    #[test]
    fn a_short_bootstrap_key_is_refused() {
        let raw = RawConfig {
            bootstrap_admin_key: Some("too-short".into()),
            ..RawConfig::default()
        };
        let err = Config::try_from(raw).expect_err("invalid");
        assert_eq!(err.0[0].setting, "TM_BOOTSTRAP_ADMIN_KEY");
        assert!(
            !err.to_string().contains("too-short"),
            "the key itself is never echoed"
        );
        let raw = RawConfig {
            bootstrap_admin_key: Some("k".repeat(32)),
            ..RawConfig::default()
        };
        let shown = Config::try_from(raw).expect("valid").redacted();
        assert!(!shown.contains(&"k".repeat(32)));
    }

    #[test]
    fn cors_wildcard_is_refused_in_prod_only() {
        let raw = |profile: &str| RawConfig {
            profile: profile.into(),
            cors_origins: Some("*".into()),
            ..RawConfig::default()
        };
        assert_eq!(
            Config::try_from(raw("dev")).expect("valid").http.cors,
            CorsOrigins::Any
        );
        let err = Config::try_from(raw("prod")).expect_err("refused");
        assert_eq!(err.0[0].setting, "TM_CORS_ORIGINS");
    }

    #[test]
    fn cors_origins_must_be_origins() {
        let raw = RawConfig {
            cors_origins: Some("https://console.example.com, http://localhost:3000".into()),
            ..RawConfig::default()
        };
        assert_eq!(
            Config::try_from(raw).expect("valid").http.cors,
            CorsOrigins::List(vec![
                "https://console.example.com".into(),
                "http://localhost:3000".into()
            ])
        );
        for bad in [
            "console.example.com",
            "https://x.example/path",
            "ftp://x.example",
            "https://x.example/",
        ] {
            let raw = RawConfig {
                cors_origins: Some(bad.into()),
                ..RawConfig::default()
            };
            assert!(Config::try_from(raw).is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_limits_are_parsed_and_checked() {
        let raw = RawConfig {
            rate_limit_write: "10/min".into(),
            rate_limit_exempt: "127.0.0.1, 10.0.0.0/8".into(),
            ..RawConfig::default()
        };
        let config = Config::try_from(raw).expect("valid");
        assert_eq!(config.http.rate_limits.write.to_string(), "10/min");
        assert_eq!(config.http.rate_limits.exempt_networks.len(), 2);
        let raw = RawConfig {
            rate_limit_read: "lots".into(),
            rate_limit_exempt: "nobody".into(),
            ..RawConfig::default()
        };
        let named: Vec<String> = Config::try_from(raw)
            .expect_err("invalid")
            .0
            .into_iter()
            .map(|e| e.setting)
            .collect();
        assert_eq!(named, ["TM_RATE_LIMIT_READ", "TM_RATE_LIMIT_EXEMPT"]);
    }

    #[test]
    fn non_dev_profiles_log_json_by_default() {
        let raw = RawConfig {
            profile: "prod".into(),
            ..RawConfig::default()
        };
        assert_eq!(
            Config::try_from(raw).expect("valid").log.format,
            LogFormat::Json
        );
    }
}
