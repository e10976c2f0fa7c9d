//! Webhooks as jobs. The relay to the `webhook` sink fans each event out into one
//! `webhook.deliver` job per subscription that wants it (deduplicated by subscription
//! and event); each delivery job POSTs the event, signed, and is retried with the
//! queue's backoff until the receiver takes it, or goes to the dead-letter queue when it
//! refuses for good. `secrets.reseal` seals again, under the current key, the secrets
//! sealed under an older one (key rotation).

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tm_domain::{TenantId, WebhookId};
use tm_secrets::SecretKeys;
use tm_store::{ClaimedJob, NewJob, Queue, Store, StoredEvent};
use tm_telemetry::trace::TraceContext;
use tm_telemetry::Metrics;
use tm_webhooks::Deliverer;
use tracing::Instrument;

use super::jobs::{Handler, JobError};
use super::relay::Sink;

/// The kind of a delivery job.
pub(crate) const DELIVER: &str = "webhook.deliver";

/// The kind of the re-sealing job.
pub(crate) const RESEAL: &str = "secrets.reseal";

/// A delivery job's payload: the subscription, the event as it is delivered (so that
/// the delivery outlives the event's retention in the outbox) and the trace context of
/// the write that made it, which the delivery continues.
#[derive(Serialize, Deserialize)]
struct Delivery {
    webhook: WebhookId,
    event: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<TraceContext>,
}

/// The `webhook` sink: turns events into delivery jobs.
pub(crate) struct FanOut {
    store: Arc<dyn Store>,
    max_attempts: u32,
    /// This process's job runner, woken when deliveries are queued.
    wake_runner: Arc<tokio::sync::Notify>,
}

impl FanOut {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        max_attempts: u32,
        wake_runner: Arc<tokio::sync::Notify>,
    ) -> Self {
        Self {
            store,
            max_attempts,
            wake_runner,
        }
    }

    async fn fan_out(&self, events: &[StoredEvent]) -> Result<(), String> {
        let tenants: BTreeSet<&TenantId> = events
            .iter()
            .filter_map(|e| e.event.tenant.as_ref())
            .collect();
        let tenants: Vec<&TenantId> = tenants.into_iter().collect();
        let hooks = self
            .store
            .webhooks_of(&tenants)
            .await
            .map_err(|err| format!("reading the subscriptions failed: {err}"))?;
        for StoredEvent { event, trace, .. } in events {
            for hook in hooks.iter().filter(|h| h.wants(event)) {
                let payload = Delivery {
                    webhook: hook.id,
                    event: serde_json::to_value(event).expect("an event serializes"),
                    trace: trace.clone(),
                };
                let job = NewJob {
                    queue: Queue::Default,
                    kind: DELIVER.into(),
                    payload: serde_json::to_value(payload).expect("a delivery serializes"),
                    dedup_key: Some(format!("webhook:{}:{}", hook.id, event.id)),
                    tenant: Some(hook.tenant.clone()),
                    max_attempts: self.max_attempts,
                    run_at: tm_domain::now(),
                };
                // `false`: the same delivery is queued already (a batch handed on again).
                if self
                    .store
                    .enqueue(&job)
                    .await
                    .map_err(|err| format!("queueing a delivery failed: {err}"))?
                {
                    self.wake_runner.notify_one();
                }
            }
        }
        Ok(())
    }
}

impl Sink for FanOut {
    fn name(&self) -> &'static str {
        "webhook"
    }

    /// Deliveries are counted by the delivery jobs, not here.
    fn counted_by_relay(&self) -> bool {
        false
    }

    fn publish<'a>(&'a self, events: &'a [StoredEvent]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.fan_out(events))
    }
}

/// Runs `webhook.deliver` jobs.
pub(crate) struct Deliver {
    store: Arc<dyn Store>,
    keys: Arc<SecretKeys>,
    client: Deliverer,
    metrics: Arc<Metrics>,
}

impl Deliver {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        keys: Arc<SecretKeys>,
        client: Deliverer,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            keys,
            client,
            metrics,
        }
    }

    async fn deliver(&self, job: &ClaimedJob) -> Result<(), JobError> {
        let delivery: Delivery = serde_json::from_value(job.payload.clone())
            .map_err(|err| JobError::Permanent(format!("not a delivery: {err}")))?;
        let kind = delivery.event["type"]
            .as_str()
            .unwrap_or("other")
            .to_owned();
        let id = delivery.event["id"]
            .as_str()
            .ok_or_else(|| JobError::Permanent("the event has no id".into()))?
            .to_owned();
        // A short read; no connection is held past it.
        let record = self
            .store
            .get_webhook(delivery.webhook)
            .await
            .map_err(|err| {
                JobError::Transient(format!("reading the subscription failed: {err}"))
            })?;
        let Some(record) = record else {
            tracing::debug!(webhook.id = %delivery.webhook, "subscription deleted; delivery dropped");
            return Ok(());
        };
        let secret = self
            .keys
            .open(
                &record.sealed_secret,
                delivery.webhook.to_string().as_bytes(),
            )
            .map_err(|err| {
                JobError::Permanent(format!("the signing secret cannot be opened: {err}"))
            })?;
        let secret = String::from_utf8(secret)
            .ok()
            .and_then(|s| tm_webhooks::secret_bytes(&s).ok())
            .ok_or_else(|| JobError::Permanent("the signing secret is malformed".into()))?;
        let url = url::Url::parse(&record.webhook.url)
            .map_err(|err| JobError::Permanent(format!("the stored URL is invalid: {err}")))?;
        let body = serde_json::to_vec(&delivery.event).expect("JSON serializes");
        // The request is sent from a span in the write's trace (linked to the job's), so
        // that the receiver continues the trace of the change it is told about.
        let sending = tracing::debug_span!(
            "webhook.send",
            otel.kind = "client",
            webhook.id = %delivery.webhook,
            event.id = %id,
        );
        if let Some(trace) = &delivery.trace {
            trace.continue_in(&sending);
        }
        let sent = async {
            let trace = tm_telemetry::trace::propagation();
            self.client.deliver(&url, &id, &secret, body, &trace).await
        }
        .instrument(sending)
        .await;
        match sent {
            Ok(delivered) => {
                self.metrics.events_published("webhook", &kind, 1);
                tracing::debug!(webhook.id = %delivery.webhook, event.id = %id, status = delivered.status, "webhook delivered");
                Ok(())
            }
            Err(err) => {
                self.metrics.events_failed("webhook", &kind, 1);
                let why = format!("delivering to {}: {err}", record.webhook.url);
                Err(if err.is_permanent() {
                    JobError::Permanent(why)
                } else {
                    JobError::Transient(why)
                })
            }
        }
    }
}

impl Handler for Deliver {
    fn run<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(self.deliver(job))
    }
}

/// Runs `secrets.reseal`: every secret sealed under a key other than the current one is
/// opened and sealed again under the current one, so that the old key can be dropped.
pub(crate) struct Reseal {
    store: Arc<dyn Store>,
    keys: Arc<SecretKeys>,
}

impl Reseal {
    pub(crate) fn new(store: Arc<dyn Store>, keys: Arc<SecretKeys>) -> Self {
        Self { store, keys }
    }

    async fn reseal(&self) -> Result<(), JobError> {
        let failed =
            |err: tm_store::StoreError| JobError::Transient(format!("re-sealing failed: {err}"));
        let sealed = self.store.sealed_webhook_secrets().await.map_err(failed)?;
        let mut resealed = 0;
        for (id, old) in sealed.iter().filter(|(_, s)| !self.keys.is_current(s)) {
            let context = id.to_string();
            let secret = match self.keys.open(old, context.as_bytes()) {
                Ok(secret) => secret,
                Err(err) => {
                    tracing::error!(webhook.id = %id, error = %err, "a webhook secret cannot be opened with the configured keys");
                    continue;
                }
            };
            let new = self.keys.seal(&secret, context.as_bytes());
            if self
                .store
                .reseal_webhook_secret(*id, old, &new)
                .await
                .map_err(failed)?
            {
                resealed += 1;
            }
        }
        if resealed > 0 {
            tracing::info!(
                resealed,
                key = self.keys.current_id(),
                "webhook secrets sealed under the current key"
            );
        }
        Ok(())
    }
}

impl Handler for Reseal {
    fn run<'a>(&'a self, _job: &'a ClaimedJob) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(self.reseal())
    }
}
