//! The gate orders live emits against replays, room by room, so a reconnecting socket
//! receives its missed envelopes before any live one and never loses one in between.
//!
//! Each room has its own lock. Emitting (history append + first emit attempt of a batch)
//! holds the locks of the batch's rooms exclusively; a socket joining rooms reads the last
//! part of their history and joins while holding their locks shared. So an envelope is
//! either in what the socket replays, or emitted after the socket joined — never neither.
//! A handshake for `user:42` never waits for an emit to `admin:dashboard`.
//!
//! Locks are taken in the rooms' sorted order, all of them before any work, so two holders
//! can never wait on each other. A room's lock exists only while someone holds or awaits it.
//! It lives on the socket side: delivery takes it, sockets define it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

type RoomLock = Arc<RwLock<()>>;

/// This node's gate (one per process, shared by delivery and the socket handlers).
#[derive(Debug, Default)]
pub struct Gate {
    rooms: Mutex<HashMap<String, RoomLock>>,
}

/// Held while envelopes are stored and emitted: no socket joins these rooms meanwhile.
#[must_use = "the gate is open again as soon as this is dropped"]
pub(crate) struct Emitting<'a> {
    held: Vec<OwnedRwLockWriteGuard<()>>,
    _release: Release<'a>,
}

/// Held while a socket catches up and joins rooms: nothing is emitted to them meanwhile.
#[must_use = "the gate is open again as soon as this is dropped"]
pub(crate) struct Joining<'a> {
    held: Vec<OwnedRwLockReadGuard<()>>,
    _release: Release<'a>,
}

/// Forgets the rooms' locks nobody else holds, once the guards are gone.
struct Release<'a> {
    gate: &'a Gate,
    rooms: Vec<String>,
}

impl Gate {
    /// Waits until no socket is joining any of `rooms`, then keeps others from joining them.
    pub(crate) async fn emitting<'r>(&self, rooms: impl IntoIterator<Item = &'r str>) -> Emitting<'_> {
        let (locks, release) = self.locks(rooms);
        let mut held = Vec::with_capacity(locks.len());
        for lock in locks {
            held.push(lock.write_owned().await);
        }
        Emitting { held, _release: release }
    }

    /// Waits until nothing is being emitted to any of `rooms`, then keeps emits to them out
    /// (joins share the gate).
    pub(crate) async fn joining<'r>(&self, rooms: impl IntoIterator<Item = &'r str>) -> Joining<'_> {
        let (locks, release) = self.locks(rooms);
        let mut held = Vec::with_capacity(locks.len());
        for lock in locks {
            held.push(lock.read_owned().await);
        }
        Joining { held, _release: release }
    }

    /// Rooms' locks in sorted order (created as needed).
    fn locks<'r>(&self, rooms: impl IntoIterator<Item = &'r str>) -> (Vec<RoomLock>, Release<'_>) {
        let sorted: BTreeSet<&str> = rooms.into_iter().collect();
        let mut map = self.map();
        let locks = sorted
            .iter()
            .map(|room| map.entry((*room).to_owned()).or_default().clone())
            .collect();
        let rooms = sorted.into_iter().map(str::to_owned).collect();
        (locks, Release { gate: self, rooms })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomLock>> {
        // Plain data: a panic elsewhere leaves it consistent.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rooms with a lock right now (held or awaited).
    #[cfg(test)]
    pub(crate) fn rooms(&self) -> usize {
        self.map().len()
    }
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let mut map = self.gate.map();
        for room in &self.rooms {
            // Only the map holds it: nobody holds or awaits it (taking a clone needs the map).
            if map.get(room).is_some_and(|lock| Arc::strong_count(lock) == 1) {
                map.remove(room);
            }
        }
    }
}

impl Drop for Emitting<'_> {
    fn drop(&mut self) {
        // The guards go before `_release` looks at who still holds the locks.
        self.held.clear();
    }
}

impl Drop for Joining<'_> {
    fn drop(&mut self) {
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn blocked<F: std::future::Future>(f: F) -> bool {
        tokio::time::timeout(Duration::from_millis(20), f).await.is_err()
    }

    #[tokio::test]
    async fn an_emit_holds_off_joins_to_its_rooms_only() {
        let gate = Gate::default();
        let emitting = gate.emitting(["admin:dashboard", "user:7"]).await;
        assert!(blocked(gate.joining(["user:7"])).await, "a join to an emitted room waits");
        assert!(!blocked(gate.joining(["user:42"])).await, "a join elsewhere does not");
        assert!(blocked(gate.joining(["user:42", "admin:dashboard"])).await);
        drop(emitting);
        assert!(!blocked(gate.joining(["user:7", "admin:dashboard"])).await);
    }

    #[tokio::test]
    async fn joins_share_and_hold_off_emits() {
        let gate = Gate::default();
        let a = gate.joining(["user:7"]).await;
        let b = gate.joining(["user:7", "user:8"]).await;
        assert!(blocked(gate.emitting(["user:8"])).await);
        drop(b);
        assert!(blocked(gate.emitting(["user:7"])).await, "still one join on user:7");
        assert!(!blocked(gate.emitting(["user:8"])).await);
        drop(a);
        assert!(!blocked(gate.emitting(["user:7"])).await);
    }

    #[tokio::test]
    async fn locks_are_forgotten_when_nobody_holds_them() {
        let gate = Gate::default();
        let held = gate.joining(["a", "b"]).await;
        {
            let _also = gate.joining(["b", "c"]).await;
            assert_eq!(gate.rooms(), 3);
        }
        assert_eq!(gate.rooms(), 2, "c is gone, b is still held");
        drop(held);
        assert_eq!(gate.rooms(), 0);
    }

    #[tokio::test]
    async fn overlapping_holders_in_any_order_never_deadlock() {
        let gate = Arc::new(Gate::default());
        let rooms = ["a", "b", "c", "d"];
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let gate = gate.clone();
                tokio::spawn(async move {
                    // Different subsets, listed in different orders.
                    let mine: Vec<&str> = (0..3).map(|k| rooms[(i + k * (i % 3 + 1)) % 4]).collect();
                    for _ in 0..20 {
                        if i % 2 == 0 {
                            let _g = gate.emitting(mine.iter().rev().copied()).await;
                            tokio::task::yield_now().await;
                        } else {
                            let _g = gate.joining(mine.iter().copied()).await;
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        let all = futures_util::future::join_all(tasks);
        tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .expect("every holder got through");
        assert_eq!(gate.rooms(), 0);
    }
}
