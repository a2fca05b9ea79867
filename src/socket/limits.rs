//! What one client may do: sockets per user and in all, handshakes per IP address, client
//! events per socket. Each refusal says why, so a client can tell a bug from a limit.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use crate::config::ClientLimits;

/// Refused client events after which a socket is disconnected as abusive.
pub const ABUSE_STRIKES: u32 = 50;

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
}

/// The shared counters and rate limiters.
pub struct Limiter {
    limits: ClientLimits,
    per_user: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
    handshakes: DefaultKeyedRateLimiter<IpAddr>,
}

/// One socket's place in the connection counts; released when dropped.
pub struct Slot {
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
pub enum Verdict {
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
pub struct EventBudget {
    rate: DefaultDirectRateLimiter,
    strikes: AtomicU32,
    closing: AtomicBool,
}

impl EventBudget {
    /// Spends one event.
    pub fn spend(&self) -> Verdict {
        if self.closing.load(Ordering::Relaxed) {
            return Verdict::Closing;
        }
        if self.rate.check().is_ok() {
            return Verdict::Allowed;
        }
        if self.strikes.fetch_add(1, Ordering::Relaxed) + 1 < ABUSE_STRIKES {
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
    /// Counters for these limits.
    pub fn new(limits: ClientLimits) -> Arc<Self> {
        Arc::new(Limiter {
            limits,
            per_user: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            handshakes: DefaultKeyedRateLimiter::keyed(Quota::per_minute(per(limits.handshakes_per_minute_per_ip))),
        })
    }

    /// Counts a handshake from `ip` against its per-minute budget.
    pub fn handshake(&self, ip: Option<IpAddr>) -> Result<(), LimitError> {
        match ip {
            Some(ip) if self.handshakes.check_key(&ip).is_err() => Err(LimitError::Handshakes),
            _ => Ok(()),
        }
    }

    /// Takes a connection slot for `user`, or says which limit is reached.
    pub fn acquire(self: &Arc<Self>, user: &str) -> Result<Slot, LimitError> {
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
    pub fn event_budget(&self) -> EventBudget {
        EventBudget {
            rate: DefaultDirectRateLimiter::direct(Quota::per_second(per(self.limits.client_events_per_second))),
            strikes: AtomicU32::new(0),
            closing: AtomicBool::new(false),
        }
    }

    /// Forgets addresses whose budget has refilled, so the map does not grow forever.
    pub fn sweep(&self) {
        self.handshakes.retain_recent();
    }

    /// The client's address: the TCP peer, or with `trust_forwarded_for` the last
    /// `X-Forwarded-For` entry (the one the trusted proxy added).
    pub fn client_ip(&self, parts: &Parts) -> Option<IpAddr> {
        if self.limits.trust_forwarded_for
            && let Some(ip) = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|a| a.trim().parse::<IpAddr>().ok())
                .next_back()
        {
            return Some(ip);
        }
        parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
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
