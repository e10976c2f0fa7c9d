//! Probes: static liveness, readiness that checks the database, and details.

use reqwest::StatusCode;

use tm_testing::*;

#[tokio::test]
async fn healthz_and_liveness_answer_ok() {
    let app = spawn_app().await;
    let healthz = app.get("/healthz").await;
    healthz.assert_status(StatusCode::OK);
    assert_eq!(healthz.json(), serde_json::json!({"status": "ok"}));
    for path in ["/health", "/health/live"] {
        let reply = app.get(path).await;
        reply.assert_status(StatusCode::OK);
        assert_eq!(reply.json()["status"], "ok");
    }
}

#[tokio::test]
async fn a_deprecated_endpoint_answers_as_before_and_names_its_sunset_and_successor() {
    let app = spawn_app().await;
    let old = app.get("/health").await;
    old.assert_status(StatusCode::OK);
    // RFC 9745's structured date, RFC 8594's HTTP date, RFC 8288's link.
    assert_eq!(old.header("deprecation"), Some("@1796083200"));
    assert_eq!(old.header("sunset"), Some("Thu, 01 Jul 2027 00:00:00 GMT"));
    assert_eq!(
        old.header("link"),
        Some("</health/live>; rel=\"successor-version\"")
    );
    // The request id and security headers are there as on every answer.
    assert!(old.header("x-request-id").is_some());
    let successor = app.get("/health/live").await;
    successor.assert_status(StatusCode::OK);
    for header in ["deprecation", "sunset", "link"] {
        assert_eq!(successor.header(header), None, "{header}");
    }
}

#[tokio::test]
async fn readiness_checks_the_database_and_shows_pool_figures() {
    let app = spawn_app().await;
    let ready = app.get("/health/ready").await;
    ready.assert_status(StatusCode::OK);
    let body = ready.json();
    assert_eq!(body["status"], "ready");
    let database = &body["checks"]["database"];
    assert_eq!(database["status"], "healthy");
    assert_eq!(database["backend"], backend());
    let pools = database["pools"].as_object().expect("pools");
    assert!(!pools.is_empty());
    for (name, pool) in pools {
        for figure in ["size", "idle", "in_use", "waiting", "max"] {
            assert!(pool[figure].is_u64(), "pool {name} lacks {figure}: {pool}");
        }
        assert!(pool["max"].as_u64() >= pool["size"].as_u64());
    }
}

#[tokio::test]
async fn readiness_is_503_while_the_database_is_unreachable() {
    let app = spawn_app().await;
    app.store.close().await;
    let reply = app.get("/health/ready").await;
    reply.assert_status(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["status"], "not_ready");
    assert_eq!(reply.json()["checks"]["database"]["status"], "unhealthy");
    // Liveness does not depend on the database.
    app.get("/health/live").await.assert_status(StatusCode::OK);
    app.get("/healthz").await.assert_status(StatusCode::OK);
}

#[tokio::test]
async fn writes_answer_503_with_retry_after_while_the_database_is_unreachable() {
    let app = spawn_app().await;
    app.store.close().await;
    let reply = app
        .create_route(route("acme", "billing", "prod", "v1", "http://a"))
        .await;
    reply.problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.header("retry-after").is_some());
}

#[tokio::test]
async fn detailed_health_shows_the_snapshot() {
    let app = spawn_app().await;
    app.create("acme", "billing", "prod", "v1", "http://a")
        .await;
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    let reply = app.get("/health/detailed").await;
    reply.assert_status(StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["snapshot"]["routes"], 1);
    assert!(body["snapshot"]["age_seconds"].is_number());
    assert!(body["checks"]["database"]["pools"].is_object());
}

#[tokio::test]
async fn unknown_paths_are_404_problems_and_wrong_methods_405() {
    let app = spawn_app().await;
    app.get("/nope").await.problem(StatusCode::NOT_FOUND);
    app.request(reqwest::Method::PUT, "/api/v1/routes", None)
        .await
        .problem(StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn shutdown_finishes_cleanly() {
    let app = spawn_app().await;
    app.get("/healthz").await.assert_status(StatusCode::OK);
    let addr = app.addr;
    app.stop().await.expect("clean shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_probes_share_one_database_check() {
    let app = spawn_app_with(|raw| {
        quiet_background(raw);
        raw.http.health_check_interval = std::time::Duration::from_secs(60);
    })
    .await;
    let queries = app.settled_metric_value("db_queries_total").await;
    let probes = (0..40).map(|n| {
        let path = if n % 4 == 0 {
            "/health/detailed"
        } else {
            "/health/ready"
        };
        app.anonymous.get(app.url(path)).send()
    });
    for reply in futures::future::join_all(probes).await {
        assert_eq!(reply.expect("sent").status(), StatusCode::OK);
    }
    // And more, one after another, within the interval.
    for _ in 0..10 {
        app.get("/health/ready").await.assert_status(StatusCode::OK);
    }
    assert_eq!(
        app.settled_metric_value("db_queries_total").await - queries,
        1.0,
        "one database check for every probe of the interval"
    );
}

#[tokio::test]
async fn health_shows_the_database_error_to_admins_only() {
    let app = spawn_app().await;
    app.store.close().await;
    for path in ["/health/detailed", "/health/ready"] {
        let anonymous =
            Reply::from(app.anonymous.get(app.url(path)).send().await.expect("sent")).await;
        let body = anonymous.json();
        let database = &body["checks"]["database"];
        assert_eq!(database["status"], "unhealthy", "{body}");
        assert_eq!(database["message"], "database check failed", "{body}");
        assert!(database.get("error").is_none(), "{body}");
        let admin = app.get(path).await.json();
        assert!(
            admin["checks"]["database"]["error"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
            "{admin}"
        );
    }
    // A key presented is admitted as anywhere else: a bad one is refused.
    let reply = app
        .request_as(
            Some("not-a-key"),
            reqwest::Method::GET,
            "/health/detailed",
            None,
        )
        .await;
    reply.problem(StatusCode::UNAUTHORIZED);
}
