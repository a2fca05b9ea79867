//! What each component reports about itself, for the probes and stats.
//!
//! Readiness is honest: the process is ready only when the Kafka consumer has joined
//! its group (and so will receive records) and shutdown has not begun.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

/// Shared component state, updated by the consumer and socket handlers.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    kafka_joined: AtomicBool,
    assigned_partitions: AtomicI64,
    draining: AtomicBool,
    embedded_broker: bool,
}

/// Counters of what the bridge has done since start.
#[derive(Debug, Default)]
pub struct Stats {
    /// Kafka records received.
    pub records_consumed: AtomicU64,
    /// Records that did not parse into an event.
    pub records_invalid: AtomicU64,
    /// Invalid records copied to the dead-letter topic (then skipped).
    pub records_dead_lettered: AtomicU64,
    /// Failed attempts to produce to the dead-letter topic (each is retried).
    pub dead_letter_failures: AtomicU64,
    /// Socket events emitted to rooms (one per route).
    pub emits: AtomicU64,
    /// Emits that failed for at least one socket.
    pub emit_failures: AtomicU64,
    /// Sockets connected now.
    pub connections: AtomicI64,
    /// Handshakes refused.
    pub auth_failures: AtomicU64,
}

impl Stats {
    /// Adds one to a counter.
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The JSON body of the health endpoints.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// `ok` when ready, otherwise `unavailable`.
    pub status: &'static str,
    /// Shutdown has begun.
    pub draining: bool,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// The Kafka consumer.
    pub kafka: KafkaReport,
    /// The Socket.IO server.
    pub socketio: SocketReport,
}

/// The Kafka consumer's state.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KafkaReport {
    /// `up` once the group is joined, else `connecting`.
    pub status: &'static str,
    /// Partitions assigned to this member (0 is legitimate when the group has more members than partitions).
    pub assigned_partitions: i64,
    /// Whether the embedded development broker is in use.
    pub embedded_broker: bool,
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
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SocketReport {
    /// Always `up` while the process serves.
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
            assigned_partitions: AtomicI64::new(0),
            draining: AtomicBool::new(false),
            embedded_broker,
        }
    }

    /// The consumer received an assignment (possibly empty) from the group.
    pub fn kafka_assigned(&self, partitions: usize) {
        self.assigned_partitions.store(partitions as i64, Ordering::Relaxed);
        self.kafka_joined.store(true, Ordering::Release);
    }

    /// The consumer's partitions were revoked (a rebalance is under way).
    pub fn kafka_revoked(&self) {
        self.assigned_partitions.store(0, Ordering::Relaxed);
    }

    /// Shutdown began: readiness turns false from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the node should receive traffic.
    pub fn is_ready(&self) -> bool {
        self.kafka_joined.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// A snapshot for the probes.
    pub fn report(&self, stats: &Stats) -> HealthReport {
        let joined = self.kafka_joined.load(Ordering::Acquire);
        HealthReport {
            status: if self.is_ready() { "ok" } else { "unavailable" },
            draining: self.draining.load(Ordering::Acquire),
            uptime_secs: self.started.elapsed().as_secs(),
            kafka: KafkaReport {
                status: if joined { "up" } else { "connecting" },
                assigned_partitions: self.assigned_partitions.load(Ordering::Relaxed),
                embedded_broker: self.embedded_broker,
                records_consumed: stats.records_consumed.load(Ordering::Relaxed),
                records_invalid: stats.records_invalid.load(Ordering::Relaxed),
                records_dead_lettered: stats.records_dead_lettered.load(Ordering::Relaxed),
                dead_letter_failures: stats.dead_letter_failures.load(Ordering::Relaxed),
            },
            socketio: SocketReport {
                status: "up",
                connections: stats.connections.load(Ordering::Relaxed),
                emits: stats.emits.load(Ordering::Relaxed),
                emit_failures: stats.emit_failures.load(Ordering::Relaxed),
                auth_failures: stats.auth_failures.load(Ordering::Relaxed),
            },
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
        h.kafka_assigned(0);
        assert!(h.is_ready(), "an empty assignment is a legitimate idle member");
        h.kafka_revoked();
        assert!(h.is_ready(), "a rebalance does not make the node unready");
        h.start_draining();
        assert!(!h.is_ready());
        assert_eq!(h.report(&Stats::default()).status, "unavailable");
    }
}
