//! The outbox relays: each hands the outbox's events on to one sink (Kafka; webhooks),
//! in commit order, at least once. A relay is a job of its own kind (`relay.<sink>`),
//! scheduled every second under a dedup key, so that one relay per sink runs in the
//! whole fleet; it works for a slice of time, then ends and the next one takes over
//! where the sink's cursor in the store says.
//!
//! Within a slice the relay reads a batch after the cursor, hands it on, and only then
//! moves the cursor (compare and set: a relay that lost its lease to another cannot
//! move it back). A sink that fails is tried again with backoff and full jitter, within
//! the slice and in the next one: events are never dropped nor skipped, only delayed,
//! and the order of one route's events is kept because a batch is handed on whole
//! before the next is read. A relay holds no database connection while the sink works.
//! When the outbox is drained the relay waits for a write (this process's, or one
//! another instance notified) or the poll interval.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tm_http::Relays;
use tm_store::{ClaimedJob, EventFilter, Store, StoreError, StoredEvent};
use tm_telemetry::trace::TraceContext;
use tm_telemetry::Metrics;
use tokio_util::sync::CancellationToken;

use super::jobs::{backoff, Handler, JobError};

/// Events read and handed on at once.
const BATCH: u32 = 500;

/// The retry delays of a failing sink: a random delay up to this base, doubled per
/// failure in a row, at most the maximum.
const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How often relays are scheduled: how long a sink may go without one after a relay
/// ends.
pub(crate) const RELAY_EVERY: Duration = Duration::from_secs(1);

/// Where a relay hands events on.
pub(crate) trait Sink: Send + Sync + 'static {
    /// The `sink` label of the event metrics, and the cursor's name.
    fn name(&self) -> &'static str;

    /// Whether the relay counts the events it hands on in `events_published_total` and
    /// `events_failed_total` (a sink whose hand-on is not the delivery counts them
    /// itself).
    fn counted_by_relay(&self) -> bool {
        true
    }

    /// Hands `events` on, in order, each in the trace it was written in; an error says
    /// why none or only some were (the relay hands the whole batch on again).
    fn publish<'a>(&'a self, events: &'a [StoredEvent]) -> BoxFuture<'a, Result<(), String>>;
}

impl Sink for tm_kafka::KafkaSink {
    fn name(&self) -> &'static str {
        "kafka"
    }

    /// Each record carries the trace context of the write that made its event, as
    /// OpenTelemetry's messaging conventions have it (the creation context).
    fn publish<'a>(&'a self, events: &'a [StoredEvent]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let traces: Vec<Vec<(&'static str, String)>> = events
                .iter()
                .map(|e| {
                    e.trace
                        .as_ref()
                        .map(TraceContext::headers)
                        .unwrap_or_default()
                })
                .collect();
            let outgoing: Vec<tm_kafka::Outgoing<'_>> = events
                .iter()
                .zip(&traces)
                .map(|(e, trace)| tm_kafka::Outgoing {
                    event: &e.event,
                    trace,
                })
                .collect();
            tm_kafka::KafkaSink::publish(self, &outgoing)
                .await
                .map_err(|err| tm_http::error_chain(&err))
        })
    }
}

/// The job kind of the relay to `sink`.
pub(crate) fn relay_kind(sink: &str) -> &'static str {
    match sink {
        "kafka" => "relay.kafka",
        "webhook" => "relay.webhook",
        _ => "relay.other",
    }
}

/// The relay to one sink: the handler of its job kind.
pub(crate) struct Relay {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    relays: Arc<Relays>,
    sink: Arc<dyn Sink>,
    /// How long one job of it works.
    slice: Duration,
    /// How often a drained relay looks again without being woken.
    poll: Duration,
    /// Cancelled when the process stops: the relay ends its slice early.
    stopping: CancellationToken,
}

impl Relay {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        relays: Arc<Relays>,
        sink: Arc<dyn Sink>,
        timing: (Duration, Duration),
        stopping: CancellationToken,
    ) -> Self {
        let (slice, poll) = timing;
        Self {
            store,
            metrics,
            relays,
            sink,
            slice,
            poll,
            stopping,
        }
    }

    fn count(&self, events: &[StoredEvent], count: impl Fn(&Metrics, &str, &str, u64)) {
        if !self.sink.counted_by_relay() {
            return;
        }
        let mut by_type: BTreeMap<&str, u64> = BTreeMap::new();
        for stored in events {
            *by_type.entry(stored.event.kind.as_str()).or_default() += 1;
        }
        for (kind, n) in by_type {
            count(&self.metrics, self.sink.name(), kind, n);
        }
    }

    /// One slice: relays until it ends, the process stops, or another relay moved the
    /// cursor.
    async fn relay(&self) -> Result<(), JobError> {
        let sink = self.sink.name();
        let store_failed =
            |err: StoreError| JobError::Transient(format!("the outbox is out of reach: {err}"));
        let ends = Instant::now() + self.slice;
        let mut written = self.relays.watch_written();
        written.borrow_and_update();
        let all = EventFilter {
            tenant: None,
            key_events: true,
        };
        let mut cursor = self.store.outbox_cursor(sink).await.map_err(store_failed)?;
        let mut failures = 0;
        while Instant::now() < ends && !self.stopping.is_cancelled() {
            let batch = self
                .store
                .events_after(&all, cursor, BATCH)
                .await
                .map_err(store_failed)?;
            let Some(last) = batch.last().map(|e| e.position) else {
                let wait = self
                    .poll
                    .min(ends.saturating_duration_since(Instant::now()));
                tokio::select! {
                    _ = written.changed() => {}
                    () = tokio::time::sleep(wait) => {}
                    () = self.stopping.cancelled() => {}
                }
                continue;
            };
            if let Err(error) = self.sink.publish(&batch).await {
                failures += 1;
                self.count(&batch, Metrics::events_failed);
                tracing::warn!(sink, events = batch.len(), failures, error = %error, "handing events on failed; trying again");
                self.relays.set_outcome(sink, Some(error));
                let wait = backoff(failures, RETRY_BASE, RETRY_MAX)
                    .min(ends.saturating_duration_since(Instant::now()));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = self.stopping.cancelled() => {}
                }
                continue;
            }
            if failures > 0 {
                tracing::info!(sink, failures, "events are handed on again");
                failures = 0;
            }
            self.relays.set_outcome(sink, None);
            self.count(&batch, Metrics::events_published);
            if !self
                .store
                .advance_outbox_cursor(sink, cursor, last)
                .await
                .map_err(store_failed)?
            {
                tracing::info!(sink, "another relay moved the cursor; this one ends");
                return Ok(());
            }
            cursor = last;
        }
        Ok(())
    }
}

impl Handler for Relay {
    fn run<'a>(&'a self, _job: &'a ClaimedJob) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(self.relay())
    }
}

/// Samples how far each sink lags: the age of the oldest event it has yet to take.
pub(crate) async fn sample_lag(store: &dyn Store, relays: &Relays, metrics: &Metrics) {
    let all = EventFilter {
        tenant: None,
        key_events: true,
    };
    for sink in relays.sinks() {
        let lag = async {
            let cursor = store.outbox_cursor(sink).await?;
            let next = store.events_after(&all, cursor, 1).await?;
            Ok::<f64, StoreError>(next.first().map_or(0.0, |e| {
                (tm_domain::now() - e.event.time)
                    .to_std()
                    .unwrap_or_default()
                    .as_secs_f64()
            }))
        };
        match lag.await {
            Ok(seconds) => {
                metrics.set_outbox_lag(sink, seconds);
                relays.set_lag(sink, seconds);
            }
            Err(err) => tracing::debug!(sink, error = %err, "sampling the outbox lag failed"),
        }
    }
}
