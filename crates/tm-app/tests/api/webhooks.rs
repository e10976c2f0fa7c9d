//! Webhook subscriptions and their deliveries: the secret shown once and kept sealed,
//! subscriptions managed within a tenant, every delivery signed (verified here by the
//! Standard Webhooks reference library), internal addresses refused, failures retried
//! then dead-lettered and replayed, no database connection held while a receiver
//! stalls, and secrets that outlive a key rotation.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use tm_testing::*;

/// Deliveries to loopback allowed, fast retries.
fn delivering(raw: &mut tm_config::RawConfig) {
    raw.webhooks.webhook_allow_networks = Some("127.0.0.0/8".into());
    raw.webhooks.webhook_timeout = Duration::from_secs(2);
    raw.jobs.job_poll_interval = Duration::from_millis(50);
    raw.jobs.job_backoff_base = Duration::from_millis(20);
    raw.jobs.job_backoff_max = Duration::from_millis(100);
    raw.jobs.job_max_attempts = 3;
}

async fn subscribe(app: &TestApp, body: Value) -> Value {
    let reply = app
        .request(Method::POST, "/api/v1/webhooks", Some(body))
        .await;
    reply.assert_status(StatusCode::CREATED);
    reply.json()
}

/// Waits until `receiver` has `count` requests; returns them.
async fn receives(receiver: &WebhookReceiver, count: usize, within: Duration) -> Vec<Received> {
    eventually(within, &format!("{count} requests received"), || async {
        receiver.received().len() >= count
    })
    .await;
    receiver.received()
}

/// The first page of the dead-letter queue at `path`, once it is not empty.
async fn dead_letters(app: &TestApp, path: &str) -> Value {
    eventually(
        Duration::from_secs(10),
        "a delivery dead-lettered",
        || async {
            let page = app.get(path).await.json();
            !page["items"].as_array().expect("items").is_empty()
        },
    )
    .await;
    app.get(path).await.json()
}

#[tokio::test]
async fn a_subscription_shows_its_secret_once_and_is_managed_within_its_tenant() {
    let app = spawn_app().await;
    let created = app
        .request(
            Method::POST,
            "/api/v1/webhooks",
            Some(
                json!({"tenant": "acme", "url": "https://hooks.example.com/in",
                        "event_types": ["route.activated"], "description": "deploys"}),
            ),
        )
        .await;
    created.assert_status(StatusCode::CREATED);
    let body = created.json();
    let id = body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        created.header("location"),
        Some(format!("/api/v1/webhooks/{id}").as_str())
    );
    let secret = body["secret"].as_str().expect("secret");
    assert!(
        secret.starts_with("whsec_") && secret.len() == 50,
        "{secret}"
    );
    assert_eq!(body["event_types"], json!(["route.activated"]));

    // Never shown again.
    let got = app.get(&format!("/api/v1/webhooks/{id}")).await;
    got.assert_status(StatusCode::OK);
    assert!(got.json().get("secret").is_none());
    assert_eq!(got.json()["url"], "https://hooks.example.com/in");

    // A tenant admin sees and manages its own tenant's only.
    let globex = app.create_key("tenant_admin", Some("globex")).await;
    let acme = app.create_key("tenant_admin", Some("acme")).await;
    let app = &app;
    let as_key = |key: &str, method: Method, path: String, body: Option<Value>| {
        let key = key.to_owned();
        async move { app.request_as(Some(&key), method, &path, body).await }
    };
    as_key(&globex, Method::GET, format!("/api/v1/webhooks/{id}"), None)
        .await
        .problem(StatusCode::NOT_FOUND);
    as_key(
        &globex,
        Method::DELETE,
        format!("/api/v1/webhooks/{id}"),
        None,
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    as_key(
        &globex,
        Method::POST,
        "/api/v1/webhooks".into(),
        Some(json!({"tenant": "acme", "url": "https://hooks.example.com/x"})),
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    let listed = as_key(&globex, Method::GET, "/api/v1/webhooks".into(), None).await;
    assert_eq!(listed.json()["items"], json!([]));
    let reader = app.create_key("reader", Some("acme")).await;
    as_key(&reader, Method::GET, "/api/v1/webhooks".into(), None)
        .await
        .problem(StatusCode::FORBIDDEN);

    // Pages, in id order.
    for n in 0..3 {
        as_key(
            &acme,
            Method::POST,
            "/api/v1/webhooks".into(),
            Some(json!({"tenant": "acme", "url": format!("https://hooks.example.com/{n}")})),
        )
        .await
        .assert_status(StatusCode::CREATED);
    }
    let first = app.get("/api/v1/webhooks?tenant=acme&limit=3").await.json();
    assert_eq!(first["items"].as_array().expect("items").len(), 3);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = app
        .get(&format!(
            "/api/v1/webhooks?tenant=acme&limit=3&cursor={cursor}"
        ))
        .await
        .json();
    assert_eq!(second["items"].as_array().expect("items").len(), 1);
    assert_eq!(second["next_cursor"], Value::Null);

    as_key(
        &acme,
        Method::DELETE,
        format!("/api/v1/webhooks/{id}"),
        None,
    )
    .await
    .assert_status(StatusCode::NO_CONTENT);
    app.get(&format!("/api/v1/webhooks/{id}"))
        .await
        .problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_subscriptions_are_refused_and_a_tenant_holds_a_bounded_number() {
    let app = spawn_app_with(|raw| raw.webhooks.max_webhooks_per_tenant = 2).await;
    for (body, field) in [
        (json!({"url": "https://hooks.example.com"}), "tenant"),
        (json!({"tenant": "acme"}), "url"),
        (
            json!({"tenant": "acme", "url": "ftp://hooks.example.com"}),
            "url",
        ),
        (
            json!({"tenant": "acme", "url": "https://user:pw@hooks.example.com"}),
            "url",
        ),
        (
            json!({"tenant": "acme", "url": "http://127.0.0.1:9/"}),
            "url",
        ),
        (
            json!({"tenant": "acme", "url": "http://169.254.169.254/latest"}),
            "url",
        ),
        (json!({"tenant": "acme", "url": "http://[::1]/"}), "url"),
        (json!({"tenant": "acme", "url": "http://10.1.2.3/"}), "url"),
        (
            json!({"tenant": "acme", "url": "https://h.example.com", "event_types": ["route.exploded"]}),
            "event_types",
        ),
        (
            json!({"tenant": "acme", "url": "https://h.example.com", "event_types": ["route.created", "route.created"]}),
            "event_types",
        ),
        (
            json!({"tenant": "acme", "url": "https://h.example.com", "description": "x".repeat(201)}),
            "description",
        ),
    ] {
        let problem = app
            .request(Method::POST, "/api/v1/webhooks", Some(body.clone()))
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| e["field"].as_str().expect("field"))
            .collect();
        assert_eq!(fields, [field], "{body}");
    }
    for n in 0..2 {
        subscribe(
            &app,
            json!({"tenant": "acme", "url": format!("https://h.example.com/{n}")}),
        )
        .await;
    }
    let problem = app
        .request(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"tenant": "acme", "url": "https://h.example.com/3"})),
        )
        .await
        .problem(StatusCode::CONFLICT);
    assert!(problem["type"]
        .as_str()
        .expect("type")
        .ends_with("too-many-webhooks"));
    // Another tenant has room of its own.
    subscribe(
        &app,
        json!({"tenant": "globex", "url": "https://h.example.com/g"}),
    )
    .await;
    // The secret cannot be replayed, so an Idempotency-Key is refused.
    let (status, _, _) = app
        .send(
            &app.admin_key,
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"tenant": "initech", "url": "https://h.example.com/i"})),
            &[("Idempotency-Key", "once")],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn deliveries_are_signed_and_carry_the_tenants_events_of_the_types_asked() {
    let receiver = WebhookReceiver::start().await;
    let app = spawn_app_with(delivering).await;
    let hook = subscribe(
        &app,
        json!({"tenant": "acme", "url": receiver.url("/hooks/acme"),
               "event_types": ["route.created", "route.activated"]}),
    )
    .await;
    receiver.set_secret(hook["secret"].as_str().expect("secret"));
    app.create("acme", "billing", "prod", "v1", "http://10.0.0.1")
        .await;
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    app.deactivate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    // Another tenant's events are not this subscription's.
    app.create("globex", "billing", "prod", "v1", "http://10.0.0.2")
        .await;
    let got = receives(&receiver, 2, Duration::from_secs(10)).await;
    // Nothing else arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = if receiver.received().len() > got.len() {
        receiver.received()
    } else {
        got
    };
    assert_eq!(got.len(), 2, "{got:?}");
    let events: Vec<Value> = app
        .all_events(None, Some("acme"), 100)
        .await
        .into_iter()
        .filter(|e| e["type"] == "route.created" || e["type"] == "route.activated")
        .collect();
    // Deliveries are jobs of their own, run side by side: any order.
    let mut got = got;
    got.sort_by(|a, b| a.id.cmp(&b.id));
    for (received, event) in got.iter().zip(&events) {
        assert!(
            received.verified,
            "the reference library verifies the signature"
        );
        assert_eq!(received.id, event["id"].as_str().expect("id"));
        assert_eq!(&received.body, event);
    }
    assert_eq!(
        app.metric_value(r#"events_published_total{sink="webhook",type="route.activated"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn the_secret_is_never_readable_from_the_database() {
    let app = spawn_app().await;
    let hook = subscribe(
        &app,
        json!({"tenant": "acme", "url": "https://h.example.com/in"}),
    )
    .await;
    let secret = hook["secret"].as_str().expect("secret").to_owned();
    let key_part = secret.trim_start_matches("whsec_").to_owned();
    let record = app
        .store
        .get_webhook(hook["id"].as_str().expect("id").parse().expect("an id"))
        .await
        .expect("read")
        .expect("stored");
    assert!(record.sealed_secret.starts_with("v1:"));
    assert!(!record.sealed_secret.contains(&key_part));
    match app.pg_connection().await {
        // PostgreSQL: what any reader of the table gets.
        Some(mut conn) => {
            let rows: Vec<(String,)> =
                sqlx::query_as("SELECT row_to_json(w)::text FROM webhooks w")
                    .fetch_all(&mut conn)
                    .await
                    .expect("rows");
            assert_eq!(rows.len(), 1);
            assert!(!rows[0].0.contains(&key_part), "{}", rows[0].0);
        }
        // SQLite: every byte of the database and its write-ahead log.
        None => {
            let mut found = Vec::new();
            for entry in std::fs::read_dir(app.data_dir()).expect("data dir") {
                let path = entry.expect("entry").path();
                let bytes = std::fs::read(&path).expect("read");
                if bytes
                    .windows(key_part.len())
                    .any(|w| w == key_part.as_bytes())
                {
                    found.push(path);
                }
            }
            assert!(found.is_empty(), "the secret is readable in {found:?}");
        }
    }
}

#[tokio::test]
async fn internal_addresses_are_refused_at_delivery_unless_allowed() {
    let receiver = WebhookReceiver::start().await;
    // No allow list: `localhost` passes the form check, and its addresses are refused
    // when the delivery resolves it.
    let app = spawn_app_with(|raw| {
        delivering(raw);
        raw.webhooks.webhook_allow_networks = None;
    })
    .await;
    let url = format!("http://localhost:{}/hooks", receiver.addr.port());
    subscribe(&app, json!({"tenant": "acme", "url": url})).await;
    app.create("acme", "billing", "prod", "v1", "http://10.0.0.1")
        .await;
    let dead = dead_letters(&app, "/api/v1/dlq").await;
    let job = &dead["items"][0];
    assert_eq!(job["kind"], "webhook.deliver");
    assert_eq!(job["attempts"], 1, "a refusal is not retried");
    assert!(
        job["last_error"]
            .as_str()
            .expect("error")
            .contains("refused by the network policy"),
        "{job}"
    );
    assert!(receiver.received().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn failed_deliveries_are_retried_then_dead_lettered_and_replayed() {
    let receiver = WebhookReceiver::start().await;
    let app = spawn_app_with(delivering).await;
    let hook = subscribe(
        &app,
        json!({"tenant": "acme", "url": receiver.url("/in"),
                                      "event_types": ["route.created"]}),
    )
    .await;
    receiver.set_secret(hook["secret"].as_str().expect("secret"));

    // Two 503s, then taken: three attempts, one event, the same id each time.
    receiver.answer(Answer::FailFirst(2));
    app.create("acme", "billing", "prod", "v1", "http://10.0.0.1")
        .await;
    let got = receives(&receiver, 3, Duration::from_secs(10)).await;
    assert!(got.iter().all(|r| r.id == got[0].id && r.verified));
    assert_eq!(
        app.metric_value(r#"events_failed_total{sink="webhook",type="route.created"}"#)
            .await,
        2.0
    );

    // A 400 is final: dead at once, with why.
    receiver.answer(Answer::Status(400));
    app.create("acme", "billing", "prod", "v2", "http://10.0.0.1")
        .await;
    let dead = dead_letters(&app, "/api/v1/dlq?tenant=acme").await;
    let job = dead["items"][0].clone();
    assert_eq!(job["attempts"], 1);
    assert!(job["last_error"]
        .as_str()
        .expect("error")
        .contains("status 400"));
    assert_eq!(app.metric_value("dlq_size").await.max(1.0), 1.0);

    // Fixed receiver, replayed job: delivered, the DLQ empty again.
    receiver.answer(Answer::Accept);
    let before = receiver.received().len();
    app.request(
        Method::POST,
        &format!("/api/v1/dlq/{}/replay", job["id"].as_str().expect("id")),
        None,
    )
    .await
    .assert_status(StatusCode::NO_CONTENT);
    let got = receives(&receiver, before + 1, Duration::from_secs(10)).await;
    assert_eq!(got.last().expect("one").body["data"]["version"], "v2");
    let empty = app.get("/api/v1/dlq?tenant=acme").await.json();
    assert_eq!(empty["items"], json!([]));
}

#[tokio::test]
async fn a_stalling_receiver_holds_no_database_connection() {
    let receiver = WebhookReceiver::start().await;
    receiver.answer(Answer::Stall);
    let app = spawn_app_with(|raw| {
        delivering(raw);
        raw.webhooks.webhook_timeout = Duration::from_secs(20);
        raw.jobs.job_concurrency = 8;
    })
    .await;
    subscribe(&app, json!({"tenant": "acme", "url": receiver.url("/in")})).await;
    for n in 0..8 {
        app.create("acme", &format!("svc-{n}"), "prod", "v1", "http://10.0.0.1")
            .await;
    }
    // Seven deliveries stall (the relay holds the eighth slot of the runner).
    receives(&receiver, 7, Duration::from_secs(10)).await;
    let mut most_in_use = 0;
    for _ in 0..20 {
        let in_use: u32 = app.store.pool_stats().iter().map(|p| p.in_use).sum();
        most_in_use = most_in_use.max(in_use);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        most_in_use <= 2,
        "{most_in_use} connections in use while 7 deliveries wait on the network"
    );
    // And the API is as quick as ever meanwhile.
    let started = Instant::now();
    app.create("acme", "after", "prod", "v1", "http://10.0.0.1")
        .await;
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn secrets_sealed_under_a_rotated_out_key_are_sealed_again() {
    let receiver = WebhookReceiver::start().await;
    let old = tm_secrets::SecretKeys::generate_spec();
    let new = tm_secrets::SecretKeys::generate_spec();
    let (old_id, new_id) = (
        old.split(':').next().expect("id").to_owned(),
        new.split(':').next().expect("id").to_owned(),
    );
    let builder = TestApp::builder().configure(delivering);
    let with_keys =
        |spec: String| move |raw: &mut tm_config::RawConfig| raw.webhooks.secrets_key = Some(spec);
    let app = builder.spawn_with(with_keys(old.clone())).await;
    let hook = subscribe(&app, json!({"tenant": "acme", "url": receiver.url("/in")})).await;
    receiver.set_secret(hook["secret"].as_str().expect("secret"));
    let id = hook["id"].as_str().expect("id").parse().expect("an id");
    let sealed = |app: &TestApp| {
        let store = app.store.clone();
        async move {
            store
                .get_webhook(id)
                .await
                .expect("read")
                .expect("stored")
                .sealed_secret
        }
    };
    assert!(sealed(&app).await.starts_with(&format!("v1:{old_id}:")));

    // The new key first, the old one still there: re-sealed at start.
    let app = builder
        .restart(app, with_keys(format!("{new},{old}")))
        .await;
    eventually(
        Duration::from_secs(10),
        "re-sealed under the new key",
        || async { sealed(&app).await.starts_with(&format!("v1:{new_id}:")) },
    )
    .await;

    // The old key gone: deliveries still sign with the same secret.
    let app = builder.restart(app, with_keys(new.clone())).await;
    app.create("acme", "billing", "prod", "v1", "http://10.0.0.1")
        .await;
    let got = receives(&receiver, 1, Duration::from_secs(10)).await;
    assert!(got[0].verified);
}

#[tokio::test]
async fn a_url_is_kept_as_given_up_to_its_longest() {
    let app = spawn_app().await;
    // 2048 bytes with no path: its parsed form would end in a `/`, one byte too many.
    let host = format!("{}.example.com", vec!["a".repeat(63); 32].join("."));
    let url = format!("https://{}", &host[host.len() + 8 - 2048..]);
    assert_eq!(url.len(), 2048);
    let hook = subscribe(&app, json!({"tenant": "acme", "url": url})).await;
    assert_eq!(hook["url"], url);
    let too_long = format!("{url}/");
    app.request(
        Method::POST,
        "/api/v1/webhooks",
        Some(json!({"tenant": "acme", "url": too_long})),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
}
