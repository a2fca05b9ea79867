//! What one client may do: sockets per user and in all, handshakes per IP address, client
//! events per socket. Each refusal says why, so a client can tell a bug from a limit.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use crate::config::ClientLimits;

/// The header a trusted proxy names the client in (lower case, as HTTP/2 and `http` spell it).
pub(super) const FORWARDED_FOR: &str = "x-forwarded-for";

/// Refused client events after which a socket is disconnected as abusive...
pub(crate) const ABUSE_STRIKES: u32 = 50;
/// ...when they all fall within this window: strikes expire, so a well-behaved client that
/// is refused now and then over a long session is never called abusive.
pub(crate) const STRIKE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a handshake was refused by a limit; the text is the client's `connect_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The user already holds the maximum number of sockets (the newest is refused).
    #[error("too many connections for this user (at most {0}); close another tab or device")]
    PerUser(usize),
    /// This node holds its maximum number of sockets.
    #[error("server at capacity; retry later")]
    Full,
    /// Too many handshakes from this address in the last minute.
    #[error("too many connection attempts from this address; retry later")]
    Handshakes,
    /// Too many Engine.IO sessions opened (from this address, or in all) that have not
    /// joined Socket.IO.
    #[error("too many sessions opened without connecting; retry later")]
    Sessions,
}

/// The shared counters and rate limiters.
pub struct Limiter {
    limits: ClientLimits,
    per_user: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
    handshakes: DefaultKeyedRateLimiter<IpAddr>,
    /// Engine.IO sessions opened per address: twice the handshake budget, so a client that
    /// connects is refused by the handshake limit first (with a reason it can read).
    sessions_per_ip: DefaultKeyedRateLimiter<IpAddr>,
    /// Engine.IO sessions opened in all, at most `max_pending_sessions` per connect
    /// timeout: a session either joins Socket.IO or is closed within that timeout, so this
    /// bounds the sessions held without a connect (and the memory they cost).
    sessions: DefaultDirectRateLimiter,
    /// Envelopes replayed per address: reconnecting again and again asking for the whole
    /// history of busy rooms costs the node reads and bandwidth.
    replays: DefaultKeyedRateLimiter<IpAddr>,
}

/// One socket's place in the connection counts; released when dropped.
pub(crate) struct Slot {
    limiter: Arc<Limiter>,
    user: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limiter.release(&self.user);
    }
}

/// What a client event is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the rate.
    Allowed,
    /// Over the rate: refuse this one.
    Refused,
    /// Over the rate too often: disconnect the socket (returned once).
    Abusive,
    /// Already being disconnected: ignore.
    Closing,
}

/// One socket's client-event budget.
pub(crate) struct EventBudget {
    rate: DefaultDirectRateLimiter,
    strikes: Mutex<Strikes>,
    closing: AtomicBool,
    /// Held by a `subscribe:products` from its cap check to its join: a socket's events
    /// are handled concurrently, and checks that all ran before any join would each see
    /// room for their ids. Here rather than in an extension of its own: one less map
    /// entry per socket.
    pub(crate) subscribing: tokio::sync::Mutex<()>,
}

/// Refusals counted within a window that starts at the first of them.
#[derive(Default)]
struct Strikes {
    count: u32,
    since: Option<Instant>,
}

impl EventBudget {
    /// Spends one event.
    pub(crate) fn spend(&self) -> Verdict {
        self.spend_at(Instant::now())
    }

    /// Refuses every later event (the socket is being disconnected).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    fn spend_at(&self, now: Instant) -> Verdict {
        if self.closing.load(Ordering::Relaxed) {
            return Verdict::Closing;
        }
        if self.rate.check().is_ok() {
            return Verdict::Allowed;
        }
        let mut strikes = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        if strikes
            .since
            .is_none_or(|since| now.saturating_duration_since(since) >= STRIKE_WINDOW)
        {
            *strikes = Strikes {
                count: 0,
                since: Some(now),
            };
        }
        strikes.count += 1;
        if strikes.count < ABUSE_STRIKES {
            Verdict::Refused
        } else if self.closing.swap(true, Ordering::Relaxed) {
            Verdict::Closing
        } else {
            Verdict::Abusive
        }
    }
}

fn per(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Limiter {
    /// Product rooms one socket may be in.
    pub(crate) fn max_product_subscriptions(&self) -> usize {
        self.limits.max_product_subscriptions
    }

    /// Counters for these limits.
    pub fn new(limits: ClientLimits) -> Arc<Self> {
        Arc::new(Limiter {
            limits,
            per_user: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            handshakes: DefaultKeyedRateLimiter::keyed(Quota::per_minute(per(limits.handshakes_per_minute_per_ip))),
            sessions_per_ip: DefaultKeyedRateLimiter::keyed(Quota::per_minute(per(limits.handshakes_per_minute_per_ip.saturating_mul(2)))),
            sessions: DefaultDirectRateLimiter::direct(
                Quota::with_period(limits.connect_timeout / limits.max_pending_sessions.max(1))
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
                    .allow_burst(per(limits.max_pending_sessions)),
            ),
            replays: DefaultKeyedRateLimiter::keyed(Quota::per_minute(per(limits.replay_per_minute_per_ip))),
        })
    }

    /// Spends `entries` replayed envelopes from `ip`'s budget; `false` when it cannot (then
    /// nothing is spent and the room is reported `replay-limited`). An exhausted budget
    /// refuses even 0, so a room is not read at all.
    pub fn replay(&self, ip: Option<IpAddr>, entries: usize) -> bool {
        let Some(key) = ip.map(rate_key) else {
            return true;
        };
        let n = NonZeroU32::new(u32::try_from(entries).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        matches!(self.replays.check_key_n(&key, n), Ok(Ok(())))
    }

    /// Counts a new Engine.IO session from `ip` (see the fields' docs).
    pub fn open_session(&self, ip: Option<IpAddr>) -> Result<(), LimitError> {
        if let Some(key) = ip.map(rate_key)
            && self.sessions_per_ip.check_key(&key).is_err()
        {
            return Err(LimitError::Sessions);
        }
        self.sessions.check().map_err(|_| LimitError::Sessions)
    }

    /// Counts a handshake from `ip` against its per-minute budget. IPv6 clients are
    /// counted per /64 (one host usually holds a whole /64 and can rotate within it).
    pub fn handshake(&self, ip: Option<IpAddr>) -> Result<(), LimitError> {
        match ip.map(rate_key) {
            Some(key) if self.handshakes.check_key(&key).is_err() => Err(LimitError::Handshakes),
            _ => Ok(()),
        }
    }

    /// Takes a connection slot for `user`, or says which limit is reached.
    pub(crate) fn acquire(self: &Arc<Self>, user: &str) -> Result<Slot, LimitError> {
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.limits.max_connections {
            return Err(LimitError::Full);
        }
        let held = per_user.entry(user.to_owned()).or_default();
        if *held >= self.limits.max_connections_per_user {
            return Err(LimitError::PerUser(self.limits.max_connections_per_user));
        }
        *held += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            limiter: self.clone(),
            user: user.to_owned(),
        })
    }

    fn release(&self, user: &str) {
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = per_user.get_mut(user) {
            *held -= 1;
            if *held == 0 {
                per_user.remove(user);
            }
        }
        self.total.fetch_sub(1, Ordering::Relaxed);
    }

    /// A fresh client-event budget for one socket.
    pub(crate) fn event_budget(&self) -> EventBudget {
        EventBudget {
            rate: DefaultDirectRateLimiter::direct(Quota::per_second(per(self.limits.client_events_per_second))),
            strikes: Mutex::new(Strikes::default()),
            closing: AtomicBool::new(false),
            subscribing: tokio::sync::Mutex::new(()),
        }
    }

    /// Forgets addresses whose budget has refilled, so the map does not grow forever.
    pub(crate) fn sweep(&self) {
        self.handshakes.retain_recent();
        self.sessions_per_ip.retain_recent();
        self.replays.retain_recent();
    }

    /// The client's address: the TCP peer, or with `trust_forwarded_for` the last
    /// `X-Forwarded-For` entry (the one the trusted proxy added). That entry is taken as it
    /// is or not at all: one that does not parse as an address (a proxy writing `ip:port`,
    /// say) counts as the peer's, never as the entry before it, which the client wrote.
    pub(crate) fn client_ip(&self, parts: &Parts) -> Option<IpAddr> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        if !self.limits.trust_forwarded_for {
            return peer;
        }
        let last = parts
            .headers
            .get_all(FORWARDED_FOR)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .next_back();
        match last {
            Some(entry) => std::str::from_utf8(entry)
                .ok()
                .and_then(|a| a.trim().parse::<IpAddr>().ok())
                .or(peer),
            None => peer,
        }
    }
}

/// What the per-address budget is keyed on: IPv4 addresses as they are, IPv6 by /64.
fn rate_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ClientLimits {
        ClientLimits {
            max_connections_per_user: 2,
            max_connections: 3,
            handshakes_per_minute_per_ip: 2,
            client_events_per_second: 3,
            max_payload_bytes: 1024,
            socket_buffer: 128,
            trust_forwarded_for: false,
            max_pending_sessions: 4,
            connect_timeout: std::time::Duration::from_secs(10),
            replay_per_minute_per_ip: 10,
            max_product_subscriptions: 3,
        }
    }

    #[test]
    fn connections_are_counted_per_user_and_in_all() {
        let l = Limiter::new(limits());
        let a1 = l.acquire("a").unwrap();
        let _a2 = l.acquire("a").unwrap();
        assert_eq!(l.acquire("a").err(), Some(LimitError::PerUser(2)));
        let _b1 = l.acquire("b").unwrap();
        assert_eq!(l.acquire("c").err(), Some(LimitError::Full));
        drop(a1);
        assert!(l.acquire("c").is_ok(), "a released slot is free again");
    }

    #[test]
    fn handshakes_are_limited_per_address() {
        let l = Limiter::new(limits());
        let (one, two): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(l.handshake(Some(one)).is_ok());
        assert!(l.handshake(Some(one)).is_ok());
        assert_eq!(l.handshake(Some(one)), Err(LimitError::Handshakes));
        assert!(l.handshake(Some(two)).is_ok(), "another address has its own budget");
    }

    #[test]
    fn a_flood_is_refused_then_called_abusive() {
        let l = Limiter::new(limits());
        let b = l.event_budget();
        let verdicts: Vec<Verdict> = (0..3 + ABUSE_STRIKES).map(|_| b.spend()).collect();
        assert!(verdicts[..3].iter().all(|v| *v == Verdict::Allowed));
        assert!(verdicts[3..verdicts.len() - 1].iter().all(|v| *v == Verdict::Refused));
        assert_eq!(verdicts.last(), Some(&Verdict::Abusive));
        assert_eq!(b.spend(), Verdict::Closing, "abuse is reported once");
    }

    #[test]
    fn engine_sessions_are_bounded_per_address_and_in_all() {
        let l = Limiter::new(limits());
        let (one, two, three): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        // Per address: twice the handshake budget (2 × 2).
        for _ in 0..4 {
            assert!(l.open_session(Some(one)).is_ok());
        }
        assert_eq!(l.open_session(Some(one)), Err(LimitError::Sessions));
        // In all: 4 pending per connect timeout; `one` spent them.
        assert_eq!(l.open_session(Some(two)), Err(LimitError::Sessions));
        assert_eq!(l.open_session(Some(three)), Err(LimitError::Sessions));
    }

    #[test]
    fn replays_are_budgeted_per_address() {
        let l = Limiter::new(limits());
        let (one, two): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(l.replay(Some(one), 6));
        assert!(!l.replay(Some(one), 6), "6 + 6 > 10 a minute");
        assert!(l.replay(Some(one), 4));
        assert!(!l.replay(Some(one), 0), "exhausted: not even a read");
        assert!(l.replay(Some(two), 10), "another address has its own budget");
        assert!(!l.replay(Some(two), 11), "more than the budget at once");
    }

    #[test]
    fn ipv6_clients_share_a_budget_per_64() {
        let l = Limiter::new(limits());
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:fffe".parse().unwrap();
        assert!(l.handshake(Some(a)).is_ok());
        assert!(l.handshake(Some(b)).is_ok());
        assert_eq!(
            l.handshake(Some(a)),
            Err(LimitError::Handshakes),
            "rotating within the /64 does not help"
        );
        assert!(l.handshake(Some("2001:db8:1:3::1".parse().unwrap())).is_ok(), "another /64");
        assert_eq!(rate_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn strikes_expire() {
        let l = Limiter::new(ClientLimits {
            client_events_per_second: 1,
            ..limits()
        });
        let b = l.event_budget();
        let t0 = Instant::now();
        assert_eq!(b.spend_at(t0), Verdict::Allowed);
        // Refusals scattered over a long session: never abusive.
        for i in 1..(3 * ABUSE_STRIKES) {
            let at = t0 + STRIKE_WINDOW * i / (ABUSE_STRIKES / 2);
            assert_eq!(b.spend_at(at), Verdict::Refused, "strike {i}");
        }
        // A burst within the window still is.
        let burst = t0 + STRIKE_WINDOW * 1000;
        let verdicts: Vec<Verdict> = (0..ABUSE_STRIKES).map(|_| b.spend_at(burst)).collect();
        assert_eq!(verdicts.last(), Some(&Verdict::Abusive));
    }

    #[test]
    fn an_unparseable_trusted_forwarded_entry_counts_as_the_peer() {
        let trusting = Limiter::new(ClientLimits {
            trust_forwarded_for: true,
            ..limits()
        });
        let req = axum::http::Request::builder()
            .header("x-forwarded-for", "203.0.113.9, 198.51.100.7:4711")
            .body(())
            .unwrap();
        let (mut parts, _) = req.into_parts();
        parts.extensions.insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 5], 5000))));
        assert_eq!(
            trusting.client_ip(&parts),
            Some("10.0.0.5".parse().unwrap()),
            "not the client-written 203.0.113.9"
        );
    }

    #[test]
    fn forwarded_for_is_trusted_only_when_configured() {
        let req = axum::http::Request::builder()
            .header("x-forwarded-for", "203.0.113.9, 198.51.100.7")
            .body(())
            .unwrap();
        let (mut parts, _) = req.into_parts();
        parts.extensions.insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 5000))));
        assert_eq!(Limiter::new(limits()).client_ip(&parts), Some("127.0.0.1".parse().unwrap()));
        let trusting = Limiter::new(ClientLimits {
            trust_forwarded_for: true,
            ..limits()
        });
        assert_eq!(trusting.client_ip(&parts), Some("198.51.100.7".parse().unwrap()));
    }
}
