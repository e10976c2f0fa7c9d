//! Database faults on a PostgreSQL cluster of the test's own: frozen (SIGSTOP), resumed
//! (SIGCONT), killed and started again. Resolve keeps answering from memory, readiness
//! and writes say the truth fast, and everything recovers without manual action.
//!
//! Runs when `TM_TEST_PG_BINDIR` names PostgreSQL's binaries (the test command sets it,
//! and `TM_TEST_PG_USER` when the cluster must run as another user than root).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tm_testing::{eventually, PgCluster, TestApp};

const ADMIN: &str = "fault-test-admin-key-0123456789abcdef";

async fn start_app(cluster: &PgCluster, breaker_open_for: Duration) -> TestApp {
    TestApp::builder()
        .postgres(cluster)
        .admin_key(ADMIN)
        .client_timeout(Duration::from_secs(30))
        .configure(move |raw| {
            raw.guards.breaker_failures = 2;
            raw.guards.breaker_open_for = breaker_open_for;
            raw.pool.db_acquire_timeout = Duration::from_secs(2);
            raw.guards.timeout_write = Duration::from_secs(3);
            raw.guards.timeout_read = Duration::from_secs(1);
            raw.http.health_check_timeout = Duration::from_secs(1);
            raw.process.snapshot_reload_interval = Duration::from_secs(2);
            // The resolver below runs as fast as it can: no budget may cut it.
            raw.limits.rate_limit_resolve = "10000000/s".into();
            raw.limits.rate_limit_tenant_resolve = "10000000/s".into();
        })
        .spawn()
        .await
}

/// Creates an active acme/billing/prod `version`; status and body (null if none).
async fn create(app: &TestApp, version: &str) -> (StatusCode, Value) {
    let body = json!({"tenant":"acme","service":"billing","env":"prod","version":version,"url":"http://a","active":true});
    let reply = app.create_route(body).await;
    let body = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_database_leaves_resolve_answering_and_everything_recovers() {
    let Some(cluster) = PgCluster::start() else {
        eprintln!("TM_TEST_PG_BINDIR is not set: database fault test not run");
        return;
    };
    let app = start_app(&cluster, Duration::from_secs(5)).await;
    assert_eq!(create(&app, "v1").await.0, StatusCode::CREATED);

    // Resolve under load, for the whole freeze.
    let resolver = {
        let (client, url) = (
            app.client.clone(),
            app.url("/api/v1/routes/resolve?tenant=acme&service=billing&env=prod"),
        );
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(8);
            let (mut latencies, mut errors) = (Vec::new(), std::collections::BTreeMap::new());
            while Instant::now() < until {
                let started = Instant::now();
                match client.get(&url).send().await {
                    Ok(r) if r.status() == StatusCode::OK => latencies.push(started.elapsed()),
                    Ok(r) => *errors.entry(r.status().to_string()).or_insert(0) += 1,
                    Err(e) => *errors.entry(e.to_string()).or_insert(0) += 1,
                }
            }
            (latencies, errors)
        })
    };

    cluster.signal("STOP");
    let to_not_ready = eventually(Duration::from_secs(10), "readiness turning 503", || async {
        app.get("/health/ready").await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let started = Instant::now();
    let (status, _) = create(&app, "v2").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() <= Duration::from_secs(4),
        "a write took {:?} to fail",
        started.elapsed()
    );
    let (status, _) = create(&app, "v3").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.breaker_state("database").await, "open");
    let fast = Instant::now();
    assert_eq!(create(&app, "v4").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        fast.elapsed() < Duration::from_millis(500),
        "an open breaker answers at once"
    );

    let (mut latencies, errors) = resolver.await.expect("resolver");
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!("frozen database: readiness 503 after {to_not_ready:?}; resolve {} answers, p99 {p99:?}, errors {errors:?}", latencies.len());
    assert!(
        errors.is_empty(),
        "resolve failed while the database was frozen: {errors:?}"
    );
    assert!(
        p99 <= Duration::from_millis(5),
        "resolve p99 {p99:?} while the database was frozen"
    );

    cluster.signal("CONT");
    let to_write = eventually(
        Duration::from_secs(15),
        "writes succeeding again",
        || async { create(&app, &format!("v{}", rand_suffix())).await.0 == StatusCode::CREATED },
    )
    .await;
    eventually(Duration::from_secs(15), "the breaker closing", || async {
        app.breaker_state("database").await == "closed"
    })
    .await;
    eventually(Duration::from_secs(15), "readiness turning 200", || async {
        app.get("/health/ready").await.status == StatusCode::OK
    })
    .await;
    eprintln!("resumed database: writes succeed after {to_write:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_database_loses_nothing_acknowledged() {
    let Some(cluster) = PgCluster::start() else {
        eprintln!("TM_TEST_PG_BINDIR is not set: database fault test not run");
        return;
    };
    let app = start_app(&cluster, Duration::from_secs(1)).await;
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let (status, route) = create(&app, &format!("k{i}")).await;
        assert_eq!(status, StatusCode::CREATED);
        acknowledged.push(route["id"].as_str().expect("id").to_owned());
    }
    cluster.kill();
    let (status, _) = create(&app, "during").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        app.get("/api/v1/routes/resolve?tenant=acme&service=billing&env=prod&version=k0")
            .await
            .status,
        StatusCode::OK,
        "resolve answers from memory while the database is down"
    );
    cluster.start_server();
    let recovered = eventually(
        Duration::from_secs(30),
        "writes succeeding after the restart",
        || async {
            create(&app, &format!("after{}", rand_suffix())).await.0 == StatusCode::CREATED
        },
    )
    .await;
    eprintln!("restarted database: writes succeed after {recovered:?}");
    for id in &acknowledged {
        assert_eq!(
            app.get(&format!("/api/v1/routes/{id}")).await.status,
            StatusCode::OK,
            "acknowledged route {id} lost"
        );
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .subsec_nanos()
}
