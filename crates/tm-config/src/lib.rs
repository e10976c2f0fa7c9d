//! Configuration: defaults < TOML file (`--config` / `TM_CONFIG`) < `TM_*` environment,
//! read into [`RawConfig`] and checked once into [`Config`], whose types rule out bad states.
//!
//! Keys are flat and the same in both places: `TM_DATABASE_URL` in the environment is
//! `database_url` in the TOML file. Each section is a module owning its keys, their
//! defaults, their checks and their `check-config` lines; this file only gathers them.

mod backup;
mod coldstart;
mod error;
mod events;
mod guards;
mod http;
mod jobs;
mod limits;
mod otel;
mod pool;
mod process;
mod redis;
mod render;
mod storage;
mod telemetry;
mod urls;
mod webhooks;

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use backup::{BackupConfig, BackupRaw, Retention};
pub use coldstart::{ColdStartConfig, ColdStartRaw, SnapshotKeySource};
pub use error::{ConfigError, SettingError};
pub use events::{EventsConfig, EventsRaw, KafkaConfig};
pub use guards::GuardConfig;
pub use http::{ConnectionLimits, CorsOrigins, HttpConfig, HttpRaw};
pub use jobs::{JobsConfig, JobsRaw};
pub use limits::{LimitsRaw, Quota, QuotaParseError, RateLimits};
pub use otel::{OtelRaw, OtlpProtocol, RootSampler, TraceSampler, TracingConfig};
pub use pool::{PoolConfig, PoolRaw};
pub use process::{ProcessRaw, ProcessType, Profile};
pub use redis::{RedisConfig, RedisNodes, RedisRaw};
pub use storage::{
    PostgresConfig, SqliteConfig, SqliteSynchronous, StorageConfig, StorageRaw, MAX_REPLICAS,
};
pub use telemetry::{AccessLogConfig, LogConfig, LogFormat, MetricsConfig, TelemetryRaw};
pub use urls::redact_url;
pub use webhooks::{SecretKeySource, WebhooksConfig, WebhooksRaw};

use error::Problems;
use render::Lines;

/// Settings as read, before validation: one flattened part per section, so that every
/// key stays flat. See the README table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RawConfig {
    #[serde(flatten)]
    pub process: ProcessRaw,
    #[serde(flatten)]
    pub storage: StorageRaw,
    #[serde(flatten)]
    pub pool: PoolRaw,
    #[serde(flatten)]
    pub redis: RedisRaw,
    #[serde(flatten)]
    pub telemetry: TelemetryRaw,
    #[serde(flatten)]
    pub otel: OtelRaw,
    #[serde(flatten)]
    pub limits: LimitsRaw,
    #[serde(flatten)]
    pub guards: GuardConfig,
    #[serde(flatten)]
    pub http: HttpRaw,
    #[serde(flatten)]
    pub events: EventsRaw,
    #[serde(flatten)]
    pub jobs: JobsRaw,
    #[serde(flatten)]
    pub webhooks: WebhooksRaw,
    #[serde(flatten)]
    pub cold_start: ColdStartRaw,
    #[serde(flatten)]
    pub backup: BackupRaw,
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
    /// Span export, when an OTLP endpoint is configured.
    pub tracing: Option<TracingConfig>,
    pub process_type: ProcessType,
    pub redis: Option<RedisConfig>,
    pub events: EventsConfig,
    pub jobs: JobsConfig,
    pub webhooks: WebhooksConfig,
    /// The cold-start snapshot file, when a key to sign it is configured.
    pub cold_start: Option<ColdStartConfig>,
    pub backup: BackupConfig,
}

/// Every setting's key, as the defaults name them: what the TOML file may hold and
/// what `TM_*` variables may set. Other `TM_` variables (`TM_CONFIG`, or ones used by
/// tooling) are not settings and are left alone.
fn setting_keys() -> &'static [String] {
    static KEYS: LazyLock<Vec<String>> =
        LazyLock::new(|| match Value::serialize(RawConfig::default()) {
            Ok(Value::Dict(_, keys)) => keys.into_keys().collect(),
            other => unreachable!("the defaults serialize to a table, not {other:?}"),
        });
    &KEYS
}

/// Whether `key` of the TOML file is a setting (keys there are case-sensitive).
fn is_setting(key: &str) -> bool {
    setting_keys().iter().any(|k| k == key)
}

/// The items of a comma-separated list, trimmed, empty ones left out.
pub(crate) fn comma_separated(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

impl Config {
    /// Reads defaults, then the TOML file (`file`, else `TM_CONFIG` if set), then `TM_*`.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("TM_CONFIG").map(PathBuf::from));
        Self::from_figment(figment_for(file.as_deref())?)
    }

    /// [`Config::load`] for a process of the given type, whatever `TM_PROCESS_TYPE`
    /// says: what `traffic-manager worker` runs with.
    pub fn load_as(file: Option<&Path>, process_type: ProcessType) -> Result<Config, ConfigError> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("TM_CONFIG").map(PathBuf::from));
        let figment = figment_for(file.as_deref())?.merge(("process_type", process_type.as_str()));
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        // Section by section: figment then names the key of a value of the wrong type.
        let mut errors = Vec::new();
        let raw = RawConfig {
            process: section(&figment, &mut errors),
            storage: section(&figment, &mut errors),
            pool: section(&figment, &mut errors),
            redis: section(&figment, &mut errors),
            telemetry: section(&figment, &mut errors),
            otel: section(&figment, &mut errors),
            limits: section(&figment, &mut errors),
            guards: section(&figment, &mut errors),
            http: section(&figment, &mut errors),
            events: section(&figment, &mut errors),
            jobs: section(&figment, &mut errors),
            webhooks: section(&figment, &mut errors),
            cold_start: section(&figment, &mut errors),
            backup: section(&figment, &mut errors),
        };
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        Config::try_from(raw)
    }

    /// The effective settings as TOML-like `key = value` lines, secrets redacted.
    pub fn redacted(&self) -> String {
        let mut out = Lines::default();
        process::render(self, &mut out);
        self.storage.render(&mut out);
        self.pool.render(&mut out);
        redis::render(self.redis.as_ref(), &mut out);
        telemetry::render(&self.log, &self.http.access_log, &self.metrics, &mut out);
        otel::render(self.tracing.as_ref(), &mut out);
        self.http.render(&mut out);
        self.events.render(&mut out);
        self.jobs.render(&mut out);
        self.webhooks.render(&mut out);
        coldstart::render(self.cold_start.as_ref(), &mut out);
        self.backup.render(&mut out);
        out.finish()
    }
}

/// One section of the settings; on a value of the wrong type, its defaults and the error.
fn section<T: DeserializeOwned + Default>(figment: &Figment, errors: &mut Vec<SettingError>) -> T {
    figment.extract().unwrap_or_else(|e| {
        errors.extend(setting_errors(e));
        T::default()
    })
}

/// Figment's errors, each under the `TM_*` name of the key it is about.
fn setting_errors(errors: figment::Error) -> impl Iterator<Item = SettingError> {
    errors.into_iter().map(|e| SettingError {
        setting: if e.path.is_empty() {
            "configuration".to_owned()
        } else {
            error::env_name(&e.path.join("_"))
        },
        message: e.kind.to_string(),
    })
}

fn figment_for(file: Option<&Path>) -> Result<Figment, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
    if let Some(path) = file {
        check_file(path)?;
        figment = figment.merge(Toml::file_exact(path));
    }
    let (standard, keys): (Vec<&str>, Vec<&str>) = setting_keys()
        .iter()
        .map(String::as_str)
        .partition(|key| otel::is_standard_key(key));
    Ok(figment
        .merge(Env::raw().only(&standard))
        .merge(Env::prefixed("TM_").only(&keys)))
}

/// The file exists, is TOML, and holds settings only: a misspelt key is refused rather
/// than quietly ignored.
fn check_file(path: &Path) -> Result<(), ConfigError> {
    // `Toml::file` quietly skips a missing file; a named file that is not there is an error.
    if !path.is_file() {
        return Err(ConfigError(vec![SettingError {
            setting: "TM_CONFIG".into(),
            message: format!("configuration file {} does not exist", path.display()),
        }]));
    }
    let table: Dict = Figment::from(Toml::file_exact(path))
        .extract()
        .map_err(|e| ConfigError(setting_errors(e).collect()))?;
    let unknown: Vec<SettingError> = table
        .keys()
        .filter(|key| !is_setting(key))
        .map(|key| SettingError {
            setting: error::env_name(key),
            message: format!("{key:?} in {} is not a setting", path.display()),
        })
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(ConfigError(unknown))
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    /// Checks every section, in order, gathering all their problems.
    fn try_from(raw: RawConfig) -> Result<Self, Self::Error> {
        let mut problems = Problems::default();
        let process = raw.process.check(&mut problems);
        let storage = raw.storage.check(&process.data_dir, &mut problems);
        let pool = raw.pool.check(process.process_type, &mut problems);
        let redis = raw.redis.check(&mut problems);
        let log = raw.telemetry.log(process.profile, &mut problems);
        let metrics = raw.telemetry.metrics(&mut problems);
        let access_log = raw.telemetry.access_log(&mut problems);
        let tracing = raw.otel.check(&mut problems);
        let rate_limits = raw.limits.check(&mut problems);
        let events = raw.events.check(&mut problems);
        let jobs = raw.jobs.check(&mut problems);
        let webhooks = raw.webhooks.check(&mut problems);
        let cold_start = raw.cold_start.check(&process.data_dir, &mut problems);
        let backup = raw.backup.check(&process.data_dir, &mut problems);
        raw.guards.check(&mut problems);
        let http = raw
            .http
            .check(&process, rate_limits, raw.guards, access_log, &mut problems);
        let config = match (process.profile, storage, log, http) {
            (Some(profile), Some(storage), Some(log), Some(http)) => Some(Config {
                profile,
                data_dir: process.data_dir,
                storage,
                pool,
                log,
                http,
                snapshot_reload_interval: process.snapshot_reload_interval,
                snapshot_catch_up_interval: process.snapshot_catch_up_interval,
                worker_threads: process.worker_threads,
                bootstrap_admin_key: process.bootstrap_admin_key,
                metrics,
                tracing,
                process_type: process.process_type,
                redis,
                events,
                jobs,
                webhooks,
                cold_start,
                backup,
            }),
            _ => None,
        };
        problems.into_result(config)
    }
}

#[cfg(test)]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail's closures return figment::Error"
)]
mod tests;
