//! The HTTP API: body limit, resolve's cache headers, CORS, TLS in front, the health
//! probe's bound and interval, idempotency records per key, the drain on shutdown and
//! the limits on connections. Its [`HttpConfig`] also carries the listen address, the
//! rate limits and the guards: everything the HTTP layer is given.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::guards::GuardConfig;
use crate::limits::RateLimits;
use crate::process::{Process, Profile};
use crate::render::Lines;
use crate::telemetry::AccessLogConfig;

/// The HTTP settings as read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpRaw {
    pub body_limit_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub resolve_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub resolve_stale_while_revalidate: Duration,
    #[serde(with = "humantime_serde")]
    pub health_check_timeout: Duration,
    /// How long one check of the dependencies answers every health probe.
    #[serde(with = "humantime_serde")]
    pub health_check_interval: Duration,
    /// Idempotency records one API key may hold at once (each lives 24 hours).
    pub idempotency_max_keys: u32,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Comma-separated origins allowed by CORS, or `*`.
    pub cors_origins: Option<String>,
    /// Set when a TLS-terminating proxy is in front: adds `Strict-Transport-Security`.
    pub behind_tls: bool,
    /// Plain resolves answered ahead of the router (same policy, less work); off, the
    /// router answers them too.
    pub resolve_fast_path: bool,
    /// From a request's first byte (a new connection's start) to its last header.
    #[serde(with = "humantime_serde")]
    pub http_header_read_timeout: Duration,
    /// From a request's last header to the last byte of its body.
    #[serde(with = "humantime_serde")]
    pub http_body_read_timeout: Duration,
    /// How long a connection with no request under way stays open.
    #[serde(with = "humantime_serde")]
    pub http_idle_timeout: Duration,
    pub http_max_connections: u32,
    pub http2_max_concurrent_streams: u32,
    pub http2_max_pending_accept_reset_streams: u32,
    pub http2_max_local_error_reset_streams: u32,
}

impl Default for HttpRaw {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 * 1024,
            resolve_max_age: Duration::from_secs(5),
            resolve_stale_while_revalidate: Duration::from_secs(30),
            health_check_timeout: Duration::from_secs(2),
            health_check_interval: Duration::from_secs(1),
            idempotency_max_keys: 10_000,
            shutdown_grace: Duration::from_secs(10),
            cors_origins: None,
            behind_tls: false,
            resolve_fast_path: true,
            http_header_read_timeout: Duration::from_secs(10),
            http_body_read_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(60),
            http_max_connections: 10_000,
            http2_max_concurrent_streams: 100,
            // hyper's own defaults: bounds on rapid-reset floods (CVE-2023-44487) and on
            // streams the server had to reset (CVE-2025-8671).
            http2_max_pending_accept_reset_streams: 20,
            http2_max_local_error_reset_streams: 1024,
        }
    }
}

/// Everything the HTTP layer is given: where to listen, request and answer limits,
/// browser access, the rate limits and the guards on the database path.
#[derive(Clone, Debug, Serialize)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub body_limit_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub resolve_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub resolve_stale_while_revalidate: Duration,
    #[serde(with = "humantime_serde")]
    pub health_check_timeout: Duration,
    /// One check of the dependencies answers every health probe for this long.
    #[serde(with = "humantime_serde")]
    pub health_check_interval: Duration,
    /// Idempotency records one API key may hold at once; beyond, 429.
    pub idempotency_max_keys: u32,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub cors: CorsOrigins,
    pub behind_tls: bool,
    pub resolve_fast_path: bool,
    /// Whether `/api/v1` is served: by `web` processes; a `worker` process serves only
    /// its health probes and metrics.
    pub serve_api: bool,
    pub connections: ConnectionLimits,
    #[serde(skip)]
    pub rate_limits: RateLimits,
    pub guards: GuardConfig,
    /// Which answers get an access-log line (from the telemetry section).
    #[serde(skip)]
    pub access_log: AccessLogConfig,
}

/// What a client may hold of the server: how long it may take to send a request, how
/// long an unused connection stays open, how many connections and HTTP/2 streams.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionLimits {
    /// A request's headers must be complete within this of its first byte (of the
    /// connection's start, for its first request); otherwise the connection is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request's body must be complete within this of its headers; otherwise 408.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// A connection with no request under way, and none begun, is closed after this.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections open at once; further ones wait in the listen backlog.
    pub max_connections: u32,
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 streams reset by the client before the server took them up, beyond which
    /// the connection is closed.
    pub http2_max_pending_accept_reset_streams: u32,
    /// HTTP/2 streams the server had to reset for the client's faults, likewise.
    pub http2_max_local_error_reset_streams: u32,
}

/// Which browser origins may call the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CorsOrigins {
    /// No cross-origin access (the default).
    None,
    /// Any origin (`*`); refused in the `prod` profile.
    Any,
    /// These origins, e.g. `https://console.example.com`.
    List(Vec<String>),
}

const MIN_BODY: usize = 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;
const MAX_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(60);

impl HttpConfig {
    /// Whether plain resolves are answered ahead of the router (only where the API is
    /// served at all).
    pub fn resolve_ahead(&self) -> bool {
        self.serve_api && self.resolve_fast_path
    }
}

impl HttpRaw {
    /// The HTTP layer's settings, given the process's (listen address, profile) and the
    /// rate-limit and guard sections, already checked.
    pub(crate) fn check(
        self,
        process: &Process,
        rate_limits: Option<RateLimits>,
        guards: GuardConfig,
        access_log: AccessLogConfig,
        problems: &mut Problems,
    ) -> Option<HttpConfig> {
        if !(MIN_BODY..=MAX_BODY).contains(&self.body_limit_bytes) {
            problems.add(
                "body_limit_bytes",
                format!("must be between {MIN_BODY} and {MAX_BODY}"),
            );
        }
        problems.positive(&[
            ("health_check_timeout", self.health_check_timeout),
            ("health_check_interval", self.health_check_interval),
        ]);
        if self.health_check_interval > MAX_HEALTH_CHECK_INTERVAL {
            problems.add(
                "health_check_interval",
                "must be at most 1m, so that readiness follows the dependencies",
            );
        }
        problems.at_least_one(&[("idempotency_max_keys", self.idempotency_max_keys.into())]);
        let cors = self.cors(process.profile, problems);
        let connections = self.connections(problems);
        Some(HttpConfig {
            listen: process.listen?,
            body_limit_bytes: self.body_limit_bytes,
            resolve_max_age: self.resolve_max_age,
            resolve_stale_while_revalidate: self.resolve_stale_while_revalidate,
            health_check_timeout: self.health_check_timeout,
            health_check_interval: self.health_check_interval,
            idempotency_max_keys: self.idempotency_max_keys,
            shutdown_grace: self.shutdown_grace,
            cors,
            behind_tls: self.behind_tls,
            resolve_fast_path: self.resolve_fast_path,
            serve_api: process.process_type == crate::ProcessType::Web,
            connections,
            rate_limits: rate_limits?,
            guards,
            access_log,
        })
    }

    fn connections(&self, problems: &mut Problems) -> ConnectionLimits {
        problems.positive(&[
            ("http_header_read_timeout", self.http_header_read_timeout),
            ("http_body_read_timeout", self.http_body_read_timeout),
            ("http_idle_timeout", self.http_idle_timeout),
        ]);
        problems.at_least_one(&[
            ("http_max_connections", self.http_max_connections.into()),
            (
                "http2_max_concurrent_streams",
                self.http2_max_concurrent_streams.into(),
            ),
            (
                "http2_max_pending_accept_reset_streams",
                self.http2_max_pending_accept_reset_streams.into(),
            ),
            (
                "http2_max_local_error_reset_streams",
                self.http2_max_local_error_reset_streams.into(),
            ),
        ]);
        ConnectionLimits {
            header_read_timeout: self.http_header_read_timeout,
            body_read_timeout: self.http_body_read_timeout,
            idle_timeout: self.http_idle_timeout,
            max_connections: self.http_max_connections,
            http2_max_concurrent_streams: self.http2_max_concurrent_streams,
            http2_max_pending_accept_reset_streams: self.http2_max_pending_accept_reset_streams,
            http2_max_local_error_reset_streams: self.http2_max_local_error_reset_streams,
        }
    }

    fn cors(&self, profile: Option<Profile>, problems: &mut Problems) -> CorsOrigins {
        match self.cors_origins.as_deref().map(str::trim) {
            None | Some("") => CorsOrigins::None,
            Some("*") if profile == Some(Profile::Prod) => {
                problems.add(
                    "cors_origins",
                    "the wildcard * is refused in the prod profile; list the allowed origins",
                );
                CorsOrigins::None
            }
            Some("*") => CorsOrigins::Any,
            Some(list) => CorsOrigins::List(
                crate::comma_separated(list)
                    .filter(|origin| match check_origin(origin) {
                        Ok(()) => true,
                        Err(why) => {
                            problems.add("cors_origins", format!("{origin:?} {why}"));
                            false
                        }
                    })
                    .map(str::to_owned)
                    .collect(),
            ),
        }
    }
}

/// An origin is `scheme://host[:port]`: http or https, nothing after the authority.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    let url = url::Url::parse(origin)
        .map_err(|_| "is not an origin such as https://console.example.com")?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http or https origin");
    }
    if origin.ends_with('/')
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err("must have no path, query or fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user information");
    }
    Ok(())
}

impl HttpConfig {
    /// The HTTP lines of `check-config` (the listen address is the process's), then the
    /// guards' and the rate limits'.
    pub(crate) fn render(&self, out: &mut Lines) {
        out.plain("body_limit_bytes", self.body_limit_bytes);
        out.duration("resolve_max_age", self.resolve_max_age);
        out.duration(
            "resolve_stale_while_revalidate",
            self.resolve_stale_while_revalidate,
        );
        out.duration("health_check_timeout", self.health_check_timeout);
        out.duration("health_check_interval", self.health_check_interval);
        out.plain("idempotency_max_keys", self.idempotency_max_keys);
        out.duration("shutdown_grace", self.shutdown_grace);
        match &self.cors {
            CorsOrigins::None => out.quoted("cors_origins", ""),
            CorsOrigins::Any => out.quoted("cors_origins", "*"),
            CorsOrigins::List(list) => out.quoted("cors_origins", list.join(",")),
        }
        out.plain("behind_tls", self.behind_tls);
        out.plain("resolve_fast_path", self.resolve_fast_path);
        self.connections.render(out);
        self.rate_limits.render(out);
        self.guards.render(out);
    }
}

impl ConnectionLimits {
    fn render(&self, out: &mut Lines) {
        out.duration("http_header_read_timeout", self.header_read_timeout);
        out.duration("http_body_read_timeout", self.body_read_timeout);
        out.duration("http_idle_timeout", self.idle_timeout);
        out.plain("http_max_connections", self.max_connections);
        out.plain(
            "http2_max_concurrent_streams",
            self.http2_max_concurrent_streams,
        );
        out.plain(
            "http2_max_pending_accept_reset_streams",
            self.http2_max_pending_accept_reset_streams,
        );
        out.plain(
            "http2_max_local_error_reset_streams",
            self.http2_max_local_error_reset_streams,
        );
    }
}
