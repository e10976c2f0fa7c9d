//! Database faults on a PostgreSQL cluster of the test's own: frozen (SIGSTOP), resumed
//! (SIGCONT), killed and started again. Resolve keeps answering from memory, readiness
//! and writes say the truth fast, and everything recovers without manual action.
//!
//! Runs when `TM_TEST_PG_BINDIR` names PostgreSQL's binaries (the test command sets it,
//! and `TM_TEST_PG_USER` when the cluster must run as another user than root).

mod common;

use std::time::{Duration, Instant};

use common::{eventually, Cluster};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tm_app::Application;
use tm_config::{Config, RawConfig};
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "fault-test-admin-key-0123456789abcdef";

struct App {
    base: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    _data: tempfile::TempDir,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_app(cluster: &Cluster, breaker_open_for: Duration) -> App {
    let data = tempfile::tempdir().expect("tempdir");
    let raw = RawConfig {
        process: tm_config::ProcessRaw {
            listen: "127.0.0.1:0".into(),
            data_dir: data.path().to_path_buf(),
            bootstrap_admin_key: Some(ADMIN.into()),
            snapshot_reload_interval: Duration::from_secs(2),
            ..Default::default()
        },
        storage: tm_config::StorageRaw {
            database_url: Some(cluster.url()),
            ..Default::default()
        },
        pool: tm_config::PoolRaw {
            db_acquire_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        guards: tm_config::GuardConfig {
            breaker_failures: 2,
            breaker_open_for,
            timeout_write: Duration::from_secs(3),
            timeout_read: Duration::from_secs(1),
            ..Default::default()
        },
        http: tm_config::HttpRaw {
            health_check_timeout: Duration::from_secs(1),
            ..Default::default()
        },
        ..RawConfig::default()
    };
    let app = Application::build(Config::try_from(raw).expect("config"))
        .await
        .expect("starts");
    let base = format!("http://{}", app.local_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until(shutdown.clone()));
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        "authorization",
        format!("Bearer {ADMIN}").parse().expect("header"),
    );
    let client = reqwest::Client::builder()
        .default_headers(auth)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    App {
        base,
        client,
        shutdown,
        _data: data,
    }
}

impl App {
    async fn create(&self, version: &str) -> (StatusCode, Value) {
        let body = json!({"tenant":"acme","service":"billing","env":"prod","version":version,"url":"http://a","active":true});
        let reply = self
            .client
            .post(format!("{}/api/v1/routes", self.base))
            .json(&body)
            .send()
            .await
            .expect("sent");
        let status = reply.status();
        (status, reply.json().await.unwrap_or(Value::Null))
    }

    async fn status(&self, path: &str) -> StatusCode {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("sent")
            .status()
    }

    async fn breaker(&self) -> String {
        let detailed: Value = self
            .client
            .get(format!("{}/health/detailed", self.base))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        detailed["circuit_breakers"]["database"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_database_leaves_resolve_answering_and_everything_recovers() {
    let Some(cluster) = Cluster::start() else {
        eprintln!("TM_TEST_PG_BINDIR is not set: database fault test not run");
        return;
    };
    let app = start_app(&cluster, Duration::from_secs(5)).await;
    assert_eq!(app.create("v1").await.0, StatusCode::CREATED);

    // Resolve under load, for the whole freeze.
    let resolver = {
        let (client, url) = (
            app.client.clone(),
            format!(
                "{}/api/v1/routes/resolve?tenant=acme&service=billing&env=prod",
                app.base
            ),
        );
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(8);
            let (mut latencies, mut errors) = (Vec::new(), 0);
            while Instant::now() < until {
                let started = Instant::now();
                match client.get(&url).send().await {
                    Ok(r) if r.status() == StatusCode::OK => latencies.push(started.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        })
    };

    cluster.signal("STOP");
    let to_not_ready = eventually(Duration::from_secs(10), "readiness turning 503", || async {
        app.status("/health/ready").await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let started = Instant::now();
    let (status, _) = app.create("v2").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() <= Duration::from_secs(4),
        "a write took {:?} to fail",
        started.elapsed()
    );
    let (status, _) = app.create("v3").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.breaker().await, "open");
    let fast = Instant::now();
    assert_eq!(app.create("v4").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        fast.elapsed() < Duration::from_millis(500),
        "an open breaker answers at once"
    );

    let (mut latencies, errors) = resolver.await.expect("resolver");
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!("frozen database: readiness 503 after {to_not_ready:?}; resolve {} answers, p99 {p99:?}, {errors} errors", latencies.len());
    assert_eq!(errors, 0);
    assert!(
        p99 <= Duration::from_millis(5),
        "resolve p99 {p99:?} while the database was frozen"
    );

    cluster.signal("CONT");
    let to_write = eventually(
        Duration::from_secs(15),
        "writes succeeding again",
        || async { app.create(&format!("v{}", rand_suffix())).await.0 == StatusCode::CREATED },
    )
    .await;
    eventually(Duration::from_secs(15), "the breaker closing", || async {
        app.breaker().await == "closed"
    })
    .await;
    eventually(Duration::from_secs(15), "readiness turning 200", || async {
        app.status("/health/ready").await == StatusCode::OK
    })
    .await;
    eprintln!("resumed database: writes succeed after {to_write:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_database_loses_nothing_acknowledged() {
    let Some(cluster) = Cluster::start() else {
        eprintln!("TM_TEST_PG_BINDIR is not set: database fault test not run");
        return;
    };
    let app = start_app(&cluster, Duration::from_secs(1)).await;
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let (status, route) = app.create(&format!("k{i}")).await;
        assert_eq!(status, StatusCode::CREATED);
        acknowledged.push(route["id"].as_str().expect("id").to_owned());
    }
    cluster.kill();
    let (status, _) = app.create("during").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        app.status("/api/v1/routes/resolve?tenant=acme&service=billing&env=prod&version=k0")
            .await,
        StatusCode::OK,
        "resolve answers from memory while the database is down"
    );
    cluster.start_server();
    let recovered = eventually(
        Duration::from_secs(30),
        "writes succeeding after the restart",
        || async { app.create(&format!("after{}", rand_suffix())).await.0 == StatusCode::CREATED },
    )
    .await;
    eprintln!("restarted database: writes succeed after {recovered:?}");
    for id in &acknowledged {
        assert_eq!(
            app.status(&format!("/api/v1/routes/{id}")).await,
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
