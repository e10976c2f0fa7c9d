//! Resolves one service from the cache once a second and prints each answer, with its
//! generation and how stale it is: stop the server and start it again to watch the
//! cache carry on.
//!
//!     cargo run -p traffic-manager-client --example follow -- \
//!         http://127.0.0.1:8080 "$KEY" acme billing prod [sticky-key]

use std::time::Duration;

use traffic_manager_client::{Client, ResolverOptions, ServiceKey};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, key, tenant, service, env, rest @ ..] = args.as_slice() else {
        eprintln!("usage: follow <base url> <key> <tenant> <service> <env> [sticky key]");
        std::process::exit(2);
    };
    let client = Client::new(base, key)?;
    let resolver = client.resolver(ResolverOptions::default());
    let wanted = ServiceKey::new(tenant, service, env);
    loop {
        match resolver
            .resolve(&wanted, rest.first().map(String::as_str))
            .await
        {
            Ok(answer) => println!(
                "{} {} (generation {:?}, stale for {:?})",
                answer.resolved.version, answer.resolved.url, answer.generation, answer.stale_for
            ),
            Err(error) => println!("{error}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
