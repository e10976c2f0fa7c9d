//! Measures change events end to end: how fast the relay drains a backlog into Kafka,
//! and, at a steady write rate, how long an event takes from its change to a Kafka
//! consumer and to a webhook receiver.
//!
//! ```sh
//! TM_TEST_KAFKA_BROKER=target/tools/tansu/bin/tansu \
//!   cargo run --release -p tm-app --example events -- [--database-url postgres://…] \
//!   [--backlog 20000] [--rate 200] [--seconds 20]
//! ```
//!
//! The registry runs in this process with `TM_PROFILE=prod`, a tansu broker (topics in
//! memory) and a webhook receiver of its own on loopback. Two things differ from
//! production: the write budget is raised so that the backlog is written at the
//! store's pace, and no log is written (no logger is set up). Phase 1
//! writes `--backlog` routes with Kafka not configured, then starts again with it: the
//! time until every event is acknowledged by the broker is the relay's catch-up rate.
//! Phase 2 writes `--rate` routes a second for `--seconds`; a consumer long-polls every
//! partition and the receiver notes each delivery: the lag is the time from the
//! event's `time` (set when the change was made) to its arrival.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rskafka::client::partition::UnknownTopicHandling;
use rskafka::client::ClientBuilder;
use serde_json::{json, Value};
use tm_app::Application;
use tm_config::{Config, RawConfig};
use tm_testing::{KafkaBroker, WebhookReceiver};
use tokio_util::sync::CancellationToken;

const ADMIN_KEY: &str = "events-bench-admin-key-0123456789abcdef";
const TOPIC: &str = "traffic-manager.events";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn config(data_dir: &std::path::Path, database_url: Option<&str>, kafka: Option<&str>) -> Config {
    let mut raw = RawConfig::default();
    raw.process.profile = "prod".into();
    raw.process.listen = "127.0.0.1:0".into();
    raw.process.data_dir = data_dir.to_path_buf();
    raw.process.bootstrap_admin_key = Some(ADMIN_KEY.into());
    raw.storage.database_url = database_url.map(str::to_owned);
    raw.limits.rate_limit_write = "10000000/s".into();
    raw.events.kafka_brokers = kafka.map(str::to_owned);
    raw.webhooks.webhook_allow_networks = Some("127.0.0.0/8".into());
    Config::try_from(raw).expect("valid configuration")
}

struct Running {
    base: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(config: Config) -> Running {
    let app = Application::build(config).await.expect("starts");
    let base = format!("http://{}", app.local_addr());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let _ = app.run_until(stop).await;
    });
    Running {
        base,
        shutdown,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Creates route `n` of tenant `bench`.
async fn write(client: &reqwest::Client, base: &str, n: usize) {
    let reply = client
        .post(format!("{base}/api/v1/routes"))
        .bearer_auth(ADMIN_KEY)
        .json(
            &json!({"tenant": "bench", "service": format!("svc-{n}"), "env": "prod",
                      "version": "v1", "url": "http://10.0.0.1:8080"}),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(reply.status(), 201, "write {n}");
}

/// The sum of a counter family's series whose labels start with `labels`.
async fn counter(client: &reqwest::Client, base: &str, prefix: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn millis_since(time: chrono::DateTime<chrono::Utc>, at: SystemTime) -> f64 {
    let at: chrono::DateTime<chrono::Utc> = at.into();
    (at - time).num_microseconds().unwrap_or(0) as f64 / 1000.0
}

/// Follows every partition of the topic from its end, noting each record's lag.
fn consume(broker: String, lags: Arc<Mutex<Vec<f64>>>, stop: CancellationToken) {
    tokio::spawn(async move {
        let client = ClientBuilder::new(vec![broker])
            .build()
            .await
            .expect("client");
        let topic = client
            .list_topics()
            .await
            .expect("topics")
            .into_iter()
            .find(|t| t.name == TOPIC)
            .expect("the topic exists after phase 1");
        for partition in topic.partitions {
            let reader = client
                .partition_client(TOPIC, partition, UnknownTopicHandling::Retry)
                .await
                .expect("partition");
            let (lags, stop) = (lags.clone(), stop.clone());
            tokio::spawn(async move {
                let (_, mut offset) = reader.fetch_records(0, 1..1, 0).await.expect("fetch");
                while !stop.is_cancelled() {
                    let (records, _) = reader
                        .fetch_records(offset, 1..10_000_000, 10)
                        .await
                        .expect("fetch");
                    let now = SystemTime::now();
                    for record in &records {
                        offset = record.offset + 1;
                        let lag = millis_since(record.record.timestamp, now);
                        lags.lock().expect("lock").push(lag);
                    }
                    if records.is_empty() {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            });
        }
    });
}

/// Phase 1: `backlog` routes written without Kafka (at what rate), then the time the
/// relay takes to drain them into it; returns the registry, running with Kafka.
async fn drain_backlog(
    dir: &std::path::Path,
    database_url: Option<&str>,
    broker: &KafkaBroker,
    backlog: usize,
) -> (Running, f64, Duration) {
    let client = reqwest::Client::new();
    let app = start(config(dir, database_url, None)).await;
    let written = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let (client, base, next) = (client.clone(), app.base.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= backlog {
                        return;
                    }
                    write(&client, &base, n).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let write_rate = backlog as f64 / written.elapsed().as_secs_f64();
    app.stop().await;
    let app = start(config(dir, database_url, Some(&broker.address()))).await;
    let started = Instant::now();
    let published = r#"events_published_total{sink="kafka""#;
    while counter(&client, &app.base, published).await < backlog as f64 {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the backlog never drained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (app, write_rate, started.elapsed())
}

/// Phase 2: `rate` writes a second for `seconds`, numbered from `first`; the sorted lags
/// (ms) of the Kafka consumer and of the webhook receiver.
async fn steady(
    app: &Running,
    broker: &KafkaBroker,
    first: usize,
    rate: usize,
    seconds: u64,
) -> (Vec<f64>, Vec<f64>) {
    let client = reqwest::Client::new();
    let receiver = WebhookReceiver::start().await;
    let hook: Value = client
        .post(format!("{}/api/v1/webhooks", app.base))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"tenant": "bench", "url": receiver.url("/in")}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    receiver.set_secret(hook["secret"].as_str().expect("secret"));
    let lags = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    consume(broker.address(), lags.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = rate * usize::try_from(seconds).expect("seconds");
    let mut tick =
        tokio::time::interval(Duration::from_secs(1) / u32::try_from(rate).expect("rate"));
    let mut writes = tokio::task::JoinSet::new();
    for n in 0..total {
        tick.tick().await;
        let (client, base) = (client.clone(), app.base.clone());
        writes.spawn(async move { write(&client, &base, first + n).await });
    }
    while writes.join_next().await.is_some() {}
    let settle = Instant::now();
    while (lags.lock().expect("lock").len() < total || receiver.received().len() < total)
        && settle.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let received = receiver.received();
    assert!(
        received.iter().all(|r| r.verified),
        "every delivery verifies"
    );
    let mut kafka: Vec<f64> = lags.lock().expect("lock").clone();
    let mut webhook: Vec<f64> = received
        .iter()
        .filter_map(|r| {
            let time = chrono::DateTime::parse_from_rfc3339(r.body["time"].as_str()?).ok()?;
            Some(millis_since(time.into(), r.at))
        })
        .collect();
    kafka.sort_by(f64::total_cmp);
    webhook.sort_by(f64::total_cmp);
    (kafka, webhook)
}

#[tokio::main]
async fn main() {
    let database_url = arg("--database-url");
    let backlog: usize = arg("--backlog").map_or(20_000, |v| v.parse().expect("a number"));
    let rate: usize = arg("--rate").map_or(200, |v| v.parse().expect("a number"));
    let seconds: u64 = arg("--seconds").map_or(20, |v| v.parse().expect("a number"));
    let broker = KafkaBroker::start().expect("TM_TEST_KAFKA_BROKER names the tansu binary");
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = if database_url.is_some() {
        "postgresql"
    } else {
        "sqlite"
    };
    let (app, write_rate, drain) =
        drain_backlog(dir.path(), database_url.as_deref(), &broker, backlog).await;
    let (kafka, webhook) = steady(&app, &broker, backlog, rate, seconds).await;
    app.stop().await;

    println!("| backend | backlog | written/s | drained into Kafka in | events/s relayed |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| {backend} | {backlog} | {write_rate:.0} | {:.2} s | {:.0} |",
        drain.as_secs_f64(),
        backlog as f64 / drain.as_secs_f64()
    );
    println!();
    println!("| backend | rate | sink | received | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    for (sink, lags) in [("kafka", &kafka), ("webhook", &webhook)] {
        println!(
            "| {backend} | {rate}/s | {sink} | {} of {} | {:.1} | {:.1} | {:.1} |",
            lags.len(),
            rate * usize::try_from(seconds).expect("seconds"),
            percentile(lags, 50.0),
            percentile(lags, 99.0),
            lags.last().copied().unwrap_or(f64::NAN)
        );
    }
}
