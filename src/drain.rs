//! The graceful drain, in order, each step logged and the whole bounded by the grace
//! period: readiness false and new handshakes refused (503, "try another node") → the
//! optional delay (`SHUTDOWN_DELAY_SECS`: load balancers see "not ready" while this node
//! still serves its sockets) → the consumer stops after the batch in flight and commits →
//! socket transports closed (clients reconnect elsewhere and resume) → HTTP closed.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::socket::hub::Hub;

/// What the drain stops, in order.
pub(crate) struct Drain<'a> {
    pub(crate) grace: Duration,
    pub(crate) delay: Duration,
    pub(crate) health: &'a Arc<Health>,
    pub(crate) consumer_stop: &'a CancellationToken,
    pub(crate) consumer: JoinHandle<()>,
    pub(crate) hub: &'a dyn Hub,
    pub(crate) http_stop: &'a CancellationToken,
    pub(crate) server: JoinHandle<()>,
}

/// Runs the drain; returns when every step finished or the grace period is over.
pub(crate) async fn drain(d: Drain<'_>) {
    let deadline = tokio::time::Instant::now() + d.grace;
    tracing::info!(grace = ?d.grace, "shutdown: readiness is now false");
    d.health.start_draining();
    if !d.delay.is_zero() {
        tracing::info!(delay = ?d.delay, "shutdown: new handshakes refused; serving open sockets a little longer");
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + d.delay)).await;
    }

    tracing::info!("shutdown: stopping the consumer after the record in flight");
    d.consumer_stop.cancel();
    if tokio::time::timeout_at(deadline, d.consumer).await.is_err() {
        tracing::warn!("shutdown: consumer did not stop within the grace period");
    }

    // Closing the transports (not a Socket.IO disconnect, which tells socket.io-client to
    // stay away) makes clients see "transport close" and reconnect — behind a load
    // balancer, to a live node, where they resume from their positions.
    let sockets = d.hub.local().sockets;
    tracing::info!(sockets, "shutdown: closing socket transports so clients reconnect elsewhere");
    if tokio::time::timeout_at(deadline, d.hub.close()).await.is_err() {
        tracing::warn!("shutdown: sockets did not close within the grace period");
    }

    tracing::info!("shutdown: closing the HTTP server");
    d.http_stop.cancel();
    if tokio::time::timeout_at(deadline, d.server).await.is_err() {
        tracing::warn!("shutdown: grace period over, dropping remaining connections");
    }
}
