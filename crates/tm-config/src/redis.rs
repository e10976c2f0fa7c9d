//! Redis, when configured: one server or the seed nodes of a cluster, the pool and its
//! time-outs.

use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::render::Lines;
use crate::urls;

/// The Redis settings as read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisRaw {
    /// One Redis server, `redis://host:port[/db]`.
    pub redis_url: Option<String>,
    /// The seed nodes of a Redis Cluster, comma-separated `redis://host:port`.
    pub redis_cluster_urls: Option<String>,
    /// Connections in the Redis pool.
    pub redis_pool_max: u32,
    /// Bound on one Redis command; beyond it the request goes on without Redis.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub redis_connect_timeout: Duration,
}

impl Default for RedisRaw {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_cluster_urls: None,
            redis_pool_max: 16,
            redis_timeout: Duration::from_millis(250),
            redis_connect_timeout: Duration::from_secs(1),
        }
    }
}

/// Where Redis is: one server, or the seed nodes of a cluster.
#[derive(Clone, Debug)]
pub enum RedisNodes {
    Single(SecretString),
    Cluster(Vec<SecretString>),
}

/// Redis, when configured: shared rate limits, idempotency keys, the fleet-wide
/// rebuild lock and key-revocation fan-out.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub nodes: RedisNodes,
    pub pool_max: u32,
    /// Bound on one command (and on waiting for a pooled connection).
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl RedisRaw {
    /// Redis if configured; `None` if not, or if wrong (with the problems recorded).
    pub(crate) fn check(self, problems: &mut Problems) -> Option<RedisConfig> {
        problems.at_least_one(&[("redis_pool_max", self.redis_pool_max.into())]);
        problems.positive(&[
            ("redis_timeout", self.redis_timeout),
            ("redis_connect_timeout", self.redis_connect_timeout),
        ]);
        let single = self
            .redis_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty());
        let cluster: Vec<&str> =
            crate::comma_separated(self.redis_cluster_urls.as_deref().unwrap_or_default())
                .collect();
        let nodes = match (single, cluster.is_empty()) {
            (None, true) => return None,
            (Some(_), false) => {
                problems.add(
                    "redis_cluster_urls",
                    "set either TM_REDIS_URL or TM_REDIS_CLUSTER_URLS, not both",
                );
                return None;
            }
            (Some(url), true) => RedisNodes::Single(
                urls::redis_url(url)
                    .map_err(|message| problems.add("redis_url", message))
                    .ok()?,
            ),
            (None, false) => {
                let (good, bad): (Vec<&str>, Vec<&str>) = cluster
                    .into_iter()
                    .partition(|u| urls::redis_url(u).is_ok());
                if !bad.is_empty() {
                    let bad: Vec<String> = bad.into_iter().map(urls::redact_url).collect();
                    problems.add(
                        "redis_cluster_urls",
                        format!(
                            "not redis:// URLs (TLS is not built in): {}",
                            bad.join(", ")
                        ),
                    );
                    return None;
                }
                RedisNodes::Cluster(
                    good.into_iter()
                        .map(|u| SecretString::from(u.to_owned()))
                        .collect(),
                )
            }
        };
        Some(RedisConfig {
            nodes,
            pool_max: self.redis_pool_max,
            timeout: self.redis_timeout,
            connect_timeout: self.redis_connect_timeout,
        })
    }
}

/// The Redis lines of `check-config`.
pub(crate) fn render(redis: Option<&RedisConfig>, out: &mut Lines) {
    let Some(redis) = redis else {
        out.unset("redis_url");
        return;
    };
    match &redis.nodes {
        RedisNodes::Single(url) => out.url("redis_url", url),
        RedisNodes::Cluster(urls) => out.urls("redis_cluster_urls", urls),
    }
    out.plain("redis_pool_max", redis.pool_max);
    out.duration("redis_timeout", redis.timeout);
    out.duration("redis_connect_timeout", redis.connect_timeout);
}
