//! A socket's authentication lifetime: disconnected when its JWT expires, unless the client
//! sent a fresh token (same user) through `auth:refresh` first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::limits::EventBudget;
use super::protocol::{AUTH_EXPIRED, Expired};
use super::replay::notify_and_disconnect;

/// The expiry of the token a socket is connected with.
#[derive(Debug)]
pub(crate) struct Session {
    expires_at: AtomicU64,
    refreshed: Notify,
    closed: CancellationToken,
}

impl Session {
    /// A session ending at `expires_at` (seconds since the epoch).
    pub fn new(expires_at: u64) -> Arc<Self> {
        Arc::new(Session {
            expires_at: AtomicU64::new(expires_at),
            refreshed: Notify::new(),
            closed: CancellationToken::new(),
        })
    }

    /// A fresh token was accepted: the session now ends at `expires_at`.
    pub(crate) fn refresh(&self, expires_at: u64) {
        self.expires_at.store(expires_at, Ordering::Release);
        self.refreshed.notify_one();
    }

    /// The socket is gone: stop watching.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Seconds since the epoch at which the session ends.
    pub(crate) fn expires_at(&self) -> u64 {
        self.expires_at.load(Ordering::Acquire)
    }
}

/// How long an expired socket whose buffer is full is given to take its disconnect; it
/// receives nothing meanwhile (it has left its rooms), and the Engine.IO heartbeat closes
/// a socket that never reads again.
const DISCONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// Disconnects `s` when its token expires (and was not refreshed in time). Telling the
/// client with `auth:expired` and a Socket.IO disconnect (not a transport close) keeps
/// socket.io-client from reconnecting with the same stale token.
///
/// Expiry holds whatever the socket does: at `exp` it leaves every room and its client
/// events are refused at once, before the notice and the disconnect, which a socket that
/// does not read (its buffer full) may only take later.
pub(crate) async fn expire<A: Adapter>(s: SocketRef<A>, session: Arc<Session>) {
    loop {
        let exp = session.expires_at();
        let left = Duration::from_secs(exp).saturating_sub(now());
        tokio::select! {
            _ = session.closed.cancelled() => return,
            _ = session.refreshed.notified() => continue,
            _ = tokio::time::sleep(left) => {
                if session.expires_at() != exp {
                    continue;
                }
                tracing::info!(sid = %s.id, "token expired; disconnecting");
                s.leave_all();
                if let Some(budget) = s.extensions.get::<Arc<EventBudget>>() {
                    budget.close();
                }
                let deadline = tokio::time::Instant::now() + DISCONNECT_DEADLINE;
                if notify_and_disconnect(&s, AUTH_EXPIRED, &Expired::NOTICE, deadline).await.is_err() {
                    tracing::info!(sid = %s.id, "expired socket gone or not reading; left to the heartbeat");
                }
                return;
            }
        }
    }
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}
