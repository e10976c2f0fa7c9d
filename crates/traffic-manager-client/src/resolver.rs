//! Resolve answered from memory, kept fresh by watching each service it was asked for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tm_domain::pick;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{Resolved, ServiceKey, VersionState, WatchState};
use crate::client::{Client, Pick, Revalidated};
use crate::error::{Error, Problem};

/// How a [`Resolver`] keeps its cache.
#[derive(Clone, Debug)]
pub struct ResolverOptions {
    /// How long a service's last known state may still answer once the server is out
    /// of reach (default 5 min). Beyond it, resolve fails with [`Error::Stale`].
    pub max_staleness: Duration,
    /// How long each watch waits for a change (default 30 s, at most 60): a healthy
    /// watch confirms the state at least this often.
    pub watch_wait: Duration,
    /// The wait before watching again after a failed watch: doubling from the first to
    /// the second (default 200 ms to 5 s).
    pub retry: (Duration, Duration),
    /// A service not resolved for this long is no longer watched, and leaves the cache
    /// (default 10 min).
    pub idle_after: Duration,
}

impl Default for ResolverOptions {
    fn default() -> Self {
        Self {
            max_staleness: Duration::from_secs(300),
            watch_wait: Duration::from_secs(30),
            retry: (Duration::from_millis(200), Duration::from_secs(5)),
            idle_after: Duration::from_secs(600),
        }
    }
}

/// An answer from the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedAnswer {
    pub resolved: Resolved,
    /// The generation of the service's state it was picked from; `None` when the watch
    /// is not available and the answer is the resolve endpoint's (revalidated with its
    /// `ETag`).
    pub generation: Option<u64>,
    /// `None` while the server confirms the state; once it is out of reach, how long
    /// ago it last did (the answer may be that old).
    pub stale_for: Option<Duration>,
}

/// What the cache knows of one service.
#[derive(Clone, Debug, Default)]
struct Known {
    /// The last state the server gave, and when it last confirmed it.
    state: Option<(Arc<WatchState>, Instant)>,
    /// Why the last watch failed, if it did (cleared by the next that succeeds).
    failing: Option<String>,
    /// Whether the server answered that watch is not available to this client (404,
    /// 405, or 503 past the retries: every watch slot taken): resolve then asks the
    /// resolve endpoint, revalidating each answer held with its `ETag`.
    watch_refused: bool,
}

/// An answer of the resolve endpoint held while watch is not available.
#[derive(Clone, Debug)]
struct Held {
    resolved: Resolved,
    etag: Option<String>,
    /// Until when it may answer without asking the server again (its `max-age`).
    fresh_until: Instant,
    /// When the server last gave or confirmed it.
    confirmed: Instant,
}

struct Watched {
    known: watch::Receiver<Known>,
    last_used: Mutex<Instant>,
    task: JoinHandle<()>,
}

/// Resolve from memory. The first resolve of a service waits for its state; a task then
/// watches the service (long polls from the generation held), so that later resolves
/// answer from memory at once and see a change as soon as the server has it. With the
/// server out of reach, the last known state answers for [`ResolverOptions::max_staleness`],
/// each answer saying how stale it is. Versions are picked as the server picks them: by
/// weight among those that serve, the same for the same key.
///
/// Where the server does not offer watch to this client (every watch slot taken, or a
/// server without it), each answer is the resolve endpoint's, held for its `max-age` and
/// then revalidated with its `ETag` (a 304 costs no body); the watch is tried again
/// meanwhile, and used as soon as it answers.
///
/// Dropping the resolver stops its watches.
pub struct Resolver {
    client: Client,
    options: ResolverOptions,
    services: Arc<Mutex<HashMap<ServiceKey, Arc<Watched>>>>,
    /// Answers held while watch is not available.
    held: Mutex<HashMap<(ServiceKey, Pick), Held>>,
}

impl Resolver {
    pub(crate) fn new(client: Client, options: ResolverOptions) -> Self {
        Self {
            client,
            options,
            services: Arc::default(),
            held: Mutex::default(),
        }
    }

    /// The URL for `service`, by weight among the versions that serve, sticky for `key`
    /// when given (the same key, the same version, as on the server).
    pub async fn resolve(
        &self,
        service: &ServiceKey,
        key: Option<&str>,
    ) -> Result<CachedAnswer, Error> {
        let asked = key.map_or(Pick::Any, |k| Pick::Key(k.to_owned()));
        self.answer(service, asked).await
    }

    /// The URL of `version` of `service`, if it is active (whatever its weight).
    pub async fn resolve_version(
        &self,
        service: &ServiceKey,
        version: &str,
    ) -> Result<CachedAnswer, Error> {
        self.answer(service, Pick::Version(version.to_owned()))
            .await
    }

    /// The services watched now.
    pub fn watched(&self) -> Vec<ServiceKey> {
        let mut keys: Vec<ServiceKey> = self.lock().keys().cloned().collect();
        keys.sort();
        keys
    }

    async fn answer(&self, service: &ServiceKey, asked: Pick) -> Result<CachedAnswer, Error> {
        let watched = self.watched_for(service);
        *watched.last_used.lock().expect("not poisoned") = Instant::now();
        let mut known = watched.known.clone();
        let current = loop {
            let current = known.borrow_and_update().clone();
            if current.state.is_some() || current.failing.is_some() {
                break current;
            }
            // The first watch has not answered yet.
            if known.changed().await.is_err() {
                return Err(Error::Unreachable("the resolver is stopping".into()));
            }
        };
        if current.watch_refused {
            return self.revalidated(service, asked).await;
        }
        let Some((state, confirmed)) = current.state else {
            let reason = current.failing.unwrap_or_default();
            return Err(Error::Unreachable(reason));
        };
        let stale_for = current.failing.as_ref().map(|_| confirmed.elapsed());
        if let (Some(age), Some(reason)) = (stale_for, &current.failing) {
            if age > self.options.max_staleness {
                return Err(Error::Stale {
                    age,
                    bound: self.options.max_staleness,
                    reason: reason.clone(),
                });
            }
        }
        let chosen = choose(&state.versions, &asked).ok_or_else(|| Error::Api {
            status: 404,
            problem: Problem {
                kind: "about:blank".into(),
                title: "Not Found".into(),
                status: 404,
                detail: Some(format!(
                    "no active route for {}/{}/{} (as last known at generation {})",
                    service.tenant, service.service, service.env, state.generation
                )),
                errors: Vec::new(),
            },
        })?;
        Ok(CachedAnswer {
            resolved: Resolved {
                tenant: state.tenant.clone(),
                service: state.service.clone(),
                env: state.env.clone(),
                version: chosen.version.clone(),
                url: chosen.url.clone(),
            },
            generation: Some(state.generation),
            stale_for,
        })
    }

    /// The resolve endpoint's answer for `asked`, held for its `max-age` and then
    /// revalidated with its `ETag`; the one held, marked stale, while the server is out
    /// of reach (up to the bound).
    async fn revalidated(&self, service: &ServiceKey, asked: Pick) -> Result<CachedAnswer, Error> {
        let slot = (service.clone(), asked);
        let held = self.held.lock().expect("not poisoned").get(&slot).cloned();
        let answer = |held: &Held, stale_for| CachedAnswer {
            resolved: held.resolved.clone(),
            generation: None,
            stale_for,
        };
        if let Some(held) = held.as_ref().filter(|h| Instant::now() < h.fresh_until) {
            return Ok(answer(held, None));
        }
        let etag = held.as_ref().and_then(|h| h.etag.as_deref());
        let now = Instant::now();
        let renewed = match self.client.resolve_if_changed(service, &slot.1, etag).await {
            Ok(Revalidated::Unchanged { max_age }) => held.clone().map(|held| Held {
                fresh_until: now + max_age,
                confirmed: now,
                ..held
            }),
            Ok(Revalidated::Changed {
                resolved,
                etag,
                max_age,
            }) => Some(Held {
                resolved,
                etag,
                fresh_until: now + max_age,
                confirmed: now,
            }),
            Err(error @ Error::Api { .. }) => {
                self.held.lock().expect("not poisoned").remove(&slot);
                return Err(error);
            }
            Err(error) => {
                let Some(held) = held else { return Err(error) };
                let age = held.confirmed.elapsed();
                if age > self.options.max_staleness {
                    return Err(Error::Stale {
                        age,
                        bound: self.options.max_staleness,
                        reason: error.to_string(),
                    });
                }
                return Ok(answer(&held, Some(age)));
            }
        };
        let renewed =
            renewed.ok_or_else(|| Error::Decode("a 304 for an answer not held".into()))?;
        let cached = answer(&renewed, None);
        self.held
            .lock()
            .expect("not poisoned")
            .insert(slot, renewed);
        Ok(cached)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceKey, Arc<Watched>>> {
        self.services.lock().expect("not poisoned")
    }

    /// The service's entry, its watch started if it is new.
    fn watched_for(&self, service: &ServiceKey) -> Arc<Watched> {
        let mut services = self.lock();
        if let Some(watched) = services.get(service) {
            return watched.clone();
        }
        let (tell, known) = watch::channel(Known::default());
        let watched = Arc::new_cyclic(|me: &std::sync::Weak<Watched>| Watched {
            known,
            last_used: Mutex::new(Instant::now()),
            task: tokio::spawn(keep_watching(
                self.client.clone(),
                self.options.clone(),
                service.clone(),
                tell,
                me.clone(),
                Arc::downgrade(&self.services),
            )),
        });
        services.insert(service.clone(), watched.clone());
        watched
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        for watched in self.lock().values() {
            watched.task.abort();
        }
    }
}

/// The version `asked` picks among `versions`, as the server picks it.
fn choose<'v>(versions: &'v [VersionState], asked: &Pick) -> Option<&'v VersionState> {
    match asked {
        Pick::Version(version) => versions.iter().find(|v| &v.version == version),
        Pick::Key(key) => pick::sticky(
            key,
            serving(versions).map(|v| (v, pick::version_seed(&v.version), v.weight)),
        ),
        Pick::Any => pick::weighted(rand::random(), || serving(versions).map(|v| (v, v.weight))),
    }
}

/// The versions resolve may pick without a version asked for.
fn serving(versions: &[VersionState]) -> impl Iterator<Item = &VersionState> {
    versions.iter().filter(|v| v.serves)
}

/// Watches `service` until it goes unused: each answer (a change, or the wait running
/// out) is its confirmed state; each failure is told, and the watch tried again after a
/// backoff.
async fn keep_watching(
    client: Client,
    options: ResolverOptions,
    service: ServiceKey,
    tell: watch::Sender<Known>,
    me: std::sync::Weak<Watched>,
    services: std::sync::Weak<Mutex<HashMap<ServiceKey, Arc<Watched>>>>,
) {
    let mut since = None;
    let mut failures = 0u32;
    loop {
        // After a failure, ask for the state as it is (answered at once) rather than
        // wait for the next change: the state held is confirmed as soon as the server is
        // back.
        let from = if failures > 0 { None } else { since };
        match client.watch(&service, from, options.watch_wait).await {
            Ok(state) => {
                failures = 0;
                since = Some(state.generation);
                tell.send_modify(|known| {
                    known.state = Some((Arc::new(state), Instant::now()));
                    known.failing = None;
                    known.watch_refused = false;
                });
            }
            Err(error) => {
                failures += 1;
                tracing::debug!(service = ?service, %error, failures, "watching a service failed");
                let refused = matches!(error.status(), Some(404 | 405 | 503));
                tell.send_modify(|known| {
                    known.failing = Some(error.to_string());
                    known.watch_refused = refused;
                });
                let (first, max) = options.retry;
                let wait = first.saturating_mul(1 << (failures - 1).min(16)).min(max);
                tokio::time::sleep(wait).await;
            }
        }
        let Some(watched) = me.upgrade() else { return };
        let idle = watched.last_used.lock().expect("not poisoned").elapsed() > options.idle_after;
        if idle {
            if let Some(services) = services.upgrade() {
                services.lock().expect("not poisoned").remove(&service);
            }
            return;
        }
    }
}
