//! The Socket.IO side: handshake authentication, room membership and client events.
//!
//! Isolation rule: a socket's rooms are decided here and only here — its own
//! `user:<sub>` room from the verified token, `inventory:updates` on request, and
//! `admin:dashboard` only for admins. No client event names a room, and a handshake
//! position only resumes a room the socket may join anyway.

mod admission;
pub mod gate;
mod head;
pub mod hub;
mod limits;
mod replay;
mod session;
pub mod slow;

pub use admission::admit;
pub use head::detach_head;
pub use limits::Limiter;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use socketioxide_core::adapter::DefinedAdapter;

use crate::auth::{AuthError, Identity, Verifier};
use gate::Gate;
use crate::history::{Cursor, History};
use crate::routing::{ADMIN_ROOM, INVENTORY_ROOM, user_room};
use crate::stats::Stats;
use limits::{EventBudget, LimitError, Slot, Verdict};
use replay::RoomRecovery;
use session::Session;

/// The room's head, sent so a client behind it resyncs (after a missed emit, a join while
/// another node emitted, a Redis reconnect).
const SYNC_POSITION: &str = "sync:position";

/// How long an abusive socket is ignored before it is disconnected.
const ABUSE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Most rooms a handshake may ask to resume; a socket is in at most three.
const MAX_RESUME_ROOMS: usize = 8;

/// Why a handshake was refused; the text is what the client sees in `connect_error`.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("invalid auth.positions: {0}")]
    Positions(String),
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// The rooms a reconnecting client asks to resume, from `auth.positions`.
#[derive(Debug, Clone, Default)]
struct Resume(Vec<(String, Cursor)>);

/// Registers the default namespace with its auth middleware and handlers.
/// With a remote adapter, the returned future subscribes the namespace's channels and
/// must succeed before the namespace exists.
pub fn register<A: Adapter + DefinedAdapter>(io: &SocketIo<A>) -> A::InitRes {
    io.ns("/", on_connect::<A>.with(authenticate::<A>))
}

/// Reads the token from `auth.token`, or `?token=` for older clients, and verifies it;
/// reads `auth.positions` (`{room: {epoch, seq}}`) for replay.
async fn authenticate<A: Adapter>(
    s: SocketRef<A>,
    TryData(auth): TryData<serde_json::Value>,
    State(verifier): State<Arc<Verifier>>,
    State(stats): State<Arc<Stats>>,
    State(limiter): State<Arc<Limiter>>,
) -> Result<(), HandshakeError> {
    // Cheapest refusal first: an address hammering handshakes never reaches JWT checks.
    if let Err(error) = limiter.handshake(limiter.client_ip(s.req_parts())) {
        stats.limit_refused("handshakes_per_ip");
        tracing::info!(sid = %s.id, %error, "handshake refused");
        return Err(error.into());
    }
    let mut auth = auth.unwrap_or_default();
    let from_auth = auth.get("token").and_then(|t| t.as_str().map(str::to_owned));
    let token = from_auth.or_else(|| query_param(s.req_parts().uri.query().unwrap_or(""), "token"));
    let result = token
        .ok_or(AuthError::MissingToken)
        .and_then(|t| verifier.verify(&t))
        .map_err(HandshakeError::from)
        .and_then(|identity| Ok((identity, parse_positions(auth.get_mut("positions").map(serde_json::Value::take))?)));
    let result = result.and_then(|(identity, resume)| match limiter.acquire(&identity.user_id) {
        Ok(slot) => Ok((identity, resume, slot)),
        Err(error) => {
            stats.limit_refused(match error {
                LimitError::PerUser(_) => "connections_per_user",
                _ => "connections",
            });
            Err(error.into())
        }
    });
    match result {
        Ok((identity, resume, slot)) => {
            s.extensions.insert(Session::new(identity.expires_at));
            s.extensions.insert(identity);
            s.extensions.insert(resume);
            s.extensions.insert(Arc::new(slot));
            s.extensions.insert(Arc::new(limiter.event_budget()));
            s.extensions.insert(slow::Evicting::default());
            Ok(())
        }
        Err(error) => {
            stats.auth_failed();
            // The reason, never the token.
            tracing::info!(sid = %s.id, %error, "handshake refused");
            Err(error)
        }
    }
}

fn parse_positions(value: Option<serde_json::Value>) -> Result<Resume, HandshakeError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Resume::default());
    };
    let map: BTreeMap<String, Cursor> = serde_json::from_value(value)
        .map_err(|e| HandshakeError::Positions(format!("expected {{\"<room>\": {{\"epoch\": string, \"seq\": integer}}}} ({e})")))?;
    if map.len() > MAX_RESUME_ROOMS {
        return Err(HandshakeError::Positions(format!("at most {MAX_RESUME_ROOMS} rooms")));
    }
    Ok(Resume(map.into_iter().collect()))
}

/// Whether this identity may be in `room` (the only rooms a handshake may resume).
fn may_join(identity: &Identity, room: &str) -> bool {
    room == user_room(&identity.user_id) || room == INVENTORY_ROOM || (room == ADMIN_ROOM && identity.is_admin)
}

fn query_param(query: &str, name: &str) -> Option<String> {
    // JWTs are base64url and dots: nothing in them needs percent-decoding.
    query
        .split('&')
        .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v.to_owned()))
}

/// Sent once to each socket when it is connected, caught up and in its rooms: after any
/// replayed envelope, before any live one.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionSuccess<'a> {
    socket_id: String,
    user_id: &'a str,
    is_admin: bool,
    rooms: Vec<String>,
    /// The position of each joined room: what the client should hand back on reconnect.
    positions: BTreeMap<String, Cursor>,
    /// For each room in the handshake's `positions`: whether everything missed was replayed.
    recovery: BTreeMap<String, RoomRecovery>,
}

/// The answer to every client event, through its ack.
#[derive(Debug, Serialize)]
struct Reply {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    rooms: Vec<String>,
    /// The joined room's position, on subscribe.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    positions: BTreeMap<String, Cursor>,
}

// A socketioxide handler: each argument is an extractor, not a parameter callers pass.
#[allow(clippy::too_many_arguments)]
async fn on_connect<A: Adapter>(
    s: SocketRef<A>,
    Extension(identity): Extension<Identity>,
    Extension(resume): Extension<Resume>,
    State(stats): State<Arc<Stats>>,
    State(history): State<Arc<dyn History>>,
    State(gate): State<Arc<Gate>>,
    State(limiter): State<Arc<Limiter>>,
    Extension(session): Extension<Arc<Session>>,
) {
    stats.connected();
    tracing::debug!(sid = %s.id, user = %identity.user_id, admin = identity.is_admin, "socket connected");
    register_events(&s);
    tokio::spawn(session::expire(s.clone(), session));

    let mut join = vec![user_room(&identity.user_id)];
    let mut refused = BTreeMap::new();
    let mut allowed = Vec::new();
    for (room, cursor) in resume.0 {
        if !may_join(&identity, &room) {
            refused.insert(room, RoomRecovery::refused());
            continue;
        }
        if !join.contains(&room) {
            join.push(room.clone());
        }
        allowed.push((room, cursor));
    }
    let ip = limiter.client_ip(s.req_parts());
    let budget = |entries: usize| {
        let allowed = limiter.replay(ip, entries);
        if !allowed {
            stats.limit_refused("replay_per_ip");
        }
        allowed
    };
    let resumed = replay::resume(&s, history.as_ref(), &gate, &join, &allowed, &budget).await;
    let mut recovery = resumed.recovery;
    recovery.extend(refused);
    for r in recovery.values() {
        stats.resumed(r.recovered);
    }
    let hello = ConnectionSuccess {
        socket_id: s.id.to_string(),
        user_id: &identity.user_id,
        is_admin: identity.is_admin,
        rooms: room_names(&s),
        positions: resumed.positions,
        recovery,
    };
    // Sent under the gate, so it comes after the replay and before any live envelope...
    let greeted = replay::emit_briefly(&s, "connection:success", &hello).await;
    // ...and live envelopes may flow to this socket from here on.
    drop(resumed.guard);
    // A socket too slow to take it at once still gets it (after some live envelopes)
    // rather than never learning how its recovery went.
    if !greeted && !replay::emit_patiently(&s, "connection:success", &hello).await {
        tracing::warn!(sid = %s.id, "could not send connection:success");
    }
    replay::announce_heads(&s, &resumed.unsettled);
}

fn register_events<A: Adapter>(s: &SocketRef<A>) {
    s.on(
        "subscribe:inventory",
        async |s: SocketRef<A>,
               ack: AckSender<A>,
               Extension(budget): Extension<Arc<EventBudget>>,
               State(history): State<Arc<dyn History>>,
               State(gate): State<Arc<Gate>>| {
            if let Err(error) = spend(&s, &budget) {
                return reply(&s, ack, Some(error));
            }
            join_and_reply(&s, ack, history.as_ref(), &gate, INVENTORY_ROOM).await;
        },
    );
    s.on(
        "unsubscribe:inventory",
        async |s: SocketRef<A>, ack: AckSender<A>, Extension(budget): Extension<Arc<EventBudget>>| {
            let error = spend(&s, &budget).err();
            if error.is_none() {
                s.leave(INVENTORY_ROOM);
            }
            reply(&s, ack, error);
        },
    );
    s.on(
        "subscribe:admin",
        async |s: SocketRef<A>,
               ack: AckSender<A>,
               Extension(id): Extension<Identity>,
               Extension(budget): Extension<Arc<EventBudget>>,
               State(history): State<Arc<dyn History>>,
               State(gate): State<Arc<Gate>>| {
            if let Err(error) = spend(&s, &budget) {
                return reply(&s, ack, Some(error));
            }
            if id.is_admin {
                join_and_reply(&s, ack, history.as_ref(), &gate, ADMIN_ROOM).await;
                // `auth:refresh` with a non-admin token may have run while this joined (it
                // read the identity before): the identity now decides. Refresh stores the
                // new identity before leaving the room, so one of the two always sees it.
                if !s.extensions.get::<Identity>().is_some_and(|i| i.is_admin) {
                    tracing::info!(sid = %s.id, user = %id.user_id, "admin role dropped while subscribing; left admin:dashboard");
                    s.leave(ADMIN_ROOM);
                }
            } else {
                tracing::info!(sid = %s.id, user = %id.user_id, "subscribe:admin refused: not an admin");
                reply(&s, ack, Some("forbidden: admin role required"));
            }
        },
    );
    s.on(
        "unsubscribe:admin",
        async |s: SocketRef<A>, ack: AckSender<A>, Extension(budget): Extension<Arc<EventBudget>>| {
            let error = spend(&s, &budget).err();
            if error.is_none() {
                s.leave(ADMIN_ROOM);
            }
            reply(&s, ack, error);
        },
    );
    // Kept for clients written against older bridges: order events already reach user:<sub>.
    s.on(
        "subscribe:orders",
        async |s: SocketRef<A>, ack: AckSender<A>, Extension(budget): Extension<Arc<EventBudget>>| {
            let error = spend(&s, &budget).err();
            reply(&s, ack, error);
        },
    );
    s.on("auth:refresh", refresh);
    // Events nobody listens to still cost parsing: they count against the budget too.
    s.on_fallback(async |s: SocketRef<A>, Extension(budget): Extension<Arc<EventBudget>>| {
        let _ = spend(&s, &budget);
    });
    s.on_disconnect(
        async |s: SocketRef<A>, reason: DisconnectReason, State(stats): State<Arc<Stats>>, Extension(session): Extension<Arc<Session>>| {
            session.close();
            // Frees the user's connection slot now rather than when the last handle goes.
            drop(s.extensions.remove::<Arc<Slot>>());
            stats.disconnected(&reason.to_string());
            tracing::debug!(sid = %s.id, %reason, "socket disconnected");
        },
    );
}

/// The answer to `auth:refresh`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Refreshed {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
}

/// `auth:refresh` with `{token}` (or the token as a string): verified like a handshake
/// token; it must name the same user. The socket then lives until the new `exp`.
async fn refresh<A: Adapter>(
    s: SocketRef<A>,
    ack: AckSender<A>,
    TryData(data): TryData<serde_json::Value>,
    Extension(identity): Extension<Identity>,
    Extension(budget): Extension<Arc<EventBudget>>,
    Extension(session): Extension<Arc<Session>>,
    State(verifier): State<Arc<Verifier>>,
) {
    let fail = |error: String| Refreshed {
        ok: false,
        error: Some(error),
        expires_at: None,
    };
    let answer = match spend(&s, &budget) {
        Err(error) => fail(error.to_owned()),
        Ok(()) => {
            let data = data.unwrap_or_default();
            let token = data.as_str().or_else(|| data.get("token").and_then(|t| t.as_str()));
            match token.ok_or(AuthError::MissingToken).and_then(|t| verifier.verify(t)) {
                Err(error) => fail(error.to_string()),
                Ok(fresh) if fresh.user_id != identity.user_id => fail("the token is for another user".to_owned()),
                Ok(fresh) => {
                    let demoted = !fresh.is_admin;
                    session.refresh(fresh.expires_at);
                    let expires_at = fresh.expires_at;
                    // The identity first, then the room: a concurrent `subscribe:admin`
                    // checks the identity after joining (see there).
                    s.extensions.insert(fresh);
                    if demoted {
                        s.leave(ADMIN_ROOM);
                    }
                    tracing::debug!(sid = %s.id, expires_at, "token refreshed");
                    Refreshed {
                        ok: true,
                        error: None,
                        expires_at: Some(expires_at),
                    }
                }
            }
        }
    };
    let _ = ack.send(&answer);
}

/// Spends one client event from the socket's budget; when refused, the reason for the ack.
/// A socket refused too often is told why and disconnected.
fn spend<A: Adapter>(s: &SocketRef<A>, budget: &EventBudget) -> Result<(), &'static str> {
    const REFUSED: &str = "rate limited: too many client events";
    match budget.spend() {
        Verdict::Allowed => Ok(()),
        Verdict::Refused | Verdict::Closing => Err(REFUSED),
        Verdict::Abusive => {
            tracing::warn!(sid = %s.id, "disconnecting a socket that keeps exceeding the client event rate");
            let _ = s.emit("session:closing", &serde_json::json!({ "reason": "too many client events" }));
            // Disconnecting at once would make socketioxide close the transport on the
            // flood's next packet, before the reason and the disconnect reach the client
            // (which would then reconnect); a short pause, ignoring events, lets them out.
            let s = s.clone();
            tokio::spawn(async move {
                tokio::time::sleep(ABUSE_GRACE).await;
                let _ = s.disconnect();
            });
            Err(REFUSED)
        }
    }
}

fn room_names<A: Adapter>(s: &SocketRef<A>) -> Vec<String> {
    let mut rooms: Vec<String> = s.rooms().into_iter().map(|r| r.to_string()).collect();
    rooms.sort();
    rooms
}

fn reply<A: Adapter>(s: &SocketRef<A>, ack: AckSender<A>, error: Option<&'static str>) {
    send_reply(
        ack,
        Reply {
            ok: error.is_none(),
            error,
            rooms: room_names(s),
            positions: BTreeMap::new(),
        },
    );
}

/// Joins `room`, answers with its position, then announces its head if another node
/// emitted to it meanwhile.
async fn join_and_reply<A: Adapter>(s: &SocketRef<A>, ack: AckSender<A>, history: &dyn History, gate: &Gate, room: &str) {
    let (head, moved) = replay::join_at_head(s, history, gate, room).await;
    send_reply(
        ack,
        Reply {
            ok: true,
            error: None,
            rooms: room_names(s),
            positions: head.map(|h| (room.to_owned(), h)).into_iter().collect(),
        },
    );
    replay::announce_heads(s, &moved);
}

fn send_reply<A: Adapter>(ack: AckSender<A>, reply: Reply) {
    // A client that sent no ack callback gets nothing back; that is not an error.
    let _ = ack.send(&reply);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(user: &str, is_admin: bool) -> Identity {
        Identity {
            user_id: user.to_owned(),
            is_admin,
            expires_at: 0,
        }
    }

    #[test]
    fn a_handshake_resumes_only_rooms_the_socket_may_join() {
        let buyer = identity("42", false);
        assert!(may_join(&buyer, "user:42"));
        assert!(may_join(&buyer, INVENTORY_ROOM));
        assert!(!may_join(&buyer, "user:7"), "another buyer's room");
        assert!(!may_join(&buyer, ADMIN_ROOM));
        assert!(!may_join(&buyer, "user:42:x"));
        assert!(may_join(&identity("admin", true), ADMIN_ROOM));
    }

    proptest::proptest! {
        /// Whatever a client puts in `auth.positions`, the handshake parses it or refuses
        /// it with a reason; it never panics.
        #[test]
        fn any_positions_value_is_parsed_or_refused(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&raw)
                && let Err(e) = parse_positions(Some(value))
            {
                proptest::prop_assert!(e.to_string().starts_with("invalid auth.positions"));
            }
        }

        #[test]
        fn any_positions_map_is_parsed_or_refused(rooms in proptest::collection::btree_map(".{0,20}", (".{0,20}", proptest::prelude::any::<i64>()), 0..12)) {
            let value: serde_json::Value = rooms.iter().map(|(r, (e, s))| (r.clone(), serde_json::json!({"epoch": e, "seq": s}))).collect::<serde_json::Map<_, _>>().into();
            match parse_positions(Some(value)) {
                Ok(resume) => proptest::prop_assert!(resume.0.len() <= MAX_RESUME_ROOMS && rooms.values().all(|(_, s)| *s >= 0)),
                Err(e) => proptest::prop_assert!(rooms.len() > MAX_RESUME_ROOMS || rooms.values().any(|(_, s)| *s < 0), "{e}"),
            }
        }
    }

    #[test]
    fn positions_are_validated() {
        let ok = parse_positions(Some(serde_json::json!({"user:42": {"epoch": "ab", "seq": 3}}))).unwrap();
        assert_eq!(
            ok.0,
            vec![(
                "user:42".to_owned(),
                Cursor {
                    epoch: "ab".to_owned(),
                    seq: 3
                }
            )]
        );
        assert!(parse_positions(None).unwrap().0.is_empty());
        assert!(parse_positions(Some(serde_json::Value::Null)).unwrap().0.is_empty());
        for bad in [
            serde_json::json!([1, 2]),
            serde_json::json!({"user:42": {"epoch": "ab", "seq": -1}}),
            serde_json::json!({"user:42": {"seq": 3}}),
            serde_json::json!({"user:42": "ab:3"}),
        ] {
            let err = parse_positions(Some(bad.clone())).unwrap_err();
            assert!(err.to_string().starts_with("invalid auth.positions"), "{bad}: {err}");
        }
        let many: serde_json::Map<String, serde_json::Value> = (0..9)
            .map(|i| (format!("r{i}"), serde_json::json!({"epoch": "e", "seq": 1})))
            .collect();
        assert!(parse_positions(Some(many.into())).is_err());
    }

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
