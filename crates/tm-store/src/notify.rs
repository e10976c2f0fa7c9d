//! Change notifications between instances: PostgreSQL's LISTEN/NOTIFY. Triggers on the
//! audit log and on the keys notify `traffic_manager_changes` when a change commits
//! (see the migration for the payloads); every instance listens and applies the change
//! at once. Notifications are a shortcut, not the record: one lost while a listener
//! reconnects is made up by the periodic catch-up, which reads the change feed itself.

use chrono::{DateTime, Utc};
use futures::FutureExt;
use sqlx::postgres::PgListener;
use tm_domain::{EnvName, GroupKey, ServiceName, TenantId};

use crate::StoreError;

/// The channel the migrations' triggers notify.
pub(crate) const CHANNEL: &str = "traffic_manager_changes";

/// Services named by more notifications than this at once are left to the change feed.
const MAX_NAMED: usize = 10_000;

/// What changed, as far as the notifications received say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// Services changed, with when each change was made.
    pub services: Vec<(GroupKey, DateTime<Utc>)>,
    /// Route changes that must be read from the change feed (too many to name, or
    /// notifications that may have been missed).
    pub feed: bool,
    pub keys: bool,
}

impl Changed {
    /// Everything: what to assume when notifications may have been missed.
    pub fn all() -> Changed {
        Changed {
            services: Vec::new(),
            feed: true,
            keys: true,
        }
    }
}

/// A live subscription to change notifications.
pub struct ChangeSubscription {
    listener: PgListener,
    schema: String,
    /// This instance's name in the notifications of its own writes.
    instance: String,
}

impl ChangeSubscription {
    pub(crate) fn new(listener: PgListener, schema: String, instance: String) -> Self {
        Self {
            listener,
            schema,
            instance,
        }
    }

    /// Waits for the next notification, then takes every one already waiting, so that
    /// a burst of writes elsewhere is applied here together. After the connection was
    /// lost and made again (notifications may have been missed), says everything changed.
    pub async fn next(&mut self) -> Result<Changed, StoreError> {
        let mut changed = Changed::default();
        let mut first = true;
        loop {
            let received = if first {
                self.listener.try_recv().await?
            } else {
                match self.listener.try_recv().now_or_never() {
                    Some(received) => received?,
                    None => return Ok(changed),
                }
            };
            first = false;
            let Some(notification) = received else {
                return Ok(Changed::all());
            };
            let mut parts = notification.payload().split(' ');
            if parts.next() != Some(self.schema.as_str()) {
                continue;
            }
            match parts.next() {
                Some("keys") => changed.keys = true,
                Some("routes") => match service_of(&mut parts) {
                    // A write of this instance: applied before it was acknowledged.
                    Some(_) if parts.next() == Some(self.instance.as_str()) => {}
                    Some(named) if changed.services.len() < MAX_NAMED => {
                        changed.services.push(named)
                    }
                    _ => changed.feed = true,
                },
                _ => {}
            }
        }
    }
}

/// `<tenant> <service> <env> <micros>` of a route notification.
fn service_of<'a>(parts: &mut impl Iterator<Item = &'a str>) -> Option<(GroupKey, DateTime<Utc>)> {
    let key = GroupKey {
        tenant: TenantId::parse(parts.next()?).ok()?,
        service: ServiceName::parse(parts.next()?).ok()?,
        env: EnvName::parse(parts.next()?).ok()?,
    };
    let made_at = DateTime::from_timestamp_micros(parts.next()?.parse().ok()?)?;
    Some((key, made_at))
}
