//! A socket's outgoing packet queue: bounded like the `tokio::sync::mpsc` channel it replaces
//! (same permit API, same errors), with the volatile slot beside it, and nothing allocated
//! until a packet is queued.
//!
//! Why not `mpsc`: tokio's channel allocates its first block of 32 slots, and a cache-padded
//! channel state, whatever the capacity and whether anything is ever sent — about 2 KiB per
//! socket, most of an idle connection's cost — and the volatile emits needed a `watch` channel
//! of their own (another half KiB). Here a socket costs one small allocation for the shared
//! state; the buffer grows with what is queued and is given back once a burst has drained.
//!
//! One sender (the socket) and one receiver (the transport holding the socket's `internal_rx`
//! lock), as the socket uses them. Buffered packets are received before the volatile one, as
//! the transports polled the two channels before.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use engineioxide_core::PacketBuf;
use tokio::sync::{
    Notify,
    mpsc::error::{TryRecvError, TrySendError},
};

/// A drained buffer larger than this many slots is shrunk back to [`KEEP_SLOTS`]: a burst's
/// memory is returned, while the steady traffic of a busy socket (a few packets queued at a
/// time) reallocates nothing. 32 slots is where tokio's channel started.
const SHRINK_ABOVE: usize = 32;
/// What a drained buffer is shrunk to.
const KEEP_SLOTS: usize = 4;

/// Creates a queue of at most `capacity` buffered packets (volatile ones aside).
pub(crate) fn channel(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buffer: VecDeque::new(),
            reserved: 0,
            volatile: None,
            rx_closed: false,
            tx_dropped: false,
            rx_waker: None,
            sender_waiting: false,
        }),
        capacity,
        changed: Notify::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    capacity: usize,
    /// Woken when the receiver closes (for [`Sender::closed`]), or when room is made while a
    /// [`Sender::send`] waits for it.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    buffer: VecDeque<PacketBuf>,
    /// Permits handed out and not yet used: they hold their place in the capacity.
    reserved: usize,
    /// The latest volatile packets, not yet received (a newer one replaces it).
    volatile: Option<PacketBuf>,
    rx_closed: bool,
    tx_dropped: bool,
    rx_waker: Option<Waker>,
    /// A [`Sender::send`] waits for room: wake it when some is made.
    sender_waiting: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Plain data, never left half-updated: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Room was made: wakes a [`Sender::send`] waiting for it.
    fn made_room(&self, mut state: MutexGuard<'_, State>) {
        if std::mem::take(&mut state.sender_waiting) {
            drop(state);
            self.changed.notify_waiters();
        }
    }
}

impl State {
    /// Whether one more packet may take a place: not once the receiver is closed, nor
    /// beyond `capacity` (queued packets and unused permits).
    fn admit(&self, capacity: usize) -> Result<(), TrySendError<()>> {
        if self.rx_closed {
            Err(TrySendError::Closed(()))
        } else if self.buffer.len() + self.reserved >= capacity {
            Err(TrySendError::Full(()))
        } else {
            Ok(())
        }
    }

    fn push(&mut self, packets: PacketBuf) {
        self.buffer.push_back(packets);
        self.wake_receiver();
    }

    fn wake_receiver(&mut self) {
        if let Some(waker) = self.rx_waker.take() {
            waker.wake();
        }
    }
}

/// The sending half, held by the socket.
#[derive(Debug)]
pub(crate) struct Sender {
    shared: Arc<Shared>,
}

/// A place in the queue, taken by [`Sender::try_reserve`]; used by [`Permit::send`], or given
/// back when dropped.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    sender: &'a Sender,
}

/// The receiving half, held behind the socket's `internal_rx` lock.
#[derive(Debug)]
pub(crate) struct Receiver {
    shared: Arc<Shared>,
}

impl Sender {
    /// Queues `packets` if there is room.
    pub(crate) fn try_send(&self, packets: PacketBuf) -> Result<(), TrySendError<PacketBuf>> {
        let mut state = self.shared.state();
        match state.admit(self.shared.capacity) {
            Ok(()) => {
                state.push(packets);
                Ok(())
            }
            Err(TrySendError::Closed(())) => Err(TrySendError::Closed(packets)),
            Err(TrySendError::Full(())) => Err(TrySendError::Full(packets)),
        }
    }

    /// Queues `packets`, waiting for room; gives them back if the receiver is closed.
    pub(crate) async fn send(&self, packets: PacketBuf) -> Result<(), PacketBuf> {
        loop {
            let room = self.shared.changed.notified();
            tokio::pin!(room);
            // Registered before trying, so room made in between is not missed.
            room.as_mut().enable();
            {
                let mut state = self.shared.state();
                match state.admit(self.shared.capacity) {
                    Ok(()) => {
                        state.push(packets);
                        return Ok(());
                    }
                    Err(TrySendError::Closed(())) => return Err(packets),
                    // Under the same lock as the check: room made after it wakes this waiter.
                    Err(TrySendError::Full(())) => state.sender_waiting = true,
                }
            }
            room.await;
        }
    }

    /// Takes a place in the queue, to be filled by [`Permit::send`].
    pub(crate) fn try_reserve(&self) -> Result<Permit<'_>, TrySendError<()>> {
        let mut state = self.shared.state();
        state.admit(self.shared.capacity)?;
        state.reserved += 1;
        Ok(Permit { sender: self })
    }

    /// Replaces the volatile packets not yet received; `false` once the receiver is closed.
    pub(crate) fn send_volatile(&self, packets: PacketBuf) -> bool {
        let mut state = self.shared.state();
        if state.rx_closed {
            return false;
        }
        state.volatile = Some(packets);
        state.wake_receiver();
        true
    }

    /// Whether the receiver is closed: nothing can be queued any more.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.state().rx_closed
    }

    /// Waits until the receiver is closed.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a close in between is not missed.
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let mut state = self.shared.state();
        state.tx_dropped = true;
        state.wake_receiver();
    }
}

impl Permit<'_> {
    /// Queues `packets` in the place this permit holds (even if the receiver closed since, as
    /// with `mpsc`: they are received before the end).
    pub(crate) fn send(self, packets: PacketBuf) {
        let mut state = self.sender.shared.state();
        state.reserved -= 1;
        state.push(packets);
        drop(state);
        std::mem::forget(self);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut state = self.sender.shared.state();
        state.reserved -= 1;
        self.sender.shared.made_room(state);
    }
}

impl Receiver {
    /// The next buffered packets, else the volatile ones; `None` once closed (or the sender
    /// gone) and drained.
    pub(crate) async fn recv(&mut self) -> Option<PacketBuf> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Receiver::recv`] for poll-based callers.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<PacketBuf>> {
        let mut state = self.shared.state();
        match Self::take(&mut state) {
            Ok(packets) => {
                self.shared.made_room(state);
                Poll::Ready(Some(packets))
            }
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => {
                if !state
                    .rx_waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    state.rx_waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// [`Receiver::recv`] without waiting.
    pub(crate) fn try_recv(&mut self) -> Result<PacketBuf, TryRecvError> {
        let mut state = self.shared.state();
        let packets = Self::take(&mut state)?;
        self.shared.made_room(state);
        Ok(packets)
    }

    /// Stops the queue: nothing more can be queued (permits already taken still can), what is
    /// queued is still received, [`Sender::closed`] returns.
    pub(crate) fn close(&mut self) {
        let mut state = self.shared.state();
        if !state.rx_closed {
            state.rx_closed = true;
            drop(state);
            self.shared.changed.notify_waiters();
        }
    }

    fn take(state: &mut State) -> Result<PacketBuf, TryRecvError> {
        if let Some(packets) = state.buffer.pop_front() {
            if state.buffer.is_empty() && state.buffer.capacity() > SHRINK_ABOVE {
                state.buffer.shrink_to(KEEP_SLOTS);
            }
            return Ok(packets);
        }
        if let Some(packets) = state.volatile.take() {
            return Ok(packets);
        }
        if state.rx_closed && state.reserved == 0 || state.tx_dropped {
            return Err(TryRecvError::Disconnected);
        }
        Err(TryRecvError::Empty)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use engineioxide_core::Packet;
    use smallvec::smallvec;

    use super::*;

    fn msg(text: &'static str) -> PacketBuf {
        smallvec![Packet::Message(text.into())]
    }

    fn text(packets: PacketBuf) -> String {
        match packets.into_iter().next() {
            Some(Packet::Message(m)) => m.to_string(),
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn nothing_is_allocated_until_a_packet_is_queued() {
        let (tx, mut rx) = channel(16);
        assert_eq!(tx.shared.state().buffer.capacity(), 0);
        tx.try_send(msg("a")).unwrap();
        assert!(tx.shared.state().buffer.capacity() > 0);
        assert_eq!(text(rx.try_recv().unwrap()), "a");
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let (tx, mut rx) = channel(1024);
        for _ in 0..SHRINK_ABOVE {
            tx.try_send(msg("x")).unwrap();
        }
        while rx.try_recv().is_ok() {}
        let kept = tx.shared.state().buffer.capacity();
        assert!(kept >= SHRINK_ABOVE, "a small burst keeps its slots");
        for _ in 0..500 {
            tx.try_send(msg("x")).unwrap();
        }
        assert!(tx.shared.state().buffer.capacity() >= 500);
        while rx.try_recv().is_ok() {}
        assert!(tx.shared.state().buffer.capacity() <= KEEP_SLOTS);
    }

    #[test]
    fn capacity_counts_queued_packets_and_unused_permits() {
        let (tx, mut rx) = channel(2);
        let permit = tx.try_reserve().unwrap();
        tx.try_send(msg("a")).unwrap();
        assert!(matches!(tx.try_send(msg("b")), Err(TrySendError::Full(_))));
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Full(()))));
        drop(permit);
        tx.try_reserve().unwrap().send(msg("c"));
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Full(()))));
        assert_eq!(text(rx.try_recv().unwrap()), "a");
        tx.try_send(msg("d")).unwrap();
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(text)
            .collect();
        assert_eq!(got, ["c", "d"]);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    }

    #[test]
    fn buffered_packets_come_before_the_latest_volatile_one() {
        let (tx, mut rx) = channel(8);
        assert!(tx.send_volatile(msg("v1")));
        assert!(tx.send_volatile(msg("v2")));
        tx.try_send(msg("a")).unwrap();
        tx.try_send(msg("b")).unwrap();
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(text)
            .collect();
        assert_eq!(got, ["a", "b", "v2"]);
    }

    #[test]
    fn after_close_nothing_new_is_taken_but_what_was_queued_or_reserved_is_received() {
        let (tx, mut rx) = channel(8);
        tx.try_send(msg("a")).unwrap();
        let permit = tx.try_reserve().unwrap();
        rx.close();
        assert!(tx.is_closed());
        assert!(matches!(
            tx.try_send(msg("x")),
            Err(TrySendError::Closed(_))
        ));
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Closed(()))));
        assert!(!tx.send_volatile(msg("v")));
        assert_eq!(text(rx.try_recv().unwrap()), "a");
        assert!(
            matches!(rx.try_recv(), Err(TryRecvError::Empty)),
            "a permit is still out"
        );
        permit.send(msg("b"));
        assert_eq!(text(rx.try_recv().unwrap()), "b");
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));
    }

    #[tokio::test]
    async fn recv_waits_for_a_packet_and_ends_when_the_sender_is_gone() {
        let (tx, mut rx) = channel(8);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(p) = rx.recv().await {
                got.push(text(p));
            }
            got
        });
        tokio::task::yield_now().await;
        tx.try_send(msg("a")).unwrap();
        tokio::task::yield_now().await;
        assert!(tx.send_volatile(msg("v")));
        drop(tx);
        assert_eq!(reader.await.unwrap(), ["a", "v"]);
    }

    #[tokio::test]
    async fn send_waits_for_room_and_gives_the_packets_back_once_closed() {
        let (tx, mut rx) = channel(1);
        let tx = Arc::new(tx);
        tx.send(msg("a")).await.unwrap();
        let sending = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(msg("b")).await.map_err(text) }
        });
        tokio::task::yield_now().await;
        assert!(!sending.is_finished(), "no room yet");
        assert_eq!(text(rx.recv().await.unwrap()), "a");
        tokio::time::timeout(Duration::from_secs(5), sending)
            .await
            .expect("room made")
            .unwrap()
            .unwrap();
        assert_eq!(text(rx.recv().await.unwrap()), "b");
        tx.send(msg("c")).await.unwrap();
        let blocked = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(msg("d")).await.map_err(text) }
        });
        tokio::task::yield_now().await;
        rx.close();
        let back = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .expect("woken by the close")
            .unwrap();
        assert_eq!(back, Err("d".to_owned()));
    }

    #[tokio::test]
    async fn closed_returns_once_the_receiver_closes() {
        let (tx, mut rx) = channel(8);
        let tx = Arc::new(tx);
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.closed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        rx.close();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("closed() returned")
            .unwrap();
        tx.closed().await;
    }
}
