//! The Socket.IO server as the rest of the service uses it, whichever adapter it runs on
//! (this node alone, or Redis between nodes): emit to a room, count sockets, close.
//!
//! socketioxide's types are generic over the adapter; this trait keeps that generic to the
//! socket module, so delivery, HTTP and the app hold one `Arc<dyn Hub>`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use async_trait::async_trait;
use futures_util::future::maybe_done;
use socketioxide::adapter::Adapter;
use socketioxide::operators::BroadcastOperators;
use socketioxide::{AdapterError, BroadcastError, SocketError, SocketIo};

use super::protocol::SYNC_POSITION;
use super::slow;
use crate::events::{Envelope, Position};
use crate::history::{Entry, History};
use crate::routing::USER_ROOM_PREFIX;
use crate::stats::Stats;

/// Sockets and rooms on this node.
#[derive(Debug, Default)]
pub struct LocalView {
    /// Sockets connected here.
    pub sockets: usize,
    /// Sockets per room.
    pub rooms: HashMap<String, usize>,
}

/// Sockets and users over every node, as the adapter reports them.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// Sockets connected to any node.
    pub sockets: usize,
    /// Users with at least one socket on some node.
    pub users: usize,
    /// Sockets per node (by the adapter's server id); nodes without sockets do not appear.
    pub nodes: BTreeMap<String, usize>,
}

/// The Socket.IO server, whatever its adapter.
#[async_trait]
pub trait Hub: Send + Sync + 'static {
    /// Emits `envelope` as `event` to `room` on every node. Returns how many sockets of
    /// this node missed it (they are then dealt with as slow consumers); an error means it
    /// reached nobody (the adapter could not publish it) or could not be encoded.
    async fn emit(&self, room: &str, event: &str, envelope: &Envelope) -> Result<usize, BroadcastError>;

    /// Emits each entry to its room, in order; one result per entry, as [`Hub::emit`].
    /// Every emit is started before the first is awaited — with Redis each one queues its
    /// publish on its first poll, so the batch costs one round trip — and they are then
    /// completed one after the other, so this node's sockets also receive them in order.
    async fn emit_all(&self, batch: &[(&str, &Entry)]) -> Vec<Result<usize, BroadcastError>> {
        let mut emits: Vec<_> = batch
            .iter()
            .map(|(room, entry)| maybe_done(self.emit(room, &entry.event, &entry.envelope)))
            .collect();
        std::future::poll_fn(|cx| {
            for emit in &mut emits {
                let _ = Pin::new(emit).poll(cx);
            }
            Poll::Ready(())
        })
        .await;
        let mut results = Vec::with_capacity(emits.len());
        for mut emit in emits {
            (&mut emit).await;
            // Awaited just above, so the output is there.
            results.push(Pin::new(&mut emit).take_output().unwrap_or(Ok(0)));
        }
        results
    }

    /// Sends `position` as `sync:position` to every socket of its room, on every node.
    async fn announce(&self, position: &Position) -> Result<(), BroadcastError>;

    /// This node's sockets and rooms.
    fn local(&self) -> LocalView;

    /// Every node's sockets and users, through the adapter.
    async fn cluster(&self) -> Result<ClusterView, String>;

    /// Sends every socket of this node the head of each of its rooms (`sync:position`),
    /// so clients that missed broadcasts (this node was cut from the others) resync.
    async fn announce_heads(&self, history: &dyn History) -> usize;

    /// Closes every socket transport of this node (clients reconnect, elsewhere).
    async fn close(&self);
}

/// [`Hub`] over a socketioxide server.
pub(crate) struct SocketHub<A: Adapter> {
    io: SocketIo<A>,
    stats: Arc<Stats>,
}

impl<A: Adapter> SocketHub<A> {
    /// Wraps `io`.
    pub fn new(io: SocketIo<A>, stats: Arc<Stats>) -> Arc<Self> {
        Arc::new(SocketHub { io, stats })
    }

    /// The default namespace, once registered: with Redis it exists only after its
    /// adapter channels were subscribed (socketioxide's `io.to(…)` and friends panic
    /// before that, and Redis may be away at start).
    fn ns(&self) -> Option<BroadcastOperators<A>> {
        self.io.of("/")
    }
}

/// An emit before the namespace exists reached nobody: retried like an adapter failure.
fn not_registered() -> BroadcastError {
    BroadcastError::Adapter(AdapterError(Box::new(std::io::Error::other(
        "the Socket.IO namespace is not registered yet (Redis unreachable since start)",
    ))))
}

#[async_trait]
impl<A: Adapter> Hub for SocketHub<A> {
    async fn emit(&self, room: &str, event: &str, envelope: &Envelope) -> Result<usize, BroadcastError> {
        let ns = self.ns().ok_or_else(not_registered)?;
        match ns.to(room.to_owned()).emit(event, envelope).await {
            Ok(()) => Ok(0),
            Err(BroadcastError::Socket(sockets)) => {
                tracing::warn!(room, event, id = %envelope.id, missed = sockets.len(), "some sockets could not take an emit");
                if let Some(position) = &envelope.position
                    && sockets.iter().any(|e| matches!(e, SocketError::InternalChannelFull))
                {
                    slow::after_missed_emit(&self.io, position, sockets.len(), &self.stats);
                }
                Ok(sockets.len())
            }
            Err(error) => Err(error),
        }
    }

    async fn announce(&self, position: &Position) -> Result<(), BroadcastError> {
        let ns = self.ns().ok_or_else(not_registered)?;
        match ns.to(position.room.clone()).emit(SYNC_POSITION, position).await {
            // A socket with a full buffer misses it; it is already being evicted.
            Err(BroadcastError::Socket(_)) => Ok(()),
            other => other,
        }
    }

    fn local(&self) -> LocalView {
        let sockets = self.ns().map(|ns| ns.sockets()).unwrap_or_default();
        let mut rooms: HashMap<String, usize> = HashMap::new();
        for s in &sockets {
            for room in s.rooms() {
                *rooms.entry(room.into_owned()).or_default() += 1;
            }
        }
        LocalView {
            sockets: sockets.len(),
            rooms,
        }
    }

    async fn cluster(&self) -> Result<ClusterView, String> {
        let ns = self
            .ns()
            .ok_or("the Socket.IO namespace is not registered yet (Redis unreachable)")?;
        let (sockets, rooms) = tokio::join!(ns.clone().fetch_sockets(), ns.rooms());
        let (sockets, rooms) = (sockets.map_err(|e| e.to_string())?, rooms.map_err(|e| e.to_string())?);
        let mut nodes = BTreeMap::new();
        for s in &sockets {
            *nodes.entry(s.data().server_id.to_string()).or_default() += 1;
        }
        Ok(ClusterView {
            sockets: sockets.len(),
            users: rooms.iter().filter(|r| r.starts_with(USER_ROOM_PREFIX)).count(),
            nodes,
        })
    }

    async fn announce_heads(&self, history: &dyn History) -> usize {
        let rooms = self.local().rooms;
        let mut announced = 0;
        for room in rooms.into_keys() {
            match history.head(&room).await {
                // No history: nothing a client could have missed.
                Ok(head) if head.is_unborn() => {}
                Ok(head) => {
                    let position = head.in_room(room.clone());
                    // A socket with a full buffer misses it; it is already being evicted.
                    if let Some(ns) = self.ns() {
                        let _ = ns.local().to(room).emit(SYNC_POSITION, &position).await;
                    }
                    announced += 1;
                }
                Err(error) => tracing::warn!(room, %error, "no head to announce"),
            }
        }
        announced
    }

    async fn close(&self) {
        self.io.close().await;
    }
}
