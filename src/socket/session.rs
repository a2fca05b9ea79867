//! Sockets' authentication lifetimes: a socket is disconnected when its JWT expires, unless
//! the client sent a fresh token (same user) through `auth:refresh` first.
//!
//! One task watches every socket of the node (a deadline per socket in one ordered set),
//! rather than a task per socket: a sleeping task per connection costs about a kilobyte
//! (its future, the timer entry, a notifier and a cancellation token), and connections,
//! not events, set the memory bill.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::limits::EventBudget;
use super::protocol::{AUTH_EXPIRED, Expired};
use super::replay::notify_and_disconnect;

type Expire = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The token expiry of every socket of this node.
#[derive(Default)]
pub(crate) struct Expiries {
    inner: Mutex<Inner>,
    changed: Notify,
}

#[derive(Default)]
struct Inner {
    /// `(exp, socket)`, soonest first.
    due: BTreeSet<(u64, Sid)>,
    /// What to do at `exp`, by socket.
    watched: HashMap<Sid, (u64, Expire)>,
}

impl std::fmt::Debug for Expiries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let watched = self.inner.lock().map_or(0, |i| i.watched.len());
        f.debug_struct("Expiries").field("watched", &watched).finish()
    }
}

impl Expiries {
    /// Disconnects `s` at `expires_at` (seconds since the epoch), unless refreshed or
    /// forgotten first.
    pub(crate) fn watch<A: Adapter>(&self, s: &SocketRef<A>, expires_at: u64) {
        let socket = s.clone();
        self.insert(s.id, expires_at, Box::new(move || Box::pin(expire(socket))));
    }

    /// Runs `expire` at `expires_at` for `sid` (replacing what was watched for it).
    fn insert(&self, sid: Sid, expires_at: u64, expire: Expire) {
        let mut inner = self.lock();
        inner.due.insert((expires_at, sid));
        if let Some((old, _)) = inner.watched.insert(sid, (expires_at, expire)) {
            inner.due.remove(&(old, sid));
        }
        drop(inner);
        self.changed.notify_one();
    }

    /// A fresh token was accepted: the socket now lives until `expires_at`. False when the
    /// socket is no longer watched (it already expired).
    pub(crate) fn refresh(&self, sid: Sid, expires_at: u64) -> bool {
        let mut inner = self.lock();
        let Some(old) = inner.watched.get_mut(&sid).map(|(exp, _)| std::mem::replace(exp, expires_at)) else {
            return false;
        };
        inner.due.remove(&(old, sid));
        inner.due.insert((expires_at, sid));
        drop(inner);
        self.changed.notify_one();
        true
    }

    /// The socket is gone: stop watching it.
    pub(crate) fn forget(&self, sid: Sid) {
        let mut inner = self.lock();
        if let Some((exp, _)) = inner.watched.remove(&sid) {
            inner.due.remove(&(exp, sid));
        }
    }

    /// How many sockets are watched.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().watched.len()
    }

    /// Expires sockets as their deadlines pass, until `shutdown`.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let next = self.lock().due.first().map(|(exp, _)| *exp);
            let sleep = async {
                match next {
                    Some(exp) => tokio::time::sleep(Duration::from_secs(exp).saturating_sub(now())).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                // A sooner deadline may have come in.
                _ = self.changed.notified() => continue,
                _ = sleep => {}
            }
            let now = now();
            let mut due = Vec::new();
            {
                let mut inner = self.lock();
                while let Some(&(exp, sid)) = inner.due.first()
                    && Duration::from_secs(exp) <= now
                {
                    inner.due.pop_first();
                    if let Some((_, expire)) = inner.watched.remove(&sid) {
                        due.push(expire);
                    }
                }
            }
            // Each disconnect may wait on a full buffer: none holds up the others.
            for expire in due {
                tokio::spawn(expire());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned lock's data is still consistent.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How long an expired socket whose buffer is full is given to take its disconnect; it
/// receives nothing meanwhile (it has left its rooms), and the Engine.IO heartbeat closes
/// a socket that never reads again.
const DISCONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// The socket's token expired. Telling the client with `auth:expired` and a Socket.IO
/// disconnect (not a transport close) keeps socket.io-client from reconnecting with the
/// same stale token.
///
/// Expiry holds whatever the socket does: at `exp` it leaves every room and its client
/// events are refused at once, before the notice and the disconnect, which a socket that
/// does not read (its buffer full) may only take later.
async fn expire<A: Adapter>(s: SocketRef<A>) {
    tracing::info!(sid = %s.id, "token expired; disconnecting");
    s.leave_all();
    if let Some(budget) = s.extensions.get::<Arc<EventBudget>>() {
        budget.close();
    }
    let deadline = tokio::time::Instant::now() + DISCONNECT_DEADLINE;
    if notify_and_disconnect(&s, AUTH_EXPIRED, &Expired::NOTICE, deadline).await.is_err() {
        tracing::info!(sid = %s.id, "expired socket gone or not reading; left to the heartbeat");
    }
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(n: u8) -> Sid {
        // Any 16 base64url characters make a sid.
        format!("AAAAAAAAAAAAAAA{}", (b'A' + n) as char).parse().unwrap()
    }

    #[test]
    fn refresh_and_forget_keep_one_deadline_per_socket() {
        let e = Expiries::default();
        for n in 0..3 {
            e.insert(sid(n), 100 + u64::from(n), Box::new(|| Box::pin(async {})));
        }
        assert!(e.refresh(sid(0), 500));
        assert!(!e.refresh(sid(9), 500), "an unwatched socket is not refreshed");
        e.forget(sid(1));
        assert_eq!(e.len(), 2);
        let due: Vec<(u64, Sid)> = e.lock().due.iter().copied().collect();
        assert_eq!(due, vec![(102, sid(2)), (500, sid(0))]);
    }

    #[tokio::test]
    async fn deadlines_that_passed_are_expired_and_the_others_wait() {
        let e = Arc::new(Expiries::default());
        let fired = Arc::new(Mutex::new(Vec::new()));
        let now = now().as_secs();
        for (n, exp) in [(0u8, now - 1), (1, now + 3600)] {
            let fired = fired.clone();
            e.insert(
                sid(n),
                exp,
                Box::new(move || {
                    Box::pin(async move {
                        fired.lock().unwrap().push(n);
                    })
                }),
            );
        }
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(e.clone().run(shutdown.clone()));
        while fired.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(*fired.lock().unwrap(), vec![0]);
        assert_eq!(e.len(), 1, "the other one is still watched");
        shutdown.cancel();
        task.await.unwrap();
    }
}
