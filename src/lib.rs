//! realtime-bridge: consumes business events from Kafka and pushes them to Socket.IO rooms.
//!
//! Data flows one way: [`kafka`] → [`events`] (parse) → [`routing`] (rooms) →
//! [`delivery`] (history + emit) → [`socket`] clients. [`app`] wires it all from [`config`].

// Every public item says what it is for; clippy -D warnings in CI enforces it.
#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod config;
pub mod contract;
pub mod delivery;
pub mod demo;
mod drain;
pub mod events;
pub mod faults;
pub mod health;
pub mod history;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod redis;
mod retry;
pub mod router;
pub mod routing;
pub mod socket;
pub mod stats;
pub mod supervisor;
pub mod telemetry;
