//! The gate orders live emits against replays, so a reconnecting socket receives its missed
//! envelopes before any live one and never loses one in between.
//!
//! Emitting (history append + first emit attempt) holds it exclusively; a socket joining a
//! room reads the last part of the history and joins while holding it shared. So an
//! envelope is either in what the socket replays, or emitted after the socket joined —
//! never neither. It lives on the socket side: delivery takes it, sockets define it.

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// This node's gate (one per process, shared by delivery and the socket handlers).
#[derive(Debug, Default)]
pub struct Gate(RwLock<()>);

/// Held while envelopes are stored and emitted: no socket joins meanwhile.
#[must_use = "the gate is open again as soon as this is dropped"]
pub(crate) struct Emitting<'a> {
    _held: RwLockWriteGuard<'a, ()>,
}

/// Held while a socket catches up and joins rooms: nothing is emitted meanwhile.
#[must_use = "the gate is open again as soon as this is dropped"]
pub(crate) struct Joining<'a> {
    _held: RwLockReadGuard<'a, ()>,
}

impl Gate {
    /// Waits until no socket is joining, then keeps others from joining.
    pub(crate) async fn emitting(&self) -> Emitting<'_> {
        Emitting {
            _held: self.0.write().await,
        }
    }

    /// Waits until nothing is being emitted, then keeps emits out (joins share the gate).
    pub(crate) async fn joining(&self) -> Joining<'_> {
        Joining {
            _held: self.0.read().await,
        }
    }
}
