//! Cold start: an instance keeps a signed file of its routing table and keys while its
//! database answers, and starts from it when the database does not, serving resolve
//! (and authenticating keys) from memory until the database answers again.
//!
//! Writes need the database, so they fail with 503 meanwhile, as they do when it goes
//! away later. Once it answers, the store is migrated if it needs to be, the snapshot
//! and keys are read from it whole, and the instance serves from it as any other.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tm_config::{ColdStartConfig, Config, SnapshotKeySource};
use tm_domain::{ServiceFacts, SnapshotBuilder};
use tm_http::AppState;
use tm_store::{ColdSnapshot, KeyRing, RoutingTable, SnapshotKey, Store};
use tokio_util::sync::CancellationToken;

use crate::workers::Worker;
use crate::StartError;

/// The key the file is signed with.
pub(crate) fn snapshot_key(config: &ColdStartConfig) -> Result<SnapshotKey, StartError> {
    let text = match &config.key {
        SnapshotKeySource::Given(key) => key.expose_secret().to_owned(),
        SnapshotKeySource::File(path) => {
            std::fs::read_to_string(path).map_err(|source| StartError::ColdStart {
                reason: format!("reading TM_SNAPSHOT_KEY_FILE {}: {source}", path.display()),
            })?
        }
    };
    SnapshotKey::from_base64(text.trim()).map_err(|err| StartError::ColdStart {
        reason: format!("the snapshot key: {err}"),
    })
}

/// What an instance started from its file serves.
pub(crate) struct Cold {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) keys: Arc<KeyRing>,
    pub(crate) routing: Arc<RoutingTable>,
    pub(crate) file: PathBuf,
    pub(crate) written_at: chrono::DateTime<chrono::Utc>,
}

/// Starts from the cold-start file, the database being unreachable (`unreachable` says
/// why): refused, with the reason, when there is no file, or it is tampered with, of
/// another database, or cold start is not configured.
pub(crate) async fn start_cold(
    config: &Config,
    counters: tm_store::StoreCounters,
    configured_admin: Option<&str>,
    unreachable: &tm_store::StoreError,
) -> Result<Cold, StartError> {
    let refused = |reason: String| StartError::ColdStart {
        reason: format!("the database is unreachable ({unreachable}) and {reason}"),
    };
    let Some(cold) = &config.cold_start else {
        return Err(refused(
            "no cold-start file is configured (TM_SNAPSHOT_KEY)".into(),
        ));
    };
    let key = snapshot_key(cold)?;
    let store_id = tm_store::store_id(&config.storage);
    let path = cold.file.clone();
    let read = tokio::task::spawn_blocking(move || tm_store::read_snapshot(&path, &key, &store_id))
        .await
        .map_err(|err| refused(format!("reading the cold-start file failed: {err}")))?;
    let snapshot = read.map_err(|err| {
        refused(format!(
            "its cold-start file {} is refused: {err}",
            cold.file.display()
        ))
    })?;
    let store = tm_store::connect_lazy(&config.storage, &config.pool, counters)
        .await
        .map_err(|err| refused(format!("its store cannot be made: {err}")))?
        .ok_or_else(|| refused("cold start needs PostgreSQL".into()))?;
    let ColdSnapshot {
        written_at,
        mut routes,
        services,
        keys,
    } = snapshot;
    let facts: std::collections::HashMap<_, _> = services.into_iter().collect();
    routes.sort_by(|a, b| {
        (&a.tenant, &a.service, &a.env, &a.version)
            .cmp(&(&b.tenant, &b.service, &b.env, &b.version))
    });
    let routing = tokio::task::spawn_blocking(move || {
        let mut builder = SnapshotBuilder::default();
        let defaults = ServiceFacts::default();
        for route in &routes {
            builder.add_served(route, facts.get(&route.group()).unwrap_or(&defaults));
        }
        builder.build()
    })
    .await
    .map_err(|err| refused(format!("building from the cold-start file failed: {err}")))?;
    let age = (tm_domain::now() - written_at).to_std().unwrap_or_default();
    tracing::warn!(
        file = %cold.file.display(),
        written_at = %written_at.to_rfc3339(),
        routes = routing.route_count(),
        keys = keys.len(),
        error = %unreachable,
        "the database is unreachable: serving from the cold-start file until it answers; writes are refused meanwhile"
    );
    Ok(Cold {
        keys: Arc::new(KeyRing::from_records(store.clone(), configured_admin, keys)),
        routing: Arc::new(RoutingTable::from_snapshot(store.clone(), routing, age)),
        store,
        file: cold.file.clone(),
        written_at,
    })
}

/// Waits for the database of an instance started from its file: migrates it, reads
/// the routing snapshot and keys from it whole, and marks the instance as serving from
/// it. Tries again every second until then.
pub(crate) struct Recover {
    state: AppState,
    config: Config,
}

impl Recover {
    pub(crate) fn new(state: &AppState, config: &Config) -> Self {
        Self {
            state: state.clone(),
            config: config.clone(),
        }
    }

    async fn try_once(&self) -> Result<(), String> {
        tm_store::migrate(&self.config.storage, &self.config.pool)
            .await
            .map_err(|err| format!("migrating: {err}"))?;
        let routes = self
            .state
            .routing
            .reload()
            .await
            .map_err(|err| format!("loading the routing snapshot: {err}"))?;
        let keys = self
            .state
            .keys
            .reload()
            .await
            .map_err(|err| format!("loading the keys: {err}"))?;
        self.state.cold_start.recovered();
        self.state.metrics.routing_snapshot_cold_start.set(0);
        tracing::info!(routes, keys, "the database answers: serving from it again");
        Ok(())
    }
}

impl Worker for Recover {
    const NAME: &'static str = "cold-start recovery";

    async fn run(self, shutdown: CancellationToken) {
        let mut tick = crate::workers::ticker(Duration::from_secs(1));
        let mut failures = 0u32;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.try_once().await {
                Ok(()) => break,
                Err(error) => {
                    failures += 1;
                    // Once at first, then every minute: the cause does not change often.
                    if failures == 1 || failures.is_multiple_of(60) {
                        tracing::warn!(error = %error, "the database still does not answer; serving from the cold-start file");
                    }
                }
            }
        }
        shutdown.cancelled().await;
    }
}

/// Writes the cold-start file every interval in which the routing table or the keys may
/// have changed (and once at start), while the instance serves from its database.
pub(crate) struct WriteSnapshot {
    state: AppState,
    file: PathBuf,
    key: Arc<SnapshotKey>,
    store_id: String,
    every: Duration,
    written: AtomicU64,
}

impl WriteSnapshot {
    pub(crate) fn new(state: &AppState, config: &Config) -> Result<Option<Self>, StartError> {
        let Some(cold) = &config.cold_start else {
            return Ok(None);
        };
        Ok(Some(Self {
            state: state.clone(),
            file: cold.file.clone(),
            key: Arc::new(snapshot_key(cold)?),
            store_id: tm_store::store_id(&config.storage),
            every: cold.write_interval,
            written: AtomicU64::new(u64::MAX),
        }))
    }

    /// What the keys are now, as one number: a change of any key changes it.
    fn keys_fingerprint(records: &[tm_store::KeyRecord]) -> u64 {
        let mut ids: Vec<String> = records.iter().map(|k| k.id.to_string()).collect();
        ids.sort_unstable();
        fingerprint_of(ids.join(",").as_bytes())
    }

    async fn write_if_changed(&self, last_keys: &mut u64) {
        if self.state.cold_start.file().is_some() {
            // Still serving from the file: nothing newer to keep.
            return;
        }
        let publications = self.state.routing.publications();
        let keys = self.state.keys.records();
        let fingerprint = Self::keys_fingerprint(&keys);
        if publications == self.written.load(Ordering::Acquire) && fingerprint == *last_keys {
            return;
        }
        let snapshot = self.state.routing.snapshot().clone();
        let (file, key, store_id) = (self.file.clone(), self.key.clone(), self.store_id.clone());
        let written = tokio::task::spawn_blocking(move || {
            let exported = snapshot.export();
            let mut routes = Vec::new();
            let mut services = Vec::new();
            for (service, facts, members) in exported {
                services.push((service, facts));
                routes.extend(members);
            }
            let cold = ColdSnapshot {
                written_at: tm_domain::now(),
                routes,
                services,
                keys,
            };
            tm_store::write_snapshot(&file, &key, &store_id, &cold).map(|()| cold.routes.len())
        })
        .await;
        match written {
            Ok(Ok(routes)) => {
                self.written.store(publications, Ordering::Release);
                *last_keys = fingerprint;
                tracing::debug!(routes, file = %self.file.display(), "cold-start file written");
            }
            Ok(Err(err)) => {
                tracing::warn!(file = %self.file.display(), error = %err, "writing the cold-start file failed");
            }
            Err(err) => tracing::warn!(error = %err, "writing the cold-start file failed"),
        }
    }
}

fn fingerprint_of(bytes: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    hasher.write(bytes);
    hasher.finish()
}

impl Worker for WriteSnapshot {
    const NAME: &'static str = "cold-start file writer";

    async fn run(self, shutdown: CancellationToken) {
        // The first at once: a fresh instance has a file as soon as it can.
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_keys = u64::MAX;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => self.write_if_changed(&mut last_keys).await,
            }
        }
    }
}
