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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
