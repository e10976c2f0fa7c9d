//! The Kafka sink of change events. Each event is one record on the events topic: its
//! value the event in the CloudEvents structured JSON form, its key the event's ordering
//! key (`tenant/service/env` for a route), its headers the event's id and type. Records
//! of one ordering key go to one partition, chosen as Kafka's own default partitioner
//! does (murmur2 of the key), so they are read in the order they were published.
//!
//! Every request to the brokers is bounded by the configured time-out: a broker that is
//! down or frozen makes [`KafkaSink::publish`] fail in bounded time, never hang. After a
//! failure the client is made again on the next call, and the topic is created again if
//! it went missing.

mod partitioner;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use rskafka::BackoffConfig;
use tm_config::KafkaConfig;
use tm_domain::Event;

pub use partitioner::{murmur2, partition_of};

/// The `content-type` header of every record.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// Records per produce request stay under this many bytes (the brokers' default
/// `message.max.bytes` is about 1 MiB).
const MAX_REQUEST_BYTES: usize = 512 * 1024;

/// Why events were not published.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("the brokers did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("the Kafka client failed")]
    Client(#[from] ClientError),
    #[error("topic {0} has no partitions")]
    NoPartitions(String),
}

/// Publishes events to the configured topic.
pub struct KafkaSink {
    config: KafkaConfig,
    /// The client and a client per partition, made on first use and again after a
    /// failure.
    connected: tokio::sync::Mutex<Option<Connected>>,
}

struct Connected {
    /// By partition number.
    partitions: Vec<PartitionClient>,
    _client: Client,
}

/// `work`, failed with [`KafkaError::TimedOut`] if it takes longer than `limit`.
async fn bounded<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, KafkaError>>,
) -> Result<T, KafkaError> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or(Err(KafkaError::TimedOut(limit)))
}

/// An event to publish, with the W3C trace context headers (`traceparent`, `tracestate`)
/// of the span that made it, if it was traced.
#[derive(Clone, Copy, Debug)]
pub struct Outgoing<'a> {
    pub event: &'a Event,
    pub trace: &'a [(&'static str, String)],
}

/// The record of `outgoing`: the event, with its trace context among its headers.
pub fn record_of(outgoing: Outgoing<'_>) -> Record {
    let Outgoing { event, trace } = outgoing;
    let mut headers = BTreeMap::from([
        ("content-type".to_owned(), CONTENT_TYPE.as_bytes().to_vec()),
        ("ce_id".to_owned(), event.id.to_string().into_bytes()),
        (
            "ce_type".to_owned(),
            event.kind.as_str().as_bytes().to_vec(),
        ),
    ]);
    for (name, value) in trace {
        headers.insert((*name).to_owned(), value.as_bytes().to_vec());
    }
    Record {
        key: Some(event.ordering_key().as_bytes().to_vec()),
        value: Some(serde_json::to_vec(event).expect("an event serializes")),
        headers,
        timestamp: event.time,
    }
}

impl KafkaSink {
    pub fn new(config: KafkaConfig) -> Self {
        Self {
            config,
            connected: tokio::sync::Mutex::new(None),
        }
    }

    /// The topic events go to.
    pub fn topic(&self) -> &str {
        &self.config.topic
    }

    /// Publishes `events`, keeping their order within each ordering key; `Ok` once the
    /// brokers have acknowledged every one. On an error some may have been published
    /// (publishing them again repeats them: consumers tell repeats by the event id).
    pub async fn publish(&self, events: &[Outgoing<'_>]) -> Result<(), KafkaError> {
        let mut connected = self.connected.lock().await;
        let clients = match connected.take() {
            Some(clients) => clients,
            None => self.connect().await?,
        };
        let produced = self.produce(&clients.partitions, events).await;
        if produced.is_ok() {
            *connected = Some(clients);
        }
        produced
    }

    /// Connects, creates the topic if it is missing and makes a client per partition.
    async fn connect(&self) -> Result<Connected, KafkaError> {
        let limit = self.config.timeout;
        bounded(limit, async {
            let client = ClientBuilder::new(self.config.brokers.clone())
                .client_id("traffic-manager")
                .backoff_config(BackoffConfig {
                    deadline: Some(limit),
                    ..BackoffConfig::default()
                })
                .build()
                .await?;
            let topic = &self.config.topic;
            let mut count = self.partition_count(&client).await?;
            if count == 0 {
                self.create_topic(&client).await?;
                count = self.partition_count(&client).await?;
            }
            if count == 0 {
                return Err(KafkaError::NoPartitions(topic.clone()));
            }
            let mut partitions = Vec::with_capacity(count);
            for partition in 0..i32::try_from(count).unwrap_or(i32::MAX) {
                partitions.push(
                    client
                        .partition_client(topic.as_str(), partition, UnknownTopicHandling::Retry)
                        .await?,
                );
            }
            Ok(Connected {
                partitions,
                _client: client,
            })
        })
        .await
    }

    /// The topic's partitions (0: it does not exist).
    async fn partition_count(&self, client: &Client) -> Result<usize, KafkaError> {
        let topics = client.list_topics().await?;
        Ok(topics
            .iter()
            .find(|t| t.name == self.config.topic)
            .map_or(0, |t| t.partitions.len()))
    }

    async fn create_topic(&self, client: &Client) -> Result<(), KafkaError> {
        let partitions = i32::try_from(self.config.partitions).unwrap_or(i32::MAX);
        let replication = i16::try_from(self.config.replication_factor).unwrap_or(i16::MAX);
        let timeout_ms = i32::try_from(self.config.timeout.as_millis()).unwrap_or(i32::MAX);
        match client
            .controller_client()?
            .create_topic(
                self.config.topic.as_str(),
                partitions,
                replication,
                timeout_ms,
            )
            .await
        {
            Ok(()) => {
                tracing::info!(topic = %self.config.topic, partitions, replication, "Kafka topic created");
                Ok(())
            }
            // Another instance made it meanwhile.
            Err(ClientError::ServerError {
                protocol_error: ProtocolError::TopicAlreadyExists,
                ..
            }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Produces each partition's records in order (requests of one partition one after
    /// another, partitions side by side), each request within the time-out.
    async fn produce(
        &self,
        partitions: &[PartitionClient],
        events: &[Outgoing<'_>],
    ) -> Result<(), KafkaError> {
        let mut by_partition: BTreeMap<usize, Vec<Record>> = BTreeMap::new();
        for &outgoing in events {
            let key = outgoing.event.ordering_key();
            let partition = partition_of(key.as_bytes(), partitions.len());
            by_partition
                .entry(partition)
                .or_default()
                .push(record_of(outgoing));
        }
        let limit = self.config.timeout;
        let each = by_partition.into_iter().map(|(partition, records)| {
            let client = &partitions[partition];
            async move {
                for request in requests(records) {
                    bounded(limit, async {
                        client
                            .produce(request, Compression::NoCompression)
                            .await
                            .map_err(KafkaError::from)
                    })
                    .await?;
                }
                Ok::<(), KafkaError>(())
            }
        });
        futures::future::try_join_all(each).await.map(|_| ())
    }
}

/// `records` split, in order, into requests of at most [`MAX_REQUEST_BYTES`] (a larger
/// record alone in its own).
fn requests(records: Vec<Record>) -> Vec<Vec<Record>> {
    let mut requests: Vec<Vec<Record>> = Vec::new();
    let mut bytes = 0;
    for record in records {
        let size = record.approximate_size();
        match requests.last_mut() {
            Some(request) if bytes + size <= MAX_REQUEST_BYTES => {
                bytes += size;
                request.push(record);
            }
            _ => {
                bytes = size;
                requests.push(vec![record]);
            }
        }
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(bytes: usize) -> Record {
        Record {
            key: None,
            value: Some(vec![b'x'; bytes]),
            headers: BTreeMap::new(),
            timestamp: chrono::Utc::now(),
        }
    }

    #[test]
    fn requests_keep_the_order_and_stay_under_the_bound() {
        let sizes = [
            100,
            MAX_REQUEST_BYTES / 2,
            MAX_REQUEST_BYTES / 2,
            10,
            MAX_REQUEST_BYTES * 2,
            5,
        ];
        let records: Vec<Record> = sizes.iter().map(|s| record(*s)).collect();
        let requests = requests(records);
        let split: Vec<Vec<usize>> = requests
            .iter()
            .map(|r| {
                r.iter()
                    .map(|r| r.value.as_ref().map_or(0, Vec::len))
                    .collect()
            })
            .collect();
        assert_eq!(
            split,
            [
                vec![100, MAX_REQUEST_BYTES / 2],
                vec![MAX_REQUEST_BYTES / 2, 10],
                vec![MAX_REQUEST_BYTES * 2],
                vec![5]
            ]
        );
    }
}
