//! The Socket.IO side: handshake authentication, room membership, client events, replay.
//!
//! Isolation rule: a socket's rooms are decided here and only here — its own
//! `user:<sub>` room from the verified token, `inventory:updates` on request, and
//! `admin:dashboard` only for admins. No client event names a room, and a handshake
//! position only resumes a room the socket may join anyway.
//!
//! - [`handshake`]: the JWT, the positions to resume, the limits — or a `connect_error`;
//! - `handlers`: the greeting and one named function per client event;
//! - [`protocol`]: every event name and payload, spelled once;
//! - `replay`: what a reconnecting socket missed, before any live envelope;
//! - [`gate`]: orders live emits against replays;
//! - [`hub`]: the server as delivery and HTTP see it, whatever the adapter;
//! - `limits`, `admission`, `session`, [`slow`]: what one client may do, and for how long.

mod admission;
pub mod gate;
mod handlers;
pub mod handshake;
mod head;
pub mod hub;
mod limits;
pub mod protocol;
mod replay;
mod session;
pub mod slow;

pub use admission::{Admission, admit};
pub use head::detach_head;
pub use limits::Limiter;
pub(crate) use session::Expiries;

use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::handler::ConnectHandler;
use socketioxide_core::adapter::DefinedAdapter;

/// Registers the default namespace with its auth middleware and handlers.
/// With a remote adapter, the returned future subscribes the namespace's channels and
/// must succeed before the namespace exists.
pub(crate) fn register<A: Adapter + DefinedAdapter>(io: &SocketIo<A>) -> A::InitRes {
    io.ns("/", handlers::on_connect::<A>.with(handshake::authenticate::<A>))
}
