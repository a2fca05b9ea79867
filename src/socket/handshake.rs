//! The handshake: who the client is (its JWT, from `auth.token` or `?token=`), which rooms
//! it asks to resume (`auth.positions`), and whether the limits let it in. A refusal is a
//! `connect_error` whose message says why.

use std::collections::BTreeMap;
use std::sync::Arc;

use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::limits::{LimitError, Limiter};
use super::slow;
use crate::auth::{AuthError, Identity, Verifier};
use crate::history::Cursor;
use crate::routing::{ADMIN_ROOM, INVENTORY_ROOM, PRODUCT_ROOM_PREFIX, user_room, valid_product_id};
use crate::stats::Stats;

use super::protocol::MAX_RESUME_ROOMS;

/// Why a handshake was refused; the text is what the client sees in `connect_error`.
#[derive(Debug, thiserror::Error)]
pub(super) enum HandshakeError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("invalid auth.positions: {0}")]
    Positions(String),
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// The rooms a reconnecting client asks to resume, from `auth.positions`.
#[derive(Debug, Clone, Default)]
pub(super) struct Resume(pub(super) Vec<(String, Cursor)>);

/// Reads the token from `auth.token`, or `?token=` for older clients, and verifies it;
/// reads `auth.positions` (`{room: {epoch, seq}}`) for replay.
pub(super) async fn authenticate<A: Adapter>(
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
pub(super) fn may_join(identity: &Identity, room: &str) -> bool {
    room == user_room(&identity.user_id)
        || room == INVENTORY_ROOM
        || (room == ADMIN_ROOM && identity.is_admin)
        || room.strip_prefix(PRODUCT_ROOM_PREFIX).is_some_and(valid_product_id)
}

fn query_param(query: &str, name: &str) -> Option<String> {
    // JWTs are base64url and dots: nothing in them needs percent-decoding.
    query
        .split('&')
        .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v.to_owned()))
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
        let many: serde_json::Map<String, serde_json::Value> = (0..=MAX_RESUME_ROOMS)
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
