//! Several nodes, one Socket.IO server: the Redis adapter (`socketioxide-redis`) carries
//! every room broadcast, and the cluster-wide socket and room queries, between nodes.
//!
//! The adapter talks to Redis through a [`Driver`]. The crate's own driver sits on a single
//! multiplexed connection that is never re-established: after a Redis restart a node would
//! stay deaf to every other node (the known failure of such adapters). [`PubSub`] is the
//! same small driver on redis-rs's `ConnectionManager` instead, which reconnects with
//! backoff and re-subscribes every channel on the new connection by itself; [`PubSub::ping`]
//! both feeds readiness and makes it reconnect promptly.
//!
//! Publishing is queued: every broadcast goes, in the order it was made, to one task that
//! sends whatever has queued up as one pipeline on that connection. So a batch of emits
//! costs one round trip, not one each, and Redis receives them in emit order (one
//! connection, one queue), which is the order every other node's sockets see.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{PushInfo, PushKind, RedisError};
use socketioxide::adapter::Emitter;
use socketioxide_core::Uid;
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};
use tokio::sync::{mpsc, oneshot};

use crate::socket::slow::QuietRooms;
use crate::stats::Stats;

/// The adapter this service uses when `REDIS_URL` is set.
pub(crate) type ClusterAdapter = CustomRedisAdapter<Emitter, PubSub>;

/// Messages a node may fall behind on one channel before the next ones are dropped (and
/// counted). A dropped broadcast is a gap the client helper detects and replays; the bound
/// only matters if a node stalls, since a bounded tokio channel allocates as it fills.
const CHANNEL_BUFFER: usize = 65_536;

/// How long a cluster-wide query (sockets, rooms) waits for the other nodes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What socketioxide-redis's channel names contain (`<prefix>-request#<ns>#[<uid>#]`,
/// `<prefix>-response#<ns>#<uid>#`).
const REQUEST_CHANNEL: &str = "-request#";
const RESPONSE_CHANNEL: &str = "-response#";

/// Broadcasts sent in one pipeline at most (more wait for the next round trip).
const MAX_PIPELINE: usize = 4_096;

type Handlers = Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>;

/// A broadcast waiting to be published, and who to tell how it went.
type Publish = (String, Vec<u8>, oneshot::Sender<Result<(), String>>);

/// The Redis pub/sub driver of the adapter: one RESP3 connection that comes back, with its
/// subscriptions, after Redis does.
#[derive(Clone)]
pub struct PubSub {
    conn: ConnectionManager,
    handlers: Handlers,
    /// Set when the connection drops: broadcasts published meanwhile never reached this node.
    dropped: Arc<AtomicBool>,
    /// The publishing queue. Unbounded because it is bounded by its callers: each one
    /// waits for its broadcast to be published, and delivery emits one bounded batch at a
    /// time.
    publisher: mpsc::UnboundedSender<Publish>,
    /// What is noted of other nodes' broadcasts.
    pub(crate) remote: Arc<Remote>,
}

impl PubSub {
    /// A driver for `url`; connects lazily, so Redis may be down when the node starts.
    /// Spawns its publishing task (it ends when the driver is dropped).
    pub fn new(url: &str, stats: Arc<Stats>) -> Result<Self, RedisError> {
        let info = ::redis::IntoConnectionInfo::into_connection_info(url)?;
        // Pushed pub/sub messages need RESP3 (Redis 6+), whatever the URL says.
        let settings = info.redis_settings().clone().set_protocol(::redis::ProtocolVersion::RESP3);
        let info = info.set_redis_settings(settings);
        let client = ::redis::Client::open(info)?;
        let handlers: Handlers = Arc::default();
        let dropped = Arc::new(AtomicBool::new(false));
        let remote = Arc::new(Remote::default());
        let (sink, lost, noted) = (handlers.clone(), dropped.clone(), remote.clone());
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(Duration::from_secs(2))
            .set_push_sender(move |push: PushInfo| {
                route_push(push, &sink, &lost, &stats, &noted);
                Ok::<(), std::convert::Infallible>(())
            })
            .set_automatic_resubscription();
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        let (publisher, queue) = mpsc::unbounded_channel();
        tokio::spawn(publish_in_order(conn.clone(), queue));
        Ok(PubSub {
            conn,
            handlers,
            dropped,
            publisher,
            remote,
        })
    }

    /// Whether the connection dropped since the last call. Redis pub/sub does not keep
    /// messages for absent subscribers, so after a drop this node's sockets may have missed
    /// broadcasts; see `Hub::announce_heads`.
    pub(crate) fn take_dropped(&self) -> bool {
        self.dropped.swap(false, Ordering::AcqRel)
    }

    /// The adapter's constructor state, for `SocketIo::builder().with_adapter`.
    pub fn adapter(self, prefix: &str) -> RedisAdapterCtr<PubSub> {
        let config = RedisAdapterConfig::new()
            .with_prefix(format!("{prefix}socket.io"))
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_stream_buffer(CHANNEL_BUFFER);
        RedisAdapterCtr::new_with_driver(self, config)
    }

    /// Whether the pub/sub connection answers a PING within `timeout`. A failed one makes
    /// the connection manager reconnect (and re-subscribe).
    pub async fn ping(&self, timeout: Duration) -> bool {
        let mut conn = self.conn.clone();
        matches!(
            tokio::time::timeout(timeout, ::redis::cmd("PING").query_async::<String>(&mut conn)).await,
            Ok(Ok(_))
        )
    }
}

/// Publishes what is queued, in order, as one pipeline per round trip; each caller learns
/// the outcome of its pipeline (a failed one reached no node: the caller may retry).
async fn publish_in_order(mut conn: ConnectionManager, mut queue: mpsc::UnboundedReceiver<Publish>) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, MAX_PIPELINE).await > 0 {
        let mut pipe = ::redis::pipe();
        for (chan, message, _) in &batch {
            pipe.publish(chan, message).ignore();
        }
        let result = pipe.query_async::<()>(&mut conn).await.map_err(|e| e.to_string());
        for (_, _, done) in batch.drain(..) {
            // The caller may have gone (shutdown): nobody to tell.
            let _ = done.send(result.clone());
        }
    }
}

/// What the driver notes of other nodes' broadcasts.
#[derive(Default)]
pub(crate) struct Remote {
    /// Rooms broadcast to by other nodes (see [`QuietRooms`]).
    pub(crate) quiet: QuietRooms,
    /// This node's adapter id, read from the response channel it subscribes to: its own
    /// broadcasts come back on the request channel and are not remote.
    own: OnceLock<Uid>,
}

impl Remote {
    /// A request from the adapter's request channel: a broadcast from another node notes
    /// its rooms. (Decoded once more here, as socketioxide-redis decodes it: its adapter
    /// keeps what a broadcast's refusals were to itself.)
    fn note(&self, message: &[u8]) {
        use socketioxide_core::adapter::remote_packet::{RequestIn, RequestTypeIn};
        let Ok(request) = rmp_serde::from_slice::<RequestIn>(message) else {
            return;
        };
        if self.own.get() == Some(&request.node_id) {
            return;
        }
        if let (RequestTypeIn::Broadcast(_), Some(opts)) = (&request.r#type, &request.opts) {
            let now = std::time::Instant::now();
            for room in &opts.rooms {
                self.quiet.note(room, now);
            }
        }
    }
}

/// The adapter id in socketioxide-redis's response channel (`…-response#<ns>#<uid>#`), the
/// one channel that names its subscriber.
fn adapter_id(chan: &str) -> Option<Uid> {
    if !chan.contains(RESPONSE_CHANNEL) {
        return None;
    }
    chan.trim_end_matches('#').rsplit('#').next()?.parse().ok()
}

/// Hands a pushed message to the stream subscribed to its channel; notes a dropped connection
/// and other nodes' broadcasts.
fn route_push(push: PushInfo, handlers: &Handlers, dropped: &AtomicBool, stats: &Stats, remote: &Remote) {
    if push.kind == PushKind::Disconnection {
        dropped.store(true, Ordering::Release);
        tracing::warn!("Redis pub/sub connection lost; reconnecting and re-subscribing");
        return;
    }
    if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
        return;
    }
    let mut data = push.data.into_iter();
    let (Some(channel), Some(message)) = (data.next(), data.next()) else {
        return;
    };
    let (Ok(channel), Ok(message)) = (
        ::redis::from_redis_value::<String>(channel),
        ::redis::from_redis_value::<Vec<u8>>(message),
    ) else {
        tracing::warn!("unreadable message from Redis pub/sub");
        return;
    };
    if channel.contains(REQUEST_CHANNEL) {
        remote.note(&message);
    }
    let handlers = handlers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(tx) = handlers.get(&channel)
        && tx.try_send((channel, message)).is_err()
    {
        stats.cluster_dropped();
        tracing::warn!("a cluster message was dropped: this node is behind on its Redis channel");
    }
}

impl Driver for PubSub {
    type Error = RedisError;

    fn publish(&self, chan: String, val: Vec<u8>) -> impl Future<Output = Result<(), Self::Error>> + Send {
        // Queued now, at the call, so broadcasts keep the order they were made in.
        let (done, outcome) = oneshot::channel();
        let queued = self.publisher.send((chan, val, done)).is_ok();
        async move {
            let failed = |why: String| RedisError::from(std::io::Error::other(why));
            if !queued {
                return Err(failed("the publishing task is gone".to_owned()));
            }
            match outcome.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(failed(error)),
                Err(_) => Err(failed("the publishing task is gone".to_owned())),
            }
        }
    }

    async fn subscribe(&self, chan: String, size: usize) -> Result<MessageStream<ChanItem>, Self::Error> {
        if let Some(uid) = adapter_id(&chan) {
            let _ = self.remote.own.set(uid);
        }
        let (tx, rx) = mpsc::channel(size);
        // Registered first: a message may be pushed as soon as the subscription is confirmed.
        self.handlers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(chan.clone(), tx);
        self.conn.clone().subscribe(chan.as_str()).await?;
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        self.handlers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&chan);
        self.conn.clone().unsubscribe(chan).await
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let (_, count): (String, u16) = ::redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(chan)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adapter_id_is_read_from_its_response_channel_only() {
        let uid = Uid::new();
        assert_eq!(adapter_id(&format!("rb:socket.io-response#/#{uid}#")), Some(uid));
        assert_eq!(adapter_id(&format!("rb:socket.io-request#/#{uid}#")), None);
        assert_eq!(adapter_id("rb:socket.io-response#/#not-an-id#"), None);
    }
}
