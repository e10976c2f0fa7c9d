//! The endpoint health probe: is a route's upstream answering?
//!
//! The registry's users register the upstream endpoints of their routes, so a probe, like
//! a webhook delivery, goes where a user says and must not become a way into our own
//! network. It obeys the same rules as the [`Deliverer`](crate::Deliverer), with the same
//! code (the crate's `guard` module):
//!
//! - Host names are resolved by the policy's resolver, which keeps only the addresses the
//!   [`NetworkPolicy`] permits; those are the addresses connected to (no DNS rebinding).
//! - IP literals are checked against the policy before anything is sent.
//! - HTTP redirects are never followed, and proxies from the environment are ignored.
//!
//! An HTTP(S) probe is a GET whose answer's head decides: its status must lie in one of
//! the expected ranges. The body is never read, so a hostile endpoint cannot make us
//! buffer or wait for anything. A TCP probe only opens a connection and closes it at once.
//!
//! Failure messages are short, never hold the request's path or query (which may carry a
//! token), and never list the addresses a name resolved to: they are shown to users.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use url::{Host, Url};

use crate::guard::{
    check_ip, classify, client_builder, find_cause, literal_ip, resolve_permitted, BuildError,
    Failure, ResolveError, Unresolved, CONNECT_TIMEOUT_MAX,
};
use crate::policy::NetworkPolicy;

/// The longest failure message, in bytes; longer ones are cut (a host name alone may take
/// 253 bytes, and the messages are shown to users).
const MAX_MESSAGE_LEN: usize = 300;

/// How a probe checks an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeProtocol {
    /// A GET over plain HTTP; healthy when the status is an expected one.
    Http,
    /// A GET over HTTPS (TLS with the webpki roots); healthy when the certificate is valid
    /// for the host and the status is an expected one.
    Https,
    /// A TCP connection; healthy when it can be made.
    Tcp,
}

/// One probe to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRequest<'a> {
    /// How to probe.
    pub protocol: ProbeProtocol,
    /// A DNS name, an IPv4 literal, or an IPv6 literal (without brackets, though brackets
    /// are tolerated). Read as a URL's host is: international names become punycode, and
    /// numeric forms such as `2130706433` are IPv4 literals.
    pub host: &'a str,
    /// The port to connect to; 0 is invalid.
    pub port: u16,
    /// For [`ProbeProtocol::Http`] and [`ProbeProtocol::Https`]: the path and query to
    /// GET, starting with `/` and without a fragment. Characters that a URL cannot hold as
    /// they are get percent-encoded; existing `%XX` escapes are sent unchanged. Ignored
    /// for [`ProbeProtocol::Tcp`].
    pub path: &'a str,
    /// For [`ProbeProtocol::Http`] and [`ProbeProtocol::Https`]: the statuses that count as
    /// healthy (none, if empty). Ignored for [`ProbeProtocol::Tcp`].
    pub expected: &'a [RangeInclusive<u16>],
    /// The time the whole probe may take, from its start to the answer's head (or to the
    /// TCP connection made), name resolution included. For HTTP(S), setting up the
    /// connection may take at most 10 seconds of it.
    pub timeout: Duration,
}

/// A probe that found the endpoint healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOk {
    /// The status of the answer (one of the expected ones); `None` for a TCP probe.
    pub status: Option<u16>,
    /// The time from the probe's start to the answer's head (or to the TCP connection
    /// made).
    pub elapsed: Duration,
}

/// Why a probe found the endpoint unhealthy, or could not be made.
///
/// The messages are short and meant for users (a route's last error): they hold neither
/// the path nor the query, nor the addresses a host name resolved to.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProbeFailure {
    /// The network policy forbids the host's address (for a literal) or every one of its
    /// addresses (for a name); nothing was sent.
    #[error("refused by the network policy: {0}")]
    Refused(String),
    /// No answer's head (or no TCP connection) came within the timeout.
    #[error("timed out")]
    TimedOut,
    /// The host could not be resolved, the connection could not be made, TLS failed, or
    /// the answer was not valid HTTP.
    #[error("{0}")]
    Connect(String),
    /// The endpoint answered with a status outside the expected ranges (3xx included:
    /// redirects are not followed).
    #[error("answered with status {0}")]
    Status(u16),
    /// The probe cannot be made from what was given (a host that is not a name or an IP
    /// address, port 0, a path not starting with `/`); nothing was sent.
    #[error("invalid probe: {0}")]
    Invalid(String),
}

/// Probes endpoints, connecting only to addresses the network policy permits.
///
/// Cheap to share: clone it or put it in an `Arc`. The HTTP client inside is shared by all
/// probes, whatever their timeouts, but keeps no connection between probes.
#[derive(Debug, Clone)]
pub struct Prober {
    client: reqwest::Client,
    policy: Arc<NetworkPolicy>,
}

impl Prober {
    /// A prober that follows no redirect, ignores proxy settings from the environment,
    /// sends `user_agent` on HTTP probes, and connects only to addresses that `policy`
    /// permits.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built, as when `user_agent` is not a valid header
    /// value.
    pub fn new(policy: Arc<NetworkPolicy>, user_agent: &str) -> Result<Self, BuildError> {
        let client = client_builder(&policy, user_agent)
            // No idle connection is kept: probes of one endpoint are seconds apart, far
            // longer than a kept-alive connection is worth, and a reused connection would
            // hide what the probe is for. It would still answer after the endpoint stopped
            // accepting connections, and it would skip the fresh resolution (DNS changes,
            // and the policy's judgement of the new addresses). Idle sockets to thousands
            // of users' hosts would also cost file descriptors for nothing.
            .pool_max_idle_per_host(0)
            // Each request's own timeout (`RequestBuilder::timeout`) covers connecting too,
            // so set-up is bounded by the probe's timeout; this caps it for long ones.
            .connect_timeout(CONNECT_TIMEOUT_MAX)
            .build()
            .map_err(BuildError)?;
        Ok(Self { client, policy })
    }

    /// The policy this prober connects under.
    #[must_use]
    pub fn policy(&self) -> &NetworkPolicy {
        &self.policy
    }

    /// Makes one probe, within `request.timeout`.
    ///
    /// # Errors
    ///
    /// A [`ProbeFailure`] when the endpoint is not healthy or the probe cannot be made.
    pub async fn probe(&self, request: &ProbeRequest<'_>) -> Result<ProbeOk, ProbeFailure> {
        let started = Instant::now();
        let host = parse_host(request.host)?;
        if request.port == 0 {
            return Err(ProbeFailure::Invalid(
                "port 0 cannot be connected to".to_owned(),
            ));
        }
        match request.protocol {
            ProbeProtocol::Http => self.probe_http("http", &host, request, started).await,
            ProbeProtocol::Https => self.probe_http("https", &host, request, started).await,
            ProbeProtocol::Tcp => self.probe_tcp(host, request, started).await,
        }
    }

    /// A GET whose answer's head is the whole verdict.
    async fn probe_http(
        &self,
        scheme: &str,
        host: &Host<String>,
        request: &ProbeRequest<'_>,
        started: Instant,
    ) -> Result<ProbeOk, ProbeFailure> {
        let url = probe_url(scheme, host, request.port, request.path)?;
        // reqwest connects to literals without asking the resolver, so they are judged
        // here, on the URL actually sent.
        if let Some(ip) = literal_ip(&url) {
            check_ip(&self.policy, ip)
                .map_err(|refused| ProbeFailure::Refused(refused.to_string()))?;
        }
        let tls = scheme == "https";
        let response = self
            .client
            .get(url)
            .timeout(request.timeout)
            .send()
            .await
            .map_err(|error| match classify(error) {
                Failure::Refused(message) => ProbeFailure::Refused(message),
                Failure::TimedOut => ProbeFailure::TimedOut,
                Failure::Invalid(error) => ProbeFailure::Invalid(short_message(&error, tls)),
                Failure::Connect(error) => ProbeFailure::Connect(short_message(&error, tls)),
            })?;
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        // Dropped unread: the head is the whole answer we need, and with no idle pooling
        // this closes the connection, whatever the endpoint still meant to send.
        drop(response);
        if request.expected.iter().any(|range| range.contains(&status)) {
            Ok(ProbeOk {
                status: Some(status),
                elapsed,
            })
        } else {
            Err(ProbeFailure::Status(status))
        }
    }

    /// A TCP connection to the first permitted address that takes it, closed at once.
    async fn probe_tcp(
        &self,
        host: Host<String>,
        request: &ProbeRequest<'_>,
        started: Instant,
    ) -> Result<ProbeOk, ProbeFailure> {
        let port = request.port;
        // Literals are judged before the clock matters, as for HTTP: a refusal is a
        // refusal even with a zero timeout.
        let literal = match host {
            Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            Host::Domain(_) => None,
        };
        if let Some(ip) = literal {
            check_ip(&self.policy, ip)
                .map_err(|refused| ProbeFailure::Refused(refused.to_string()))?;
        }
        let attempt = async {
            let addresses = match literal {
                Some(ip) => vec![SocketAddr::new(ip, port)],
                // Not a literal, so the host displays as the domain name itself.
                None => resolve_permitted(&self.policy, &host.to_string(), port)
                    .await
                    .map_err(|error| match error {
                        ResolveError::Refused(refused) => {
                            ProbeFailure::Refused(refused.to_string())
                        }
                        ResolveError::Unresolved(unresolved) => {
                            ProbeFailure::Connect(cut(unresolved.to_string()))
                        }
                    })?,
            };
            connect_any(&addresses).await
        };
        match tokio::time::timeout(request.timeout, attempt).await {
            Ok(Ok(())) => Ok(ProbeOk {
                status: None,
                elapsed: started.elapsed(),
            }),
            Ok(Err(failure)) => Err(failure),
            Err(_elapsed) => Err(ProbeFailure::TimedOut),
        }
    }
}

/// Connects to each address in turn until one takes the connection, which is closed at
/// once: that it could be made is the whole answer.
async fn connect_any(addresses: &[SocketAddr]) -> Result<(), ProbeFailure> {
    let mut last_error = None;
    for &address in addresses {
        match tokio::net::TcpStream::connect(address).await {
            Ok(stream) => {
                drop(stream);
                return Ok(());
            }
            Err(error) => last_error = Some(error),
        }
    }
    // The message is the last attempt's error alone, without its address: a name may
    // resolve to addresses the user should not learn.
    Err(ProbeFailure::Connect(match last_error {
        Some(error) => cut(format!("connection failed: {error}")),
        None => "connection failed: no address to connect to".to_owned(),
    }))
}

/// Reads a probe's host as a URL's host is read, taking a bare IPv6 literal too.
fn parse_host(host: &str) -> Result<Host<String>, ProbeFailure> {
    if let Ok(ip) = host.parse::<Ipv6Addr>() {
        return Ok(Host::Ipv6(ip));
    }
    // The URL parser's own reading, so that a TCP probe and an HTTP probe of one host
    // agree on what it is (and on which numeric forms are IPv4 literals).
    Host::parse(host)
        .map_err(|_| ProbeFailure::Invalid("the host is not a valid name or IP address".to_owned()))
}

/// The URL of an HTTP(S) probe: `scheme://host:port` with the path and query set through
/// the URL's own setters, which cannot move the authority (a path such as `//other/` stays
/// a path, unlike with `Url::join`).
fn probe_url(
    scheme: &str,
    host: &Host<String>,
    port: u16,
    path: &str,
) -> Result<Url, ProbeFailure> {
    let invalid = |message: &str| ProbeFailure::Invalid(message.to_owned());
    if !path.starts_with('/') {
        return Err(invalid("the path must start with '/'"));
    }
    if path.contains('#') {
        return Err(invalid("the path must not contain a fragment ('#')"));
    }
    // `Host` displays IPv6 literals in brackets, as a URL needs them.
    let mut url = Url::parse(&format!("{scheme}://{host}/"))
        .map_err(|_| invalid("the host cannot be part of a URL"))?;
    url.set_port(Some(port))
        .map_err(|()| invalid("the port cannot be part of a URL"))?;
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    url.set_path(path);
    url.set_query(query);
    Ok(url)
}

/// A reqwest failure, short: why it resolved nothing, or the deepest cause (the one that
/// says what went wrong; the outer ones only say where) after the phase it happened in.
fn short_message(error: &reqwest::Error, tls: bool) -> String {
    if let Some(unresolved) = find_cause::<Unresolved>(error) {
        return cut(unresolved.to_string());
    }
    let mut deepest: &(dyn std::error::Error + 'static) = error;
    while let Some(cause) = deepest.source() {
        deepest = cause;
    }
    // A failed TCP connection ends in the system's error; a TLS failure ends in the TLS
    // library's own error (which says nothing of TLS itself, hence the phase's name).
    let from_system = deepest
        .downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.raw_os_error().is_some());
    let phase = match (error.is_connect(), tls && !from_system) {
        (false, _) => "request failed",
        (true, true) => "TLS failed",
        (true, false) => "connection failed",
    };
    cut(format!("{phase}: {deepest}"))
}

/// A message cut to [`MAX_MESSAGE_LEN`] bytes, on a character boundary.
fn cut(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN - '…'.len_utf8();
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> Host<String> {
        parse_host(text).expect("a valid host")
    }

    #[test]
    fn urls_are_built_from_parts() {
        let cases: &[(&str, &str, u16, &str, &str)] = &[
            (
                "http",
                "example.com",
                8080,
                "/health",
                "http://example.com:8080/health",
            ),
            ("https", "example.com", 443, "/", "https://example.com/"),
            (
                "http",
                "127.0.0.1",
                80,
                "/a?b=1&c=%20",
                "http://127.0.0.1/a?b=1&c=%20",
            ),
            ("http", "::1", 8080, "/x?y", "http://[::1]:8080/x?y"),
            ("http", "[::1]", 8080, "/x", "http://[::1]:8080/x"),
            ("https", "2130706433", 8443, "/", "https://127.0.0.1:8443/"),
            (
                "http",
                "Example.COM",
                81,
                "/a b",
                "http://example.com:81/a%20b",
            ),
            (
                "http",
                "bücher.example",
                80,
                "/",
                "http://xn--bcher-kva.example/",
            ),
            // A path that looks like an authority stays a path.
            (
                "http",
                "example.com",
                80,
                "//other.example/x",
                "http://example.com//other.example/x",
            ),
            (
                "http",
                "example.com",
                80,
                "/@other.example",
                "http://example.com/@other.example",
            ),
        ];
        for &(scheme, raw_host, port, path, expected) in cases {
            let url = probe_url(scheme, &host(raw_host), port, path).expect("valid");
            assert_eq!(url.as_str(), expected, "{raw_host} {path}");
        }
    }

    #[test]
    fn bad_paths_and_hosts_are_invalid() {
        for path in ["no-slash", "", "?x=1", "/a#frag"] {
            let built = probe_url("http", &host("example.com"), 80, path);
            assert!(
                matches!(built, Err(ProbeFailure::Invalid(_))),
                "{path}: {built:?}"
            );
        }
        for raw in [
            "",
            "exa mple.com",
            "a/b",
            "a@b",
            "[::1",
            "1.2.3.4.5",
            "foo.123",
        ] {
            let parsed = parse_host(raw);
            assert!(
                matches!(parsed, Err(ProbeFailure::Invalid(_))),
                "{raw}: {parsed:?}"
            );
        }
    }

    #[test]
    fn hosts_read_as_url_hosts() {
        assert_eq!(host("::1"), Host::<String>::Ipv6(Ipv6Addr::LOCALHOST));
        assert_eq!(
            host("0x7f.1"),
            Host::<String>::Ipv4("127.0.0.1".parse().expect("ip"))
        );
        assert_eq!(host("LocalHost"), Host::Domain("localhost".to_owned()));
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE_LEN);
        let cut = cut(long);
        assert!(cut.len() <= MAX_MESSAGE_LEN, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(super::cut("short".to_owned()), "short");
    }

    #[test]
    fn invalid_user_agent_fails_to_build() {
        let built = Prober::new(Arc::new(NetworkPolicy::default()), "bad\nagent");
        assert!(built.is_err());
    }
}
