//! History and rollback: the audit log of every change, read back within the caller's
//! tenant, and the rollback of a service to its previous activation state.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use tm_testing::*;

const SERVICE: &str = "tenant=acme&service=billing&env=prod";

/// The audit entries at `query`, once at least `count` are listed. On PostgreSQL an entry
/// is listed once every transaction of the cluster older than its own has ended (so that
/// none can appear before it later): other tests' transactions may hold it back briefly.
async fn audit(app: &TestApp, key: &str, query: &str, count: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = app
            .send(
                key,
                Method::GET,
                &format!("/api/v1/audit?{query}"),
                None,
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let items = body["items"].as_array().expect("items").clone();
        if items.len() >= count {
            return items;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} audit entries at {query}: {items:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rollback_body() -> Value {
    json!({"tenant": "acme", "service": "billing", "env": "prod"})
}

async fn rollback(app: &TestApp) -> Reply {
    app.request(
        Method::POST,
        "/api/v1/routes/rollback",
        Some(rollback_body()),
    )
    .await
}

async fn resolved_version(app: &TestApp) -> String {
    let reply = app
        .resolve(&[("tenant", "acme"), ("service", "billing"), ("env", "prod")])
        .await;
    reply.assert_status(StatusCode::OK);
    reply.json()["version"]
        .as_str()
        .expect("version")
        .to_owned()
}

fn active_versions(body: &Value) -> Vec<&str> {
    body["active_versions"]
        .as_array()
        .expect("active versions")
        .iter()
        .map(|v| v.as_str().expect("a version"))
        .collect()
}

#[tokio::test]
async fn each_change_is_audited_with_its_key_request_and_what_changed() {
    let app = spawn_app().await;
    let made = app
        .request(
            Method::POST,
            "/api/v1/keys",
            Some(json!({"name": "deployer", "role": "tenant_admin", "tenant": "acme"})),
        )
        .await;
    made.assert_status(StatusCode::CREATED);
    let made = made.json();
    let (key, key_id) = (made["key"].as_str().expect("key"), made["id"].clone());
    let headers = [("X-Request-ID", "req-create-1")];
    let (status, _, created) = app
        .send(
            key,
            Method::POST,
            "/api/v1/routes",
            Some(route("acme", "billing", "prod", "v1", "http://10.0.0.1")),
            &headers,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, _) = app
        .send(
            key,
            Method::POST,
            "/api/v1/routes/activate",
            Some(json!({"tenant": "acme", "service": "billing", "env": "prod", "version": "v1"})),
            &[("X-Request-ID", "req-activate-1")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let entries = audit(&app, key, SERVICE, 2).await;
    assert_eq!(entries.len(), 2);
    let (create, activate) = (&entries[0], &entries[1]);
    assert_eq!(create["action"], "create");
    assert_eq!(create["request_id"], "req-create-1");
    assert_eq!(create["actor_key_id"], key_id);
    assert_eq!(create["actor"], key_id);
    assert_eq!(create["route_id"], created["id"]);
    assert_eq!(create["version"], "v1");
    assert_eq!(create["before"], Value::Null);
    assert_eq!(create["after"]["url"], "http://10.0.0.1");
    assert_eq!(
        create["changes"]["url"],
        json!({"from": null, "to": "http://10.0.0.1"})
    );

    assert_eq!(activate["action"], "activate");
    assert_eq!(activate["request_id"], "req-activate-1");
    assert_eq!(
        activate["changes"]["active"],
        json!({"from": false, "to": true})
    );
    assert_eq!(activate["changes"]["revision"], json!({"from": 1, "to": 2}));
    assert!(activate["changes"].get("url").is_none());
    assert_eq!(activate["active_versions"], json!(["v1"]));
    assert_eq!(
        create["active_versions"],
        Value::Null,
        "an inactive creation"
    );
    let generations =
        [&create["generation"], &activate["generation"]].map(|g| g.as_i64().expect("a generation"));
    assert!(generations[0] < generations[1], "{generations:?}");
    assert!(activate["id"].as_i64() > create["id"].as_i64());
}

#[tokio::test]
async fn the_audit_log_is_read_a_page_at_a_time_and_filtered() {
    let app = spawn_app().await;
    for version in ["v1", "v2", "v3"] {
        app.create("acme", "billing", "prod", version, "http://10.0.0.1")
            .await;
    }
    app.create("acme", "ledger", "prod", "v1", "http://10.0.0.2")
        .await;
    app.create("globex", "billing", "prod", "v1", "http://10.0.0.3")
        .await;
    let admin = app.admin_key.clone();
    assert_eq!(audit(&app, &admin, "", 5).await.len(), 5);
    assert_eq!(audit(&app, &admin, "tenant=acme", 4).await.len(), 4);
    assert_eq!(audit(&app, &admin, "service=billing", 4).await.len(), 4);
    assert_eq!(audit(&app, &admin, SERVICE, 3).await.len(), 3);

    let first = app.get(&format!("/api/v1/audit?{SERVICE}&limit=2")).await;
    first.assert_status(StatusCode::OK);
    let first = first.json();
    assert_eq!(first["items"].as_array().expect("items").len(), 2);
    let after = first["next_after"].as_i64().expect("next_after");
    let rest = app
        .get(&format!("/api/v1/audit?{SERVICE}&after={after}"))
        .await
        .json();
    let rest = rest["items"].as_array().expect("items").clone();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["version"], "v3");
    // Nothing new: the position stays where it was.
    let last = rest[0]["id"].as_i64().expect("id");
    let empty = app
        .get(&format!("/api/v1/audit?{SERVICE}&after={last}"))
        .await
        .json();
    assert_eq!(empty, json!({"items": [], "next_after": last}));

    app.get("/api/v1/audit?after=999999")
        .await
        .problem(StatusCode::NOT_FOUND);
    for bad in [
        "after=0",
        "after=abc",
        "limit=0",
        "tenant=Acme",
        "service=a%20b",
        "env=",
    ] {
        app.get(&format!("/api/v1/audit?{bad}"))
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    app.get("/api/v1/audit?version=v1")
        .await
        .problem(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_audit_log_is_confined_to_the_callers_tenant() {
    let app = spawn_app().await;
    app.create("acme", "billing", "prod", "v1", "http://10.0.0.1")
        .await;
    let globex = app
        .create("globex", "billing", "prod", "v1", "http://10.0.0.2")
        .await;
    let acme_admin = app.create_key("tenant_admin", Some("acme")).await;
    let acme_reader = app.create_key("reader", Some("acme")).await;

    let own = audit(&app, &acme_admin, "", 1).await;
    assert!(own.iter().all(|e| e["tenant"] == "acme"), "{own:?}");
    let (status, _, _) = app
        .send(
            &acme_admin,
            Method::GET,
            "/api/v1/audit?tenant=globex",
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = app
        .send(&acme_reader, Method::GET, "/api/v1/audit", None, &[])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Another tenant's entry is no place to read on from.
    let theirs = audit(&app, &app.admin_key.clone(), "tenant=globex", 1).await;
    assert_eq!(theirs[0]["route_id"], globex["id"]);
    let (status, _, _) = app
        .send(
            &acme_admin,
            Method::GET,
            &format!("/api/v1/audit?after={}", theirs[0]["id"]),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rollback_walks_back_a_blue_green_switch_one_state_at_a_time() {
    let app = spawn_app().await;
    let mut blue = route("acme", "billing", "prod", "blue", "http://10.0.0.1");
    blue["active"] = json!(true);
    app.create_route(blue)
        .await
        .assert_status(StatusCode::CREATED);
    app.create("acme", "billing", "prod", "green", "http://10.0.0.2")
        .await;
    app.activate("acme", "billing", "prod", "green")
        .await
        .assert_status(StatusCode::OK);
    app.deactivate("acme", "billing", "prod", "blue")
        .await
        .assert_status(StatusCode::OK);
    assert_eq!(resolved_version(&app).await, "green");

    let first = rollback(&app).await;
    first.assert_status(StatusCode::OK);
    let first = first.json();
    assert_eq!(active_versions(&first), ["blue", "green"]);
    assert_eq!(first["changed"].as_array().expect("changed").len(), 1);
    assert_eq!(first["changed"][0]["version"], "blue");
    assert_eq!(first["changed"][0]["active"], true);

    let second = rollback(&app).await;
    second.assert_status(StatusCode::OK);
    let second = second.json();
    assert_eq!(active_versions(&second), ["blue"]);
    assert!(second["generation"].as_i64() > first["generation"].as_i64());
    // The snapshot answers with the restored state at once.
    for _ in 0..20 {
        assert_eq!(resolved_version(&app).await, "blue");
    }

    let third = rollback(&app).await.problem(StatusCode::CONFLICT);
    assert!(
        third["type"]
            .as_str()
            .expect("type")
            .ends_with("nothing-to-roll-back"),
        "{third}"
    );

    // Each rollback is audited: the route it switched, the entry it restored.
    let entries = audit(&app, &app.admin_key.clone(), SERVICE, 6).await;
    let rollbacks: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "rollback")
        .collect();
    assert_eq!(rollbacks.len(), 2, "{entries:#?}");
    assert_eq!(rollbacks[1]["version"], "green");
    assert_eq!(
        rollbacks[1]["changes"]["active"],
        json!({"from": true, "to": false})
    );
    assert_eq!(rollbacks[1]["rollback_to"], json!(second["restored_entry"]));
    assert_eq!(rollbacks[1]["active_versions"], json!(["blue"]));

    // A change after a rollback starts from the restored state.
    app.activate("acme", "billing", "prod", "green")
        .await
        .assert_status(StatusCode::OK);
    let back = rollback(&app).await;
    back.assert_status(StatusCode::OK);
    assert_eq!(active_versions(&back.json()), ["blue"]);

    // Consumers hear of each switch as an ordinary activation or deactivation.
    eventually(Duration::from_secs(10), "rollback events", || async {
        let events = app.all_events(None, Some("acme"), 1000).await;
        let last: Vec<&str> = events
            .iter()
            .rev()
            .take(2)
            .map(|e| e["type"].as_str().expect("type"))
            .collect();
        last == ["route.deactivated", "route.activated"]
    })
    .await;
}

#[tokio::test]
async fn rollback_refuses_what_it_cannot_restore() {
    let app = spawn_app().await;
    // Never switched on or off.
    rollback(&app).await.problem(StatusCode::CONFLICT);
    app.create("acme", "billing", "prod", "v1", "http://10.0.0.1")
        .await;
    rollback(&app).await.problem(StatusCode::CONFLICT);
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    // Its first state: nothing before it.
    rollback(&app).await.problem(StatusCode::CONFLICT);

    let v2 = app
        .create("acme", "billing", "prod", "v2", "http://10.0.0.2")
        .await;
    app.activate("acme", "billing", "prod", "v2")
        .await
        .assert_status(StatusCode::OK);
    app.deactivate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    // States: v1; v1 and v2; v2; none (v2 deleted). The one before the current names v2.
    app.request(
        Method::DELETE,
        &format!("/api/v1/routes/{}", v2["id"].as_str().expect("id")),
        None,
    )
    .await
    .assert_status(StatusCode::NO_CONTENT);
    let refused = rollback(&app).await.problem(StatusCode::CONFLICT);
    assert!(
        refused["detail"].as_str().expect("detail").contains("v2"),
        "{refused}"
    );
    // Nothing was changed by the refusal.
    let v1 = app.all_routes().await;
    assert_eq!(v1.len(), 1);
    assert_eq!(v1[0]["active"], false);

    for bad in [
        json!({"tenant": "acme", "service": "billing"}),
        json!({"tenant": "acme", "service": "billing", "env": "prod", "version": "v1"}),
        json!({"tenant": "Acme", "service": "billing", "env": "prod"}),
    ] {
        app.request(Method::POST, "/api/v1/routes/rollback", Some(bad))
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    let globex = app.create_key("tenant_admin", Some("globex")).await;
    let reader = app.create_key("reader", Some("acme")).await;
    for key in [&globex, &reader] {
        let (status, _, _) = app
            .send(
                key,
                Method::POST,
                "/api/v1/routes/rollback",
                Some(rollback_body()),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}

/// The writes of one service take its lock in turn: concurrent switches of its versions
/// each get a generation of their own, in the order they committed.
#[tokio::test]
async fn concurrent_writes_to_one_service_get_generations_in_commit_order() {
    let app = spawn_app().await;
    let versions: Vec<String> = (0..8).map(|i| format!("v{i}")).collect();
    for version in &versions {
        app.create("acme", "billing", "prod", version, "http://10.0.0.1")
            .await;
    }
    let switches = versions.iter().flat_map(|version| {
        [true, false].map(|on| {
            let app = &app;
            async move {
                if on {
                    app.activate("acme", "billing", "prod", version).await
                } else {
                    app.deactivate("acme", "billing", "prod", version).await
                }
            }
        })
    });
    for reply in futures::future::join_all(switches).await {
        reply.assert_status(StatusCode::OK);
    }
    let active: Vec<Value> = app
        .all_routes()
        .await
        .into_iter()
        .filter(|r| r["active"] == true)
        .map(|r| r["version"].clone())
        .collect();
    let admin = app.admin_key.clone();
    eventually(Duration::from_secs(10), "every change listed", || async {
        let entries = audit(&app, &admin, SERVICE, 8).await;
        let generations: Vec<i64> = entries
            .iter()
            .map(|e| e["generation"].as_i64().expect("generation"))
            .collect();
        assert!(
            generations.windows(2).all(|w| w[0] < w[1]),
            "{generations:?}"
        );
        // Each activation change recorded the versions active right after it; the last
        // of them is what the service holds now.
        let last_state = entries
            .iter()
            .rev()
            .find(|e| !e["active_versions"].is_null())
            .expect("an activation change");
        last_state["active_versions"] == Value::Array(active.clone())
    })
    .await;
}
