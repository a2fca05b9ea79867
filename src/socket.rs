//! The Socket.IO side: handshake authentication, room membership and client events.
//!
//! Isolation rule: a socket's rooms are decided here and only here — its own
//! `user:<sub>` room from the verified token, `inventory:updates` on request, and
//! `admin:dashboard` only for admins. No client event names a room.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;

use crate::auth::{AuthError, Identity, Verifier};
use crate::health::Stats;
use crate::routing::{ADMIN_ROOM, INVENTORY_ROOM, user_room};

/// Registers the default namespace with its auth middleware and handlers.
pub fn register(io: &SocketIo) {
    io.ns("/", on_connect.with(authenticate));
}

/// Reads the token from `auth.token`, or `?token=` for older clients, and verifies it.
async fn authenticate(
    s: SocketRef,
    TryData(auth): TryData<serde_json::Value>,
    State(verifier): State<Arc<Verifier>>,
    State(stats): State<Arc<Stats>>,
) -> Result<(), AuthError> {
    let from_auth = auth.ok().and_then(|a| a.get("token").and_then(|t| t.as_str().map(str::to_owned)));
    let token = from_auth.or_else(|| query_param(s.req_parts().uri.query().unwrap_or(""), "token"));
    let result = token.ok_or(AuthError::MissingToken).and_then(|t| verifier.verify(&t));
    match result {
        Ok(identity) => {
            s.extensions.insert(identity);
            Ok(())
        }
        Err(error) => {
            Stats::incr(&stats.auth_failures);
            // The reason, never the token.
            tracing::info!(sid = %s.id, %error, "handshake refused");
            Err(error)
        }
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    // JWTs are base64url and dots: nothing in them needs percent-decoding.
    query
        .split('&')
        .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v.to_owned()))
}

/// Sent once to each socket when it is connected and in its rooms.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionSuccess<'a> {
    socket_id: String,
    user_id: &'a str,
    is_admin: bool,
    rooms: Vec<String>,
}

/// The answer to every client event, through its ack.
#[derive(Debug, Serialize)]
struct Reply {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    rooms: Vec<String>,
}

async fn on_connect(s: SocketRef, Extension(identity): Extension<Identity>, State(stats): State<Arc<Stats>>) {
    s.join(user_room(&identity.user_id));
    stats.connections.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(sid = %s.id, user = %identity.user_id, admin = identity.is_admin, "socket connected");

    s.on("subscribe:inventory", async |s: SocketRef, ack: AckSender| {
        s.join(INVENTORY_ROOM);
        reply(&s, ack, None);
    });
    s.on("unsubscribe:inventory", async |s: SocketRef, ack: AckSender| {
        s.leave(INVENTORY_ROOM);
        reply(&s, ack, None);
    });
    s.on(
        "subscribe:admin",
        async |s: SocketRef, ack: AckSender, Extension(id): Extension<Identity>| {
            if id.is_admin {
                s.join(ADMIN_ROOM);
                reply(&s, ack, None);
            } else {
                tracing::info!(sid = %s.id, user = %id.user_id, "subscribe:admin refused: not an admin");
                reply(&s, ack, Some("forbidden: admin role required"));
            }
        },
    );
    s.on("unsubscribe:admin", async |s: SocketRef, ack: AckSender| {
        s.leave(ADMIN_ROOM);
        reply(&s, ack, None);
    });
    // Kept for clients written against older bridges: order events already reach user:<sub>.
    s.on("subscribe:orders", async |s: SocketRef, ack: AckSender| reply(&s, ack, None));
    s.on_disconnect(async |s: SocketRef, reason: DisconnectReason, State(stats): State<Arc<Stats>>| {
        stats.connections.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(sid = %s.id, %reason, "socket disconnected");
    });

    let hello = ConnectionSuccess {
        socket_id: s.id.to_string(),
        user_id: &identity.user_id,
        is_admin: identity.is_admin,
        rooms: room_names(&s),
    };
    if let Err(error) = s.emit("connection:success", &hello) {
        tracing::debug!(sid = %s.id, %error, "could not send connection:success");
    }
}

fn room_names(s: &SocketRef) -> Vec<String> {
    let mut rooms: Vec<String> = s.rooms().into_iter().map(|r| r.to_string()).collect();
    rooms.sort();
    rooms
}

fn reply(s: &SocketRef, ack: AckSender, error: Option<&'static str>) {
    // A client that sent no ack callback gets nothing back; that is not an error.
    let _ = ack.send(&Reply {
        ok: error.is_none(),
        error,
        rooms: room_names(s),
    });
}

#[cfg(test)]
mod tests {
    use super::query_param;

    #[test]
    fn token_from_query() {
        assert_eq!(
            query_param("EIO=4&transport=websocket&token=a.b.c", "token").as_deref(),
            Some("a.b.c")
        );
        assert_eq!(query_param("EIO=4&tokens=x", "token"), None);
        assert_eq!(query_param("", "token"), None);
    }
}
