//! Rate limits and tenant quotas: a quota per endpoint class (`20000/s`, `10/min`, …)
//! for each key and for each tenant's keys together, the key ids and networks no limit
//! applies to, and how many live keys a tenant may hold. The limiters themselves live
//! with the other guards.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tm_domain::KeyId;

use crate::error::Problems;
use crate::render::Lines;

/// The rate-limit settings as read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsRaw {
    /// Per key: resolve requests, e.g. `20000/s`.
    pub rate_limit_resolve: String,
    /// Per key: other reads.
    pub rate_limit_read: String,
    /// Per key: route writes.
    pub rate_limit_write: String,
    /// Per key: key management.
    pub rate_limit_keys: String,
    /// Per tenant, all its keys together: resolve requests.
    pub rate_limit_tenant_resolve: String,
    /// Per tenant: other reads.
    pub rate_limit_tenant_read: String,
    /// Per tenant: route writes.
    pub rate_limit_tenant_write: String,
    /// Per tenant: key management.
    pub rate_limit_tenant_keys: String,
    /// Per client address: requests without a valid key.
    pub rate_limit_unauthenticated: String,
    /// Comma-separated key ids and networks (CIDR) that no limit applies to.
    pub rate_limit_exempt: String,
    /// Live (unrevoked) keys a tenant may hold at once.
    pub max_keys_per_tenant: u32,
}

impl Default for LimitsRaw {
    fn default() -> Self {
        Self {
            rate_limit_resolve: "20000/s".into(),
            rate_limit_read: "2000/s".into(),
            rate_limit_write: "500/s".into(),
            rate_limit_keys: "50/s".into(),
            // Ten keys' worth: one key never spends its tenant's whole budget, and a
            // tenant's many keys together never exceed it. Resolve's stays at 200000/s
            // or more so that a fleet's resolves are not cut by default.
            rate_limit_tenant_resolve: "200000/s".into(),
            rate_limit_tenant_read: "20000/s".into(),
            rate_limit_tenant_write: "5000/s".into(),
            rate_limit_tenant_keys: "500/s".into(),
            rate_limit_unauthenticated: "100/s".into(),
            rate_limit_exempt: String::new(),
            max_keys_per_tenant: 1000,
        }
    }
}

/// `count` requests per `period`, with bursts of up to `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub count: NonZeroU32,
    pub period: Duration,
}

/// Text that is not a quota such as `100/s`.
#[derive(Debug, PartialEq, Eq)]
pub struct QuotaParseError(String);

impl fmt::Display for QuotaParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QuotaParseError {}

impl FromStr for Quota {
    type Err = QuotaParseError;

    /// `"100/s"`, `"6000/min"`, `"10000/h"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            QuotaParseError(format!(
                "{s:?} is not a rate such as 100/s, 6000/min or 10000/h"
            ))
        };
        let (count, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let count = NonZeroU32::new(count).ok_or_else(bad)?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Quota { count, period })
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// The limits of every endpoint class, per key and per tenant, who is exempt, and the
/// most keys a tenant may hold.
#[derive(Clone, Debug)]
pub struct RateLimits {
    pub resolve: Quota,
    pub read: Quota,
    pub write: Quota,
    pub keys: Quota,
    pub unauthenticated: Quota,
    /// What all the keys of one tenant may draw together, per class, on top of each
    /// key's own budget (keys without a tenant draw only from their own).
    pub tenant_resolve: Quota,
    pub tenant_read: Quota,
    pub tenant_write: Quota,
    pub tenant_keys: Quota,
    pub exempt_keys: Vec<KeyId>,
    pub exempt_networks: Vec<IpNet>,
    /// Live keys a tenant may hold at once; creating one more is refused.
    pub max_keys_per_tenant: NonZeroU32,
}

impl LimitsRaw {
    pub(crate) fn check(&self, problems: &mut Problems) -> Option<RateLimits> {
        let mut quota = |key: &str, raw: &str| {
            raw.parse::<Quota>()
                .map_err(|e| problems.add(key, e.to_string()))
                .ok()
        };
        let resolve = quota("rate_limit_resolve", &self.rate_limit_resolve);
        let read = quota("rate_limit_read", &self.rate_limit_read);
        let write = quota("rate_limit_write", &self.rate_limit_write);
        let keys = quota("rate_limit_keys", &self.rate_limit_keys);
        let tenant_resolve = quota("rate_limit_tenant_resolve", &self.rate_limit_tenant_resolve);
        let tenant_read = quota("rate_limit_tenant_read", &self.rate_limit_tenant_read);
        let tenant_write = quota("rate_limit_tenant_write", &self.rate_limit_tenant_write);
        let tenant_keys = quota("rate_limit_tenant_keys", &self.rate_limit_tenant_keys);
        let unauthenticated = quota(
            "rate_limit_unauthenticated",
            &self.rate_limit_unauthenticated,
        );
        let mut exempt_keys = Vec::new();
        let mut exempt_networks = Vec::new();
        for item in crate::comma_separated(&self.rate_limit_exempt) {
            if let Ok(id) = item.parse::<KeyId>() {
                exempt_keys.push(id);
            } else if let Ok(net) = item.parse::<IpNet>() {
                exempt_networks.push(net);
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                exempt_networks.push(IpNet::from(ip));
            } else {
                problems.add(
                    "rate_limit_exempt",
                    format!("{item:?} is neither a key id nor an address or network (CIDR)"),
                );
            }
        }
        let max_keys_per_tenant = NonZeroU32::new(self.max_keys_per_tenant);
        if max_keys_per_tenant.is_none() {
            problems.add("max_keys_per_tenant", "must be at least 1");
        }
        Some(RateLimits {
            resolve: resolve?,
            read: read?,
            write: write?,
            keys: keys?,
            unauthenticated: unauthenticated?,
            tenant_resolve: tenant_resolve?,
            tenant_read: tenant_read?,
            tenant_write: tenant_write?,
            tenant_keys: tenant_keys?,
            exempt_keys,
            exempt_networks,
            max_keys_per_tenant: max_keys_per_tenant?,
        })
    }
}

impl RateLimits {
    /// The rate-limit lines of `check-config`.
    pub(crate) fn render(&self, out: &mut Lines) {
        out.quoted("rate_limit_resolve", self.resolve);
        out.quoted("rate_limit_read", self.read);
        out.quoted("rate_limit_write", self.write);
        out.quoted("rate_limit_keys", self.keys);
        out.quoted("rate_limit_tenant_resolve", self.tenant_resolve);
        out.quoted("rate_limit_tenant_read", self.tenant_read);
        out.quoted("rate_limit_tenant_write", self.tenant_write);
        out.quoted("rate_limit_tenant_keys", self.tenant_keys);
        out.quoted("rate_limit_unauthenticated", self.unauthenticated);
        let exempt: Vec<String> = self
            .exempt_keys
            .iter()
            .map(ToString::to_string)
            .chain(self.exempt_networks.iter().map(ToString::to_string))
            .collect();
        out.quoted("rate_limit_exempt", exempt.join(","));
        out.plain("max_keys_per_tenant", self.max_keys_per_tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_parse_from_text() {
        assert_eq!(
            "100/s".parse::<Quota>().expect("valid"),
            Quota {
                count: NonZeroU32::new(100).expect("positive"),
                period: Duration::from_secs(1)
            }
        );
        assert_eq!(
            "6000/min".parse::<Quota>().expect("valid").to_string(),
            "6000/min"
        );
        for bad in ["", "100", "0/s", "-1/s", "10/day", "x/s", "10/"] {
            assert!(bad.parse::<Quota>().is_err(), "{bad}");
        }
    }
}
