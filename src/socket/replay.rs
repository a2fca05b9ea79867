//! Replay on (re)connect: send a socket what it missed in each room, then join the rooms,
//! so that it sees every envelope once (or is told plainly that it cannot).
//!
//! The contract: for every room named in the handshake's `positions`, the socket receives
//! the envelopes after that position in order, before any live envelope, and then a
//! per-room `recovered` flag in `connection:success`. A gap the history cannot fill is
//! replayed not at all (never partially) and reported `recovered: false`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::{SendError, SocketError};
use tokio::time::Instant;

use super::gate::{Gate, Joining};
use super::protocol::{RecoveryReason, RoomRecovery, SYNC_POSITION};
use crate::events::Position;
use crate::history::{Cursor, History, Replay};
use crate::routing::PRODUCT_ROOM_PREFIX;

/// How long a replay may wait for a slow socket to drain its buffer before giving up.
const REPLAY_DEADLINE: Duration = Duration::from_secs(10);
/// How long a send may wait for buffer space while the gate is held (live delivery to
/// everyone waits meanwhile, so this is short; the bulk was sent before taking the gate).
const GATED_WAIT: Duration = Duration::from_millis(50);
/// Catch-up rounds outside the gate before joining anyway (events keep arriving).
const CATCH_UP_ROUNDS: usize = 4;
/// Pause between attempts while a socket's buffer is full.
const FULL_BUFFER_BACKOFF: Duration = Duration::from_millis(2);

/// The rooms a socket ended up in, with its position in each and how recovery went.
/// Holds the gate shared until dropped, so the caller can greet the socket before any live
/// envelope reaches it.
pub(crate) struct Resumed<'g> {
    /// Dropping it lets live emits through again.
    pub guard: Joining<'g>,
    /// The room heads: the positions the client should keep now.
    pub positions: BTreeMap<String, Cursor>,
    /// One per room the client asked to resume.
    pub recovery: BTreeMap<String, RoomRecovery>,
    /// Rooms that moved on another node while the socket joined (see [`announce_heads`]).
    pub unsettled: Vec<Position>,
}

/// May this many more envelopes be replayed to the client (its address's budget)? Asked
/// with 0 before each read of the history, so an exhausted budget costs no read.
pub(crate) type ReplayBudget<'a> = &'a (dyn Fn(usize) -> bool + Sync);

/// Replays what `s` missed in each of `resume`'s rooms and joins it to `join` (which
/// includes those rooms). A room over `budget` is reported `replay-limited`, nothing of
/// it replayed.
pub(crate) async fn resume<'g, A: Adapter>(
    s: &SocketRef<A>,
    history: &dyn History,
    gate: &'g Gate,
    join: &[String],
    resume: &[(String, Cursor)],
    budget: ReplayBudget<'_>,
) -> Resumed<'g> {
    let deadline = Instant::now() + REPLAY_DEADLINE;
    let mut recovery = BTreeMap::new();
    // The bulk of each gap is sent without holding the gate, so a long replay to a slow
    // socket never holds up live delivery to everyone else.
    let mut caught_up: Vec<(&str, Cursor, usize)> = Vec::new();
    for (room, cursor) in resume {
        let (mut cursor, mut total) = (cursor.clone(), 0);
        let mut failed = None;
        // Again while new envelopes keep arriving, so little is left for the gated step.
        for _ in 0..CATCH_UP_ROUNDS {
            match replay_gap(s, history, room, &cursor, deadline, budget).await {
                Ok((_, 0)) => break,
                Ok((next, sent)) => (cursor, total) = (next, total + sent),
                Err(failure) => {
                    failed = Some(RoomRecovery {
                        replayed: total + failure.replayed,
                        ..failure
                    });
                    break;
                }
            }
        }
        match failed {
            None => caught_up.push((room, cursor, total)),
            Some(failure) => {
                recovery.insert(room.clone(), failure);
            }
        }
    }

    // `join` includes every room replayed.
    let guard = gate.joining(join.iter().map(String::as_str)).await;
    // Under the gate this node emits nothing new to these rooms: send what arrived
    // meanwhile, then join.
    let gated = Instant::now() + GATED_WAIT;
    let mut positions = BTreeMap::new();
    for (room, cursor, sent) in caught_up {
        let status = match replay_gap(s, history, room, &cursor, gated, budget).await {
            Ok((last, more)) => {
                positions.insert(room.to_owned(), last);
                RoomRecovery {
                    recovered: true,
                    replayed: sent + more,
                    reason: None,
                }
            }
            Err(failure) => RoomRecovery {
                replayed: sent + failure.replayed,
                ..failure
            },
        };
        recovery.insert(room.to_owned(), status);
    }
    let unsettled = join_rooms(s, history, join, &mut positions).await;
    for (room, status) in recovery.iter().filter(|(_, r)| !r.recovered) {
        tracing::info!(sid = %s.id, room, reason = ?status.reason, replayed = status.replayed, "room not recovered; client must refetch");
    }
    Resumed {
        guard,
        positions,
        recovery,
        unsettled,
    }
}

/// Joins `rooms` (under the gate). `positions` holds where the socket is in the rooms it
/// was replayed; the others get their head from before the join, so every later envelope
/// reaches the socket live.
///
/// Another node may store and broadcast an envelope meanwhile (the gate is this node's),
/// and its broadcast may arrive just before the join. So the heads are read again after
/// it: a room that moved is returned, for a `sync:position` telling the client the head
/// it should have reached (the client helper resyncs if it has not). Alone, or with the
/// in-memory history, nothing ever moves here.
async fn join_rooms<A: Adapter>(
    s: &SocketRef<A>,
    history: &dyn History,
    rooms: &[String],
    positions: &mut BTreeMap<String, Cursor>,
) -> Vec<Position> {
    for room in rooms {
        if !positions.contains_key(room) {
            // A product room is any id a client names: read, never created. The others
            // are the socket's by who it is, and get an epoch now.
            let head = if room.starts_with(PRODUCT_ROOM_PREFIX) {
                history.head(room).await
            } else {
                history.open(room).await
            };
            match head {
                Ok(head) => {
                    positions.insert(room.clone(), head);
                }
                Err(error) => tracing::warn!(sid = %s.id, room, %error, "no history position for room"),
            }
        }
    }
    join_if_connected(s, rooms.to_vec());
    let mut unsettled = Vec::new();
    for (room, before) in positions.iter() {
        if let Ok(after) = history.head(room).await
            && !after.same_head(before)
        {
            tracing::debug!(sid = %s.id, room, before = before.seq, after = after.seq, "room moved on another node while joining");
            unsettled.push(after.in_room(room.clone()));
        }
    }
    unsettled
}

/// Joins `rooms` unless the socket is gone. A join after an await may land after the
/// socket's disconnect removed it from the adapter: its id would then stay in the rooms
/// forever (emits walk it, cluster counts include it). socketioxide marks the socket
/// disconnected before it removes it, so a join that lands after the removal sees that
/// here and undoes itself; one that lands before is removed with the rest.
pub(crate) fn join_if_connected<A: Adapter>(s: &SocketRef<A>, rooms: Vec<String>) -> bool {
    s.join(rooms);
    if s.connected() {
        return true;
    }
    s.leave_all();
    false
}

/// Joins `room` and returns its position, so a client that subscribes mid-stream knows
/// from where every later envelope reaches it live, plus the room's head if it moved
/// meanwhile on another node (see [`join_rooms`]).
pub(crate) async fn join_at_head<A: Adapter>(
    s: &SocketRef<A>,
    history: &dyn History,
    gate: &Gate,
    room: &str,
) -> (Option<Cursor>, Vec<Position>) {
    let _joining = gate.joining([room]).await;
    let mut positions = BTreeMap::new();
    let unsettled = join_rooms(s, history, &[room.to_owned()], &mut positions).await;
    (positions.remove(room), unsettled)
}

/// What [`join_with_snapshots`] found. Holds the gate of the rooms until dropped, so the
/// caller can answer before any live envelope of them reaches the socket.
pub(crate) struct Joined<'g> {
    /// Dropping it lets live emits to the rooms through again.
    pub guard: Joining<'g>,
    /// Each room's position as of its state.
    pub positions: BTreeMap<String, Cursor>,
    /// Each room's latest state, where one is known.
    pub states: BTreeMap<String, crate::history::State>,
    /// Rooms another node emitted to meanwhile (announce their heads after the reply).
    pub moved: Vec<Position>,
}

/// Joins `rooms`, reading each one's head and latest state together, under the gate of
/// those rooms: this node emits nothing to them between the read and the join, so every
/// envelope after the position given reaches the socket live, and every one up to it is
/// already in the state given (appends store state and number entries in one atomic step).
/// A client applies live envelopes with a `seq` after the position over the snapshot and
/// ignores the others — whatever the interleaving, it ends with the newest state. Across
/// nodes, a room that moved meanwhile is announced (as in [`join_rooms`]): the client
/// resyncs and replays from its position.
pub(crate) async fn join_with_snapshots<'g, A: Adapter>(
    s: &SocketRef<A>,
    history: &dyn History,
    gate: &'g Gate,
    rooms: &[String],
) -> Joined<'g> {
    let guard = gate.joining(rooms.iter().map(String::as_str)).await;
    let mut positions = BTreeMap::new();
    let mut states = BTreeMap::new();
    for room in rooms {
        match history.snapshot(room).await {
            Ok(snapshot) => {
                positions.insert(room.clone(), snapshot.head);
                if let Some(state) = snapshot.state {
                    states.insert(room.clone(), state);
                }
            }
            Err(error) => tracing::warn!(sid = %s.id, room, %error, "no snapshot for room"),
        }
    }
    let moved = join_rooms(s, history, rooms, &mut positions).await;
    Joined {
        guard,
        positions,
        states,
        moved,
    }
}

/// Tells the client the head of rooms that moved while it joined; sent after the join's
/// answer, so the client compares it with what it has received by then.
pub(crate) fn announce_heads<A: Adapter>(s: &SocketRef<A>, heads: &[Position]) {
    for head in heads {
        let _ = s.emit(SYNC_POSITION, head);
    }
}

/// Sends one message to `s`, waiting briefly for buffer space (for use under the gate).
pub(crate) async fn emit_briefly<T: Serialize + ?Sized, A: Adapter>(s: &SocketRef<A>, event: &str, data: &T) -> bool {
    emit(s, event, data, Instant::now() + GATED_WAIT).await.is_ok()
}

/// Sends one message to `s`, waiting as long as a replay would for buffer space.
pub(crate) async fn emit_patiently<T: Serialize + ?Sized, A: Adapter>(s: &SocketRef<A>, event: &str, data: &T) -> bool {
    emit(s, event, data, Instant::now() + REPLAY_DEADLINE).await.is_ok()
}

/// Sends the envelopes of `room` after `cursor`; returns the new cursor and how many were
/// sent, or the failure to report (with what was sent before it).
async fn replay_gap<A: Adapter>(
    s: &SocketRef<A>,
    history: &dyn History,
    room: &str,
    cursor: &Cursor,
    deadline: Instant,
    budget: ReplayBudget<'_>,
) -> Result<(Cursor, usize), RoomRecovery> {
    if !budget(0) {
        return Err(RoomRecovery::lost(RecoveryReason::ReplayLimited));
    }
    let entries = match history.since(room, cursor).await {
        Ok(Replay::Complete(entries)) => entries,
        Ok(Replay::Lost(reason)) => return Err(RoomRecovery::lost(reason.into())),
        Err(error) => {
            tracing::warn!(sid = %s.id, room, %error, "replay failed");
            return Err(RoomRecovery::lost(RecoveryReason::HistoryUnavailable));
        }
    };
    if !budget(entries.len()) {
        tracing::info!(sid = %s.id, room, entries = entries.len(), "replay refused: the client's address is over its replay budget");
        return Err(RoomRecovery::lost(RecoveryReason::ReplayLimited));
    }
    let mut last = cursor.clone();
    for (sent, entry) in entries.iter().enumerate() {
        if let Err(reason) = emit(s, &entry.event, &entry.envelope, deadline).await {
            return Err(RoomRecovery {
                replayed: sent,
                ..RoomRecovery::lost(reason)
            });
        }
        if let Some(p) = &entry.envelope.position {
            last.seq = p.seq;
        }
    }
    Ok((last, entries.len()))
}

/// Sends one message, waiting for buffer space until `deadline`; the error is the reason
/// to report.
pub(super) async fn emit<T: Serialize + ?Sized, A: Adapter>(
    s: &SocketRef<A>,
    event: &str,
    data: &T,
    deadline: Instant,
) -> Result<(), RecoveryReason> {
    loop {
        match s.emit(event, data) {
            Ok(()) => return Ok(()),
            // socketioxide has no way to await buffer space; the writer drains it
            // continuously, so a short pause is enough for a reading client.
            Err(SendError::Socket(SocketError::InternalChannelFull)) if Instant::now() < deadline => {
                tokio::time::sleep(FULL_BUFFER_BACKOFF).await
            }
            Err(SendError::Socket(SocketError::InternalChannelFull)) => return Err(RecoveryReason::SlowConsumer),
            Err(SendError::Socket(SocketError::Closed)) => return Err(RecoveryReason::Disconnected),
            Err(SendError::Serialize(error)) => {
                tracing::error!(sid = %s.id, event, %error, "could not serialize a message");
                return Err(RecoveryReason::InternalError);
            }
        }
    }
}

/// Sends `notice` as `event`, then a Socket.IO disconnect, each waiting for buffer space
/// until `deadline` (a slow or stuck socket); the error says why it could not.
pub(super) async fn notify_and_disconnect<T: Serialize + ?Sized, A: Adapter>(
    s: &SocketRef<A>,
    event: &str,
    notice: &T,
    deadline: Instant,
) -> Result<(), RecoveryReason> {
    emit(s, event, notice, deadline).await?;
    loop {
        match s.clone().disconnect() {
            Err(SocketError::InternalChannelFull) if Instant::now() < deadline => tokio::time::sleep(FULL_BUFFER_BACKOFF).await,
            Err(SocketError::InternalChannelFull) => return Err(RecoveryReason::SlowConsumer),
            _ => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use socketioxide::SocketIo;
    use socketioxide::extract::SocketRef;
    use tokio::sync::{Notify, mpsc};

    use super::join_if_connected;

    /// A join that lands after the socket's transport closed (its handler was awaiting
    /// something) must not leave the socket in the adapter's rooms: nothing would ever
    /// remove it. The real socketioxide server, a polling client that goes away.
    #[tokio::test]
    async fn a_join_after_the_disconnect_leaves_the_socket_in_no_room() {
        let (layer, io) = SocketIo::new_layer();
        let (go, seen) = (Arc::new(Notify::new()), mpsc::unbounded_channel());
        let (tx, mut rx) = seen;
        let gate = go.clone();
        io.ns("/", async move |s: SocketRef| {
            gate.notified().await; // as a handler waiting on a Redis round trip
            let joined = join_if_connected(&s, vec!["user:u-1".to_owned()]);
            let _ = tx.send((joined, s.rooms()));
        });
        let app = axum::Router::<()>::new().layer(layer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/socket.io/?EIO=4&transport=polling", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();
        let open = http.get(&url).send().await.unwrap().text().await.unwrap();
        let open: serde_json::Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
        let url = format!("{url}&sid={}", open["sid"].as_str().unwrap());
        http.post(&url).body("40").send().await.unwrap();
        let connected = http.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(connected.split('\u{1e}').any(|p| p.starts_with("40")), "{connected}");
        http.post(&url).body("1").send().await.unwrap();
        // The close is handled when the socket leaves the namespace.
        while !io.sockets().is_empty() {
            tokio::task::yield_now().await;
        }
        go.notify_one();
        let (joined, rooms) = rx.recv().await.unwrap();
        assert!(!joined);
        assert!(rooms.is_empty(), "a dead socket stayed in {rooms:?}");
    }
}
