//! The delivery client: one signed POST to a tenant's webhook URL.
//!
//! The URL is the tenant's, so the client must not become a way into our own network.
//! Three things see to that:
//!
//! - Host names are resolved by our own resolver, which keeps only the addresses the
//!   [`NetworkPolicy`] permits and hands exactly those to the connector. The addresses
//!   checked are the addresses connected to; there is no second lookup that a DNS server
//!   could answer differently (DNS rebinding).
//! - reqwest does not call the resolver when the host is an IP literal, so literals are
//!   checked here before anything is sent.
//! - Redirects are never followed (a receiver cannot bounce us elsewhere), and proxies from
//!   the environment are ignored (the policy must judge the real destination).
//!
//! The response body is never read: only the status matters, and a hostile receiver
//! cannot make us buffer anything.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::redirect;
use url::{Host, Url};

use crate::policy::NetworkPolicy;
use crate::signature::{sign, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};

/// The longest a TCP (and TLS) connection may take to set up, when the whole-request
/// timeout is longer than this.
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(10);

/// A delivery the receiver accepted with a 2xx status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The status code of the answer, from 200 to 299.
    pub status: u16,
    /// The time from sending the request to receiving the answer's head.
    pub elapsed: Duration,
}

/// Why a delivery did not succeed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DeliveryError {
    /// The network policy does not allow the URL's addresses; nothing was sent.
    #[error("refused by the network policy: {0}")]
    Refused(String),
    /// No complete answer came within the timeout.
    #[error("timed out")]
    TimedOut,
    /// The exchange failed: the host could not be resolved, the connection could not be
    /// made or was broken, or the answer was not valid HTTP.
    #[error("could not deliver: {0}")]
    Connect(String),
    /// The receiver answered with a status outside 2xx (3xx included: redirects are not
    /// followed).
    #[error("the receiver answered with status {0}")]
    Status(u16),
    /// The request could not be made from what was given (a message id that cannot be a
    /// header value, a URL that is not http or https); nothing was sent.
    #[error("invalid delivery request: {0}")]
    Invalid(String),
}

impl DeliveryError {
    /// Whether trying again cannot help, so the delivery should be given up.
    ///
    /// Permanent: a refusal by the policy, an invalid request, a redirect (3xx), and a 4xx
    /// other than 408 (request timeout) and 429 (too many requests). Everything else (5xx,
    /// 408, 429, time-outs, connection failures) may pass on a later attempt.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Refused(_) | Self::Invalid(_) => true,
            Self::TimedOut | Self::Connect(_) => false,
            Self::Status(status) => match status {
                408 | 429 => false,
                300..=499 => true,
                _ => false,
            },
        }
    }
}

/// The delivery client could not be built (for instance, a user agent that is not a valid
/// header value, or TLS that could not be set up).
#[derive(Debug, thiserror::Error)]
#[error("could not build the webhook delivery client")]
pub struct BuildError(#[source] reqwest::Error);

/// Sends webhooks: signed POSTs, only to addresses the network policy permits.
///
/// Cheap to share: clone it or put it in an `Arc`; connections are pooled inside.
#[derive(Debug, Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    policy: Arc<NetworkPolicy>,
}

impl Deliverer {
    /// A client that follows no redirect, ignores proxy settings from the environment,
    /// gives each request `timeout` from start to the answer's head (and connection set-up
    /// at most 10 seconds of it), sends `user_agent`, and connects only to addresses that
    /// `policy` permits.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built, as when `user_agent` is not a valid header
    /// value.
    pub fn new(
        policy: Arc<NetworkPolicy>,
        timeout: Duration,
        user_agent: &str,
    ) -> Result<Self, BuildError> {
        let resolver = PolicyResolver {
            policy: Arc::clone(&policy),
        };
        let client = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(CONNECT_TIMEOUT_MAX))
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            .user_agent(user_agent)
            .build()
            .map_err(BuildError)?;
        Ok(Self { client, policy })
    }

    /// The policy this client delivers under.
    #[must_use]
    pub fn policy(&self) -> &NetworkPolicy {
        &self.policy
    }

    /// POSTs `body` to `url` as `application/json`, signed for `id` with `secret` (the
    /// secret's bytes, see [`crate::secret_bytes`]) and the current time.
    ///
    /// `id` must be the same on every attempt of one message, so that receivers can drop
    /// duplicates. The answer's body is not read.
    ///
    /// # Errors
    ///
    /// A [`DeliveryError`]; [`DeliveryError::is_permanent`] tells whether to try again.
    pub async fn deliver(
        &self,
        url: &Url,
        id: &str,
        secret: &[u8],
        body: Vec<u8>,
    ) -> Result<Delivered, DeliveryError> {
        self.check_literal(url)?;
        let id_value = HeaderValue::from_str(id).map_err(|_| {
            DeliveryError::Invalid("the message id is not a valid header value".to_owned())
        })?;
        let timestamp = unix_now();
        let signature = sign(secret, id, timestamp, &body);
        let started = Instant::now();
        let response = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(HEADER_ID, id_value)
            .header(HEADER_TIMESTAMP, HeaderValue::from(timestamp))
            .header(HEADER_SIGNATURE, signature)
            .body(body)
            .send()
            .await
            .map_err(classify)?;
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        // Dropped unread: the status is the whole answer we need.
        drop(response);
        if (200..300).contains(&status) {
            Ok(Delivered { status, elapsed })
        } else {
            Err(DeliveryError::Status(status))
        }
    }

    /// Refuses a URL whose host is an IP literal the policy does not permit: reqwest
    /// connects to literals without asking the resolver.
    fn check_literal(&self, url: &Url) -> Result<(), DeliveryError> {
        match literal_ip(url) {
            Some(ip) if !self.policy.permits(ip) => Err(DeliveryError::Refused(format!(
                "address {ip} is not allowed"
            ))),
            _ => Ok(()),
        }
    }
}

/// The address of a URL whose host is an IP literal.
fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        // The parser turns literals into the two cases above for http and https; this
        // catches any other scheme's literal all the same.
        Host::Domain(domain) => domain
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok(),
    }
}

/// Now, in unix seconds (0 if the clock is before 1970).
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

/// Turns reqwest's error into ours, looking through its chain of causes.
fn classify(error: reqwest::Error) -> DeliveryError {
    if let Some(refused) = find_cause::<RefusedHost>(&error) {
        return DeliveryError::Refused(refused.to_string());
    }
    if error.is_timeout() {
        return DeliveryError::TimedOut;
    }
    let builder = error.is_builder();
    let message = describe(&error.without_url());
    if builder {
        DeliveryError::Invalid(message)
    } else {
        DeliveryError::Connect(message)
    }
}

/// The first cause of type `T` in an error's chain.
fn find_cause<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// An error and its causes, as one line.
fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut message = error.to_string();
    let mut current = error.source();
    while let Some(cause) = current {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        current = cause.source();
    }
    message
}

/// A host whose addresses the policy refuses, every one of them.
#[derive(Debug, thiserror::Error)]
#[error("host {host} resolves only to refused addresses")]
struct RefusedHost {
    host: String,
}

/// The resolver that keeps only the addresses the policy permits.
struct PolicyResolver {
    policy: Arc<NetworkPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|error| format!("could not resolve host {host}: {error}"))?
                .collect();
            if found.is_empty() {
                return Err(format!("host {host} has no addresses").into());
            }
            let permitted: Vec<SocketAddr> = found
                .into_iter()
                .filter(|address| policy.permits(address.ip()))
                .collect();
            if permitted.is_empty() {
                return Err(RefusedHost { host }.into());
            }
            let addrs: Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanence_by_error() {
        let cases: &[(DeliveryError, bool)] = &[
            (
                DeliveryError::Refused("address 10.0.0.1 is not allowed".into()),
                true,
            ),
            (DeliveryError::Invalid("bad id".into()), true),
            (DeliveryError::TimedOut, false),
            (DeliveryError::Connect("connection refused".into()), false),
            (DeliveryError::Status(301), true),
            (DeliveryError::Status(302), true),
            (DeliveryError::Status(308), true),
            (DeliveryError::Status(400), true),
            (DeliveryError::Status(401), true),
            (DeliveryError::Status(404), true),
            (DeliveryError::Status(408), false),
            (DeliveryError::Status(410), true),
            (DeliveryError::Status(429), false),
            (DeliveryError::Status(499), true),
            (DeliveryError::Status(500), false),
            (DeliveryError::Status(502), false),
            (DeliveryError::Status(503), false),
        ];
        for (error, permanent) in cases {
            assert_eq!(error.is_permanent(), *permanent, "{error:?}");
        }
    }

    #[test]
    fn literal_hosts_are_recognised() {
        let cases: &[(&str, Option<&str>)] = &[
            ("http://127.0.0.1:8080/", Some("127.0.0.1")),
            (
                "http://169.254.169.254/latest/meta-data/",
                Some("169.254.169.254"),
            ),
            ("http://2130706433/", Some("127.0.0.1")),
            ("http://0x7f.1/", Some("127.0.0.1")),
            ("http://[::1]/", Some("::1")),
            ("http://[::ffff:127.0.0.1]/", Some("::ffff:127.0.0.1")),
            ("https://hooks.example.com/", None),
        ];
        for &(raw, expected) in cases {
            let url = Url::parse(raw).expect("url");
            let expected = expected.map(|ip| ip.parse::<IpAddr>().expect("ip"));
            assert_eq!(literal_ip(&url), expected, "{raw}");
        }
    }

    #[test]
    fn literal_check_refuses_metadata_address() {
        let deliverer = Deliverer::new(
            Arc::new(NetworkPolicy::default()),
            Duration::from_millis(300),
            "tm-webhooks-test",
        )
        .expect("client");
        let url = Url::parse("http://169.254.169.254/latest/meta-data/").expect("url");
        let refused = deliverer.check_literal(&url);
        assert!(
            matches!(&refused, Err(DeliveryError::Refused(message)) if message.contains("169.254.169.254")),
            "{refused:?}"
        );
    }

    #[test]
    fn invalid_user_agent_fails_to_build() {
        let built = Deliverer::new(
            Arc::new(NetworkPolicy::default()),
            Duration::from_secs(1),
            "bad\nagent",
        );
        assert!(built.is_err());
    }

    #[test]
    fn describe_joins_causes_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(describe(&io), "refused");
    }

    #[tokio::test]
    async fn resolver_keeps_only_permitted_addresses() {
        let allow = vec!["127.0.0.0/8".parse().expect("network")];
        let resolver = PolicyResolver {
            policy: Arc::new(NetworkPolicy::new(allow)),
        };
        let name: Name = "localhost".parse().expect("name");
        let addresses: Vec<SocketAddr> = resolver.resolve(name).await.expect("resolves").collect();
        assert!(!addresses.is_empty());
        assert!(
            addresses
                .iter()
                .all(|address| address.ip().is_loopback() && address.is_ipv4()),
            "{addresses:?}"
        );
    }
}
