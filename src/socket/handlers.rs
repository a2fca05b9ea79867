//! What a connected socket does: its greeting (replay, rooms, `connection:success`), its
//! client events, its disconnect. One named function per event (socketioxide's examples
//! prefer them to closures: each reads on its own and shows its extractors).
//!
//! Isolation: no client event names a room. `subscribe:admin` joins `admin:dashboard` only
//! for an admin identity, and the identity is checked again after the join (see there).

use std::collections::BTreeMap;
use std::sync::Arc;

use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, Extension, SocketRef, State, TryData};
use socketioxide::socket::DisconnectReason;

use super::gate::Gate;
use super::handshake::{Resume, may_join};
use super::limits::{EventBudget, Limiter, Slot, Verdict};
use super::protocol::{
    AUTH_REFRESH, AuthRefresh, CONNECTION_SUCCESS, Closing, ConnectionSuccess, MAX_PRODUCT_IDS_PER_REQUEST, ProductIds, RecoveryReason,
    Refreshed, Reply, RoomRecovery, SESSION_CLOSING, SUBSCRIBE_ADMIN, SUBSCRIBE_INVENTORY, SUBSCRIBE_ORDERS, SUBSCRIBE_PRODUCTS,
    UNSUBSCRIBE_ADMIN, UNSUBSCRIBE_INVENTORY, UNSUBSCRIBE_PRODUCTS,
};
use super::replay;
use super::session::Expiries;
use crate::auth::{AuthError, Identity, Verifier};
use crate::faults::{Fault, Faults};
use crate::history::{Cursor, History};
use crate::routing::{ADMIN_ROOM, INVENTORY_ROOM, PRODUCT_ROOM_PREFIX, product_room, user_room, valid_product_id};
use crate::stats::Stats;

/// How long an abusive socket is ignored before it is disconnected.
const ABUSE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// The ack of an event refused by the client-event budget.
const RATE_LIMITED: &str = "rate limited: too many client events";

/// A socket passed the handshake: its events are registered, its token's expiry watched,
/// what it missed replayed, its rooms joined, and it is greeted — in that order, under the
/// gate, so the greeting comes after the replay and before any live envelope.
// A socketioxide handler: each argument is an extractor, not a parameter callers pass.
#[allow(clippy::too_many_arguments)]
pub(super) async fn on_connect<A: Adapter>(
    s: SocketRef<A>,
    Extension(identity): Extension<Identity>,
    State(stats): State<Arc<Stats>>,
    State(history): State<Arc<dyn History>>,
    State(gate): State<Arc<Gate>>,
    State(limiter): State<Arc<Limiter>>,
    State(expiries): State<Arc<Expiries>>,
    State(faults): State<Arc<Faults>>,
) {
    faults.delay(Fault::SlowConnect).await;
    stats.connected();
    tracing::debug!(sid = %s.id, user = %identity.user_id, admin = identity.is_admin, "socket connected");
    // One handler for every client event, dispatching by name (`on_event`): a handler
    // registered per event name costs each socket a map entry.
    s.on_fallback(on_event::<A>);
    s.on_disconnect(on_disconnect::<A>);
    expiries.watch(&s, identity.expires_at);
    // A transport that closed before the disconnect handler was registered never calls
    // it: without this, the expiry watch would hold the socket, and its connection slot,
    // until the token's `exp`. socketioxide marks the socket disconnected before it looks
    // for the handler, so one of the two always runs (both may: `release` is idempotent).
    if !s.connected() {
        release(&s, &stats, &expiries, "transport closed before the socket was set up");
        return;
    }
    // Taken, not copied: the positions are needed once, not for the socket's life.
    let resume = s.extensions.remove::<Resume>().unwrap_or_default();

    let Rooms {
        join,
        allowed,
        mut refused,
    } = rooms_to_resume(&identity, resume, limiter.max_product_subscriptions());
    let ip = limiter.client_ip(s.req_parts());
    let budget = |entries: usize| {
        let allowed = limiter.replay(ip, entries);
        if !allowed {
            stats.limit_refused("replay_per_ip");
        }
        allowed
    };
    let mut resumed = replay::resume(&s, history.as_ref(), &gate, &join, &allowed, &budget).await;
    let is_admin = keep_admin_room_if_still_admin(&s, &join, &mut resumed, &mut refused);
    let mut recovery = resumed.recovery;
    recovery.extend(refused);
    for r in recovery.values() {
        stats.resumed(r.recovered);
    }
    let hello = ConnectionSuccess {
        socket_id: s.id.to_string(),
        user_id: &identity.user_id,
        is_admin,
        rooms: room_names(&s),
        positions: resumed.positions,
        recovery,
    };
    // Sent under the gate, so it comes after the replay and before any live envelope...
    let greeted = replay::emit_briefly(&s, CONNECTION_SUCCESS, &hello).await;
    // ...and live envelopes may flow to this socket from here on.
    drop(resumed.guard);
    // A socket too slow to take it at once still gets it (after some live envelopes)
    // rather than never learning how its recovery went.
    if !greeted && !replay::emit_patiently(&s, CONNECTION_SUCCESS, &hello).await {
        tracing::warn!(sid = %s.id, "could not send connection:success");
    }
    replay::announce_heads(&s, &resumed.unsettled);
}

/// The rooms a handshake's positions may resume, besides the socket's own.
struct Rooms {
    /// Every room to join: the user's own, then those resumed.
    join: Vec<String>,
    /// The positions to replay from.
    allowed: Vec<(String, Cursor)>,
    /// Rooms refused, with why.
    refused: BTreeMap<String, RoomRecovery>,
}

/// Sorts a handshake's positions into rooms resumed and rooms refused (not this user's to
/// join, or product rooms over the cap).
fn rooms_to_resume(identity: &Identity, resume: Resume, max_products: usize) -> Rooms {
    let mut rooms = Rooms {
        join: vec![user_room(&identity.user_id)],
        allowed: Vec::new(),
        refused: BTreeMap::new(),
    };
    let mut products = 0;
    for (room, cursor) in resume.0 {
        if !may_join(identity, &room) {
            rooms.refused.insert(room, RoomRecovery::lost(RecoveryReason::Forbidden));
            continue;
        }
        if room.starts_with(PRODUCT_ROOM_PREFIX) {
            products += 1;
            if products > max_products {
                rooms.refused.insert(room, RoomRecovery::lost(RecoveryReason::TooManyProducts));
                continue;
            }
        }
        if !rooms.join.contains(&room) {
            rooms.join.push(room.clone());
        }
        rooms.allowed.push((room, cursor));
    }
    rooms
}

/// An `auth:refresh` with a non-admin token may have run during the connect's replay,
/// before the join: it left a room not yet joined. The identity now decides (refresh stores
/// it before leaving the room, so one of the two always sees the other). Whether the socket
/// is (still) an admin.
fn keep_admin_room_if_still_admin<A: Adapter>(
    s: &SocketRef<A>,
    join: &[String],
    resumed: &mut replay::Resumed<'_>,
    refused: &mut BTreeMap<String, RoomRecovery>,
) -> bool {
    let is_admin = s.extensions.get::<Identity>().is_some_and(|i| i.is_admin);
    if !is_admin && join.iter().any(|r| r == ADMIN_ROOM) {
        tracing::info!(sid = %s.id, "admin role dropped while connecting; left admin:dashboard");
        s.leave(ADMIN_ROOM);
        resumed.positions.remove(ADMIN_ROOM);
        if resumed.recovery.remove(ADMIN_ROOM).is_some() {
            refused.insert(ADMIN_ROOM.to_owned(), RoomRecovery::lost(RecoveryReason::Forbidden));
        }
    }
    is_admin
}

/// Every client event. Each spends one unit of the socket's client-event budget (an
/// unknown one too: parsing it cost something).
// A socketioxide handler: each argument is an extractor, not a parameter callers pass.
#[allow(clippy::too_many_arguments)]
async fn on_event<A: Adapter>(
    s: SocketRef<A>,
    Event(event): Event,
    ack: AckSender<A>,
    TryData(data): TryData<serde_json::Value>,
    Extension(budget): Extension<Arc<EventBudget>>,
    State(history): State<Arc<dyn History>>,
    State(gate): State<Arc<Gate>>,
    State(limiter): State<Arc<Limiter>>,
    State(expiries): State<Arc<Expiries>>,
    State(verifier): State<Arc<Verifier>>,
) {
    let data = data.ok();
    let history = history.as_ref();
    // Copied out only for the two events that read it, not for every event.
    let identity = || s.extensions.get::<Identity>();
    match event.as_str() {
        SUBSCRIBE_INVENTORY => subscribe_inventory(&s, ack, &budget, history, &gate).await,
        UNSUBSCRIBE_INVENTORY => leave_and_reply(&s, ack, &budget, INVENTORY_ROOM),
        SUBSCRIBE_ADMIN => {
            if let Some(identity) = identity() {
                subscribe_admin(&s, ack, &identity, &budget, history, &gate).await;
            }
        }
        UNSUBSCRIBE_ADMIN => leave_and_reply(&s, ack, &budget, ADMIN_ROOM),
        SUBSCRIBE_ORDERS => subscribe_orders(&s, ack, &budget),
        SUBSCRIBE_PRODUCTS => subscribe_products(&s, ack, data, &budget, history, &gate, &limiter).await,
        UNSUBSCRIBE_PRODUCTS => unsubscribe_products(&s, ack, data, &budget),
        AUTH_REFRESH => {
            if let Some(identity) = identity() {
                refresh(&s, ack, data, &identity, &budget, &expiries, &verifier);
            }
        }
        _ => {
            let _ = spend(&s, &budget);
        }
    }
}

/// `subscribe:inventory`: joins `inventory:updates` (any signed-in user).
async fn subscribe_inventory<A: Adapter>(s: &SocketRef<A>, ack: AckSender<A>, budget: &EventBudget, history: &dyn History, gate: &Gate) {
    if let Err(error) = spend(s, budget) {
        return reply(s, ack, Some(error));
    }
    join_and_reply(s, ack, history, gate, INVENTORY_ROOM).await;
}

/// The ack's reasons for a refused `subscribe:products` / `unsubscribe:products`.
const BAD_PRODUCT_IDS: &str = "productIds: expected an array of 1 to 50 product ids, each 1 to 64 letters, digits, '-', '_', '.' or ':', starting with a letter or digit";
const TOO_MANY_PRODUCTS: &str = "too many product subscriptions for this socket (MAX_PRODUCT_SUBSCRIPTIONS); unsubscribe from some first";

/// `{productIds: [...]}` → the distinct ids, in order, if every one is valid.
fn product_ids(data: Option<serde_json::Value>) -> Result<Vec<String>, &'static str> {
    let request: ProductIds = data.and_then(|d| serde_json::from_value(d).ok()).ok_or(BAD_PRODUCT_IDS)?;
    if !(1..=MAX_PRODUCT_IDS_PER_REQUEST).contains(&request.product_ids.len()) {
        return Err(BAD_PRODUCT_IDS);
    }
    let mut out: Vec<String> = Vec::with_capacity(request.product_ids.len());
    for id in request.product_ids {
        if !valid_product_id(&id) {
            return Err(BAD_PRODUCT_IDS);
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// `subscribe:products` `{productIds}`: joins `product:<id>` for each (any signed-in
/// user); the ack carries each room's position and each product's latest state, read
/// together under the gate (see `replay::join_with_snapshots`).
async fn subscribe_products<A: Adapter>(
    s: &SocketRef<A>,
    ack: AckSender<A>,
    data: Option<serde_json::Value>,
    budget: &EventBudget,
    history: &dyn History,
    gate: &Gate,
    limiter: &Limiter,
) {
    if let Err(error) = spend(s, budget) {
        return reply(s, ack, Some(error));
    }
    let ids = match product_ids(data) {
        Ok(ids) => ids,
        Err(error) => return reply(s, ack, Some(error)),
    };
    // The cap check and the join as one step per socket (see `EventBudget::subscribing`).
    let _subscribing = budget.subscribing.lock().await;
    let rooms: Vec<String> = ids.iter().map(|id| product_room(id)).collect();
    let current: Vec<String> = room_names(s).into_iter().filter(|r| r.starts_with(PRODUCT_ROOM_PREFIX)).collect();
    let adding = rooms.iter().filter(|r| !current.contains(r)).count();
    if current.len() + adding > limiter.max_product_subscriptions() {
        crate::metrics::limit_refusals("product_subscriptions");
        return reply(s, ack, Some(TOO_MANY_PRODUCTS));
    }
    let joined = replay::join_with_snapshots(s, history, gate, &rooms).await;
    let snapshot = joined
        .states
        .iter()
        .filter_map(|(room, state)| Some((room.strip_prefix(PRODUCT_ROOM_PREFIX)?.to_owned(), state.clone())))
        .collect();
    // Answered under the gate: the ack reaches the socket before any live envelope of these
    // rooms, so the page has its snapshot and positions before the first update.
    send_reply(
        ack,
        Reply {
            ok: true,
            error: None,
            rooms: room_names(s),
            positions: joined.positions.clone(),
            snapshot: Some(snapshot),
        },
    );
    drop(joined.guard);
    replay::announce_heads(s, &joined.moved);
}

/// `unsubscribe:products` `{productIds}`: leaves those product rooms.
fn unsubscribe_products<A: Adapter>(s: &SocketRef<A>, ack: AckSender<A>, data: Option<serde_json::Value>, budget: &EventBudget) {
    let error = match spend(s, budget).and_then(|()| product_ids(data)) {
        Ok(ids) => {
            s.leave(ids.iter().map(|id| product_room(id)).collect::<Vec<_>>());
            None
        }
        Err(error) => Some(error),
    };
    reply(s, ack, error);
}

/// `subscribe:admin`: joins `admin:dashboard`, admins only.
async fn subscribe_admin<A: Adapter>(
    s: &SocketRef<A>,
    ack: AckSender<A>,
    id: &Identity,
    budget: &EventBudget,
    history: &dyn History,
    gate: &Gate,
) {
    if let Err(error) = spend(s, budget) {
        return reply(s, ack, Some(error));
    }
    if !id.is_admin {
        tracing::info!(sid = %s.id, user = %id.user_id, "subscribe:admin refused: not an admin");
        return reply(s, ack, Some("forbidden: admin role required"));
    }
    join_and_reply(s, ack, history, gate, ADMIN_ROOM).await;
    // `auth:refresh` with a non-admin token may have run while this joined (it read the
    // identity before): the identity now decides. Refresh stores the new identity before
    // leaving the room, so one of the two always sees it.
    if !s.extensions.get::<Identity>().is_some_and(|i| i.is_admin) {
        tracing::info!(sid = %s.id, user = %id.user_id, "admin role dropped while subscribing; left admin:dashboard");
        s.leave(ADMIN_ROOM);
    }
}

/// `subscribe:orders`, kept for clients written against older bridges: order events
/// already reach `user:<sub>`, so it only answers.
fn subscribe_orders<A: Adapter>(s: &SocketRef<A>, ack: AckSender<A>, budget: &EventBudget) {
    let error = spend(s, budget).err();
    reply(s, ack, error);
}

/// `auth:refresh` with `{token}` (or the token as a string): verified like a handshake
/// token; it must name the same user. The socket then lives until the new `exp`.
fn refresh<A: Adapter>(
    s: &SocketRef<A>,
    ack: AckSender<A>,
    data: Option<serde_json::Value>,
    identity: &Identity,
    budget: &EventBudget,
    expiries: &Expiries,
    verifier: &Verifier,
) {
    let fail = |error: String| Refreshed {
        ok: false,
        error: Some(error),
        expires_at: None,
    };
    let answer = match spend(s, budget) {
        Err(error) => fail(error.to_owned()),
        Ok(()) => {
            let request = data.and_then(|d| serde_json::from_value::<AuthRefresh>(d).ok());
            match request.ok_or(AuthError::MissingToken).and_then(|r| verifier.verify(r.token())) {
                Err(error) => fail(error.to_string()),
                Ok(fresh) if fresh.user_id != identity.user_id => fail("the token is for another user".to_owned()),
                // Expired meanwhile: it is being disconnected already.
                Ok(fresh) if !expiries.refresh(s.id, fresh.expires_at) => fail(AuthError::Expired.to_string()),
                Ok(fresh) => {
                    let demoted = !fresh.is_admin;
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

async fn on_disconnect<A: Adapter>(
    s: SocketRef<A>,
    reason: DisconnectReason,
    State(stats): State<Arc<Stats>>,
    State(expiries): State<Arc<Expiries>>,
) {
    release(&s, &stats, &expiries, &reason.to_string());
}

/// What a socket holds beyond its own life: its expiry watch and its user's connection
/// slot (freed now rather than when the last handle goes). Once per socket, however often
/// called.
fn release<A: Adapter>(s: &SocketRef<A>, stats: &Stats, expiries: &Expiries, reason: &str) {
    expiries.forget(s.id);
    if s.extensions.remove::<Arc<Slot>>().is_some() {
        stats.disconnected(reason);
        tracing::debug!(sid = %s.id, %reason, "socket disconnected");
    }
}

/// Spends one client event from the socket's budget; when refused, the reason for the ack.
/// A socket refused too often is told why and disconnected.
fn spend<A: Adapter>(s: &SocketRef<A>, budget: &EventBudget) -> Result<(), &'static str> {
    match budget.spend() {
        Verdict::Allowed => Ok(()),
        Verdict::Refused => {
            crate::metrics::limit_refusals("client_events");
            Err(RATE_LIMITED)
        }
        Verdict::Closing => Err(RATE_LIMITED),
        Verdict::Abusive => {
            crate::metrics::limit_refusals("client_events");
            tracing::warn!(sid = %s.id, "disconnecting a socket that keeps exceeding the client event rate");
            let _ = s.emit(SESSION_CLOSING, &Closing::ABUSIVE);
            // Disconnecting at once would make socketioxide close the transport on the
            // flood's next packet, before the reason and the disconnect reach the client
            // (which would then reconnect); a short pause, ignoring events, lets them out.
            let s = s.clone();
            tokio::spawn(async move {
                tokio::time::sleep(ABUSE_GRACE).await;
                let _ = s.disconnect();
            });
            Err(RATE_LIMITED)
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
            snapshot: None,
        },
    );
}

/// Leaves `room` (when the budget allows) and answers with the rooms left.
fn leave_and_reply<A: Adapter>(s: &SocketRef<A>, ack: AckSender<A>, budget: &EventBudget, room: &'static str) {
    let error = spend(s, budget).err();
    if error.is_none() {
        s.leave(room);
    }
    reply(s, ack, error);
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
            snapshot: None,
        },
    );
    replay::announce_heads(s, &moved);
}

fn send_reply<A: Adapter>(ack: AckSender<A>, reply: Reply) {
    // A client that sent no ack callback gets nothing back; that is not an error.
    let _ = ack.send(&reply);
}
