//! A service's routing policy (resolve policy, failover chain, health checks) and
//! `resolve?explain=true`: what resolve serves, and why.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use tm_testing::*;

const SERVICE: &str = "tenant=acme&service=billing&env=prod";

async fn put_policy(app: &TestApp, body: Value) -> Reply {
    app.request(Method::PUT, "/api/v1/services/policy", Some(body))
        .await
}

fn policy(extra: Value) -> Value {
    let mut body = json!({"tenant": "acme", "service": "billing", "env": "prod"});
    for (k, v) in extra.as_object().expect("an object") {
        body[k] = v.clone();
    }
    body
}

async fn create_active(app: &TestApp, version: &str, weight: u8) -> Value {
    let mut body = route(
        "acme",
        "billing",
        "prod",
        version,
        &format!("http://{version}.internal"),
    );
    body["active"] = json!(true);
    body["weight"] = json!(weight);
    let reply = app.create_route(body).await;
    reply.assert_status(StatusCode::CREATED);
    reply.json()
}

async fn versions_served(app: &TestApp, draws: usize) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..draws {
        let reply = app
            .resolve(&[("tenant", "acme"), ("service", "billing"), ("env", "prod")])
            .await;
        reply.assert_status(StatusCode::OK);
        seen.insert(
            reply.json()["version"]
                .as_str()
                .expect("version")
                .to_owned(),
        );
    }
    seen
}

async fn explain(app: &TestApp, extra: &str) -> Value {
    let reply = app
        .get(&format!(
            "/api/v1/routes/resolve?{SERVICE}&explain=true{extra}"
        ))
        .await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    reply.json()
}

/// Marks `route_id` as its checks would after failing (or passing): straight in the
/// store, as the probes will write it.
async fn set_health(app: &TestApp, route_id: &str, state: &str) {
    app.raw_execute(&format!(
        "INSERT INTO route_health (route_id, state, failures, changed_at) \
         VALUES ('{route_id}', '{state}', 3, '2026-01-01T00:00:00Z')"
    ))
    .await
    .expect("health written");
}

#[tokio::test]
async fn a_policy_is_replaced_whole_read_back_and_audited() {
    let app = spawn_app().await;
    let default = app.get(&format!("/api/v1/services/policy?{SERVICE}")).await;
    default.assert_status(StatusCode::OK);
    assert_eq!(
        default.json(),
        json!({"tenant": "acme", "service": "billing", "env": "prod",
               "resolve_policy": "healthy_or_all", "failover": [], "health_check": null,
               "version_health_checks": {}, "generation": 0})
    );
    create_active(&app, "blue", 100).await;

    let body = policy(json!({
        "resolve_policy": "healthy_only",
        "failover": [{"versions": ["blue"], "min_healthy": 1}, {"versions": ["green", "green-2"]}],
        "health_check": {"protocol": "http", "path": "/healthz"},
        "version_health_checks": {"green": {"protocol": "tcp", "interval_seconds": 5}, "green-2": null},
    }));
    let set = put_policy(&app, body.clone()).await;
    set.assert_status(StatusCode::OK);
    let set = set.json();
    assert_eq!(set["resolve_policy"], "healthy_only");
    assert_eq!(
        set["failover"][1],
        json!({"versions": ["green", "green-2"], "min_healthy": 1})
    );
    assert_eq!(
        set["health_check"],
        json!({"protocol": "http", "path": "/healthz", "expected_status": ["200-299"],
               "interval_seconds": 10, "timeout_seconds": 2, "tolerated_failures": 2})
    );
    assert_eq!(set["version_health_checks"]["green"]["protocol"], "tcp");
    assert_eq!(set["version_health_checks"]["green"]["timeout_seconds"], 2);
    assert_eq!(set["version_health_checks"]["green-2"], Value::Null);
    let generation = set["generation"].as_i64().expect("generation");
    assert!(generation >= 2, "the create moved it on too: {generation}");

    let read = app
        .get(&format!("/api/v1/services/policy?{SERVICE}"))
        .await
        .json();
    assert_eq!(read, set);
    // The same policy again changes nothing.
    let again = put_policy(&app, body).await.json();
    assert_eq!(again["generation"], json!(generation));

    // Reset to the default: fields left out take their defaults.
    let reset = put_policy(&app, policy(json!({}))).await.json();
    assert_eq!(reset["failover"], json!([]));
    assert_eq!(reset["generation"], json!(generation + 1));

    let admin = app.admin_key.clone();
    let entries = app
        .send(
            &admin,
            Method::GET,
            &format!("/api/v1/audit?{SERVICE}"),
            None,
            &[],
        )
        .await
        .2;
    let changes: Vec<&Value> = entries["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == "policy")
        .collect();
    // On PostgreSQL the newest entries may wait for older transactions of other tests.
    if !changes.is_empty() {
        assert_eq!(changes[0]["route_id"], Value::Null);
        assert_eq!(changes[0]["before"]["resolve"], "healthy_or_all");
        assert_eq!(changes[0]["after"]["resolve"], "healthy_only");
        assert_eq!(changes[0]["generation"], json!(generation));
    }
}

#[tokio::test]
async fn policies_the_domain_refuses_are_422_and_change_nothing() {
    let app = spawn_app().await;
    for bad in [
        json!({"failover": [{"versions": ["a"]}, {"versions": ["a"]}]}),
        json!({"failover": [{"versions": ["a"], "min_healthy": 2}]}),
        json!({"failover": [{"versions": ["a"], "min_healthy": 0}]}),
        json!({"failover": [{"versions": []}]}),
        json!({"failover": (0..9).map(|i| json!({"versions": [format!("v{i}")]})).collect::<Vec<_>>()}),
        json!({"failover": [{"versions": ["Bad"]}]}),
        json!({"resolve_policy": "sometimes"}),
        json!({"health_check": {"protocol": "http", "expected_status": ["2xx"]}}),
        json!({"health_check": {"protocol": "http", "expected_status": ["299-200"]}}),
        json!({"health_check": {"protocol": "http", "interval_seconds": 2, "timeout_seconds": 5}}),
        json!({"health_check": {"protocol": "http", "interval_seconds": 0}}),
        json!({"health_check": {"protocol": "http", "tolerated_failures": 11}}),
        json!({"health_check": {"protocol": "http", "path": "no-slash"}}),
        json!({"health_check": {"protocol": "gopher"}}),
        json!({"version_health_checks": {"Bad": null}}),
        json!({"colour": "blue"}),
    ] {
        let reply = put_policy(&app, policy(bad.clone())).await;
        assert!(
            matches!(
                reply.status,
                StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST
            ),
            "{bad}: {}",
            reply.status
        );
    }
    put_policy(&app, json!({"tenant": "acme", "service": "billing"}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let read = app
        .get(&format!("/api/v1/services/policy?{SERVICE}"))
        .await
        .json();
    assert_eq!(read["generation"], 0);

    let other = app.create_key("tenant_admin", Some("globex")).await;
    let reader = app.create_key("reader", Some("acme")).await;
    for key in [&other, &reader] {
        let (status, _, _) = app
            .send(
                key,
                Method::PUT,
                "/api/v1/services/policy",
                Some(policy(json!({}))),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, _, _) = app
        .send(
            &reader,
            Method::GET,
            &format!("/api/v1/services/policy?{SERVICE}"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = app
        .send(
            &other,
            Method::GET,
            &format!("/api/v1/services/policy?{SERVICE}"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_failover_chain_serves_its_first_tier_while_it_has_its_minimum() {
    let app = spawn_app().await;
    let blue = create_active(&app, "blue", 50).await;
    let blue2 = create_active(&app, "blue-2", 50).await;
    create_active(&app, "green", 100).await;
    put_policy(
        &app,
        policy(json!({"failover": [{"versions": ["blue", "blue-2"], "min_healthy": 2}]})),
    )
    .await
    .assert_status(StatusCode::OK);
    assert_eq!(
        versions_served(&app, 60).await,
        ["blue", "blue-2"].map(String::from).into()
    );

    let explained = explain(&app, "&key=user-7").await;
    assert_eq!(explained["policy"], "healthy_or_all");
    assert!(explained["decision"]
        .as_str()
        .expect("decision")
        .contains("tier 0"));
    let candidates = explained["candidates"].as_array().expect("candidates");
    assert_eq!(candidates.len(), 3);
    assert_eq!(
        candidates[2],
        json!({"version": "green", "url": "http://green.internal", "weight": 100,
               "healthy": true, "tier": 1, "min_healthy": 1, "last_healthy_at": null,
               "serves": false})
    );
    assert_eq!(candidates[0]["min_healthy"], 2);
    assert_eq!(explained["pick"]["by"], "sticky");
    let scores = explained["pick"]["scores"].as_array().expect("scores");
    assert_eq!(scores.len(), 2, "only serving versions have a score");
    let best = scores
        .iter()
        .max_by(|a, b| {
            a["score"]
                .as_f64()
                .partial_cmp(&b["score"].as_f64())
                .expect("numbers")
        })
        .expect("a score");
    assert_eq!(explained["pick"]["version"], best["version"]);
    assert_eq!(explained["answer"]["version"], best["version"]);
    let sticky = app
        .resolve(&[
            ("tenant", "acme"),
            ("service", "billing"),
            ("env", "prod"),
            ("key", "user-7"),
        ])
        .await
        .json();
    assert_eq!(sticky["version"], best["version"]);
    assert!(explained["generation"].as_u64().expect("generation") >= 4);
    assert!(explained["snapshot"]["age_seconds"].as_f64().is_some());

    // One of blue's two is unhealthy: the tier lacks its minimum and green serves.
    set_health(&app, blue2["id"].as_str().expect("id"), "degraded").await;
    put_policy(
        &app,
        policy(
            json!({"failover": [{"versions": ["blue", "blue-2"], "min_healthy": 2}],
                      "resolve_policy": "healthy_only"}),
        ),
    )
    .await
    .assert_status(StatusCode::OK);
    assert_eq!(
        versions_served(&app, 30).await,
        ["green"].map(String::from).into()
    );
    let explained = explain(&app, "").await;
    assert_eq!(explained["candidates"][1]["healthy"], false);
    assert_eq!(explained["pick"]["by"], "random");
    // An explicit version is answered whatever its health.
    let named = app
        .resolve(&[
            ("tenant", "acme"),
            ("service", "billing"),
            ("env", "prod"),
            ("version", "blue-2"),
        ])
        .await;
    named.assert_status(StatusCode::OK);

    // Nothing healthy under healthy_only: 503, and explain says why.
    set_health(&app, blue["id"].as_str().expect("id"), "degraded").await;
    let green = app
        .get("/api/v1/routes?tenant=acme&service=billing&env=prod")
        .await
        .json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|r| r["version"] == "green")
        .expect("green")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    set_health(&app, &green, "degraded").await;
    put_policy(&app, policy(json!({"resolve_policy": "healthy_only"})))
        .await
        .assert_status(StatusCode::OK);
    let refused = app
        .resolve(&[("tenant", "acme"), ("service", "billing"), ("env", "prod")])
        .await;
    let problem = refused.problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(problem["type"]
        .as_str()
        .expect("type")
        .ends_with("no-healthy-route"));
    assert!(refused.header("retry-after").is_some());
    let explained = explain(&app, "").await;
    assert!(explained["decision"]
        .as_str()
        .expect("decision")
        .contains("healthy_only"));
    assert_eq!(explained["answer"], Value::Null);

    // healthy_or_all fails open: every version serves again.
    put_policy(&app, policy(json!({"resolve_policy": "healthy_or_all"})))
        .await
        .assert_status(StatusCode::OK);
    assert_eq!(
        versions_served(&app, 80).await,
        ["blue", "blue-2", "green"].map(String::from).into()
    );
}

#[tokio::test]
async fn explain_is_for_admins_and_the_tenants_own_keys() {
    let app = spawn_app().await;
    create_active(&app, "v1", 100).await;
    let reader = app.create_key("reader", Some("acme")).await;
    let other = app.create_key("reader", Some("globex")).await;
    let path = format!("/api/v1/routes/resolve?{SERVICE}&explain=true");
    let (status, _, body) = app.send(&reader, Method::GET, &path, None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["answer"]["version"], "v1");
    let (status, _, _) = app.send(&other, Method::GET, &path, None, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.get(&format!("/api/v1/routes/resolve?{SERVICE}&explain=maybe"))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    // explain=false is an ordinary resolve.
    let plain = app
        .get(&format!("/api/v1/routes/resolve?{SERVICE}&explain=false"))
        .await;
    plain.assert_status(StatusCode::OK);
    assert_eq!(plain.json()["version"], "v1");
    assert!(plain.header("etag").is_some());
    // A service with nothing active is explained too.
    let empty = app
        .get("/api/v1/routes/resolve?tenant=acme&service=none&env=prod&explain=true")
        .await;
    empty.assert_status(StatusCode::OK);
    let empty = empty.json();
    assert_eq!(empty["candidates"], json!([]));
    assert_eq!(empty["generation"], Value::Null);
    assert_eq!(empty["answer"], Value::Null);
}
