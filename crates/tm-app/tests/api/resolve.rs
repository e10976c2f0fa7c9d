//! Resolve: answered from memory, by weight, sticky per key, with validators.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use tm_testing::*;

const SVC: [(&str, &str); 3] = [("tenant", "acme"), ("service", "billing"), ("env", "prod")];

fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    SVC.iter().copied().chain(extra.iter().copied()).collect()
}

#[tokio::test]
async fn resolve_returns_the_only_active_version() {
    let app = spawn_app().await;
    app.create("acme", "billing", "prod", "v1", "http://10.0.0.7:8080")
        .await;
    app.resolve(&SVC).await.problem(StatusCode::NOT_FOUND);
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);

    let reply = app.resolve(&SVC).await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!({"tenant": "acme", "service": "billing", "env": "prod", "version": "v1", "url": "http://10.0.0.7:8080"})
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let etag = reply.header("etag").expect("etag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "strong quoted: {etag}"
    );
    let cache = reply.header("cache-control").expect("cache-control");
    assert!(
        cache.contains("max-age=") && cache.contains("stale-while-revalidate="),
        "{cache}"
    );
}

#[tokio::test]
async fn resolve_stops_answering_when_the_route_is_deactivated_or_deleted() {
    let app = spawn_app().await;
    let created = app
        .create("acme", "billing", "prod", "v1", "http://a")
        .await;
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    app.resolve(&SVC).await.assert_status(StatusCode::OK);
    app.deactivate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    app.resolve(&SVC).await.problem(StatusCode::NOT_FOUND);

    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    let path = format!("/api/v1/routes/{}", created["id"].as_str().expect("id"));
    app.request(Method::DELETE, &path, None)
        .await
        .assert_status(StatusCode::NO_CONTENT);
    app.resolve(&SVC).await.problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_stickiness_key_is_measured_in_characters_as_the_document_says() {
    let app = spawn_app().await;
    app.create_active_versions(&[("v1", 100)]).await;
    // 256 characters of two bytes each: within the 256 of `maxLength`.
    let wide = "é".repeat(256);
    app.resolve(&with(&[("key", &wide)]))
        .await
        .assert_status(StatusCode::OK);
    let longer = "é".repeat(257);
    app.resolve(&with(&[("key", &longer)]))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn an_explicit_version_resolves_whatever_its_weight() {
    let app = spawn_app().await;
    let mut body = route("acme", "billing", "prod", "canary", "http://canary");
    body["active"] = json!(true);
    body["weight"] = json!(0);
    app.create_route(body)
        .await
        .assert_status(StatusCode::CREATED);

    let explicit = app.resolve(&with(&[("version", "canary")])).await;
    explicit.assert_status(StatusCode::OK);
    assert_eq!(explicit.json()["url"], "http://canary");
    // Without a version, weight 0 is never chosen: nothing else is active.
    app.resolve(&SVC).await.problem(StatusCode::NOT_FOUND);
    app.resolve(&with(&[("key", "user-1")]))
        .await
        .problem(StatusCode::NOT_FOUND);
    // An explicit version that is not active is 404.
    app.resolve(&with(&[("version", "v9")]))
        .await
        .problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn weight_zero_versions_are_never_chosen_without_a_version() {
    let app = spawn_app().await;
    app.create_active_versions(&[("v1", 100), ("v2", 0)]).await;
    for i in 0..50 {
        let reply = app.resolve(&SVC).await;
        assert_eq!(reply.json()["version"], "v1");
        let key = format!("k{i}");
        assert_eq!(
            app.resolve(&with(&[("key", &key)])).await.json()["version"],
            "v1"
        );
    }
}

#[tokio::test]
async fn a_key_sticks_to_its_version_and_keys_split_by_weight() {
    let app = spawn_app().await;
    app.create_active_versions(&[("v1", 70), ("v2", 30)]).await;
    let mut on_v2 = 0;
    for i in 0..400 {
        let key = format!("user-{i}");
        let first = app.resolve(&with(&[("key", &key)])).await.json();
        let second = app.resolve(&with(&[("key", &key)])).await.json();
        assert_eq!(first, second, "key {key} must stick");
        if first["version"] == "v2" {
            on_v2 += 1;
        }
    }
    assert!(
        (80..160).contains(&on_v2),
        "about 30% of keys on v2, got {on_v2}/400"
    );
}

#[tokio::test]
async fn random_picks_follow_the_weights() {
    let app = spawn_app().await;
    app.create_active_versions(&[("v1", 50), ("v2", 50)]).await;
    let mut v2 = 0;
    for _ in 0..300 {
        if app.resolve(&SVC).await.json()["version"] == "v2" {
            v2 += 1;
        }
    }
    assert!((100..200).contains(&v2), "about half on v2, got {v2}/300");
}

#[tokio::test]
async fn if_none_match_with_the_current_etag_is_304_and_a_change_invalidates_it() {
    let app = spawn_app().await;
    let created = app
        .create("acme", "billing", "prod", "v1", "http://a")
        .await;
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    let first = app.resolve(&SVC).await;
    let etag = first.header("etag").expect("etag").to_owned();

    let url =
        reqwest::Url::parse_with_params(&app.url("/api/v1/routes/resolve"), SVC).expect("url");
    let revalidate = |tag: String| {
        let (client, url) = (app.client.clone(), url.clone());
        async move {
            client
                .get(url)
                .header("if-none-match", tag)
                .send()
                .await
                .expect("sent")
        }
    };
    let not_modified = revalidate(etag.clone()).await;
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        not_modified.headers()["etag"].to_str().expect("ascii"),
        etag
    );
    assert_eq!(
        revalidate("\"other\"".into()).await.status(),
        StatusCode::OK
    );

    let path = format!("/api/v1/routes/{}", created["id"].as_str().expect("id"));
    app.request(Method::PATCH, &path, Some(json!({"url": "http://b"})))
        .await
        .assert_status(StatusCode::OK);
    let changed = revalidate(etag.clone()).await;
    assert_eq!(
        changed.status(),
        StatusCode::OK,
        "the answer changed, so must the ETag"
    );
    assert_ne!(changed.headers()["etag"].to_str().expect("ascii"), etag);
}

#[tokio::test]
async fn resolve_never_touches_the_database() {
    let app = spawn_app().await;
    app.create("acme", "billing", "prod", "v1", "http://a")
        .await;
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    app.store.close().await; // every later query would fail
    for _ in 0..20 {
        app.resolve(&SVC).await.assert_status(StatusCode::OK);
        app.resolve(&[("tenant", "acme"), ("service", "unknown"), ("env", "prod")])
            .await
            .problem(StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn the_snapshot_loaded_at_start_serves_routes_stored_earlier() {
    let app = spawn_app().await;
    app.create("acme", "billing", "prod", "v1", "http://a")
        .await;
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    let store = app.store.clone();
    // A snapshot built from the store alone serves the route.
    let table = tm_store::RoutingTable::load(store).await.expect("loads");
    assert_eq!(table.snapshot().route_count(), 1);
}

#[tokio::test]
async fn resolve_validates_its_query() {
    let app = spawn_app().await;
    app.resolve(&[("tenant", "acme"), ("service", "billing")])
        .await
        .problem(StatusCode::BAD_REQUEST);
    let bad = app
        .resolve(&[("tenant", "ACME"), ("service", "billing"), ("env", "prod")])
        .await;
    let problem = bad.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"][0]["field"], "tenant");
    app.resolve(&with(&[("colour", "blue")]))
        .await
        .problem(StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_load_reads_every_page_and_keeps_groups_split_across_pages_whole() {
    use tm_domain::{
        EnvName, NewRoute, Pick, RouteId, RouteKey, ServiceName, TenantId, UpstreamUrl, Version,
        Weight,
    };
    let app = spawn_app().await;
    // Three versions per service: pages of a full load end in the middle of services.
    let routes: Vec<tm_domain::Route> = (0..4001)
        .flat_map(|s| (1..=3).map(move |v| (s, v)))
        .map(|(s, v)| {
            NewRoute {
                key: RouteKey {
                    tenant: TenantId::parse("bulk").expect("valid"),
                    service: ServiceName::parse(&format!("s{s:04}")).expect("valid"),
                    env: EnvName::parse("prod").expect("valid"),
                    version: Version::parse(&format!("v{v}")).expect("valid"),
                },
                url: UpstreamUrl::parse(&format!("http://s{s}.v{v}.internal")).expect("valid"),
                active: true,
                weight: Weight::parse(100).expect("valid"),
            }
            .into_route(RouteId::generate(), tm_domain::now())
        })
        .collect();
    app.store
        .import_routes(&routes, &tm_store::Actor::new("test"))
        .await
        .expect("import");
    let table = tm_store::RoutingTable::load(app.store.clone())
        .await
        .expect("load");
    let snapshot = table.snapshot();
    assert_eq!(snapshot.route_count(), 12_003);
    for route in &routes {
        let found = snapshot
            .resolve(
                &route.tenant,
                &route.service,
                &route.env,
                Pick::Version(&route.version),
            )
            .unwrap_or_else(|| panic!("{} {} missing", route.service, route.version));
        assert_eq!(found.version(), route.version.as_str());
    }
}

/// Polls resolve until it answers `expected`, for at most `within`.
async fn resolve_until(app: &TestApp, service: &str, expected: StatusCode, within: Duration) {
    let what = format!("{service} resolving to {expected}");
    eventually(within, &what, || async {
        app.resolve(&[("tenant", "acme"), ("service", service), ("env", "prod")])
            .await
            .status
            == expected
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_elsewhere_reach_the_snapshot_through_the_change_feed() {
    use tm_domain::{
        EnvName, NewRoute, RouteKey, ServiceName, TenantId, UpstreamUrl, Version, Weight,
    };
    let app = spawn_app_with(|raw| {
        raw.process.snapshot_catch_up_interval = Duration::from_millis(100);
        raw.process.snapshot_reload_interval = Duration::from_secs(3600);
    })
    .await;
    // Another instance, as far as this one can tell: the store written to directly.
    let elsewhere = tm_store::Actor::new("another instance");
    let key = RouteKey {
        tenant: TenantId::parse("acme").expect("valid"),
        service: ServiceName::parse("remote").expect("valid"),
        env: EnvName::parse("prod").expect("valid"),
        version: Version::parse("v1").expect("valid"),
    };
    let created = app
        .store
        .create_route(
            NewRoute {
                key: key.clone(),
                url: UpstreamUrl::parse("http://remote.internal").expect("valid"),
                active: true,
                weight: Weight::parse(100).expect("valid"),
            },
            &elsewhere,
        )
        .await
        .expect("create");
    resolve_until(&app, "remote", StatusCode::OK, Duration::from_secs(3)).await;

    app.store
        .set_active(&key, false, &elsewhere)
        .await
        .expect("deactivate");
    resolve_until(
        &app,
        "remote",
        StatusCode::NOT_FOUND,
        Duration::from_secs(3),
    )
    .await;

    app.store
        .set_active(&key, true, &elsewhere)
        .await
        .expect("activate");
    resolve_until(&app, "remote", StatusCode::OK, Duration::from_secs(3)).await;

    app.store
        .delete_route(created.id, None, None, &elsewhere)
        .await
        .expect("delete");
    resolve_until(
        &app,
        "remote",
        StatusCode::NOT_FOUND,
        Duration::from_secs(3),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_commits_late_is_not_skipped_by_the_change_feed() {
    let app = spawn_app_with(|raw| {
        raw.process.snapshot_catch_up_interval = Duration::from_millis(50);
        raw.process.snapshot_reload_interval = Duration::from_secs(3600);
    })
    .await;
    // SQLite commits its writes one at a time, in audit-log order: only PostgreSQL can
    // commit an earlier audit-log row after a later one.
    let Some(mut slow) = app.pg_connection().await else {
        return;
    };
    // Notifications would carry the slow write past the feed: this test is about the feed.
    sqlx::raw_sql("ALTER TABLE audit_log DISABLE TRIGGER audit_log_notify")
        .execute(&mut slow)
        .await
        .expect("notifications off");
    // A writer elsewhere takes its audit-log id first and commits last.
    sqlx::raw_sql(
        "BEGIN; \
         INSERT INTO routes (id, tenant, service, env, version, url, active, weight, revision, created_at, updated_at) \
         VALUES (gen_random_uuid(), 'acme', 'late', 'prod', 'v1', 'http://late.internal', true, 100, 1, now(), now()); \
         INSERT INTO audit_log (at, actor, action, route_id, after, tenant, service, env) \
         SELECT now(), 'slow writer', 'create', id, \
                jsonb_build_object('tenant', tenant, 'service', service, 'env', env), \
                tenant, service, env \
         FROM routes WHERE service = 'late'",
    )
    .execute(&mut slow)
    .await
    .expect("begin the slow write");
    // Later changes commit meanwhile, and the feed is read several times.
    app.create_route(json!({"tenant": "acme", "service": "early", "env": "prod",
        "version": "v1", "url": "http://early.internal", "active": true}))
        .await
        .assert_status(StatusCode::CREATED);
    // Every read of the feed takes a connection, and little else runs here (reloads
    // are hourly): eight connections more is several reads of the feed.
    let queries = app.metric_value("db_queries_total").await;
    eventually(
        Duration::from_secs(10),
        "the feed read several times",
        || async { app.metric_value("db_queries_total").await >= queries + 8.0 },
    )
    .await;
    resolve_until(&app, "late", StatusCode::NOT_FOUND, Duration::ZERO).await;

    sqlx::raw_sql("COMMIT")
        .execute(&mut slow)
        .await
        .expect("commit the slow write");
    resolve_until(&app, "late", StatusCode::OK, Duration::from_secs(3)).await;
}

/// One request of [`the_fast_path_and_the_router_give_the_same_answers`]: query, extra
/// headers, whether the reader key (else the admin key, or none) sends it.
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<bool>,
);

const SAME_ANSWER_CASES: &[Case] = &[
    ("tenant=acme&service=billing&env=prod", &[], Some(true)),
    (
        "tenant=acme&service=billing&env=prod&key=user-7",
        &[("x-request-id", "req-1"), ("x-correlation-id", "flow-1")],
        Some(true),
    ),
    (
        "tenant=acme&service=billing&env=prod&version=v1",
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
        Some(false),
    ),
    (
        "tenant=acme&service=billing&env=prod",
        &[("if-none-match", "*")],
        Some(true),
    ),
    ("tenant=acme&service=nothing&env=prod", &[], Some(true)),
    ("tenant=acme&service=billing", &[], Some(true)),
    ("tenant=acme&service=Billing&env=prod", &[], Some(true)),
    (
        "tenant=acme&service=billing&env=prod&colour=blue",
        &[],
        Some(true),
    ),
    ("tenant=acme&service=billing&env=prod&key=", &[], Some(true)),
    ("tenant=globex&service=billing&env=prod", &[], Some(true)),
    (
        "tenant=acme&service=billing&env=prod",
        &[("x-request-id", "not sane!")],
        None,
    ),
    (
        "tenant=acme&service=billing&env=prod",
        &[("origin", "https://elsewhere.example")],
        Some(true),
    ),
];

/// Headers whose values are made per request or per instance.
const VARYING: [&str; 5] = [
    "date",
    "x-request-id",
    "x-correlation-id",
    "etag",
    "x-rate-limit-reset",
];

/// Status, body and headers of a resolve, with the varying header values blanked.
async fn answer_of(
    app: &TestApp,
    key: Option<&str>,
    query: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Vec<(String, String)>, String) {
    let mut request =
        reqwest::Client::new().get(app.url(&format!("/api/v1/routes/resolve?{query}")));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let reply = Reply::from(request.send().await.expect("sent")).await;
    let mut seen: Vec<(String, String)> = reply
        .headers
        .iter()
        .map(|(name, value)| {
            let value = if VARYING.contains(&name.as_str()) {
                String::new()
            } else {
                value.to_str().unwrap_or_default().to_owned()
            };
            (name.as_str().to_owned(), value)
        })
        .collect();
    seen.sort();
    let mut body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
    if let Some(problem) = body.as_object_mut() {
        problem.remove("instance");
    }
    (reply.status, seen, body.to_string())
}

#[tokio::test]
async fn the_fast_path_and_the_router_give_the_same_answers() {
    let mut answers = Vec::new();
    for fast in [true, false] {
        let app = TestApp::builder()
            .admin_key("same-answers-admin-key-0123456789abcdef")
            .configure(move |raw| {
                raw.http.resolve_fast_path = fast;
                raw.limits.rate_limit_resolve = "16/min".into();
                raw.http.cors_origins = Some("https://console.example.com".into());
            })
            .spawn()
            .await;
        app.create("acme", "billing", "prod", "v1", "http://10.0.0.7:8080")
            .await;
        app.activate("acme", "billing", "prod", "v1")
            .await
            .assert_status(StatusCode::OK);
        let reader = app.create_key("reader", Some("acme")).await;
        let mut seen = Vec::new();
        for (query, headers, who) in SAME_ANSWER_CASES {
            let key = match who {
                Some(true) => Some(reader.as_str()),
                Some(false) => Some(app.admin_key.as_str()),
                None => None,
            };
            seen.push(answer_of(&app, key, query, headers).await);
        }
        // Past the budget: 429 with its headers.
        let mut refused = None;
        for _ in 0..20 {
            let answer = answer_of(
                &app,
                Some(&reader),
                "tenant=acme&service=billing&env=prod",
                &[],
            )
            .await;
            if answer.0 == StatusCode::TOO_MANY_REQUESTS {
                refused = Some(answer);
                break;
            }
        }
        seen.push(refused.expect("the budget runs out"));
        answers.push(seen);
    }
    let (fast, routed) = (&answers[0], &answers[1]);
    for (i, (a, b)) in fast.iter().zip(routed).enumerate() {
        assert_eq!(a, b, "case {i}: fast path vs router");
    }
    assert_eq!(fast[0].0, StatusCode::OK);
    assert_eq!(fast[3].0, StatusCode::NOT_MODIFIED);
    assert_eq!(fast[9].0, StatusCode::FORBIDDEN);
    assert_eq!(fast[10].0, StatusCode::UNAUTHORIZED);
}
