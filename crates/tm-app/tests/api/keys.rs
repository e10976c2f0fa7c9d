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
