//! The dead-letter producer: a record that cannot become an event is copied, key and
//! value untouched, to the dead-letter topic with headers saying where it came from and
//! what is wrong with it. Only then may the consumer move past it.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

/// Header naming the topic the record was read from.
pub const HEADER_TOPIC: &str = "dlq.source.topic";
/// Header with the source partition, in decimal.
pub const HEADER_PARTITION: &str = "dlq.source.partition";
/// Header with the source offset, in decimal.
pub const HEADER_OFFSET: &str = "dlq.source.offset";
/// Header with the reason the record was refused.
pub const HEADER_ERROR: &str = "dlq.error";

/// One delivery attempt may take this long before it counts as failed and is retried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A refused record, as the dead-letter topic receives it.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Source key, copied as is.
    pub key: Option<&'a [u8]>,
    /// Source value, copied as is.
    pub payload: Option<&'a [u8]>,
    /// Why it was refused.
    pub error: &'a str,
}

/// Produces refused records to the dead-letter topic.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    /// A producer for `topic` on `brokers`.
    pub fn new(brokers: &str, topic: &str) -> Result<Self, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("client.id", "realtime-bridge-dlq")
            // Idempotence keeps librdkafka's own retries from writing a dead letter twice.
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", ATTEMPT_TIMEOUT.as_millis().to_string())
            .set("linger.ms", "0")
            .create()?;
        Ok(DeadLetters {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// The dead-letter topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// One attempt to produce `letter`, waiting for the broker's acknowledgement.
    pub async fn send(&self, letter: &DeadLetter<'_>) -> Result<(), KafkaError> {
        let (partition, offset) = (letter.partition.to_string(), letter.offset.to_string());
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_TOPIC,
                value: Some(letter.topic),
            })
            .insert(Header {
                key: HEADER_PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: HEADER_OFFSET,
                value: Some(&offset),
            })
            .insert(Header {
                key: HEADER_ERROR,
                value: Some(letter.error),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = letter.key {
            record = record.key(key);
        }
        if let Some(payload) = letter.payload {
            record = record.payload(payload);
        }
        self.producer
            .send(record, ATTEMPT_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(error, _)| error)
    }

    /// Produces `letter`, retrying with exponential backoff until it is acknowledged
    /// (`true`) or `cancel` fires (`false`: the record was not dead-lettered and its offset
    /// must not be stored). `on_failure` is told about each failed attempt.
    pub async fn send_until_done(&self, letter: &DeadLetter<'_>, cancel: &CancellationToken, on_failure: impl Fn(&KafkaError)) -> bool {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.send(letter).await {
                Ok(()) => return true,
                Err(error) => {
                    on_failure(&error);
                    tracing::error!(
                        dlq = %self.topic, topic = letter.topic, partition = letter.partition, offset = letter.offset, %error, retry_in = ?backoff,
                        "could not dead-letter a record; its partition waits until this succeeds"
                    );
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
