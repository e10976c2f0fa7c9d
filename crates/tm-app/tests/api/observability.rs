//! Request identity, security headers, CORS and metrics, seen from outside.

use reqwest::{Method, StatusCode};

use tm_testing::*;

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_correlation_id() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/healthz"),
        (Method::GET, "/api/v1/routes"),
        (Method::GET, "/nope"),
        (Method::PUT, "/api/v1/routes"),
    ] {
        let reply = app.request(method.clone(), path, None).await;
        let request_id = reply.header("x-request-id").expect("x-request-id");
        assert!(!request_id.is_empty() && request_id.len() <= 128);
        assert_eq!(
            reply.header("x-correlation-id"),
            Some(request_id),
            "{method} {path}"
        );
    }
    // Unauthenticated answers too.
    let reply = app
        .request_as(None, Method::GET, "/api/v1/routes", None)
        .await;
    assert!(reply.header("x-request-id").is_some() && reply.header("x-correlation-id").is_some());
}

#[tokio::test]
async fn a_sane_incoming_request_id_is_echoed_and_anything_else_replaced() {
    let app = spawn_app().await;
    let send = |request_id: String, correlation: Option<&'static str>| {
        let app = &app;
        async move {
            let mut req = app
                .client
                .get(app.url("/healthz"))
                .header("x-request-id", request_id);
            if let Some(c) = correlation {
                req = req.header("x-correlation-id", c);
            }
            Reply::from(req.send().await.expect("sent")).await
        }
    };
    let sane = "req-1.2_AZaz09";
    let echoed = send(sane.into(), Some("flow-42")).await;
    assert_eq!(echoed.header("x-request-id"), Some(sane));
    assert_eq!(echoed.header("x-correlation-id"), Some("flow-42"));
    let longest = "x".repeat(128);
    assert_eq!(
        send(longest.clone(), None).await.header("x-request-id"),
        Some(longest.as_str())
    );
    for insane in [
        "has space".to_owned(),
        "x".repeat(129),
        "a/b".into(),
        "quote\"d".into(),
    ] {
        let reply = send(insane.clone(), None).await;
        let id = reply.header("x-request-id").expect("a new id");
        assert_ne!(id, insane);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
    }
}

#[tokio::test]
async fn security_headers_are_on_every_response() {
    let app = spawn_app().await;
    for path in ["/healthz", "/api/v1/routes", "/nope", "/metrics"] {
        let reply = app.get(path).await;
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(reply.header("x-frame-options"), Some("DENY"));
        let csp = reply.header("content-security-policy").expect("csp");
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        assert!(
            reply.header("strict-transport-security").is_none(),
            "not behind TLS"
        );
    }
    let tls = spawn_app_with(|raw| raw.http.behind_tls = true).await;
    let reply = tls.get("/healthz").await;
    assert!(reply
        .header("strict-transport-security")
        .expect("hsts")
        .contains("max-age="));
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let app =
        spawn_app_with(|raw| raw.http.cors_origins = Some("https://console.example.com".into()))
            .await;
    let preflight = |origin: &'static str| {
        let app = &app;
        async move {
            app.anonymous
                .request(Method::OPTIONS, app.url("/api/v1/routes"))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization, content-type",
                )
                .send()
                .await
                .expect("sent")
        }
    };
    let allowed = preflight("https://console.example.com").await;
    assert!(allowed.status().is_success());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"]
            .to_str()
            .expect("ascii"),
        "https://console.example.com"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        methods.contains("POST") && !methods.contains("PUT"),
        "{methods}"
    );
    let refused = preflight("https://evil.example").await;
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // Without configured origins there is no cross-origin access at all.
    let closed = spawn_app().await;
    let reply = closed
        .client
        .get(closed.url("/api/v1/routes"))
        .header("origin", "https://console.example.com")
        .send()
        .await
        .expect("sent");
    assert!(reply.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn metrics_are_scrapeable_from_the_start_and_count_by_route_template() {
    let app = spawn_app().await;
    let first = app.request_as(None, Method::GET, "/metrics", None).await;
    first.assert_status(StatusCode::OK);
    assert!(first
        .header("content-type")
        .expect("type")
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(first.body.clone()).expect("utf-8");
    for name in [
        "http_requests_total",
        "http_request_duration_seconds",
        "tenant_requests_total",
        "db_pool_connections",
        "db_pool_max",
        "db_pool_waiting",
        "db_pool_usage_percent",
        "db_queries_total",
        "db_connection_errors_total",
        "routing_snapshot_routes",
        "routing_snapshot_age_seconds",
        "routing_propagation_seconds",
        "app_uptime_seconds",
        "build_info",
        "queue_depth",
        "dlq_size",
        "events_published_total",
        "events_failed_total",
        "outbox_lag_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing at start-up"
        );
    }
    // Every sink and event type has its series before the first event, Kafka
    // configured or not.
    for sink in ["kafka", "webhook"] {
        for kind in ["route.created", "route.deleted", "key.revoked"] {
            for family in ["events_published_total", "events_failed_total"] {
                let series = format!("{family}{{sink=\"{sink}\",type=\"{kind}\"}}");
                assert_eq!(metric_value(&text, &series), Some(0.0), "{series}");
            }
        }
        let lag = format!("outbox_lag_seconds{{sink=\"{sink}\"}}");
        assert_eq!(metric_value(&text, &lag), Some(0.0), "{lag}");
    }

    let created = app
        .create("acme", "billing", "prod", "v1", "http://a")
        .await;
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    let id = created["id"].as_str().expect("id");
    for _ in 0..3 {
        app.get(&format!("/api/v1/routes/{id}"))
            .await
            .assert_status(StatusCode::OK);
    }
    app.get(&format!("/api/v1/routes/{}", uuid::Uuid::now_v7()))
        .await;
    let text = String::from_utf8(app.get("/metrics").await.body).expect("utf-8");
    let by_template =
        r#"http_requests_total{endpoint="/api/v1/routes/{id}",method="GET",status="200"}"#;
    assert_eq!(metric_value(&text, by_template), Some(3.0), "{text}");
    assert!(!text.contains(id), "raw paths never become labels");
    assert!(
        metric_value(&text, r#"tenant_requests_total{tenant="acme"}"#).is_some_and(|n| n >= 2.0)
    );
    assert!(metric_value(&text, "db_queries_total").is_some_and(|n| n > 0.0));
    assert_eq!(metric_value(&text, "routing_snapshot_routes"), Some(1.0));
    let pools = app.store.pool_stats();
    for pool in pools {
        let max = format!("db_pool_max{{pool=\"{}\"}}", pool.pool);
        assert_eq!(
            metric_value(&text, &max),
            Some(f64::from(pool.max)),
            "{max}"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_lists_every_contract_path() {
    let app = spawn_app().await;
    let reply = app
        .request_as(None, Method::GET, "/openapi.json", None)
        .await;
    reply.assert_status(StatusCode::OK);
    let doc = reply.json();
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"));
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/api/v1/routes/resolve", &["get"][..]),
        ("/api/v1/routes", &["get", "post"]),
        ("/api/v1/routes/activate", &["post"]),
        ("/api/v1/routes/deactivate", &["post"]),
        ("/api/v1/routes/{id}", &["get", "patch", "delete"]),
        ("/api/v1/keys", &["get", "post"]),
        ("/api/v1/keys/{id}", &["delete"]),
    ] {
        for method in methods {
            let operation = &paths[path][*method];
            assert!(operation.is_object(), "{method} {path} is not documented");
            let responses = operation["responses"].as_object().expect("responses");
            for status in ["401", "403", "422"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
            assert_eq!(
                responses["401"]["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem"
            );
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["security"]
        .as_array()
        .expect("security")
        .iter()
        .any(|s| s.get("bearer").is_some()));
}
