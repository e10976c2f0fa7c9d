//! Endpoint health probes against servers on loopback: a route's health follows its
//! upstream, resolve follows the health, and every change is audited and measured.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use tm_testing::*;

const SERVICE: &str = "tenant=acme&service=billing&env=prod";

/// An application whose probes may reach loopback (as webhooks may, with the same
/// setting), with health changes read by the others within a second.
async fn app_probing_loopback() -> TestApp {
    spawn_app_with(|raw| {
        raw.webhooks.webhook_allow_networks = Some("127.0.0.0/8".into());
        raw.process.snapshot_catch_up_interval = Duration::from_millis(200);
    })
    .await
}

async fn create_active(app: &TestApp, version: &str, url: &str) -> String {
    let mut body = route("acme", "billing", "prod", version, url);
    body["active"] = json!(true);
    let reply = app.create_route(body).await;
    reply.assert_status(StatusCode::CREATED);
    reply.json()["id"].as_str().expect("id").to_owned()
}

async fn set_policy(app: &TestApp, policy: Value) {
    let mut body = json!({"tenant": "acme", "service": "billing", "env": "prod"});
    for (k, v) in policy.as_object().expect("object") {
        body[k] = v.clone();
    }
    app.request(Method::PUT, "/api/v1/services/policy", Some(body))
        .await
        .assert_status(StatusCode::OK);
}

async fn health(app: &TestApp, id: &str) -> Value {
    let reply = app.get(&format!("/api/v1/routes/{id}/health")).await;
    reply.assert_status(StatusCode::OK);
    reply.json()
}

async fn wait_for_state(app: &TestApp, id: &str, state: &str) {
    eventually(
        Duration::from_secs(20),
        &format!("route {id} {state}"),
        || async { health(app, id).await["state"] == state },
    )
    .await;
}

/// The versions resolve serves over `draws` picks.
async fn served(app: &TestApp, draws: usize) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..draws {
        let reply = app
            .resolve(&[("tenant", "acme"), ("service", "billing"), ("env", "prod")])
            .await;
        if reply.status == StatusCode::OK {
            seen.insert(
                reply.json()["version"]
                    .as_str()
                    .expect("version")
                    .to_owned(),
            );
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_is_degraded_and_not_served_then_online_again() {
    let app = app_probing_loopback().await;
    let good = Upstream::start().await;
    let bad = Upstream::start().await;
    let v1 = create_active(&app, "v1", &good.url()).await;
    let v2 = create_active(&app, "v2", &bad.url()).await;
    let fresh = health(&app, &v2).await;
    assert_eq!(
        (fresh["state"].clone(), fresh["checked"].clone()),
        (json!("online"), json!(false))
    );
    set_policy(
        &app,
        json!({"health_check": {"protocol": "http", "path": "/healthz", "interval_seconds": 1,
                                "timeout_seconds": 1, "tolerated_failures": 1}}),
    )
    .await;
    eventually(Duration::from_secs(10), "both upstreams probed", || async {
        good.hits() > 0 && bad.hits() > 0
    })
    .await;
    assert_eq!(health(&app, &v1).await["checked"], true);
    assert_eq!(
        served(&app, 40).await,
        ["v1", "v2"].map(String::from).into()
    );

    bad.answer(503);
    wait_for_state(&app, &v2, "degraded").await;
    let degraded = health(&app, &v2).await;
    assert!(degraded["failures"].as_u64().expect("failures") >= 2);
    assert!(
        degraded["last_error"]
            .as_str()
            .expect("an error")
            .contains("503"),
        "{degraded}"
    );
    assert!(degraded["last_online_at"].is_string());
    eventually(
        Duration::from_secs(10),
        "v2 left out of resolve",
        || async { served(&app, 30).await == ["v1"].map(String::from).into() },
    )
    .await;
    // Once left out, it stays out while it fails.
    assert_eq!(served(&app, 60).await, ["v1"].map(String::from).into());
    let explained = app
        .get(&format!("/api/v1/routes/resolve?{SERVICE}&explain=true"))
        .await
        .json();
    assert_eq!(explained["candidates"][1]["healthy"], false);
    assert_eq!(explained["candidates"][1]["serves"], false);

    bad.answer(200);
    wait_for_state(&app, &v2, "online").await;
    eventually(Duration::from_secs(10), "v2 served again", || async {
        served(&app, 40).await == ["v1", "v2"].map(String::from).into()
    })
    .await;

    // Each change of state is in the audit log, made by the probes.
    let entries = app.get(&format!("/api/v1/audit?{SERVICE}")).await.json();
    let changes: Vec<(Value, Value)> = entries["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == "health")
        .map(|e| (e["before"]["state"].clone(), e["after"]["state"].clone()))
        .collect();
    if changes.len() >= 2 {
        assert_eq!(changes[0], (json!("online"), json!("degraded")));
        assert_eq!(changes[1], (json!("degraded"), json!("online")));
        let actor = entries["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|e| e["action"] == "health")
            .expect("an entry")["actor"]
            .clone();
        assert_eq!(actor, "health-probe");
    }
    assert!(
        app.metric_value("health_probes_total{outcome=\"failed\"}")
            .await
            >= 2.0
    );
    eventually(
        Duration::from_secs(10),
        "the health metric sampled",
        || async {
            app.metric_or_zero(
                "endpoint_health{env=\"prod\",service=\"billing\",tenant=\"acme\",version=\"v2\"}",
            )
            .await
                == 1.0
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_upstream_within_its_tolerance_stays_online_and_served() {
    let app = app_probing_loopback().await;
    let stable = Upstream::start().await;
    let flapping = Upstream::start().await;
    create_active(&app, "v1", &stable.url()).await;
    let v2 = create_active(&app, "v2", &flapping.url()).await;
    flapping.flap(200, 500);
    set_policy(
        &app,
        json!({"health_check": {"protocol": "http", "interval_seconds": 1, "timeout_seconds": 1,
                                "tolerated_failures": 1}}),
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "six probes of the flapping one",
        || async { flapping.hits() >= 6 },
    )
    .await;
    // One failure in a row at most: tolerated, never degraded.
    let state = health(&app, &v2).await;
    assert_eq!(state["state"], "online", "{state}");
    assert_eq!(
        served(&app, 40).await,
        ["v1", "v2"].map(String::from).into()
    );

    // Flapping with nothing tolerated: it goes back and forth, and resolve never serves
    // it while degraded once the change has reached the snapshot.
    set_policy(
        &app,
        json!({"health_check": {"protocol": "http", "interval_seconds": 1, "timeout_seconds": 1,
                                "tolerated_failures": 0}}),
    )
    .await;
    wait_for_state(&app, &v2, "degraded").await;
    wait_for_state(&app, &v2, "online").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_checks_and_a_failover_chain_move_traffic_to_the_next_tier() {
    let app = app_probing_loopback().await;
    let primary = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let primary_url = format!("http://{}", primary.local_addr().expect("addr"));
    let backup = Upstream::start().await;
    let blue = create_active(&app, "blue", &primary_url).await;
    create_active(&app, "green", &backup.url()).await;
    set_policy(
        &app,
        json!({"failover": [{"versions": ["blue"]}, {"versions": ["green"]}],
               "health_check": {"protocol": "tcp", "interval_seconds": 1, "timeout_seconds": 1,
                                "tolerated_failures": 0}}),
    )
    .await;
    // The primary accepts: blue alone serves.
    eventually(Duration::from_secs(10), "blue probed", || async {
        !health(&app, &blue).await["checked_at"].is_null()
    })
    .await;
    assert_eq!(served(&app, 30).await, ["blue"].map(String::from).into());
    // The primary's port closes: green takes over.
    drop(primary);
    wait_for_state(&app, &blue, "degraded").await;
    eventually(Duration::from_secs(10), "green takes over", || async {
        served(&app, 20).await == ["green"].map(String::from).into()
    })
    .await;
    // Deactivated: no longer checked, its health stopped.
    app.deactivate("acme", "billing", "prod", "blue")
        .await
        .assert_status(StatusCode::OK);
    wait_for_state(&app, &blue, "stopped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_keep_to_the_network_policy() {
    // The default policy: no internal addresses.
    let app = spawn_app().await;
    let upstream = Upstream::start().await;
    let id = create_active(&app, "v1", &upstream.url()).await;
    set_policy(
        &app,
        json!({"health_check": {"protocol": "http", "interval_seconds": 1, "timeout_seconds": 1,
                                "tolerated_failures": 0}}),
    )
    .await;
    wait_for_state(&app, &id, "degraded").await;
    let state = health(&app, &id).await;
    assert!(
        state["last_error"]
            .as_str()
            .expect("an error")
            .contains("refused"),
        "{state}"
    );
    assert_eq!(upstream.hits(), 0, "nothing was sent to a refused address");
    // healthy_or_all (the default) still serves it: nothing healthy, fail open.
    assert_eq!(served(&app, 5).await, ["v1"].map(String::from).into());
}
