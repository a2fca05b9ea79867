//! What the bridge has done since start: one call per fact, which updates both the
//! counters `/health` and `/realtime/stats` read and the Prometheus metrics.
//!
//! Call sites say what happened (`stats.dead_lettered(topic)`); the names and labels of
//! the metrics live in [`crate::metrics`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::metrics as m;

/// Distinct names counted one by one per kind (socket event names, Kafka topics, event
/// types): every label an outsider can influence is bounded. Topics come from regex
/// subscriptions, event types from topic names, admin event names from operators.
pub(crate) const MAX_EVENT_NAMES: usize = 256;
/// Where further names are counted.
pub(crate) const OTHER_EVENTS: &str = "(other)";

/// Counters since start, plus the consumer's last known lag.
#[derive(Debug, Default)]
pub struct Stats {
    records_consumed: AtomicU64,
    records_invalid: AtomicU64,
    records_dead_lettered: AtomicU64,
    dead_letter_failures: AtomicU64,
    emits: AtomicU64,
    emit_failures: AtomicU64,
    connections: AtomicI64,
    auth_failures: AtomicU64,
    rest_broadcasts: AtomicU64,
    per_topic: Mutex<BTreeMap<String, TopicCounts>>,
    per_event: Mutex<BTreeMap<String, EventCounts>>,
    per_type: Mutex<BTreeMap<String, u64>>,
    lag: Mutex<BTreeMap<(String, i32), i64>>,
}

/// Counters of one Kafka topic.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicCounts {
    /// Records received.
    pub consumed: u64,
    /// Records that were not valid events.
    pub invalid: u64,
    /// Records copied to the dead-letter topic.
    pub dead_lettered: u64,
}

/// Counters of one socket event name (e.g. `order:updated`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventCounts {
    /// Times it was routed to a room (Kafka or REST).
    pub routed: u64,
    /// Room emits that failed for at least one socket.
    pub emit_failures: u64,
}

/// A snapshot of the totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Kafka records received.
    pub records_consumed: u64,
    /// Records that were not valid events.
    pub records_invalid: u64,
    /// Invalid records copied to the dead-letter topic.
    pub records_dead_lettered: u64,
    /// Failed dead-letter produce attempts (each is retried).
    pub dead_letter_failures: u64,
    /// Room emits (one per route).
    pub emits: u64,
    /// Room emits that failed for at least one socket.
    pub emit_failures: u64,
    /// Sockets connected to this node now.
    pub connections: i64,
    /// Handshakes refused.
    pub auth_failures: u64,
    /// Events sent through the REST API.
    pub rest_broadcasts: u64,
}

/// Consumer lag of one assigned partition, from librdkafka's statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Records behind the partition's end (high watermark minus consumed position).
    pub lag: i64,
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// A Kafka record arrived.
    pub fn consumed(&self, topic: &str) {
        add(&self.records_consumed);
        m::records_consumed(self.topic(topic, |c| c.consumed += 1));
    }

    /// A record was not a valid event.
    pub fn invalid(&self, topic: &str) {
        add(&self.records_invalid);
        m::records_invalid(self.topic(topic, |c| c.invalid += 1));
    }

    /// A record was parsed into an event of this dotted type.
    pub fn parsed(&self, event_type: &str) {
        m::events_consumed(count(&self.per_type, event_type, |n| *n += 1));
    }

    /// A record was copied to the dead-letter topic.
    pub(crate) fn dead_lettered(&self, topic: &str) {
        add(&self.records_dead_lettered);
        m::records_dead_lettered(self.topic(topic, |c| c.dead_lettered += 1));
    }

    /// An attempt to produce to the dead-letter topic failed (it is retried).
    pub(crate) fn dead_letter_failed(&self) {
        add(&self.dead_letter_failures);
        m::dead_letter_failures();
    }

    /// An envelope was routed to a room under this socket event name and emitted;
    /// `missed` sockets of the room could not take it (buffer full or closing).
    pub fn emitted(&self, event: &str, missed: usize) {
        add(&self.emits);
        let failed = missed > 0;
        if failed {
            add(&self.emit_failures);
        }
        let event = count(&self.per_event, event, |c| {
            c.routed += 1;
            c.emit_failures += u64::from(failed);
        });
        m::emitted(event, missed);
    }

    /// Time from the Kafka record's timestamp to its emit.
    pub fn latency(&self, since_record: Duration) {
        m::kafka_to_emit(since_record);
    }

    /// A socket connected.
    pub fn connected(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        m::connected();
    }

    /// A socket disconnected, for this reason.
    pub(crate) fn disconnected(&self, reason: &str) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        m::disconnected(reason);
    }

    /// A handshake was refused.
    pub(crate) fn auth_failed(&self) {
        add(&self.auth_failures);
        m::auth_failures();
    }

    /// A reconnecting socket asked to resume a room; `recovered` says how it went.
    pub(crate) fn resumed(&self, recovered: bool) {
        m::replays(recovered);
    }

    /// A client hit a limit (`limit` names it).
    pub(crate) fn limit_refused(&self, limit: &'static str) {
        m::limit_refusals(limit);
    }

    /// A socket too slow to take its events was disconnected.
    pub(crate) fn slow_disconnected(&self) {
        m::slow_disconnects();
    }

    /// A broadcast from another node was dropped: this node fell behind on Redis.
    pub(crate) fn cluster_dropped(&self) {
        m::cluster_dropped();
    }

    /// Redis did not take a room broadcast; it is retried.
    pub(crate) fn cluster_emit_retry(&self) {
        m::cluster_emit_retries();
    }

    /// A long-lived task (`task` names it) failed.
    pub(crate) fn task_failed(&self, task: &'static str) {
        m::task_failures(task);
    }

    /// Handling a record panicked (a bug); the record was dead-lettered.
    pub(crate) fn record_panicked(&self) {
        m::record_panics();
    }

    /// An event was sent through the REST API.
    pub(crate) fn rest_broadcast(&self, kind: &'static str) {
        add(&self.rest_broadcasts);
        m::rest_broadcasts(kind);
    }

    /// Replaces the lag of the assigned partitions with a fresh reading.
    pub(crate) fn set_lag(&self, lags: impl IntoIterator<Item = PartitionLag>) {
        let mut lag = self.lag.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, partition) in lag.keys() {
            m::consumer_lag_gone(topic, *partition);
        }
        lag.clear();
        for l in lags {
            m::consumer_lag(&l.topic, l.partition, l.lag);
            lag.insert((l.topic, l.partition), l.lag);
        }
    }

    /// The totals now.
    pub fn totals(&self) -> Totals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Totals {
            records_consumed: get(&self.records_consumed),
            records_invalid: get(&self.records_invalid),
            records_dead_lettered: get(&self.records_dead_lettered),
            dead_letter_failures: get(&self.dead_letter_failures),
            emits: get(&self.emits),
            emit_failures: get(&self.emit_failures),
            connections: self.connections.load(Ordering::Relaxed),
            auth_failures: get(&self.auth_failures),
            rest_broadcasts: get(&self.rest_broadcasts),
        }
    }

    /// Counters per Kafka topic.
    pub(crate) fn per_topic(&self) -> BTreeMap<String, TopicCounts> {
        self.per_topic.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Counters per socket event name.
    pub(crate) fn per_event(&self) -> BTreeMap<String, EventCounts> {
        self.per_event.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The last lag reading, per assigned partition.
    pub(crate) fn lag(&self) -> Vec<PartitionLag> {
        let lag = self.lag.lock().unwrap_or_else(|p| p.into_inner());
        lag.iter()
            .map(|((topic, partition), lag)| PartitionLag {
                topic: topic.clone(),
                partition: *partition,
                lag: *lag,
            })
            .collect()
    }

    fn topic<'a>(&self, topic: &'a str, f: impl FnOnce(&mut TopicCounts)) -> &'a str {
        count(&self.per_topic, topic, f)
    }
}

/// Updates the counters of `name` in `map` and returns the name they are kept under (the
/// metrics label): past [`MAX_EVENT_NAMES`] names, new ones share [`OTHER_EVENTS`] instead
/// of growing the map and the metrics without bound.
fn count<'a, V: Default>(map: &Mutex<BTreeMap<String, V>>, name: &'a str, f: impl FnOnce(&mut V)) -> &'a str {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = map.get_mut(name) {
        f(c);
        return name;
    }
    let name = if map.len() < MAX_EVENT_NAMES { name } else { OTHER_EVENTS };
    f(map.entry(name.to_owned()).or_default());
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_topic_and_per_event() {
        let s = Stats::default();
        s.consumed("order.updated");
        s.consumed("order.updated");
        s.invalid("order.updated");
        s.dead_lettered("order.updated");
        s.emitted("order:updated", 0);
        s.emitted("order:updated", 2);
        s.connected();
        let t = s.totals();
        assert_eq!((t.records_consumed, t.records_invalid, t.records_dead_lettered), (2, 1, 1));
        assert_eq!((t.emits, t.emit_failures, t.connections), (2, 1, 1));
        assert_eq!(
            s.per_topic()["order.updated"],
            TopicCounts {
                consumed: 2,
                invalid: 1,
                dead_lettered: 1
            }
        );
        assert_eq!(
            s.per_event()["order:updated"],
            EventCounts {
                routed: 2,
                emit_failures: 1
            }
        );
    }

    #[test]
    fn event_names_are_bounded() {
        let s = Stats::default();
        for i in 0..MAX_EVENT_NAMES + 10 {
            s.emitted(&format!("admin:e{i}"), 0);
        }
        s.emitted("admin:e0", 0);
        let events = s.per_event();
        assert_eq!(events.len(), MAX_EVENT_NAMES + 1);
        assert_eq!(events[OTHER_EVENTS].routed, 10);
        assert_eq!(events["admin:e0"].routed, 2);
    }

    #[test]
    fn topics_and_event_types_are_bounded_too() {
        let s = Stats::default();
        for i in 0..MAX_EVENT_NAMES + 10 {
            s.consumed(&format!("order.t{i}"));
            s.parsed(&format!("order.t{i}"));
        }
        let topics = s.per_topic();
        assert_eq!(topics.len(), MAX_EVENT_NAMES + 1);
        assert_eq!(topics[OTHER_EVENTS].consumed, 10);
        assert_eq!(s.per_type.lock().unwrap().len(), MAX_EVENT_NAMES + 1);
    }

    #[test]
    fn a_lag_reading_replaces_the_previous_one() {
        let s = Stats::default();
        let lag = |p, lag| PartitionLag {
            topic: "order.updated".into(),
            partition: p,
            lag,
        };
        s.set_lag([lag(0, 5), lag(1, 0)]);
        s.set_lag([lag(1, 3)]);
        assert_eq!(s.lag(), vec![lag(1, 3)], "a revoked partition disappears");
    }
}
