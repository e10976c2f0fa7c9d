//! A fleet: three instances on one PostgreSQL primary with a streaming replica, and one
//! Redis. Writes go to every instance in turn and each write is looked for on all
//! three; one rate limit holds for the fleet; a revoked key is refused everywhere.
//!
//! Runs when `TM_TEST_PG_BINDIR` and `TM_TEST_REDIS_SERVER` name the binaries (the test
//! command sets both).

#![allow(
    clippy::too_many_lines,
    reason = "a test (or a table of cases) reads top to bottom as one scenario"
)]

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use tm_testing::{eventually, PgCluster, RedisServer, TestApp};

const ADMIN: &str = "fleet-test-admin-key-0123456789abcdefghij";
/// The propagation bound: how often each instance reconciles with the change feed.
const BOUND: Duration = Duration::from_secs(1);

/// Polls every instance until resolving `version` with `key` answers `expected`; the
/// longest wait since `written`. Fails if any instance is still stale past the bound.
async fn seen_everywhere(
    instances: &[TestApp],
    written: Instant,
    (key, version, expected): (&str, &str, StatusCode),
) -> Duration {
    let mut longest = Duration::ZERO;
    for instance in instances {
        let what = format!(
            "{version} ({expected} expected) on {} within the bound of the write",
            instance.addr
        );
        let left = BOUND.saturating_sub(written.elapsed());
        eventually(left, &what, || async {
            resolve(instance, key, version).await == expected
        })
        .await;
        longest = longest.max(written.elapsed());
    }
    longest
}

async fn resolve(instance: &TestApp, key: &str, version: &str) -> StatusCode {
    instance
        .send(
            key,
            Method::GET,
            &format!(
                "/api/v1/routes/resolve?tenant=acme&service=checkout&env=prod&version={version}"
            ),
            None,
            &[],
        )
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_agree_share_limits_and_revoke_together() {
    let Some(primary) = PgCluster::start() else {
        return;
    };
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let replica = PgCluster::replica_of(&primary);
    let instance = TestApp::builder()
        .postgres(&primary)
        .replica(&replica)
        .redis(&redis)
        .admin_key(ADMIN)
        .configure(|raw| {
            raw.process.snapshot_catch_up_interval = BOUND;
            // Key management: the budget the fleet-wide limit is checked on below.
            raw.limits.rate_limit_keys = "40/min".into();
            // Cached reads outlive the bound unless changes elsewhere drop them.
            raw.guards.read_cache_ttl = Duration::from_secs(30);
            raw.telemetry.pool_sample_interval = Duration::from_millis(100);
        });
    let fleet = [
        instance.spawn().await,
        instance.spawn().await,
        instance.spawn().await,
    ];
    for instance in &fleet {
        // The replica joins the rotation at the first lag check.
        eventually(
            Duration::from_secs(5),
            "ready, replica in rotation",
            || async {
                let (status, ready) = instance.ready().await;
                status == StatusCode::OK
                    && ready["status"] == "ready"
                    && ready["checks"]["database"]["replicas"][0]["in_rotation"] == true
            },
        )
        .await;
    }

    // Writes spread over the instances; each is looked for on all three.
    let mut lags = Vec::new();
    let mut ids = Vec::new();
    for i in 0..30 {
        let writer = &fleet[i % fleet.len()];
        let version = format!("v{i}");
        let (status, _, route) = writer
            .send(
                ADMIN,
                Method::POST,
                "/api/v1/routes",
                Some(json!({"tenant": "acme", "service": "checkout", "env": "prod",
                    "version": version, "url": format!("http://{version}.internal"), "active": true})),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{route}");
        ids.push(route["id"].as_str().expect("id").to_owned());
        let written = Instant::now();
        lags.push(seen_everywhere(&fleet, written, (ADMIN, &version, StatusCode::OK)).await);
        if i > 0 {
            let previous = format!("v{}", i - 1);
            let path = format!("/api/v1/routes/{}", ids[i - 1]);
            // Every instance has the route in its read cache, active.
            for instance in &fleet {
                let (_, _, route) = instance.send(ADMIN, Method::GET, &path, None, &[]).await;
                assert_eq!(route["active"], true, "{route}");
            }
            let (status, _, _) = fleet[(i + 1) % fleet.len()]
                .send(
                    ADMIN,
                    Method::POST,
                    "/api/v1/routes/deactivate",
                    Some(json!({"tenant": "acme", "service": "checkout", "env": "prod", "version": previous})),
                    &[],
                )
                .await;
            assert_eq!(status, StatusCode::OK);
            let written = Instant::now();
            lags.push(
                seen_everywhere(&fleet, written, (ADMIN, &previous, StatusCode::NOT_FOUND)).await,
            );
            for (n, instance) in fleet.iter().enumerate() {
                let what = format!(
                    "round {i}: instance {n} reading the route as inactive within the bound of the write"
                );
                let left = BOUND.saturating_sub(written.elapsed());
                eventually(left, &what, || async {
                    let (_, _, route) = instance.send(ADMIN, Method::GET, &path, None, &[]).await;
                    route["active"] == false
                })
                .await;
            }
        }
    }
    lags.sort();
    eprintln!(
        "{} writes seen on all three instances: median {:?}, slowest {:?}",
        lags.len(),
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );

    // A new key works everywhere at once; one key-management budget for the whole fleet
    // (a reader's key requests are refused with 403, but each draws from it first).
    let (status, _, created) = fleet[0]
        .send(
            ADMIN,
            Method::POST,
            "/api/v1/keys",
            Some(json!({"name": "dashboard", "role": "reader", "tenant": "acme"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let reader = created["key"].as_str().expect("secret").to_owned();
    let reader_id = created["id"].as_str().expect("id").to_owned();
    let written = Instant::now();
    seen_everywhere(&fleet, written, (&reader, "v29", StatusCode::OK)).await;
    let mut allowed = 0;
    for i in 0..90 {
        let (status, _, _) = fleet[i % 3]
            .send(&reader, Method::GET, "/api/v1/keys", None, &[])
            .await;
        match status {
            StatusCode::FORBIDDEN => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        (40..=42).contains(&allowed),
        "{allowed} of 90 requests let through with a fleet-wide limit of 40/min"
    );

    // Revoked on one instance: refused by all within a second. The database's key
    // notification is switched off, so the news travels through Redis alone: three
    // revocations, each refused everywhere within 250 ms (the once-a-second catch-up
    // alone would rarely make all three).
    assert!(primary.sql("DROP TRIGGER api_keys_notify ON api_keys"));
    let mut keys = vec![(reader, reader_id)];
    for name in ["second", "third"] {
        let (status, _, created) = fleet[0]
            .send(
                ADMIN,
                Method::POST,
                "/api/v1/keys",
                Some(json!({"name": name, "role": "reader", "tenant": "acme"})),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let key = created["key"].as_str().expect("secret").to_owned();
        let id = created["id"].as_str().expect("id").to_owned();
        seen_everywhere(&fleet, Instant::now(), (&key, "v29", StatusCode::OK)).await;
        keys.push((key, id));
    }
    for (n, (key, id)) in keys.iter().enumerate() {
        // Time is what is tested: revocations a third of a second apart fall at
        // different points of the once-a-second catch-up, which alone would miss some.
        tokio::time::sleep(Duration::from_millis(330)).await;
        let (status, _, _) = fleet[n % 3]
            .send(
                ADMIN,
                Method::DELETE,
                &format!("/api/v1/keys/{id}"),
                None,
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let revoked = Instant::now();
        for instance in &fleet {
            eventually(Duration::from_secs(1), "revocation", || async {
                resolve(instance, key, "v29").await == StatusCode::UNAUTHORIZED
            })
            .await;
        }
        assert!(
            revoked.elapsed() < Duration::from_millis(250),
            "revocation {n} took {:?}: not fanned out through Redis",
            revoked.elapsed()
        );
        eprintln!(
            "revocation {n} refused everywhere after {:?}",
            revoked.elapsed()
        );
    }
    drop(fleet);
    drop(replica);
}
