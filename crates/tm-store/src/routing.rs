//! The live routing snapshot and the only code that replaces it.
//!
//! Readers load the current [`RoutingSnapshot`] without locking. Changes are
//! serialized by one async mutex and always re-read the affected group from the store,
//! so a late or repeated refresh can never publish older data than an earlier one did.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, Guard};
use futures::TryStreamExt;
use tm_domain::{GroupKey, RouteChange, RoutingSnapshot, SnapshotBuilder};
use tm_resilience::Singleflight;
use tokio::sync::Mutex;

use crate::{Store, StoreError};

pub struct RoutingTable {
    current: ArcSwap<RoutingSnapshot>,
    store: Arc<dyn Store>,
    /// Held while a refresh reads the store and publishes, so refreshes apply in order.
    refresh: Mutex<()>,
    /// When the snapshot was last known to match the store completely.
    last_full_load: ArcSwap<Instant>,
    reloads: Singleflight<(), Result<usize, Arc<StoreError>>>,
}

impl RoutingTable {
    /// Loads every active route from `store`.
    pub async fn load(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let snapshot = build(store.as_ref()).await?;
        Ok(Self {
            current: ArcSwap::from_pointee(snapshot),
            store,
            refresh: Mutex::new(()),
            last_full_load: ArcSwap::from_pointee(Instant::now()),
            reloads: Singleflight::default(),
        })
    }

    /// The current snapshot. Cheap and lock-free; hold the guard only briefly.
    pub fn snapshot(&self) -> Guard<Arc<RoutingSnapshot>> {
        self.current.load()
    }

    /// Re-reads one group after a write that touched it.
    ///
    /// If the store cannot be read, `written` (the route as the write left it) is applied
    /// alone instead, so this instance still serves its own acknowledged write; the next full
    /// reload corrects anything else.
    pub async fn refresh_group(&self, key: &GroupKey, written: RouteChange<'_>) {
        let _order = self.refresh.lock().await;
        let current = self.current.load();
        let next = match self.store.routes_in_group(key).await {
            Ok(routes) => current.with_group(key, &routes),
            Err(err) => {
                tracing::warn!(error = %err, tenant = %key.tenant, service = %key.service, env = %key.env,
                    "could not re-read a changed service; applying the write alone");
                current.with_change(written)
            }
        };
        self.current.store(Arc::new(next));
    }

    /// Replaces the whole snapshot with what the store holds now, and returns the
    /// number of active routes. Concurrent callers share one reload (and one query): a
    /// caller arriving while one runs gets its result.
    pub async fn reload(&self) -> Result<usize, Arc<StoreError>> {
        self.reloads
            .run((), || async {
                let _order = self.refresh.lock().await;
                let snapshot = build(self.store.as_ref()).await.map_err(Arc::new)?;
                let count = snapshot.route_count();
                self.current.store(Arc::new(snapshot));
                self.last_full_load.store(Arc::new(Instant::now()));
                Ok(count)
            })
            .await
    }

    /// Time since the snapshot was last fully reloaded from the store.
    pub fn age(&self) -> std::time::Duration {
        self.last_full_load.load().elapsed()
    }
}

/// A snapshot of every active route in `store`, read as a stream.
async fn build(store: &dyn Store) -> Result<RoutingSnapshot, StoreError> {
    let mut builder = SnapshotBuilder::default();
    let mut routes = store.stream_active_routes();
    while let Some(route) = routes.try_next().await? {
        builder.add(&route);
    }
    Ok(builder.build())
}
