//! Read replicas, on a primary and a streaming replica of the test's own
//! (`pg_basebackup`): reads go to the replica, a caller that wrote reads its own write
//! from the primary, and a replica that lags too far or stops leaves the rotation
//! while reads go on.
//!
//! Runs when `TM_TEST_PG_BINDIR` names PostgreSQL's binaries (see `tm_testing::PgCluster`).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tm_testing::{eventually, PgCluster, TestApp};

const ADMIN: &str = "replica-test-admin-key-0123456789abcdef";

async fn get(app: &TestApp, key: &str, path: &str) -> StatusCode {
    app.send(key, reqwest::Method::GET, path, None, &[]).await.0
}

/// The replica, as readiness reports it.
async fn replica_health(app: &TestApp) -> Value {
    let (_, ready) = app.ready().await;
    ready["checks"]["database"]["replicas"][0].clone()
}

async fn create(app: &TestApp, service: &str) -> String {
    let (status, _, route) = app
        .send(
            ADMIN,
            reqwest::Method::POST,
            "/api/v1/routes",
            Some(json!({"tenant": "acme", "service": service, "env": "prod",
                "version": "v1", "url": "http://a.internal"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{route}");
    route["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_use_the_replica_writers_read_their_writes_and_a_lost_replica_is_left_out() {
    let Some(primary) = PgCluster::start() else {
        return;
    };
    let replica = PgCluster::replica_of(&primary);
    let app = TestApp::builder()
        .postgres(&primary)
        .replica(&replica)
        .admin_key(ADMIN)
        .configure(|raw| {
            raw.storage.replica_max_lag = Duration::from_secs(3);
            raw.telemetry.pool_sample_interval = Duration::from_millis(100);
            raw.guards.read_cache_ttl = Duration::from_millis(1);
        })
        .spawn()
        .await;

    let (status, _, key) = app
        .send(
            ADMIN,
            reqwest::Method::POST,
            "/api/v1/keys",
            Some(json!({"name": "reader", "role": "reader", "tenant": "acme"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let reader = key["key"].as_str().expect("secret").to_owned();
    // A fresh write, replicated: the replica's last replayed change is recent.
    create(&app, "warm-up").await;
    eventually(
        Duration::from_secs(10),
        "the replica caught up and in rotation",
        || async {
            let replica = replica_health(&app).await;
            replica["in_rotation"] == json!(true) && replica["lag_seconds"] == json!(0.0)
        },
    )
    .await;

    // Replay stops: the replica falls behind the primary.
    assert!(replica.sql("SELECT pg_wal_replay_pause()"));
    let id = create(&app, "fresh").await;
    let path = format!("/api/v1/routes/{id}");
    // The writer reads its write (from the primary)...
    assert_eq!(get(&app, ADMIN, &path).await, StatusCode::OK);
    // ...while a reader that wrote nothing is served by the replica, which lacks it.
    assert_eq!(get(&app, &reader, &path).await, StatusCode::NOT_FOUND);

    // Beyond the lag bound the replica leaves the rotation and reads go to the primary.
    eventually(
        Duration::from_secs(10),
        "the lagging replica left the rotation",
        || async { replica_health(&app).await["in_rotation"] == json!(false) },
    )
    .await;
    assert_eq!(get(&app, &reader, &path).await, StatusCode::OK);

    // Caught up again, it comes back by itself.
    assert!(replica.sql("SELECT pg_wal_replay_resume()"));
    eventually(
        Duration::from_secs(10),
        "the replica back in rotation",
        || async { replica_health(&app).await["in_rotation"] == json!(true) },
    )
    .await;
    assert_eq!(get(&app, &reader, &path).await, StatusCode::OK);

    // Stopped: reads go on from the primary, readiness stays up, the lag says so.
    replica.stop();
    for _ in 0..10 {
        assert_eq!(get(&app, &reader, &path).await, StatusCode::OK);
    }
    eventually(
        Duration::from_secs(10),
        "the stopped replica left the rotation",
        || async {
            let replica = replica_health(&app).await;
            replica["in_rotation"] == json!(false) && replica["lag_seconds"].is_null()
        },
    )
    .await;
    let (ready, _, _) = app
        .send(ADMIN, reqwest::Method::GET, "/health/ready", None, &[])
        .await;
    assert_eq!(ready, StatusCode::OK);
    let metrics = app.scrape().await;
    assert!(
        metrics.contains("db_replica_lag_seconds{replica=\"replica1\"} -1"),
        "{metrics}"
    );
    app.stop().await.expect("clean shutdown");
}
