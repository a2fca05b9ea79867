//! The one place every event goes through on its way to sockets: parse, route, store in
//! the replay history, emit.
//!
//! Kafka records enter here; so will REST broadcasts. The caller stores the Kafka offset
//! only after [`Delivery::handle_record`] returns `Ok`, which gives at-least-once delivery:
//! an envelope is in the history (so a client that is away can replay it) before the
//! record counts as done.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socketioxide::BroadcastError;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::events::{Event, ParseError, Source};
use crate::history::{Entry, History, HistoryError};
use crate::routing::{Route, RoutingRules, route};
use crate::socket::hub::Hub;
use crate::stats::Stats;

/// How long an emit the adapter could not publish (Redis away) is retried before the
/// envelope is left to the history: clients then see the gap at their next envelope or
/// `sync:position` and replay it.
const CLUSTER_RETRY_FOR: Duration = Duration::from_secs(30);
const CLUSTER_BACKOFF_MIN: Duration = Duration::from_millis(100);
const CLUSTER_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A Kafka record as the pipeline needs it.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Record timestamp, epoch milliseconds.
    pub timestamp_ms: Option<i64>,
    /// The value.
    pub payload: Option<&'a [u8]>,
}

/// What became of a record.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored and emitted to every room it routes to.
    Delivered,
    /// Not an event; the caller dead-letters it.
    Rejected(ParseError),
}

/// Orders live emits against replays, so a reconnecting socket receives its missed
/// envelopes before any live one and never loses one in between.
///
/// Emitting (history append + emit) holds it exclusively; a socket joining a room reads
/// the last part of the history and joins while holding it shared. So an envelope is
/// either in what the socket replays, or emitted after the socket joined — never neither.
#[derive(Debug, Default)]
pub struct Gate(RwLock<()>);

impl Gate {
    /// Held while envelopes are stored and emitted.
    pub async fn emitting(&self) -> RwLockWriteGuard<'_, ()> {
        self.0.write().await
    }

    /// Held while a socket catches up and joins rooms.
    pub async fn joining(&self) -> RwLockReadGuard<'_, ()> {
        self.0.read().await
    }
}

/// Parses, routes, stores and emits.
#[derive(Clone)]
pub struct Delivery {
    hub: Arc<dyn Hub>,
    rules: RoutingRules,
    stats: Arc<Stats>,
    history: Arc<dyn History>,
    gate: Arc<Gate>,
    max_record_bytes: usize,
}

impl Delivery {
    /// A pipeline emitting through `hub` and recording into `history`.
    pub fn new(
        hub: Arc<dyn Hub>,
        rules: RoutingRules,
        stats: Arc<Stats>,
        history: Arc<dyn History>,
        gate: Arc<Gate>,
        max_record_bytes: usize,
    ) -> Self {
        Delivery {
            hub,
            rules,
            stats,
            history,
            gate,
            max_record_bytes,
        }
    }

    /// Handles one record. A record that is not a valid event comes back as
    /// [`Outcome::Rejected`] (logged with its coordinates); an error means the history
    /// could not store it and the record must be retried.
    pub async fn handle_record(&self, rec: Record<'_>) -> Result<Outcome, HistoryError> {
        self.stats.consumed(rec.topic);
        let size = rec.payload.map_or(0, <[u8]>::len);
        let parsed = if size > self.max_record_bytes {
            Err(ParseError::TooLarge {
                size,
                limit: self.max_record_bytes,
            })
        } else {
            Event::parse(rec.topic, rec.payload)
        };
        match parsed {
            Ok(event) => {
                self.stats.parsed(&event.event_type());
                let source = Source::kafka(rec.topic, rec.partition, rec.offset, rec.timestamp_ms);
                self.deliver(route(&event, &source, self.rules)).await?;
                if let Some(age) = rec.timestamp_ms.and_then(since_epoch_ms) {
                    self.stats.latency(age);
                }
                Ok(Outcome::Delivered)
            }
            Err(error) => {
                self.stats.invalid(rec.topic);
                tracing::warn!(topic = rec.topic, partition = rec.partition, offset = rec.offset, %error, "record is not a valid event");
                Ok(Outcome::Rejected(error))
            }
        }
    }

    /// Stores each route in its room's history, then emits it, in order. A socket whose
    /// buffer is full misses the live emit (socketioxide refuses rather than waits); the
    /// others still receive it, the missed one is in the history, and the slow socket is
    /// sent away to reconnect and replay it ([`crate::socket::slow`]).
    /// Returns what was stored, positions included.
    pub async fn deliver(&self, routes: Vec<Route>) -> Result<Vec<Arc<Entry>>, HistoryError> {
        let _emitting = self.gate.emitting().await;
        let mut stored = Vec::with_capacity(routes.len());
        for r in routes {
            let entry = self.history.append(&r.room, &r.event, r.envelope).await?;
            let missed = self.emit(&r.room, &entry).await;
            self.stats.emitted(&entry.event, missed);
            stored.push(entry);
        }
        Ok(stored)
    }

    /// Emits a stored entry; returns how many sockets missed it. An emit the adapter could
    /// not publish reached no socket at all, so retrying it duplicates nothing.
    async fn emit(&self, room: &str, entry: &Entry) -> usize {
        let give_up = tokio::time::Instant::now() + CLUSTER_RETRY_FOR;
        let mut backoff = CLUSTER_BACKOFF_MIN;
        loop {
            match self.hub.emit(room, &entry.event, &entry.envelope).await {
                Ok(missed) => return missed,
                Err(BroadcastError::Adapter(error)) if tokio::time::Instant::now() < give_up => {
                    tracing::warn!(room, id = %entry.envelope.id, %error, ?backoff, "the cluster did not take an emit; retrying");
                    self.stats.cluster_emit_retry();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(CLUSTER_BACKOFF_MAX);
                }
                Err(error) => {
                    tracing::error!(room, id = %entry.envelope.id, %error, "emit failed; the envelope stays in the history for replay");
                    return 1;
                }
            }
        }
    }
}

/// Time elapsed since an epoch-milliseconds timestamp (`None` if it is in the future).
fn since_epoch_ms(ms: i64) -> Option<Duration> {
    // The timestamp comes from the producer: any value, hence the checked addition.
    let at = UNIX_EPOCH.checked_add(Duration::from_millis(u64::try_from(ms).ok()?))?;
    SystemTime::now().duration_since(at).ok()
}
