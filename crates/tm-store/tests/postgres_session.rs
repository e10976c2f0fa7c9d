//! PostgreSQL connections carry the configured session limits. Runs when
//! `TM_TEST_DATABASE_URL` names a server (as `scripts/test.sh` arranges).

use std::time::Duration;

use secrecy::SecretString;
use sqlx::Connection;
use tm_config::{PoolConfig, PostgresConfig};
use tm_store::{PostgresStore, StoreError, StoreOps};

fn pool_config() -> PoolConfig {
    PoolConfig {
        max_connections: 2,
        critical_connections: 1,
        min_connections: 0,
        acquire_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        max_lifetime: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn every_connection_carries_the_statement_and_idle_transaction_timeouts() {
    let Ok(admin_url) = std::env::var("TM_TEST_DATABASE_URL") else {
        eprintln!("TM_TEST_DATABASE_URL is not set: PostgreSQL session test not run");
        return;
    };
    let schema = format!("session_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("admin connection");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("schema");
    let separator = if admin_url.contains('?') { '&' } else { '?' };
    let storage = PostgresConfig {
        url: SecretString::from(format!(
            "{admin_url}{separator}options=-c%20search_path%3D{schema}"
        )),
        statement_timeout: Duration::from_millis(250),
        idle_in_transaction_timeout: Duration::from_millis(1500),
        statement_cache: false,
        transaction_pooling: false,
        direct_url: None,
        replicas: Vec::new(),
        replica_max_lag: Duration::from_secs(5),
    };
    let store = PostgresStore::connect(&storage, &pool_config(), Default::default())
        .await
        .expect("connects and migrates");

    let pool = store.pool();
    let statement: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(pool)
        .await
        .expect("show");
    let idle: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(pool)
        .await
        .expect("show");
    assert_eq!((statement.as_str(), idle.as_str()), ("250ms", "1500ms"));

    // A statement over the limit is cancelled by the server and reported as transient.
    let slow = sqlx::query("SELECT pg_sleep(2)")
        .execute(pool)
        .await
        .expect_err("cancelled");
    assert!(matches!(StoreError::from(slow), StoreError::Unavailable(_)));

    store.close().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .expect("drop schema");
}
