//! The one place every event goes through on its way to sockets: parse, route, store in
//! the replay history, emit.
//!
//! Kafka records and REST broadcasts enter here. The consumer stores a record's offset
//! only after [`Delivery::handle_record`] returns `Ok`, which gives at-least-once delivery:
//! an envelope is in the history (so a client that is away can replay it) before the
//! record counts as done.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socketioxide::BroadcastError;
use tokio_util::sync::CancellationToken;

use crate::decode::{Decoder, Input, RecordError, Schemas};
use crate::events::{ParseError, Source};
use crate::history::{Entry, History, HistoryError, NewEntry};
use crate::retry::Backoff;
use crate::routing::{Route, RoutingRules, route};
use crate::socket::gate::Gate;
use crate::socket::hub::Hub;
use crate::stats::Stats;

/// How long a REST broadcast waits for a cluster that does not take its emit (Redis
/// pub/sub away) before answering 503; see [`Patience`].
pub(crate) const CLUSTER_RETRY_FOR: Duration = Duration::from_secs(30);
const CLUSTER_BACKOFF_MIN: Duration = Duration::from_millis(100);
const CLUSTER_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Rooms remembered for a head announcement; beyond, the oldest wait for the next
/// pub/sub reconnection, when every node announces all its rooms' heads anyway.
const MAX_UNANNOUNCED_ROOMS: usize = 10_000;

/// How long a delivery waits for a cluster that does not take an emit (Redis pub/sub away).
/// An emit the adapter could not publish reached no socket at all, so retrying it
/// duplicates nothing; the wait never holds the [`Gate`], so handshakes and subscribes go
/// on meanwhile.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Patience<'a> {
    /// Until it is taken or `stop` fires: the consumer's records, which are then not stored
    /// (the next owner of the partition delivers them again), so shutdown is never held up
    /// by a retry and never stores an offset nobody was sent.
    UntilStopped(&'a CancellationToken),
    /// At most this long in all — the wait for an earlier delivery still retrying
    /// included: REST broadcasts, whose caller waits for an answer. Giving up is
    /// an error; the room's head is announced to its sockets once the cluster takes emits
    /// again ([`Delivery::announce_unannounced`]), so clients see the gap and replay it.
    /// One gap stays unsignalled: a socket that joined the room during the retry got a
    /// position past the envelope, so the announcement does not make it resync. It needs
    /// the cluster link down for 30 s while the history still works, and a join meanwhile.
    AtMost(Duration),
}

/// Why a delivery did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    /// The history could not store an envelope; nothing of it was emitted.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// Stored in the history, but the cluster did not take the emit in time (or shutdown
    /// began): not broadcast live.
    #[error("stored for replay, but the cluster did not take the broadcast")]
    NotBroadcast,
    /// An earlier delivery (a consumer batch the cluster does not take) held the pipeline
    /// for the whole wait [`Patience::AtMost`] allows: nothing was stored or emitted.
    #[error("an earlier delivery is still being retried; nothing was stored")]
    Busy,
}

/// A Kafka record as the pipeline needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// Epoch milliseconds as the producer or broker wrote them: any value.
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) key: Option<&'a [u8]>,
    /// Its headers (those with a value), in order.
    pub(crate) headers: &'a [(&'a str, &'a [u8])],
    pub(crate) payload: Option<&'a [u8]>,
}

/// What became of a record (handled alone, as tests do).
#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Stored and emitted to every room it routes to.
    Delivered,
    /// Not an event; the caller dead-letters it.
    Rejected(RecordError),
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
    /// Records → events: wire formats, envelopes, the mapping.
    decoder: Decoder,
    /// One delivery at a time: per-room order of emits holds even while one waits on a
    /// retry (which happens outside the gate).
    in_order: Arc<tokio::sync::Mutex<()>>,
    /// Rooms with an envelope that was stored but never broadcast (a REST broadcast gave up).
    unannounced: Arc<Mutex<BTreeSet<String>>>,
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
            decoder: Decoder::new(crate::mapping::Mapping::built_in(), None),
            in_order: Arc::default(),
            unannounced: Arc::default(),
        }
    }

    /// The same pipeline, decoding records with `decoder`.
    pub fn with_decoder(self, decoder: Decoder) -> Self {
        Delivery { decoder, ..self }
    }

    /// The decoding stage (its registry, for the consumer to fetch schemas before a batch).
    pub(crate) fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// Handles one record alone (the consumer settles batches). A record that is not a valid event comes back as
    /// [`Outcome::Rejected`] (logged with its coordinates); an error means it was not
    /// delivered (history unavailable, or `stop` fired while the cluster did not take an
    /// emit) and the record must be retried, its offset not stored.
    #[cfg(test)]
    pub(crate) async fn handle_record(&self, rec: Record<'_>, stop: &CancellationToken) -> Result<Outcome, DeliveryError> {
        match self.prepare(rec, &Schemas::default()) {
            Ok(routes) => {
                self.deliver(&routes, Patience::UntilStopped(stop)).await?;
                self.delivered(rec);
                Ok(Outcome::Delivered)
            }
            Err(error) => Ok(Outcome::Rejected(error)),
        }
    }

    /// Decodes and routes one record, counting it: where it goes, or why it is not an event
    /// (logged with its coordinates; the caller dead-letters it). `schemas` holds those its
    /// value names (the Confluent wire format), fetched beforehand.
    pub(crate) fn prepare(&self, rec: Record<'_>, schemas: &Schemas) -> Result<Vec<Route>, RecordError> {
        self.stats.consumed(rec.topic);
        let size = rec.payload.map_or(0, <[u8]>::len);
        let parsed = if size > self.max_record_bytes {
            Err(RecordError::Map(
                ParseError::TooLarge {
                    size,
                    limit: self.max_record_bytes,
                }
                .into(),
            ))
        } else {
            let input = Input {
                topic: rec.topic,
                key: rec.key,
                headers: rec.headers,
                payload: rec.payload,
            };
            self.decoder.event(&input, schemas)
        };
        match parsed {
            Ok((event, format, envelope)) => {
                crate::metrics::record_decoded(format.as_str(), envelope.as_str());
                self.stats.parsed(&event.event_type());
                let source = Source::kafka(rec.topic, rec.partition, rec.offset, rec.timestamp_ms);
                Ok(route(&event, &source, self.rules))
            }
            Err(error) => {
                self.stats.invalid(rec.topic);
                tracing::warn!(topic = rec.topic, partition = rec.partition, offset = rec.offset, %error, "record is not a valid event");
                Err(error)
            }
        }
    }

    /// Counts a record whose routes were delivered (Kafka → emit latency).
    pub(crate) fn delivered(&self, rec: Record<'_>) {
        if let Some(age) = rec.timestamp_ms.and_then(since_epoch_ms) {
            self.stats.latency(age);
        }
    }

    /// Stores the routes in their rooms' histories (one operation), then emits them in
    /// order (started together, one round trip with Redis). A socket whose buffer is full
    /// misses the live emit (socketioxide refuses rather than waits); the others still
    /// receive it, the missed one is in the history, and the slow socket is sent away to
    /// reconnect and replay it ([`crate::socket::slow`]).
    /// Returns what was stored, positions included, in the routes' order.
    ///
    /// The gate is held, for the routes' rooms only, over the append and the first emit
    /// attempt: an emit the cluster refuses is retried outside it, as `patience` says.
    /// If the cluster link failed halfway through a batch, a room's later envelopes may
    /// have gone out before the retried earlier one: clients see a gap in the positions and
    /// replay it (duplicates carry the same id), so nothing is lost, only late.
    pub(crate) async fn deliver(&self, routes: &[Route], patience: Patience<'_>) -> Result<Vec<Arc<Entry>>, DeliveryError> {
        if routes.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = match patience {
            Patience::AtMost(limit) => Some(tokio::time::Instant::now() + limit),
            Patience::UntilStopped(_) => None,
        };
        // One delivery at a time: a later one never overtakes a retry of this one. A
        // consumer batch retries until the cluster takes it, so a bounded caller bounds
        // this wait too.
        let _in_order = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, self.in_order.lock())
                .await
                .map_err(|_| DeliveryError::Busy)?,
            None => self.in_order.lock().await,
        };
        let rooms: Vec<String> = routes.iter().map(|r| r.room.clone()).collect();
        let entries = routes
            .iter()
            .map(|r| NewEntry {
                room: r.room.clone(),
                event: r.event.clone(),
                envelope: r.envelope.clone(),
                // Stored with the entry, in the same step: see `History::snapshot`.
                state: crate::routing::product_state(r),
            })
            .collect();
        let (stored, firsts) = {
            let _emitting = self.gate.emitting(rooms.iter().map(String::as_str)).await;
            let stored = self.history.append_all(entries).await?;
            let batch: Vec<(&str, &Entry)> = rooms.iter().map(String::as_str).zip(stored.iter().map(Arc::as_ref)).collect();
            let firsts = self.hub.emit_all(&batch).await;
            (stored, firsts)
        };
        let mut gave_up = false;
        for ((room, entry), first) in rooms.iter().zip(&stored).zip(firsts) {
            let missed = match first {
                Ok(missed) => missed,
                Err(BroadcastError::Adapter(_)) if gave_up => {
                    if matches!(patience, Patience::AtMost(_)) {
                        self.remember_unannounced(room);
                    }
                    continue;
                }
                Err(BroadcastError::Adapter(error)) => match self.retry_emit(room, entry, &error.to_string(), patience, deadline).await {
                    Ok(missed) => missed,
                    Err(_) => {
                        gave_up = true;
                        continue;
                    }
                },
                Err(error) => {
                    tracing::error!(room, id = %entry.envelope.id, %error, "emit failed; the envelope stays in the history for replay");
                    1
                }
            };
            self.stats.emitted(&entry.event, missed);
        }
        if gave_up {
            return Err(DeliveryError::NotBroadcast);
        }
        Ok(stored)
    }

    /// Retries an emit the adapter could not publish, until `patience` or `deadline` (the
    /// end of an [`Patience::AtMost`] wait) says to stop; returns how many sockets missed it.
    async fn retry_emit(
        &self,
        room: &str,
        entry: &Entry,
        first_error: &str,
        patience: Patience<'_>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<usize, DeliveryError> {
        let mut backoff = Backoff::new(CLUSTER_BACKOFF_MIN, CLUSTER_BACKOFF_MAX);
        let mut error = first_error.to_owned();
        let unstoppable = CancellationToken::new();
        let stop = match patience {
            Patience::UntilStopped(stop) => stop,
            Patience::AtMost(_) => &unstoppable,
        };
        loop {
            let give_up = match patience {
                Patience::UntilStopped(stop) => stop.is_cancelled(),
                Patience::AtMost(_) => deadline.is_none_or(|d| tokio::time::Instant::now() >= d),
            };
            if give_up {
                tracing::error!(room, id = %entry.envelope.id, %error, "the cluster did not take an emit; giving up (the envelope stays in the history)");
                if matches!(patience, Patience::AtMost(_)) {
                    self.remember_unannounced(room);
                }
                return Err(DeliveryError::NotBroadcast);
            }
            tracing::warn!(room, id = %entry.envelope.id, %error, retry_in = ?backoff.upcoming(), "the cluster did not take an emit; retrying");
            self.stats.cluster_emit_retry();
            if !backoff.pause(stop).await {
                continue;
            }
            match self.hub.emit(room, &entry.event, &entry.envelope).await {
                Ok(missed) => return Ok(missed),
                Err(BroadcastError::Adapter(e)) => error = e.to_string(),
                Err(e) => {
                    tracing::error!(room, id = %entry.envelope.id, error = %e, "emit failed; the envelope stays in the history for replay");
                    return Ok(1);
                }
            }
        }
    }

    fn remember_unannounced(&self, room: &str) {
        let mut rooms = self.unannounced.lock().unwrap_or_else(|p| p.into_inner());
        if rooms.len() >= MAX_UNANNOUNCED_ROOMS {
            rooms.pop_first();
        }
        rooms.insert(room.to_owned());
    }

    /// Tells every socket of each room whose envelope was stored but never broadcast the
    /// room's head (`sync:position`, through the cluster), so clients behind it resync.
    /// Called once a second while Redis is up; returns how many rooms were announced.
    pub(crate) async fn announce_unannounced(&self) -> usize {
        let rooms = std::mem::take(&mut *self.unannounced.lock().unwrap_or_else(|p| p.into_inner()));
        let mut announced = 0;
        for room in rooms {
            let done = match self.history.head(&room).await {
                Ok(head) => self.hub.announce(&head.in_room(room.clone())).await.is_ok(),
                Err(_) => false,
            };
            if done {
                announced += 1;
            } else {
                self.remember_unannounced(&room);
            }
        }
        announced
    }
}

/// Time elapsed since an epoch-milliseconds timestamp (`None` if it is in the future).
fn since_epoch_ms(ms: i64) -> Option<Duration> {
    // The timestamp comes from the producer: any value, hence the checked addition.
    let at = UNIX_EPOCH.checked_add(Duration::from_millis(u64::try_from(ms).ok()?))?;
    SystemTime::now().duration_since(at).ok()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use socketioxide::AdapterError;

    use super::*;
    use crate::events::{Envelope, Position};
    use crate::history::{Cursor, HistoryLimits, MemoryHistory, Replay};
    use crate::socket::hub::{ClusterView, LocalView};

    /// A recording hub: what was emitted, in order, and what was announced.
    #[derive(Default)]
    struct FlakyHub {
        up: AtomicBool,
        /// Sockets of this node that miss every emit (a full buffer).
        slow: std::sync::atomic::AtomicUsize,
        emitted: Mutex<Vec<String>>,
        sequence: Mutex<Vec<(String, String, u64)>>,
        announced: Mutex<Vec<Position>>,
    }

    fn down() -> BroadcastError {
        BroadcastError::Adapter(AdapterError(Box::new(std::io::Error::other("redis down"))))
    }

    #[async_trait]
    impl Hub for FlakyHub {
        async fn emit(&self, room: &str, event: &str, envelope: &Envelope) -> Result<usize, BroadcastError> {
            if !self.up.load(Ordering::SeqCst) {
                return Err(down());
            }
            self.emitted.lock().unwrap().push(envelope.id.clone());
            let seq = envelope.position.as_ref().map_or(0, |p| p.seq);
            self.sequence.lock().unwrap().push((room.to_owned(), event.to_owned(), seq));
            Ok(self.slow.load(Ordering::SeqCst))
        }
        async fn announce(&self, position: &Position) -> Result<(), BroadcastError> {
            if !self.up.load(Ordering::SeqCst) {
                return Err(down());
            }
            self.announced.lock().unwrap().push(position.clone());
            Ok(())
        }
        fn local(&self) -> LocalView {
            LocalView::default()
        }
        async fn cluster(&self) -> Result<ClusterView, String> {
            Ok(ClusterView::default())
        }
        async fn announce_heads(&self, _history: &dyn History) -> usize {
            0
        }
        async fn close(&self) {}
    }

    fn delivery(hub: Arc<dyn Hub>) -> (Delivery, Arc<Gate>) {
        let gate = Arc::new(Gate::default());
        let history = Arc::new(MemoryHistory::new(HistoryLimits::count_and_age(100, Duration::from_secs(600))));
        let d = Delivery::new(
            hub,
            RoutingRules { low_stock_threshold: 5 },
            Arc::new(Stats::default()),
            history,
            gate.clone(),
            1 << 20,
        );
        (d, gate)
    }

    fn routes(id: &str) -> Vec<Route> {
        crate::routing::admin_event("test", serde_json::json!({"n": id}), &Source::rest())
    }

    use proptest::prelude::Strategy as _;

    proptest::proptest! {
        /// Whatever a record's metadata — topic, partition, offset, timestamp of any value —
        /// and value, handling it delivers it or rejects it (for the dead-letter topic); it
        /// never panics. Valid values are mixed in so the delivery path sees odd metadata too.
        #[test]
        fn any_record_metadata_is_delivered_or_rejected(
            topic in proptest::prop_oneof![
                proptest::sample::select(vec!["order.updated", "order.created", "inventory.updated", "product.updated"]).prop_map(str::to_owned),
                "order\\.[a-z0-9_-]{1,70}",
                ".{0,300}",
            ],
            partition in proptest::prelude::any::<i32>(),
            offset in proptest::prelude::any::<i64>(),
            timestamp in proptest::option::of(proptest::prop_oneof![
                proptest::prelude::any::<i64>(),
                proptest::prelude::Just(i64::MAX),
                proptest::prelude::Just(i64::MIN),
                proptest::prelude::Just(1_795_359_845_123_000_i64),
            ]),
            value in proptest::option::of(proptest::prop_oneof![
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
                proptest::prelude::Just(br#"{"orderId":"o-1","buyerId":"u-1","status":"paid"}"#.to_vec()),
                proptest::prelude::Just(br#"{"productId":"p-1","stock":3,"previousStock":9}"#.to_vec()),
            ]),
        ) {
            let hub = Arc::new(FlakyHub::default());
            hub.up.store(true, Ordering::SeqCst);
            let (d, _) = delivery(hub);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let record = Record { topic: &topic, partition, offset, timestamp_ms: timestamp, key: None, headers: &[], payload: value.as_deref() };
            let outcome = rt.block_on(d.handle_record(record, &CancellationToken::new()));
            proptest::prop_assert!(matches!(outcome, Ok(Outcome::Delivered | Outcome::Rejected(_))), "{outcome:?}");
        }
    }

    /// Sockets as rooms of members, each socket's received `(room, seq)` in order. An emit
    /// waits for another task to run before it reaches the sockets (as one waiting on Redis
    /// would; a `yield_now` would not do: polled again at once, it is ready).
    #[derive(Default)]
    struct RoomsHub {
        members: Mutex<std::collections::HashMap<String, Vec<usize>>>,
        received: Mutex<std::collections::HashMap<usize, Vec<(String, u64)>>>,
    }

    impl RoomsHub {
        fn deliver_to(&self, socket: usize, room: &str, seq: u64) {
            self.received
                .lock()
                .unwrap()
                .entry(socket)
                .or_default()
                .push((room.to_owned(), seq));
        }
    }

    #[async_trait]
    impl Hub for RoomsHub {
        async fn emit(&self, room: &str, _event: &str, envelope: &Envelope) -> Result<usize, BroadcastError> {
            let _ = tokio::spawn(async {}).await;
            let seq = envelope.position.as_ref().map_or(0, |p| p.seq);
            let members = self.members.lock().unwrap().get(room).cloned().unwrap_or_default();
            for socket in members {
                self.deliver_to(socket, room, seq);
            }
            Ok(0)
        }
        async fn announce(&self, _position: &Position) -> Result<(), BroadcastError> {
            Ok(())
        }
        fn local(&self) -> LocalView {
            LocalView::default()
        }
        async fn cluster(&self) -> Result<ClusterView, String> {
            Ok(ClusterView::default())
        }
        async fn announce_heads(&self, _history: &dyn History) -> usize {
            0
        }
        async fn close(&self) {}
    }

    const ROOMS: [&str; 3] = ["user:1", "user:2", "admin:dashboard"];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// Batches of routes to a few rooms are delivered while sockets, each holding a
        /// position taken earlier, replay what they missed and join (as a reconnecting
        /// client does, under the gate). Whatever the batch sizes and timing, every socket
        /// receives each room's envelopes exactly once, in order, from right after its
        /// position to the room's last: replay-before-live, nothing lost, nothing reordered.
        #[test]
        fn batches_joins_and_replays_interleave_without_loss_or_reordering(
            batches in proptest::collection::vec((proptest::collection::vec(0..ROOMS.len(), 1..12), 0..6_usize), 1..12),
            sockets in proptest::collection::vec((0..ROOMS.len(), 0..30_usize, 0..10_usize), 1..8),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let hub = Arc::new(RoomsHub::default());
            let (d, gate) = delivery(hub.clone());
            let history = d.history.clone();
            let expected: Vec<(usize, String, Cursor)> = rt.block_on(async {
                let producer = {
                    let d = d.clone();
                    tokio::spawn(async move {
                        for (b, (batch, pause)) in batches.iter().enumerate() {
                            let routes: Vec<Route> = batch.iter().enumerate().map(|(i, room)| Route {
                                room: ROOMS[*room].to_owned(),
                                event: "e".to_owned(),
                                envelope: Envelope {
                                    id: format!("{b}-{i}"),
                                    event_type: "t".to_owned(),
                                    occurred_at: String::new(),
                                    data: serde_json::Value::Null,
                                    message: None,
                                    priority: None,
                                    position: None,
                                },
                            }).collect();
                            d.deliver(&routes, Patience::AtMost(CLUSTER_RETRY_FOR)).await.unwrap();
                            for _ in 0..*pause { tokio::task::yield_now().await; }
                        }
                    })
                };
                let joins: Vec<_> = sockets.iter().enumerate().map(|(id, &(room, before_cursor, before_join))| {
                    let (hub, gate, history) = (hub.clone(), gate.clone(), history.clone());
                    tokio::spawn(async move {
                        let room = ROOMS[room];
                        for _ in 0..before_cursor { tokio::task::yield_now().await; }
                        let cursor = history.open(room).await.unwrap();
                        for _ in 0..before_join { tokio::task::yield_now().await; }
                        let _joining = gate.joining([room]).await;
                        let Replay::Complete(missed) = history.since(room, &cursor).await.unwrap() else {
                            panic!("the history holds everything here");
                        };
                        for entry in missed {
                            hub.deliver_to(id, room, entry.envelope.position.as_ref().unwrap().seq);
                        }
                        hub.members.lock().unwrap().entry(room.to_owned()).or_default().push(id);
                        (id, room.to_owned(), cursor)
                    })
                }).collect();
                let mut expected = Vec::new();
                for join in joins {
                    expected.push(join.await.unwrap());
                }
                producer.await.unwrap();
                expected
            });
            let received = hub.received.lock().unwrap();
            for (id, room, cursor) in expected {
                let last = rt.block_on(history.head(&room)).unwrap().seq;
                let want: Vec<(String, u64)> = (cursor.seq + 1..=last).map(|seq| (room.clone(), seq)).collect();
                let got = received.get(&id).cloned().unwrap_or_default();
                proptest::prop_assert_eq!(got, want, "socket {} in {}", id, room);
            }
        }
    }

    /// A consumer-style delivery of one route, in the background.
    fn deliver_until_stopped(d: &Delivery, stop: &CancellationToken) -> tokio::task::JoinHandle<Result<Vec<Arc<Entry>>, DeliveryError>> {
        let (d, stop) = (d.clone(), stop.clone());
        tokio::spawn(async move { d.deliver(&routes("a"), Patience::UntilStopped(&stop)).await })
    }

    #[tokio::test]
    async fn routes_are_stored_then_emitted_in_order_with_their_positions() {
        let hub = Arc::new(FlakyHub::default());
        hub.up.store(true, Ordering::SeqCst);
        let (d, _) = delivery(hub.clone());
        let record = Record {
            topic: "inventory.updated",
            partition: 0,
            offset: 7,
            timestamp_ms: None,
            key: None,
            headers: &[],
            payload: Some(br#"{"productId":"p-1","stock":0,"previousStock":4}"#),
        };
        for _ in 0..2 {
            let outcome = d.handle_record(record, &CancellationToken::new()).await.unwrap();
            assert_eq!(outcome, Outcome::Delivered);
        }
        let sequence = hub.sequence.lock().unwrap().clone();
        let expected = |seq| {
            vec![
                ("inventory:updates".to_owned(), "inventory:updated".to_owned(), seq),
                ("product:p-1".to_owned(), "inventory:updated".to_owned(), seq),
                ("admin:dashboard".to_owned(), "admin:inventory:out-of-stock".to_owned(), seq),
            ]
        };
        assert_eq!(
            sequence,
            [expected(1), expected(2)].concat(),
            "route order, each room numbered on its own"
        );
    }

    #[tokio::test]
    async fn sockets_that_miss_an_emit_are_counted_and_the_record_still_counts_as_delivered() {
        let hub = Arc::new(FlakyHub::default());
        hub.up.store(true, Ordering::SeqCst);
        hub.slow.store(2, Ordering::SeqCst);
        let (d, _) = delivery(hub);
        let stored = d.deliver(&routes("a"), Patience::AtMost(CLUSTER_RETRY_FOR)).await.unwrap();
        assert_eq!(stored.len(), 1, "in the history: the slow sockets replay it");
        let totals = d.stats.totals();
        assert_eq!((totals.emits, totals.emit_failures), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retried_emit_holds_no_lock_handshakes_wait_on() {
        let hub = Arc::new(FlakyHub::default());
        let (d, gate) = delivery(hub.clone());
        let stop = CancellationToken::new();
        let delivering = deliver_until_stopped(&d, &stop);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!delivering.is_finished(), "still retrying");
        let joined = tokio::time::timeout(Duration::from_millis(10), gate.joining(["admin:dashboard"])).await;
        assert!(joined.is_ok(), "a joining socket does not wait behind the retry");
        drop(joined);
        hub.up.store(true, Ordering::SeqCst);
        let stored = delivering.await.unwrap().unwrap();
        assert_eq!(hub.emitted.lock().unwrap().as_slice(), [stored[0].envelope.id.clone()]);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_a_retry_at_once_and_the_record_does_not_count_as_delivered() {
        let hub = Arc::new(FlakyHub::default());
        let (d, _) = delivery(hub);
        let stop = CancellationToken::new();
        let delivering = deliver_until_stopped(&d, &stop);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!delivering.is_finished(), "a record is retried for as long as it takes");
        let cancelled_at = tokio::time::Instant::now();
        stop.cancel();
        let result = delivering.await.unwrap();
        assert!(matches!(result, Err(DeliveryError::NotBroadcast)), "{result:?}");
        assert!(cancelled_at.elapsed() < Duration::from_millis(10), "no wait for a backoff");
    }

    #[tokio::test(start_paused = true)]
    async fn a_bounded_delivery_does_not_wait_longer_behind_a_retrying_one() {
        let hub = Arc::new(FlakyHub::default());
        let (d, _) = delivery(hub.clone());
        let stop = CancellationToken::new();
        let consumer = deliver_until_stopped(&d, &stop);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!consumer.is_finished(), "the consumer's batch is retried for as long as it takes");
        let started = tokio::time::Instant::now();
        let result = d.deliver(&routes("rest"), Patience::AtMost(CLUSTER_RETRY_FOR)).await;
        assert!(matches!(result, Err(DeliveryError::Busy)), "{result:?}");
        assert_eq!(started.elapsed(), CLUSTER_RETRY_FOR, "no longer than promised");
        assert_eq!(
            d.history.head(crate::routing::ADMIN_ROOM).await.unwrap().seq,
            1,
            "the broadcast was not stored"
        );
        stop.cancel();
        let _ = consumer.await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_broadcast_given_up_is_announced_once_the_cluster_is_back() {
        let hub = Arc::new(FlakyHub::default());
        let (d, _) = delivery(hub.clone());
        let result = d.deliver(&routes("a"), Patience::AtMost(CLUSTER_RETRY_FOR)).await;
        assert!(matches!(result, Err(DeliveryError::NotBroadcast)), "{result:?}");
        assert_eq!(d.announce_unannounced().await, 0, "nothing goes out while the cluster is down");
        hub.up.store(true, Ordering::SeqCst);
        assert_eq!(d.announce_unannounced().await, 1);
        let announced = hub.announced.lock().unwrap().clone();
        assert_eq!(announced.len(), 1);
        assert_eq!((announced[0].room.as_str(), announced[0].seq), (crate::routing::ADMIN_ROOM, 1));
        assert_eq!(d.announce_unannounced().await, 0, "announced once");
    }
}
