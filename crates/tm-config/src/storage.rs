//! Where routes are stored: the database URL (SQLite or PostgreSQL), SQLite's durability,
//! PostgreSQL's session limits, PgBouncer, the direct URL and the read replicas.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::render::Lines;
use crate::urls;

/// Read replicas one instance can use.
pub const MAX_REPLICAS: usize = 8;

/// The storage settings as read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageRaw {
    pub database_url: Option<String>,
    pub sqlite_synchronous: String,
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
}

impl Default for StorageRaw {
    fn default() -> Self {
        Self {
            database_url: None,
            sqlite_synchronous: "full".into(),
            db_statement_timeout: Duration::from_secs(3),
            db_idle_in_transaction_timeout: Duration::from_secs(5),
            db_statement_cache: true,
            db_transaction_pooling: false,
            database_direct_url: None,
            database_replica_urls: None,
            replica_max_lag: Duration::from_secs(5),
        }
    }
}

/// SQLite's `synchronous` pragma: `full` syncs the WAL on every commit (survives power
/// loss), `normal` only at checkpoints (survives a process crash, not a power cut).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    Full,
    Normal,
}

impl SqliteSynchronous {
    /// The name, as the setting spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SqliteSynchronous::Full => "full",
            SqliteSynchronous::Normal => "normal",
        }
    }
}

/// Where routes are stored, chosen by the scheme of `database_url`.
#[derive(Clone, Debug)]
pub enum StorageConfig {
    Sqlite(SqliteConfig),
    Postgres(PostgresConfig),
}

/// A SQLite database file.
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    pub path: PathBuf,
    pub synchronous: SqliteSynchronous,
}

/// A PostgreSQL primary, and what may stand between it and this process.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    pub url: SecretString,
    pub statement_timeout: Duration,
    pub idle_in_transaction_timeout: Duration,
    /// Server-side prepared statement cache; off behind PgBouncer in transaction mode.
    pub statement_cache: bool,
    /// `url` is a transaction-pooling proxy (PgBouncer, `pool_mode = transaction`):
    /// every connection is lent inside one transaction, settings travel as `SET LOCAL`.
    pub transaction_pooling: bool,
    /// PostgreSQL itself, for what needs a session: `LISTEN` and migrations (their
    /// advisory lock). Defaults to `url`; required with `transaction_pooling`.
    pub direct_url: Option<SecretString>,
    /// Read replicas for reads that may lag (each gets a pool like the primary's).
    pub replicas: Vec<SecretString>,
    /// Replication lag beyond which a replica serves no reads.
    pub replica_max_lag: Duration,
}

impl StorageConfig {
    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self {
            StorageConfig::Sqlite(_) => "sqlite",
            StorageConfig::Postgres(_) => "postgres",
        }
    }

    /// The storage lines of `check-config`.
    pub(crate) fn render(&self, out: &mut Lines) {
        match self {
            StorageConfig::Sqlite(sqlite) => {
                out.quoted(
                    "database_url",
                    format!("sqlite://{}", sqlite.path.display()),
                );
                out.quoted("sqlite_synchronous", sqlite.synchronous.as_str());
            }
            StorageConfig::Postgres(postgres) => {
                out.url("database_url", &postgres.url);
                out.duration("db_statement_timeout", postgres.statement_timeout);
                out.duration(
                    "db_idle_in_transaction_timeout",
                    postgres.idle_in_transaction_timeout,
                );
                out.plain("db_statement_cache", postgres.statement_cache);
                out.plain("db_transaction_pooling", postgres.transaction_pooling);
                match &postgres.direct_url {
                    Some(url) => out.url("database_direct_url", url),
                    None => out.unset("database_direct_url"),
                }
                out.urls("database_replica_urls", &postgres.replicas);
                out.duration("replica_max_lag", postgres.replica_max_lag);
            }
        }
    }
}

impl StorageRaw {
    /// The storage, or `None` with the problems recorded. Without `database_url`, SQLite
    /// in `data_dir`.
    pub(crate) fn check(self, data_dir: &Path, problems: &mut Problems) -> Option<StorageConfig> {
        let synchronous = match self.sqlite_synchronous.as_str() {
            "full" => Some(SqliteSynchronous::Full),
            "normal" => Some(SqliteSynchronous::Normal),
            other => {
                problems.add(
                    "sqlite_synchronous",
                    format!("must be full or normal, not {other:?}"),
                );
                None
            }
        };
        let replicas = self.replicas(problems);
        let direct_url = self.direct_url(problems);
        problems.positive(&[
            ("db_statement_timeout", self.db_statement_timeout),
            (
                "db_idle_in_transaction_timeout",
                self.db_idle_in_transaction_timeout,
            ),
            ("replica_max_lag", self.replica_max_lag),
        ]);
        let sqlite =
            |path: PathBuf| synchronous.map(|synchronous| SqliteConfig { path, synchronous });
        match self.database_url.as_deref() {
            None | Some("") => {
                sqlite(data_dir.join("traffic-manager.db")).map(StorageConfig::Sqlite)
            }
            Some(url) if url.starts_with("sqlite:") => {
                let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
                let path = path.split('?').next().unwrap_or_default();
                if path.is_empty() || path == ":memory:" {
                    problems.add(
                        "database_url",
                        "a SQLite URL must name a file, e.g. sqlite://./data/traffic-manager.db",
                    );
                    return None;
                }
                sqlite(PathBuf::from(path)).map(StorageConfig::Sqlite)
            }
            Some(url) if urls::is_postgres(url) => match urls::postgres_url(url) {
                Ok(url) => Some(StorageConfig::Postgres(PostgresConfig {
                    url,
                    statement_timeout: self.db_statement_timeout,
                    idle_in_transaction_timeout: self.db_idle_in_transaction_timeout,
                    statement_cache: self.db_statement_cache && !self.db_transaction_pooling,
                    transaction_pooling: self.db_transaction_pooling,
                    direct_url,
                    replicas,
                    replica_max_lag: self.replica_max_lag,
                })),
                Err(message) => {
                    problems.add("database_url", message);
                    None
                }
            },
            Some(url) => {
                problems.add(
                    "database_url",
                    format!(
                        "unsupported scheme in {}: use sqlite:// or postgres://",
                        urls::redact_url(url)
                    ),
                );
                None
            }
        }
    }

    fn primary_is_postgres(&self) -> bool {
        self.database_url.as_deref().is_some_and(urls::is_postgres)
    }

    fn replicas(&self, problems: &mut Problems) -> Vec<SecretString> {
        let replicas: Vec<SecretString> =
            crate::comma_separated(self.database_replica_urls.as_deref().unwrap_or_default())
                .filter_map(|url| {
                    urls::postgres_url(url)
                        .map_err(|message| problems.add("database_replica_urls", message))
                        .ok()
                })
                .collect();
        if !replicas.is_empty() && !self.primary_is_postgres() {
            problems.add(
                "database_replica_urls",
                "read replicas need a PostgreSQL TM_DATABASE_URL",
            );
        }
        if replicas.len() > MAX_REPLICAS {
            problems.add(
                "database_replica_urls",
                format!("at most {MAX_REPLICAS} replicas"),
            );
        }
        replicas
    }

    /// The direct URL, checked with the transaction pooling it goes with.
    fn direct_url(&self, problems: &mut Problems) -> Option<SecretString> {
        let direct_url = match self.database_direct_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => urls::postgres_url(url)
                .map_err(|message| problems.add("database_direct_url", message))
                .ok(),
        };
        if (self.db_transaction_pooling || direct_url.is_some()) && !self.primary_is_postgres() {
            problems.add(
                "db_transaction_pooling",
                "transaction pooling and a direct URL need a PostgreSQL TM_DATABASE_URL",
            );
        } else if self.db_transaction_pooling && direct_url.is_none() {
            problems.add(
                "database_direct_url",
                "required with TM_DB_TRANSACTION_POOLING: LISTEN and migrations need a session, \
                 which a transaction-pooling proxy does not keep",
            );
        }
        direct_url
    }
}
