//! Telemetry set-up. Logs go to stdout: JSON lines with `TM_LOG_FORMAT=json` (the default
//! outside `dev`), compact text otherwise; the level is an `EnvFilter` directive.

mod metrics;

pub use metrics::{
    Metrics, PoolFigures, CONTENT_TYPE as METRICS_CONTENT_TYPE, OTHER_TENANT, UNMATCHED,
};
use tm_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Fails if the level directive cannot be parsed or a
/// subscriber is already installed.
pub fn init(config: &LogConfig) -> Result<(), String> {
    let filter = EnvFilter::try_new(&config.level).map_err(|e| format!("TM_LOG_LEVEL: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_writer(std::io::stdout);
    let result = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.compact().try_init(),
    };
    result.map_err(|e| format!("logging: {e}"))
}

/// Logs to the test harness's captured output; safe to call from every test.
pub fn init_for_tests() {
    let filter = EnvFilter::try_from_env("TM_TEST_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
