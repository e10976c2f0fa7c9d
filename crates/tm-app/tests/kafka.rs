//! Change events relayed to Kafka: every event reaches the topic, each route's events in
//! the order they were committed, on the partition Kafka's own partitioner gives their
//! key; a broker frozen or killed delays events but loses none, never slows a write, and
//! shows in readiness as degraded — on a Kafka-protocol broker of the test's own (see
//! `tm_testing::KafkaBroker`).
//!
//! Runs when `TM_TEST_KAFKA_BROKER` names the broker's binary (the test command sets
//! it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tm_testing::{eventually, Consumed, KafkaBroker, TestApp};

const TOPIC: &str = "routes.events";

/// An application relaying to `broker`, with short time-outs so that an outage shows
/// within seconds.
async fn relaying_app(broker: &KafkaBroker) -> TestApp {
    TestApp::builder()
        .kafka(broker)
        .configure(|raw| {
            raw.events.kafka_topic = TOPIC.into();
            raw.events.kafka_partitions = 3;
            raw.events.kafka_timeout = Duration::from_secs(1);
            raw.telemetry.pool_sample_interval = Duration::from_millis(200);
            raw.jobs.job_poll_interval = Duration::from_millis(100);
        })
        .spawn()
        .await
}

/// A burst of changes to `services` services of tenant `acme`, written side by side:
/// each service's route is created, activated, re-weighted, deactivated and deleted,
/// `round` naming the versions. Every write must answer within a second.
async fn churn(app: &TestApp, services: usize, round: usize) {
    let writes = (0..services).map(|s| async move {
        let service = format!("svc-{s}");
        let version = format!("v{round}");
        let timed = |reply: tm_testing::Reply, started: Instant, what: &str| {
            assert!(
                reply.status.is_success(),
                "{what}: {} {:?}",
                reply.status,
                reply.json()
            );
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{what} took {:?}",
                started.elapsed()
            );
            reply
        };
        let started = Instant::now();
        let created = timed(
            app.create_route(tm_testing::route(
                "acme",
                &service,
                "prod",
                &version,
                "http://10.0.0.1",
            ))
            .await,
            started,
            "create",
        )
        .json();
        let id = created["id"].as_str().expect("id").to_owned();
        let started = Instant::now();
        timed(
            app.activate("acme", &service, "prod", &version).await,
            started,
            "activate",
        );
        let started = Instant::now();
        let patch = json!({"weight": 40});
        timed(
            app.request(Method::PATCH, &format!("/api/v1/routes/{id}"), Some(patch))
                .await,
            started,
            "update",
        );
        let started = Instant::now();
        timed(
            app.deactivate("acme", &service, "prod", &version).await,
            started,
            "deactivate",
        );
        let started = Instant::now();
        timed(
            app.request(Method::DELETE, &format!("/api/v1/routes/{id}"), None)
                .await,
            started,
            "delete",
        );
    });
    futures::future::join_all(writes).await;
}

/// The event ids of each ordering key, in the order given.
fn by_key<'a>(events: impl Iterator<Item = (&'a str, &'a str)>) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, id) in events {
        keys.entry(key.to_owned()).or_default().push(id.to_owned());
    }
    keys
}

/// An event's ordering key as the event API shows it: a route's service, or the key.
fn ordering_key(event: &Value) -> String {
    let subject = event["subject"].as_str().expect("subject");
    if event["type"].as_str().expect("type").starts_with("key.") {
        return subject.to_owned();
    }
    subject
        .rsplit_once('/')
        .map_or(subject, |(s, _)| s)
        .to_owned()
}

/// The records of the topic with repeats (the same event id again) left out, as a
/// consumer deduplicating by id would read them.
fn first_of_each(records: &[Consumed]) -> Vec<&Consumed> {
    let mut seen = HashSet::new();
    records
        .iter()
        .filter(|r| seen.insert(r.headers["ce_id"].clone()))
        .collect()
}

/// Checks that `records` hold every event of `events` (as the event API lists them, in
/// commit order), each ordering key's in commit order and on its one partition.
fn assert_relayed(records: &[Consumed], events: &[Value], partitions: usize) {
    let firsts = first_of_each(records);
    let got: HashSet<&str> = firsts.iter().map(|r| r.headers["ce_id"].as_str()).collect();
    let missing: Vec<&str> = events
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .filter(|id| !got.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events never reached Kafka: {missing:?}",
        missing.len()
    );

    // Each key's events, as committed and as read from its partition, match.
    let wanted: HashSet<&str> = events
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    let keys: Vec<String> = events.iter().map(ordering_key).collect();
    let committed = by_key(
        keys.iter()
            .map(String::as_str)
            .zip(events.iter().map(|e| e["id"].as_str().expect("id"))),
    );
    let read = by_key(
        firsts
            .iter()
            .filter(|r| wanted.contains(r.headers["ce_id"].as_str()))
            .map(|r| (r.key.as_str(), r.headers["ce_id"].as_str())),
    );
    assert_eq!(read, committed, "each key's events in commit order");

    let mut partition_of_key: HashMap<&str, i32> = HashMap::new();
    for record in records {
        // The value is the event itself, its id in the header.
        assert_eq!(
            record.value["id"].as_str(),
            Some(record.headers["ce_id"].as_str())
        );
        assert_eq!(
            record.value["type"].as_str(),
            Some(record.headers["ce_type"].as_str())
        );
        assert_eq!(
            record.headers["content-type"],
            "application/cloudevents+json"
        );
        assert_eq!(ordering_key(&record.value), record.key);
        let partition = *partition_of_key
            .entry(&record.key)
            .or_insert(record.partition);
        assert_eq!(
            partition, record.partition,
            "{} on one partition",
            record.key
        );
        assert_eq!(
            usize::try_from(record.partition).expect("partition"),
            tm_kafka::partition_of(record.key.as_bytes(), partitions),
            "{} where Kafka's partitioner puts it",
            record.key
        );
    }
}

/// Waits until every one of `events` is on the topic; returns the topic's records.
async fn holding(broker: &KafkaBroker, events: &[Value], within: Duration) -> Vec<Consumed> {
    let started = Instant::now();
    loop {
        let records = broker.records(TOPIC).await;
        let got: HashSet<&str> = records
            .iter()
            .map(|r| r.headers["ce_id"].as_str())
            .collect();
        let missing = events
            .iter()
            .filter(|e| !got.contains(e["id"].as_str().expect("id")))
            .count();
        if missing == 0 {
            return records;
        }
        assert!(
            started.elapsed() < within,
            "{missing} events still not on the topic after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every event the event API lists is on the topic; returns the records.
async fn relayed(app: &TestApp, broker: &KafkaBroker, within: Duration) -> Vec<Consumed> {
    let events = app.all_events(None, None, 1000).await;
    holding(broker, &events, within).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_kafka_in_commit_order_per_route() {
    let Some(broker) = KafkaBroker::start() else {
        return;
    };
    let app = relaying_app(&broker).await;
    app.create_key("reader", Some("acme")).await;
    for round in 0..3 {
        churn(&app, 12, round).await;
    }
    let records = relayed(&app, &broker, Duration::from_secs(30)).await;
    let events = app.all_events(None, None, 1000).await;
    // 12 services × 5 changes × 3 rounds, and the reader key's creation.
    assert_eq!(events.len(), 12 * 5 * 3 + 1);
    assert_eq!(
        events.iter().filter(|e| e["type"] == "key.created").count(),
        1
    );
    assert_relayed(&records, &events, 3);

    let scrape = app.scrape().await;
    let published: f64 = scrape
        .lines()
        .filter(|line| line.starts_with("events_published_total{sink=\"kafka\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(published >= events.len() as f64, "{published} published");
    eventually(
        Duration::from_secs(5),
        "the lag sampled as none",
        || async { app.metric_value("outbox_lag_seconds{sink=\"kafka\"}").await == 0.0 },
    )
    .await;
    let (status, body) = app.ready().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["checks"]["events"]["status"], "healthy", "{body}");
    assert_eq!(body["status"], "ready", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_delays_events_loses_none_and_never_slows_a_write() {
    let Some(mut broker) = KafkaBroker::start() else {
        return;
    };
    let app = relaying_app(&broker).await;
    churn(&app, 8, 0).await;
    relayed(&app, &broker, Duration::from_secs(30)).await;

    // Frozen: requests hang; each is bounded by the time-out, writes go on at once.
    broker.signal("STOP");
    churn(&app, 8, 1).await;
    eventually(
        Duration::from_secs(10),
        "readiness degraded by events",
        || async {
            let (status, body) = app.ready().await;
            status == StatusCode::OK
                && body["status"] == "degraded"
                && body["checks"]["events"]["sinks"]["kafka"]["status"] == "degraded"
        },
    )
    .await;
    assert!(
        app.metric_value("events_failed_total{sink=\"kafka\",type=\"route.created\"}")
            .await
            > 0.0
    );
    churn(&app, 8, 2).await;
    broker.signal("CONT");
    let records = relayed(&app, &broker, Duration::from_secs(30)).await;
    let events = app.all_events(None, None, 1000).await;
    assert_eq!(events.len(), 8 * 5 * 3);
    assert_relayed(&records, &events, 3);
    eventually(Duration::from_secs(10), "ready again", || async {
        app.ready().await.1["status"] == "ready"
    })
    .await;

    // Killed: connections refused. A broker started again has lost its topics: the
    // relay makes the topic again and goes on from where it stood.
    let before_kill = events.len();
    broker.kill();
    churn(&app, 8, 3).await;
    eventually(
        Duration::from_secs(10),
        "readiness degraded by events",
        || async { app.ready().await.1["status"] == "degraded" },
    )
    .await;
    broker.restart();
    let after: Vec<Value> = {
        let events = app.all_events(None, None, 1000).await;
        events[before_kill..].to_vec()
    };
    assert_eq!(after.len(), 8 * 5);
    let records = holding(&broker, &after, Duration::from_secs(30)).await;
    assert_relayed(&records, &after, 3);
    eventually(Duration::from_secs(10), "ready again", || async {
        app.ready().await.1["status"] == "ready"
    })
    .await;
}

#[tokio::test]
async fn without_brokers_the_events_check_covers_webhooks_only() {
    let app = TestApp::builder().spawn().await;
    app.create_route(tm_testing::route(
        "acme", "billing", "prod", "v1", "http://a",
    ))
    .await
    .assert_status(StatusCode::CREATED);
    let (status, body) = app.ready().await;
    assert_eq!(status, StatusCode::OK);
    let sinks = body["checks"]["events"]["sinks"]
        .as_object()
        .expect("sinks");
    assert_eq!(sinks.keys().collect::<Vec<_>>(), ["webhook"], "{body}");
}
