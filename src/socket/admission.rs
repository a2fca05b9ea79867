//! Engine.IO sessions are admitted before they cost anything: a request that opens one
//! (no `sid` yet, either transport) is refused with 503 while the node drains (clients and
//! proxies take it as "try another node": nginx's `proxy_next_upstream http_503` retries
//! the next server, socket.io-client reconnects with backoff) and counts against the
//! per-address and node-wide session budgets ([`Limiter::open_session`]). Sessions that never send a Socket.IO connect are
//! closed by socketioxide after the connect timeout (`CONNECT_TIMEOUT_SECS`); with the
//! budgets, that bounds how many such sessions a node holds.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::head::SOCKET_IO_PATH;
use super::limits::Limiter;
use crate::health::Health;
use crate::stats::Stats;

/// What admission looks at.
#[derive(Clone)]
pub struct Admission {
    /// Session budgets.
    pub limiter: Arc<Limiter>,
    /// Counters of refusals.
    pub stats: Arc<Stats>,
    /// Whether the node is draining.
    pub health: Arc<Health>,
}

/// Sent while draining: the client should connect again, elsewhere.
pub(crate) const DRAINING: &str = "this node is shutting down; connect again (another node will answer)";

/// Axum middleware: 503 for a new Engine.IO session while draining, 429 for one over
/// budget; everything else passes (sessions already open keep working until closed).
pub async fn admit(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    if !opens_session(&request) {
        return next.run(request).await;
    }
    let Admission { limiter, stats, health } = admission;
    if health.is_draining() {
        stats.limit_refused("draining");
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": DRAINING }))).into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    let (parts, body) = request.into_parts();
    if let Err(error) = limiter.open_session(limiter.client_ip(&parts)) {
        stats.limit_refused("engine_sessions");
        tracing::debug!(%error, "Engine.IO session refused");
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(serde_json::json!({ "error": error.to_string() })),
        )
            .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        return response;
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Whether `request` would open an Engine.IO session: on the Socket.IO path, without `sid`.
fn opens_session(request: &Request) -> bool {
    request.uri().path().starts_with(SOCKET_IO_PATH)
        && !request
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .any(|kv| kv.split('=').next() == Some("sid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str) -> Request {
        Request::builder().uri(uri).body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn only_requests_without_a_session_id_open_one() {
        assert!(opens_session(&req("/socket.io/?EIO=4&transport=polling")));
        assert!(opens_session(&req("/socket.io/?EIO=4&transport=websocket")));
        assert!(!opens_session(&req("/socket.io/?EIO=4&transport=polling&sid=abc")));
        assert!(!opens_session(&req("/socket.io/?sid=abc&EIO=4&transport=websocket")));
        assert!(!opens_session(&req("/health/ready")));
    }
}
