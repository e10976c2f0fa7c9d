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
//! The resolver, the literal check and the client's base settings live in `guard`, shared
//! with the endpoint [`Prober`](crate::Prober).
//!
//! The response body is never read: only the status matters, and a hostile receiver
//! cannot make us buffer anything.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use url::Url;

use crate::guard::{
    check_ip, classify, client_builder, describe, literal_ip, BuildError, Failure,
    CONNECT_TIMEOUT_MAX,
};
use crate::policy::NetworkPolicy;
use crate::signature::{sign, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};

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
        let client = client_builder(&policy, user_agent)
            .timeout(timeout)
            .connect_timeout(timeout.min(CONNECT_TIMEOUT_MAX))
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
    /// duplicates. The answer's body is not read. `trace` (W3C trace context headers of
    /// the sending span) is sent as given.
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
        trace: &[(&str, String)],
    ) -> Result<Delivered, DeliveryError> {
        self.check_literal(url)?;
        let id_value = HeaderValue::from_str(id).map_err(|_| {
            DeliveryError::Invalid("the message id is not a valid header value".to_owned())
        })?;
        let timestamp = unix_now();
        let signature = sign(secret, id, timestamp, &body);
        let started = Instant::now();
        let mut request = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(HEADER_ID, id_value)
            .header(HEADER_TIMESTAMP, HeaderValue::from(timestamp))
            .header(HEADER_SIGNATURE, signature);
        for (name, value) in trace {
            request = request.header(*name, value.as_str());
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|error| match classify(error) {
                Failure::Refused(message) => DeliveryError::Refused(message),
                Failure::TimedOut => DeliveryError::TimedOut,
                Failure::Invalid(error) => DeliveryError::Invalid(describe(&error)),
                Failure::Connect(error) => DeliveryError::Connect(describe(&error)),
            })?;
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
            Some(ip) => check_ip(&self.policy, ip)
                .map_err(|refused| DeliveryError::Refused(refused.to_string())),
            None => Ok(()),
        }
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
}
