//! An OpenTelemetry collector of a test's own, on a loopback port: it takes OTLP/HTTP
//! exports (`POST /v1/traces`, `application/x-protobuf`), decodes each
//! `ExportTraceServiceRequest` with the protocol's own message types and keeps the spans.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::task::JoinHandle;

/// A span as exported, its ids in the hex of `traceparent`.
#[derive(Clone, Debug)]
pub struct ExportedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub kind: SpanKind,
    /// Attribute values as text (numbers in decimal).
    pub attributes: HashMap<String, String>,
    /// `service.name` of the exporting process.
    pub service: String,
    /// Whether the status is an error.
    pub error: bool,
    /// The spans it links to: (trace id, span id).
    pub links: Vec<(String, String)>,
}

#[derive(Default)]
struct Shared {
    spans: Vec<ExportedSpan>,
    /// Exports that were not protobuf or did not decode.
    refused: usize,
}

/// One receiver, stopped when dropped.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn export(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
    let decoded = protobuf
        .then(|| ExportTraceServiceRequest::decode(body))
        .and_then(Result::ok);
    let mut shared = shared.lock().expect("lock");
    let Some(request) = decoded else {
        shared.refused += 1;
        return StatusCode::BAD_REQUEST.into_response();
    };
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                let attributes = span
                    .attributes
                    .iter()
                    .map(|kv| {
                        let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                        (kv.key.clone(), text(value))
                    })
                    .collect();
                let links = span
                    .links
                    .iter()
                    .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
                    .collect();
                shared.spans.push(ExportedSpan {
                    kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    error: span.status.as_ref().is_some_and(|s| s.code == 2),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes,
                    links,
                    service: service.clone(),
                });
            }
        }
    }
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    ([(header::CONTENT_TYPE, "application/x-protobuf")], answer).into_response()
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = axum::Router::new()
            .route("/v1/traces", post(export))
            .with_state(shared.clone());
        let (addr, task) = crate::serve_on_loopback(app).await;
        OtlpReceiver { addr, shared, task }
    }

    /// The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span exported so far, in arrival order.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.shared.lock().expect("lock").spans.clone()
    }

    /// Exports refused as not OTLP/protobuf.
    pub fn refused(&self) -> usize {
        self.shared.lock().expect("lock").refused
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
