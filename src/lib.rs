//! realtime-bridge: consumes business events from Kafka and pushes them to Socket.IO rooms.
//!
//! Data flows one way: [`kafka`] → [`decode`] (wire formats, [`mapping`]) → [`events`] (typed) → [`routing`] (rooms) →
//! [`delivery`] (history + emit) → [`socket`] clients. [`app`] wires it all from [`config`].

// Every public item says what it is for; clippy -D warnings in CI enforces it.
#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod check;
pub mod config;
pub mod contract;
pub mod decode;
pub mod delivery;
pub mod demo;
mod drain;
pub mod events;
pub mod faults;
pub mod health;
pub mod history;
pub mod http;
pub mod kafka;
pub mod mapping;
pub mod metrics;
pub mod redis;
mod retry;
pub mod router;
pub mod routing;
pub mod socket;
pub mod stats;
pub mod supervisor;
pub mod telemetry;
