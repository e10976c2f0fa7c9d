//! The one place a test application's `Config` is built from the harness's options:
//! every field of `RawConfig` the harness sets is set here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tm_config::{Config, RawConfig};

use crate::database::PgTarget;

/// A change to the settings, applied after the harness's own.
pub(crate) type Override = Arc<dyn Fn(&mut RawConfig) + Send + Sync>;

/// Redis as the application is given it.
#[derive(Clone, Debug)]
pub(crate) enum RedisTarget {
    Server(String),
    Cluster(String),
}

/// What the harness decides about one application.
pub(crate) struct Settings<'a> {
    pub data_dir: &'a Path,
    pub postgres: Option<&'a PgTarget>,
    pub replicas: &'a [String],
    pub redis: Option<&'a RedisTarget>,
    pub kafka: Option<&'a str>,
    pub admin_key: Option<&'a str>,
    pub frequent_reloads: bool,
    pub overrides: &'a [Override],
}

/// The configuration: loopback on a random port, the data directory, the database,
/// replicas, Redis and admin key given, then `overrides` and `last`, in that order.
pub(crate) fn build(settings: &Settings<'_>, last: impl FnOnce(&mut RawConfig)) -> Config {
    let mut raw = RawConfig::default();
    raw.process.listen = "127.0.0.1:0".into();
    raw.process.data_dir = settings.data_dir.to_path_buf();
    raw.process.bootstrap_admin_key = settings.admin_key.map(str::to_owned);
    // No scheduled backups (each would export the store at start): the tests of
    // backups turn them on.
    raw.backup.backup_interval = Duration::ZERO;
    if settings.frequent_reloads {
        raw.process.snapshot_reload_interval = Duration::from_millis(500);
    }
    if let Some(pg) = settings.postgres {
        raw.storage.database_url = Some(pg.app_url.clone());
        if pg.pooled() {
            // Through a transaction-pooling PgBouncer; the direct URL for the rest.
            raw.storage.db_transaction_pooling = true;
            raw.storage.database_direct_url = Some(pg.direct_url.clone());
        }
    }
    if !settings.replicas.is_empty() {
        raw.storage.database_replica_urls = Some(settings.replicas.join(","));
    }
    // The suite runs once with resolves answered by the router instead of the fast path.
    if std::env::var("TM_TEST_RESOLVE_FAST_PATH").is_ok_and(|v| v == "false") {
        raw.http.resolve_fast_path = false;
    }
    match settings.redis {
        Some(RedisTarget::Server(url)) => raw.redis.redis_url = Some(url.clone()),
        Some(RedisTarget::Cluster(urls)) => raw.redis.redis_cluster_urls = Some(urls.clone()),
        None => {}
    }
    raw.events.kafka_brokers = settings.kafka.map(str::to_owned);
    for change in settings.overrides {
        change(&mut raw);
    }
    last(&mut raw);
    Config::try_from(raw).expect("valid test configuration")
}

/// No periodic snapshot reloads or catch-ups, and no job runner (it and the outbox
/// relays poll the database): for tests that count the queries their requests make.
pub fn quiet_background(raw: &mut RawConfig) {
    raw.process.snapshot_reload_interval = Duration::from_secs(3600);
    raw.process.snapshot_catch_up_interval = Duration::from_secs(3600);
    raw.jobs.jobs_in_serve = false;
}
