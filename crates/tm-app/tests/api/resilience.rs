//! Degrading honestly: the circuit breaker, stale reads, critical writes, coalescing.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use tm_testing::*;

/// Takes connections from the application's own ordinary pools until `share` of them
/// are in use, and holds them until dropped.
async fn hold_pool(app: &TestApp, share: f64) -> Vec<Box<dyn std::any::Any + Send>> {
    let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let any = app.store.as_any();
    if let Some(sqlite) = any.downcast_ref::<tm_store::SqliteStore>() {
        let (writer, reader) = sqlite.pools();
        let max = writer.options().get_max_connections() + reader.options().get_max_connections();
        let wanted = (f64::from(max) * share).ceil() as u32;
        held.push(Box::new(writer.acquire().await.expect("writer")));
        for _ in 1..wanted {
            held.push(Box::new(reader.acquire().await.expect("reader")));
        }
    } else if let Some(postgres) = any.downcast_ref::<tm_store::PostgresStore>() {
        let pool = postgres.pool();
        let wanted = (f64::from(pool.options().get_max_connections()) * share).ceil() as u32;
        for _ in 0..wanted {
            held.push(Box::new(pool.acquire().await.expect("primary")));
        }
    } else {
        panic!("unknown store");
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_pressure_opens_the_breaker_and_only_the_rollback_path_passes() {
    let app = spawn_app_with(|raw| {
        raw.guards.breaker_open_for = Duration::from_millis(300);
        raw.guards.breaker_pressure_for = Duration::ZERO;
        // With no grace for pressure, the background workers' first queries at start-up
        // would open the breaker before the test holds the pool.
        quiet_background(raw);
        raw.guards.read_cache_ttl = Duration::from_nanos(1);
    })
    .await;
    let created = app
        .create("acme", "billing", "prod", "v1", "http://a")
        .await;
    let path = format!("/api/v1/routes/{}", created["id"].as_str().expect("id"));
    app.get(&path).await.assert_status(StatusCode::OK); // known data, for later

    let held = hold_pool(&app, 0.9).await;

    // Reads answer the last known data, marked stale, without waiting for the pool.
    let started = Instant::now();
    let stale = app.get(&path).await;
    stale.assert_status(StatusCode::OK);
    assert_eq!(stale.header("warning"), Some("110 - \"Response is Stale\""));
    assert_eq!(stale.json()["id"], created["id"]);
    // Reads never made before have nothing to fall back on: a fast 503.
    let unknown = app.get("/api/v1/routes?tenant=globex").await;
    unknown.problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(unknown.header("retry-after").is_some());
    // Ordinary writes fail fast.
    let write = app
        .create_route(route("acme", "billing", "prod", "v2", "http://b"))
        .await;
    write.problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(write.header("retry-after").is_some());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answers were not fast: {:?}",
        started.elapsed()
    );
    // The rollback path still works, through its reserved connection.
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    app.deactivate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);

    let detailed = app.get("/health/detailed").await.json();
    assert_eq!(
        detailed["circuit_breakers"]["database"]["state"], "open",
        "{detailed}"
    );
    let metrics = String::from_utf8(app.get("/metrics").await.body).expect("utf-8");
    assert_eq!(
        metric_value(&metrics, r#"circuit_breaker_state{breaker="database"}"#),
        Some(1.0)
    );

    // Pressure gone: after the cool-down a probe closes the breaker by itself.
    drop(held);
    eventually(Duration::from_secs(10), "the breaker closing", || async {
        app.create_route(route("acme", "billing", "prod", "v3", "http://c"))
            .await
            .status
            == StatusCode::CREATED
    })
    .await;
    let fresh = app.get(&path).await;
    fresh.assert_status(StatusCode::OK);
    assert!(fresh.header("warning").is_none());
    assert_eq!(
        app.get("/health/detailed").await.json()["circuit_breakers"]["database"]["state"],
        "closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_claim_passes_the_breaker_like_the_write_it_covers() {
    let app = spawn_app_with(|raw| {
        raw.guards.breaker_open_for = Duration::from_secs(60);
        raw.guards.breaker_pressure_for = Duration::ZERO;
        // With no grace for pressure, the background workers' first queries at start-up
        // would open the breaker before the test holds the pool.
        quiet_background(raw);
    })
    .await;
    let held = hold_pool(&app, 0.9).await;
    let started = Instant::now();
    let refused = Reply::from(
        app.client
            .post(app.url("/api/v1/routes"))
            .header("Idempotency-Key", "under-pressure")
            .json(&route("acme", "billing", "prod", "v1", "http://a"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let problem = refused.problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("circuit breaker")),
        "{problem}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the claim waited for the pool: {:?}",
        started.elapsed()
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_database_failures_open_the_breaker() {
    let app = spawn_app_with(|raw| {
        raw.guards.breaker_failures = 2;
        raw.guards.breaker_open_for = Duration::from_secs(60);
    })
    .await;
    app.store.close().await;
    for _ in 0..2 {
        app.create_route(route("acme", "billing", "prod", "v1", "http://a"))
            .await
            .problem(StatusCode::SERVICE_UNAVAILABLE);
    }
    let detailed = app.get("/health/detailed").await.json();
    assert_eq!(
        detailed["circuit_breakers"]["database"]["state"], "open",
        "{detailed}"
    );
    let refused = app
        .create_route(route("acme", "billing", "prod", "v1", "http://a"))
        .await;
    let problem = refused.problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("circuit breaker"),
        "{problem}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_reads_share_one_query() {
    let app = spawn_app_with(|raw| {
        quiet_background(raw);
        raw.guards.read_cache_ttl = Duration::from_secs(60);
    })
    .await;
    let created = app
        .create("acme", "billing", "prod", "v1", "http://a")
        .await;
    let path = format!("/api/v1/routes/{}", created["id"].as_str().expect("id"));
    let before = app.settled_metric_value("db_queries_total").await;
    let reads = (0..50).map(|_| {
        let (client, url) = (app.client.clone(), app.url(&path));
        tokio::spawn(async move { client.get(url).send().await.expect("get").status() })
    });
    let handles: Vec<_> = reads.collect();
    for handle in handles {
        assert_eq!(handle.await.expect("task"), StatusCode::OK);
    }
    let after = app.metric_value("db_queries_total").await;
    assert_eq!(
        after - before,
        1.0,
        "50 concurrent identical reads must share one query"
    );
    let text = String::from_utf8(app.get("/metrics").await.body).expect("utf-8");
    assert!(metric_value(&text, "cache_misses_total").is_some_and(|n| n >= 1.0));
    assert!(metric_value(&text, "cache_hits_total").is_some());
}

#[tokio::test]
async fn writes_invalidate_cached_reads() {
    let app = spawn_app_with(|raw| raw.guards.read_cache_ttl = Duration::from_secs(60)).await;
    let created = app
        .create("acme", "billing", "prod", "v1", "http://a")
        .await;
    let path = format!("/api/v1/routes/{}", created["id"].as_str().expect("id"));
    assert_eq!(app.get(&path).await.json()["weight"], 100);
    app.request(Method::PATCH, &path, Some(serde_json::json!({"weight": 7})))
        .await
        .assert_status(StatusCode::OK);
    assert_eq!(
        app.get(&path).await.json()["weight"],
        7,
        "a write is visible at once"
    );
    assert_eq!(
        app.get("/api/v1/routes").await.json()["items"][0]["weight"],
        7
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_in_flight_limit_requests_are_shed_at_once() {
    let app = spawn_app_with(|raw| raw.guards.max_in_flight = 1).await;
    let held = app.lock_routes().await;
    // This write waits for the lock: it is the one request in flight.
    let stuck = {
        let (client, url) = (app.client.clone(), app.url("/api/v1/routes"));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&route("acme", "billing", "prod", "v1", "http://a"))
                .send()
                .await
                .expect("sent")
                .status()
        })
    };
    // Nothing outside the application shows the write waiting on the lock (no gauge
    // of requests in flight; SQLite has no view of its waiters), and any probe that went
    // through the API would itself be the request in flight: give the write time to
    // get there.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let shed = app.get("/api/v1/routes").await;
    shed.problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "shedding must not queue"
    );
    // Probes are not API requests and are never shed.
    app.get("/healthz").await.assert_status(StatusCode::OK);
    // Once the lock is gone, the waiting write completes.
    drop(held);
    assert_eq!(stuck.await.expect("task"), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_snapshot_reloads_share_one_query() {
    let app = spawn_app_with(quiet_background).await;
    app.create("acme", "billing", "prod", "v1", "http://a")
        .await;
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    let table = std::sync::Arc::new(
        tm_store::RoutingTable::load(app.store.clone())
            .await
            .expect("load"),
    );
    let before = app.settled_metric_value("db_queries_total").await;
    let reloads: Vec<_> = (0..20)
        .map(|_| {
            let table = table.clone();
            tokio::spawn(async move { table.reload().await.expect("reload") })
        })
        .collect();
    for reload in reloads {
        assert_eq!(reload.await.expect("task"), 1);
    }
    let after = app.metric_value("db_queries_total").await;
    assert!(
        after - before < 10.0,
        "20 concurrent reloads made {} queries",
        after - before
    );
}

/// Routes as the store holds them, for driving a `RoutingTable` directly.
async fn stored_routes(app: &TestApp, services: &[String], active: bool) -> Vec<tm_domain::Route> {
    let mut stored = Vec::new();
    for service in services {
        let mut body = route("acme", service, "prod", "v1", "http://a");
        body["active"] = serde_json::json!(active);
        let reply = app.create_route(body).await;
        reply.assert_status(StatusCode::CREATED);
        let id = reply.json()["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("route id");
        stored.push(
            app.store
                .get_route(id, tm_store::ReadFrom::Primary)
                .await
                .expect("get")
                .expect("route"),
        );
    }
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_group_refreshes_share_queries_and_all_apply() {
    let app = spawn_app_with(quiet_background).await;
    let table = std::sync::Arc::new(
        tm_store::RoutingTable::load(app.store.clone())
            .await
            .expect("load"),
    );
    let services: Vec<String> = (0..20).map(|i| format!("svc{i}")).collect();
    let stored = stored_routes(&app, &services, true).await;
    let before = app.settled_metric_value("db_queries_total").await;
    let refreshes: Vec<_> = stored
        .into_iter()
        .map(|route| {
            let table = table.clone();
            tokio::spawn(async move {
                table
                    .refresh_group(&route.group(), tm_domain::RouteChange::Stored(&route))
                    .await;
                // Once a refresh returns, its own write is visible.
                let snapshot = table.snapshot();
                snapshot
                    .resolve(
                        &route.tenant,
                        &route.service,
                        &route.env,
                        tm_domain::Pick::Random(0),
                    )
                    .map(|r| r.version().to_owned())
            })
        })
        .collect();
    for refresh in refreshes {
        assert_eq!(
            refresh.await.expect("task").map(|v| v.to_string()),
            Some("v1".to_owned())
        );
    }
    let after = app.metric_value("db_queries_total").await;
    assert!(
        after - before < 10.0,
        "20 concurrent group refreshes made {} queries",
        after - before
    );
    assert_eq!(table.snapshot().route_count(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_stored_inactive_needs_no_snapshot_query() {
    let app = spawn_app_with(quiet_background).await;
    let table = std::sync::Arc::new(
        tm_store::RoutingTable::load(app.store.clone())
            .await
            .expect("load"),
    );
    let stored = stored_routes(&app, &["quiet".to_owned()], false).await;
    let before = app.settled_metric_value("db_queries_total").await;
    table
        .refresh_group(
            &stored[0].group(),
            tm_domain::RouteChange::Stored(&stored[0]),
        )
        .await;
    assert_eq!(app.metric_value("db_queries_total").await - before, 0.0);
    assert_eq!(table.snapshot().route_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_reads_are_guarded_like_route_reads() {
    let app = spawn_app_with(|raw| {
        raw.guards.breaker_open_for = Duration::from_secs(60);
        raw.guards.breaker_pressure_for = Duration::ZERO;
        // With no grace for pressure, the background workers' first queries at start-up
        // would open the breaker before the test holds the pool.
        quiet_background(raw);
    })
    .await;
    app.create_key("reader", Some("acme")).await;
    let id = app.get("/api/v1/keys").await.json()["items"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let held = hold_pool(&app, 0.9).await;
    // Listing and looking a key up (to revoke it) are refused at once, through the
    // breaker, rather than queueing for the pool.
    let started = Instant::now();
    for (method, path) in [
        (Method::GET, "/api/v1/keys".to_owned()),
        (Method::DELETE, format!("/api/v1/keys/{id}")),
    ] {
        let refused = app.request(method, &path, None).await;
        let problem = refused.problem(StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.header("retry-after").is_some());
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .starts_with("the database circuit breaker is open;"),
            "{path}: {problem}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answers were not fast: {:?}",
        started.elapsed()
    );
    drop(held);
}
