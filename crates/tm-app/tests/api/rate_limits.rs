//! Rate limits: per key and class, per client address for failed authentication.

use reqwest::{Method, StatusCode};

use tm_testing::*;

#[tokio::test]
async fn a_keys_write_budget_runs_out_with_429_and_headers() {
    let app = spawn_app_with(|raw| raw.limits.rate_limit_write = "3/min".into()).await;
    let key = app.create_key("tenant_admin", Some("acme")).await;
    for (i, remaining) in ["2", "1", "0"].into_iter().enumerate() {
        let reply = app
            .request_as(
                Some(&key),
                Method::POST,
                "/api/v1/routes",
                Some(route(
                    "acme",
                    "billing",
                    "prod",
                    &format!("v{i}"),
                    "http://a",
                )),
            )
            .await;
        reply.assert_status(StatusCode::CREATED);
        assert_eq!(reply.header("x-rate-limit-limit"), Some("3"));
        assert_eq!(reply.header("x-rate-limit-remaining"), Some(remaining));
        assert!(reply
            .header("x-rate-limit-reset")
            .is_some_and(|r| r.parse::<u64>().is_ok()));
    }
    let refused = app
        .request_as(
            Some(&key),
            Method::POST,
            "/api/v1/routes",
            Some(route("acme", "billing", "prod", "v9", "http://a")),
        )
        .await;
    refused.problem(StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(refused.header("x-rate-limit-remaining"), Some("0"));
    assert_eq!(
        app.all_routes().await.len(),
        3,
        "the refused write did not happen"
    );

    // Reads have a budget of their own, and so does every other key.
    app.request_as(Some(&key), Method::GET, "/api/v1/routes", None)
        .await
        .assert_status(StatusCode::OK);
    app.create("acme", "billing", "prod", "v10", "http://a")
        .await;

    let metrics = String::from_utf8(app.get("/metrics").await.body).expect("utf-8");
    assert!(
        metrics.contains("rate_limit_hits_total{class=\"write\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn failed_authentication_is_limited_per_client_address() {
    let app = spawn_app_with(|raw| raw.limits.rate_limit_unauthenticated = "2/min".into()).await;
    for _ in 0..2 {
        app.request_as(Some("wrong"), Method::GET, "/api/v1/routes", None)
            .await
            .problem(StatusCode::UNAUTHORIZED);
    }
    let refused = app
        .request_as(Some("wrong"), Method::GET, "/api/v1/routes", None)
        .await;
    refused.problem(StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.header("retry-after").is_some());
    // A valid key is not held back by others' failures.
    app.get("/api/v1/routes")
        .await
        .assert_status(StatusCode::OK);
}

#[tokio::test]
async fn exempt_addresses_are_never_limited() {
    let app = spawn_app_with(|raw| {
        raw.limits.rate_limit_unauthenticated = "1/min".into();
        raw.limits.rate_limit_exempt = "127.0.0.0/8".into();
    })
    .await;
    for _ in 0..5 {
        app.request_as(None, Method::GET, "/api/v1/routes", None)
            .await
            .problem(StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn resolve_answers_carry_the_rate_limit_headers() {
    let app = spawn_app().await;
    app.create("acme", "billing", "prod", "v1", "http://a")
        .await;
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    let reply = app
        .resolve(&[("tenant", "acme"), ("service", "billing"), ("env", "prod")])
        .await;
    reply.assert_status(StatusCode::OK);
    for header in [
        "x-rate-limit-limit",
        "x-rate-limit-remaining",
        "x-rate-limit-reset",
    ] {
        assert!(reply.header(header).is_some(), "{header}");
    }
}

#[tokio::test]
async fn the_keys_of_a_tenant_together_cannot_exceed_its_budget() {
    let app = TestApp::builder()
        .configure(|raw| {
            raw.limits.rate_limit_read = "3/min".into();
            raw.limits.rate_limit_tenant_read = "4/min".into();
        })
        .spawn()
        .await;
    let (first, second) = (
        app.create_key("reader", Some("acme")).await,
        app.create_key("reader", Some("acme")).await,
    );
    let other_tenant = app.create_key("reader", Some("globex")).await;
    let read = |key: &str| {
        let key = key.to_owned();
        let app = &app;
        async move {
            app.request_as(Some(&key), Method::GET, "/api/v1/routes", None)
                .await
        }
    };
    // Each key spends two of its three; the headers tell of the tighter budget: the
    // key's at first, then the tenant's.
    let mut seen = Vec::new();
    for key in [&first, &first, &second, &second] {
        let reply = read(key).await;
        reply.assert_status(StatusCode::OK);
        seen.push((
            reply.header("x-rate-limit-limit").map(str::to_owned),
            reply.header("x-rate-limit-remaining").map(str::to_owned),
        ));
    }
    let header =
        |limit: &str, remaining: &str| (Some(limit.to_owned()), Some(remaining.to_owned()));
    assert_eq!(
        seen,
        [
            header("3", "2"),
            header("3", "1"),
            header("4", "1"),
            header("4", "0")
        ]
    );
    // Both keys are within their own budgets, but the tenant's is spent.
    for key in [&first, &second] {
        let refused = read(key).await;
        refused.problem(StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.header("x-rate-limit-limit"), Some("4"));
        assert_eq!(refused.header("x-rate-limit-remaining"), Some("0"));
        let retry: u64 = refused
            .header("retry-after")
            .expect("retry-after")
            .parse()
            .expect("seconds");
        assert!((1..=15).contains(&retry), "{retry}");
    }
    // Another tenant's budget is untouched, and so is a key without a tenant.
    let other = read(&other_tenant).await;
    other.assert_status(StatusCode::OK);
    assert_eq!(other.header("x-rate-limit-remaining"), Some("2"));
    app.get("/api/v1/routes")
        .await
        .assert_status(StatusCode::OK);
    // Another class of the same tenant has a budget of its own.
    app.request_as(
        Some(&first),
        Method::GET,
        "/api/v1/routes/resolve?tenant=acme&service=billing&env=prod",
        None,
    )
    .await
    .problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_rate_limited_write_costs_no_database_work() {
    let app = spawn_app_with(|raw| {
        quiet_background(raw);
        raw.limits.rate_limit_write = "1/min".into();
    })
    .await;
    let key = app.create_key("tenant_admin", Some("acme")).await;
    let write = |version: &str, idem: &str| {
        app.anonymous
            .post(app.url("/api/v1/routes"))
            .bearer_auth(&key)
            .header("Idempotency-Key", idem.to_owned())
            .json(&route("acme", "billing", "prod", version, "http://a"))
            .send()
    };
    let first = Reply::from(write("v1", "first").await.expect("sent")).await;
    first.assert_status(StatusCode::CREATED);
    let queries = app.settled_metric_value("db_queries_total").await;
    for n in 0..3 {
        let refused = Reply::from(write("v2", &format!("refused-{n}")).await.expect("sent")).await;
        refused.problem(StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(
        app.settled_metric_value("db_queries_total").await,
        queries,
        "rate-limited writes went to the database"
    );
    assert_eq!(app.all_routes().await.len(), 1);
}
