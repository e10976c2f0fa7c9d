//! Redis, shared by every instance of a fleet: fleet-wide rate limits (GCRA in a Lua
//! script, atomic on the server), idempotency records, a lock so that one instance at a
//! time does an expensive rebuild, and publish/subscribe for change fan-out.
//!
//! Redis is never on the path of an answer's correctness. Every command is bounded by the
//! configured timeout and guarded by a circuit breaker: when Redis is down or slow, calls
//! fail fast with [`Unavailable`] and the caller goes on without it (local buckets, the
//! database, no lock). `redis_degraded` and the readiness probe say so meanwhile.

mod connection;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Cmd, FromRedisValue, Script, ScriptInvocation};
use tm_config::{RateLimits, RedisConfig, RedisNodes};
use tm_domain::TenantId;
use tm_resilience::{
    BreakerConfig, BreakerState, CircuitBreaker, RateClass, RateDecision, Subject,
};
use tm_store::{IdempotencyClaim, IdempotencyRecord};
use tm_telemetry::Metrics;

use connection::{Manager, Pool};

/// What can stop [`Redis::new`]: the client's own error.
pub use redis::RedisError;

/// Prefix of every key this service writes.
const PREFIX: &str = "tm:";

/// Redis could not do what was asked in time; go on without it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Redis is unavailable")]
pub struct Unavailable;

/// The outcome of drawing one request from a shared GCRA budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    pub allowed: bool,
    /// Requests left in the burst.
    pub remaining: u32,
    /// When refused: until one more request is allowed.
    pub retry_after: Duration,
    /// Until the budget is whole again.
    pub reset_after: Duration,
}

/// A held lock; give it back with [`Redis::unlock`] (it also expires by itself).
#[derive(Debug)]
pub struct Lock {
    key: String,
    token: String,
}

/// One request to Redis: a command, or a script (sent by digest, loaded when missing).
enum Request<'a> {
    Cmd(&'a Cmd),
    Script(&'a ScriptInvocation<'a>),
}

pub struct Redis {
    pool: Pool,
    timeout: Duration,
    connect_timeout: Duration,
    breaker: CircuitBreaker,
    metrics: Arc<Metrics>,
    /// Where to subscribe: every node of a cluster delivers every message.
    subscribe_to: Vec<redis::Client>,
    cluster: bool,
    gcra: Script,
    claim: Script,
    complete: Script,
    release: Script,
    /// Releases a lock, if still the caller's.
    compare_and_delete: Script,
}

/// Draws one request from each budget in `KEYS`, or from none: `ARGV[2i-1]`
/// microseconds per request and bursts of `ARGV[2i]` for `KEYS[i]`. The theoretical
/// arrival times are kept in microseconds of the server's clock, so that instances with
/// drifting clocks share one budget. Answers `{allowed, remaining, retry_us, reset_us}`
/// per budget, in order, up to the first that refuses (then nothing was drawn).
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
local drawn = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = interval * tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  if new_tat - now > tolerance then
    table.insert(out, 0)
    table.insert(out, 0)
    table.insert(out, new_tat - now - tolerance)
    table.insert(out, tat - now)
    return out
  end
  drawn[i] = new_tat
  table.insert(out, 1)
  table.insert(out, math.floor((tolerance - (new_tat - now)) / interval))
  table.insert(out, 0)
  table.insert(out, new_tat - now)
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%.0f', drawn[i]), 'PX', math.ceil((drawn[i] - now) / 1000) + 1)
end
return out
";

/// Claims the record at `KEYS[1]` with `ARGV[1]` for `ARGV[2]` ms, unless something is
/// kept there (`{1, kept}`) or the caller's index of live records at `KEYS[2]` holds
/// `ARGV[3]` of them (`{2, ''}`); claimed: `{0, ''}`. The index is a sorted set of keys
/// (member `ARGV[4]`) by expiry, in ms of the server's clock.
const CLAIM: &str = r"
local kept = redis.call('GET', KEYS[1])
if kept then return {1, kept} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return {2, ''} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[4])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return {0, ''}
";

/// Keeps the answer `ARGV[1]` at `KEYS[1]` for `ARGV[2]` ms, and its key `ARGV[3]` in
/// the caller's index at `KEYS[2]` as long.
const COMPLETE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
";

/// Gives up the claim at `KEYS[1]` if it still holds `ARGV[1]`, and takes its key
/// `ARGV[2]` out of the caller's index at `KEYS[2]`.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Deletes `KEYS[1]` if it still holds `ARGV[1]`.
const COMPARE_AND_DELETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

impl Redis {
    /// A pool for the configured nodes. Nothing is dialled yet: Redis being down at
    /// start-up makes the service degraded, not unable to start.
    pub fn new(config: &RedisConfig, metrics: Arc<Metrics>) -> Result<Self, redis::RedisError> {
        use secrecy::ExposeSecret;
        let urls: Vec<String> = match &config.nodes {
            RedisNodes::Single(url) => vec![url.expose_secret().to_owned()],
            RedisNodes::Cluster(urls) => {
                urls.iter().map(|u| u.expose_secret().to_owned()).collect()
            }
        };
        let manager = Manager::new(
            &urls,
            matches!(config.nodes, RedisNodes::Cluster(_)),
            config.connect_timeout,
            config.timeout,
        )?;
        let max = usize::try_from(config.pool_max).unwrap_or(usize::MAX);
        let pool = Pool::builder(manager)
            .max_size(max)
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| {
                redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "building the Redis pool",
                    e.to_string(),
                ))
            })?;
        let subscribe_to = urls
            .iter()
            .map(|u| redis::Client::open(u.as_str()))
            .collect::<Result<_, _>>()?;
        metrics.redis_degraded.set(0);
        Ok(Self {
            pool,
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            breaker: CircuitBreaker::new(BreakerConfig {
                // Only failures open it: the pool's own figures are not a fault.
                usage_percent: f64::INFINITY,
                max_waiting: u32::MAX,
                pressure_for: Duration::MAX,
                failures: 3,
                open_for: Duration::from_secs(1),
            })
            .named("redis"),
            metrics,
            subscribe_to,
            cluster: matches!(config.nodes, RedisNodes::Cluster(_)),
            gcra: Script::new(GCRA),
            claim: Script::new(CLAIM),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
            compare_and_delete: Script::new(COMPARE_AND_DELETE),
        })
    }

    /// `"single"` or `"cluster"`.
    pub fn mode(&self) -> &'static str {
        if self.cluster {
            "cluster"
        } else {
            "single"
        }
    }

    /// Whether calls are being refused without trying (Redis failed recently).
    pub fn degraded(&self) -> bool {
        self.breaker.state() != BreakerState::Closed
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// The figures of the Redis connection pool, named `redis`.
    pub fn pool_figures(&self) -> tm_telemetry::PoolFigures {
        let status = self.pool.status();
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        tm_telemetry::PoolFigures {
            pool: "redis",
            size: n(status.size),
            idle: n(status.available),
            in_use: n(status.size.saturating_sub(status.available)),
            waiting: n(status.waiting),
            max: n(status.max_size),
        }
    }

    /// Sends one request within the timeout, through the breaker, with its metrics.
    #[tracing::instrument(level = "debug", name = "redis.command", skip_all, fields(db.system = "redis", db.operation.name = command))]
    async fn run<T: FromRedisValue>(
        &self,
        command: &'static str,
        request: Request<'_>,
    ) -> Result<T, Unavailable> {
        let Some(ticket) = self.breaker.admit() else {
            self.note_state();
            return Err(Unavailable);
        };
        let started = Instant::now();
        // Opening a connection (a cluster's: its slot map too) has its own bound.
        let outcome = match tokio::time::timeout(self.connect_timeout, self.pool.get()).await {
            Err(_) => Ok(Err(format!(
                "no connection within {} ms",
                self.connect_timeout.as_millis()
            ))),
            Ok(Err(e)) => Ok(Err(e.to_string())),
            Ok(Ok(conn)) => tokio::time::timeout(self.timeout, self.send(conn, request)).await,
        };
        self.metrics
            .redis_command_duration
            .with_label_values(&[command])
            .observe(started.elapsed().as_secs_f64());
        let failure = match outcome {
            Ok(Ok(value)) => {
                ticket.succeeded();
                self.note_state();
                return Ok(value);
            }
            Ok(Err(error)) => error,
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        ticket.failed();
        self.metrics
            .redis_errors
            .with_label_values(&[command])
            .inc();
        tracing::debug!(command, error = %failure, "Redis command failed");
        self.note_state();
        Err(Unavailable)
    }

    /// One request on `conn`; a connection that broke is not given back to the pool.
    async fn send<T: FromRedisValue>(
        &self,
        mut conn: deadpool::managed::Object<Manager>,
        request: Request<'_>,
    ) -> Result<T, String> {
        let result = match request {
            Request::Cmd(cmd) => cmd.query_async(&mut *conn).await,
            Request::Script(invocation) => invocation.invoke_async(&mut *conn).await,
        };
        if let Err(e) = &result {
            // A time-out leaves a multiplexed connection usable (the late answer is
            // dropped); a frozen server is the breaker's business, not a reason to dial
            // again and wait on the handshake.
            if !e.is_timeout()
                && (e.is_unrecoverable_error() || e.is_connection_dropped() || e.is_io_error())
            {
                drop(deadpool::managed::Object::take(conn));
            }
        }
        result.map_err(|e| e.to_string())
    }

    fn note_state(&self) {
        let state = self.breaker.state();
        self.metrics.set_breaker("redis", state as i64);
        self.metrics
            .redis_degraded
            .set(i64::from(state != BreakerState::Closed));
    }

    /// A round trip, for the readiness probe and to close the breaker after an outage.
    pub async fn ping(&self) -> Result<Duration, Unavailable> {
        let started = Instant::now();
        self.run::<String>("ping", Request::Cmd(&redis::cmd("PING")))
            .await?;
        Ok(started.elapsed())
    }

    /// Draws one request from the shared budget `bucket` (`per_request` apart, bursts of
    /// `burst`).
    pub async fn gcra(
        &self,
        bucket: &str,
        per_request: Duration,
        burst: u32,
    ) -> Result<Gcra, Unavailable> {
        let drawn = self
            .gcra_all(&[(format!("{PREFIX}rate:{bucket}"), per_request, burst)])
            .await?;
        Ok(drawn[0])
    }

    /// Draws one request from every budget of `buckets` (`(key, per_request, burst)`)
    /// atomically, or from none if one refuses: the outcome of each, up to and
    /// including the first that refused. The keys must share a cluster hash slot.
    async fn gcra_all(
        &self,
        buckets: &[(String, Duration, u32)],
    ) -> Result<Vec<Gcra>, Unavailable> {
        let mut invocation = self.gcra.prepare_invoke();
        for (key, per_request, burst) in buckets {
            let micros = u64::try_from(per_request.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            invocation.key(key).arg(micros).arg(*burst);
        }
        let flat: Vec<i64> = self.run("rate_limit", Request::Script(&invocation)).await?;
        let us = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        let drawn: Vec<Gcra> = flat
            .chunks_exact(4)
            .map(|c| Gcra {
                allowed: c[0] == 1,
                remaining: u32::try_from(c[1]).unwrap_or(0),
                retry_after: us(c[2]),
                reset_after: us(c[3]),
            })
            .collect();
        if drawn.is_empty() {
            // Not what the script answers; a server that does is not to be trusted.
            return Err(Unavailable);
        }
        Ok(drawn)
    }

    /// Draws one request of `class` from `subject`'s fleet-wide budget and, for a key
    /// bound to a `tenant`, from the tenant's, atomically: a refusal by either draws from
    /// neither. Answers with the tighter decision; `None` when the subject is exempt.
    pub async fn rate_limit(
        &self,
        limits: &RateLimits,
        class: RateClass,
        subject: Subject,
        tenant: Option<&TenantId>,
    ) -> Result<Option<RateDecision>, Unavailable> {
        if subject.is_exempt(limits) {
            return Ok(None);
        }
        let quota = class.quota(limits);
        let who = match subject {
            Subject::Key(id) => format!("key:{id}"),
            Subject::BootstrapKey => "bootstrap".to_owned(),
            Subject::Address(ip) => format!("ip:{ip}"),
        };
        let class_name = class.as_str();
        let tenant_quota = tenant.zip(class.tenant_quota(limits));
        let mut buckets = Vec::with_capacity(2);
        let mut quotas = Vec::with_capacity(2);
        match tenant_quota {
            // A key's bucket and its tenant's share the tenant as hash tag, so that one
            // script on one cluster node draws from both.
            Some((tenant, shared)) => {
                let tag = format!("{PREFIX}rate:{{{tenant}}}:{class_name}");
                buckets.push((
                    format!("{tag}:{who}"),
                    per_request(quota),
                    quota.count.get(),
                ));
                buckets.push((
                    format!("{tag}:tenant"),
                    per_request(shared),
                    shared.count.get(),
                ));
                quotas.extend([quota, shared]);
            }
            None => {
                buckets.push((
                    format!("{PREFIX}rate:{class_name}:{who}"),
                    per_request(quota),
                    quota.count.get(),
                ));
                quotas.push(quota);
            }
        }
        let drawn = self.gcra_all(&buckets).await?;
        let decision = drawn
            .iter()
            .zip(quotas)
            .map(|(outcome, quota)| RateDecision {
                allowed: outcome.allowed,
                limit: quota.count.get(),
                remaining: outcome.remaining,
                reset_after: outcome.reset_after,
                retry_after: outcome.retry_after,
            })
            .reduce(RateDecision::tighter);
        Ok(decision)
    }

    /// A caller's record under `key`, and the index of its live records: both tagged
    /// with the caller, so that a cluster keeps them in one slot for one script.
    fn idempotency_keys(scope: &str, key: &str) -> (String, String) {
        (
            format!("{PREFIX}idempotency:{{{scope}}}:{key}"),
            format!("{PREFIX}idempotency-index:{{{scope}}}"),
        )
    }

    /// Claims `key` for a request with `fingerprint` (held `pending_for`), unless
    /// something is kept under it or the caller holds `max_live` live records.
    pub async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        pending_for: Duration,
        max_live: u32,
    ) -> Result<IdempotencyClaim, Unavailable> {
        let (record, index) = Self::idempotency_keys(scope, key);
        let mut invocation = self.claim.prepare_invoke();
        invocation
            .key(record)
            .key(index)
            .arg(pending_record(fingerprint))
            .arg(millis(pending_for).max(1))
            .arg(max_live)
            .arg(key);
        let (outcome, kept): (i64, String) = self
            .run("idempotency", Request::Script(&invocation))
            .await?;
        Ok(match outcome {
            0 => IdempotencyClaim::Claimed,
            2 => IdempotencyClaim::Full,
            _ => IdempotencyClaim::Kept(serde_json::from_str(&kept).unwrap_or_else(|error| {
                // Never write twice: a record that cannot be read holds the key as if
                // its request were still being answered, until it expires.
                tracing::warn!(%error, "unreadable idempotency record in Redis");
                IdempotencyRecord {
                    fingerprint: fingerprint.to_owned(),
                    response: None,
                }
            })),
        })
    }

    /// Keeps the answer under a claimed key for `keep_for`.
    pub async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        record: &IdempotencyRecord,
        keep_for: Duration,
    ) -> Result<(), Unavailable> {
        let json = serde_json::to_string(record).expect("a record always serializes");
        let (kept_at, index) = Self::idempotency_keys(scope, key);
        let mut invocation = self.complete.prepare_invoke();
        invocation
            .key(kept_at)
            .key(index)
            .arg(json)
            .arg(millis(keep_for).max(1))
            .arg(key);
        self.run::<i64>("idempotency", Request::Script(&invocation))
            .await
            .map(drop)
    }

    /// Gives up a pending claim made with `fingerprint`.
    pub async fn release_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<(), Unavailable> {
        let (record, index) = Self::idempotency_keys(scope, key);
        let mut invocation = self.release.prepare_invoke();
        invocation
            .key(record)
            .key(index)
            .arg(pending_record(fingerprint))
            .arg(key);
        self.run::<i64>("idempotency", Request::Script(&invocation))
            .await
            .map(drop)
    }

    /// Takes the fleet-wide lock `name` for at most `ttl`; `None` if another holds it.
    pub async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<Lock>, Unavailable> {
        let lock = Lock {
            key: format!("{PREFIX}lock:{name}"),
            token: uuid::Uuid::now_v7().to_string(),
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(&lock.key)
            .arg(&lock.token)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl).max(1));
        let taken: Option<String> = self.run("lock", Request::Cmd(&cmd)).await?;
        Ok(taken.map(|_| lock))
    }

    /// Gives `lock` back, if it is still ours.
    pub async fn unlock(&self, lock: Lock) -> Result<(), Unavailable> {
        let mut invocation = self.compare_and_delete.prepare_invoke();
        invocation.key(&lock.key).arg(&lock.token);
        self.run::<i64>("lock", Request::Script(&invocation))
            .await
            .map(drop)
    }

    /// Publishes `message` to every subscriber of `channel` across the fleet.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), Unavailable> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(format!("{PREFIX}{channel}")).arg(message);
        self.run::<i64>("publish", Request::Cmd(&cmd))
            .await
            .map(drop)
    }

    /// The messages published to `channel`, from the first node that answers; the
    /// stream ends when that node's connection does.
    pub async fn subscribe(
        &self,
        channel: &str,
    ) -> Result<futures::stream::BoxStream<'static, String>, Unavailable> {
        use futures::StreamExt;
        let pubsub = self.pubsub(channel).await?;
        Ok(pubsub
            .into_on_message()
            .filter_map(|message| async move { message.get_payload::<String>().ok() })
            .boxed())
    }

    async fn pubsub(&self, channel: &str) -> Result<redis::aio::PubSub, Unavailable> {
        for client in &self.subscribe_to {
            let attempt = tokio::time::timeout(self.connect_timeout, async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(format!("{PREFIX}{channel}")).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            match attempt {
                Ok(Ok(pubsub)) => return Ok(pubsub),
                Ok(Err(e)) => tracing::debug!(error = %e, "subscribing on a Redis node failed"),
                Err(_) => tracing::debug!("subscribing on a Redis node timed out"),
            }
        }
        Err(Unavailable)
    }
}

fn pending_record(fingerprint: &str) -> String {
    serde_json::to_string(&IdempotencyRecord {
        fingerprint: fingerprint.to_owned(),
        response: None,
    })
    .expect("a record always serializes")
}

/// The GCRA emission interval of `quota`.
fn per_request(quota: tm_config::Quota) -> Duration {
    quota.period / quota.count.get()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
