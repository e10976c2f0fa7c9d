//! Distributed tracing: the W3C `traceparent` format, and the export of the `tracing`
//! spans the code makes as OpenTelemetry spans over OTLP when an endpoint is configured.
//!
//! Spans are sampled by the configured sampler when they start, batched on the exporter's
//! own thread through a bounded queue (a full queue drops spans, never waits) and flushed
//! when the [`TracingGuard`] is dropped. Exported: the request span (as a server span
//! named `<method> <route>`) and the job span, and within them the spans of the project's
//! crates down to `debug` (store calls, Redis commands); never log events, nor the store
//! calls of the background loops (which would each be a trace of their own).
//!
//! A request's trace id is chosen before its span exists (from its `traceparent`, else at
//! random) so that its log lines name it whether or not tracing is on; [`adopt`] makes the
//! span's trace that one.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{
    SamplingDecision, SpanBuilder, SpanContext, SpanKind, TraceContextExt, TraceFlags, TraceId,
    TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, ShouldSample,
};
use secrecy::ExposeSecret;
use tm_config::{RootSampler, TraceSampler, TracingConfig};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The name of the span every request gets; exported as a server span.
pub const REQUEST_SPAN: &str = "request";

/// The name of the span of a job's attempt.
pub const JOB_SPAN: &str = "job";

/// Spans waiting for export beyond which new ones are dropped.
const MAX_QUEUE: usize = 8192;

/// Tracing as installed: the sampler, consulted ahead of a span on the resolve fast path.
/// The subscriber is the process's, so this is too.
static INSTALLED: OnceLock<Installed> = OnceLock::new();

struct Installed {
    sampler: Sampler,
}

/// A valid W3C `traceparent`: `00-<trace id>-<parent span id>-<flags>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub flags: u8,
}

impl TraceParent {
    /// Reads a `traceparent` value: lower-case hex, neither id all zeros, version `ff`
    /// refused, and nothing after the flags in version `00`.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let valid = hex(version, 2)
            && version != "ff"
            && hex(trace, 32)
            && hex(parent, 16)
            && hex(flags, 2)
            && (version != "00" || parts.next().is_none());
        if !valid {
            return None;
        }
        let parsed = Self {
            trace_id: u128::from_str_radix(trace, 16).ok()?,
            span_id: u64::from_str_radix(parent, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (parsed.trace_id != 0 && parsed.span_id != 0).then_some(parsed)
    }

    fn sampled(self) -> bool {
        self.flags & 1 == 1
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// Where a request's trace comes from: the caller's span (its `traceparent` and
/// `tracestate`) or, with none, a trace that starts here under a chosen id.
#[derive(Clone, Debug)]
pub struct Origin<'a> {
    pub trace_id: u128,
    pub parent: Option<TraceParent>,
    pub tracestate: Option<&'a str>,
}

impl Origin<'_> {
    /// The OpenTelemetry context a span of this origin starts in.
    fn context(&self) -> Context {
        match self.parent {
            Some(parent) => {
                let state = self
                    .tracestate
                    .and_then(|raw| raw.parse::<TraceState>().ok())
                    .unwrap_or_default();
                let remote = SpanContext::new(
                    TraceId::from(parent.trace_id),
                    opentelemetry::trace::SpanId::from(parent.span_id),
                    TraceFlags::new(parent.flags),
                    true,
                    state,
                );
                Context::new().with_remote_span_context(remote)
            }
            None => Context::new().with_value(RootTraceId(TraceId::from(self.trace_id))),
        }
    }
}

/// The trace id a span without a parent is to take (see [`Tracer`]).
struct RootTraceId(TraceId);

/// Whether spans are exported at all.
pub fn enabled() -> bool {
    INSTALLED.get().is_some()
}

/// Whether a request of `origin` would be recorded: the configured sampler's decision,
/// the very one its span will get. `false` when tracing is off.
pub fn samples(origin: &Origin<'_>) -> bool {
    let Some(installed) = INSTALLED.get() else {
        return false;
    };
    // A caller's decision needs no context built to be followed.
    if let (Some(parent), Sampler::ParentBased(_)) = (origin.parent, &installed.sampler) {
        return parent.sampled();
    }
    // A trace that starts here is decided on its id alone: no context to build.
    let context = match origin.parent {
        Some(_) => origin.context(),
        None => Context::new(),
    };
    let result = installed.sampler.should_sample(
        Some(&context),
        TraceId::from(origin.trace_id),
        REQUEST_SPAN,
        &SpanKind::Server,
        &[],
        &[],
    );
    result.decision == SamplingDecision::RecordAndSample
}

/// Puts `span` (new, not yet entered) in the trace `origin` names; returns its
/// `traceparent` if it is recorded, `None` if it is not or tracing is off.
pub fn adopt(span: &tracing::Span, origin: &Origin<'_>) -> Option<TraceParent> {
    if !enabled() || span.is_disabled() {
        return None;
    }
    span.set_parent(origin.context()).ok()?;
    traceparent_of_context(&span.context()).filter(|parent| parent.sampled())
}

/// A span's W3C trace context as it is sent on: its `traceparent` and, when the trace
/// has one, its `tracestate`. Kept with what a span hands on for later (an event in the
/// outbox), so that whoever sends it on continues the trace it was made in.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceContext {
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The context of the current span when tracing is on; `None` otherwise (or when the
    /// current span is not traced).
    pub fn current() -> Option<Self> {
        if !enabled() {
            return None;
        }
        let context = tracing::Span::current().context();
        let parent = traceparent_of_context(&context)?;
        let state = context.span().span_context().trace_state().header();
        Some(Self {
            traceparent: parent.to_string(),
            tracestate: (!state.is_empty()).then_some(state),
        })
    }

    /// As request headers (or Kafka record headers).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![("traceparent", self.traceparent.clone())];
        if let Some(state) = &self.tracestate {
            headers.push(("tracestate", state.clone()));
        }
        headers
    }

    /// Puts `span` (new, not yet entered) in this trace, under the span that kept it, and
    /// links it to the span current now (the one that took it up, such as a job's), so
    /// that both traces lead to it. Nothing when tracing is off or the context is not
    /// valid.
    pub fn continue_in(&self, span: &tracing::Span) {
        if !enabled() || span.is_disabled() {
            return;
        }
        let Some(parent) = TraceParent::parse(&self.traceparent) else {
            return;
        };
        let origin = Origin {
            trace_id: parent.trace_id,
            parent: Some(parent),
            tracestate: self.tracestate.as_deref(),
        };
        let taken_up_by = tracing::Span::current().context();
        if span.set_parent(origin.context()).is_ok() {
            let taken_up_by = taken_up_by.span().span_context().clone();
            if taken_up_by.is_valid() {
                span.add_link(taken_up_by);
            }
        }
    }
}

/// The trace context headers of the current span when tracing is on, for a request this
/// process makes to carry; empty otherwise.
pub fn propagation() -> Vec<(&'static str, String)> {
    TraceContext::current()
        .map(|context| context.headers())
        .unwrap_or_default()
}

fn traceparent_of_context(context: &Context) -> Option<TraceParent> {
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| TraceParent {
        trace_id: u128::from_be_bytes(span_context.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(span_context.span_id().to_bytes()),
        flags: span_context.trace_flags().to_u8(),
    })
}

/// The SDK's tracer, with what this process adds as a span starts: a root span takes the
/// trace id chosen for it, and the request span is a server span named after its route.
#[derive(Clone, Debug)]
pub(crate) struct Tracer(SdkTracer);

impl opentelemetry::trace::Tracer for Tracer {
    type Span = opentelemetry_sdk::trace::Span;

    fn build_with_context(&self, mut builder: SpanBuilder, parent: &Context) -> Self::Span {
        if !parent.has_active_span() {
            if let Some(RootTraceId(id)) = parent.get::<RootTraceId>() {
                builder.trace_id = Some(*id);
            }
        }
        if builder.name == REQUEST_SPAN {
            server_span(&mut builder);
        }
        self.0.build_with_context(builder, parent)
    }
}

/// The request span as OpenTelemetry's HTTP conventions have it: kind server, named
/// `<method> <route>`, with `http.request.method` and `http.route`.
fn server_span(builder: &mut SpanBuilder) {
    builder.span_kind = Some(SpanKind::Server);
    let Some(attributes) = builder.attributes.as_mut() else {
        return;
    };
    let value = |key: &str| {
        attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.as_str().into_owned())
    };
    let (method, route) = (value("method"), value("route"));
    if let (Some(method), Some(route)) = (method, route) {
        builder.name = format!("{method} {route}").into();
        attributes.push(KeyValue::new("http.request.method", method));
        attributes.push(KeyValue::new("http.route", route));
    }
}

/// Flushes the spans still queued when dropped; hold it for the life of the process.
#[must_use = "dropping the guard stops trace export"]
pub struct TracingGuard(Option<SdkTracerProvider>);

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            if let Err(err) = provider.shutdown_with_timeout(Duration::from_secs(5)) {
                eprintln!("traffic-manager: exporting the last spans: {err}");
            }
        }
    }
}

/// The exporter, batcher and sampler `config` describes, installed for [`samples`] and
/// [`adopt`]; the tracer for the subscriber's OpenTelemetry layer.
pub(crate) fn install(config: &TracingConfig) -> Result<(Tracer, TracingGuard), String> {
    let headers: HashMap<String, String> = config
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.expose_secret().to_owned()))
        .collect();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(config.endpoint.clone())
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_timeout(Duration::from_secs(10))
        .with_headers(headers)
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(MAX_QUEUE)
                .with_max_export_batch_size(512)
                .with_scheduled_delay(Duration::from_secs(1))
                .build(),
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone()))
                .chain([KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))]),
        )
        .build();
    let sampler = sampler(config.sampler);
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_sampler(sampler.clone())
        .with_resource(resource)
        .build();
    let tracer = Tracer(provider.tracer("traffic-manager"));
    INSTALLED
        .set(Installed { sampler })
        .map_err(|_| "tracing is installed already".to_owned())?;
    Ok((tracer, TracingGuard(Some(provider))))
}

fn sampler(configured: TraceSampler) -> Sampler {
    let root = |root: RootSampler| match root {
        RootSampler::AlwaysOn => Sampler::AlwaysOn,
        RootSampler::AlwaysOff => Sampler::AlwaysOff,
        RootSampler::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
    };
    match configured {
        TraceSampler::AlwaysOn => Sampler::AlwaysOn,
        TraceSampler::AlwaysOff => Sampler::AlwaysOff,
        TraceSampler::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
        TraceSampler::ParentBased(inner) => Sampler::ParentBased(Box::new(root(inner))),
    }
}

/// A guard that flushes nothing: tracing is off.
pub(crate) fn off() -> TracingGuard {
    TracingGuard(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_only_when_valid_and_written_back_the_same() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(valid).expect("valid");
        assert_eq!(parsed.trace_id, 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
        assert_eq!(parsed.span_id, 0x00f0_67aa_0ba9_02b7);
        assert!(parsed.sampled());
        assert_eq!(parsed.to_string(), valid);
        // A later version may add fields.
        assert!(TraceParent::parse(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra"
        )
        .is_some());
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
            "",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn with_tracing_off_nothing_is_sampled_adopted_or_propagated() {
        let origin = Origin {
            trace_id: 7,
            parent: TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            tracestate: None,
        };
        assert!(!enabled());
        assert!(!samples(&origin));
        assert!(adopt(&tracing::info_span!("request"), &origin).is_none());
        assert!(propagation().is_empty());
    }

    #[test]
    fn the_configured_sampler_is_the_sdks() {
        let parent_based = sampler(TraceSampler::ParentBased(RootSampler::Ratio(0.0)));
        let decide = |origin: &Origin<'_>| {
            parent_based
                .should_sample(
                    Some(&origin.context()),
                    TraceId::from(origin.trace_id),
                    REQUEST_SPAN,
                    &SpanKind::Server,
                    &[],
                    &[],
                )
                .decision
        };
        let sampled_parent = Origin {
            trace_id: 1,
            parent: TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            tracestate: Some("vendor=abc"),
        };
        assert_eq!(decide(&sampled_parent), SamplingDecision::RecordAndSample);
        let unsampled_parent = Origin {
            parent: TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            ..sampled_parent.clone()
        };
        assert_eq!(decide(&unsampled_parent), SamplingDecision::Drop);
        let root = Origin {
            trace_id: u128::MAX,
            parent: None,
            tracestate: None,
        };
        assert_eq!(decide(&root), SamplingDecision::Drop);
    }
}
