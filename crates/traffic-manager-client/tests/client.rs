//! The client against a real server (the application, started in-process on loopback).

use std::time::Duration;

use tm_testing::{spawn_app, spawn_app_with, TestApp};
use traffic_manager_client::{
    Client, Error, NewRoute, ResolverOptions, RouteKey, RouteQuery, ServiceKey,
};

fn client_of(app: &TestApp) -> Client {
    Client::new(&format!("http://{}", app.addr), &app.admin_key).expect("client")
}

fn new_route(version: &str, weight: u8, active: bool) -> NewRoute {
    NewRoute {
        tenant: "acme".into(),
        service: "billing".into(),
        env: "prod".into(),
        version: version.into(),
        url: format!("http://10.0.0.{}:8080", version.trim_start_matches('v')),
        active,
        weight: Some(weight),
    }
}

/// Resolves answered 304, as the server counts them.
const RESOLVE_304: &str =
    "http_requests_total{endpoint=\"/api/v1/routes/resolve\",method=\"GET\",status=\"304\"}";

/// The value of `series` in `app`'s metrics now (0 when absent).
async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app
        .client
        .get(format!("http://{}/metrics", app.addr))
        .send()
        .await
        .expect("scraped")
        .text()
        .await
        .expect("text");
    tm_testing::metric_value(&text, series).unwrap_or(0.0)
}

fn billing() -> ServiceKey {
    ServiceKey::new("acme", "billing", "prod")
}

#[tokio::test]
async fn the_typed_api_creates_reads_changes_and_deletes_routes() {
    let app = spawn_app().await;
    let client = client_of(&app);
    let created = client
        .create_route(&new_route("v1", 100, false))
        .await
        .expect("created");
    assert_eq!((created.revision, created.active), (1, false));
    assert_eq!(client.get_route(&created.id).await.expect("read"), created);

    let key = RouteKey {
        tenant: "acme".into(),
        service: "billing".into(),
        env: "prod".into(),
        version: "v1".into(),
    };
    let active = client.activate(&key).await.expect("activated");
    assert!(active.active);
    // Activating an active route is a no-op, so a repeat is harmless.
    assert_eq!(
        client.activate(&key).await.expect("again").revision,
        active.revision
    );

    let weighed = client
        .set_weight(&active.id, 40, active.revision)
        .await
        .expect("weighed");
    assert_eq!(weighed.weight, 40);
    let stale = client
        .set_weight(&active.id, 60, active.revision)
        .await
        .unwrap_err();
    assert_eq!(stale.status(), Some(412), "{stale}");

    let resolved = client
        .resolve(&billing(), None, Some("user-1"))
        .await
        .expect("resolved");
    assert_eq!(
        (resolved.version.as_str(), resolved.url.as_str()),
        ("v1", "http://10.0.0.1:8080")
    );

    let page = client
        .list_routes(&RouteQuery {
            tenant: Some("acme".into()),
            ..RouteQuery::default()
        })
        .await
        .expect("listed");
    assert_eq!(page.items, vec![weighed.clone()]);

    // The server's own problems come through, fields and all.
    let invalid = client
        .create_route(&NewRoute {
            url: "ftp://x".into(),
            ..new_route("v2", 1, false)
        })
        .await
        .unwrap_err();
    match &invalid {
        Error::Api {
            status: 422,
            problem,
        } => assert!(
            problem.errors.iter().any(|f| f.field == "url"),
            "{problem:?}"
        ),
        other => panic!("a 422 with the field: {other:?}"),
    }
    client.delete_route(&weighed.id).await.expect("deleted");
    assert!(client
        .get_route(&weighed.id)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(client
        .resolve(&billing(), None, None)
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn the_cache_picks_as_the_server_does_and_follows_changes() {
    let app = spawn_app().await;
    let client = client_of(&app);
    for (version, weight) in [("v1", 70), ("v2", 20), ("v3", 10)] {
        client
            .create_route(&new_route(version, weight, true))
            .await
            .expect("created");
    }
    let resolver = client.resolver(ResolverOptions::default());
    for i in 0..300 {
        let key = format!("user-{i}");
        let cached = resolver
            .resolve(&billing(), Some(&key))
            .await
            .expect("cached");
        let served = client
            .resolve(&billing(), None, Some(&key))
            .await
            .expect("served");
        assert_eq!(cached.resolved, served, "{key}");
        assert_eq!(cached.stale_for, None);
    }
    let v2 = resolver
        .resolve_version(&billing(), "v2")
        .await
        .expect("v2");
    assert_eq!(v2.resolved.url, "http://10.0.0.2:8080");

    // A change reaches the cache through the watch, without a resolve asking for it.
    let before = resolver
        .resolve(&billing(), None)
        .await
        .expect("cached")
        .generation;
    for version in ["v1", "v3"] {
        let key = RouteKey {
            tenant: "acme".into(),
            service: "billing".into(),
            env: "prod".into(),
            version: version.into(),
        };
        client.deactivate(&key).await.expect("deactivated");
    }
    let started = std::time::Instant::now();
    loop {
        let cached = resolver
            .resolve(&billing(), Some("user-1"))
            .await
            .expect("cached");
        if cached.resolved.version == "v2" {
            assert!(cached.generation.expect("watched") > before.expect("watched"));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the change never reached the cache"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..50 {
        let answer = resolver
            .resolve(&billing(), Some(&format!("k{i}")))
            .await
            .expect("cached");
        assert_eq!(answer.resolved.version, "v2");
    }
    assert_eq!(resolver.watched(), vec![billing()]);
    // A service with nothing active is a 404, as on the server.
    let none = ServiceKey::new("acme", "nothing", "prod");
    assert!(resolver
        .resolve(&none, None)
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn without_a_watch_slot_the_cache_revalidates_resolve_answers_by_etag() {
    // One watch slot, held by another client: the resolver's watch is refused (503).
    let app = spawn_app_with(|raw| {
        raw.guards.watch_max_in_flight = 1;
        raw.http.resolve_max_age = Duration::from_secs(1);
    })
    .await;
    let client = client_of(&app);
    for (version, weight) in [("v1", 50), ("v2", 50)] {
        client
            .create_route(&new_route(version, weight, true))
            .await
            .expect("created");
    }
    let generation = client
        .watch(&billing(), None, Duration::from_secs(1))
        .await
        .expect("state")
        .generation;
    let holder = client.clone();
    let held = tokio::spawn(async move {
        holder
            .watch(&billing(), Some(generation), Duration::from_secs(60))
            .await
    });
    tm_testing::eventually(Duration::from_secs(10), "the slot is taken", || async {
        metric(&app, "watches_held").await >= 1.0
    })
    .await;

    let resolver = client.resolver(ResolverOptions::default());
    let first = resolver
        .resolve(&billing(), Some("user-1"))
        .await
        .expect("answered");
    assert_eq!(
        first.generation, None,
        "answered by resolve, not by a watch"
    );
    let served = client
        .resolve(&billing(), None, Some("user-1"))
        .await
        .expect("served");
    assert_eq!(first.resolved, served);

    // Past max-age the answer is revalidated: 304 while it holds, the new one after a
    // change.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        resolver
            .resolve(&billing(), Some("user-1"))
            .await
            .expect("answered")
            .resolved,
        served
    );
    assert!(
        metric(&app, RESOLVE_304).await >= 1.0,
        "revalidated with a 304"
    );
    let key = RouteKey {
        tenant: "acme".into(),
        service: "billing".into(),
        env: "prod".into(),
        version: served.version.clone(),
    };
    client.deactivate(&key).await.expect("deactivated");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = resolver
        .resolve(&billing(), Some("user-1"))
        .await
        .expect("answered");
    assert_ne!(after.resolved.version, served.version);
    held.abort();
}

#[tokio::test]
async fn history_rollback_keys_and_the_dead_letter_queue_are_typed_too() {
    let app = spawn_app().await;
    let client = client_of(&app);
    client
        .create_route(&new_route("v1", 100, true))
        .await
        .expect("v1");
    client
        .create_route(&new_route("v2", 100, false))
        .await
        .expect("v2");
    let v = |version: &str| RouteKey {
        tenant: "acme".into(),
        service: "billing".into(),
        env: "prod".into(),
        version: version.into(),
    };
    client.activate(&v("v2")).await.expect("green on");
    client.deactivate(&v("v1")).await.expect("blue off");

    let rolled = client.rollback(&billing()).await.expect("rolled back");
    assert_eq!(rolled.active_versions, vec!["v1", "v2"]);
    let page = client
        .audit(&billing(), None, Some(100))
        .await
        .expect("audit");
    let actions: Vec<&str> = page.items.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        &actions[..4],
        ["create", "create", "activate", "deactivate"]
    );
    assert!(actions[4..].iter().all(|a| *a == "rollback"), "{actions:?}");
    let deactivation = &page.items[3];
    assert_eq!(deactivation.changes["active"].to, serde_json::json!(false));
    let later = client
        .audit(&billing(), Some(page.items[1].id), None)
        .await
        .expect("audit");
    assert_eq!(later.items.first().map(|e| e.id), Some(page.items[2].id));

    let created = client
        .create_key("ci-reader", "reader", Some("acme"))
        .await
        .expect("key");
    assert!(created.key.len() > 20);
    let keys = client.list_keys().await.expect("keys");
    assert!(keys
        .iter()
        .any(|k| k.id == created.id && k.role == "reader"));
    // The new key works, for what a reader may do.
    let reader = Client::new(&format!("http://{}", app.addr), &created.key).expect("client");
    reader
        .resolve(&billing(), None, None)
        .await
        .expect("a reader resolves");
    assert_eq!(
        reader.rollback(&billing()).await.unwrap_err().status(),
        Some(403)
    );
    client.revoke_key(&created.id).await.expect("revoked");
    assert_eq!(
        reader
            .resolve(&billing(), None, None)
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );

    let dead = client.dead_jobs(None, Some(10), None).await.expect("dlq");
    assert!(dead.items.is_empty());
    let explained = client
        .explain(
            &billing(),
            &traffic_manager_client::Pick::Key("user-1".into()),
        )
        .await
        .expect("explained");
    assert!(explained.is_object());
}
