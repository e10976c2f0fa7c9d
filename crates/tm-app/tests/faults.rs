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

/// Instances on `cluster` that keep their cold-start file signed with `key`, written
/// every 100 ms, and refuse writes quickly while the database is away.
fn cold_start_builder(cluster: &PgCluster, key: &str) -> tm_testing::TestAppBuilder {
    TestApp::builder()
        .postgres(cluster)
        .admin_key(ADMIN)
        .client_timeout(Duration::from_secs(30))
        .configure({
            let key = key.to_owned();
            move |raw| {
                raw.cold_start.snapshot_key = Some(key.clone());
                raw.cold_start.snapshot_write_interval = Duration::from_millis(100);
                raw.guards.breaker_failures = 2;
                raw.pool.db_acquire_timeout = Duration::from_secs(1);
                raw.guards.timeout_write = Duration::from_secs(2);
            }
        })
}

/// A cold-start key: the base64 of 32 random bytes.
fn snapshot_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_with_its_database_stopped_an_instance_serves_its_signed_file_and_catches_up() {
    let Some(cluster) = PgCluster::start() else {
        eprintln!("TM_TEST_PG_BINDIR is not set: cold-start test not run");
        return;
    };
    let key = snapshot_key();
    let builder = cold_start_builder(&cluster, &key);
    let app = builder.spawn().await;
    assert_eq!(create(&app, "v1").await.0, StatusCode::CREATED);
    let reader = app.create_key("reader", Some("acme")).await;
    let file = app.data_dir().join("routing.snapshot");
    let store_id = tm_store::store_id(&builder.config(app.data_dir()).storage);
    let signing = tm_store::SnapshotKey::from_base64(&key).expect("a key");
    eventually(
        Duration::from_secs(10),
        "the file holds the route and the key",
        || async {
            tm_store::read_snapshot(&file, &signing, &store_id)
                .is_ok_and(|s| s.routes.len() == 1 && s.keys.len() == 1)
        },
    )
    .await;

    cluster.stop();
    every_other_file_is_refused(&builder, &file, &key).await;

    // The same instance started again, its database still stopped: it serves the file.
    let started = std::time::Instant::now();
    let app = builder.restart(app, |_| {}).await;
    eprintln!(
        "started from the cold-start file in {:?}",
        started.elapsed()
    );
    let resolve = "/api/v1/routes/resolve?tenant=acme&service=billing&env=prod";
    let (status, _, body) = app
        .send(&reader, reqwest::Method::GET, resolve, None, &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], "v1");
    let refused_at = std::time::Instant::now();
    assert_eq!(create(&app, "v2").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused_at.elapsed() < Duration::from_secs(5));
    let detailed = app.get("/health/detailed").await.json();
    assert_eq!(
        detailed["cold_start"]["serving_from_file"], true,
        "{detailed}"
    );
    assert_eq!(app.metric_value("routing_snapshot_cold_start").await, 1.0);

    // The database is back: the instance reads it and serves from it.
    cluster.start_server();
    eventually(
        Duration::from_secs(30),
        "serving from the database again",
        || async { app.metric_value("routing_snapshot_cold_start").await == 0.0 },
    )
    .await;
    eventually(Duration::from_secs(30), "writes accepted", || async {
        create(&app, "v2").await.0 == StatusCode::CREATED
    })
    .await;
    let detailed = app.get("/health/detailed").await.json();
    assert_eq!(detailed["cold_start"]["serving_from_file"], false);
    let (status, _, body) = app
        .send(
            &reader,
            reqwest::Method::GET,
            &format!("{resolve}&version=v2"),
            None,
            &[],
        )
        .await;
    assert_eq!(
        (status, body["version"].clone()),
        (StatusCode::OK, json!("v2"))
    );
}

/// With the database stopped, a start from any other file than the instance's own is
/// refused, naming why: altered, signed with another key, missing, of another database.
async fn every_other_file_is_refused(
    builder: &tm_testing::TestAppBuilder,
    file: &std::path::Path,
    key: &str,
) {
    let other_dir = tempfile::tempdir().expect("a directory");
    let mut bytes = std::fs::read(file).expect("the file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    let tampered = other_dir.path().join("tampered.snapshot");
    std::fs::write(&tampered, &bytes).expect("written");
    let refusals = [
        (tampered.clone(), key.to_owned(), "signature"),
        (file.to_path_buf(), snapshot_key(), "signature"),
        (
            other_dir.path().join("none.snapshot"),
            key.to_owned(),
            "no snapshot",
        ),
    ];
    for (path, with_key, why) in refusals {
        let mut config = builder.config(other_dir.path());
        config.cold_start = Some(tm_config::ColdStartConfig {
            key: tm_config::SnapshotKeySource::Given(with_key.into()),
            file: path,
            write_interval: Duration::from_secs(30),
        });
        let started = tm_app::Application::build(config).await;
        let error = match started {
            Ok(_) => panic!("started from a file it should refuse ({why})"),
            Err(err) => tm_http::error_chain(&err),
        };
        assert!(error.contains("unreachable"), "{error}");
        assert!(error.to_lowercase().contains(why), "{why}: {error}");
    }
    let mut foreign = builder.config(other_dir.path());
    if let tm_config::StorageConfig::Postgres(pg) = &mut foreign.storage {
        let url = secrecy::ExposeSecret::expose_secret(&pg.url).to_owned();
        let join = if url.contains('?') { '&' } else { '?' };
        pg.url = format!("{url}{join}application_name=elsewhere").into();
    }
    foreign.cold_start = Some(tm_config::ColdStartConfig {
        key: tm_config::SnapshotKeySource::Given(key.to_owned().into()),
        file: file.to_path_buf(),
        write_interval: Duration::from_secs(30),
    });
    let error = match tm_app::Application::build(foreign).await {
        Ok(_) => panic!("started from another database's file"),
        Err(err) => tm_http::error_chain(&err),
    };
    assert!(error.contains("written for another"), "{error}");
}
