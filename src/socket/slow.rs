//! Slow sockets: a socket whose buffer is full misses live emits (socketioxide refuses
//! rather than waits, so the consumer and the other sockets never wait for it). This finds
//! such sockets and sends them away to reconnect and replay what they missed.
//!
//! A room broadcast only says how many sockets missed an emit, not which. So the room's
//! local sockets are each sent the room's position (`sync:position`): a socket with room
//! in its buffer takes it (and a client that missed the emit sees its gap from it), a
//! socket whose buffer is still full refuses it and is evicted: once its buffer drains it
//! is told `session:closing {reason: "slow-consumer", reconnect: true}` and disconnected,
//! and the client helper reconnects with its positions. A socket that never drains is
//! closed by the Engine.IO heartbeat.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::{SendError, SocketError};

use super::protocol::{Closing, RecoveryReason, SESSION_CLOSING, SYNC_POSITION};
use super::replay::notify_and_disconnect;
use crate::events::Position;
use crate::stats::Stats;

/// How long an eviction waits for the slow socket's buffer to make room for the notice.
const EVICT_DEADLINE: Duration = Duration::from_secs(30);

/// Set on a socket being evicted, so it is evicted once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Evicting(Arc<AtomicBool>);

/// After an emit to `position.room` that `missed` local sockets missed: finds them and
/// evicts them.
pub(crate) fn after_missed_emit<A: Adapter>(io: &SocketIo<A>, position: &Position, missed: usize, stats: &Arc<Stats>) {
    let sockets = io.to(position.room.clone()).sockets();
    // A socket already being evicted keeps missing emits until it drains; when it explains
    // every miss, probing the whole room again (an extra message to each healthy socket,
    // on every event) would find nothing new.
    let evicting = sockets.iter().filter(|s| is_evicting(s)).count();
    if missed <= evicting {
        return;
    }
    for s in sockets {
        // Otherwise taken (the client checks it against its own position), or already gone.
        if let Err(SendError::Socket(SocketError::InternalChannelFull)) = s.emit(SYNC_POSITION, position) {
            evict(s, stats.clone());
        }
    }
}

fn is_evicting<A: Adapter>(s: &SocketRef<A>) -> bool {
    s.extensions.get::<Evicting>().is_some_and(|f| f.0.load(Ordering::Acquire))
}

fn evict<A: Adapter>(s: SocketRef<A>, stats: Arc<Stats>) {
    let Some(flag) = s.extensions.get::<Evicting>() else {
        return;
    };
    if flag.0.swap(true, Ordering::AcqRel) {
        return;
    }
    tracing::info!(sid = %s.id, "socket too slow for its events; evicting it so it reconnects and replays");
    stats.slow_disconnected();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + EVICT_DEADLINE;
        // The notice waits for buffer space like a replay does; then the disconnect.
        if let Err(RecoveryReason::SlowConsumer) = notify_and_disconnect(&s, SESSION_CLOSING, &Closing::SLOW_CONSUMER, deadline).await {
            tracing::warn!(sid = %s.id, "slow socket did not drain; leaving it to the heartbeat timeout");
        }
    });
}

/// Rooms that received broadcasts from other nodes, until they go quiet. A room broadcast
/// from another node is delivered here by socketioxide's Redis adapter, which drops the
/// refusals of sockets whose buffer is full: this node never learns that one of its sockets
/// missed it. So once such a room has been quiet for a moment, its head is announced to this
/// node's sockets in it, as after a missed local emit ([`after_missed_emit`]): a socket that
/// missed an envelope sees its gap and resyncs, one still full is evicted. A busy room needs
/// none of it (its next envelope shows the gap), and a quiet one costs one notice per burst.
#[derive(Default)]
pub struct QuietRooms {
    /// Room → when its last remote broadcast arrived.
    rooms: Mutex<HashMap<String, Instant>>,
}

/// Rooms remembered at most; beyond, new ones are not (their next envelope, or the next
/// reconnection, shows any gap).
const MAX_QUIET_ROOMS: usize = 100_000;

impl QuietRooms {
    /// A broadcast from another node reached `room`.
    pub(crate) fn note(&self, room: &str, now: Instant) {
        let mut rooms = self.rooms.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = rooms.get_mut(room) {
            *at = now;
        } else if rooms.len() < MAX_QUIET_ROOMS {
            rooms.insert(room.to_owned(), now);
        }
    }

    /// The rooms quiet for `quiet` or longer, forgotten here.
    pub(crate) fn take_quiet(&self, now: Instant, quiet: Duration) -> Vec<String> {
        let mut rooms = self.rooms.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due: Vec<String> = rooms
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) >= quiet)
            .map(|(room, _)| room.clone())
            .collect();
        for room in &due {
            rooms.remove(room);
        }
        due
    }
}

/// Announces the head of each room in `rooms` to this node's sockets in it, evicting those
/// that cannot take it (see [`QuietRooms`]); returns how many rooms were announced.
pub(crate) async fn announce_quiet<A: Adapter>(
    io: &SocketIo<A>,
    history: &dyn crate::history::History,
    rooms: Vec<String>,
    stats: &Arc<Stats>,
) -> usize {
    let mut announced = 0;
    for room in rooms {
        let members = io.to(room.clone()).sockets().len();
        if members == 0 {
            continue;
        }
        match history.head(&room).await {
            Ok(head) if !head.is_unborn() => {
                after_missed_emit(io, &head.in_room(room), members, stats);
                announced += 1;
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(room, %error, "no head to announce for a quiet room"),
        }
    }
    announced
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_is_due_once_quiet_and_then_forgotten() {
        let quiet = QuietRooms::default();
        let t0 = Instant::now();
        quiet.note("user:1", t0);
        quiet.note("user:2", t0);
        quiet.note("user:1", t0 + Duration::from_millis(1500)); // still busy
        assert_eq!(
            quiet.take_quiet(t0 + Duration::from_millis(2000), Duration::from_secs(2)),
            ["user:2"]
        );
        assert!(
            quiet
                .take_quiet(t0 + Duration::from_millis(2100), Duration::from_secs(2))
                .is_empty()
        );
        assert_eq!(
            quiet.take_quiet(t0 + Duration::from_millis(3500), Duration::from_secs(2)),
            ["user:1"]
        );
        assert!(
            quiet.take_quiet(t0 + Duration::from_secs(60), Duration::from_secs(2)).is_empty(),
            "announced once"
        );
    }
}
