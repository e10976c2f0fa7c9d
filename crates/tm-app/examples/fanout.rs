//! Two benchmarks against a running server (see `bench/run.sh`, modes `watch` and
//! `probes`), talking to it over loopback only.
//!
//! `fanout watch --url U --admin-key K --pid P [--watchers N] [--rounds R]`: N long polls
//! of one service held at once (spread over ten reader keys of its tenant, as clients
//! would be), then a write that changes the service; for each round, the time from the
//! write's request to each watcher's answer (p50, p99, max), the write's own latency,
//! and the server's RSS with the watchers held against before.
//!
//! `fanout probes --url U --admin-key K --pid P --upstream T [--routes N] [--seconds S]`:
//! N active routes (in services of 20 versions) whose policy checks them every second
//! over HTTP against the upstream T; after a minute of settling, the probes made per
//! second and the server's CPU over S seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn number(name: &str, default: u64) -> u64 {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_mib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// User and system CPU seconds the process has used.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

async fn metric(client: &reqwest::Client, url: &str, series: &str) -> f64 {
    let text = match client.get(format!("{url}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return 0.0,
    };
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    path: &str,
    body: Value,
) -> Result<Value, Error> {
    let reply = client
        .post(format!("{url}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await?;
    let status = reply.status();
    let body: Value = reply.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(format!("{path}: {status} {body}").into());
    }
    Ok(body)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// Ten reader keys of acme, and acme/billing/prod with one active version: the keys and
/// the service's generation.
async fn set_up_watch(
    client: &reqwest::Client,
    url: &str,
    admin: &str,
) -> Result<(Vec<String>, u64), Error> {
    let mut keys = Vec::new();
    for i in 0..10 {
        let body = json!({"name": format!("watcher {i}"), "role": "reader", "tenant": "acme"});
        let made = post(client, url, admin, "/api/v1/keys", body).await?;
        keys.push(made["key"].as_str().ok_or("a key")?.to_owned());
    }
    let route = json!({"tenant": "acme", "service": "billing", "env": "prod",
        "version": "v0", "url": "http://10.0.0.1:8080", "active": true});
    post(client, url, admin, "/api/v1/routes", route).await?;
    let first: Value = client
        .get(format!("{url}/api/v1/watch?{SERVICE}"))
        .bearer_auth(admin)
        .send()
        .await?
        .json()
        .await?;
    Ok((keys, first["generation"].as_u64().ok_or("a generation")?))
}

const SERVICE: &str = "tenant=acme&service=billing&env=prod";

/// When each watcher got each round's change: `[round][watcher]`.
type Answered = Arc<Vec<std::sync::Mutex<Vec<Option<Instant>>>>>;

/// Watcher `i`: a long poll after another, recording when each round's change arrived.
async fn watcher(
    (client, url, key): (reqwest::Client, String, String),
    (i, rounds, mut since): (usize, usize, u64),
    answered: Answered,
    failures: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut round = 0;
    while round < rounds {
        let reply = client
            .get(format!(
                "{url}/api/v1/watch?{SERVICE}&since={since}&wait=60"
            ))
            .bearer_auth(&key)
            .send()
            .await;
        let at = Instant::now();
        let state: Value = match reply {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
            _ => {
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if state["changed"] == true {
            since = state["generation"].as_u64().unwrap_or(since);
            answered[round].lock().expect("lock")[i] = Some(at);
            round += 1;
        }
    }
}

/// Waits for every watcher to be held, makes the round's write, waits for the answers,
/// and prints the round's line.
async fn measure_round(
    (client, url, admin, pid): (&reqwest::Client, &str, &str, &str),
    round: usize,
    watchers: usize,
    answered: &Answered,
) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while (metric(client, url, "watches_held").await as usize) < watchers
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = metric(client, url, "watches_held").await;
    let rss = rss_mib(pid);
    let sent = Instant::now();
    let route = json!({"tenant": "acme", "service": "billing", "env": "prod",
        "version": format!("v{}", round + 1), "url": "http://10.0.0.2:8080", "active": true});
    post(client, url, admin, "/api/v1/routes", route).await?;
    let acked = sent.elapsed();
    let wait_until = Instant::now() + Duration::from_secs(60);
    while !answered[round]
        .lock()
        .expect("lock")
        .iter()
        .all(Option::is_some)
        && Instant::now() < wait_until
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut ms: Vec<f64> = answered[round]
        .lock()
        .expect("lock")
        .iter()
        .flatten()
        .map(|at| at.saturating_duration_since(sent).as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
        round + 1,
        held,
        acked.as_secs_f64() * 1000.0,
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(0.0),
        rss
    );
    if ms.len() < watchers {
        println!("({} of {watchers} watchers answered)", ms.len());
    }
    Ok(())
}

async fn watch(url: String, admin: String, pid: String) -> Result<(), Error> {
    let watchers = number("--watchers", 5000) as usize;
    let rounds = number("--rounds", 5) as usize;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .timeout(Duration::from_secs(90))
        .build()?;
    let (keys, start) = set_up_watch(&client, &url, &admin).await?;
    let rss_before = rss_mib(&pid);
    let answered: Answered = Arc::new(
        (0..rounds)
            .map(|_| std::sync::Mutex::new(vec![None; watchers]))
            .collect(),
    );
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = (0..watchers)
        .map(|i| {
            let connection = (client.clone(), url.clone(), keys[i % keys.len()].clone());
            tokio::spawn(watcher(
                connection,
                (i, rounds, start),
                answered.clone(),
                failures.clone(),
            ))
        })
        .collect();
    println!("| round | watchers held | write ms | notified p50 ms | p99 ms | max ms | server RSS MiB (before: {rss_before:.0}) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for round in 0..rounds {
        measure_round((&client, &url, &admin, &pid), round, watchers, &answered).await?;
    }
    for task in tasks {
        task.abort();
    }
    println!(
        "watch requests that failed and were sent again: {}",
        failures.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}

async fn probes(url: String, admin: String, pid: String) -> Result<(), Error> {
    let routes = number("--routes", 1000);
    let seconds = number("--seconds", 30);
    let upstream = arg("--upstream").ok_or("--upstream")?;
    let client = reqwest::Client::new();
    let services = routes.div_ceil(20);
    for s in 0..services {
        let service = format!("svc-{s}");
        for v in 0..20.min(routes - s * 20) {
            post(
                &client,
                &url,
                &admin,
                "/api/v1/routes",
                json!({"tenant": "acme",
                "service": service, "env": "prod", "version": format!("v{v}"),
                "url": format!("{upstream}/{service}/v{v}"), "active": true}),
            )
            .await?;
        }
        let reply = client
            .put(format!("{url}/api/v1/services/policy"))
            .bearer_auth(&admin)
            .json(&json!({"tenant": "acme", "service": service, "env": "prod",
                "health_check": {"protocol": "http", "path": "/", "interval_seconds": 1,
                                 "timeout_seconds": 1, "tolerated_failures": 2}}))
            .send()
            .await?;
        if !reply.status().is_success() {
            return Err(format!("policy: {}", reply.status()).into());
        }
    }
    // Every shard's slice picks its routes up within a few seconds; a minute lets the
    // probes spread over their interval.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (probes_before, cpu_before, started) = (
        metric(&client, &url, "health_probes_total").await,
        cpu_seconds(&pid),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let probes = metric(&client, &url, "health_probes_total").await - probes_before;
    let failed = metric(&client, &url, "health_probes_total{outcome=\"failed\"}").await;
    let cpu = cpu_seconds(&pid) - cpu_before;
    println!("| checked routes | probes/s | expected/s | failed (total) | server CPU % of one core | RSS MiB |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {routes} | {:.0} | {routes} | {failed:.0} | {:.1} | {:.0} |",
        probes / elapsed,
        cpu / elapsed * 100.0,
        rss_mib(&pid)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let url = arg("--url").ok_or("--url")?;
    let admin = arg("--admin-key").ok_or("--admin-key")?;
    let pid = arg("--pid").ok_or("--pid")?;
    match mode.as_str() {
        "watch" => watch(url, admin, pid).await,
        "probes" => probes(url, admin, pid).await,
        other => Err(format!("unknown mode {other:?}: watch or probes").into()),
    }
}
