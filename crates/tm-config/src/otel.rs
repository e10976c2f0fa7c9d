//! Trace export: the standard `OTEL_*` variables (not `TM_*`: collectors and platforms set
//! these), read as the OpenTelemetry specification defines them. Export is off unless an
//! OTLP endpoint is given.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::render::Lines;
use crate::urls::redact_url;

/// The trace export settings as read (`otel_service_name` is `OTEL_SERVICE_NAME`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OtelRaw {
    pub otel_service_name: Option<String>,
    pub otel_resource_attributes: Option<String>,
    /// The base URL: traces go to `<endpoint>/v1/traces`.
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// The URL traces go to, as given (wins over the base URL).
    pub otel_exporter_otlp_traces_endpoint: Option<String>,
    pub otel_exporter_otlp_protocol: Option<String>,
    pub otel_exporter_otlp_traces_protocol: Option<String>,
    /// `name=value,…`, values percent-encoded: often a credential.
    pub otel_exporter_otlp_headers: Option<String>,
    pub otel_exporter_otlp_traces_headers: Option<String>,
    pub otel_traces_sampler: Option<String>,
    pub otel_traces_sampler_arg: Option<f64>,
}

/// The keys this section reads from the environment without the `TM_` prefix.
pub(crate) fn is_standard_key(key: &str) -> bool {
    key.starts_with("otel_")
}

/// Where and how spans are exported; `None` in [`crate::Config`] when tracing is off.
#[derive(Clone, Debug)]
pub struct TracingConfig {
    /// The full URL spans are sent to (`…/v1/traces`).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Sent with every export; values are secrets.
    pub headers: Vec<(String, SecretString)>,
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, decoded, `service.name` left out.
    pub resource_attributes: Vec<(String, String)>,
    pub sampler: TraceSampler,
}

/// How spans are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// Protobuf messages over HTTP: `http/protobuf`.
    HttpProtobuf,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Which traces are recorded, as `OTEL_TRACES_SAMPLER` names them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TraceSampler {
    AlwaysOn,
    AlwaysOff,
    /// This fraction of traces, chosen by trace id.
    Ratio(f64),
    /// The caller's decision when a `traceparent` carries one; else the inner sampler.
    ParentBased(RootSampler),
}

/// What a parent-based sampler decides for a trace that starts here.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RootSampler {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

impl std::fmt::Display for TraceSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TraceSampler::AlwaysOn => f.write_str("always_on"),
            TraceSampler::AlwaysOff => f.write_str("always_off"),
            TraceSampler::Ratio(ratio) => write!(f, "traceidratio {ratio}"),
            TraceSampler::ParentBased(RootSampler::AlwaysOn) => {
                f.write_str("parentbased_always_on")
            }
            TraceSampler::ParentBased(RootSampler::AlwaysOff) => {
                f.write_str("parentbased_always_off")
            }
            TraceSampler::ParentBased(RootSampler::Ratio(ratio)) => {
                write!(f, "parentbased_traceidratio {ratio}")
            }
        }
    }
}

impl OtelRaw {
    /// The trace export settings; `None` when no endpoint is set (or on a problem).
    pub(crate) fn check(&self, problems: &mut Problems) -> Option<TracingConfig> {
        let sampler = self.sampler(problems);
        let protocol = self.protocol(problems);
        let headers = self.headers(problems);
        let resource_attributes = match &self.otel_resource_attributes {
            Some(raw) => pairs(raw).unwrap_or_else(|message| {
                problems.add("otel_resource_attributes", message);
                Vec::new()
            }),
            None => Vec::new(),
        };
        let endpoint = self.endpoint(problems)?;
        let service_name = self
            .otel_service_name
            .clone()
            .filter(|name| !name.trim().is_empty())
            .or_else(|| {
                resource_attributes
                    .iter()
                    .find(|(key, _)| key == "service.name")
                    .map(|(_, value)| value.clone())
            })
            .unwrap_or_else(|| "traffic-manager".to_owned());
        let resource_attributes = resource_attributes
            .into_iter()
            .filter(|(key, _)| key != "service.name")
            .collect();
        Some(TracingConfig {
            endpoint,
            protocol: protocol?,
            headers: headers?,
            service_name,
            resource_attributes,
            sampler: sampler?,
        })
    }

    /// The traces URL: the signal's own as given, else `/v1/traces` under the base URL.
    fn endpoint(&self, problems: &mut Problems) -> Option<String> {
        let given = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
        let (key, url) = match (
            given(&self.otel_exporter_otlp_traces_endpoint),
            given(&self.otel_exporter_otlp_endpoint),
        ) {
            (Some(url), _) => ("otel_exporter_otlp_traces_endpoint", url),
            (None, Some(base)) => (
                "otel_exporter_otlp_endpoint",
                format!("{}/v1/traces", base.trim_end_matches('/')),
            ),
            (None, None) => return None,
        };
        match url::Url::parse(&url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {
                Some(url)
            }
            _ => {
                problems.add(
                    key,
                    format!("must be an http or https URL, not {:?}", redact_url(&url)),
                );
                None
            }
        }
    }

    fn protocol(&self, problems: &mut Problems) -> Option<OtlpProtocol> {
        let (key, value) = match (
            &self.otel_exporter_otlp_traces_protocol,
            &self.otel_exporter_otlp_protocol,
        ) {
            (Some(value), _) => ("otel_exporter_otlp_traces_protocol", value.as_str()),
            (None, Some(value)) => ("otel_exporter_otlp_protocol", value.as_str()),
            (None, None) => return Some(OtlpProtocol::HttpProtobuf),
        };
        match value.trim() {
            "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
            "grpc" | "http/json" => {
                problems.add(
                    key,
                    format!("{value} is not built in: use http/protobuf (a collector takes both)"),
                );
                None
            }
            other => {
                problems.add(key, format!("must be http/protobuf, not {other:?}"));
                None
            }
        }
    }

    /// The export headers: the signal's own, else the general ones.
    fn headers(&self, problems: &mut Problems) -> Option<Vec<(String, SecretString)>> {
        let (key, raw) = match (
            &self.otel_exporter_otlp_traces_headers,
            &self.otel_exporter_otlp_headers,
        ) {
            (Some(raw), _) => ("otel_exporter_otlp_traces_headers", raw),
            (None, Some(raw)) => ("otel_exporter_otlp_headers", raw),
            (None, None) => return Some(Vec::new()),
        };
        match pairs(raw) {
            Ok(pairs) => Some(
                pairs
                    .into_iter()
                    .map(|(name, value)| (name, SecretString::from(value)))
                    .collect(),
            ),
            // The message names no value: they may be credentials.
            Err(_) => {
                problems.add(key, "must be name=value pairs separated by commas");
                None
            }
        }
    }

    fn sampler(&self, problems: &mut Problems) -> Option<TraceSampler> {
        let name = self
            .otel_traces_sampler
            .as_deref()
            .map_or("parentbased_always_on", str::trim);
        let ratio = || -> Option<f64> {
            let ratio = self.otel_traces_sampler_arg.unwrap_or(1.0);
            (0.0..=1.0).contains(&ratio).then_some(ratio)
        };
        let sampler = match name {
            "always_on" => TraceSampler::AlwaysOn,
            "always_off" => TraceSampler::AlwaysOff,
            "parentbased_always_on" => TraceSampler::ParentBased(RootSampler::AlwaysOn),
            "parentbased_always_off" => TraceSampler::ParentBased(RootSampler::AlwaysOff),
            "traceidratio" | "parentbased_traceidratio" => {
                let Some(ratio) = ratio() else {
                    problems.add(
                        "otel_traces_sampler_arg",
                        "must be a number from 0 to 1, the fraction of traces recorded",
                    );
                    return None;
                };
                if name == "traceidratio" {
                    TraceSampler::Ratio(ratio)
                } else {
                    TraceSampler::ParentBased(RootSampler::Ratio(ratio))
                }
            }
            other => {
                problems.add(
                    "otel_traces_sampler",
                    format!("must be always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio, not {other:?}"),
                );
                return None;
            }
        };
        Some(sampler)
    }
}

/// `key=value,…` with percent-encoded values (W3C Baggage's form, which both
/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS` use).
fn pairs(raw: &str) -> Result<Vec<(String, String)>, String> {
    crate::comma_separated(raw)
        .map(|item| {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not key=value"))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(format!("{item:?} has no key"));
            }
            let value = url::form_urlencoded::parse(format!("v={}", value.trim()).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            Ok((key.to_owned(), value))
        })
        .collect()
}

/// The tracing lines of `check-config`: whether spans are exported and where; header
/// values are never shown.
pub(crate) fn render(tracing: Option<&TracingConfig>, out: &mut Lines) {
    let Some(tracing) = tracing else {
        out.quoted(
            "tracing",
            "off (set OTEL_EXPORTER_OTLP_ENDPOINT to export spans)",
        );
        return;
    };
    out.quoted("tracing", "on");
    out.quoted(
        "otel_exporter_otlp_traces_endpoint",
        redact_url(&tracing.endpoint),
    );
    out.quoted("otel_exporter_otlp_protocol", tracing.protocol.as_str());
    let headers: Vec<String> = tracing
        .headers
        .iter()
        .map(|(name, _)| format!("{name}=(redacted)"))
        .collect();
    out.quoted("otel_exporter_otlp_headers", headers.join(","));
    out.quoted("otel_service_name", &tracing.service_name);
    let attributes: Vec<String> = tracing
        .resource_attributes
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    out.quoted("otel_resource_attributes", attributes.join(","));
    out.quoted("otel_traces_sampler", tracing.sampler);
}
