//! Change events: how long the outbox keeps them, and the Kafka topic they are relayed
//! to when brokers are configured.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::render::Lines;

/// The event settings as read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct EventsRaw {
    /// How long the outbox keeps an event: how far behind a reader of the event API may
    /// fall.
    #[serde(with = "humantime_serde")]
    pub events_retention: Duration,
    /// Kafka bootstrap brokers, `host:port` separated by commas; unset, events are
    /// only kept for the event API and webhooks.
    pub kafka_brokers: Option<String>,
    /// The topic events are published to.
    pub kafka_topic: String,
    /// The topic's partitions and replication factor when it is created (it is
    /// created if missing).
    pub kafka_partitions: u32,
    pub kafka_replication_factor: u16,
    /// How long one request to the brokers may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub kafka_timeout: Duration,
}

impl Default for EventsRaw {
    fn default() -> Self {
        Self {
            events_retention: Duration::from_secs(7 * 24 * 3600),
            kafka_brokers: None,
            kafka_topic: "traffic-manager.events".into(),
            kafka_partitions: 6,
            kafka_replication_factor: 1,
            kafka_timeout: Duration::from_secs(10),
        }
    }
}

/// Change events.
#[derive(Clone, Debug)]
pub struct EventsConfig {
    /// Events older than this are deleted.
    pub retention: Duration,
    /// Where events are published, if anywhere.
    pub kafka: Option<KafkaConfig>,
}

/// The Kafka sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    pub brokers: Vec<String>,
    pub topic: String,
    pub partitions: u32,
    pub replication_factor: u16,
    pub timeout: Duration,
}

/// Whether `broker` reads as `host:port`.
fn broker_address(broker: &str) -> Result<(), String> {
    let (host, port) = broker
        .rsplit_once(':')
        .ok_or_else(|| format!("{broker:?} is not host:port"))?;
    if host.is_empty() || host.contains('/') {
        return Err(format!("{broker:?} is not host:port"));
    }
    port.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .map(|_| ())
        .ok_or_else(|| format!("{broker:?} has no valid port"))
}

/// Kafka's rule for topic names.
fn topic_name(topic: &str) -> bool {
    (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl EventsRaw {
    pub(crate) fn check(self, problems: &mut Problems) -> EventsConfig {
        problems.positive(&[
            ("events_retention", self.events_retention),
            ("kafka_timeout", self.kafka_timeout),
        ]);
        problems.at_least_one(&[
            ("kafka_partitions", self.kafka_partitions.into()),
            (
                "kafka_replication_factor",
                self.kafka_replication_factor.into(),
            ),
        ]);
        if i32::try_from(self.kafka_partitions).is_err() {
            problems.add("kafka_partitions", "must be at most 2147483647");
        }
        if !topic_name(&self.kafka_topic) {
            problems.add(
                "kafka_topic",
                "must be 1 to 249 characters of letters, digits, '.', '_' and '-'",
            );
        }
        let brokers: Vec<String> =
            crate::comma_separated(self.kafka_brokers.as_deref().unwrap_or_default())
                .map(str::to_owned)
                .collect();
        for broker in &brokers {
            if let Err(message) = broker_address(broker) {
                problems.add("kafka_brokers", message);
            }
        }
        let kafka = if brokers.is_empty() {
            None
        } else {
            Some(KafkaConfig {
                brokers,
                topic: self.kafka_topic,
                partitions: self.kafka_partitions,
                replication_factor: self.kafka_replication_factor,
                timeout: self.kafka_timeout,
            })
        };
        EventsConfig {
            retention: self.events_retention,
            kafka,
        }
    }
}

impl EventsConfig {
    /// The event lines of `check-config`.
    pub(crate) fn render(&self, out: &mut Lines) {
        out.duration("events_retention", self.retention);
        match &self.kafka {
            Some(kafka) => {
                out.quoted("kafka_brokers", kafka.brokers.join(","));
                out.quoted("kafka_topic", &kafka.topic);
                out.plain("kafka_partitions", kafka.partitions);
                out.plain("kafka_replication_factor", kafka.replication_factor);
                out.duration("kafka_timeout", kafka.timeout);
            }
            None => out.unset("kafka_brokers"),
        }
    }
}
