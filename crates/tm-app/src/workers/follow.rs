//! Follows changes made by any instance: keeps this instance's routing snapshot and
//! API keys in step with the store, from notifications, the change feed and key
//! changes published on Redis.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use tm_domain::GroupKey;
use tm_http::{AppState, Guard, KEYS_CHANNEL};
use tm_store::{ChangeSubscription, Changed, KeyRing, RoutingTable, Store, StoreError};
use tm_telemetry::Metrics;
use tokio_util::sync::CancellationToken;

use super::Worker;

/// Keeps the snapshot and the keys in step with the store. Where the store sends change
/// notifications (PostgreSQL), each one triggers a catch-up at once. Every `catch_up`
/// period regardless, the snapshot applies the changes recorded since its last look
/// (made by this instance or any other), the keys are re-read and lost subscriptions
/// are made again: the bound on how long a missed notification can go unnoticed. Key
/// changes published on Redis reload the keys at once. (The full rebuild, the safety
/// net for changes made to the database directly, is [`super::Rebuild`]'s.)
pub(crate) struct Follow {
    followed: Followed,
    sources: Sources,
    catch_up: Duration,
}

impl Follow {
    /// Follows the store of `state`, starting from `subscription` (made before the
    /// first request was served, so that no change committed after it goes unheard).
    pub(crate) fn new(
        state: &AppState,
        subscription: Option<ChangeSubscription>,
        catch_up: Duration,
    ) -> Self {
        Self {
            followed: Followed {
                routing: state.routing.clone(),
                keys: state.keys.clone(),
                guard: state.guard.clone(),
                metrics: state.metrics.clone(),
                relays: state.relays.clone(),
            },
            sources: Sources {
                store: state.store.clone(),
                redis: state.redis.clone(),
                notifications: subscription,
                published: None,
            },
            catch_up,
        }
    }
}

impl Worker for Follow {
    const NAME: &'static str = "change follower";

    async fn run(mut self, shutdown: CancellationToken) {
        let mut catch_up = super::ticker(self.catch_up);
        self.sources.resubscribe().await;
        // Whatever committed before the subscription was listening is in the feed: catch
        // up once at the start, as after every new subscription.
        let mut changed = Changed::all();
        loop {
            self.followed.apply(changed).await;
            changed = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = catch_up.tick() => {
                    self.sources.resubscribe().await;
                    Changed::all()
                }
                changed = self.sources.next() => {
                    // Another instance wrote: its events wait in the outbox.
                    self.followed.relays.written();
                    changed
                }
            };
        }
    }
}

/// What [`Follow`] keeps in step with the store.
struct Followed {
    routing: Arc<RoutingTable>,
    keys: Arc<KeyRing>,
    /// Whose cached reads changes made elsewhere make stale.
    guard: Arc<Guard>,
    metrics: Arc<Metrics>,
    /// Woken when another instance wrote.
    relays: Arc<tm_http::Relays>,
}

impl Followed {
    /// Brings the snapshot and the keys up to date with what `changed` says.
    async fn apply(&self, changed: Changed) {
        let mut feed = changed.feed;
        if !changed.services.is_empty() && !self.refresh_services(changed.services).await {
            feed = true;
        }
        if feed {
            self.catch_up().await;
        }
        if changed.keys {
            self.reload_keys().await;
        }
    }

    /// Re-reads the services changed elsewhere and records how long each change took to
    /// arrive. `false` if that failed: the change feed must then be read instead.
    async fn refresh_services(&self, changed: Vec<(GroupKey, DateTime<Utc>)>) -> bool {
        let (services, made_at): (Vec<_>, Vec<_>) = changed.into_iter().unzip();
        // Cached list and get answers may predate the change.
        self.guard.forget_cached_reads();
        match self.routing.refresh_services(&services).await {
            Ok(()) => {
                self.observe_propagation(&made_at);
                true
            }
            Err(err) => {
                tracing::warn!(error = %err,
                    "re-reading services changed elsewhere failed; catching up from the feed");
                false
            }
        }
    }

    /// Applies the changes recorded in the feed since the snapshot's last look.
    async fn catch_up(&self) {
        match self.routing.catch_up().await {
            Ok(services) => {
                if services > 0 {
                    self.guard.forget_cached_reads();
                    tracing::debug!(services, "routing snapshot caught up");
                }
            }
            Err(err) => tracing::warn!(error = %err,
                "reading the change feed failed; serving the snapshot as it is"),
        }
    }

    async fn reload_keys(&self) {
        if let Err(err) = self.keys.reload().await {
            tracing::warn!(error = %err, "API key reload failed; using the keys already loaded");
        }
    }

    /// Records, for changes made at `made_at`, how long they took to reach this instance.
    fn observe_propagation(&self, made_at: &[DateTime<Utc>]) {
        let now = tm_domain::now();
        for made_at in made_at {
            let seconds = (now - *made_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            self.metrics.observe_propagation(seconds);
        }
    }
}

/// Where word of changes comes from: the store's notifications and, with Redis, key
/// changes other instances publish. Either subscription may be lost; the catch-up
/// period makes it again.
struct Sources {
    store: Arc<dyn Store>,
    redis: Option<Arc<tm_redis::Redis>>,
    notifications: Option<ChangeSubscription>,
    published: Option<BoxStream<'static, String>>,
}

impl Sources {
    /// Makes again whichever subscription is missing, if it can be made now.
    async fn resubscribe(&mut self) {
        if self.notifications.is_none() {
            self.notifications = subscribe(self.store.as_ref()).await;
        }
        if self.published.is_none() {
            self.published = subscribe_redis(self.redis.as_deref()).await;
        }
    }

    /// What the next notification or published message says changed; a lost
    /// subscription is dropped (to be made again) and reported as what it may have
    /// missed. Cancel-safe.
    async fn next(&mut self) -> Changed {
        tokio::select! {
            message = next_message(&mut self.published) => match message {
                Some(_) => Changed { keys: true, ..Changed::default() },
                None => {
                    tracing::warn!("lost the Redis subscription; keys are re-read on the catch-up period");
                    self.published = None;
                    Changed::default()
                }
            },
            notified = next_notification(&mut self.notifications) => match notified {
                Ok(changed) => changed,
                Err(err) => {
                    tracing::warn!(error = %err,
                        "lost the change notifications; following the change feed on its period");
                    self.notifications = None;
                    Changed::all()
                }
            },
        }
    }
}

/// A subscription to change notifications, if the store sends them and one can be made
/// now (if not, the next periodic catch-up tries again).
pub(crate) async fn subscribe(store: &dyn Store) -> Option<ChangeSubscription> {
    match store.subscribe().await {
        Ok(subscription) => subscription,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for change notifications now");
            None
        }
    }
}

/// A subscription to key changes published on Redis, if configured and reachable.
async fn subscribe_redis(redis: Option<&tm_redis::Redis>) -> Option<BoxStream<'static, String>> {
    // Not while Redis is known to be unusable: each node would be tried in turn.
    let redis = redis.filter(|r| !r.degraded())?;
    redis.subscribe(KEYS_CHANNEL).await.ok()
}

/// The next message published; never, without a subscription; `None` when it ended.
async fn next_message(subscription: &mut Option<BoxStream<'static, String>>) -> Option<String> {
    use futures::StreamExt;
    match subscription {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
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
