//! Everything this node keeps in Redis, together: the replay history ([`history`]), the
//! Socket.IO adapter's pub/sub driver ([`adapter`]), and [`Links`], the loop that
//! subscribes the adapter's channels, pings both connections for readiness, and announces
//! room heads after the pub/sub link came back.
//!
//! (Inside this module `::redis` is the redis-rs crate.)

pub mod adapter;
pub mod history;

use std::sync::Arc;
use std::time::Duration;

use socketioxide::SocketIo;
use tokio_util::sync::CancellationToken;

use crate::delivery::Delivery;
use crate::health::Health;
use crate::socket;
use crate::socket::hub::Hub;
use crate::stats::Stats;
use crate::supervisor::every;
use adapter::{ClusterAdapter, PubSub};
use history::RedisHistory;

/// What this node has in Redis: the history and the adapter's pub/sub connection.
pub(crate) struct Links {
    pub(crate) history: RedisHistory,
    pub(crate) pubsub: PubSub,
    pub(crate) io: SocketIo<ClusterAdapter>,
    pub(crate) hub: Arc<dyn Hub>,
    /// For heads to announce after broadcasts the cluster did not take (set once built).
    pub(crate) delivery: Option<Delivery>,
    /// Counters (slow sockets evicted).
    pub(crate) stats: Arc<Stats>,
}

/// How long a room that got other nodes' broadcasts must be quiet before its head is
/// announced to this node's sockets in it (see `socket::slow::QuietRooms`).
const QUIET_AFTER: Duration = Duration::from_secs(2);

impl Links {
    /// Subscribes the namespace's adapter channels (retrying until Redis answers), then
    /// pings both connections every second; readiness follows, and each change is logged.
    /// The connection managers reconnect (and re-subscribe) by themselves once Redis is back;
    /// then clients are told their rooms' heads, to resync what they missed meanwhile.
    pub(crate) async fn run(self, health: Arc<Health>, stop: CancellationToken) -> anyhow::Result<()> {
        let subscribed = async {
            loop {
                match socket::register(&self.io).await {
                    Ok(()) => return tracing::info!("Socket.IO adapter subscribed to Redis"),
                    Err(error) => tracing::warn!(%error, "Socket.IO adapter cannot subscribe to Redis yet; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = subscribed => {}
        }
        every(Duration::from_secs(1), stop, || async {
            let timeout = Duration::from_secs(1);
            let (history, pubsub) = tokio::join!(self.history.ping(timeout), self.pubsub.ping(timeout));
            let up = history && pubsub;
            // Back after a drop (however short): broadcasts published meanwhile never came.
            if up && self.pubsub.take_dropped() {
                let rooms = self.hub.announce_heads(&self.history).await;
                tracing::info!(
                    rooms,
                    "Redis pub/sub reconnected and re-subscribed; room heads announced so clients resync"
                );
            }
            if up && let Some(delivery) = &self.delivery {
                let rooms = delivery.announce_unannounced().await;
                if rooms > 0 {
                    tracing::info!(rooms, "announced the heads of rooms whose broadcast the cluster had not taken");
                }
            }
            if up {
                let quiet = self.pubsub.remote.quiet.take_quiet(std::time::Instant::now(), QUIET_AFTER);
                socket::slow::announce_quiet(&self.io, &self.history, quiet, &self.stats).await;
            }
            if health.set_redis(up) {
                if up {
                    tracing::info!("Redis is reachable again; ready");
                } else {
                    tracing::warn!(history, pubsub, "Redis is unreachable; not ready until it answers again");
                }
            }
        })
        .await
    }
}
