//! `Idempotency-Key` on writes, kept in the database (no Redis configured).

use reqwest::{Method, StatusCode};
use serde_json::json;

use tm_testing::{quiet_background, route, spawn_app, spawn_app_with, Reply, TestApp};

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    body: serde_json::Value,
    key: &str,
) -> Reply {
    Reply::from(
        app.client
            .request(method, app.url(path))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .expect("request sent"),
    )
    .await
}

#[tokio::test]
async fn a_repeat_gets_the_first_answer_and_writes_nothing() {
    let app = spawn_app().await;
    let body = route("acme", "checkout", "prod", "v1", "http://a.internal");
    let first = send(
        &app,
        Method::POST,
        "/api/v1/routes",
        body.clone(),
        "create-1",
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let queries_before = app.metric_value("db_queries_total").await;
    let again = send(
        &app,
        Method::POST,
        "/api/v1/routes",
        body.clone(),
        "create-1",
    )
    .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["location"], first.headers["location"]);
    assert_eq!(again.headers["etag"], first.headers["etag"]);
    assert!(
        app.metric_value("db_queries_total").await > queries_before,
        "looked up in the database"
    );
    let listed = app.get("/api/v1/routes?service=checkout").await.json();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));

    // Without the key, the same body is a new write (a conflict here).
    let plain = app.create_route(body).await;
    assert_eq!(plain.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn the_same_key_with_another_request_is_422() {
    let app = spawn_app().await;
    let first = send(
        &app,
        Method::POST,
        "/api/v1/routes",
        route("acme", "checkout", "prod", "v1", "http://a.internal"),
        "reused",
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let other = send(
        &app,
        Method::POST,
        "/api/v1/routes",
        route("acme", "checkout", "prod", "v2", "http://a.internal"),
        "reused",
    )
    .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.headers["content-type"], "application/problem+json");
    let problem = other.json();
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    // Another path with the same key is another request too.
    let id = first.json()["id"].as_str().expect("id").to_owned();
    let patch = send(
        &app,
        Method::PATCH,
        &format!("/api/v1/routes/{id}"),
        json!({"weight": 10}),
        "reused",
    )
    .await;
    assert_eq!(patch.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Nothing was written by the refused requests.
    let listed = app.get("/api/v1/routes?service=checkout").await.json();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["items"][0]["weight"], first.json()["weight"]);
}

#[tokio::test]
async fn only_answers_that_changed_something_are_kept_and_bad_keys_are_refused() {
    let app = spawn_app().await;
    // A 4xx answer changed nothing, so nothing is kept: the repeat is answered afresh,
    // and the key is free for the request put right.
    let invalid = json!({"tenant": "acme", "service": "Bad Name", "env": "prod", "version": "v1", "url": "http://a"});
    let first = send(
        &app,
        Method::POST,
        "/api/v1/routes",
        invalid.clone(),
        "bad-body",
    )
    .await;
    assert_eq!(first.status, StatusCode::UNPROCESSABLE_ENTITY);
    let again = send(&app, Method::POST, "/api/v1/routes", invalid, "bad-body").await;
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(again.headers.get("idempotent-replayed").is_none());
    let fixed = send(
        &app,
        Method::POST,
        "/api/v1/routes",
        route("acme", "fixed", "prod", "v1", "http://a.internal"),
        "bad-body",
    )
    .await;
    assert_eq!(fixed.status, StatusCode::CREATED);
    // A conflict is not kept either.
    let conflict = send(
        &app,
        Method::POST,
        "/api/v1/routes",
        route("acme", "fixed", "prod", "v1", "http://a.internal"),
        "conflict",
    )
    .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    let again = send(
        &app,
        Method::POST,
        "/api/v1/routes",
        route("acme", "fixed", "prod", "v1", "http://a.internal"),
        "conflict",
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.headers.get("idempotent-replayed").is_none());

    // A 401 is not kept: with a valid key afterwards, the write happens.
    let body = route("acme", "checkout", "prod", "v1", "http://a.internal");
    let anonymous = Reply::from(
        app.anonymous
            .post(app.url("/api/v1/routes"))
            .header("Idempotency-Key", "after-401")
            .json(&body)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let created = send(&app, Method::POST, "/api/v1/routes", body, "after-401").await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(created.headers.get("idempotent-replayed").is_none());

    // Keys must be 1–255 visible ASCII characters.
    let long = "k".repeat(256);
    for bad in ["with space", long.as_str()] {
        let refused = send(
            &app,
            Method::POST,
            "/api/v1/routes",
            route("acme", "other", "prod", "v1", "http://a.internal"),
            bad,
        )
        .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    // Creating an API key cannot be replayed: its secret is never kept.
    let key = send(
        &app,
        Method::POST,
        "/api/v1/keys",
        json!({"name": "ci", "role": "reader", "tenant": "acme"}),
        "new-key",
    )
    .await;
    assert_eq!(key.status, StatusCode::UNPROCESSABLE_ENTITY);
    let keys = app.get("/api/v1/keys").await.json();
    assert!(keys["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|k| k["name"] != "ci"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_repeats_write_once() {
    let app = spawn_app().await;
    let body = route("acme", "checkout", "prod", "v1", "http://a.internal");
    let replies = futures::future::join_all(
        (0..8).map(|_| send(&app, Method::POST, "/api/v1/routes", body.clone(), "burst")),
    )
    .await;
    let created: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    assert!(!created.is_empty());
    for reply in &replies {
        // Each repeat either got the first answer or was told it is still being made.
        assert!(
            reply.status == StatusCode::CREATED || reply.status == StatusCode::CONFLICT,
            "{}",
            reply.status
        );
        if reply.status == StatusCode::CONFLICT {
            assert_eq!(
                reply.json()["type"],
                "urn:traffic-manager:problem:idempotency-key-in-use"
            );
            assert!(reply.headers.contains_key("retry-after"));
        }
    }
    let first = &created[0].body;
    assert!(
        created.iter().all(|r| &r.body == first),
        "one answer for all"
    );
    let listed = app.get("/api/v1/routes?service=checkout").await.json();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
}

/// `Idempotency-Key` sent with a raw key (or none).
async fn send_as(app: &TestApp, key: Option<&str>, body: serde_json::Value, idem: &str) -> Reply {
    let mut request = app
        .anonymous
        .post(app.url("/api/v1/routes"))
        .header("Idempotency-Key", idem)
        .json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    Reply::from(request.send().await.expect("sent")).await
}

/// An application whose background work does not query the database during a test.
async fn quiet_app() -> TestApp {
    spawn_app_with(quiet_background).await
}

#[tokio::test]
async fn a_refused_write_keeps_nothing_and_costs_no_database_work() {
    let app = quiet_app().await;
    let reader = app.create_key("reader", Some("acme")).await;
    let boss = app.create_key("tenant_admin", Some("acme")).await;
    let body = route("acme", "checkout", "prod", "v1", "http://a.internal");
    let queries = app.settled_metric_value("db_queries_total").await;
    // A role that may not write: refused before its key is claimed, every time.
    for _ in 0..3 {
        let refused = send_as(&app, Some(&reader), body.clone(), "reader-1").await;
        refused.problem(StatusCode::FORBIDDEN);
        assert!(refused.headers.get("idempotent-replayed").is_none());
    }
    assert_eq!(
        app.settled_metric_value("db_queries_total").await,
        queries,
        "refused requests went to the database"
    );
    // Another tenant named in the body: refused after parsing, and not kept either.
    let globex = route("globex", "checkout", "prod", "v1", "http://a.internal");
    for _ in 0..2 {
        let refused = send_as(&app, Some(&boss), globex.clone(), "boss-1").await;
        refused.problem(StatusCode::FORBIDDEN);
        assert!(refused.headers.get("idempotent-replayed").is_none());
    }
    // The key is free for the caller's next request.
    let created = send_as(&app, Some(&boss), body, "boss-1").await;
    created.assert_status(StatusCode::CREATED);
}

#[tokio::test]
async fn an_unauthenticated_write_is_401_whatever_its_idempotency_key() {
    let app = spawn_app().await;
    let body = route("acme", "checkout", "prod", "v1", "http://a.internal");
    for key in [None, Some("not-a-key")] {
        for idem in ["with space", "fine-key"] {
            let refused = send_as(&app, key, body.clone(), idem).await;
            refused.problem(StatusCode::UNAUTHORIZED);
            assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
        }
    }
    assert!(app.all_routes().await.is_empty());
}

#[tokio::test]
async fn idempotency_records_are_bounded_per_key() {
    let app = spawn_app_with(|raw| raw.http.idempotency_max_keys = 2).await;
    for (version, idem) in [("v1", "k1"), ("v2", "k2")] {
        let created = send(
            &app,
            Method::POST,
            "/api/v1/routes",
            route("acme", "checkout", "prod", version, "http://a.internal"),
            idem,
        )
        .await;
        created.assert_status(StatusCode::CREATED);
    }
    let v3 = route("acme", "checkout", "prod", "v3", "http://a.internal");
    let refused = send(&app, Method::POST, "/api/v1/routes", v3.clone(), "k3").await;
    let problem = refused.problem(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        problem["type"],
        "urn:traffic-manager:problem:idempotency-keys-exhausted"
    );
    assert!(refused.header("retry-after").is_some());
    // Repeats are still answered from what is kept.
    let again = send(
        &app,
        Method::POST,
        "/api/v1/routes",
        route("acme", "checkout", "prod", "v1", "http://a.internal"),
        "k1",
    )
    .await;
    again.assert_status(StatusCode::CREATED);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    // Another key has a bound of its own; without Idempotency-Key the write goes on.
    let boss = app.create_key("tenant_admin", Some("acme")).await;
    send_as(&app, Some(&boss), v3, "k3")
        .await
        .assert_status(StatusCode::CREATED);
    app.create_route(route("acme", "checkout", "prod", "v4", "http://a.internal"))
        .await
        .assert_status(StatusCode::CREATED);
}

#[tokio::test]
async fn an_expired_record_neither_answers_nor_counts_and_is_purged() {
    use tm_store::{IdempotencyClaim, StoredResponse};
    // No job runner: the purge job it runs at start must not race the purge below.
    let app = spawn_app_with(|raw| raw.jobs.jobs_in_serve = false).await;
    let store = &app.store;
    let fingerprint = "f".repeat(64);
    let pending = std::time::Duration::from_secs(60);
    let claimed = store
        .claim_idempotency_key("caller", "old", &fingerprint, pending, 1)
        .await
        .expect("claimed");
    assert_eq!(claimed, IdempotencyClaim::Claimed);
    // The caller holds its one record: a new key is refused, the same key answered.
    let full = store
        .claim_idempotency_key("caller", "new", &fingerprint, pending, 1)
        .await
        .expect("answered");
    assert_eq!(full, IdempotencyClaim::Full);
    let answer = StoredResponse {
        status: 201,
        headers: Vec::new(),
        body: "{}".into(),
    };
    // Kept for no time at all: expired at once.
    store
        .complete_idempotency_key(
            "caller",
            "old",
            &fingerprint,
            &answer,
            std::time::Duration::ZERO,
        )
        .await
        .expect("kept");
    assert_eq!(
        store
            .get_idempotency_key("caller", "old")
            .await
            .expect("read"),
        None
    );
    assert_eq!(store.purge_idempotency_keys().await.expect("purged"), 1);
    let again = store
        .claim_idempotency_key("caller", "new", &fingerprint, pending, 1)
        .await
        .expect("claimed");
    assert_eq!(again, IdempotencyClaim::Claimed);
}
