//! The live routing snapshot and the only code that replaces it.
//!
//! Readers load the current [`RoutingSnapshot`] without locking. Changes are
//! serialized by one async mutex and re-read the affected groups from the store while
//! holding it, so a late or repeated refresh can never publish older data than an
//! earlier one did.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, Guard};
use tm_domain::{GroupKey, Route, RouteChange, RoutingSnapshot, ServiceFacts, SnapshotBuilder};
use tm_resilience::Singleflight;
use tokio::sync::Mutex;

use crate::{ChangePosition, LoadCursor, Store, StoreError};

pub struct RoutingTable {
    current: ArcSwap<RoutingSnapshot>,
    store: Arc<dyn Store>,
    /// Held while a refresh reads the store and publishes, so refreshes apply in order.
    refresh: Mutex<()>,
    /// When the snapshot was last known to match the store (a full load or a catch-up).
    last_synced: ArcSwap<Instant>,
    reloads: Singleflight<(), Result<usize, Arc<StoreError>>>,
    /// Committed writes whose groups the snapshot may not show yet.
    pending: std::sync::Mutex<Pending>,
    /// The last ticket whose write the published snapshot includes.
    applied: AtomicU64,
    /// How far the snapshot has caught up with the change feed.
    feed: std::sync::Mutex<ChangePosition>,
    /// Held by a catch-up or a full reload from start to end: they move the feed
    /// position, one at a time.
    following: Mutex<()>,
    /// Who waits for which service to change.
    watchers: Watchers,
    /// Snapshots published so far.
    publications: AtomicU64,
}

/// Writes queued for the next group refresh, by group, in the order they were queued.
#[derive(Default)]
struct Pending {
    groups: HashMap<GroupKey, Vec<Written>>,
    last_ticket: u64,
}

impl Pending {
    fn push(&mut self, key: &GroupKey, change: RouteChange<'_>) -> u64 {
        let written = match change {
            RouteChange::Stored(route) => Written {
                route: route.clone(),
                deleted: false,
            },
            RouteChange::Deleted(route) => Written {
                route: route.clone(),
                deleted: true,
            },
        };
        self.groups.entry(key.clone()).or_default().push(written);
        self.last_ticket += 1;
        self.last_ticket
    }

    /// Everything queued so far, and the ticket of the last write in it.
    fn take(&mut self) -> (HashMap<GroupKey, Vec<Written>>, u64) {
        (std::mem::take(&mut self.groups), self.last_ticket)
    }
}

/// One committed write, as the write left the route.
struct Written {
    route: Route,
    deleted: bool,
}

impl Written {
    fn as_change(&self) -> RouteChange<'_> {
        if self.deleted {
            RouteChange::Deleted(&self.route)
        } else {
            RouteChange::Stored(&self.route)
        }
    }

    /// Whether resolve could answer differently once this write is applied. Checked under
    /// the refresh lock: any refresh that read the store before this write committed has
    /// published already, so a version the snapshot lacks is one it will not gain from
    /// older data.
    fn may_change(&self, snapshot: &RoutingSnapshot, key: &GroupKey) -> bool {
        (self.route.active && !self.deleted) || snapshot.has_version(key, &self.route.version)
    }
}

impl RoutingTable {
    /// Loads every active route from `store`.
    pub async fn load(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        // Taken first: whatever the load misses is after this position.
        let feed = store.change_position().await?;
        let snapshot = build(store.as_ref()).await?;
        Ok(Self {
            feed: std::sync::Mutex::new(feed),
            following: Mutex::new(()),
            current: ArcSwap::from_pointee(snapshot),
            store,
            refresh: Mutex::new(()),
            last_synced: ArcSwap::from_pointee(Instant::now()),
            reloads: Singleflight::default(),
            pending: std::sync::Mutex::default(),
            applied: AtomicU64::new(0),
            watchers: Watchers::default(),
            publications: AtomicU64::new(0),
        })
    }

    /// A watch of `service`: woken whenever a snapshot that may change it is published.
    pub fn watch(&self, service: &GroupKey) -> ServiceWatch {
        self.watchers.watch(service)
    }

    /// Services watched now, and watches held.
    pub fn watch_counts(&self) -> (usize, usize) {
        self.watchers.counts()
    }

    /// A table serving `snapshot` (as a cold-start file kept it, made `age` ago), for a
    /// store that cannot be read yet: its feed position is the start, so the first
    /// [`Self::reload`] once the store answers replaces it whole.
    pub fn from_snapshot(
        store: Arc<dyn Store>,
        snapshot: RoutingSnapshot,
        age: std::time::Duration,
    ) -> Self {
        let synced = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        Self {
            feed: std::sync::Mutex::new(ChangePosition::default()),
            following: Mutex::new(()),
            current: ArcSwap::from_pointee(snapshot),
            store,
            refresh: Mutex::new(()),
            last_synced: ArcSwap::from_pointee(synced),
            reloads: Singleflight::default(),
            pending: std::sync::Mutex::default(),
            applied: AtomicU64::new(0),
            watchers: Watchers::default(),
            publications: AtomicU64::new(0),
        }
    }

    /// How many snapshots this table has published: changes when the snapshot may have.
    pub fn publications(&self) -> u64 {
        self.publications.load(Ordering::Acquire)
    }

    /// The current snapshot. Cheap and lock-free; hold the guard only briefly.
    pub fn snapshot(&self) -> Guard<Arc<RoutingSnapshot>> {
        self.current.load()
    }

    /// Brings the snapshot up to date after a write to `key`'s group has committed.
    ///
    /// Writes that arrive together are applied together: each one queues its group and
    /// waits for the refresh lock; whoever takes it first reads every queued group in one
    /// query and publishes one snapshot, and the others find their write already applied.
    /// A group is not read at all when the write cannot have changed what resolve sees
    /// (an inactive route that the snapshot does not hold).
    ///
    /// If the store cannot be read, the queued writes themselves are applied instead, so
    /// this instance still serves its own acknowledged writes; the next full reload
    /// corrects anything else.
    ///
    /// The refresh runs in a task of its own: the batch it takes may hold other
    /// callers' writes, so it must finish even if this caller goes away (a client that
    /// disconnects drops its request's future).
    pub async fn refresh_group(self: &Arc<Self>, key: &GroupKey, written: RouteChange<'_>) {
        let ticket = self.pending().push(key, written);
        let table = self.clone();
        // A panic in the refresh leaves the queue to the next caller and the feed.
        let _ = tokio::spawn(async move { table.apply_pending(ticket).await }).await;
    }

    /// Publishes every queued write up to `ticket` (and whatever else is queued).
    async fn apply_pending(&self, ticket: u64) {
        let _order = self.refresh.lock().await;
        if self.applied.load(Ordering::Acquire) >= ticket {
            return;
        }
        let (batch, upto) = self.pending().take();
        let current = self.current.load_full();
        let stale: Vec<GroupKey> = batch
            .iter()
            .filter(|(key, changes)| changes.iter().any(|c| c.may_change(&current, key)))
            .map(|(key, _)| key.clone())
            .collect();
        if !stale.is_empty() {
            let next = match self.store.active_routes_in_groups(&stale).await {
                Ok(read) => {
                    self.watchers.note_empty(&stale, &read);
                    current.with_groups(&stale, &read.routes, &read.services)
                }
                Err(err) => {
                    tracing::warn!(error = %err, groups = stale.len(),
                        "could not re-read changed services; applying the writes alone");
                    // Each route's writes in revision order (a delete last at its
                    // revision), routes by id (time-ordered: a route re-created after a
                    // delete comes after it), so the latest state wins whatever order the
                    // writes were queued in.
                    let mut writes: Vec<&Written> = batch.values().flatten().collect();
                    writes.sort_by_key(|w| (w.route.id.as_uuid(), w.route.revision, w.deleted));
                    writes.into_iter().fold((*current).clone(), |snapshot, w| {
                        snapshot.with_change(w.as_change())
                    })
                }
            };
            self.current.store(Arc::new(next));
            self.publications.fetch_add(1, Ordering::AcqRel);
            self.watchers.changed(&stale);
        }
        self.applied.store(upto, Ordering::Release);
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // The queue stays consistent even if a holder panicked: every change is one call.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the whole snapshot with what the store holds now, and returns the
    /// number of active routes. Concurrent callers share one reload (and one query): a
    /// caller arriving while one runs gets its result.
    pub async fn reload(&self) -> Result<usize, Arc<StoreError>> {
        self.reloads
            .run((), || async {
                let _feed = self.following.lock().await;
                let _order = self.refresh.lock().await;
                let feed = self.store.change_position().await.map_err(Arc::new)?;
                let snapshot = build(self.store.as_ref()).await.map_err(Arc::new)?;
                let count = snapshot.route_count();
                self.current.store(Arc::new(snapshot));
                self.publications.fetch_add(1, Ordering::AcqRel);
                self.watchers.changed_all();
                *self.position() = feed;
                self.last_synced.store(Arc::new(Instant::now()));
                Ok(count)
            })
            .await
    }

    /// Applies every change recorded in the store since the last look, by this
    /// instance or any other, re-reading only the services changed (see
    /// [`Self::refresh_services`]). After a burst of changes too large to apply one
    /// service at a time, reloads fully.
    /// Returns the number of services re-read.
    pub async fn catch_up(&self) -> Result<usize, Arc<StoreError>> {
        let following = self.following.lock().await;
        let mut position = *self.position();
        let mut changed: Vec<GroupKey> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        loop {
            let changes = self
                .store
                .changes_after(position, FEED_PAGE)
                .await
                .map_err(Arc::new)?;
            changed.extend(
                changes
                    .groups
                    .into_iter()
                    .filter(|key| seen.insert(key.clone())),
            );
            position = changes.position;
            if changes.complete {
                break;
            }
            if changed.len() > MAX_CATCH_UP_GROUPS {
                drop(following);
                let _routes = self.reload().await?;
                return Ok(changed.len());
            }
        }
        self.refresh_services(&changed).await?;
        *self.position() = position;
        self.last_synced.store(Arc::new(Instant::now()));
        Ok(changed.len())
    }

    /// Re-reads the given services and publishes them, a batch at a time, each batch
    /// under the refresh lock, so that writes on this instance wait for one batch at
    /// most. For services a notification says were changed elsewhere.
    pub async fn refresh_services(&self, services: &[GroupKey]) -> Result<(), Arc<StoreError>> {
        for batch in services.chunks(CATCH_UP_BATCH) {
            let _order = self.refresh.lock().await;
            let read = self
                .store
                .active_routes_in_groups(batch)
                .await
                .map_err(Arc::new)?;
            self.watchers.note_empty(batch, &read);
            let next = self
                .current
                .load()
                .with_groups(batch, &read.routes, &read.services);
            self.current.store(Arc::new(next));
            self.publications.fetch_add(1, Ordering::AcqRel);
            self.watchers.changed(batch);
        }
        Ok(())
    }

    fn position(&self) -> std::sync::MutexGuard<'_, ChangePosition> {
        self.feed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Time since the snapshot was last known to match the store.
    pub fn age(&self) -> std::time::Duration {
        self.last_synced.load().elapsed()
    }
}

/// The watches of services, by service. An entry lives while a watch of it is held.
#[derive(Default)]
struct Watchers {
    services: std::sync::Mutex<HashMap<GroupKey, Arc<Watched>>>,
}

/// One watched service: what wakes its watchers, and its generation when it was last
/// read with no active version (the snapshot holds nothing of such a service).
#[derive(Default)]
struct Watched {
    changed: tokio::sync::Notify,
    empty_generation: AtomicU64,
}

/// A watch of one service (see [`RoutingTable::watch`]); dropping it ends the watch.
pub struct ServiceWatch {
    watched: Arc<Watched>,
}

impl ServiceWatch {
    /// Completes at the next publication of a snapshot that may change the service. Make
    /// it (and `enable` it) before looking at the snapshot, so that no publication between
    /// the look and the wait is missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.watched.changed.notified()
    }

    /// The service's generation when it was last read with no active version; 0 if it has
    /// not been since the watch began.
    pub fn empty_generation(&self) -> u64 {
        self.watched.empty_generation.load(Ordering::Acquire)
    }
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GroupKey, Arc<Watched>>> {
        self.services
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn watch(&self, service: &GroupKey) -> ServiceWatch {
        let mut services = self.lock();
        // Entries whose every watch has ended go as new ones come: the map holds at most
        // the services watched now, and those of watches ended since the last new one.
        if services.len() >= 64 && services.len().is_power_of_two() {
            services.retain(|_, watched| Arc::strong_count(watched) > 1);
        }
        let watched = services.entry(service.clone()).or_default().clone();
        ServiceWatch { watched }
    }

    fn counts(&self) -> (usize, usize) {
        let services = self.lock();
        let live = services.values().filter(|w| Arc::strong_count(w) > 1);
        let held = live.clone().map(|w| Arc::strong_count(w) - 1).sum();
        (live.count(), held)
    }

    /// Wakes the watchers of `services`.
    fn changed(&self, services: &[GroupKey]) {
        let watched = self.lock();
        if watched.is_empty() {
            return;
        }
        for service in services {
            if let Some(entry) = watched.get(service) {
                entry.changed.notify_waiters();
            }
        }
    }

    /// Wakes every watcher.
    fn changed_all(&self) {
        for entry in self.lock().values() {
            entry.changed.notify_waiters();
        }
    }

    /// Notes the generation of each watched service of `services` that `read` found with
    /// no active version.
    fn note_empty(&self, services: &[GroupKey], read: &crate::ServingState) {
        let watched = self.lock();
        if watched.is_empty() {
            return;
        }
        for service in services {
            let Some(entry) = watched.get(service) else {
                continue;
            };
            let empty = !read.routes.iter().any(|r| {
                r.tenant == service.tenant && r.service == service.service && r.env == service.env
            });
            if let (true, Some(facts)) = (empty, read.services.get(service)) {
                entry
                    .empty_generation
                    .fetch_max(facts.generation, Ordering::AcqRel);
            }
        }
    }
}

/// Changes read per query when catching up.
const FEED_PAGE: u32 = 1_000;

/// Services re-read (and published) together when catching up.
const CATCH_UP_BATCH: usize = 100;

/// Changed services beyond which catching up reloads everything instead.
const MAX_CATCH_UP_GROUPS: usize = 20_000;

/// Routes read per query by a full load.
const LOAD_PAGE: u32 = 5_000;

/// A snapshot of every active route in `store`, read a page at a time. Preparing the
/// answers is CPU work, done on a blocking thread so that a reload of millions of routes
/// does not hold up the threads answering requests.
async fn build(store: &dyn Store) -> Result<RoutingSnapshot, StoreError> {
    let mut builder = SnapshotBuilder::default();
    // Read once: usually few routes are checked, and a change of health after this read
    // is in the change feed, after the position the load started from.
    let health = Arc::new(store.kept_health().await?);
    let mut after: Option<LoadCursor> = None;
    loop {
        let page = store.active_routes_page(after.as_ref(), LOAD_PAGE).await?;
        let (mut routes, services) = (page.routes, page.services);
        let health = health.clone();
        builder = tokio::task::spawn_blocking(move || {
            let defaults = ServiceFacts::default();
            for route in &mut routes {
                if let Some(kept) = health.get(&route.id) {
                    route.health = *kept;
                }
                builder.add_served(route, services.get(&route.group()).unwrap_or(&defaults));
            }
            builder
        })
        .await
        .map_err(|err| match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Cancelled: the runtime is shutting down, and its pools with it.
            Err(_) => StoreError::Unavailable(sqlx::Error::PoolClosed),
        })?;
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(builder.build()),
        }
    }
}
