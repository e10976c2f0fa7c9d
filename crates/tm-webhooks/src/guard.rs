//! What keeps the crate's outgoing connections inside the [`NetworkPolicy`]: shared by the
//! webhook [`Deliverer`](crate::Deliverer) and the endpoint [`Prober`](crate::Prober), so
//! that both obey exactly the same rules.
//!
//! - [`resolve_permitted`] resolves a host name and keeps only the addresses the policy
//!   permits; [`PolicyResolver`] plugs it into reqwest, so the addresses checked are the
//!   addresses connected to (no second lookup a DNS server could answer differently).
//! - [`check_ip`] judges an IP literal, which reqwest connects to without asking the
//!   resolver.
//! - [`client_builder`] starts every reqwest client with the resolver, no redirects and no
//!   proxy from the environment (the policy must judge the real destination).
//! - [`classify`] reads reqwest's errors the same way for both clients.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;
use url::{Host, Url};

use crate::policy::NetworkPolicy;

/// An HTTP client of this crate (webhook delivery or endpoint probe) could not be built:
/// for instance, a user agent that is not a valid header value, or TLS that could not be
/// set up.
#[derive(Debug, thiserror::Error)]
#[error("could not build the HTTP client")]
pub struct BuildError(#[source] pub(crate) reqwest::Error);

/// A host whose addresses the policy refuses, every one of them.
#[derive(Debug, thiserror::Error)]
#[error("host {host} resolves only to refused addresses")]
pub(crate) struct RefusedHost {
    host: String,
}

/// An IP literal the policy refuses.
#[derive(Debug, thiserror::Error)]
#[error("address {ip} is not allowed")]
pub(crate) struct RefusedAddress {
    ip: IpAddr,
}

/// A host that could not be resolved, or that has no address.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unresolved(String);

/// Why [`resolve_permitted`] gave no address.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    /// The host has addresses, and the policy refuses all of them.
    #[error(transparent)]
    Refused(#[from] RefusedHost),
    /// The host could not be resolved, or has no address.
    #[error(transparent)]
    Unresolved(#[from] Unresolved),
}

/// Refuses an IP literal the policy does not permit.
pub(crate) fn check_ip(policy: &NetworkPolicy, ip: IpAddr) -> Result<(), RefusedAddress> {
    if policy.permits(ip) {
        Ok(())
    } else {
        Err(RefusedAddress { ip })
    }
}

/// The address of a URL whose host is an IP literal.
pub(crate) fn literal_ip(url: &Url) -> Option<IpAddr> {
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

/// Resolves a host name and keeps the addresses the policy permits, in the resolver's
/// order, with `port`.
///
/// The messages name the host but never the addresses it resolved to: they are shown to
/// users, who must not learn the layout of our network from them.
pub(crate) async fn resolve_permitted(
    policy: &NetworkPolicy,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| Unresolved(format!("could not resolve host {host}: {error}")))?
        .collect();
    if found.is_empty() {
        return Err(Unresolved(format!("host {host} has no addresses")).into());
    }
    let permitted: Vec<SocketAddr> = found
        .into_iter()
        .filter(|address| policy.permits(address.ip()))
        .collect();
    if permitted.is_empty() {
        return Err(RefusedHost {
            host: host.to_owned(),
        }
        .into());
    }
    Ok(permitted)
}

/// The resolver that keeps only the addresses the policy permits.
pub(crate) struct PolicyResolver {
    pub(crate) policy: Arc<NetworkPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // reqwest puts the URL's port on the addresses itself; 0 is a placeholder.
            match resolve_permitted(&policy, &host, 0).await {
                Ok(permitted) => {
                    let addrs: Addrs = Box::new(permitted.into_iter());
                    Ok(addrs)
                }
                // Kept as their own types, so that they can be found in reqwest's chain.
                Err(ResolveError::Refused(refused)) => Err(refused.into()),
                Err(ResolveError::Unresolved(unresolved)) => Err(unresolved.into()),
            }
        })
    }
}

/// The longest a TCP (and TLS) connection may take to set up, when the request's own
/// timeout is longer than this.
pub(crate) const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(10);

/// A reqwest client builder with what every client of this crate needs: the policy's
/// resolver, no redirects (an answer cannot bounce us elsewhere), no proxy from the
/// environment, and `user_agent`. TLS is rustls, the only backend the crate enables.
pub(crate) fn client_builder(
    policy: &Arc<NetworkPolicy>,
    user_agent: &str,
) -> reqwest::ClientBuilder {
    let resolver = PolicyResolver {
        policy: Arc::clone(policy),
    };
    reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(resolver))
        .user_agent(user_agent)
}

/// A reqwest error, sorted into what the clients report. Each client words the last two
/// kinds in its own way.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The resolver refused every address of the host.
    Refused(String),
    /// The request's timeout (or the connect timeout) passed.
    TimedOut,
    /// The request could not be built from what was given.
    Invalid(reqwest::Error),
    /// Resolution, connection, TLS or HTTP failed.
    Connect(reqwest::Error),
}

/// Sorts reqwest's error, looking through its chain of causes. The URL is taken out of
/// the error: its path or query may hold a secret, and the messages are shown to users.
pub(crate) fn classify(error: reqwest::Error) -> Failure {
    if let Some(refused) = find_cause::<RefusedHost>(&error) {
        return Failure::Refused(refused.to_string());
    }
    if error.is_timeout() {
        return Failure::TimedOut;
    }
    let error = error.without_url();
    if error.is_builder() {
        Failure::Invalid(error)
    } else {
        Failure::Connect(error)
    }
}

/// The first cause of type `T` in an error's chain.
pub(crate) fn find_cause<'a, T: StdError + 'static>(
    error: &'a (dyn StdError + 'static),
) -> Option<&'a T> {
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
pub(crate) fn describe(error: &(dyn StdError + 'static)) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn check_ip_refuses_metadata_address() {
        let policy = NetworkPolicy::default();
        let refused = check_ip(&policy, "169.254.169.254".parse().expect("ip"));
        assert_eq!(
            refused.map_err(|error| error.to_string()),
            Err("address 169.254.169.254 is not allowed".to_owned())
        );
        assert!(check_ip(&policy, "8.8.8.8".parse().expect("ip")).is_ok());
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

    #[tokio::test]
    async fn resolve_permitted_refuses_loopback_by_default() {
        let refused = resolve_permitted(&NetworkPolicy::default(), "localhost", 80).await;
        assert!(
            matches!(&refused, Err(ResolveError::Refused(_))),
            "{refused:?}"
        );
        assert_eq!(
            refused.map_err(|error| error.to_string()),
            Err("host localhost resolves only to refused addresses".to_owned())
        );
    }
}
