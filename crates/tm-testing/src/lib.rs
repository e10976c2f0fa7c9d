//! The test harness shared by every test binary: [`TestApp`] starts the real application
//! on a random port over a database of its own and stops it again; the servers a test
//! may need of its own ([`PgCluster`], [`RedisServer`], [`RedisCluster`],
//! [`KafkaBroker`], [`S3Server`], [`OtlpReceiver`]) start and stop with it; one Prometheus parser ([`metric_value`]) and one waiter ([`eventually`]).
//!
//! A library rather than a module each test binary includes: every public item here is
//! used by some binary, none by all, and only a library's public items are never
//! reported as dead code.
//!
//! Environment, as the test command sets it:
//! - `TM_TEST_DATABASE_URL`: a PostgreSQL server; each application gets a schema of its
//!   own there, dropped with it. Unset: SQLite, a temporary file per application.
//! - `TM_TEST_DATABASE_DIRECT_URL`: set when `TM_TEST_DATABASE_URL` is a PgBouncer in
//!   transaction pooling mode; the server itself, for migrations, `LISTEN` and the
//!   test's own connections.
//! - `TM_TEST_PG_BINDIR`, `TM_TEST_PG_USER`: PostgreSQL's binaries, and the user to run
//!   clusters as when the tests run as root; the tests needing clusters of their own
//!   return early without them.
//! - `TM_TEST_REDIS_SERVER`: a `redis-server` binary, `redis-cli` beside it; likewise.
//! - `TM_TEST_KAFKA_BROKER`: a `tansu` binary, the Kafka-protocol broker; likewise.
//! - `TM_TEST_S3_SERVER`: moto's `moto_server` script, an S3-compatible server; likewise.

mod app;
mod binary;
mod client;
mod config;
mod database;
mod kafka;
mod metrics;
mod otlp;
mod postgres;
mod process;
mod receiver;
mod redis;
mod s3;
mod upstream;
mod wait;

pub use app::{spawn_app, spawn_app_with, TestApp, TestAppBuilder};
pub use binary::{binary_command, start_listening};
pub use client::{route, Reply};
pub use config::quiet_background;
pub use database::{backend, OwnSchema};
pub use kafka::{Consumed, KafkaBroker};
pub use metrics::metric_value;
pub use otlp::{ExportedSpan, OtlpReceiver};
pub use postgres::PgCluster;
pub use receiver::{Answer, Received, WebhookReceiver};
pub use redis::{RedisCluster, RedisServer};
pub use s3::S3Server;
pub use upstream::Upstream;
pub use wait::{eventually, eventually_blocking};

/// Serves `app` on a free port of 127.0.0.1 until the returned task is aborted (the test
/// servers' owners abort it when dropped).
pub(crate) async fn serve_on_loopback(
    app: axum::Router,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}
