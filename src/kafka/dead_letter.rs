//! The dead-letter producer: a record that cannot become an event is copied, key and
//! value untouched, to the dead-letter topic with headers saying where it came from and
//! what is wrong with it. Only then may the consumer move past it.
//!
//! A copy the dead-letter topic can never take because of its size (bigger than the
//! producer's `message.max.bytes`, or refused by the broker as too large) is replaced, at
//! once, by a truncated copy: the value's and key's first bytes, the `dlq.*` headers and
//! `dlq.truncated` saying what was cut; the record's coordinates find the original. Any
//! other failure is retried with backoff and the partition waits (the caller reports it:
//! counted, and the node turns not ready if it lasts) — a topic that refuses writes is an
//! outage to fix, not a reason to skip records.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::config::ClientProperties;
use crate::retry::Backoff;

/// Header naming the topic the record was read from.
pub(crate) const HEADER_TOPIC: &str = "dlq.source.topic";
/// Header with the source partition, in decimal.
pub(crate) const HEADER_PARTITION: &str = "dlq.source.partition";
/// Header with the source offset, in decimal.
pub(crate) const HEADER_OFFSET: &str = "dlq.source.offset";
/// Header with the reason the record was refused.
pub(crate) const HEADER_ERROR: &str = "dlq.error";
/// Header present on a truncated copy: what was cut.
pub(crate) const HEADER_TRUNCATED: &str = "dlq.truncated";

/// The dead-letter producer's `message.max.bytes` (librdkafka's default, which brokers
/// accept by default too).
pub(crate) const DEFAULT_MAX_BYTES: usize = 1_000_000;
/// How much of the value a truncated copy keeps.
const TRUNCATED_VALUE_BYTES: usize = 16 * 1024;
/// How much of the key a truncated copy keeps.
const TRUNCATED_KEY_BYTES: usize = 1024;

/// One delivery attempt may take this long before it counts as failed and is retried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A refused record, as the dead-letter topic receives it.
#[derive(Clone, Copy)]
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
    /// Source headers, copied as is (before the `dlq.*` ones).
    pub headers: Option<&'a BorrowedHeaders>,
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
    pub fn new(brokers: &str, properties: &ClientProperties, topic: &str) -> Result<Self, KafkaError> {
        Self::with_max_bytes(brokers, properties, topic, DEFAULT_MAX_BYTES)
    }

    /// A producer whose records may be at most `max_bytes` (`message.max.bytes`).
    pub(crate) fn with_max_bytes(brokers: &str, properties: &ClientProperties, topic: &str, max_bytes: usize) -> Result<Self, KafkaError> {
        let producer = super::client_config(brokers, properties)
            .set("client.id", "realtime-bridge-dlq")
            .set("message.max.bytes", max_bytes.to_string())
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
        self.produce(letter, None).await
    }

    /// Produces `letter`, or with `truncated` its cut-down copy (see the module docs).
    async fn produce(&self, letter: &DeadLetter<'_>, truncated: Option<&str>) -> Result<(), KafkaError> {
        let (partition, offset) = (letter.partition.to_string(), letter.offset.to_string());
        // Errors are bounded where they are made (`events::bounded_error`); a reason from
        // elsewhere (a panic's message) is bounded here, so no header can outgrow the topic.
        let error = crate::events::bounded_error(letter.error.to_owned());
        let mut headers = OwnedHeaders::new();
        if let (Some(source), None) = (letter.headers, truncated) {
            for h in source.iter() {
                headers = headers.insert(h);
            }
        }
        let headers = headers
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
                value: Some(&error),
            });
        let headers = match truncated {
            Some(what) => headers.insert(Header {
                key: HEADER_TRUNCATED,
                value: Some(what),
            }),
            None => headers,
        };
        fn cut(bytes: &[u8], limit: Option<usize>) -> &[u8] {
            limit.map_or(bytes, |limit| &bytes[..bytes.len().min(limit)])
        }
        let limit = |n: usize| truncated.map(|_| n);
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = letter.key {
            record = record.key(cut(key, limit(TRUNCATED_KEY_BYTES)));
        }
        if let Some(payload) = letter.payload {
            record = record.payload(cut(payload, limit(TRUNCATED_VALUE_BYTES)));
        }
        self.producer
            .send(record, ATTEMPT_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(error, _)| error)
    }

    /// Produces `letter`, retrying with exponential backoff until it is acknowledged
    /// (`true`) or `cancel` fires (`false`: the record was not dead-lettered and its offset
    /// must not be stored). A letter too large for the topic is replaced by its truncated
    /// copy at once. `on_failure` is told about each failed attempt and how long attempts
    /// have been failing.
    pub(crate) async fn send_until_done(
        &self,
        letter: &DeadLetter<'_>,
        cancel: &CancellationToken,
        on_failure: impl Fn(&KafkaError, Duration),
    ) -> bool {
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        let mut truncated: Option<String> = None;
        let failing_since = tokio::time::Instant::now();
        loop {
            match self.produce(letter, truncated.as_deref()).await {
                Ok(()) => return true,
                Err(error) if truncated.is_none() && too_large(&error) => {
                    let what = describe_cut(letter);
                    tracing::warn!(
                        dlq = %self.topic, topic = letter.topic, partition = letter.partition, offset = letter.offset, %error, truncated = %what,
                        "record too large for the dead-letter topic; dead-lettering a truncated copy"
                    );
                    truncated = Some(what);
                    continue;
                }
                Err(error) => {
                    on_failure(&error, failing_since.elapsed());
                    tracing::error!(
                        dlq = %self.topic, topic = letter.topic, partition = letter.partition, offset = letter.offset, %error, retry_in = ?backoff.upcoming(),
                        "could not dead-letter a record; its partition waits until this succeeds"
                    );
                }
            }
            if !backoff.pause(cancel).await {
                return false;
            }
        }
    }
}

/// Whether the dead-letter topic refuses `error`'s record for its size (it always will).
fn too_large(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
    )
}

/// The `dlq.truncated` header of a letter's cut-down copy.
fn describe_cut(letter: &DeadLetter<'_>) -> String {
    let len = |b: Option<&[u8]>| b.map_or(0, <[u8]>::len);
    format!(
        "value {} bytes (first {} kept), key {} bytes (first {} kept), {} source headers dropped",
        len(letter.payload),
        TRUNCATED_VALUE_BYTES.min(len(letter.payload)),
        len(letter.key),
        TRUNCATED_KEY_BYTES.min(len(letter.key)),
        letter.headers.map_or(0, |h| h.count()),
    )
}

#[cfg(test)]
mod tests {
    use rdkafka::Offset;
    use rdkafka::TopicPartitionList;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Message, OwnedMessage};

    use super::*;
    use crate::kafka::dev_broker::DevBroker;

    const DLQ: &str = "test.dlq";

    /// Reads the first record of the dead-letter topic.
    fn first_letter(brokers: &str) -> OwnedMessage {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "dlq-test-reader")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(DLQ, 0, Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();
        loop {
            if let Some(Ok(m)) = consumer.poll(Duration::from_secs(1)) {
                return m.detach();
            }
        }
    }

    fn header<'m>(m: &'m OwnedMessage, key: &str) -> Option<&'m str> {
        let headers = m.headers()?;
        headers
            .iter()
            .find(|h| h.key == key)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    #[tokio::test]
    async fn a_record_too_large_for_the_topic_is_dead_lettered_truncated_not_retried_forever() {
        let broker = DevBroker::start(&[DLQ], 1).unwrap();
        let letters = DeadLetters::with_max_bytes(broker.bootstrap_servers(), &ClientProperties::default(), DLQ, 20_000).unwrap();
        let value = vec![b'x'; 50_000];
        let source = OwnedHeaders::new().insert(Header {
            key: "trace",
            value: Some(&[0xff_u8, 0, 1][..]),
        });
        let letter = DeadLetter {
            topic: "order.updated",
            partition: 2,
            offset: 41,
            key: Some(b"k-1"),
            payload: Some(&value),
            headers: Some(source.as_borrowed()),
            error: "record value is 50000 bytes, over the 20000-byte limit",
        };
        let failures = std::sync::atomic::AtomicU32::new(0);
        let done = tokio::time::timeout(
            Duration::from_secs(20),
            letters.send_until_done(&letter, &CancellationToken::new(), |_, _| {
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }),
        )
        .await
        .expect("a too-large record must not hold its partition forever");
        assert!(done);
        assert_eq!(failures.into_inner(), 0, "size refusals are not retried");
        let m = tokio::task::spawn_blocking({
            let b = broker.bootstrap_servers().to_owned();
            move || first_letter(&b)
        })
        .await
        .unwrap();
        assert_eq!(m.payload().map(<[u8]>::len), Some(TRUNCATED_VALUE_BYTES));
        assert_eq!(m.key(), Some(&b"k-1"[..]));
        assert_eq!(header(&m, HEADER_OFFSET), Some("41"));
        assert_eq!(header(&m, HEADER_TOPIC), Some("order.updated"));
        let cut = header(&m, HEADER_TRUNCATED).unwrap();
        assert!(
            cut.contains("value 50000 bytes") && cut.contains("1 source headers dropped"),
            "{cut}"
        );
        assert!(header(&m, "trace").is_none());
    }

    #[tokio::test]
    async fn a_huge_reason_is_cut_so_the_letter_fits_the_topic() {
        let broker = DevBroker::start(&[DLQ], 1).unwrap();
        let letters = DeadLetters::with_max_bytes(broker.bootstrap_servers(), &ClientProperties::default(), DLQ, 20_000).unwrap();
        // A reason bigger than the topic takes: its truncated copy would carry it too.
        let reason = "x".repeat(50_000);
        let letter = DeadLetter {
            topic: "order.updated",
            partition: 0,
            offset: 3,
            key: None,
            payload: Some(b"{}"),
            headers: None,
            error: &reason,
        };
        let done = tokio::time::timeout(
            Duration::from_secs(20),
            letters.send_until_done(&letter, &CancellationToken::new(), |_, _| ()),
        )
        .await
        .expect("a huge reason must not hold its partition forever");
        assert!(done);
        let m = tokio::task::spawn_blocking({
            let b = broker.bootstrap_servers().to_owned();
            move || first_letter(&b)
        })
        .await
        .unwrap();
        let error = header(&m, HEADER_ERROR).unwrap();
        assert_eq!(error.chars().count(), crate::events::MAX_ERROR_CHARS + 1, "cut, with the mark");
        assert_eq!(m.payload(), Some(&b"{}"[..]), "the record itself is whole");
    }

    #[tokio::test]
    async fn a_dead_letter_keeps_the_source_headers() {
        let broker = DevBroker::start(&[DLQ], 1).unwrap();
        let letters = DeadLetters::new(broker.bootstrap_servers(), &ClientProperties::default(), DLQ).unwrap();
        let source = OwnedHeaders::new()
            .insert(Header {
                key: "trace",
                value: Some("abc"),
            })
            .insert(Header::<&[u8]> { key: "empty", value: None });
        let letter = DeadLetter {
            topic: "order.updated",
            partition: 0,
            offset: 7,
            key: None,
            payload: Some(b"not json"),
            headers: Some(source.as_borrowed()),
            error: "invalid payload",
        };
        assert!(letters.send_until_done(&letter, &CancellationToken::new(), |_, _| ()).await);
        let m = tokio::task::spawn_blocking({
            let b = broker.bootstrap_servers().to_owned();
            move || first_letter(&b)
        })
        .await
        .unwrap();
        assert_eq!(header(&m, "trace"), Some("abc"));
        assert_eq!(header(&m, HEADER_ERROR), Some("invalid payload"));
        assert_eq!(m.payload(), Some(&b"not json"[..]));
    }
}
