//! Logs and metrics: the log format and filter, the tenants given their own series, and
//! how often pool and snapshot figures are sampled.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::process::Profile;
use crate::render::Lines;

/// The telemetry settings as read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetryRaw {
    pub log_format: Option<String>,
    pub log_level: String,
    /// Distinct tenants given their own `tenant_requests_total` series; the rest are `other`.
    pub metrics_max_tenants: usize,
    #[serde(with = "humantime_serde")]
    pub pool_sample_interval: Duration,
    /// Log lines held for the writer before new ones are dropped (and counted).
    pub log_buffer_lines: usize,
    /// One in this many successful resolves is logged (1: every one; 0: none). Errors
    /// and slow requests always are.
    pub access_log_resolve_sample: u32,
    /// A request that takes longer is always logged.
    #[serde(with = "humantime_serde")]
    pub access_log_slow: Duration,
}

impl Default for TelemetryRaw {
    fn default() -> Self {
        Self {
            log_format: None,
            log_level: "info".into(),
            metrics_max_tenants: 100,
            pool_sample_interval: Duration::from_secs(5),
            log_buffer_lines: 65_536,
            access_log_resolve_sample: 100,
            access_log_slow: Duration::from_millis(100),
        }
    }
}

/// How log lines are written on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The name, as the setting spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Log settings.
#[derive(Clone, Debug, Serialize)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `info,tm_store=debug`.
    pub level: String,
    /// Lines waiting for the writer beyond which new lines are dropped and counted.
    pub buffer_lines: usize,
}

/// Which answered requests get an access-log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AccessLogConfig {
    /// One in this many successful resolves (0: none).
    pub resolve_sample: u32,
    /// Requests slower than this are always logged.
    #[serde(with = "humantime_serde")]
    pub slow: Duration,
}

/// Metrics settings.
#[derive(Clone, Debug, Serialize)]
pub struct MetricsConfig {
    pub max_tenants: usize,
    #[serde(with = "humantime_serde")]
    pub pool_sample_interval: Duration,
}

impl TelemetryRaw {
    /// The log settings; text by default in the `dev` profile, JSON lines elsewhere.
    pub(crate) fn log(
        &self,
        profile: Option<Profile>,
        problems: &mut Problems,
    ) -> Option<LogConfig> {
        let format = match (self.log_format.as_deref(), profile) {
            (Some("text"), _) => Some(LogFormat::Text),
            (Some("json"), _) => Some(LogFormat::Json),
            (Some(other), _) => {
                problems.add("log_format", format!("must be text or json, not {other:?}"));
                None
            }
            (None, Some(Profile::Dev)) => Some(LogFormat::Text),
            (None, _) => Some(LogFormat::Json),
        };
        if self.log_level.trim().is_empty() {
            problems.add("log_level", "must not be empty");
        }
        problems.at_least_one(&[(
            "log_buffer_lines",
            u64::try_from(self.log_buffer_lines).unwrap_or(u64::MAX),
        )]);
        format.map(|format| LogConfig {
            format,
            level: self.log_level.clone(),
            buffer_lines: self.log_buffer_lines,
        })
    }

    /// The access-log policy (see [`AccessLogConfig`]).
    pub(crate) fn access_log(&self, problems: &mut Problems) -> AccessLogConfig {
        problems.positive(&[("access_log_slow", self.access_log_slow)]);
        AccessLogConfig {
            resolve_sample: self.access_log_resolve_sample,
            slow: self.access_log_slow,
        }
    }

    pub(crate) fn metrics(&self, problems: &mut Problems) -> MetricsConfig {
        problems.at_least_one(&[(
            "metrics_max_tenants",
            u64::try_from(self.metrics_max_tenants).unwrap_or(u64::MAX),
        )]);
        problems.positive(&[("pool_sample_interval", self.pool_sample_interval)]);
        MetricsConfig {
            max_tenants: self.metrics_max_tenants,
            pool_sample_interval: self.pool_sample_interval,
        }
    }
}

/// The telemetry lines of `check-config`.
pub(crate) fn render(
    log: &LogConfig,
    access: &AccessLogConfig,
    metrics: &MetricsConfig,
    out: &mut Lines,
) {
    out.quoted("log_format", log.format.as_str());
    out.quoted("log_level", &log.level);
    out.plain("log_buffer_lines", log.buffer_lines);
    out.plain("access_log_resolve_sample", access.resolve_sample);
    out.duration("access_log_slow", access.slow);
    out.plain("metrics_max_tenants", metrics.max_tenants);
    out.duration("pool_sample_interval", metrics.pool_sample_interval);
}
