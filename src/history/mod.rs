//! The replay history: every envelope routed to a room, kept for a while, so a client that
//! reconnects gets what it missed.
//!
//! Each room numbers its envelopes 1, 2, 3… within an *epoch*. An epoch is a random name
//! the room's history gets when it starts (first use, or after it was forgotten — always
//! after a restart of the in-memory store), so a client holding a position from an older
//! epoch is told its gap cannot be filled instead of receiving a wrong replay.
//!
//! Bounded by count and age per room; rooms whose history is empty are forgotten after
//! [`MemoryHistory::IDLE_ROOM_TTL`] (or the age bound, if longer) without events.
//! [`History`] is a trait so that a shared store ([`crate::redis::history::RedisHistory`]) can take this
//! one's place.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::events::{Envelope, Position};

/// Where a client is in one room: the last `seq` it saw within `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Cursor {
    /// The room history's epoch. `~` followed by a time (`~1796000000000`) is the position in
    /// a room that had no history when it was read: the room's first envelope starts a real
    /// epoch at `seq` 1, and that envelope follows this position.
    pub epoch: String,
    /// The last sequence number seen (0 = nothing yet).
    pub seq: u64,
}

/// The epoch of a position in a room that had no history when it was read starts with this,
/// followed by the read's time (Unix milliseconds): reads never create a room (an id a client
/// made up would otherwise cost the store a room), so such a room has no epoch yet.
pub const UNBORN_EPOCH_PREFIX: char = '~';

impl Cursor {
    /// The position in a room with no history, read now: `{epoch: "~<ms>", seq: 0}`.
    pub fn unborn() -> Cursor {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Cursor {
            epoch: format!("{UNBORN_EPOCH_PREFIX}{ms}"),
            seq: 0,
        }
    }

    /// Whether this is a position in a room that had no history (see [`Cursor::unborn`]).
    pub fn is_unborn(&self) -> bool {
        self.epoch.starts_with(UNBORN_EPOCH_PREFIX)
    }

    /// Whether `self` and `other` are the same head: two positions in a room without
    /// history are, whenever they were read.
    pub fn same_head(&self, other: &Cursor) -> bool {
        self == other || (self.is_unborn() && other.is_unborn())
    }

    /// How long ago an unborn position was read (`None` for another position, or one
    /// whose time cannot be read).
    fn unborn_age(&self) -> Option<Duration> {
        let ms: u64 = self.epoch.strip_prefix(UNBORN_EPOCH_PREFIX)?.parse().ok()?;
        let then = std::time::UNIX_EPOCH + Duration::from_millis(ms);
        Some(std::time::SystemTime::now().duration_since(then).unwrap_or_default())
    }

    /// This place as an envelope position in `room` (what `sync:position` carries).
    pub fn in_room(self, room: impl Into<String>) -> Position {
        Position {
            room: room.into(),
            epoch: self.epoch,
            seq: self.seq,
        }
    }
}

/// One stored emit: the socket event name and its envelope, position included.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Socket.IO event name.
    pub event: String,
    /// The payload as it was emitted live.
    pub envelope: Envelope,
}

/// The answer to "what did I miss since this cursor?".
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    /// Every envelope after the cursor, in order (possibly none).
    Complete(Vec<Arc<Entry>>),
    /// The gap cannot be filled; nothing is replayed.
    Lost(LostReason),
}

/// Why a gap cannot be filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LostReason {
    /// The history restarted (process restart, or the room was forgotten).
    EpochChanged,
    /// Events after the cursor were already dropped by the count or age bound.
    Trimmed,
    /// The cursor is ahead of the history, which this epoch never issued.
    UnknownPosition,
}

/// What a replay from an unborn position is, given the room's head now (`None`: still no
/// history) and the age bound. Nothing can have been missed in a room that still has no
/// history — as long as the position is younger than the age bound (a room created and
/// forgotten meanwhile needs far longer without events). A room that has history now may
/// have had more than it still holds: never replayed in part, it is lost. Positions the
/// bridge never issued (`seq` other than 0, an unreadable time) are unknown.
pub(crate) fn unborn_replay(cursor: &Cursor, head: Option<&Cursor>, max_age: Duration) -> Replay {
    match (cursor.seq, cursor.unborn_age(), head) {
        (0, Some(age), None) if age <= max_age => Replay::Complete(Vec::new()),
        (0, Some(_), None) => Replay::Lost(LostReason::Trimmed),
        (0, Some(_), Some(_)) => Replay::Lost(LostReason::EpochChanged),
        _ => Replay::Lost(LostReason::UnknownPosition),
    }
}

/// A history failure (a shared store being unreachable); the in-memory store never fails.
#[derive(Debug, thiserror::Error)]
#[error("history store unavailable: {0}")]
pub struct HistoryError(pub String);

/// An envelope on its way into a room's history.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    /// The room whose history it joins.
    pub room: String,
    /// Socket.IO event name.
    pub event: String,
    /// The payload (its position is set when stored).
    pub envelope: Envelope,
    /// Fields to merge into the room's latest state (product rooms), in the same step.
    pub state: Option<State>,
}

/// A room's latest state: a JSON object, later fields over earlier ones.
pub type State = serde_json::Map<String, serde_json::Value>;

/// A room's position and its latest state, read together: the state is exactly what the
/// entries up to `head` made it (see [`History::snapshot`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The room's head.
    pub head: Cursor,
    /// Its latest state, if any entry ever carried one (and it was not evicted).
    pub state: Option<State>,
}

/// A per-room, bounded, ordered log of emitted envelopes.
#[async_trait::async_trait]
pub trait History: Send + Sync + 'static {
    /// Stores each entry as the next of its room, in the order given, setting positions;
    /// the result is in the same order. One operation (one round trip to a shared store):
    /// on an error nothing was stored, or — if the store failed halfway — what was stored
    /// is numbered like any other entry and simply stored again when the caller retries
    /// (a duplicate with the same id, never a gap).
    async fn append_all(&self, entries: Vec<NewEntry>) -> Result<Vec<Arc<Entry>>, HistoryError>;
    /// Stores `envelope` as the next entry of `room`, setting its position.
    async fn append(&self, room: &str, event: &str, envelope: Envelope) -> Result<Arc<Entry>, HistoryError> {
        let entry = NewEntry {
            room: room.to_owned(),
            event: event.to_owned(),
            envelope,
            state: None,
        };
        let mut stored = self.append_all(vec![entry]).await?;
        stored.pop().ok_or_else(|| HistoryError("the store returned no entry".to_owned()))
    }
    /// The room's current position: what a client that has seen everything holds. A room
    /// with no history answers [`Cursor::unborn`] and is not created: reads leave nothing
    /// behind, whatever room a client names.
    async fn head(&self, room: &str) -> Result<Cursor, HistoryError>;
    /// The room's head, giving it an epoch (and so a place in the store) if it has none:
    /// only for rooms a socket holds by who it is (its own user room, inventory, admin),
    /// so the rooms created are bounded by the users who connect.
    async fn open(&self, room: &str) -> Result<Cursor, HistoryError>;
    /// The room's head and latest state in one atomic read: appends set a room's state in
    /// the same atomic step that numbers its entries, so the state read here reflects every
    /// entry up to `head` and none after it. Like [`History::head`], creates nothing.
    async fn snapshot(&self, room: &str) -> Result<Snapshot, HistoryError>;
    /// What was appended to `room` after `cursor`, or why that cannot be known.
    async fn since(&self, room: &str, cursor: &Cursor) -> Result<Replay, HistoryError>;
}

/// Bounds of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Entries kept per room.
    pub max_events: usize,
    /// Age after which an entry is dropped.
    pub max_age: Duration,
    /// Bytes kept per room (event name plus envelope JSON), oldest dropped first.
    pub max_room_bytes: usize,
    /// Bytes kept over all rooms by the in-memory store, oldest dropped first (with Redis,
    /// its `maxmemory` is that bound).
    pub max_bytes: usize,
    /// Latest states kept (product rooms), least recently updated dropped first.
    pub max_states: usize,
    /// Bytes of latest states kept (their JSON), least recently updated dropped first.
    pub max_state_bytes: usize,
}

impl HistoryLimits {
    /// Limits for tests and tools: these counts and ages, generous byte budgets.
    pub fn count_and_age(max_events: usize, max_age: Duration) -> Self {
        HistoryLimits {
            max_events,
            max_age,
            max_room_bytes: 64 << 20,
            max_bytes: 1 << 30,
            max_states: 100_000,
            max_state_bytes: 64 << 20,
        }
    }
}

/// What an entry costs against the byte budgets: its event name and envelope JSON.
pub(crate) fn entry_bytes(event: &str, envelope: &Envelope) -> usize {
    /// Counts what is written, keeps nothing.
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serializing an envelope (strings, numbers, a JSON value) cannot fail.
    let _ = serde_json::to_writer(&mut counter, envelope);
    event.len() + counter.0
}

/// The in-process history (the default without Redis).
pub struct MemoryHistory {
    limits: HistoryLimits,
    rooms: Mutex<Rooms>,
}

/// Every room, plus what the global byte budget needs.
#[derive(Default)]
struct Rooms {
    map: HashMap<Arc<str>, Room>,
    /// Bytes held over all rooms.
    bytes: usize,
    /// Entries held over all rooms.
    entries: usize,
    /// `(room, seq)` of every append, oldest first: where the globally oldest entry is.
    /// Records of entries already dropped by their room's own bounds are skipped when met,
    /// and the queue is compacted when it holds twice as many records as entries.
    order: VecDeque<(Arc<str>, u64)>,
    /// Latest states, with their LRU order.
    states: States,
}

/// Latest states by room, bounded by count and bytes, least recently updated dropped first.
#[derive(Default)]
struct States {
    /// State, its JSON size, and its update tick.
    map: HashMap<String, (State, usize, u64)>,
    /// Update tick → room: the least recently updated first.
    by_age: std::collections::BTreeMap<u64, String>,
    bytes: usize,
    tick: u64,
}

impl States {
    /// Merges `patch` over the room's state; returns how many states were evicted.
    fn merge(&mut self, room: &str, patch: &State, limits: HistoryLimits) -> usize {
        self.tick += 1;
        let (mut state, old_size, old_tick) = self.map.remove(room).unwrap_or_default();
        if old_tick != 0 {
            self.by_age.remove(&old_tick);
            self.bytes -= old_size;
        }
        for (k, v) in patch {
            state.insert(k.clone(), v.clone());
        }
        let size = serde_json::to_vec(&state).map_or(0, |j| j.len()) + room.len();
        self.bytes += size;
        self.by_age.insert(self.tick, room.to_owned());
        self.map.insert(room.to_owned(), (state, size, self.tick));
        let mut evicted = 0;
        while self.map.len() > limits.max_states || self.bytes > limits.max_state_bytes {
            let Some((_, oldest)) = self.by_age.pop_first() else { break };
            if let Some((_, size, _)) = self.map.remove(&oldest) {
                self.bytes -= size;
                evicted += 1;
            }
        }
        evicted
    }
}

struct Room {
    epoch: String,
    /// Sequence number of the next append.
    next_seq: u64,
    entries: VecDeque<(Instant, usize, Arc<Entry>)>,
    bytes: usize,
    last_used: Instant,
}

impl Room {
    fn new(now: Instant) -> Room {
        Room {
            epoch: format!("{:016x}", rand::random::<u64>()),
            next_seq: 1,
            entries: VecDeque::new(),
            bytes: 0,
            last_used: now,
        }
    }

    /// Sequence number of the oldest entry still held (`next_seq` when empty).
    fn first_seq(&self) -> u64 {
        self.next_seq - self.entries.len() as u64
    }

    /// Drops the oldest entry; returns its size.
    fn pop(&mut self) -> usize {
        let size = self.entries.pop_front().map_or(0, |(_, size, _)| size);
        self.bytes -= size;
        size
    }

    /// Applies the room's bounds; returns (entries, bytes) dropped.
    fn trim(&mut self, now: Instant, limits: HistoryLimits) -> (usize, usize) {
        let (mut entries, mut bytes) = (0, 0);
        while let Some((at, _, _)) = self.entries.front() {
            let over = self.entries.len() > limits.max_events
                || self.bytes > limits.max_room_bytes
                || now.saturating_duration_since(*at) > limits.max_age;
            if !over {
                break;
            }
            bytes += self.pop();
            entries += 1;
        }
        (entries, bytes)
    }
}

impl Rooms {
    /// The room's state (a new epoch when it has none) and its shared name.
    fn room(&mut self, room: &str, now: Instant) -> (Arc<str>, &mut Room) {
        let key: Arc<str> = match self.map.get_key_value(room) {
            Some((key, _)) => key.clone(),
            None => Arc::from(room),
        };
        (key.clone(), self.map.entry(key).or_insert_with(|| Room::new(now)))
    }

    fn trim_room(&mut self, room: &str, now: Instant, limits: HistoryLimits) {
        if let Some(state) = self.map.get_mut(room) {
            let (entries, bytes) = state.trim(now, limits);
            self.entries -= entries;
            self.bytes -= bytes;
        }
    }

    /// Drops the globally oldest entries until the total is within `max_bytes`.
    fn trim_total(&mut self, max_bytes: usize) {
        while self.bytes > max_bytes {
            let Some((room, seq)) = self.order.pop_front() else {
                break;
            };
            if let Some(state) = self.map.get_mut(&room)
                && !state.entries.is_empty()
                && state.first_seq() == seq
            {
                self.bytes -= state.pop();
                self.entries -= 1;
            }
        }
        if self.order.len() > 2 * self.entries + 64 {
            let map = &self.map;
            self.order
                .retain(|(room, seq)| map.get(room).is_some_and(|r| !r.entries.is_empty() && *seq >= r.first_seq()));
        }
    }
}

impl MemoryHistory {
    /// How long a room with no entries keeps its epoch and counter, so a client that saw its
    /// last event and comes back within this time is told "complete" rather than "lost".
    pub(crate) const IDLE_ROOM_TTL: Duration = Duration::from_secs(3600);

    /// An empty history with these bounds.
    pub fn new(limits: HistoryLimits) -> Self {
        MemoryHistory {
            limits,
            rooms: Mutex::new(Rooms::default()),
        }
    }

    /// Drops expired entries and forgets idle empty rooms; returns how many rooms remain.
    /// Appends trim their own room; this catches rooms that stopped receiving events.
    pub(crate) fn sweep(&self, now: Instant) -> usize {
        let idle_ttl = Self::IDLE_ROOM_TTL.max(self.limits.max_age);
        let mut rooms = self.lock();
        let Rooms { map, bytes, entries, .. } = &mut *rooms;
        map.retain(|_, room| {
            let (e, b) = room.trim(now, self.limits);
            *entries -= e;
            *bytes -= b;
            !room.entries.is_empty() || now.saturating_duration_since(room.last_used) < idle_ttl
        });
        let count = map.len();
        rooms.trim_total(self.limits.max_bytes);
        count
    }

    /// Total entries held, over all rooms.
    pub fn len(&self) -> usize {
        self.lock().entries
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total bytes held, over all rooms.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rooms> {
        // A panic while holding the lock leaves plain data behind, still consistent enough
        // to serve; poisoning would turn one bug into a dead service.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn append_at(&self, room: &str, event: &str, envelope: Envelope, now: Instant) -> Arc<Entry> {
        let entry = NewEntry {
            room: room.to_owned(),
            event: event.to_owned(),
            envelope,
            state: None,
        };
        self.append_all_at(vec![entry], now).remove(0)
    }

    /// Appends every entry under one lock; each room touched, and the total, is trimmed
    /// once at the end.
    fn append_all_at(&self, entries: Vec<NewEntry>, now: Instant) -> Vec<Arc<Entry>> {
        let mut stored = Vec::with_capacity(entries.len());
        let mut touched: HashSet<Arc<str>> = HashSet::new();
        let mut rooms = self.lock();
        for NewEntry {
            room,
            event,
            mut envelope,
            state: patch,
        } in entries
        {
            if let Some(patch) = &patch {
                let evicted = rooms.states.merge(&room, patch, self.limits);
                crate::metrics::states_evicted(evicted as u64);
            }
            let (key, state) = rooms.room(&room, now);
            let seq = state.next_seq;
            envelope.position = Some(Position {
                room,
                epoch: state.epoch.clone(),
                seq,
            });
            let size = entry_bytes(&event, &envelope);
            let entry = Arc::new(Entry { event, envelope });
            state.next_seq += 1;
            state.last_used = now;
            state.entries.push_back((now, size, entry.clone()));
            state.bytes += size;
            rooms.bytes += size;
            rooms.entries += 1;
            touched.insert(key.clone());
            rooms.order.push_back((key, seq));
            stored.push(entry);
        }
        for room in touched {
            rooms.trim_room(&room, now, self.limits);
        }
        rooms.trim_total(self.limits.max_bytes);
        stored
    }

    /// The room's head, creating it (`open`) or not (`head`).
    fn head_at(&self, room: &str, now: Instant, open: bool) -> Cursor {
        let mut rooms = self.lock();
        let state = if open {
            Some(rooms.room(room, now).1)
        } else {
            rooms.map.get_mut(room)
        };
        let Some(state) = state else {
            return Cursor::unborn();
        };
        state.last_used = now;
        Cursor {
            epoch: state.epoch.clone(),
            seq: state.next_seq - 1,
        }
    }

    fn since_at(&self, room: &str, cursor: &Cursor, now: Instant) -> Replay {
        let mut rooms = self.lock();
        rooms.trim_room(room, now, self.limits);
        if cursor.is_unborn() {
            let head = rooms.map.get(room).map(|r| Cursor {
                epoch: r.epoch.clone(),
                seq: r.next_seq - 1,
            });
            return unborn_replay(cursor, head.as_ref(), self.limits.max_age);
        }
        let Some(state) = rooms.map.get(room) else {
            return Replay::Lost(LostReason::EpochChanged);
        };
        if state.epoch != cursor.epoch {
            return Replay::Lost(LostReason::EpochChanged);
        }
        if cursor.seq >= state.next_seq {
            return Replay::Lost(LostReason::UnknownPosition);
        }
        // The entry right after the cursor must still be held.
        if cursor.seq + 1 < state.first_seq() {
            return Replay::Lost(LostReason::Trimmed);
        }
        let skip = (cursor.seq + 1 - state.first_seq()) as usize;
        Replay::Complete(state.entries.iter().skip(skip).map(|(_, _, e)| e.clone()).collect())
    }
}

#[async_trait::async_trait]
impl History for MemoryHistory {
    async fn append_all(&self, entries: Vec<NewEntry>) -> Result<Vec<Arc<Entry>>, HistoryError> {
        Ok(self.append_all_at(entries, Instant::now()))
    }

    async fn head(&self, room: &str) -> Result<Cursor, HistoryError> {
        Ok(self.head_at(room, Instant::now(), false))
    }

    async fn open(&self, room: &str) -> Result<Cursor, HistoryError> {
        Ok(self.head_at(room, Instant::now(), true))
    }

    async fn snapshot(&self, room: &str) -> Result<Snapshot, HistoryError> {
        let now = Instant::now();
        let mut rooms = self.lock();
        let head = match rooms.map.get_mut(room) {
            Some(state) => {
                state.last_used = now;
                Cursor {
                    epoch: state.epoch.clone(),
                    seq: state.next_seq - 1,
                }
            }
            None => Cursor::unborn(),
        };
        let state = rooms.states.map.get(room).map(|(s, _, _)| s.clone());
        Ok(Snapshot { head, state })
    }

    async fn since(&self, room: &str, cursor: &Cursor) -> Result<Replay, HistoryError> {
        Ok(self.since_at(room, cursor, Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    //! What only the in-memory store does, with time injected; the contract both stores
    //! meet is `tests/history.rs`.
    use super::*;

    const ROOM: &str = "user:42";

    fn history(max_events: usize, max_age_secs: u64) -> MemoryHistory {
        MemoryHistory::new(HistoryLimits::count_and_age(max_events, Duration::from_secs(max_age_secs)))
    }

    fn envelope(id: &str) -> Envelope {
        Envelope {
            id: id.to_owned(),
            event_type: "order.updated".to_owned(),
            occurred_at: "2026-11-22T10:00:00.000Z".to_owned(),
            data: serde_json::json!({}),
            message: None,
            priority: None,
            position: None,
        }
    }

    fn ids(replay: Replay) -> Vec<String> {
        match replay {
            Replay::Complete(entries) => entries.iter().map(|e| e.envelope.id.clone()).collect(),
            Replay::Lost(reason) => panic!("expected a complete replay, got {reason:?}"),
        }
    }

    fn padded(id: &str, bytes: usize) -> Envelope {
        Envelope {
            data: serde_json::json!({ "pad": "x".repeat(bytes) }),
            ..envelope(id)
        }
    }

    #[test]
    fn all_rooms_together_keep_at_most_the_total_budget_oldest_dropped_first() {
        let h = MemoryHistory::new(HistoryLimits {
            max_bytes: 20_000,
            ..HistoryLimits::count_and_age(1_000, Duration::from_secs(600))
        });
        let now = Instant::now();
        let old = h.head_at("user:old", now, true);
        h.append_at("user:old", "e", padded("old", 3_000), now);
        // Many rooms, each well within its own bounds: the total is what overflows.
        for i in 0..1_000 {
            h.append_at(&format!("user:{i}"), "e", padded(&i.to_string(), 3_000), now);
        }
        assert!(h.bytes() <= 20_000, "{}", h.bytes());
        assert_eq!(
            h.since_at("user:old", &old, now),
            Replay::Lost(LostReason::Trimmed),
            "the oldest went first"
        );
        let newest = Cursor {
            seq: 0,
            ..h.head_at("user:999", now, true)
        };
        assert_eq!(ids(h.since_at("user:999", &newest, now)), ["999"]);
        let rooms = h.lock();
        assert!(
            rooms.order.len() <= 2 * rooms.entries + 64,
            "the order queue stays bounded: {}",
            rooms.order.len()
        );
    }

    #[test]
    fn positions_count_per_room_within_one_epoch() {
        let h = history(10, 600);
        let now = Instant::now();
        let a1 = h.append_at(ROOM, "order:updated", envelope("a"), now);
        let b1 = h.append_at("user:7", "order:updated", envelope("b"), now);
        let a2 = h.append_at(ROOM, "order:updated", envelope("c"), now);
        let (p1, p2) = (a1.envelope.position.clone().unwrap(), a2.envelope.position.clone().unwrap());
        assert_eq!((p1.seq, p2.seq), (1, 2));
        assert_eq!(p1.epoch, p2.epoch);
        assert_eq!(p1.room, ROOM);
        assert_eq!(b1.envelope.position.as_ref().unwrap().seq, 1);
        assert_ne!(
            b1.envelope.position.as_ref().unwrap().epoch,
            p1.epoch,
            "each room history has its own epoch"
        );
        assert_eq!(h.head_at(ROOM, now, true), Cursor { epoch: p1.epoch, seq: 2 });
    }

    #[test]
    fn entries_older_than_the_age_bound_are_dropped() {
        let h = history(100, 60);
        let t0 = Instant::now();
        let start = h.head_at(ROOM, t0, true);
        h.append_at(ROOM, "e", envelope("old"), t0);
        h.append_at(ROOM, "e", envelope("new"), t0 + Duration::from_secs(50));
        let later = t0 + Duration::from_secs(70);
        assert_eq!(h.since_at(ROOM, &start, later), Replay::Lost(LostReason::Trimmed));
        let at1 = Cursor { seq: 1, ..start };
        assert_eq!(ids(h.since_at(ROOM, &at1, later)), ["new"]);
    }

    #[test]
    fn sweep_expires_entries_then_forgets_idle_rooms() {
        let h = history(10, 60);
        let t0 = Instant::now();
        h.append_at(ROOM, "e", envelope("1"), t0);
        h.head_at("user:quiet", t0, true);
        assert_eq!(
            h.sweep(t0 + Duration::from_secs(61)),
            2,
            "empty rooms keep their counters for a while"
        );
        assert!(h.is_empty());
        let head = h.head_at(ROOM, t0 + Duration::from_secs(61), true);
        assert_eq!(head.seq, 1, "a client that saw event 1 missed nothing");
        assert_eq!(ids(h.since_at(ROOM, &head, t0 + Duration::from_secs(62))).len(), 0);
        let gone = t0 + Duration::from_secs(61) + MemoryHistory::IDLE_ROOM_TTL;
        assert_eq!(h.sweep(gone), 0);
        assert_eq!(h.since_at(ROOM, &head, gone), Replay::Lost(LostReason::EpochChanged));
    }
}
