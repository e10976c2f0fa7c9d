//! The outbox and the event API: every change is an event, written with the change or
//! not at all, read back in commit order, a page at a time, within the caller's tenant.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use tm_testing::*;

/// Waits until `count` events of `tenant` (all, if none) are listed. On PostgreSQL an
/// event is listed once every transaction of the cluster older than its own has ended
/// (so that none can appear before it later): other tests' transactions may hold it
/// back for a moment.
async fn settled(app: &TestApp, tenant: Option<&str>, count: usize) {
    eventually(Duration::from_secs(10), "events listed", || async {
        app.all_events(None, tenant, 1000).await.len() >= count
    })
    .await;
}

fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().expect("a type"))
        .collect()
}

#[tokio::test]
async fn every_change_is_an_event_in_the_order_made() {
    let app = spawn_app().await;
    let created = app
        .create("acme", "billing", "prod", "v1", "http://10.0.0.1:8080")
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    // Activating an active route changes nothing: no event.
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    app.request(
        Method::PATCH,
        &format!("/api/v1/routes/{id}"),
        Some(json!({"weight": 40})),
    )
    .await
    .assert_status(StatusCode::OK);
    app.deactivate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    app.request(Method::DELETE, &format!("/api/v1/routes/{id}"), None)
        .await
        .assert_status(StatusCode::NO_CONTENT);
    let key = app
        .request(
            Method::POST,
            "/api/v1/keys",
            Some(json!({"name": "ci", "role": "reader", "tenant": "acme"})),
        )
        .await
        .json();
    let key_id = key["id"].as_str().expect("id").to_owned();
    app.request(Method::DELETE, &format!("/api/v1/keys/{key_id}"), None)
        .await
        .assert_status(StatusCode::NO_CONTENT);

    settled(&app, Some("acme"), 7).await;
    let events = app.all_events(None, Some("acme"), 100).await;
    assert_eq!(
        types(&events),
        [
            "route.created",
            "route.activated",
            "route.updated",
            "route.deactivated",
            "route.deleted",
            "key.created",
            "key.revoked"
        ]
    );
    for event in &events {
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["source"], "/traffic-manager");
        assert_eq!(event["datacontenttype"], "application/json");
        assert_eq!(event["dataschema"], "urn:traffic-manager:event:v1");
        assert_eq!(event["tenant"], "acme");
        let uuid = event["id"].as_str().expect("id");
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "7", "a UUIDv7: {uuid}");
        assert!(event["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(event["data"]["actor"]
            .as_str()
            .is_some_and(|a| !a.is_empty()));
    }

    let route_events = &events[..5];
    for event in route_events {
        assert_eq!(event["subject"], "acme/billing/prod/v1");
        assert_eq!(event["data"]["route_id"], id.as_str());
        assert_eq!(
            (
                &event["data"]["tenant"],
                &event["data"]["service"],
                &event["data"]["env"],
                &event["data"]["version"]
            ),
            (
                &json!("acme"),
                &json!("billing"),
                &json!("prod"),
                &json!("v1")
            )
        );
    }
    let revisions: Vec<i64> = route_events
        .iter()
        .map(|e| e["data"]["revision"].as_i64().expect("revision"))
        .collect();
    assert_eq!(revisions, [1, 2, 3, 4, 4]);
    let (created, activated, updated, deleted) = (
        &events[0]["data"],
        &events[1]["data"],
        &events[2]["data"],
        &events[4]["data"],
    );
    assert_eq!(created["before"], Value::Null);
    assert_eq!(created["after"]["active"], false);
    assert_eq!(
        (
            &activated["before"]["active"],
            &activated["after"]["active"]
        ),
        (&json!(false), &json!(true))
    );
    assert_eq!(updated["after"]["weight"], 40);
    assert_eq!(deleted["before"]["revision"], 4);
    assert_eq!(deleted["after"], Value::Null);

    let (made, revoked) = (&events[5], &events[6]);
    assert_eq!(made["subject"], format!("keys/{key_id}"));
    assert_eq!(revoked["subject"], format!("keys/{key_id}"));
    assert_eq!(made["data"]["key_id"], key_id.as_str());
    assert_eq!(made["data"]["name"], "ci");
    assert_eq!(made["data"]["role"], "reader");
    let secret = key["key"].as_str().expect("secret");
    let body = serde_json::to_string(&events).expect("json");
    assert!(!body.contains(secret), "no secret in events");
}

#[tokio::test]
async fn events_are_read_a_page_at_a_time_from_any_event_on() {
    let app = spawn_app().await;
    for i in 0..7 {
        app.create("acme", &format!("svc-{i}"), "prod", "v1", "http://10.0.0.1")
            .await;
    }
    settled(&app, Some("acme"), 7).await;
    let whole = app.all_events(None, Some("acme"), 1000).await;
    assert_eq!(whole.len(), 7);
    let subjects: Vec<String> = (0..7).map(|i| format!("acme/svc-{i}/prod/v1")).collect();
    assert_eq!(
        whole
            .iter()
            .map(|e| e["subject"].as_str().expect("subject"))
            .collect::<Vec<_>>(),
        subjects
    );
    // In pages of two, the same events in the same order.
    assert_eq!(app.all_events(None, Some("acme"), 2).await, whole);

    // From the third on.
    let after = whole[2]["id"].as_str().expect("id");
    let page = app
        .get(&format!("/api/v1/events?tenant=acme&after={after}&limit=2"))
        .await;
    page.assert_status(StatusCode::OK);
    let page = page.json();
    assert_eq!(page["items"].as_array().expect("items")[..], whole[3..5]);

    // A new change appears after the last one read.
    let last = whole[6]["id"].as_str().expect("id");
    app.create("acme", "late", "prod", "v1", "http://10.0.0.1")
        .await;
    settled(&app, Some("acme"), 8).await;
    let page = app
        .get(&format!("/api/v1/events?tenant=acme&after={last}"))
        .await
        .json();
    assert_eq!(
        types(page["items"].as_array().expect("items")),
        ["route.created"]
    );
    assert_eq!(page["items"][0]["subject"], "acme/late/prod/v1");
}

#[tokio::test]
async fn each_key_reads_its_own_tenant_and_key_events_only_if_it_manages_keys() {
    let app = spawn_app().await;
    app.create("acme", "billing", "prod", "v1", "http://10.0.0.1")
        .await;
    app.create("globex", "billing", "prod", "v1", "http://10.0.0.2")
        .await;
    let reader = app.create_key("reader", Some("acme")).await;
    let tenant_admin = app.create_key("tenant_admin", Some("acme")).await;
    settled(&app, Some("acme"), 3).await;
    settled(&app, Some("globex"), 1).await;

    // A reader: its tenant's route events, no key events, whatever it asks.
    let seen = app.all_events(Some(&reader), None, 100).await;
    assert_eq!(types(&seen), ["route.created"]);
    assert_eq!(seen[0]["tenant"], "acme");
    assert_eq!(app.all_events(Some(&reader), Some("acme"), 100).await, seen);
    app.request_as(
        Some(&reader),
        Method::GET,
        "/api/v1/events?tenant=globex",
        None,
    )
    .await
    .assert_status(StatusCode::FORBIDDEN);

    // A tenant admin: its tenant's key events too.
    let seen = app.all_events(Some(&tenant_admin), None, 100).await;
    assert_eq!(
        types(&seen),
        ["route.created", "key.created", "key.created"]
    );
    assert!(seen.iter().all(|e| e["tenant"] == "acme"));

    // An admin: every tenant's, in the order made.
    let seen = app.all_events(None, None, 100).await;
    let acme_and_globex: Vec<&str> = seen
        .iter()
        .filter(|e| e["type"] == "route.created")
        .map(|e| e["tenant"].as_str().expect("tenant"))
        .collect();
    assert_eq!(acme_and_globex, ["acme", "globex"]);

    // No key: no events.
    app.request_as(None, Method::GET, "/api/v1/events", None)
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_unreadable_page_request_is_refused_with_a_problem() {
    let app = spawn_app().await;
    app.create("acme", "billing", "prod", "v1", "http://10.0.0.1")
        .await;
    for (query, status) in [
        ("after=not-an-id", StatusCode::UNPROCESSABLE_ENTITY),
        // Well formed, but no such event (kept).
        (
            "after=0190b8a2-0000-7000-8000-000000000000",
            StatusCode::NOT_FOUND,
        ),
        ("limit=0", StatusCode::UNPROCESSABLE_ENTITY),
        ("limit=1001", StatusCode::UNPROCESSABLE_ENTITY),
        ("tenant=Not_Valid", StatusCode::UNPROCESSABLE_ENTITY),
        ("since=1", StatusCode::BAD_REQUEST),
    ] {
        let reply = app.get(&format!("/api/v1/events?{query}")).await;
        reply.assert_status(status);
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json"),
            "{query}"
        );
    }
}

/// An event is written in its change's transaction: a change whose event cannot be
/// written is not made at all, and a change refused makes no event.
#[tokio::test]
async fn a_change_and_its_event_are_written_together_or_not_at_all() {
    let app = spawn_app().await;
    let refuse = match backend() {
        "postgres" => {
            "CREATE FUNCTION refuse_doomed() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.subject LIKE '%/doomed/%' THEN RAISE EXCEPTION 'refused'; END IF; \
             RETURN NEW; END $$; \
             CREATE TRIGGER refuse_doomed BEFORE INSERT ON events \
             FOR EACH ROW EXECUTE FUNCTION refuse_doomed()"
        }
        _ => {
            "CREATE TRIGGER refuse_doomed BEFORE INSERT ON events \
             WHEN NEW.subject LIKE '%/doomed/%' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END"
        }
    };
    app.raw_execute(refuse).await.expect("trigger installed");

    let reply = app
        .create_route(route("acme", "doomed", "prod", "v1", "http://10.0.0.1"))
        .await;
    assert!(reply.status.is_server_error(), "{}", reply.status);
    let routes = app.all_routes().await;
    assert!(
        routes.is_empty(),
        "the route went with its event: {routes:?}"
    );

    // A refused change (the route exists) writes no event either.
    app.create("acme", "billing", "prod", "v1", "http://10.0.0.1")
        .await;
    app.create_route(route("acme", "billing", "prod", "v1", "http://10.0.0.2"))
        .await
        .assert_status(StatusCode::CONFLICT);
    settled(&app, Some("acme"), 1).await;
    let events = app.all_events(None, Some("acme"), 100).await;
    assert_eq!(types(&events), ["route.created"]);
    assert_eq!(events[0]["subject"], "acme/billing/prod/v1");
}

#[tokio::test]
async fn events_past_their_retention_are_deleted_and_no_longer_followed() {
    let app = spawn_app().await;
    app.create("acme", "old", "prod", "v1", "http://10.0.0.1")
        .await;
    settled(&app, Some("acme"), 1).await;
    let old = app.all_events(None, Some("acme"), 100).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let cut = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    app.create("acme", "new", "prod", "v1", "http://10.0.0.1")
        .await;

    settled(&app, Some("acme"), 2).await;
    assert_eq!(app.store.purge_events(cut).await.expect("purged"), 1);
    let kept = app.all_events(None, Some("acme"), 100).await;
    assert_eq!(
        kept.iter()
            .map(|e| e["subject"].as_str().expect("subject"))
            .collect::<Vec<_>>(),
        ["acme/new/prod/v1"]
    );
    let after = old[0]["id"].as_str().expect("id");
    let reply = app.get(&format!("/api/v1/events?after={after}")).await;
    reply.assert_status(StatusCode::NOT_FOUND);
    assert_eq!(
        reply.json()["type"],
        "urn:traffic-manager:problem:event-not-kept"
    );
    assert_eq!(app.store.purge_events(cut).await.expect("purged"), 0);
}
