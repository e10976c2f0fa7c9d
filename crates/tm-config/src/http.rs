//! The HTTP API: body limit, resolve's cache headers, CORS, TLS in front, the health
//! probe's bound and interval, idempotency records per key and the drain on shutdown. Its [`HttpConfig`] also carries the listen
//! address, the rate limits and the guards: everything the HTTP layer is given.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::guards::GuardConfig;
use crate::limits::RateLimits;
use crate::process::{Process, Profile};
use crate::render::Lines;

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
    #[serde(skip)]
    pub rate_limits: RateLimits,
    pub guards: GuardConfig,
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

impl HttpRaw {
    /// The HTTP layer's settings, given the process's (listen address, profile) and the
    /// rate-limit and guard sections, already checked.
    pub(crate) fn check(
        self,
        process: &Process,
        rate_limits: Option<RateLimits>,
        guards: GuardConfig,
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
            rate_limits: rate_limits?,
            guards,
        })
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
    /// rate limits'.
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
        self.rate_limits.render(out);
    }
}
