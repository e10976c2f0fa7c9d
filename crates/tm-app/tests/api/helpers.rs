//! `spawn_app`: a real application on a random port over a fresh database, and typed
//! helpers to drive it over HTTP.
//!
//! The backend is SQLite (a temporary file per test) unless `TM_TEST_DATABASE_URL`
//! names a PostgreSQL server, in which case each test gets its own schema, dropped when
//! the test ends.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;
use tm_app::Application;
use tm_config::{Config, RawConfig};
use tm_store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub addr: SocketAddr,
    /// Sends the admin key with every request unless the request sets its own.
    pub client: reqwest::Client,
    /// Sends no key.
    pub anonymous: reqwest::Client,
    pub admin_key: String,
    pub store: Arc<dyn Store>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<Result<(), tm_app::RunError>>>,
    schema: Option<PgSchema>,
    data_dir: tempfile::TempDir,
}

/// The backend under test: `"postgres"` when `TM_TEST_DATABASE_URL` is set.
pub fn backend() -> &'static str {
    if std::env::var_os("TM_TEST_DATABASE_URL").is_some() {
        "postgres"
    } else {
        "sqlite"
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with settings changed by `configure` before start-up.
pub async fn spawn_app_with(configure: impl FnOnce(&mut RawConfig)) -> TestApp {
    tm_telemetry::init_for_tests();
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let mut raw = RawConfig {
        process: tm_config::ProcessRaw {
            listen: "127.0.0.1:0".into(),
            data_dir: data_dir.path().to_path_buf(),
            // Faster periodic reloads exercise the reloader alongside every test.
            snapshot_reload_interval: std::time::Duration::from_millis(500),
            ..Default::default()
        },
        ..RawConfig::default()
    };
    let schema = match std::env::var("TM_TEST_DATABASE_URL") {
        Ok(url) => {
            let schema = PgSchema::create(&url).await;
            raw.storage.database_url = Some(schema.app_url.clone());
            if schema.app_url != schema.url {
                // Through a transaction-pooling PgBouncer; the direct URL for the rest.
                raw.storage.db_transaction_pooling = true;
                raw.storage.database_direct_url = Some(schema.url.clone());
            }
            Some(schema)
        }
        Err(_) => None,
    };
    let admin_key = format!("test-admin-{}", uuid::Uuid::now_v7().simple());
    raw.process.bootstrap_admin_key = Some(admin_key.clone());
    configure(&mut raw);
    let config = Config::try_from(raw).expect("valid test configuration");
    let app = Application::build(config)
        .await
        .expect("application starts");
    let addr = app.local_addr();
    let store = app.store();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until(shutdown.clone()));
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {admin_key}").parse().expect("header value"),
    );
    TestApp {
        addr,
        client: reqwest::Client::builder()
            .default_headers(auth)
            .build()
            .expect("client"),
        anonymous: reqwest::Client::new(),
        admin_key,
        store,
        shutdown,
        server: Some(server),
        schema,
        data_dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some(body) = body {
            req = req.json(&body);
        }
        Reply::from(req.send().await.expect("request sent")).await
    }

    /// A request with `key` (or no key at all).
    pub async fn request_as(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.anonymous.request(method, self.url(path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        Reply::from(req.send().await.expect("request sent")).await
    }

    /// Creates a key through the API as admin and returns its secret.
    pub async fn create_key(&self, role: &str, tenant: Option<&str>) -> String {
        let mut body = json!({"name": format!("{role} key"), "role": role});
        if let Some(tenant) = tenant {
            body["tenant"] = json!(tenant);
        }
        let reply = self.request(Method::POST, "/api/v1/keys", Some(body)).await;
        reply.assert_status(StatusCode::CREATED);
        reply.json()["key"].as_str().expect("key").to_owned()
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None).await
    }

    pub async fn create_route(&self, body: Value) -> Reply {
        self.request(Method::POST, "/api/v1/routes", Some(body))
            .await
    }

    /// Creates `(tenant, service, env, version) -> url` and asserts it was created.
    pub async fn create(
        &self,
        tenant: &str,
        service: &str,
        env: &str,
        version: &str,
        url: &str,
    ) -> Value {
        let reply = self
            .create_route(route(tenant, service, env, version, url))
            .await;
        reply.assert_status(StatusCode::CREATED);
        reply.json()
    }

    /// Creates active versions of acme/billing/prod with the given weights; each
    /// version's URL is `http://<version>`.
    pub async fn create_active_versions(&self, versions: &[(&str, u8)]) {
        for (version, weight) in versions {
            let mut body = route(
                "acme",
                "billing",
                "prod",
                version,
                &format!("http://{version}"),
            );
            body["active"] = json!(true);
            body["weight"] = json!(weight);
            self.create_route(body)
                .await
                .assert_status(StatusCode::CREATED);
        }
    }

    pub async fn activate(&self, tenant: &str, service: &str, env: &str, version: &str) -> Reply {
        let body = json!({"tenant": tenant, "service": service, "env": env, "version": version});
        self.request(Method::POST, "/api/v1/routes/activate", Some(body))
            .await
    }

    pub async fn deactivate(&self, tenant: &str, service: &str, env: &str, version: &str) -> Reply {
        let body = json!({"tenant": tenant, "service": service, "env": env, "version": version});
        self.request(Method::POST, "/api/v1/routes/deactivate", Some(body))
            .await
    }

    /// `GET /api/v1/routes/resolve` with the given query parameters.
    pub async fn resolve(&self, params: &[(&str, &str)]) -> Reply {
        let url = reqwest::Url::parse_with_params(&self.url("/api/v1/routes/resolve"), params)
            .expect("valid URL");
        Reply::from(self.client.get(url).send().await.expect("request sent")).await
    }

    /// Every route, following cursors.
    pub async fn all_routes(&self) -> Vec<Value> {
        let mut items = Vec::new();
        let mut path = "/api/v1/routes?limit=1000".to_owned();
        loop {
            let page = self.get(&path).await;
            page.assert_status(StatusCode::OK);
            let page = page.json();
            items.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("/api/v1/routes?limit=1000&cursor={cursor}"),
                None => return items,
            }
        }
    }

    /// The value of one series in `/metrics` now.
    pub async fn metric_value(&self, series: &str) -> f64 {
        let text = String::from_utf8(self.get("/metrics").await.body).expect("utf-8");
        metric(&text, series).unwrap_or_else(|| panic!("{series} is not in /metrics"))
    }

    /// The value of one series once it has stopped moving (unchanged for 150 ms): a
    /// baseline that the background work set off by earlier writes (change
    /// notifications, catch-ups) no longer disturbs.
    pub async fn settled_metric_value(&self, series: &str) -> f64 {
        let mut last = self.metric_value(series).await;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            let now = self.metric_value(series).await;
            if now == last {
                return now;
            }
            last = now;
        }
    }

    /// Runs `sql` directly against the test's database, bypassing the application.
    pub async fn raw_execute(&self, sql: &str) -> Result<(), sqlx::Error> {
        match &self.schema {
            Some(schema) => {
                let mut conn = sqlx::PgConnection::connect(&schema.url).await?;
                sqlx::raw_sql(sql).execute(&mut conn).await?;
            }
            None => {
                let path = self.data_dir.path().join("traffic-manager.db");
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await?;
                sqlx::raw_sql(sql).execute(&mut conn).await?;
            }
        }
        Ok(())
    }

    /// The PostgreSQL URL of this test's schema, for a second instance on the same
    /// database; `None` on SQLite.
    pub fn database_url(&self) -> Option<String> {
        self.schema.as_ref().map(|s| s.url.clone())
    }

    /// Points `raw` at this app's database (PostgreSQL only), the way this app reaches it.
    pub fn share_database(&self, raw: &mut RawConfig) {
        if let Some(schema) = &self.schema {
            raw.storage.database_url = Some(schema.app_url.clone());
            if schema.app_url != schema.url {
                raw.storage.db_transaction_pooling = true;
                raw.storage.database_direct_url = Some(schema.url.clone());
            }
        }
    }

    /// A connection of the test's own to its PostgreSQL schema; `None` on SQLite.
    pub async fn pg_connection(&self) -> Option<sqlx::PgConnection> {
        let schema = self.schema.as_ref()?;
        Some(
            sqlx::PgConnection::connect(&schema.url)
                .await
                .expect("connect"),
        )
    }

    /// Takes the database's write lock on `routes` from a connection of the test's own
    /// and holds it until the returned value is dropped: the application's writes wait.
    pub async fn lock_routes(&self) -> Box<dyn std::any::Any + Send> {
        match &self.schema {
            Some(schema) => {
                let mut conn = sqlx::PgConnection::connect(&schema.url)
                    .await
                    .expect("connect");
                sqlx::raw_sql("BEGIN; LOCK TABLE routes IN ACCESS EXCLUSIVE MODE")
                    .execute(&mut conn)
                    .await
                    .expect("lock");
                Box::new(conn)
            }
            None => {
                let path = self.data_dir.path().join("traffic-manager.db");
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .expect("connect");
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .expect("lock");
                Box::new(conn)
            }
        }
    }

    /// Stops the application and waits for it, as SIGTERM would.
    pub async fn stop(mut self) -> Result<(), tm_app::RunError> {
        self.shutdown.cancel();
        self.server
            .take()
            .expect("running")
            .await
            .expect("server task")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(schema) = self.schema.take() {
            schema.drop_blocking();
        }
    }
}

/// The value of one series in a Prometheus text scrape, e.g. `db_queries_total`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A route creation body with the given key and URL.
pub fn route(tenant: &str, service: &str, env: &str, version: &str, url: &str) -> Value {
    json!({"tenant": tenant, "service": service, "env": env, "version": version, "url": url})
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("body").to_vec();
        Self {
            status,
            headers,
            body,
        }
    }

    #[track_caller]
    pub fn assert_status(&self, expected: StatusCode) -> &Self {
        assert_eq!(
            self.status,
            expected,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem document with this status, and returns it.
    #[track_caller]
    pub fn problem(&self, expected: StatusCode) -> Value {
        self.assert_status(expected);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "problem content type"
        );
        let body = self.json();
        assert_eq!(body["status"], expected.as_u16(), "problem status: {body}");
        assert!(
            body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
            "{body}"
        );
        body
    }
}

/// A PostgreSQL schema of one test's own.
struct PgSchema {
    admin_url: String,
    name: String,
    /// PostgreSQL itself, in this schema: for the test's own connections.
    url: String,
    /// What the application is given: `url`, or the same through PgBouncer when
    /// `TM_TEST_DATABASE_DIRECT_URL` says that `TM_TEST_DATABASE_URL` is a PgBouncer.
    app_url: String,
}

impl PgSchema {
    async fn create(pooled_url: &str) -> Self {
        let direct = std::env::var("TM_TEST_DATABASE_DIRECT_URL").ok();
        let admin_url = direct.as_deref().unwrap_or(pooled_url);
        let name = format!("test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("TM_TEST_DATABASE_URL reachable");
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await
            .expect("create schema");
        let _ = conn.close().await;
        let in_schema = |url: &str| {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}options=-c%20search_path%3D{name}")
        };
        Self {
            admin_url: admin_url.to_owned(),
            url: in_schema(admin_url),
            app_url: in_schema(pooled_url),
            name,
        }
    }

    /// Drops the schema from a thread of its own: `Drop` cannot await.
    fn drop_blocking(self) {
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
