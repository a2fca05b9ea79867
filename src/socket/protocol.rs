//! The Socket.IO protocol of the bridge, in one place: every event name it sends or
//! handles, and every payload it sends besides envelopes. Client developers read it in
//! `docs/client-protocol.md`; this is the one spelling of each name.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::events::ProductState;
use crate::history::{Cursor, LostReason};

/// Sent once a socket is connected, caught up and in its rooms.
pub const CONNECTION_SUCCESS: &str = "connection:success";
/// A room's head, so a client behind it resyncs.
pub const SYNC_POSITION: &str = "sync:position";
/// Sent before the server disconnects a socket (abuse, slow consumer).
pub const SESSION_CLOSING: &str = "session:closing";
/// Sent when the socket's token expires, just before it is disconnected.
pub const AUTH_EXPIRED: &str = "auth:expired";

/// Client event: a fresh token for the same user.
pub const AUTH_REFRESH: &str = "auth:refresh";
/// Client event: join `inventory:updates`.
pub const SUBSCRIBE_INVENTORY: &str = "subscribe:inventory";
/// Client event: leave `inventory:updates`.
pub const UNSUBSCRIBE_INVENTORY: &str = "unsubscribe:inventory";
/// Client event: join `admin:dashboard` (admins only).
pub const SUBSCRIBE_ADMIN: &str = "subscribe:admin";
/// Client event: leave `admin:dashboard`.
pub const UNSUBSCRIBE_ADMIN: &str = "unsubscribe:admin";
/// Client event kept for older clients: order events already reach `user:<sub>`.
pub const SUBSCRIBE_ORDERS: &str = "subscribe:orders";
/// Client → server: `{productIds: [...]}`, join `product:<id>` for each; the ack carries
/// the snapshot.
pub const SUBSCRIBE_PRODUCTS: &str = "subscribe:products";
/// Client → server: `{productIds: [...]}`, leave those product rooms.
pub const UNSUBSCRIBE_PRODUCTS: &str = "unsubscribe:products";

/// The most rooms a handshake may ask to resume: the three fixed ones and the most product
/// rooms a socket can be allowed.
pub const MAX_RESUME_ROOMS: usize = 3 + crate::config::MAX_PRODUCT_SUBSCRIPTIONS_CAP;
/// The most product ids one `subscribe:products` / `unsubscribe:products` may carry.
pub const MAX_PRODUCT_IDS_PER_REQUEST: usize = 50;

/// The handshake's `auth` payload (socket.io-client's `auth` option), read on every
/// (re)connect.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct HandshakeAuth {
    /// The JWT. Older clients may put it in the URL query (`?token=`) instead.
    #[serde(default)]
    pub token: Option<String>,
    /// The last position seen in each room to resume (`{room: {epoch, seq}}`, at most
    /// [`MAX_RESUME_ROOMS`] rooms): what was missed is replayed before `connection:success`.
    #[serde(default)]
    #[schemars(extend("maxProperties" = MAX_RESUME_ROOMS))]
    pub positions: Option<BTreeMap<String, Cursor>>,
}

/// The payload of `subscribe:products` and `unsubscribe:products`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductIds {
    /// 1 to 50 product ids, each 1 to 64 letters, digits, `-`, `_`, `.` or `:`, starting
    /// with a letter or digit; repeats count once.
    #[schemars(length(min = 1, max = MAX_PRODUCT_IDS_PER_REQUEST))]
    #[schemars(extend("items" = {"type": "string", "pattern": crate::routing::PRODUCT_ID_PATTERN}))]
    pub product_ids: Vec<String>,
}

/// The payload of `auth:refresh`: the fresh token, alone or as `{token}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum AuthRefresh {
    /// `{token}`.
    Object {
        /// A fresh JWT for the same user.
        token: String,
    },
    /// The token alone.
    Token(String),
}

impl AuthRefresh {
    /// The token, however it was sent.
    pub fn token(&self) -> &str {
        match self {
            AuthRefresh::Object { token } | AuthRefresh::Token(token) => token,
        }
    }
}

/// The `connection:success` payload.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSuccess<'a> {
    /// This connection's Socket.IO id (a new one on every reconnect).
    pub socket_id: String,
    /// The token's `sub`: whose `user:<id>` room the socket is in.
    pub user_id: &'a str,
    /// Whether the token carries the admin role (`subscribe:admin` is allowed).
    pub is_admin: bool,
    /// The rooms joined, sorted.
    pub rooms: Vec<String>,
    /// The position of each joined room: what the client should hand back on reconnect.
    pub positions: BTreeMap<String, Cursor>,
    /// For each room in the handshake's `positions`: whether everything missed was replayed.
    pub recovery: BTreeMap<String, RoomRecovery>,
}

/// How recovery of one room went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct RoomRecovery {
    /// Every missed envelope was replayed.
    pub recovered: bool,
    /// How many envelopes were replayed.
    pub replayed: usize,
    /// Why recovery failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<RecoveryReason>,
}

impl RoomRecovery {
    /// Nothing was replayed, for `reason`.
    pub fn lost(reason: RecoveryReason) -> Self {
        RoomRecovery {
            recovered: false,
            replayed: 0,
            reason: Some(reason),
        }
    }
}

/// Why a room could not be recovered (or a message not written); the spelling clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryReason {
    /// The gap is older than the history's bounds.
    HistoryTrimmed,
    /// The history was lost (restart, idle room forgotten, eviction).
    EpochChanged,
    /// A position this history never issued.
    UnknownPosition,
    /// A room this user may not be in: nothing joined or replayed.
    Forbidden,
    /// More product rooms than `MAX_PRODUCT_SUBSCRIPTIONS`: the ones over it are not joined.
    TooManyProducts,
    /// The client's address is over its replay budget.
    ReplayLimited,
    /// The history store did not answer.
    HistoryUnavailable,
    /// The socket's buffer stayed full.
    SlowConsumer,
    /// The socket went away.
    Disconnected,
    /// A message could not be encoded (a bug).
    InternalError,
}

impl From<LostReason> for RecoveryReason {
    fn from(reason: LostReason) -> Self {
        match reason {
            LostReason::EpochChanged => RecoveryReason::EpochChanged,
            LostReason::Trimmed => RecoveryReason::HistoryTrimmed,
            LostReason::UnknownPosition => RecoveryReason::UnknownPosition,
        }
    }
}

/// The answer to every subscribe / unsubscribe client event, through its ack.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Reply {
    /// Whether the request was done.
    pub ok: bool,
    /// Why not, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// The rooms the socket is in after the request, sorted.
    pub rooms: Vec<String>,
    /// The joined room's position, on subscribe.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub positions: BTreeMap<String, Cursor>,
    /// On `subscribe:products`: each product's latest known state, by product id, exactly
    /// as of the position given for its room (absent when nothing is known yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, ProductState>>")]
    pub snapshot: Option<BTreeMap<String, crate::history::State>>,
}

/// The answer to `auth:refresh`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Refreshed {
    /// Whether the fresh token was accepted.
    pub ok: bool,
    /// Why not (the same reasons as a refused handshake).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The new `exp`: the socket now lives until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// The `session:closing` payload.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Closing {
    /// Why the server is disconnecting the socket.
    pub reason: &'static str,
    /// Whether the client should reconnect (and replay) or stay away.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reconnect: bool,
}

impl Closing {
    /// Too slow for its events: reconnect and replay.
    pub const SLOW_CONSUMER: Closing = Closing {
        reason: "slow-consumer",
        reconnect: true,
    };
    /// Too many client events: stay away.
    pub const ABUSIVE: Closing = Closing {
        reason: "too many client events",
        reconnect: false,
    };
}

/// The `auth:expired` payload.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Expired {
    /// What to do about it.
    pub reason: &'static str,
}

impl Expired {
    /// The one notice.
    pub const NOTICE: Expired = Expired {
        reason: "token expired: reconnect with a fresh token, or send auth:refresh before exp",
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_spelled_as_documented() {
        let lost = serde_json::to_value(RoomRecovery::lost(RecoveryReason::HistoryTrimmed)).unwrap();
        assert_eq!(
            lost,
            serde_json::json!({"recovered": false, "replayed": 0, "reason": "history-trimmed"})
        );
        assert_eq!(
            serde_json::to_value(Closing::ABUSIVE).unwrap(),
            serde_json::json!({"reason": "too many client events"})
        );
        assert_eq!(
            serde_json::to_value(Closing::SLOW_CONSUMER).unwrap(),
            serde_json::json!({"reason": "slow-consumer", "reconnect": true})
        );
        assert_eq!(
            serde_json::to_value(RecoveryReason::from(LostReason::UnknownPosition)).unwrap(),
            "unknown-position"
        );
    }
}
