//! The client SDK against the binary, across a crash and a restart of the server.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::process::Child;
use traffic_manager_client::{
    CachedAnswer, Client, Error, NewRoute, Resolver, ResolverOptions, RouteKey, ServiceKey,
};

const BIN: &str = env!("CARGO_BIN_EXE_traffic-manager");
const ADMIN_KEY: &str = "sdk-test-admin-key-0123456789abcdef";

/// The server on `port`, its data in `data_dir`.
async fn serve(data_dir: &Path, port: u16) -> Child {
    let mut cmd = tm_testing::binary_command(BIN, data_dir, ADMIN_KEY);
    cmd.env("TM_LISTEN", format!("127.0.0.1:{port}"));
    tm_testing::start_listening(cmd, "serve").await.0
}

fn billing() -> ServiceKey {
    ServiceKey::new("acme", "billing", "prod")
}

/// Resolves until `done` holds of the outcome, for at most 10 s.
async fn until(
    resolver: &Resolver,
    what: &str,
    done: impl Fn(&Result<CachedAnswer, Error>) -> bool,
) -> Result<CachedAnswer, Error> {
    let started = Instant::now();
    loop {
        let outcome = resolver.resolve(&billing(), Some("user-1")).await;
        if done(&outcome) {
            return outcome;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: {outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_answers_through_a_crash_says_how_stale_and_recovers_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = tm_testing::free_port();
    let mut server = serve(dir.path(), port).await;
    let client = Client::builder(&format!("http://127.0.0.1:{port}"), ADMIN_KEY)
        .timeout(Duration::from_secs(2))
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .build()
        .expect("client");
    for version in ["v1", "v2"] {
        client
            .create_route(&NewRoute {
                tenant: "acme".into(),
                service: "billing".into(),
                env: "prod".into(),
                version: version.into(),
                url: format!("http://10.0.0.{}:8080", &version[1..]),
                active: true,
                weight: Some(50),
            })
            .await
            .expect("created");
    }
    let bound = Duration::from_millis(1500);
    let resolver = client.resolver(ResolverOptions {
        max_staleness: bound,
        retry: (Duration::from_millis(50), Duration::from_millis(200)),
        ..ResolverOptions::default()
    });
    let fresh = resolver
        .resolve(&billing(), Some("user-1"))
        .await
        .expect("fresh");
    assert_eq!(fresh.stale_for, None);

    // Killed: the last known answer goes on, marked stale, until the bound.
    server.kill().await.expect("killed");
    let stale = until(&resolver, "stale answers", |o| {
        o.as_ref().is_ok_and(|a| a.stale_for.is_some())
    })
    .await
    .expect("answered");
    assert_eq!(stale.resolved, fresh.resolved);
    assert!(
        client.resolve(&billing(), None, None).await.is_err(),
        "the server is down"
    );
    let refused = until(&resolver, "refused past the bound", |o| {
        matches!(o, Err(Error::Stale { .. }))
    })
    .await
    .unwrap_err();
    let Error::Stale { age, .. } = refused else {
        unreachable!()
    };
    assert!(age > bound);

    // Started again on its data: fresh answers, and changes made since are followed.
    let _server = serve(dir.path(), port).await;
    let again = until(&resolver, "fresh again", |o| {
        o.as_ref().is_ok_and(|a| a.stale_for.is_none())
    })
    .await
    .expect("answered");
    assert_eq!(again.resolved, fresh.resolved);
    let other = if fresh.resolved.version == "v1" {
        "v2"
    } else {
        "v1"
    };
    let chosen = RouteKey {
        tenant: "acme".into(),
        service: "billing".into(),
        env: "prod".into(),
        version: fresh.resolved.version.clone(),
    };
    client.deactivate(&chosen).await.expect("deactivated");
    until(&resolver, "the change followed", |o| {
        o.as_ref().is_ok_and(|a| a.resolved.version == other)
    })
    .await
    .expect("answered");
}
