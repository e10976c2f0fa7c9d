//! Keys, roles and tenant isolation: every endpoint × role × same or other tenant.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use tm_testing::*;

/// Every `/api/v1` endpoint, with a path that would otherwise succeed.
fn endpoints(route_id: &str, key_id: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (
            Method::GET,
            "/api/v1/routes/resolve?tenant=acme&service=billing&env=prod".into(),
            None,
        ),
        (
            Method::POST,
            "/api/v1/routes".into(),
            Some(route("acme", "billing", "prod", "v9", "http://a")),
        ),
        (
            Method::POST,
            "/api/v1/routes/activate".into(),
            Some(json!({"tenant":"acme","service":"billing","env":"prod","version":"v1"})),
        ),
        (
            Method::POST,
            "/api/v1/routes/deactivate".into(),
            Some(json!({"tenant":"acme","service":"billing","env":"prod","version":"v1"})),
        ),
        (Method::GET, "/api/v1/routes".into(), None),
        (Method::GET, format!("/api/v1/routes/{route_id}"), None),
        (
            Method::PATCH,
            format!("/api/v1/routes/{route_id}"),
            Some(json!({"weight": 5})),
        ),
        (Method::DELETE, format!("/api/v1/routes/{route_id}"), None),
        (
            Method::POST,
            "/api/v1/keys".into(),
            Some(json!({"name":"x","role":"reader","tenant":"acme"})),
        ),
        (Method::GET, "/api/v1/keys".into(), None),
        (Method::DELETE, format!("/api/v1/keys/{key_id}"), None),
    ]
}

#[tokio::test]
async fn every_api_endpoint_wants_a_valid_bearer_key() {
    let app = spawn_app().await;
    let created = app
        .create("acme", "billing", "prod", "v1", "http://a")
        .await;
    let reader = app.create_key("reader", Some("acme")).await;
    let reader_id = key_id_of(&app, "acme").await;
    let route_id = created["id"].as_str().expect("id");
    let forged = format!("tm_{}_{}", uuid::Uuid::now_v7().simple(), "A".repeat(43));
    let tampered = format!("{}B", &reader[..reader.len() - 1]);
    for (method, path, body) in endpoints(route_id, &reader_id) {
        for key in [
            None,
            Some(""),
            Some("nonsense"),
            Some(forged.as_str()),
            Some(tampered.as_str()),
        ] {
            let reply = app
                .request_as(key, method.clone(), &path, body.clone())
                .await;
            reply.problem(StatusCode::UNAUTHORIZED);
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer"),
                "{method} {path}"
            );
        }
        // Another scheme is not a bearer key, even with a valid key in it.
        let basic = app
            .anonymous
            .request(method.clone(), app.url(&path))
            .header("authorization", format!("Basic {reader}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(basic.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    // Probes and metrics are not behind keys.
    for path in [
        "/healthz",
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
    ] {
        let reply = app.request_as(None, Method::GET, path, None).await;
        reply.assert_status(StatusCode::OK);
    }
}

async fn key_id_of(app: &TestApp, tenant: &str) -> String {
    let keys = app.get("/api/v1/keys").await.json();
    keys["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|k| k["tenant"] == tenant)
        .and_then(|k| k["id"].as_str())
        .expect("a key of the tenant")
        .to_owned()
}

/// What each role may do to its own tenant ("acme") and to another ("globex").
#[derive(Clone, Copy, Debug)]
enum Role {
    Admin,
    TenantAdmin,
    Reader,
}

#[tokio::test]
async fn the_role_and_tenant_matrix_holds_for_every_endpoint() {
    let app = spawn_app().await;
    let tenant_admin = app.create_key("tenant_admin", Some("acme")).await;
    let reader = app.create_key("reader", Some("acme")).await;

    let mut failures = Vec::new();
    let mut case = 0;
    for role in [Role::Admin, Role::TenantAdmin, Role::Reader] {
        let key = match role {
            Role::Admin => app.admin_key.clone(),
            Role::TenantAdmin => tenant_admin.clone(),
            Role::Reader => reader.clone(),
        };
        for tenant in ["acme", "globex"] {
            let own = tenant == "acme";
            case += 1;
            // Fresh targets for this case, made by the admin.
            let service = format!("svc{case}");
            let target = app.create(tenant, &service, "prod", "v1", "http://a").await;
            app.activate(tenant, &service, "prod", "v1")
                .await
                .assert_status(StatusCode::OK);
            app.create(tenant, &service, "prod", "v2", "http://b").await;
            let route_id = target["id"].as_str().expect("id").to_owned();
            let victim = app
                .request(
                    Method::POST,
                    "/api/v1/keys",
                    Some(json!({"name":"victim","role":"reader","tenant":tenant})),
                )
                .await
                .json()["id"]
                .as_str()
                .expect("id")
                .to_owned();

            use StatusCode as S;
            let (ok, forbidden_or_hidden) = (own, !own);
            let write = |created: S| match role {
                Role::Reader => S::FORBIDDEN,
                Role::Admin => created,
                Role::TenantAdmin if ok => created,
                Role::TenantAdmin => S::FORBIDDEN,
            };
            let by_id = |success: S, write: bool| match role {
                Role::Reader if write => S::FORBIDDEN,
                Role::Admin => success,
                _ if forbidden_or_hidden => S::NOT_FOUND,
                _ => success,
            };
            let read_named = match role {
                Role::Admin => S::OK,
                _ if ok => S::OK,
                _ => S::FORBIDDEN,
            };
            let keys_list = match role {
                Role::Reader => S::FORBIDDEN,
                _ => S::OK,
            };
            let body = |version: &str| json!({"tenant": tenant, "service": service, "env": "prod", "version": version});
            let expectations: Vec<(Method, String, Option<Value>, S)> = vec![
                (
                    Method::GET,
                    format!("/api/v1/routes/resolve?tenant={tenant}&service={service}&env=prod"),
                    None,
                    read_named,
                ),
                (
                    Method::POST,
                    "/api/v1/routes".into(),
                    Some(route(tenant, &service, "prod", "v3", "http://c")),
                    write(S::CREATED),
                ),
                (
                    Method::POST,
                    "/api/v1/routes/activate".into(),
                    Some(body("v2")),
                    write(S::OK),
                ),
                (
                    Method::POST,
                    "/api/v1/routes/deactivate".into(),
                    Some(body("v2")),
                    write(S::OK),
                ),
                (
                    Method::GET,
                    format!("/api/v1/routes?tenant={tenant}"),
                    None,
                    read_named,
                ),
                (
                    Method::GET,
                    format!("/api/v1/routes/{route_id}"),
                    None,
                    by_id(S::OK, false),
                ),
                (
                    Method::PATCH,
                    format!("/api/v1/routes/{route_id}"),
                    Some(json!({"weight": 7})),
                    by_id(S::OK, true),
                ),
                (
                    Method::POST,
                    "/api/v1/keys".into(),
                    Some(json!({"name":"k","role":"reader","tenant":tenant})),
                    write(S::CREATED),
                ),
                (Method::GET, "/api/v1/keys".into(), None, keys_list),
                (
                    Method::DELETE,
                    format!("/api/v1/keys/{victim}"),
                    None,
                    by_id(S::NO_CONTENT, true),
                ),
                (
                    Method::DELETE,
                    format!("/api/v1/routes/{route_id}"),
                    None,
                    by_id(S::NO_CONTENT, true),
                ),
            ];
            for (method, path, body, expected) in expectations {
                let reply = app
                    .request_as(Some(&key), method.clone(), &path, body)
                    .await;
                if reply.status != expected {
                    failures.push(format!(
                        "{role:?} on {tenant}: {method} {path} answered {} instead of {expected}: {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    ));
                } else if !reply.status.is_success() {
                    reply.problem(expected);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} wrong answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn listings_only_show_the_callers_tenant() {
    let app = spawn_app().await;
    app.create("acme", "billing", "prod", "v1", "http://a")
        .await;
    app.create("globex", "billing", "prod", "v1", "http://a")
        .await;
    let reader = app.create_key("reader", Some("acme")).await;
    app.create_key("reader", Some("globex")).await;
    let boss = app.create_key("tenant_admin", Some("acme")).await;

    let routes = app
        .request_as(Some(&reader), Method::GET, "/api/v1/routes", None)
        .await
        .json();
    let tenants: Vec<&Value> = routes["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| &r["tenant"])
        .collect();
    assert_eq!(tenants, [&json!("acme")]);

    let keys = app
        .request_as(Some(&boss), Method::GET, "/api/v1/keys", None)
        .await
        .json();
    let items = keys["items"].as_array().expect("items");
    assert!(!items.is_empty());
    assert!(items.iter().all(|k| k["tenant"] == "acme"), "{keys}");
    let all = app.get("/api/v1/keys").await.json();
    assert!(all["items"].as_array().expect("items").len() > items.len());
}

#[tokio::test]
async fn a_tenant_admin_only_makes_and_revokes_reader_keys_of_its_tenant() {
    let app = spawn_app().await;
    let boss = app.create_key("tenant_admin", Some("acme")).await;
    let post = |body: Value| {
        let (app, boss) = (&app, boss.clone());
        async move {
            app.request_as(Some(&boss), Method::POST, "/api/v1/keys", Some(body))
                .await
        }
    };
    post(json!({"name":"r","role":"reader","tenant":"acme"}))
        .await
        .assert_status(StatusCode::CREATED);
    post(json!({"name":"t","role":"tenant_admin","tenant":"acme"}))
        .await
        .problem(StatusCode::FORBIDDEN);
    post(json!({"name":"a","role":"admin"}))
        .await
        .problem(StatusCode::FORBIDDEN);
    post(json!({"name":"r","role":"reader","tenant":"globex"}))
        .await
        .problem(StatusCode::FORBIDDEN);

    // Another tenant_admin key of the same tenant cannot be revoked by it.
    let peer = app
        .request(
            Method::POST,
            "/api/v1/keys",
            Some(json!({"name":"peer","role":"tenant_admin","tenant":"acme"})),
        )
        .await
        .json();
    let path = format!("/api/v1/keys/{}", peer["id"].as_str().expect("id"));
    app.request_as(Some(&boss), Method::DELETE, &path, None)
        .await
        .problem(StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn audit_rows_name_the_key_never_the_secret() {
    let app = spawn_app().await;
    let boss = app.create_key("tenant_admin", Some("acme")).await;
    let keys = app.get("/api/v1/keys").await.json();
    let boss_id = keys["items"].as_array().expect("items")[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let created = app
        .request_as(
            Some(&boss),
            Method::POST,
            "/api/v1/routes",
            Some(route("acme", "billing", "prod", "v1", "http://a")),
        )
        .await;
    created.assert_status(StatusCode::CREATED);
    let id = created.json()["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("route id");
    let log = app.store.audit_log(id).await.expect("audit");
    assert_eq!(log[0].actor, boss_id);
    let dump = format!("{log:?}");
    assert!(!dump.contains(&boss) && !dump.contains(&app.admin_key));
}

#[tokio::test]
async fn the_role_is_checked_before_the_body_is_read() {
    let app = spawn_app().await;
    let created = app
        .create("acme", "billing", "prod", "v1", "http://a")
        .await;
    let one = format!("/api/v1/routes/{}", created["id"].as_str().expect("id"));
    let reader = app.create_key("reader", Some("acme")).await;
    let broken: &[(Method, &str, &str, &[u8])] = &[
        (Method::POST, "/api/v1/routes", "application/json", b"{"),
        (Method::POST, "/api/v1/routes", "text/plain", b"tenant=acme"),
        (
            Method::POST,
            "/api/v1/routes/activate",
            "application/json",
            b"[1,",
        ),
        (
            Method::POST,
            "/api/v1/routes/deactivate",
            "application/json",
            br#"{"colour":1,"#,
        ),
        (Method::PATCH, &one, "application/json", br#"{"url":"#),
        (Method::POST, "/api/v1/keys", "application/json", b"{"),
    ];
    for (method, path, content_type, body) in broken {
        let reply = Reply::from(
            app.anonymous
                .request(method.clone(), app.url(path))
                .bearer_auth(&reader)
                .header("content-type", *content_type)
                .body(body.to_vec())
                .send()
                .await
                .expect("sent"),
        )
        .await;
        reply.problem(StatusCode::FORBIDDEN);
    }
}
