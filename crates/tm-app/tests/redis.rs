//! Redis: fleet-wide rate limits, idempotency keys across instances, and the service
//! going on while Redis is gone or failing over — on a Redis server and a six-node
//! Redis Cluster of the test's own (see `tm_testing::RedisCluster`).
//!
//! Runs when `TM_TEST_REDIS_SERVER` names a `redis-server` binary (the test command
//! sets it).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tm_testing::{eventually, RedisCluster, RedisServer, TestApp, TestAppBuilder};

const ADMIN: &str = "redis-test-admin-key-0123456789abcdefgh";

/// An instance as these tests start it; Redis is added by each.
fn instance_builder() -> TestAppBuilder {
    TestApp::builder()
        .admin_key(ADMIN)
        .configure(|raw| raw.telemetry.pool_sample_interval = Duration::from_millis(100))
}

fn route(service: &str) -> Value {
    json!({"tenant": "acme", "service": service, "env": "prod", "version": "v1",
           "url": "http://checkout.internal"})
}

async fn create(
    instance: &TestApp,
    service: &str,
    key: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    instance
        .send(
            ADMIN,
            Method::POST,
            "/api/v1/routes",
            Some(route(service)),
            &[("Idempotency-Key", key)],
        )
        .await
}

async fn fallbacks(instance: &TestApp, feature: &str) -> f64 {
    instance
        .metric_or_zero(&format!("redis_fallbacks_total{{feature=\"{feature}\"}}"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_three_instances() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let instance = instance_builder()
        .redis_cluster(&cluster)
        .configure(|raw| raw.limits.rate_limit_read = "30/min".into());
    let instances = [
        instance.spawn().await,
        instance.spawn().await,
        instance.spawn().await,
    ];
    let mut allowed = 0;
    let mut refused = 0;
    for i in 0..90 {
        let (status, headers, _) = instances[i % 3]
            .send(ADMIN, Method::GET, "/api/v1/routes", None, &[])
            .await;
        match status {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert!(headers.contains_key("retry-after"));
                assert_eq!(headers["x-rate-limit-limit"], "30");
            }
            other => panic!("unexpected {other}"),
        }
    }
    // The burst of 30, plus at most what refills (one per 2 s) while the requests run.
    // Budgets of each instance's own would have let all 90 through.
    assert!(
        (30..=32).contains(&allowed),
        "{allowed} of 90 allowed, {refused} refused"
    );
    for instance in &instances {
        assert_eq!(fallbacks(instance, "rate_limit").await, 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_write_gets_the_first_answer_from_any_instance() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let a = instance_builder().redis_cluster(&cluster).spawn().await;
    let b = instance_builder().redis_cluster(&cluster).spawn().await;

    let (status, headers, first) = create(&a, "checkout", "order-7-create").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(!headers.contains_key("idempotent-replayed"));
    // The same request again, to the other instance: the first answer, not a new route.
    let (status, headers, again) = create(&b, "checkout", "order-7-create").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again, first);
    assert_eq!(
        headers["location"],
        format!("/api/v1/routes/{}", first["id"].as_str().expect("id"))
    );
    let (_, _, listed) = b
        .send(
            ADMIN,
            Method::GET,
            "/api/v1/routes?service=checkout",
            None,
            &[],
        )
        .await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "b never wrote"
    );
    // The same key with another request: 422, naming the header.
    let (status, _, problem) = create(&b, "payments", "order-7-create").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    // Kept in Redis (on one master of the cluster), not in the database.
    let masters = cluster.masters();
    let kept: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| masters.contains(&n.port))
        .flat_map(|n| {
            n.cli(&["--scan", "--pattern", "tm:idempotency:*"])
                .expect("scan")
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(fallbacks(&a, "idempotency").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_records_in_redis_are_bounded_per_caller() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let instance = instance_builder()
        .redis(&redis)
        .configure(|raw| raw.http.idempotency_max_keys = 2)
        .spawn()
        .await;
    for (service, key) in [("one", "k1"), ("two", "k2")] {
        let (status, _, body) = create(&instance, service, key).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, headers, problem) = create(&instance, "three", "k3").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert_eq!(
        problem["type"],
        "urn:traffic-manager:problem:idempotency-keys-exhausted"
    );
    assert!(headers.contains_key("retry-after"));
    // Repeats are still answered from Redis.
    let (status, headers, _) = create(&instance, "one", "k1").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    // Nothing went to the database.
    assert_eq!(fallbacks(&instance, "idempotency").await, 0.0);
    let index = redis
        .cli(&["--scan", "--pattern", "tm:idempotency-index:*"])
        .expect("scan");
    assert_eq!(index.lines().count(), 1, "{index}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_requests_go_on_degraded_and_recover() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let instance = instance_builder().redis(&redis).spawn().await;
    let (status, ready) = instance.ready().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["checks"]["redis"]["status"], "healthy");
    assert_eq!(ready["checks"]["redis"]["pool"]["max"], 16);

    redis.kill();
    // Writes, repeats and rate-limited reads go on without Redis, and fast.
    let started = std::time::Instant::now();
    let (status, _, first) = create(&instance, "checkout", "during-outage").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, headers, again) = create(&instance, "checkout", "during-outage").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again, first);
    for _ in 0..10 {
        let (status, _, _) = instance
            .send(ADMIN, Method::GET, "/api/v1/routes", None, &[])
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let (status, ready) = instance.ready().await;
    assert_eq!(
        status,
        StatusCode::OK,
        "Redis down is no reason to leave the load balancer"
    );
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["checks"]["redis"]["status"], "degraded");
    assert_eq!(instance.metric_or_zero("redis_degraded").await, 1.0);
    assert!(fallbacks(&instance, "idempotency").await >= 1.0);
    assert!(fallbacks(&instance, "rate_limit").await >= 1.0);
    assert!(
        instance
            .metric_or_zero("redis_errors_total{command=\"idempotency\"}")
            .await
            >= 1.0
    );

    redis.restart();
    eventually(Duration::from_secs(10), "ready again", || async {
        instance.ready().await.1["status"] == "ready"
    })
    .await;
    assert_eq!(instance.metric_or_zero("redis_degraded").await, 0.0);
    // The answer kept in the database during the outage still answers the repeat.
    let (status, headers, again) = create(&instance, "checkout", "during-outage").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_a_request_at_most_its_timeout() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let instance = instance_builder()
        .redis(&redis)
        .configure(|raw| raw.redis.redis_timeout = Duration::from_millis(100))
        .spawn()
        .await;
    let (status, _, _) = create(&instance, "warm-up", "warm-up").await;
    assert_eq!(status, StatusCode::CREATED);

    redis.signal("STOP");
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    for n in 0..30 {
        let sent = std::time::Instant::now();
        let (status, _, _) = instance
            .send(ADMIN, Method::GET, "/api/v1/routes", None, &[])
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) =
            create(&instance, &format!("frozen-{n}"), &format!("frozen-{n}")).await;
        assert_eq!(status, StatusCode::CREATED);
        slowest = slowest.max(sent.elapsed());
    }
    // A request waits for Redis at most once per command it needs (rate limit, claim,
    // answer); after three failures the breaker answers for Redis at once.
    assert!(slowest < Duration::from_millis(600), "slowest {slowest:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "60 requests took {:?}",
        started.elapsed()
    );
    let (status, ready) = instance.ready().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["status"], "degraded", "{ready}");

    redis.signal("CONT");
    eventually(Duration::from_secs(10), "ready again", || async {
        instance.ready().await.1["status"] == "ready"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_rides_out_a_cluster_master_failing_over() {
    let Some(mut cluster) = RedisCluster::start() else {
        return;
    };
    let instance = Arc::new(instance_builder().redis_cluster(&cluster).spawn().await);
    let (status, _, _) = create(&instance, "warm-up", "warm-up").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(fallbacks(&instance, "idempotency").await, 0.0);

    // Load throughout: reads (a shared rate limit each) and idempotent writes.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let load = {
        let (instance, stop, rounds) = (instance.clone(), stop.clone(), rounds.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                rounds.store(n, Ordering::Relaxed);
                let (read, _, _) = instance
                    .send(ADMIN, Method::GET, "/api/v1/routes?limit=1", None, &[])
                    .await;
                let (write, _, _) =
                    create(&instance, &format!("svc-{n}"), &format!("load-{n}")).await;
                statuses.extend([read, write]);
            }
            statuses
        })
    };
    eventually(Duration::from_secs(10), "the load under way", || async {
        rounds.load(Ordering::Relaxed) >= 5
    })
    .await;
    let killed = cluster.kill_master_of("tm:rate:read:bootstrap");
    cluster.wait_until_ok(Duration::from_secs(30));
    // Answers flow through Redis again: a stretch of requests with no fallback.
    let took = eventually(Duration::from_secs(20), "Redis in use again", || async {
        let before =
            fallbacks(&instance, "rate_limit").await + fallbacks(&instance, "idempotency").await;
        // Time is what is tested: half a second of load with no fallback.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after =
            fallbacks(&instance, "rate_limit").await + fallbacks(&instance, "idempotency").await;
        before == after && instance.ready().await.1["checks"]["redis"]["status"] == "healthy"
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let statuses = load.await.expect("load");
    let failed: Vec<_> = statuses
        .iter()
        .filter(|s| !matches!(**s, StatusCode::OK | StatusCode::CREATED))
        .collect();
    assert!(statuses.len() > 20, "{} requests", statuses.len());
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        statuses.len()
    );
    eprintln!(
        "master on port {killed} killed; {} requests answered, Redis in use again {took:?} after the cluster was ok",
        statuses.len()
    );
    // Repeats replay after the failover too.
    let (status, headers, _) = create(&instance, "warm-up", "warm-up").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
}

fn client_of(redis: &RedisServer) -> tm_redis::Redis {
    let data = tempfile::tempdir().expect("tempdir");
    let config = instance_builder().redis(redis).config(data.path());
    tm_redis::Redis::new(
        config.redis.as_ref().expect("redis configured"),
        Arc::new(tm_telemetry::Metrics::new(10, "test")),
    )
    .expect("client")
}

#[tokio::test]
async fn the_rebuild_lock_has_one_holder_and_expires() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = (client_of(&redis), client_of(&redis));
    let held = a
        .try_lock("rebuild", Duration::from_secs(30))
        .await
        .expect("redis up")
        .expect("free");
    assert!(b
        .try_lock("rebuild", Duration::from_secs(30))
        .await
        .expect("redis up")
        .is_none());
    a.unlock(held).await.expect("redis up");
    let taken = b
        .try_lock("rebuild", Duration::from_millis(200))
        .await
        .expect("redis up")
        .expect("free again");
    // A holder that never gives it back (it died) loses it when it expires. Time is
    // what is tested: Redis expires the key by its own clock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_expiry = a
        .try_lock("rebuild", Duration::from_secs(30))
        .await
        .expect("redis up")
        .expect("expired");
    // The late unlock of the expired holder does not release the new holder's lock.
    b.unlock(taken).await.expect("redis up");
    assert!(b
        .try_lock("rebuild", Duration::from_secs(30))
        .await
        .expect("redis up")
        .is_none());
    a.unlock(after_expiry).await.expect("redis up");
}

#[tokio::test]
async fn the_shared_budget_is_gcra() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = (client_of(&redis), client_of(&redis));
    let per_request = Duration::from_secs(20);
    let mut remaining = Vec::new();
    for client in [&a, &b, &a] {
        let drawn = client
            .gcra("test:key", per_request, 3)
            .await
            .expect("redis up");
        assert!(drawn.allowed);
        remaining.push(drawn.remaining);
    }
    assert_eq!(remaining, [2, 1, 0]);
    let refused = b.gcra("test:key", per_request, 3).await.expect("redis up");
    assert!(!refused.allowed);
    assert!(
        refused.retry_after > Duration::from_secs(19) && refused.retry_after <= per_request,
        "{:?}",
        refused.retry_after
    );
    assert!(refused.reset_after > Duration::from_secs(59));
    // Another bucket is whole.
    assert_eq!(
        a.gcra("test:other", per_request, 3)
            .await
            .expect("redis up")
            .remaining,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_budget_holds_across_instances_and_keys() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let instance = instance_builder().redis_cluster(&cluster).configure(|raw| {
        raw.limits.rate_limit_read = "3/min".into();
        raw.limits.rate_limit_tenant_read = "4/min".into();
    });
    let (a, b) = (instance.spawn().await, instance.spawn().await);
    // Two reader keys of acme and one of globex, made on `a` and stored in `b`'s
    // database too (each instance has a database of its own here).
    let mut keys = Vec::new();
    for tenant in ["acme", "acme", "globex"] {
        let body = json!({"name": "reader", "role": "reader", "tenant": tenant});
        let (status, _, created) = a
            .send(ADMIN, Method::POST, "/api/v1/keys", Some(body), &[])
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let secret = created["key"].as_str().expect("key").to_owned();
        let (id, secret_hash) = tm_domain::ApiKey::inspect(&secret).expect("a key");
        let grant = tm_domain::Grant::new(
            tm_domain::Role::Reader,
            Some(tm_domain::TenantId::parse(tenant).expect("tenant")),
        )
        .expect("grant");
        let record = tm_store::KeyRecord {
            id,
            name: "reader".into(),
            grant,
            secret_hash,
            created_at: tm_domain::now(),
        };
        b.store
            .create_key(&record, &tm_store::Actor::new("test"), None)
            .await
            .expect("stored");
        keys.push(secret);
    }
    // `b` reloads its keys when told (a's next key change) or at its next catch-up;
    // resolve, which has budgets of its own, shows when it knows them.
    for secret in &keys {
        eventually(Duration::from_secs(15), "b knowing the key", || async {
            let (status, _, _) = b
                .send(
                    secret,
                    Method::GET,
                    "/api/v1/routes/resolve?tenant=acme&service=none&env=prod",
                    None,
                    &[],
                )
                .await;
            status != StatusCode::UNAUTHORIZED
        })
        .await;
    }
    async fn read(instance: &TestApp, key: &str) -> (StatusCode, reqwest::header::HeaderMap) {
        let (status, headers, _) = instance
            .send(key, Method::GET, "/api/v1/routes", None, &[])
            .await;
        (status, headers)
    }
    let (first, second, globex) = (&keys[0], &keys[1], &keys[2]);
    // Each key spends two of its three, on either instance; the tenant's four are
    // spent between them. Budgets of each instance's own would have allowed two more.
    for (instance, key) in [(&a, first), (&b, first), (&a, second), (&b, second)] {
        let (status, _) = read(instance, key).await;
        assert_eq!(status, StatusCode::OK);
    }
    for (instance, key) in [(&a, second), (&b, first)] {
        let (status, headers) = read(instance, key).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers["x-rate-limit-limit"], "4");
        assert!(headers.contains_key("retry-after"));
    }
    // Another tenant's budget is its own.
    let (status, headers) = read(&b, globex).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-rate-limit-remaining"], "2");
    for instance in [&a, &b] {
        assert_eq!(fallbacks(instance, "rate_limit").await, 0.0);
    }
}
