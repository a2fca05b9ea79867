//! What each component reports about itself, for the probes and stats.
//!
//! Readiness is honest: the process is ready only when the Kafka consumer has joined
//! its group (and so will receive records), Redis answers when it is configured, and
//! shutdown has not begun.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;
use utoipa::ToSchema;

use crate::stats::Stats;

/// Shared component state, updated by the consumer and the shutdown sequence.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    kafka_joined: AtomicBool,
    assignment: Mutex<Vec<(String, i32)>>,
    draining: AtomicBool,
    embedded_broker: bool,
    redis: AtomicU8,
    consumer_restarts: AtomicU64,
    dead_letter_stuck: AtomicBool,
    /// The schema registry: disabled (none configured), ok, or failing (records waiting).
    registry: AtomicU8,
    failed_task: Mutex<Option<&'static str>>,
    /// Members the consumer group had at the last listing (0: not listed; only without
    /// Redis, see `kafka::peers`).
    group_members: AtomicU64,
}

const REGISTRY_DISABLED: u8 = 0;
const REGISTRY_OK: u8 = 1;
const REGISTRY_FAILING: u8 = 2;

const REDIS_DISABLED: u8 = 0;
const REDIS_UP: u8 = 1;
const REDIS_DOWN: u8 = 2;

/// The JSON body of the health endpoints.
#[derive(Debug, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// `ok` when ready, otherwise `unavailable`.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Shutdown has begun.
    pub draining: bool,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// The Kafka consumer.
    pub kafka: KafkaReport,
    /// The Socket.IO server.
    pub socketio: SocketReport,
    /// Redis, when configured (`disabled` otherwise).
    pub redis: RedisReport,
    /// A long-lived task that failed: the process is draining and will exit non-zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_task: Option<String>,
}

/// Redis's state as this node sees it.
#[derive(Debug, Serialize, PartialEq, Eq, ToSchema)]
pub struct RedisReport {
    /// `up`, `down` (the node is not ready) or `disabled` (no `REDIS_URL`).
    #[schema(example = "up")]
    pub status: &'static str,
}

/// The Kafka consumer's state.
#[derive(Debug, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaReport {
    /// `up` once the group is joined, else `connecting` (also while a failed consumer is
    /// rebuilt and rejoins).
    #[schema(example = "up")]
    pub status: &'static str,
    /// Times the consumer failed and was rebuilt since start.
    pub consumer_restarts: u64,
    /// `ok`, or `failing` while a record cannot be dead-lettered (its partition waits and
    /// the node is not ready).
    #[schema(example = "ok")]
    pub dead_letter: &'static str,
    /// The schema registry (`SCHEMA_REGISTRY_URL`): `disabled`, `ok`, or `failing` while
    /// records have waited 10 s for a schema it does not give (not ready meanwhile).
    #[schema(example = "disabled")]
    pub schema_registry: &'static str,
    /// Partitions assigned to this member (0 is legitimate when the group has more members than partitions).
    pub assigned_partitions: usize,
    /// Whether the embedded development broker is in use.
    pub embedded_broker: bool,
    /// Members of the consumer group at the last listing, this node included (listed only
    /// without `REDIS_URL`; absent otherwise or before the first listing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_members: Option<u64>,
    /// Other members share the group and there is no `REDIS_URL`: each node would emit only
    /// to its own sockets, so this node is not ready.
    pub shared_without_redis: bool,
    /// Records received since start.
    pub records_consumed: u64,
    /// Records that were not valid events.
    pub records_invalid: u64,
    /// Invalid records copied to the dead-letter topic.
    pub records_dead_lettered: u64,
    /// Failed dead-letter produce attempts (retried until they succeed).
    pub dead_letter_failures: u64,
}

/// The Socket.IO server's state.
#[derive(Debug, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SocketReport {
    /// Always `up` while the process serves.
    #[schema(example = "up")]
    pub status: &'static str,
    /// Connected sockets.
    pub connections: i64,
    /// Room emits since start.
    pub emits: u64,
    /// Emits that failed for at least one socket.
    pub emit_failures: u64,
    /// Handshakes refused.
    pub auth_failures: u64,
}

impl Health {
    /// Fresh state: not joined, not draining.
    pub fn new(embedded_broker: bool) -> Self {
        Health {
            started: Instant::now(),
            kafka_joined: AtomicBool::new(false),
            assignment: Mutex::new(Vec::new()),
            draining: AtomicBool::new(false),
            embedded_broker,
            redis: AtomicU8::new(REDIS_DISABLED),
            consumer_restarts: AtomicU64::new(0),
            dead_letter_stuck: AtomicBool::new(false),
            registry: AtomicU8::new(REGISTRY_DISABLED),
            failed_task: Mutex::new(None),
            group_members: AtomicU64::new(0),
        }
    }

    /// The consumer failed and is being rebuilt: not ready until the new one has joined.
    pub(crate) fn kafka_restarting(&self) {
        self.kafka_joined.store(false, Ordering::Release);
        self.assignment.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.consumer_restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether dead-lettering has been failing for a while (the consumer is held up).
    /// A schema registry is configured (reported as `ok` until it fails).
    pub(crate) fn enable_registry(&self) {
        self.registry.store(REGISTRY_OK, Ordering::Release);
    }

    /// Whether records wait on a registry that has not answered for 10 s.
    pub(crate) fn registry_stuck(&self) -> bool {
        self.registry.load(Ordering::Acquire) == REGISTRY_FAILING
    }

    /// Records wait on an unavailable registry (not ready), or no longer do.
    pub(crate) fn set_registry_stuck(&self, stuck: bool) {
        self.registry
            .store(if stuck { REGISTRY_FAILING } else { REGISTRY_OK }, Ordering::Release);
    }

    pub(crate) fn set_dead_letter_stuck(&self, stuck: bool) {
        self.dead_letter_stuck.store(stuck, Ordering::Release);
    }

    /// A long-lived task failed: not ready from now on (the process drains and exits).
    pub(crate) fn fail(&self, task: &'static str) {
        self.failed_task.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(task);
    }

    /// Records whether Redis answers; returns whether that changed.
    pub(crate) fn set_redis(&self, up: bool) -> bool {
        let new = if up { REDIS_UP } else { REDIS_DOWN };
        self.redis.swap(new, Ordering::AcqRel) != new
    }

    /// The consumer was assigned `partitions` (possibly none) by the group: the whole new
    /// assignment under the classic protocol's eager rebalances (everything was revoked
    /// first), the added partitions under incremental ones (KIP-848).
    pub(crate) fn kafka_assigned(&self, partitions: Vec<(String, i32)>) {
        let mut assignment = self.assignment.lock().unwrap_or_else(|p| p.into_inner());
        for p in partitions {
            if !assignment.contains(&p) {
                assignment.push(p);
            }
        }
        drop(assignment);
        self.kafka_joined.store(true, Ordering::Release);
    }

    /// These partitions were revoked (all of them under eager rebalances).
    pub(crate) fn kafka_revoked(&self, partitions: &[(String, i32)]) {
        self.assignment
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| !partitions.contains(p));
    }

    /// The partitions this member consumes now.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.assignment.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Shutdown began: readiness turns false from now on.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether shutdown began.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether the node should receive traffic.
    pub(crate) fn is_ready(&self) -> bool {
        self.kafka_joined.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
            && self.redis.load(Ordering::Acquire) != REDIS_DOWN
            && !self.dead_letter_stuck.load(Ordering::Acquire)
            && !self.registry_stuck()
            && !self.shared_without_redis()
            && self.failed_task.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }

    /// Records the group's member count; `Some(shared)` when that changes whether other
    /// members share the group.
    pub(crate) fn set_group_members(&self, members: usize) -> Option<bool> {
        let before = self.shared_without_redis();
        self.group_members.store(members as u64, Ordering::Release);
        let now = self.shared_without_redis();
        (before != now).then_some(now)
    }

    fn shared_without_redis(&self) -> bool {
        self.group_members.load(Ordering::Acquire) > 1
    }

    /// Seconds since start.
    pub(crate) fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// A snapshot for the probes.
    pub fn report(&self, stats: &Stats) -> HealthReport {
        let joined = self.kafka_joined.load(Ordering::Acquire);
        let t = stats.totals();
        HealthReport {
            status: if self.is_ready() { "ok" } else { "unavailable" },
            draining: self.draining.load(Ordering::Acquire),
            uptime_secs: self.uptime_secs(),
            kafka: KafkaReport {
                status: if joined { "up" } else { "connecting" },
                consumer_restarts: self.consumer_restarts.load(Ordering::Relaxed),
                dead_letter: if self.dead_letter_stuck.load(Ordering::Acquire) {
                    "failing"
                } else {
                    "ok"
                },
                schema_registry: match self.registry.load(Ordering::Acquire) {
                    REGISTRY_OK => "ok",
                    REGISTRY_FAILING => "failing",
                    _ => "disabled",
                },
                assigned_partitions: self.assignment.lock().unwrap_or_else(|p| p.into_inner()).len(),
                embedded_broker: self.embedded_broker,
                group_members: Some(self.group_members.load(Ordering::Acquire)).filter(|n| *n > 0),
                shared_without_redis: self.shared_without_redis(),
                records_consumed: t.records_consumed,
                records_invalid: t.records_invalid,
                records_dead_lettered: t.records_dead_lettered,
                dead_letter_failures: t.dead_letter_failures,
            },
            socketio: SocketReport {
                status: "up",
                connections: t.connections,
                emits: t.emits,
                emit_failures: t.emit_failures,
                auth_failures: t.auth_failures,
            },
            redis: RedisReport {
                status: match self.redis.load(Ordering::Acquire) {
                    REDIS_UP => "up",
                    REDIS_DOWN => "down",
                    _ => "disabled",
                },
            },
            failed_task: self.failed_task.lock().unwrap_or_else(|p| p.into_inner()).map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_join_and_before_drain() {
        let h = Health::new(false);
        assert!(!h.is_ready());
        assert_eq!(h.report(&Stats::default()).kafka.status, "connecting");
        h.kafka_assigned(vec![]);
        assert!(h.is_ready(), "an empty assignment is a legitimate idle member");
        h.kafka_assigned(vec![("order.updated".into(), 0)]);
        assert_eq!(h.report(&Stats::default()).kafka.assigned_partitions, 1);
        h.kafka_assigned(vec![("order.updated".into(), 1)]);
        assert_eq!(
            h.report(&Stats::default()).kafka.assigned_partitions,
            2,
            "an incremental assignment adds"
        );
        h.kafka_revoked(&[("order.updated".into(), 1)]);
        assert_eq!(
            h.assignment(),
            vec![("order.updated".to_owned(), 0)],
            "an incremental revocation removes its own"
        );
        h.kafka_revoked(&[("order.updated".into(), 0)]);
        assert!(h.is_ready(), "a rebalance does not make the node unready");
        assert!(h.assignment().is_empty());
        assert_eq!(h.report(&Stats::default()).redis.status, "disabled");
        assert!(h.set_redis(false), "a change");
        assert!(!h.is_ready(), "Redis down: not ready");
        assert!(h.set_redis(true));
        assert!(!h.set_redis(true), "no change");
        assert!(h.is_ready());
        h.kafka_restarting();
        assert!(!h.is_ready(), "a consumer being rebuilt has not joined");
        assert_eq!(h.report(&Stats::default()).kafka.consumer_restarts, 1);
        h.kafka_assigned(vec![]);
        h.set_dead_letter_stuck(true);
        assert!(!h.is_ready(), "records are held up behind one that cannot be dead-lettered");
        assert_eq!(h.report(&Stats::default()).kafka.dead_letter, "failing");
        h.set_dead_letter_stuck(false);
        assert!(h.is_ready());
        h.start_draining();
        assert!(!h.is_ready());
        assert_eq!(h.report(&Stats::default()).status, "unavailable");
    }
}
