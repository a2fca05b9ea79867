//! Races between a client's packets and the server's handlers, each made certain by a slow
//! fault (test builds only: `fault-injection`) and driven packet by packet over polling.
//! Each test fails without the fix it names.
#![cfg(feature = "fault-injection")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{API_KEY, Polling, SECRET, TestApp, build_app, eventually, spawn};
use realtime_bridge::faults::{Fault, Faults};
use serde_json::json;

async fn app(vars: &[(&str, &str)]) -> (TestApp, Arc<Faults>) {
    let mut all = vec![("KAFKA_BROKERS", "127.0.0.1:1"), ("API_KEYS", API_KEY)];
    all.extend_from_slice(vars);
    let app = build_app(&all).await;
    let faults = app.faults();
    (spawn(app), faults)
}

fn token(user: &str, admin: bool) -> String {
    realtime_bridge::auth::mint_hs256(SECRET, user, admin, Duration::from_secs(600))
}

async fn stat(app: &TestApp, field: &str) -> u64 {
    let (status, body) = app.stats("").await;
    assert_eq!(status, 200, "{body}");
    body.pointer(field)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("{field} in {body}"))
}

/// A transport closed before the connect handler registered its disconnect handler used to
/// keep the socket, and its user's connection slot, until the token's `exp`.
#[tokio::test]
async fn a_transport_closed_before_the_socket_is_set_up_frees_its_slot() {
    let (app, faults) = app(&[("MAX_CONNECTIONS_PER_USER", "1")]).await;
    faults.arm(Fault::SlowConnect, 1);
    let mut first = Polling::open(&app).await;
    let answer = first.connect(&token("u-1", false), json!(null)).await;
    assert!(answer.starts_with("40{"), "{answer}");
    first.close().await;
    eventually("the connect handler to run", || async { faults.delayed() == 1 }).await;
    eventually("the slot to be freed", || async { stat(&app, "/connections").await == 0 }).await;
    let mut second = Polling::open(&app).await;
    let answer = second.connect(&token("u-1", false), json!(null)).await;
    assert!(answer.starts_with("40{"), "the user may connect again: {answer}");
    app.stop().await;
}

/// An `auth:refresh` with a non-admin token during the connect's replay used to leave the
/// socket in `admin:dashboard`, joined after the refresh left it.
#[tokio::test]
async fn an_admin_demoted_while_connecting_is_not_left_in_the_admin_room() {
    let (app, faults) = app(&[]).await;
    faults.arm(Fault::SlowRead, 1);
    let mut client = Polling::open(&app).await;
    let positions = json!({"admin:dashboard": {"epoch": "gone", "seq": 0}});
    let answer = client.connect(&token("ops", true), positions).await;
    assert!(answer.starts_with("40{"), "{answer}");
    // While the join waits on its read, the token is swapped for one without the role.
    client
        .send(&[Polling::emit_packet(1, "auth:refresh", json!({"token": token("ops", false)}))])
        .await;
    assert_eq!(client.ack(1).await["ok"], true);
    let hello = client.event("connection:success").await;
    assert_eq!(hello["rooms"], json!(["user:ops"]), "{hello}");
    assert_eq!(hello["recovery"]["admin:dashboard"]["reason"], "forbidden", "{hello}");
    client.send(&[Polling::emit_packet(2, "subscribe:orders", json!({}))]).await;
    assert_eq!(client.ack(2).await["rooms"], json!(["user:ops"]));
    app.stop().await;
}

/// Concurrent `subscribe:products` used to all pass the cap check before any of them
/// joined, each seeing room for its ids.
#[tokio::test]
async fn concurrent_product_subscriptions_keep_to_the_cap() {
    let (app, faults) = app(&[("MAX_PRODUCT_SUBSCRIPTIONS", "2")]).await;
    let mut client = Polling::open(&app).await;
    let answer = client.connect(&token("u-3", false), json!(null)).await;
    assert!(answer.starts_with("40{"), "{answer}");
    client.event("connection:success").await;
    faults.arm(Fault::SlowRead, 4);
    let requests: Vec<String> = (1..=5)
        .map(|n| Polling::emit_packet(n, "subscribe:products", json!({"productIds": [format!("a{n}"), format!("b{n}")]})))
        .collect();
    client.send(&requests).await;
    let mut accepted = 0;
    for n in 1..=5 {
        let ack = client.ack(n).await;
        if ack["ok"] == true {
            accepted += 1;
        } else {
            assert!(ack["error"].as_str().unwrap().contains("MAX_PRODUCT_SUBSCRIPTIONS"), "{ack}");
        }
    }
    assert_eq!(accepted, 1, "one request fits the cap of 2");
    client.send(&[Polling::emit_packet(9, "subscribe:orders", json!({}))]).await;
    let rooms = client.ack(9).await["rooms"].clone();
    let products = rooms
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.as_str().unwrap().starts_with("product:"))
        .count();
    assert_eq!(products, 2, "{rooms}");
    app.stop().await;
}
