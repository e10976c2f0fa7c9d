//! Concurrent writers: one winner per key, and every writer served.

use futures::future::join_all;
use reqwest::StatusCode;

use tm_testing::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_route_yield_one_201_and_the_rest_409() {
    let app = spawn_app().await;
    let attempts = (0..20).map(|i| {
        let app = &app;
        async move {
            app.create_route(route(
                "acme",
                "billing",
                "prod",
                "v1",
                &format!("http://a{i}"),
            ))
            .await
            .status
        }
    });
    let statuses = join_all(attempts).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 19), "{statuses:?}");
    assert_eq!(app.all_routes().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_writers_are_all_served() {
    let app = spawn_app().await;
    let writers = (0..50).map(|i| {
        let app = &app;
        async move {
            app.create_route(route(
                "acme",
                "billing",
                "prod",
                &format!("v{i}"),
                "http://a",
            ))
            .await
            .status
        }
    });
    let statuses = join_all(writers).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::CREATED),
        "{statuses:?}"
    );
    assert_eq!(app.all_routes().await.len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flips_leave_the_snapshot_matching_the_store() {
    let app = spawn_app().await;
    for v in ["v1", "v2", "v3"] {
        app.create("acme", "billing", "prod", v, &format!("http://{v}"))
            .await;
    }
    let flips = (0..60).map(|i| {
        let app = &app;
        let version = ["v1", "v2", "v3"][i % 3];
        async move {
            if i % 2 == 0 {
                app.activate("acme", "billing", "prod", version)
                    .await
                    .status
            } else {
                app.deactivate("acme", "billing", "prod", version)
                    .await
                    .status
            }
        }
    });
    assert!(join_all(flips).await.iter().all(|s| *s == StatusCode::OK));
    for route in app.all_routes().await {
        let version = route["version"].as_str().expect("version");
        let resolved = app
            .resolve(&[
                ("tenant", "acme"),
                ("service", "billing"),
                ("env", "prod"),
                ("version", version),
            ])
            .await;
        let expected = if route["active"] == true {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(
            resolved.status, expected,
            "{version} active={}",
            route["active"]
        );
    }
}
