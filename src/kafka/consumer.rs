//! The consumer group member: subscribe by regex, hand each record to delivery, store its
//! offset afterwards, commit on revoke and on shutdown.
//!
//! At-least-once: `enable.auto.offset.store=false`, so librdkafka's periodic auto-commit
//! only ever commits offsets this loop stored, and it stores a record's offset only after
//! the record was handed to Socket.IO. Records of a partition are handled one by one, in
//! order, by this single task.

use std::sync::Arc;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::delivery::{Delivery, Record};
use crate::health::Health;

/// Reports group membership to [`Health`] and commits before partitions move away.
pub struct GroupContext {
    health: Arc<Health>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            tracing::info!(partitions = %describe(tpl), "partitions revoked; committing stored offsets");
            // Whoever gets these partitions next resumes exactly after what we delivered.
            commit(consumer);
            self.health.kafka_revoked();
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(count = tpl.count(), partitions = %describe(tpl), "partitions assigned");
                self.health.kafka_assigned(tpl.count());
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
    }
}

/// The group consumer type.
pub type GroupConsumer = StreamConsumer<GroupContext>;

/// Creates the consumer and subscribes it; connecting happens in the background.
pub fn create(config: &KafkaConfig, brokers: &str, health: Arc<Health>) -> anyhow::Result<GroupConsumer> {
    let consumer: GroupConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &config.group_id)
        .set("client.id", "realtime-bridge")
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", config.offset_reset.as_str())
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set("fetch.wait.max.ms", config.fetch_wait_max_ms.to_string())
        .set("topic.metadata.refresh.interval.ms", config.metadata_refresh_ms.to_string())
        .set("allow.auto.create.topics", "false")
        .create_with_context(GroupContext { health })?;
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    tracing::info!(group = %config.group_id, topics = ?config.topics, "subscribed");
    Ok(consumer)
}

/// Consumes until `cancel` fires, then commits what was delivered.
pub async fn run(consumer: GroupConsumer, delivery: Delivery, cancel: CancellationToken) {
    loop {
        let message = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            m = consumer.recv() => m,
        };
        match message {
            Ok(m) => {
                delivery
                    .handle_record(Record {
                        topic: m.topic(),
                        partition: m.partition(),
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis(),
                        payload: m.payload(),
                    })
                    .await;
                if let Err(error) = consumer.store_offset_from_message(&m) {
                    // Happens when the partition was revoked meanwhile; the new owner re-delivers.
                    tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %error, "could not store offset");
                }
            }
            // Transient (broker down, rebalance); librdkafka reconnects by itself.
            Err(error) => tracing::warn!(%error, "kafka consume error"),
        }
    }
    tracing::info!("consumer stopped taking records; committing");
    commit(&consumer);
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
