//! A Kafka-protocol broker of a test's own: tansu, keeping its topics in memory. It runs
//! when `TM_TEST_KAFKA_BROKER` names the binary (the test command builds it from
//! crates.io when missing); it is stopped by its PID (SIGKILL: a broker told to stop
//! politely keeps its port for a while) when dropped. A stopped broker started again
//! has lost its topics.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use rskafka::client::partition::UnknownTopicHandling;
use rskafka::client::ClientBuilder;
use serde_json::Value;

use crate::process::Server;
use crate::{eventually_blocking, free_port};

fn broker_binary() -> Option<PathBuf> {
    std::env::var_os("TM_TEST_KAFKA_BROKER").map(PathBuf::from)
}

/// One broker on a loopback port.
pub struct KafkaBroker {
    process: Server,
    /// The loopback port it listens on.
    pub port: u16,
}

/// A record read back from the broker.
#[derive(Clone, Debug)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    /// The record's key.
    pub key: String,
    /// Its headers, as text.
    pub headers: BTreeMap<String, String>,
    /// Its value, parsed as JSON.
    pub value: Value,
}

impl KafkaBroker {
    /// Starts a broker; `None` when `TM_TEST_KAFKA_BROKER` is not set.
    pub fn start() -> Option<KafkaBroker> {
        broker_binary()?;
        let mut broker = KafkaBroker {
            process: Server::default(),
            port: free_port(),
        };
        broker.spawn();
        Some(broker)
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let what = format!("a Kafka broker listening on port {}", self.port);
        eventually_blocking(Duration::from_secs(30), &what, || {
            // A broker that could not bind yet (the port is still held) has exited:
            // start it again.
            if !self.process.is_running() || self.process.exited() {
                self.process.kill();
                self.process.set(
                    Command::new(broker_binary().expect("binary"))
                        .arg("broker")
                        .args(["--listener-url", &url, "--advertised-listener-url", &url])
                        .args(["--storage-engine", "memory://tansu/"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("the broker starts"),
                );
            }
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    /// `127.0.0.1:<port>`, as `TM_KAFKA_BROKERS` names it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port (with no topics).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the broker.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    /// Every record of `topic`, partition by partition, in offset order; none if the
    /// topic does not exist (yet).
    pub async fn records(&self, topic: &str) -> Vec<Consumed> {
        let read = async {
            let client = ClientBuilder::new(vec![self.address()]).build().await?;
            let topics = client.list_topics().await?;
            let Some(found) = topics.into_iter().find(|t| t.name == topic) else {
                return Ok(Vec::new());
            };
            let mut consumed = Vec::new();
            for partition in found.partitions {
                let reader = client
                    .partition_client(topic, partition, UnknownTopicHandling::Retry)
                    .await?;
                let mut offset = 0;
                loop {
                    let (records, high_watermark) =
                        reader.fetch_records(offset, 1..10_000_000, 100).await?;
                    for record in records {
                        offset = record.offset + 1;
                        let r = record.record;
                        consumed.push(Consumed {
                            partition,
                            offset: record.offset,
                            key: String::from_utf8_lossy(r.key.as_deref().unwrap_or_default())
                                .into_owned(),
                            headers: r
                                .headers
                                .into_iter()
                                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                                .collect(),
                            value: serde_json::from_slice(r.value.as_deref().unwrap_or_default())
                                .unwrap_or(Value::Null),
                        });
                    }
                    if offset >= high_watermark {
                        break;
                    }
                }
            }
            Ok::<_, rskafka::client::error::Error>(consumed)
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("reading the topic back within 20 s")
            .expect("reading the topic back")
    }
}
