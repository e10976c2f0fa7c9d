//! Fills a store with generated routes for benchmarks, through the store (not the API),
//! and prints one reader key per tenant, a `<tenant> <key>` line each, `bench` first.
//!
//! ```sh
//! cargo run --release -p tm-app --example seed -- --routes 100000 --data-dir /tmp/bench
//! cargo run --release -p tm-app --example seed -- --routes 100000 --database-url postgres://…
//! ```
//! Every route is active. `bench/svc-0/prod` has two versions (v1 weight 70, v2 weight
//! 30); the rest, route `i` being `t<i % 100>/svc-<i>/prod`, are spread over 100
//! tenants with one version each.

use std::time::Instant;

use tm_config::{Config, RawConfig};
use tm_domain::{
    ApiKey, EnvName, Grant, KeyId, NewRoute, Route, RouteId, RouteKey, ServiceName, TenantId,
    UpstreamUrl, Version, Weight,
};
use tm_store::{Actor, KeyRecord, StoreCounters};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn route(tenant: &str, service: &str, version: &str, weight: u8, url: &str) -> Route {
    NewRoute {
        key: RouteKey {
            tenant: TenantId::parse(tenant).expect("valid"),
            service: ServiceName::parse(service).expect("valid"),
            env: EnvName::parse("prod").expect("valid"),
            version: Version::parse(version).expect("valid"),
        },
        url: UpstreamUrl::parse(url).expect("valid"),
        active: true,
        weight: Weight::parse(i64::from(weight)).expect("valid"),
    }
    .into_route(RouteId::generate(), tm_domain::now())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = arg("--routes").map_or(Ok(1000), |n| n.parse())?;
    let raw = RawConfig {
        process: tm_config::ProcessRaw {
            data_dir: arg("--data-dir").map_or_else(|| "./data".into(), Into::into),
            ..Default::default()
        },
        storage: tm_config::StorageRaw {
            database_url: arg("--database-url"),
            sqlite_synchronous: "normal".into(),
            ..Default::default()
        },
        ..RawConfig::default()
    };
    let config = Config::try_from(raw)?;
    let store = tm_store::connect(&config.storage, &config.pool, StoreCounters::default()).await?;
    let started = Instant::now();

    let mut routes = vec![
        route("bench", "svc-0", "v1", 70, "http://10.0.0.1:8080"),
        route("bench", "svc-0", "v2", 30, "http://10.0.0.2:8080"),
    ];
    let actor = Actor::new("seed");
    let mut stored = 0;
    for i in 2..count.max(2) {
        let url = format!(
            "http://10.{}.{}.{}:8080/v1",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        );
        routes.push(route(
            &format!("t{}", i % 100),
            &format!("svc-{i}"),
            "v1",
            100,
            &url,
        ));
        if routes.len() == 50_000 {
            store.import_routes(&routes, &actor).await?;
            stored += routes.len();
            routes.clear();
        }
    }
    store.import_routes(&routes, &actor).await?;
    stored += routes.len();

    let tenants = std::iter::once("bench".to_owned())
        .chain((0..count.saturating_sub(2).min(100)).map(|t| format!("t{t}")));
    let mut keys = Vec::new();
    for tenant in tenants {
        let key = ApiKey::new(KeyId::generate(), rand::random());
        let grant = Grant::new(tm_domain::Role::Reader, Some(TenantId::parse(&tenant)?))?;
        store
            .create_key(
                &KeyRecord::new(&key, format!("{tenant} reader"), grant),
                &actor,
                None,
            )
            .await?;
        keys.push(format!("{tenant} {}", key.expose()));
    }
    store.close().await;
    eprintln!(
        "seeded {stored} routes in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!("{}", keys.join("\n"));
    Ok(())
}
