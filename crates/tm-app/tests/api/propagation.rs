//! Two instances on one PostgreSQL database: a change made through one reaches the
//! other through change notifications, well before the periodic catch-up would.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use tm_testing::*;

/// How long a change may take to reach the other instance here (generous: the suite
/// runs many tests at once): far below the periodic catch-up, which the second
/// instance runs only once an hour.
const NOTIFIED_WITHIN: Duration = Duration::from_secs(5);

/// What `app` answers `key` for a listing of acme's routes.
async fn listing_as(app: &TestApp, key: &str) -> StatusCode {
    app.request_as(Some(key), Method::GET, "/api/v1/routes?tenant=acme", None)
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_and_revocations_reach_another_instance_when_notified() {
    let first = spawn_app().await;
    // SQLite serves one process: there is no other instance to tell.
    if first.database_url().is_none() {
        return;
    }
    let second = TestApp::builder()
        .same_database_as(&first)
        .spawn_with(|raw| {
            raw.process.snapshot_catch_up_interval = Duration::from_secs(3600);
            raw.process.snapshot_reload_interval = Duration::from_secs(3600);
        })
        .await;
    let query = [("tenant", "acme"), ("service", "billing"), ("env", "prod")];

    first
        .create_route(
            json!({"tenant": "acme", "service": "billing", "env": "prod",
            "version": "v1", "url": "http://v1.internal", "active": true}),
        )
        .await
        .assert_status(StatusCode::CREATED);
    let took = eventually(
        NOTIFIED_WITHIN,
        "activation seen by the second instance",
        || async { second.resolve(&query).await.status == StatusCode::OK },
    )
    .await;
    eprintln!("activation reached the second instance after {took:?}");

    first
        .deactivate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    eventually(
        NOTIFIED_WITHIN,
        "deactivation seen by the second instance",
        || async { second.resolve(&query).await.status == StatusCode::NOT_FOUND },
    )
    .await;

    let reader = first.create_key("reader", Some("acme")).await;
    eventually(
        NOTIFIED_WITHIN,
        "new key accepted by the second instance",
        || async { listing_as(&second, &reader).await == StatusCode::OK },
    )
    .await;
    let listed = first.get("/api/v1/keys").await.json();
    let id = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|k| k["name"] == "reader key")
        .expect("the reader key")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    first
        .request(Method::DELETE, &format!("/api/v1/keys/{id}"), None)
        .await
        .assert_status(StatusCode::NO_CONTENT);
    eventually(
        NOTIFIED_WITHIN,
        "revoked key refused by the second instance",
        || async { listing_as(&second, &reader).await == StatusCode::UNAUTHORIZED },
    )
    .await;

    // The second instance applied the first's changes; the first, which applied them
    // before acknowledging them, ignored the notifications of its own writes.
    let observed = second
        .metric_value("routing_propagation_seconds_count")
        .await;
    assert!(observed >= 2.0, "propagations observed: {observed}");
    assert_eq!(
        first
            .metric_value("routing_propagation_seconds_count")
            .await,
        0.0
    );
}
