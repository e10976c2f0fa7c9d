//! Route management: every row of the contract that creates, changes, lists or deletes.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use tm_testing::*;

#[tokio::test]
async fn create_answers_201_with_the_route_location_and_etag() {
    let app = spawn_app().await;
    let reply = app
        .create_route(route(
            "acme",
            "billing",
            "prod",
            "v1",
            "http://10.0.0.7:8080",
        ))
        .await;
    reply.assert_status(StatusCode::CREATED);
    let body = reply.json();
    let id = body["id"].as_str().expect("id");
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/v1/routes/{id}").as_str())
    );
    assert_eq!(reply.header("etag"), Some("\"1\""));
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["service"], "billing");
    assert_eq!(body["env"], "prod");
    assert_eq!(body["version"], "v1");
    assert_eq!(body["url"], "http://10.0.0.7:8080");
    assert_eq!(body["active"], false, "inactive unless asked");
    assert_eq!(body["weight"], 100, "default weight");
    assert_eq!(body["revision"], 1);
    assert_eq!(body["created_at"], body["updated_at"]);
    let created = body["created_at"].as_str().expect("time");
    assert!(
        created.ends_with('Z') && created.contains('T'),
        "RFC 3339 UTC: {created}"
    );
    let mut keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "active",
            "created_at",
            "env",
            "id",
            "revision",
            "service",
            "tenant",
            "updated_at",
            "url",
            "version",
            "weight"
        ]
    );
}

#[tokio::test]
async fn create_can_activate_and_weigh_at_once() {
    let app = spawn_app().await;
    let mut body = route(
        "acme",
        "billing",
        "prod",
        "v1",
        "https://billing.internal/v1",
    );
    body["active"] = json!(true);
    body["weight"] = json!(0);
    let created = app.create_route(body).await;
    created.assert_status(StatusCode::CREATED);
    assert_eq!(created.json()["active"], true);
    assert_eq!(created.json()["weight"], 0);
}

/// JSON Schema's `integer` is any number without a fractional part, `50.0` as well as
/// `50`: the document says `integer`, so both are a weight.
#[tokio::test]
async fn a_weight_is_any_whole_number_however_written() {
    let app = spawn_app().await;
    let mut body = route("acme", "billing", "prod", "v1", "http://a");
    body["weight"] = json!(50.0);
    let created = app.create_route(body).await;
    created.assert_status(StatusCode::CREATED);
    assert_eq!(created.json()["weight"], 50);
    let path = format!(
        "/api/v1/routes/{}",
        created.json()["id"].as_str().expect("id")
    );
    let patched = app
        .request(Method::PATCH, &path, Some(json!({"weight": 7e1})))
        .await;
    patched.assert_status(StatusCode::OK);
    assert_eq!(patched.json()["weight"], 70);
    app.request(Method::PATCH, &path, Some(json!({"weight": 70.5})))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn creating_an_existing_route_is_409() {
    let app = spawn_app().await;
    app.create("acme", "billing", "prod", "v1", "http://a")
        .await;
    let again = app
        .create_route(route("acme", "billing", "prod", "v1", "http://b"))
        .await;
    let problem = again.problem(StatusCode::CONFLICT);
    assert!(problem["type"]
        .as_str()
        .expect("type")
        .ends_with("route-exists"));
    // The same version of another env, service or tenant is another route.
    app.create("acme", "billing", "staging", "v1", "http://a")
        .await;
    app.create("acme", "search", "prod", "v1", "http://a").await;
    app.create("globex", "billing", "prod", "v1", "http://a")
        .await;
}

#[tokio::test]
async fn activate_bumps_the_revision_and_repeating_it_is_a_no_op() {
    let app = spawn_app().await;
    app.create("acme", "billing", "prod", "v1", "http://a")
        .await;
    let on = app.activate("acme", "billing", "prod", "v1").await;
    on.assert_status(StatusCode::OK);
    assert_eq!(on.json()["active"], true);
    assert_eq!(on.json()["revision"], 2);
    assert_eq!(on.header("etag"), Some("\"2\""));

    let again = app.activate("acme", "billing", "prod", "v1").await;
    again.assert_status(StatusCode::OK);
    assert_eq!(
        again.json(),
        on.json(),
        "a no-op leaves the route unchanged"
    );

    let off = app.deactivate("acme", "billing", "prod", "v1").await;
    off.assert_status(StatusCode::OK);
    assert_eq!(off.json()["active"], false);
    assert_eq!(off.json()["revision"], 3);
    let off_again = app.deactivate("acme", "billing", "prod", "v1").await;
    assert_eq!(off_again.json()["revision"], 3);
}

#[tokio::test]
async fn activate_or_deactivate_of_unknown_route_is_404() {
    let app = spawn_app().await;
    app.create("acme", "billing", "prod", "v1", "http://a")
        .await;
    app.activate("acme", "billing", "prod", "v2")
        .await
        .problem(StatusCode::NOT_FOUND);
    app.deactivate("acme", "billing", "qa", "v1")
        .await
        .problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn get_returns_the_route_with_its_revision_as_etag() {
    let app = spawn_app().await;
    let created = app
        .create("acme", "billing", "prod", "v1", "http://a")
        .await;
    let id = created["id"].as_str().expect("id");
    let got = app.get(&format!("/api/v1/routes/{id}")).await;
    got.assert_status(StatusCode::OK);
    assert_eq!(got.json(), created);
    assert_eq!(got.header("etag"), Some("\"1\""));

    let not_modified = app
        .client
        .get(app.url(&format!("/api/v1/routes/{id}")))
        .header("if-none-match", "\"1\"")
        .send()
        .await
        .expect("sent");
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn get_of_unknown_or_malformed_id_is_404() {
    let app = spawn_app().await;
    app.get(&format!("/api/v1/routes/{}", uuid::Uuid::now_v7()))
        .await
        .problem(StatusCode::NOT_FOUND);
    app.get("/api/v1/routes/not-an-id")
        .await
        .problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn patch_changes_url_and_weight_and_honours_if_match() {
    let app = spawn_app().await;
    let created = app
        .create("acme", "billing", "prod", "v1", "http://a")
        .await;
    let path = format!("/api/v1/routes/{}", created["id"].as_str().expect("id"));

    let patched = app
        .request(Method::PATCH, &path, Some(json!({"weight": 40})))
        .await;
    patched.assert_status(StatusCode::OK);
    assert_eq!(patched.json()["weight"], 40);
    assert_eq!(patched.json()["url"], "http://a");
    assert_eq!(patched.json()["revision"], 2);
    assert_eq!(patched.header("etag"), Some("\"2\""));

    // A stale If-Match is refused and changes nothing.
    let stale = app
        .client
        .patch(app.url(&path))
        .header("if-match", "\"1\"")
        .json(&json!({"url": "http://b"}))
        .send()
        .await
        .expect("sent");
    let stale = Reply::from(stale).await;
    stale.problem(StatusCode::PRECONDITION_FAILED);
    assert_eq!(app.get(&path).await.json()["url"], "http://a");

    // The current one is accepted.
    let fresh = app
        .client
        .patch(app.url(&path))
        .header("if-match", "\"2\"")
        .json(&json!({"url": "http://b", "weight": 40}))
        .send()
        .await
        .expect("sent");
    let fresh = Reply::from(fresh).await;
    fresh.assert_status(StatusCode::OK);
    assert_eq!(fresh.json()["url"], "http://b");
    assert_eq!(fresh.json()["revision"], 3);

    // A patch that changes nothing keeps the revision.
    let same = app
        .request(Method::PATCH, &path, Some(json!({"url": "http://b"})))
        .await;
    assert_eq!(same.json()["revision"], 3);

    // `*` matches any existing route; a weak tag never matches.
    for (tag, status) in [
        ("*", StatusCode::OK),
        ("W/\"3\"", StatusCode::PRECONDITION_FAILED),
    ] {
        let reply = app
            .client
            .patch(app.url(&path))
            .header("if-match", tag)
            .json(&json!({"weight": 41}))
            .send()
            .await
            .expect("sent");
        assert_eq!(reply.status(), status, "If-Match: {tag}");
    }
}

#[tokio::test]
async fn patch_of_unknown_route_is_404() {
    let app = spawn_app().await;
    let path = format!("/api/v1/routes/{}", uuid::Uuid::now_v7());
    app.request(Method::PATCH, &path, Some(json!({"weight": 1})))
        .await
        .problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn delete_answers_204_and_the_route_is_gone() {
    let app = spawn_app().await;
    let created = app
        .create("acme", "billing", "prod", "v1", "http://a")
        .await;
    let path = format!("/api/v1/routes/{}", created["id"].as_str().expect("id"));
    let deleted = app.request(Method::DELETE, &path, None).await;
    deleted.assert_status(StatusCode::NO_CONTENT);
    assert!(deleted.body.is_empty());
    app.get(&path).await.problem(StatusCode::NOT_FOUND);
    app.request(Method::DELETE, &path, None)
        .await
        .problem(StatusCode::NOT_FOUND);
    // The key is free again.
    app.create("acme", "billing", "prod", "v1", "http://a")
        .await;
}

#[tokio::test]
async fn delete_with_stale_if_match_is_412() {
    let app = spawn_app().await;
    let created = app
        .create("acme", "billing", "prod", "v1", "http://a")
        .await;
    let path = format!("/api/v1/routes/{}", created["id"].as_str().expect("id"));
    let reply = app
        .client
        .delete(app.url(&path))
        .header("if-match", "\"7\"")
        .send()
        .await
        .expect("sent");
    assert_eq!(reply.status(), StatusCode::PRECONDITION_FAILED);
    app.get(&path).await.assert_status(StatusCode::OK);
}

#[tokio::test]
async fn list_pages_through_every_route_with_cursors() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            app.create("acme", "billing", "prod", &format!("v{i}"), "http://a")
                .await,
        );
    }
    let mut seen: Vec<Value> = Vec::new();
    let mut path = "/api/v1/routes?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page = app.get(&path).await;
        page.assert_status(StatusCode::OK);
        let page = page.json();
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 3);
        seen.extend(items.iter().cloned());
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/routes?limit=3&cursor={cursor}"),
            None => {
                assert!(page["next_cursor"].is_null());
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "every route once, in creation order");
}

#[tokio::test]
async fn list_filters_by_tenant_service_env_and_state() {
    let app = spawn_app().await;
    app.create("acme", "billing", "prod", "v1", "http://a")
        .await;
    app.create("acme", "billing", "prod", "v2", "http://a")
        .await;
    app.create("acme", "billing", "staging", "v1", "http://a")
        .await;
    app.create("acme", "search", "prod", "v1", "http://a").await;
    app.create("globex", "billing", "prod", "v1", "http://a")
        .await;
    app.activate("acme", "billing", "prod", "v2")
        .await
        .assert_status(StatusCode::OK);

    let count = |query: &'static str| {
        let app = &app;
        async move {
            let page = app.get(&format!("/api/v1/routes?{query}")).await;
            page.assert_status(StatusCode::OK);
            page.json()["items"].as_array().expect("items").len()
        }
    };
    assert_eq!(count("").await, 5);
    assert_eq!(count("tenant=acme").await, 4);
    assert_eq!(count("tenant=acme&service=billing").await, 3);
    assert_eq!(count("tenant=acme&service=billing&env=prod").await, 2);
    assert_eq!(count("tenant=acme&active=true").await, 1);
    assert_eq!(count("active=false").await, 4);
    assert_eq!(count("tenant=initech").await, 0);
}

#[tokio::test]
async fn list_with_an_unreadable_cursor_is_400() {
    let app = spawn_app().await;
    app.get("/api/v1/routes?cursor=definitely-not-ours")
        .await
        .problem(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn every_write_leaves_an_audit_row_in_the_same_transaction() {
    let app = spawn_app().await;
    let created = app
        .create("acme", "billing", "prod", "v1", "http://a")
        .await;
    let id = created["id"].as_str().expect("id");
    let path = format!("/api/v1/routes/{id}");
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK); // no-op
    app.request(Method::PATCH, &path, Some(json!({"weight": 5})))
        .await
        .assert_status(StatusCode::OK);
    app.deactivate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    app.request(Method::DELETE, &path, None)
        .await
        .assert_status(StatusCode::NO_CONTENT);

    let log = app
        .store
        .audit_log(id.parse().expect("route id"))
        .await
        .expect("audit log");
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["create", "activate", "update", "deactivate", "delete"]
    );
    assert!(log[0].before.is_none());
    assert_eq!(log[0].after.as_ref().expect("after")["revision"], 1);
    assert_eq!(log[2].before.as_ref().expect("before")["weight"], 100);
    assert_eq!(log[2].after.as_ref().expect("after")["weight"], 5);
    assert!(log[4].after.is_none());
    assert!(log.iter().all(|e| !e.actor.is_empty()));
}

#[tokio::test]
async fn urls_and_identifiers_are_stored_exactly_as_given() {
    let app = spawn_app().await;
    let url = "HTTPS://Billing.Example.COM:8443/v1/?a=b&c=%20d";
    let created = app
        .create("a.b_c-d", "0svc", "e", "2024.06.1-rc_1", url)
        .await;
    assert_eq!(created["url"], url);
    assert_eq!(created["tenant"], "a.b_c-d");
    let id = created["id"].as_str().expect("id");
    assert_eq!(
        app.get(&format!("/api/v1/routes/{id}")).await.json()["url"],
        url
    );
}

#[tokio::test]
async fn a_bulk_import_stores_every_route_with_its_audit_row_or_none() {
    let app = spawn_app().await;
    let actor = tm_store::Actor::new("import");
    let routes: Vec<tm_domain::Route> = (0..2500)
        .map(|i| {
            tm_domain::NewRoute {
                key: tm_domain::RouteKey {
                    tenant: tm_domain::TenantId::parse("acme").expect("valid"),
                    service: tm_domain::ServiceName::parse(&format!("svc-{i}")).expect("valid"),
                    env: tm_domain::EnvName::parse("prod").expect("valid"),
                    version: tm_domain::Version::parse("v1").expect("valid"),
                },
                url: tm_domain::UpstreamUrl::parse("http://a").expect("valid"),
                active: i % 2 == 0,
                weight: tm_domain::Weight::DEFAULT,
            }
            .into_route(tm_domain::RouteId::generate(), tm_domain::now())
        })
        .collect();
    app.store
        .import_routes(&routes, &actor)
        .await
        .expect("import");
    assert_eq!(app.all_routes().await.len(), 2500);
    let log = app.store.audit_log(routes[2499].id).await.expect("audit");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].action, "create");

    // One existing key fails the whole batch.
    let mut again: Vec<tm_domain::Route> = routes[..1].to_vec();
    again[0].id = tm_domain::RouteId::generate();
    let fresh = {
        let mut r = routes[1].clone();
        r.id = tm_domain::RouteId::generate();
        r.service = tm_domain::ServiceName::parse("brand-new").expect("valid");
        r
    };
    again.insert(0, fresh);
    let err = app
        .store
        .import_routes(&again, &actor)
        .await
        .expect_err("conflict");
    assert!(matches!(err, tm_store::StoreError::Conflict), "{err:?}");
    assert_eq!(app.all_routes().await.len(), 2500);
}

#[tokio::test]
async fn a_method_a_resource_lacks_is_405_naming_the_methods_it_has() {
    let app = spawn_app().await;
    let id = "0190a0b0-0000-7000-8000-000000000000";
    for (path, allowed) in [
        ("/api/v1/routes".to_owned(), "POST,GET,HEAD"),
        (format!("/api/v1/routes/{id}"), "PATCH,DELETE,GET,HEAD"),
        ("/api/v1/routes/resolve".to_owned(), "GET,HEAD"),
        ("/api/v1/keys".to_owned(), "POST,GET,HEAD"),
        (format!("/api/v1/keys/{id}"), "DELETE"),
    ] {
        let reply = app.request(Method::PUT, &path, None).await;
        reply.assert_status(StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            reply.headers.get("allow").and_then(|v| v.to_str().ok()),
            Some(allowed),
            "{path}"
        );
    }
}
