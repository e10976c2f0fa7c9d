//! How the relays of change events (to Kafka, to webhooks) are doing, as this process
//! sees them: how far each sink lags behind the outbox (sampled from the store, so every
//! process knows it) and whether this process's last attempt to hand events on to it
//! failed. The readiness probe's `events` check reports it; a sink in trouble makes the
//! instance degraded, never unready: writes go on, and their events wait in the outbox.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::watch;

/// A sink whose oldest waiting event is older than this is reported degraded.
pub const LAG_DEGRADED: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Default)]
struct SinkState {
    lag_seconds: Option<f64>,
    /// The last attempt's error, if it failed.
    error: Option<String>,
}

/// The relays' state, and the signal that wakes them when events are written.
pub struct Relays {
    sinks: Mutex<Vec<(&'static str, SinkState)>>,
    written: watch::Sender<()>,
}

impl Relays {
    /// For the configured `sinks`.
    pub fn new(sinks: &[&'static str]) -> Self {
        Self {
            sinks: Mutex::new(sinks.iter().map(|s| (*s, SinkState::default())).collect()),
            written: watch::Sender::new(()),
        }
    }

    /// The configured sinks.
    pub fn sinks(&self) -> Vec<&'static str> {
        self.lock().iter().map(|(sink, _)| *sink).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(&'static str, SinkState)>> {
        self.sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, sink: &str, change: impl FnOnce(&mut SinkState)) {
        if let Some((_, state)) = self.lock().iter_mut().find(|(s, _)| *s == sink) {
            change(state);
        }
    }

    /// The sampled age of the oldest event `sink` has yet to take.
    pub fn set_lag(&self, sink: &str, seconds: f64) {
        self.update(sink, |s| s.lag_seconds = Some(seconds));
    }

    /// This process's last hand-on to `sink` succeeded (`None`) or failed.
    pub fn set_outcome(&self, sink: &str, error: Option<String>) {
        self.update(sink, |s| s.error = error);
    }

    /// Events were just written (here, or elsewhere as a notification said).
    pub fn written(&self) {
        self.written.send_modify(|()| {});
    }

    /// Changes whenever [`Relays::written`] is called.
    pub fn watch_written(&self) -> watch::Receiver<()> {
        self.written.subscribe()
    }

    /// The `events` check: `None` with no sink configured; else whether all is well,
    /// and what to show.
    pub(crate) fn check(&self) -> Option<(bool, Value)> {
        let sinks = self.lock();
        if sinks.is_empty() {
            return None;
        }
        let mut healthy = true;
        let mut shown = Map::new();
        for (sink, state) in sinks.iter() {
            let lagging = state
                .lag_seconds
                .is_some_and(|lag| lag > LAG_DEGRADED.as_secs_f64());
            let ok = state.error.is_none() && !lagging;
            healthy &= ok;
            let message = match (&state.error, lagging) {
                (Some(_), _) => "events are not reaching this sink; they wait in the outbox",
                (None, true) => "this sink is behind the outbox",
                (None, false) => "events flow",
            };
            shown.insert(
                (*sink).to_owned(),
                json!({
                    "status": if ok { "healthy" } else { "degraded" },
                    "message": message,
                    "lag_seconds": state.lag_seconds,
                    "error": state.error,
                }),
            );
        }
        let mut check = json!({ "status": if healthy { "healthy" } else { "degraded" } });
        check["sinks"] = Value::Object(shown);
        Some((healthy, check))
    }
}
