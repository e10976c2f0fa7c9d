//! A stored route the domain refuses is left out of the routing snapshot, counted and
//! logged: it does not stop the start-up, nor the service's other routes.

use reqwest::StatusCode;

use tm_testing::*;

const REJECTED: &str = "snapshot_rejected_rows_total";

/// An active route of `acme/billing/prod` at `version`, straight into the database,
/// with a URL the domain refuses: user-info on SQLite, whose schema cannot say so; a
/// port out of range on PostgreSQL, whose schema refuses user-info.
fn insert_refused_row(version: &str) -> String {
    let id = uuid::Uuid::now_v7();
    let (active, at, url) = if backend() == "postgres" {
        ("true", "now()", "http://10.0.0.9:99999/")
    } else {
        ("1", "'2026-01-01T00:00:00Z'", "http://user@10.0.0.9/")
    };
    format!(
        "INSERT INTO routes (id, tenant, service, env, version, url, active, weight, revision, created_at, updated_at) \
         VALUES ('{id}', 'acme', 'billing', 'prod', '{version}', '{url}', {active}, 100, 1, {at}, {at})"
    )
}

/// Runs `sql` on the database of `app`, whose data directory is `dir`.
async fn execute(app: &TestApp, dir: &std::path::Path, sql: &str) {
    if backend() == "postgres" {
        app.raw_execute(sql).await.expect("inserted");
    } else {
        use sqlx::Connection;
        let path = dir.join("traffic-manager.db");
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connect");
        sqlx::raw_sql(sql)
            .execute(&mut conn)
            .await
            .expect("inserted");
    }
}

#[tokio::test]
async fn a_stored_route_the_domain_refuses_is_left_out_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_path_buf();
    let first = TestApp::builder()
        .spawn_with(|raw| raw.process.data_dir = data_dir.clone())
        .await;
    first
        .create_route(route(
            "acme",
            "billing",
            "prod",
            "v1",
            "http://10.0.0.7:8080",
        ))
        .await
        .assert_status(StatusCode::CREATED);
    first
        .activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    execute(&first, dir.path(), &insert_refused_row("v2")).await;

    // A new start over that data: it starts, and serves the good route.
    let data_dir = dir.path().to_path_buf();
    let app = TestApp::builder()
        .same_database_as(&first)
        .spawn_with(|raw| raw.process.data_dir = data_dir.clone())
        .await;
    assert_eq!(app.metric_value(REJECTED).await, 1.0);
    let resolved = app
        .resolve(&[("tenant", "acme"), ("service", "billing"), ("env", "prod")])
        .await;
    resolved.assert_status(StatusCode::OK);
    assert_eq!(resolved.json()["url"], "http://10.0.0.7:8080");
    app.resolve(&[
        ("tenant", "acme"),
        ("service", "billing"),
        ("env", "prod"),
        ("version", "v2"),
    ])
    .await
    .assert_status(StatusCode::NOT_FOUND);

    // A write to the same service re-reads it, the refused row with it: still left out.
    app.create_route(route(
        "acme",
        "billing",
        "prod",
        "v3",
        "http://10.0.0.8:8080",
    ))
    .await
    .assert_status(StatusCode::CREATED);
    app.activate("acme", "billing", "prod", "v3")
        .await
        .assert_status(StatusCode::OK);
    assert!(app.metric_value(REJECTED).await >= 2.0);
    let v3 = app
        .resolve(&[
            ("tenant", "acme"),
            ("service", "billing"),
            ("env", "prod"),
            ("version", "v3"),
        ])
        .await;
    v3.assert_status(StatusCode::OK);
    assert_eq!(v3.json()["url"], "http://10.0.0.8:8080");
}
