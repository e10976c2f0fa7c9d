//! Webhooks and the secrets kept for them: which networks deliveries may reach, how
//! long a delivery may take, how many subscriptions a tenant may hold, and the keys
//! that encrypt the signing secrets at rest.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::render::Lines;

/// The webhook settings as read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhooksRaw {
    /// Networks (CIDR or single addresses, comma-separated) deliveries may reach even
    /// though they are loopback, private, link-local or otherwise internal.
    pub webhook_allow_networks: Option<String>,
    /// How long one delivery may take, connecting included.
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// Subscriptions a tenant may hold.
    pub max_webhooks_per_tenant: u32,
    /// The keys that encrypt secrets at rest: `id:base64key[,id:base64key…]`, the
    /// first sealing new secrets (see `tm_secrets`).
    pub secrets_key: Option<String>,
    /// A file holding the same, instead.
    pub secrets_key_file: Option<PathBuf>,
}

impl Default for WebhooksRaw {
    fn default() -> Self {
        Self {
            webhook_allow_networks: None,
            webhook_timeout: Duration::from_secs(10),
            max_webhooks_per_tenant: 100,
            secrets_key: None,
            secrets_key_file: None,
        }
    }
}

/// Where the secret keys come from.
#[derive(Clone, Debug)]
pub enum SecretKeySource {
    /// `TM_SECRETS_KEY`.
    Given(SecretString),
    /// `TM_SECRETS_KEY_FILE`.
    File(PathBuf),
    /// Neither: `<data_dir>/secrets.key`, made on first start.
    DataDir,
}

/// Webhooks.
#[derive(Clone, Debug)]
pub struct WebhooksConfig {
    pub allow_networks: Vec<IpNet>,
    pub timeout: Duration,
    pub max_per_tenant: u32,
    pub secret_keys: SecretKeySource,
}

impl WebhooksRaw {
    pub(crate) fn check(self, problems: &mut Problems) -> WebhooksConfig {
        problems.positive(&[("webhook_timeout", self.webhook_timeout)]);
        problems.at_least_one(&[(
            "max_webhooks_per_tenant",
            self.max_webhooks_per_tenant.into(),
        )]);
        let mut allow_networks = Vec::new();
        for item in
            crate::comma_separated(self.webhook_allow_networks.as_deref().unwrap_or_default())
        {
            if let Ok(net) = item.parse::<IpNet>() {
                allow_networks.push(net);
            } else if let Ok(ip) = item.parse::<std::net::IpAddr>() {
                allow_networks.push(IpNet::from(ip));
            } else {
                problems.add(
                    "webhook_allow_networks",
                    format!("{item:?} is neither a network (CIDR) nor an address"),
                );
            }
        }
        let secret_keys = match (self.secrets_key, self.secrets_key_file) {
            (Some(_), Some(_)) => {
                problems.add(
                    "secrets_key",
                    "set TM_SECRETS_KEY or TM_SECRETS_KEY_FILE, not both",
                );
                SecretKeySource::DataDir
            }
            (Some(spec), None) => {
                if let Err(err) = tm_secrets::SecretKeys::parse(&spec) {
                    problems.add("secrets_key", err.to_string());
                }
                SecretKeySource::Given(SecretString::from(spec))
            }
            (None, Some(file)) => SecretKeySource::File(file),
            (None, None) => SecretKeySource::DataDir,
        };
        WebhooksConfig {
            allow_networks,
            timeout: self.webhook_timeout,
            max_per_tenant: self.max_webhooks_per_tenant,
            secret_keys,
        }
    }
}

impl WebhooksConfig {
    /// The webhook lines of `check-config` (never a key).
    pub(crate) fn render(&self, out: &mut Lines) {
        let networks: Vec<String> = self
            .allow_networks
            .iter()
            .map(ToString::to_string)
            .collect();
        out.quoted("webhook_allow_networks", networks.join(","));
        out.duration("webhook_timeout", self.timeout);
        out.plain("max_webhooks_per_tenant", self.max_per_tenant);
        match &self.secret_keys {
            SecretKeySource::Given(_) => out.quoted("secrets_key", "(set)"),
            SecretKeySource::File(file) => out.quoted("secrets_key_file", file.display()),
            SecretKeySource::DataDir => out.unset("secrets_key"),
        }
    }
}
