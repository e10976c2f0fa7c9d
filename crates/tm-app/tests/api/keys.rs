//! API keys: the secret shown once, listed without secrets, revoked at once.

use reqwest::{Method, StatusCode};
use serde_json::json;

use tm_testing::*;

#[tokio::test]
async fn a_created_key_is_shown_once_and_listed_without_its_secret() {
    let app = spawn_app().await;
    let reply = app
        .request(
            Method::POST,
            "/api/v1/keys",
            Some(json!({"name": "ci pipeline", "role": "reader", "tenant": "acme"})),
        )
        .await;
    reply.assert_status(StatusCode::CREATED);
    let created = reply.json();
    let mut fields: Vec<&String> = created.as_object().expect("object").keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        ["created_at", "id", "key", "name", "role", "tenant"]
    );
    assert_eq!(
        (created["name"].as_str(), created["role"].as_str()),
        (Some("ci pipeline"), Some("reader"))
    );
    let secret = created["key"].as_str().expect("key");
    assert!(
        secret.starts_with("tm_") && secret.len() >= 64,
        "high-entropy, prefixed: {secret}"
    );
    let id = created["id"].as_str().expect("id");
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/v1/keys/{id}").as_str())
    );

    let listed = app.get("/api/v1/keys").await;
    listed.assert_status(StatusCode::OK);
    assert!(
        !String::from_utf8_lossy(&listed.body).contains(secret),
        "no secret in listings"
    );
    let item = listed.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|k| k["id"] == id)
        .cloned()
        .expect("listed");
    let mut fields: Vec<&String> = item.as_object().expect("object").keys().collect();
    fields.sort();
    assert_eq!(fields, ["created_at", "id", "name", "role", "tenant"]);

    // The key works at once.
    app.request_as(
        Some(secret),
        Method::GET,
        "/api/v1/routes?tenant=acme",
        None,
    )
    .await
    .assert_status(StatusCode::OK);
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    let app = spawn_app().await;
    let secret = app.create_key("reader", Some("acme")).await;
    let keys = app.get("/api/v1/keys").await.json();
    let id = keys["items"][0]["id"].as_str().expect("id").to_owned();
    app.request_as(Some(&secret), Method::GET, "/api/v1/routes", None)
        .await
        .assert_status(StatusCode::OK);
    app.request(Method::DELETE, &format!("/api/v1/keys/{id}"), None)
        .await
        .assert_status(StatusCode::NO_CONTENT);
    app.request_as(Some(&secret), Method::GET, "/api/v1/routes", None)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    app.request(Method::DELETE, &format!("/api/v1/keys/{id}"), None)
        .await
        .problem(StatusCode::NOT_FOUND);
    assert!(app.get("/api/v1/keys").await.json()["items"]
        .as_array()
        .expect("items")
        .is_empty());
}

#[tokio::test]
async fn revoking_an_unknown_key_is_404() {
    let app = spawn_app().await;
    app.request(
        Method::DELETE,
        &format!("/api/v1/keys/{}", uuid::Uuid::now_v7()),
        None,
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    app.request(Method::DELETE, "/api/v1/keys/not-an-id", None)
        .await
        .problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn key_requests_are_validated_field_by_field() {
    let app = spawn_app().await;
    for (body, field) in [
        (json!({"role": "reader", "tenant": "acme"}), "name"),
        (
            json!({"name": "", "role": "reader", "tenant": "acme"}),
            "name",
        ),
        (
            json!({"name": "x".repeat(101), "role": "reader", "tenant": "acme"}),
            "name",
        ),
        (json!({"name": "k", "tenant": "acme"}), "role"),
        (json!({"name": "k", "role": "root"}), "role"),
        (json!({"name": "k", "role": "reader"}), "tenant"),
        (
            json!({"name": "k", "role": "admin", "tenant": "acme"}),
            "tenant",
        ),
        (
            json!({"name": "k", "role": "reader", "tenant": "Acme"}),
            "tenant",
        ),
        (
            json!({"name": "k", "role": "reader", "tenant": "acme", "scopes": []}),
            "scopes",
        ),
    ] {
        let reply = app
            .request(Method::POST, "/api/v1/keys", Some(body.clone()))
            .await;
        let problem = reply.problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            problem["errors"]
                .as_array()
                .expect("errors")
                .iter()
                .any(|e| e["field"] == field),
            "{body} should name {field}: {problem}"
        );
    }
    assert!(app.get("/api/v1/keys").await.json()["items"]
        .as_array()
        .expect("items")
        .is_empty());
}

#[tokio::test]
async fn the_first_start_on_an_empty_store_makes_one_admin_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_path_buf();
    let app = spawn_app_with(|raw| {
        raw.process.bootstrap_admin_key = None;
        raw.process.data_dir = data_dir.clone();
    })
    .await;
    let path = dir.path().join("bootstrap-admin.key");
    let key = std::fs::read_to_string(&path)
        .expect("bootstrap key file")
        .trim()
        .to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    app.request_as(
        Some(&key),
        Method::POST,
        "/api/v1/keys",
        Some(json!({"name":"a","role":"admin"})),
    )
    .await
    .assert_status(StatusCode::CREATED);
    // Never a second time on the same store.
    let again = tm_store::KeyRecord::new(
        &tm_domain::ApiKey::new(tm_domain::KeyId::generate(), [1; 32]),
        "again".into(),
        tm_domain::Grant::Admin,
    );
    assert!(!app.store.create_first_key(&again).await.expect("store"));
}

#[tokio::test]
async fn a_tenant_holds_at_most_the_configured_number_of_live_keys() {
    let app = spawn_app_with(|raw| raw.limits.max_keys_per_tenant = 2).await;
    let boss = app.create_key("tenant_admin", Some("acme")).await;
    let create = |key: Option<String>, tenant: &str| {
        let body = json!({"name": "k", "role": "reader", "tenant": tenant});
        let app = &app;
        async move {
            match key {
                Some(key) => {
                    app.request_as(Some(&key), Method::POST, "/api/v1/keys", Some(body))
                        .await
                }
                None => app.request(Method::POST, "/api/v1/keys", Some(body)).await,
            }
        }
    };
    // The tenant admin's own key counts: one reader more fills the tenant.
    let reader = create(Some(boss.clone()), "acme").await;
    reader.assert_status(StatusCode::CREATED);
    for caller in [Some(boss.clone()), None] {
        let refused = create(caller, "acme").await;
        let problem = refused.problem(StatusCode::CONFLICT);
        assert_eq!(problem["type"], "urn:traffic-manager:problem:too-many-keys");
        assert!(
            problem["detail"].as_str().expect("detail").contains('2'),
            "{problem}"
        );
    }
    // Other tenants, and admin keys (which have none), are not counted.
    create(None, "globex")
        .await
        .assert_status(StatusCode::CREATED);
    app.request(
        Method::POST,
        "/api/v1/keys",
        Some(json!({"name": "ops", "role": "admin"})),
    )
    .await
    .assert_status(StatusCode::CREATED);
    // Revoked keys are not live: revoking one makes room for another.
    let id = reader.json()["id"].as_str().expect("id").to_owned();
    app.request(Method::DELETE, &format!("/api/v1/keys/{id}"), None)
        .await
        .assert_status(StatusCode::NO_CONTENT);
    create(Some(boss), "acme")
        .await
        .assert_status(StatusCode::CREATED);
}

#[tokio::test]
async fn keys_are_listed_a_page_at_a_time_each_once() {
    let app = spawn_app().await;
    let boss = app.create_key("tenant_admin", Some("acme")).await;
    for tenant in ["acme", "globex", "acme", "acme", "globex", "acme"] {
        app.create_key("reader", Some(tenant)).await;
    }
    // Walks a listing with pages of `limit` as `key`: the ids, page by page.
    let walk = |key: Option<String>, limit: u32| {
        let app = &app;
        async move {
            let mut pages: Vec<Vec<String>> = Vec::new();
            let mut path = format!("/api/v1/keys?limit={limit}");
            loop {
                let reply = match &key {
                    Some(key) => app.request_as(Some(key), Method::GET, &path, None).await,
                    None => app.get(&path).await,
                };
                reply.assert_status(StatusCode::OK);
                let page = reply.json();
                pages.push(
                    page["items"]
                        .as_array()
                        .expect("items")
                        .iter()
                        .map(|k| k["id"].as_str().expect("id").to_owned())
                        .collect(),
                );
                match page["next_cursor"].as_str() {
                    Some(cursor) => path = format!("/api/v1/keys?limit={limit}&cursor={cursor}"),
                    None => return pages,
                }
            }
        }
    };
    let pages = walk(None, 3).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 3, 1],
        "{pages:?}"
    );
    let ids: Vec<String> = pages.concat();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "every key once, in id order");
    let all = app.get("/api/v1/keys").await.json();
    assert_eq!(all["items"].as_array().expect("items").len(), 7);
    assert!(all["next_cursor"].is_null(), "{all}");

    // A tenant admin walks its own tenant's keys only: itself and four readers.
    let own = walk(Some(boss), 2).await;
    assert_eq!(
        own.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 1],
        "{own:?}"
    );

    // A cursor this listing did not issue is a 400; a page size out of range, a 422.
    let route_cursor = {
        for version in ["v1", "v2"] {
            app.create("acme", "billing", "prod", version, "http://a")
                .await;
        }
        app.get("/api/v1/routes?limit=1").await.json()["next_cursor"]
            .as_str()
            .expect("a route cursor")
            .to_owned()
    };
    for cursor in ["garbage", "!!", route_cursor.as_str()] {
        let reply = app.get(&format!("/api/v1/keys?cursor={cursor}")).await;
        reply.problem(StatusCode::BAD_REQUEST);
    }
    for limit in ["0", "1001"] {
        let problem = app
            .get(&format!("/api/v1/keys?limit={limit}"))
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem["errors"][0]["field"], "limit", "{problem}");
    }
}

#[tokio::test]
async fn key_creations_and_revocations_are_audited_without_the_secret() {
    let app = spawn_app().await;
    let boss_reply = app
        .request(
            Method::POST,
            "/api/v1/keys",
            Some(json!({"name": "boss", "role": "tenant_admin", "tenant": "acme"})),
        )
        .await;
    boss_reply.assert_status(StatusCode::CREATED);
    let boss = boss_reply.json();
    let boss_secret = boss["key"].as_str().expect("key").to_owned();
    let boss_id: tm_domain::KeyId = boss["id"].as_str().expect("id").parse().expect("key id");

    let created = app
        .request_as(
            Some(&boss_secret),
            Method::POST,
            "/api/v1/keys",
            Some(json!({"name": "ci", "role": "reader", "tenant": "acme"})),
        )
        .await;
    created.assert_status(StatusCode::CREATED);
    let created = created.json();
    let secret = created["key"].as_str().expect("key").to_owned();
    let id: tm_domain::KeyId = created["id"].as_str().expect("id").parse().expect("key id");
    app.request_as(
        Some(&boss_secret),
        Method::DELETE,
        &format!("/api/v1/keys/{id}"),
        None,
    )
    .await
    .assert_status(StatusCode::NO_CONTENT);

    let trail = app.store.key_audit_log(id).await.expect("audit log");
    let seen: Vec<(&str, &str, tm_domain::Role, Option<&str>)> = trail
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.actor.as_str(),
                e.role,
                e.tenant.as_ref().map(tm_domain::TenantId::as_str),
            )
        })
        .collect();
    let by_boss = boss_id.to_string();
    assert_eq!(
        seen,
        [
            (
                "create",
                by_boss.as_str(),
                tm_domain::Role::Reader,
                Some("acme")
            ),
            (
                "revoke",
                by_boss.as_str(),
                tm_domain::Role::Reader,
                Some("acme")
            ),
        ]
    );
    assert!(trail.iter().all(|e| e.key_id == id));
    // The configured admin key, which has no id, is recorded as `bootstrap`.
    let boss_trail = app.store.key_audit_log(boss_id).await.expect("audit log");
    assert_eq!(boss_trail.len(), 1);
    assert_eq!(boss_trail[0].actor, "bootstrap");
    // Neither the secret nor anything derived from it is kept.
    let (_, hash) = tm_domain::ApiKey::inspect(&secret).expect("a key");
    let kept = serde_json::to_string(&trail).expect("json");
    let hash: String = hash.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    for leaked in [secret.as_str(), hash.as_str()] {
        assert!(!kept.contains(leaked), "{kept}");
    }
}
