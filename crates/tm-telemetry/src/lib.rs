//! Telemetry set-up. Logs go to stdout: one flat JSON object per line with
//! `TM_LOG_FORMAT=json` (the default outside `dev`), compact text otherwise; the level is
//! an `EnvFilter` directive. Lines are written by a thread of their own, off the request
//! path, a batch at a time, through a bounded buffer: when it is full a line is dropped
//! and counted ([`dropped_log_lines`]), never waited for (see [`writer`]). Spans are
//! exported over OTLP when an endpoint is configured (see [`trace`]).

mod metrics;
pub mod trace;
mod writer;

use std::sync::OnceLock;

pub use metrics::{
    BackupState, Metrics, PoolFigures, CONTENT_TYPE as METRICS_CONTENT_TYPE, OTHER_TENANT,
    UNMATCHED,
};
use tm_config::{LogConfig, LogFormat, TracingConfig};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};
use writer::{BatchWriter, WriterGuard};

/// The installed writer, which counts the lines it dropped, its buffer being full.
/// Logging is the process's, so this is too.
static INSTALLED: OnceLock<BatchWriter> = OnceLock::new();

/// Keeps the log writer's thread running and trace export going; dropping it exports the
/// spans still queued, then writes out the lines still buffered. Hold it for the life of
/// the process.
#[must_use = "dropping the guard stops the log writer and trace export"]
pub struct LogGuard {
    // Fields drop in order: the exporter's last words may still be logged.
    _tracing: trace::TracingGuard,
    _writer: WriterGuard,
}

/// The log layer of `format`, writing to `writer`.
fn log_layer<S>(format: LogFormat, writer: BatchWriter) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    match format {
        LogFormat::Json => Box::new(flat_json(writer)),
        LogFormat::Text => Box::new(
            tracing_subscriber::fmt::layer()
                .compact()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .with_writer(writer),
        ),
    }
}

/// Installs the global subscriber: logs as `config` says and, with `tracing` configured,
/// span export. Fails if the level directive cannot be parsed, the exporter cannot be
/// made or a subscriber is already installed.
pub fn init(config: &LogConfig, tracing: Option<&TracingConfig>) -> Result<LogGuard, String> {
    let filter = EnvFilter::try_new(&config.level).map_err(|e| format!("TM_LOG_LEVEL: {e}"))?;
    let (writer, guard) = BatchWriter::new(std::io::stdout(), config.buffer_lines)
        .map_err(|e| format!("starting the log writer: {e}"))?;
    let installed = writer.clone();
    let format = config.format;
    let (result, tracing_guard) = match tracing {
        // Without export the filter stays global: a span or event the log does not want
        // is not even made.
        None => (
            tracing_subscriber::registry()
                .with(filter)
                .with(log_layer(format, writer))
                .try_init(),
            trace::off(),
        ),
        Some(tracing) => {
            let (tracer, tracing_guard) = trace::install(tracing)?;
            let spans = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(exported());
            (
                tracing_subscriber::registry()
                    .with(log_layer(format, writer).with_filter(filter))
                    .with(spans)
                    .try_init(),
                tracing_guard,
            )
        }
    };
    result.map_err(|e| format!("logging: {e}"))?;
    let _ = INSTALLED.set(installed);
    Ok(LogGuard {
        _tracing: tracing_guard,
        _writer: guard,
    })
}

/// What is exported: request and job spans and, within them, the spans of the project's
/// own crates down to `debug` (store calls, Redis commands), whatever the log level; no
/// events, no other crate's spans, no span outside a request or a job.
fn exported<S>() -> impl tracing_subscriber::layer::Filter<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::filter::dynamic_filter_fn(
        |metadata: &tracing::Metadata<'_>, cx: &tracing_subscriber::layer::Context<'_, S>| {
            is_root(metadata) || cx.lookup_current().is_some()
        },
    )
    .with_callsite_filter(|metadata| {
        let wanted = metadata.is_span()
            && metadata.target().starts_with("tm_")
            && *metadata.level() <= tracing::Level::DEBUG;
        if !wanted {
            tracing::subscriber::Interest::never()
        } else if is_root(metadata) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::sometimes()
        }
    })
}

/// A span that is exported even without an exported span around it.
fn is_root(metadata: &tracing::Metadata<'_>) -> bool {
    matches!(metadata.name(), trace::REQUEST_SPAN | trace::JOB_SPAN)
}

/// One JSON object per line: the event's fields and those of the spans it happened in,
/// all at the top level, each once (the innermost span's value wins).
fn flat_json<S, W>(writer: W) -> json_subscriber::fmt::Layer<S, W>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    json_subscriber::fmt::layer()
        .with_writer(writer)
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .flatten_span_list_on_top_level(true)
}

/// Log lines dropped so far because the writer could not keep up.
pub fn dropped_log_lines() -> u64 {
    INSTALLED.get().map_or(0, BatchWriter::dropped)
}

/// Logs to the test harness's captured output; safe to call from every test.
pub fn init_for_tests() {
    let filter = EnvFilter::try_from_env("TM_TEST_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a subscriber writes, kept for the test to read.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_json_line_is_flat_and_names_each_field_once() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry().with(flat_json(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("request", request_id = "r-1", tenant = "acme");
            let _outer = outer.enter();
            let inner = tracing::info_span!("store", tenant = "globex", table = "routes");
            let _inner = inner.enter();
            tracing::info!(status = 200, "answered");
        });
        let bytes = captured.0.lock().expect("not poisoned").clone();
        let text = String::from_utf8(bytes).expect("text");
        assert_eq!(text.lines().count(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");
        let object = line.as_object().expect("an object");
        assert_eq!(object["message"], "answered");
        assert_eq!(object["status"], 200);
        assert_eq!(object["request_id"], "r-1");
        assert_eq!(object["table"], "routes");
        // The innermost span's value, once: no nested span copies.
        assert_eq!(object["tenant"], "globex");
        assert!(!object.contains_key("span"), "{text}");
        assert!(!object.contains_key("spans"), "{text}");
        assert_eq!(text.matches("\"tenant\"").count(), 1, "{text}");
    }
}
