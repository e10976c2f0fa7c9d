//! Read replicas, on a primary and a streaming replica of the test's own
//! (`pg_basebackup`): reads go to the replica, a caller that wrote reads its own write
//! from the primary, and a replica that lags too far or stops leaves the rotation
//! while reads go on.
//!
//! Runs when `TM_TEST_PG_BINDIR` names PostgreSQL's binaries (see `common`).

mod common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tm_app::Application;
use tm_config::{Config, RawConfig};
use tokio_util::sync::CancellationToken;

use common::{eventually, Cluster};

const ADMIN: &str = "replica-test-admin-key-0123456789abcdef";

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    async fn send(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await.expect("request");
        let status = reply.status();
        (status, reply.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, key: &str, path: &str) -> StatusCode {
        self.send(key, reqwest::Method::GET, path, None).await.0
    }

    async fn replica(&self) -> Value {
        let (_, ready) = self
            .send(ADMIN, reqwest::Method::GET, "/health/ready", None)
            .await;
        ready["checks"]["database"]["replicas"][0].clone()
    }

    async fn create(&self, service: &str) -> String {
        let (status, route) = self
            .send(
                ADMIN,
                reqwest::Method::POST,
                "/api/v1/routes",
                Some(json!({"tenant": "acme", "service": service, "env": "prod",
                    "version": "v1", "url": "http://a.internal"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{route}");
        route["id"].as_str().expect("id").to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_use_the_replica_writers_read_their_writes_and_a_lost_replica_is_left_out() {
    let Some(primary) = Cluster::start() else {
        return;
    };
    let replica = Cluster::replica_of(&primary);
    let data = tempfile::tempdir().expect("tempdir");
    let raw = RawConfig {
        process: tm_config::ProcessRaw {
            listen: "127.0.0.1:0".into(),
            data_dir: data.path().to_path_buf(),
            bootstrap_admin_key: Some(ADMIN.into()),
            ..Default::default()
        },
        storage: tm_config::StorageRaw {
            database_url: Some(primary.url()),
            database_replica_urls: Some(replica.url()),
            replica_max_lag: Duration::from_secs(3),
            ..Default::default()
        },
        telemetry: tm_config::TelemetryRaw {
            pool_sample_interval: Duration::from_millis(100),
            ..Default::default()
        },
        guards: tm_config::GuardConfig {
            read_cache_ttl: Duration::from_millis(1),
            ..Default::default()
        },
        ..RawConfig::default()
    };
    let app = Application::build(Config::try_from(raw).expect("config"))
        .await
        .expect("starts");
    let client = Client {
        base: format!("http://{}", app.local_addr()),
        http: reqwest::Client::new(),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until(shutdown.clone()));

    let (status, key) = client
        .send(
            ADMIN,
            reqwest::Method::POST,
            "/api/v1/keys",
            Some(json!({"name": "reader", "role": "reader", "tenant": "acme"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let reader = key["key"].as_str().expect("secret").to_owned();
    // A fresh write, replicated: the replica's last replayed change is recent.
    client.create("warm-up").await;
    eventually(
        Duration::from_secs(10),
        "the replica caught up and in rotation",
        || async {
            let replica = client.replica().await;
            replica["in_rotation"] == json!(true) && replica["lag_seconds"] == json!(0.0)
        },
    )
    .await;

    // Replay stops: the replica falls behind the primary.
    assert!(replica.sql("SELECT pg_wal_replay_pause()"));
    let id = client.create("fresh").await;
    let path = format!("/api/v1/routes/{id}");
    // The writer reads its write (from the primary)...
    assert_eq!(client.get(ADMIN, &path).await, StatusCode::OK);
    // ...while a reader that wrote nothing is served by the replica, which lacks it.
    assert_eq!(client.get(&reader, &path).await, StatusCode::NOT_FOUND);

    // Beyond the lag bound the replica leaves the rotation and reads go to the primary.
    eventually(
        Duration::from_secs(10),
        "the lagging replica left the rotation",
        || async { client.replica().await["in_rotation"] == json!(false) },
    )
    .await;
    assert_eq!(client.get(&reader, &path).await, StatusCode::OK);

    // Caught up again, it comes back by itself.
    assert!(replica.sql("SELECT pg_wal_replay_resume()"));
    eventually(
        Duration::from_secs(10),
        "the replica back in rotation",
        || async { client.replica().await["in_rotation"] == json!(true) },
    )
    .await;
    assert_eq!(client.get(&reader, &path).await, StatusCode::OK);

    // Stopped: reads go on from the primary, readiness stays up, the lag says so.
    replica.stop();
    for _ in 0..10 {
        assert_eq!(client.get(&reader, &path).await, StatusCode::OK);
    }
    eventually(
        Duration::from_secs(10),
        "the stopped replica left the rotation",
        || async {
            let replica = client.replica().await;
            replica["in_rotation"] == json!(false) && replica["lag_seconds"].is_null()
        },
    )
    .await;
    let (ready, _) = client
        .send(ADMIN, reqwest::Method::GET, "/health/ready", None)
        .await;
    assert_eq!(ready, StatusCode::OK);
    let metrics = client
        .http
        .get(format!("{}/metrics", client.base))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("db_replica_lag_seconds{replica=\"replica1\"} -1"),
        "{metrics}"
    );
    shutdown.cancel();
}
