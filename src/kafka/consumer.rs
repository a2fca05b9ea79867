//! The consumer group member: subscribe by regex, hand each record to delivery, store its
//! offset afterwards, commit on revoke and on shutdown.
//!
//! At-least-once: `enable.auto.offset.store=false`, so librdkafka's periodic auto-commit
//! only ever commits offsets this loop stored, and it stores a record's offset only after
//! the record was stored in the replay history and handed to Socket.IO — or, for a record
//! that is not an event, after the dead-letter topic acknowledged its copy. Records are
//! handled in batches — whatever the consumer has ready, up to [`MAX_BATCH`] — in order, by
//! this single task: a batch's events are stored in one history operation and emitted
//! together, and the next batch waits until this one is settled. So a record that cannot be
//! settled (history or dead-letter topic unavailable) holds up what follows it instead of
//! being skipped. See docs/architecture.md, "The delivery path", for why batching loses
//! and reorders nothing.
//!
//! A batch whose records name schemas (the Confluent wire format) first has them fetched —
//! cached, once per id — and waits while the registry is unavailable: a dependency that is
//! down holds the partition up (the node turns not ready after 10 s), it never makes a record
//! a dead letter. Decoding itself is then pure.
//!
//! Nothing in a record can stop this loop: parsing and routing a record run under a panic guard,
//! and a record whose handling panics (a bug) is dead-lettered like an invalid one, so it
//! neither kills the consumer nor poisons the next group member that gets its partition.
//! The loop itself is supervised ([`crate::supervisor`]): if it ends anyway, it is rebuilt.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Statistics, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::{ClientProperties, GroupProtocol, KafkaConfig};
use crate::decode::{Input, Schemas};
use crate::delivery::{Delivery, Patience, Record};
use crate::faults::{Fault, Faults};
use crate::health::Health;
use crate::kafka::dead_letter::{DeadLetter, DeadLetters};
use crate::retry::Backoff;
use crate::routing::Route;
use crate::stats::{PartitionLag, Stats};

/// Reports group membership to [`Health`], lag to [`Stats`], and commits before
/// partitions move away.
pub struct GroupContext {
    health: Arc<Health>,
    stats: Arc<Stats>,
    /// The last client error logged, and when: librdkafka repeats the same failure (a wrong
    /// password, an untrusted CA) on every reconnect; it is logged once per interval.
    last_error: std::sync::Mutex<Option<(String, std::time::Instant)>>,
}

/// How often one and the same client error is logged again.
const REPEATED_ERROR_EVERY: Duration = Duration::from_secs(30);

/// How often librdkafka reports statistics (consumer lag).
const STATS_INTERVAL_MS: u32 = 5_000;

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let text = format!("{error}: {reason}");
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        if last
            .as_ref()
            .is_some_and(|(seen, at)| *seen == text && at.elapsed() < REPEATED_ERROR_EVERY)
        {
            return;
        }
        *last = Some((text, std::time::Instant::now()));
        tracing::warn!(%error, reason, "kafka client error");
    }

    fn stats(&self, statistics: Statistics) {
        let assigned = self.health.assignment();
        let lags = statistics.topics.into_values().flat_map(|t| {
            let topic = t.topic;
            t.partitions
                .into_values()
                // -1 is librdkafka's "unknown yet" (no high watermark or position).
                .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                .map(move |p| PartitionLag {
                    topic: topic.clone(),
                    partition: p.partition,
                    lag: p.consumer_lag,
                })
        });
        self.stats
            .set_lag(lags.filter(|l| assigned.iter().any(|(t, p)| *t == l.topic && *p == l.partition)));
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            tracing::info!(partitions = %describe(tpl), "partitions revoked; committing stored offsets");
            // Whoever gets these partitions next resumes exactly after what we delivered.
            commit(consumer);
            let partitions: Vec<(String, i32)> = tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
            self.health.kafka_revoked(&partitions);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(count = tpl.count(), partitions = %describe(tpl), "partitions assigned");
                let partitions = tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
                self.health.kafka_assigned(partitions);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
    }
}

/// The group consumer type.
pub(crate) type GroupConsumer = StreamConsumer<GroupContext>;

/// Creates the consumer and subscribes it; connecting happens in the background.
pub(crate) fn create(
    config: &KafkaConfig,
    brokers: &str,
    properties: &ClientProperties,
    health: Arc<Health>,
    stats: Arc<Stats>,
) -> anyhow::Result<GroupConsumer> {
    let mut consumer_config = super::client_config(brokers, properties);
    consumer_config
        .set("group.id", &config.group_id)
        .set("client.id", "realtime-bridge")
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", config.offset_reset.as_str())
        .set("fetch.wait.max.ms", config.fetch_wait_max_ms.to_string())
        .set("topic.metadata.refresh.interval.ms", config.metadata_refresh_ms.to_string())
        .set("allow.auto.create.topics", "false")
        .set("statistics.interval.ms", STATS_INTERVAL_MS.to_string());
    match config.group_protocol {
        // librdkafka refuses the classic protocol's own settings under KIP-848: the broker's
        // group.consumer.* settings apply instead.
        GroupProtocol::Consumer => consumer_config.set("group.protocol", "consumer"),
        GroupProtocol::Classic => consumer_config.set("session.timeout.ms", config.session_timeout_ms.to_string()),
    };
    let consumer: GroupConsumer = consumer_config.create_with_context(GroupContext {
        health,
        stats,
        last_error: Default::default(),
    })?;
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    tracing::info!(group = %config.group_id, topics = ?config.topics, "subscribed");
    Ok(consumer)
}

/// Dead-lettering failing this long turns the node not ready (its records are held up).
const DEAD_LETTER_STUCK_AFTER: Duration = Duration::from_secs(10);

/// Where settled records go: delivery for events, the dead-letter topic for the rest.
#[derive(Clone)]
pub struct Sinks {
    /// Parse, route, store, emit.
    pub delivery: Delivery,
    /// Refused records.
    pub dead_letters: DeadLetters,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Readiness (dead-lettering held up).
    pub health: Arc<Health>,
    /// Test-build fault injection (inert otherwise).
    pub faults: Arc<Faults>,
}

/// Records taken from the consumer at once, at most. A batch is whatever is ready when the
/// first record arrives: it never waits to fill, so a lone record goes out at once.
const MAX_BATCH: usize = 512;

/// Consumes until `cancel` fires, then commits what was settled. A batch in flight when
/// `cancel` fires is finished first unless it is waiting on a retry, in which case its
/// unsettled records' offsets are not stored and the next owner of the partition gets
/// them again.
pub async fn run(consumer: GroupConsumer, sinks: Sinks, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            m = consumer.recv() => m,
        };
        batch.clear();
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Ok(m) => batch.push(m),
                // Transient (broker down, rebalance); librdkafka reconnects by itself.
                Err(error) => tracing::warn!(%error, "kafka consume error"),
            }
            next = if batch.len() < MAX_BATCH {
                consumer.recv().now_or_never()
            } else {
                None
            };
        }
        if batch.is_empty() {
            continue;
        }
        if sinks.faults.fire(Fault::ConsumerPanic) {
            panic!("injected fault: consumer loop");
        }
        let settled = settle_batch(&batch, &sinks, &cancel).await;
        // Offsets only for the settled records, which come first in each partition.
        for m in &batch[..settled] {
            if let Err(error) = consumer.store_offset_from_message(m) {
                // Happens when the partition was revoked meanwhile; the new owner re-delivers.
                tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %error, "could not store offset");
            }
        }
        if settled < batch.len() {
            break;
        }
    }
    tracing::info!("consumer stopped taking records; committing");
    commit(&consumer);
    Ok(())
}

/// A record read and routed, before delivery.
enum Prepared {
    /// An event: deliver these routes.
    Event(Vec<Route>),
    /// Not an event, or handling it panicked: dead-letter it with this reason.
    Rejected(String),
    /// A record of the dead-letter topic itself: ignored.
    Ignored,
}

fn record<'a>(m: &'a BorrowedMessage<'_>, headers: &'a [(&'a str, &'a [u8])]) -> Record<'a> {
    Record {
        topic: m.topic(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis(),
        key: m.key(),
        headers,
        payload: m.payload(),
    }
}

/// A record's headers that have a value, in order (what the decoding stage reads).
fn headers<'a>(m: &'a BorrowedMessage<'_>) -> Vec<(&'a str, &'a [u8])> {
    use rdkafka::message::Headers as _;
    m.headers()
        .map(|h| h.iter().filter_map(|h| Some((h.key, h.value?))).collect())
        .unwrap_or_default()
}

/// The schema registry failing this long turns the node not ready (its records wait).
const REGISTRY_STUCK_AFTER: Duration = Duration::from_secs(10);

/// The schemas the batch's records name, fetched (or taken from the cache) before any is
/// decoded; while the registry is unavailable this waits, and the node turns not ready
/// after [`REGISTRY_STUCK_AFTER`]. `None` when `cancel` fires first.
async fn fetch_schemas(
    batch: &[BorrowedMessage<'_>],
    headers: &[Vec<(&str, &[u8])>],
    sinks: &Sinks,
    cancel: &CancellationToken,
) -> Option<Schemas> {
    let Some(registry) = sinks.delivery.decoder().registry() else {
        return Some(Schemas::default());
    };
    let ids: Vec<u32> = batch
        .iter()
        .zip(headers)
        .filter_map(|(m, headers)| {
            crate::decode::schema_id(&Input {
                topic: m.topic(),
                key: None,
                headers,
                payload: m.payload(),
            })
        })
        .collect();
    if ids.is_empty() {
        return Some(Schemas::default());
    }
    let schemas = registry
        .resolve(ids, cancel, |reason, failing_for| {
            if failing_for >= REGISTRY_STUCK_AFTER && !sinks.health.registry_stuck() {
                tracing::error!(%reason, "schema registry unavailable for 10 s: not ready until it answers");
                sinks.health.set_registry_stuck(true);
            }
        })
        .await;
    if schemas.is_some() && sinks.health.registry_stuck() {
        tracing::info!("schema registry answers again");
        sinks.health.set_registry_stuck(false);
    }
    schemas
}

/// Settles a batch in order: each run of events is delivered together (one history
/// append, emits pipelined), then the refused record that ends it is dead-lettered — so no
/// record is settled before one that comes before it, and a partition waits at a record
/// the dead-letter topic cannot take. Returns how many records, from the first, are
/// settled: all unless `cancel` fired during a retry.
async fn settle_batch(batch: &[BorrowedMessage<'_>], sinks: &Sinks, cancel: &CancellationToken) -> usize {
    // Each record's headers read once: for the schema ids, then for decoding.
    let headers: Vec<Vec<(&str, &[u8])>> = batch.iter().map(headers).collect();
    let Some(schemas) = fetch_schemas(batch, &headers, sinks, cancel).await else {
        return 0;
    };
    let mut prepared: Vec<Prepared> = batch
        .iter()
        .zip(&headers)
        .map(|(m, headers)| prepare(m, headers, sinks, &schemas))
        .collect();
    let mut start = 0;
    for end in 0..=batch.len() {
        if end < batch.len() && !matches!(prepared[end], Prepared::Rejected(_)) {
            continue;
        }
        let routes: Vec<Route> = prepared[start..end]
            .iter_mut()
            .filter_map(|p| match p {
                Prepared::Event(routes) => Some(std::mem::take(routes)),
                _ => None,
            })
            .flatten()
            .collect();
        match deliver_until_done(&routes, sinks, cancel).await {
            Delivered::Yes => {
                for (m, p) in batch[start..end].iter().zip(&prepared[start..end]) {
                    if matches!(p, Prepared::Event(_)) {
                        sinks.delivery.delivered(record(m, &[]));
                    }
                }
            }
            Delivered::Cancelled => return start,
            // A panic that parsing and routing did not hit: settle one by one, so only the
            // record that causes it is dead-lettered (its siblings may be delivered twice).
            Delivered::Panicked(_) if end - start > 1 => {
                for (i, m) in batch.iter().enumerate().take(end).skip(start) {
                    if Box::pin(settle_batch(std::slice::from_ref(m), sinks, cancel)).await == 0 {
                        return i;
                    }
                }
            }
            Delivered::Panicked(message) => {
                let reason = internal_error(record(&batch[start], &[]), sinks, &message);
                if !dead_letter(&batch[start], &reason, sinks, cancel).await {
                    return start;
                }
            }
        }
        if let Some(Prepared::Rejected(reason)) = prepared.get(end)
            && !dead_letter(&batch[end], reason, sinks, cancel).await
        {
            return end;
        }
        start = end + 1;
    }
    batch.len()
}

/// Decodes, maps and routes one record under a panic guard: a record whose handling panics
/// (a bug) is dead-lettered like an invalid one.
fn prepare(m: &BorrowedMessage<'_>, headers: &[(&str, &[u8])], sinks: &Sinks, schemas: &Schemas) -> Prepared {
    if m.topic() == sinks.dead_letters.topic() {
        // Configuration refuses a subscription matching the DLQ; this guards against a
        // pattern librdkafka reads differently, so bad records never loop.
        tracing::warn!(topic = m.topic(), offset = m.offset(), "ignoring a record of the dead-letter topic");
        return Prepared::Ignored;
    }
    let rec = record(m, headers);
    let handled = std::panic::catch_unwind(AssertUnwindSafe(|| {
        if sinks.faults.fire(Fault::RecordPanic) {
            panic!("injected fault: handling a record");
        }
        sinks.delivery.prepare(rec, schemas)
    }));
    match handled {
        Ok(Ok(routes)) => Prepared::Event(routes),
        Ok(Err(error)) => Prepared::Rejected(error.to_string()),
        Err(panic) => Prepared::Rejected(internal_error(rec, sinks, crate::supervisor::panic_message(panic.as_ref()))),
    }
}

/// Counts and logs a panic while handling `rec`; the reason to dead-letter it with.
fn internal_error(rec: Record<'_>, sinks: &Sinks, message: &str) -> String {
    sinks.stats.record_panicked();
    tracing::error!(topic = rec.topic, partition = rec.partition, offset = rec.offset, panic = %message, "handling a record panicked (a bug); dead-lettering it");
    format!("internal error while handling the record: {message}")
}

/// How a batch's delivery ended.
enum Delivered {
    Yes,
    /// `cancel` fired while waiting to retry: nothing may be counted as delivered.
    Cancelled,
    /// Delivering panicked (a bug), with this message.
    Panicked(String),
}

/// Delivers `routes`, retrying with backoff while the history or the cluster fails.
async fn deliver_until_done(routes: &[Route], sinks: &Sinks, cancel: &CancellationToken) -> Delivered {
    if routes.is_empty() {
        return Delivered::Yes;
    }
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let attempt = AssertUnwindSafe(sinks.delivery.deliver(routes, Patience::UntilStopped(cancel)))
            .catch_unwind()
            .await;
        match attempt {
            Ok(Ok(_)) => return Delivered::Yes,
            Err(panic) => return Delivered::Panicked(crate::supervisor::panic_message(panic.as_ref()).to_owned()),
            Ok(Err(error)) => {
                if cancel.is_cancelled() {
                    return Delivered::Cancelled;
                }
                tracing::error!(routes = routes.len(), %error, retry_in = ?backoff.upcoming(), "could not deliver a batch of records; retrying");
                if !backoff.pause(cancel).await {
                    return Delivered::Cancelled;
                }
            }
        }
    }
}

/// Sends one refused record to the dead-letter topic; `false` when cancelled first.
async fn dead_letter(m: &BorrowedMessage<'_>, reason: &str, sinks: &Sinks, cancel: &CancellationToken) -> bool {
    let letter = DeadLetter {
        topic: m.topic(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key(),
        payload: m.payload(),
        headers: m.headers(),
        error: reason,
    };
    let done = sinks
        .dead_letters
        .send_until_done(&letter, cancel, |_, failing_for| {
            sinks.stats.dead_letter_failed();
            if failing_for >= DEAD_LETTER_STUCK_AFTER {
                sinks.health.set_dead_letter_stuck(true);
            }
        })
        .await;
    sinks.health.set_dead_letter_stuck(false);
    if done {
        sinks.stats.dead_lettered(m.topic());
        tracing::info!(
            topic = m.topic(),
            partition = m.partition(),
            offset = m.offset(),
            dlq = sinks.dead_letters.topic(),
            "record dead-lettered"
        );
    }
    done
}

fn commit(consumer: &impl Consumer<GroupContext>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::info!("offsets committed"),
        // Nothing was stored since the last commit.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => tracing::warn!(%error, "offset commit failed"),
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}
