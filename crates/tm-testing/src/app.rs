//! [`TestApp`]: the real application, built and run as `main` does, on a random port over
//! a database of its own, with clients that hold its admin key; and its builder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tm_app::{Application, RunError};
use tm_config::{Config, RawConfig};
use tm_store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Override, RedisTarget, Settings};
use crate::database::{Database, PgSchema, PgTarget};
use crate::{KafkaBroker, PgCluster, RedisCluster, RedisServer};

/// A running application. Dropping it cancels its run (a test that ends early still
/// stops it); [`stop`](Self::stop) also waits for the run to end.
pub struct TestApp {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Sends the admin key with every request unless the request sets its own.
    pub client: reqwest::Client,
    /// Sends no key.
    pub anonymous: reqwest::Client,
    /// The bootstrap admin key.
    pub admin_key: String,
    /// The application's own store.
    pub store: Arc<dyn Store>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<Result<(), RunError>>>,
    database: Database,
    /// The data directory; it goes with the application.
    data_dir: tempfile::TempDir,
}

/// An application on the suite's backend (SQLite, or a schema of its own on
/// `TM_TEST_DATABASE_URL`), snapshot reloads every 500 ms.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with settings changed by `configure` before start-up.
pub async fn spawn_app_with(configure: impl FnOnce(&mut RawConfig)) -> TestApp {
    TestApp::builder()
        .reload_snapshot_often()
        .spawn_with(configure)
        .await
}

impl TestApp {
    /// Options for an application; [`TestAppBuilder::spawn`] starts one.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    /// Stops the application and waits for it, as SIGTERM would.
    pub async fn stop(mut self) -> Result<(), RunError> {
        self.shutdown.cancel();
        self.server
            .take()
            .expect("running")
            .await
            .expect("server task")
    }

    /// The application's data directory (on SQLite, where its database file is).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Runs `sql` directly against the test's database, bypassing the application.
    pub async fn raw_execute(&self, sql: &str) -> Result<(), sqlx::Error> {
        self.database.execute(sql).await
    }

    /// The PostgreSQL URL of this application's database, for the test's own
    /// connections; `None` on SQLite.
    pub fn database_url(&self) -> Option<String> {
        self.database.postgres().map(|pg| pg.direct_url.clone())
    }

    /// A connection of the test's own to its PostgreSQL database; `None` on SQLite.
    pub async fn pg_connection(&self) -> Option<sqlx::PgConnection> {
        use sqlx::Connection;
        let url = self.database_url()?;
        Some(sqlx::PgConnection::connect(&url).await.expect("connect"))
    }

    /// Takes the database's write lock on `routes` from a connection of the test's own
    /// and holds it until the returned value is dropped: the application's writes wait.
    pub async fn lock_routes(&self) -> Box<dyn std::any::Any + Send> {
        self.database.lock_routes().await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // `Drop` cannot await the run; cancelling it is what a test that ends early needs.
        self.shutdown.cancel();
    }
}

/// Options for a [`TestApp`]: where its data lives, the replicas and Redis it uses, its
/// admin key, and any other setting. One builder may start several applications (a
/// fleet); each gets its own data directory, and on the suite's backend its own database.
#[derive(Clone, Default)]
pub struct TestAppBuilder {
    postgres: Option<PgTarget>,
    replicas: Vec<String>,
    redis: Option<RedisTarget>,
    kafka: Option<String>,
    admin_key: Option<String>,
    frequent_reloads: bool,
    client_timeout: Option<Duration>,
    overrides: Vec<Override>,
}

impl TestAppBuilder {
    /// The whole of a cluster of the test's own as the database, instead of the suite's
    /// backend.
    pub fn postgres(mut self, cluster: &PgCluster) -> Self {
        self.postgres = Some(PgTarget::direct(&cluster.url()));
        self
    }

    /// A PostgreSQL database reached through a PgBouncer in transaction pooling mode at
    /// `pooled_url`, with `direct_url` the server itself (migrations, `LISTEN`).
    pub fn postgres_behind_pgbouncer(mut self, pooled_url: &str, direct_url: &str) -> Self {
        self.postgres = Some(PgTarget {
            direct_url: direct_url.to_owned(),
            app_url: pooled_url.to_owned(),
        });
        self
    }

    /// The database of `other`, reached the same way: a second instance of one service.
    /// On SQLite, which serves one process, the new application gets its own.
    pub fn same_database_as(mut self, other: &TestApp) -> Self {
        self.postgres = other.database.postgres().cloned();
        self
    }

    /// A streaming replica for reads.
    pub fn replica(mut self, replica: &PgCluster) -> Self {
        self.replicas.push(replica.url());
        self
    }

    /// A Redis server.
    pub fn redis(mut self, server: &RedisServer) -> Self {
        self.redis = Some(RedisTarget::Server(server.url()));
        self
    }

    /// A Redis Cluster, by all its nodes as seeds.
    pub fn redis_cluster(mut self, cluster: &RedisCluster) -> Self {
        self.redis = Some(RedisTarget::Cluster(cluster.urls()));
        self
    }

    /// A Kafka broker for the change events.
    pub fn kafka(mut self, broker: &KafkaBroker) -> Self {
        self.kafka = Some(broker.address());
        self
    }

    /// This bootstrap admin key instead of a random one.
    pub fn admin_key(mut self, key: &str) -> Self {
        self.admin_key = Some(key.to_owned());
        self
    }

    /// A full snapshot reload every 500 ms rather than hourly: exercises the reloader
    /// alongside whatever the test does.
    pub fn reload_snapshot_often(mut self) -> Self {
        self.frequent_reloads = true;
        self
    }

    /// A timeout on every request the test's clients send (none by default).
    pub fn client_timeout(mut self, timeout: Duration) -> Self {
        self.client_timeout = Some(timeout);
        self
    }

    /// Changes settings before start-up, after the harness's own.
    pub fn configure(mut self, change: impl Fn(&mut RawConfig) + Send + Sync + 'static) -> Self {
        self.overrides.push(Arc::new(change));
        self
    }

    /// The configuration an application would start with, data in `data_dir`, on
    /// SQLite unless a PostgreSQL database was given: for tests that build one part
    /// (a Redis client) rather than the whole application.
    pub fn config(&self, data_dir: &Path) -> Config {
        config::build(&self.settings(data_dir, self.postgres.as_ref()), |_| {})
    }

    /// Starts an application.
    pub async fn spawn(&self) -> TestApp {
        self.spawn_with(|_| {}).await
    }

    /// Starts an application, with `configure` applied last to its settings.
    pub async fn spawn_with(&self, configure: impl FnOnce(&mut RawConfig)) -> TestApp {
        tm_telemetry::init_for_tests();
        let data_dir = tempfile::tempdir().expect("temporary directory");
        let database = self.database(data_dir.path()).await;
        let admin_key = self
            .admin_key
            .clone()
            .unwrap_or_else(|| format!("test-admin-{}", uuid::Uuid::now_v7().simple()));
        self.start(data_dir, database, admin_key, configure).await
    }

    /// Stops `app` (as SIGTERM would) and starts an application in its place: on its
    /// data directory and database, with its admin key, `configure` applied last to the
    /// settings.
    pub async fn restart(
        &self,
        mut app: TestApp,
        configure: impl FnOnce(&mut RawConfig),
    ) -> TestApp {
        app.shutdown.cancel();
        if let Some(server) = app.server.take() {
            server
                .await
                .expect("server task")
                .expect("the application stops cleanly");
        }
        let database = std::mem::replace(&mut app.database, Database::Sqlite(PathBuf::new()));
        let data_dir = std::mem::replace(
            &mut app.data_dir,
            tempfile::tempdir().expect("temporary directory"),
        );
        let admin_key = app.admin_key.clone();
        self.start(data_dir, database, admin_key, configure).await
    }

    async fn start(
        &self,
        data_dir: tempfile::TempDir,
        database: Database,
        admin_key: String,
        configure: impl FnOnce(&mut RawConfig),
    ) -> TestApp {
        let mut settings = self.settings(data_dir.path(), database.postgres());
        settings.admin_key = Some(&admin_key);
        let config = config::build(&settings, configure);
        let app = Application::build(config)
            .await
            .expect("application starts");
        let addr = app.local_addr();
        let store = app.store();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run_until(shutdown.clone()));
        TestApp {
            addr,
            client: self.client(Some(&admin_key)),
            anonymous: self.client(None),
            admin_key,
            store,
            shutdown,
            server: Some(server),
            database,
            data_dir,
        }
    }

    /// The database given, else the suite's: a schema of its own on
    /// `TM_TEST_DATABASE_URL`, or SQLite in `data_dir`.
    async fn database(&self, data_dir: &Path) -> Database {
        if let Some(target) = &self.postgres {
            return Database::Postgres {
                target: target.clone(),
                owned: None,
            };
        }
        match std::env::var("TM_TEST_DATABASE_URL") {
            Ok(url) => {
                let (schema, target) = PgSchema::create(&url).await;
                Database::Postgres {
                    target,
                    owned: Some(schema),
                }
            }
            Err(_) => Database::Sqlite(data_dir.to_path_buf()),
        }
    }

    fn settings<'a>(&'a self, data_dir: &'a Path, postgres: Option<&'a PgTarget>) -> Settings<'a> {
        Settings {
            data_dir,
            postgres,
            replicas: &self.replicas,
            redis: self.redis.as_ref(),
            kafka: self.kafka.as_deref(),
            admin_key: self.admin_key.as_deref(),
            frequent_reloads: self.frequent_reloads,
            overrides: &self.overrides,
        }
    }

    /// A client that sends `key` with every request unless the request sets its own.
    fn client(&self, key: Option<&str>) -> reqwest::Client {
        let mut builder = reqwest::Client::builder();
        if let Some(key) = key {
            let mut auth = reqwest::header::HeaderMap::new();
            auth.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {key}").parse().expect("header value"),
            );
            builder = builder.default_headers(auth);
        }
        if let Some(timeout) = self.client_timeout {
            builder = builder.timeout(timeout);
        }
        builder.build().expect("client")
    }
}
