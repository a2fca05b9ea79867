//! A realistic stream of order, inventory and product events, for newcomers and benchmarks.
//!
//! Orders of the demo buyer (`demo-buyer`) and a few others move through
//! created → paid → shipped → delivered (every fifth is cancelled instead); a few products
//! sell down to low and out of stock and are restocked; prices change now and then.

use std::net::SocketAddr;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::auth::mint_hs256;
use crate::config::{AppEnv, ClientProperties, Config, JwtKey};

/// The user id whose events the printed development buyer token receives.
pub(crate) const DEMO_BUYER: &str = "demo-buyer";

const PRODUCTS: [(&str, &str, &str, f64); 3] = [
    ("p-100", "Espresso cup", "CUP-ESP", 9.5),
    ("p-200", "Pour-over kettle", "KET-PO", 49.0),
    ("p-300", "Coffee beans 1kg", "BEAN-1K", 24.0),
];

/// The `n`-th event of the demo stream: topic, key and JSON value.
pub(crate) fn demo_event(n: u64) -> (&'static str, String, Value) {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    // Every step of four advances one order; the fourth step alternates inventory and product news.
    let order_no = n / 4;
    let order_id = format!("{}", 1000 + order_no);
    let buyer = if order_no.is_multiple_of(2) {
        DEMO_BUYER.to_owned()
    } else {
        format!("buyer-{}", order_no % 7)
    };
    let cancelled = order_no % 5 == 4;
    match n % 4 {
        0 => (
            "order.created",
            order_id.clone(),
            json!({
                "orderId": order_id, "buyerId": buyer, "status": "pending",
                "totalAmount": 10.0 + (order_no % 9) as f64 * 7.5, "createdAt": now,
            }),
        ),
        1 if cancelled => (
            "order.cancelled",
            order_id.clone(),
            json!({
                "orderId": order_id, "buyerId": buyer, "status": "cancelled", "previousStatus": "pending",
                "reason": "payment declined", "cancelledAt": now,
            }),
        ),
        1 => order_update(&order_id, &buyer, "paid", "pending", &now),
        2 if cancelled => product_update(order_no, &now),
        2 => order_update(&order_id, &buyer, "shipped", "paid", &now),
        _ if order_no.is_multiple_of(2) => {
            let (id, name, sku, _) = PRODUCTS[(order_no / 2 % 3) as usize];
            // Sells from 8 down by 2 per step: 8, 6, 4 (low), 2, 0 (out), then restocks.
            let level = |k: u64| 8 - 2 * (k % 5) as i64;
            let k = order_no / 6;
            let previous = if k.is_multiple_of(5) { 0 } else { level(k - 1) };
            (
                "inventory.updated",
                id.to_owned(),
                json!({
                    "productId": id, "productName": name, "sku": sku,
                    "stock": level(k), "previousStock": previous, "updatedAt": now,
                }),
            )
        }
        _ => order_update(&order_id, &buyer, "delivered", "shipped", &now),
    }
}

fn order_update(order_id: &str, buyer: &str, status: &str, previous: &str, now: &str) -> (&'static str, String, Value) {
    (
        "order.updated",
        order_id.to_owned(),
        json!({
            "orderId": order_id, "buyerId": buyer, "status": status, "previousStatus": previous, "updatedAt": now,
        }),
    )
}

fn product_update(n: u64, now: &str) -> (&'static str, String, Value) {
    let (id, name, sku, price) = PRODUCTS[(n % 3) as usize];
    (
        "product.updated",
        id.to_owned(),
        json!({
            "productId": id, "name": name, "sku": sku, "price": price + (n % 4) as f64, "updatedAt": now,
        }),
    )
}

/// Publishes the demo stream at `rate` events per second until `count` events or `cancel`.
pub async fn run(
    brokers: &str,
    properties: &ClientProperties,
    rate: u32,
    count: Option<u64>,
    cancel: CancellationToken,
) -> anyhow::Result<u64> {
    publish(brokers, properties, rate, count, cancel, demo_event).await
}

/// How often the publisher tops up to its target rate.
const PACE: Duration = Duration::from_millis(10);

/// Publishes `make(0)`, `make(1)`, … (topic, key, value) at `rate` per second (0: as fast as
/// the producer takes them) until `count` events or `cancel`; returns how many were sent.
/// Sends are not awaited one by one (each would wait for `linger.ms`), so high rates hold;
/// a failed delivery is logged.
pub async fn publish<F>(
    brokers: &str,
    properties: &ClientProperties,
    rate: u32,
    count: Option<u64>,
    cancel: CancellationToken,
    mut make: F,
) -> anyhow::Result<u64>
where
    F: FnMut(u64) -> (&'static str, String, Value),
{
    publish_bytes(brokers, properties, rate, count, cancel, |n| {
        let (topic, key, value) = make(n);
        (topic, key, value.to_string().into_bytes())
    })
    .await
}

/// [`publish`] with values already encoded (the load tool's Avro and Protobuf records).
pub async fn publish_bytes<F>(
    brokers: &str,
    properties: &ClientProperties,
    rate: u32,
    count: Option<u64>,
    cancel: CancellationToken,
    mut make: F,
) -> anyhow::Result<u64>
where
    F: FnMut(u64) -> (&'static str, String, Vec<u8>),
{
    let producer: FutureProducer = crate::kafka::client_config(brokers, properties)
        .set("client.id", "realtime-bridge-demo")
        // Batches still form at high rates; the benchmark's latency includes this wait.
        .set("linger.ms", "1")
        .create()?;
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(PACE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    while count.is_none_or(|c| sent < c) {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let due = match rate {
            0 => u64::MAX,
            r => (start.elapsed().as_secs_f64() * f64::from(r)) as u64,
        };
        let due = count.map_or(due, |c| due.min(c));
        while sent < due && !cancel.is_cancelled() {
            let (topic, key, payload) = make(sent);
            let mut record = FutureRecord::to(topic).key(&key).payload(&payload);
            let delivery = loop {
                match producer.send_result(record) {
                    Ok(delivery) => break delivery,
                    // The local queue is full: let librdkafka drain it.
                    Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((error, _)) => anyhow::bail!("producing to {topic}: {error}"),
                }
            };
            tokio::spawn(async move {
                if let Ok(Err((error, _))) = delivery.await {
                    tracing::warn!(topic, %error, "event not published");
                }
            });
            sent += 1;
        }
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(sent)
}

/// The development banner: where things are and tokens to try them with.
pub(crate) fn print_banner(config: &Config, brokers: &str, addr: SocketAddr) {
    if config.app_env != AppEnv::Development {
        return;
    }
    let mut banner = format!(
        "\n==== realtime-bridge DEVELOPMENT MODE ====\n\
         Embedded Kafka (development only): {brokers}\n\
         Socket.IO / HTTP: http://127.0.0.1:{port}   probes: /health/ready\n\
         Demo events: {rate}/s (DEV_DEMO_RATE); more with: realtime-bridge demo --brokers {brokers}\n",
        port = addr.port(),
        rate = config.dev_demo_rate,
    );
    let dashboard = format!("http://127.0.0.1:{}/dashboard", addr.port());
    if let JwtKey::GeneratedDev(secret) = &config.jwt_key {
        let day = Duration::from_secs(24 * 3600);
        let admin = mint_hs256(secret, "admin", true, day);
        banner.push_str(&format!(
            "JWT key: generated for this run only (set JWT_SECRET to choose one).\n\
             Buyer token ({buyer}): {}\n\
             Admin token (admin):      {admin}\n\
             Dashboard (signed in as admin; the token is in the #fragment, never sent to a server):\n  {dashboard}#token={admin}\n",
            mint_hs256(secret, DEMO_BUYER, false, day),
            buyer = DEMO_BUYER,
        ));
    } else {
        banner.push_str(&format!("Dashboard: {dashboard} (sign in with an admin token)\n"));
    }
    banner.push_str("==========================================\n");
    println!("{banner}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;

    #[test]
    fn every_demo_event_parses_and_the_demo_buyer_gets_orders() {
        let mut buyer_orders = 0;
        let mut out_of_stock = 0;
        for n in 0..400 {
            let (topic, _, value) = demo_event(n);
            let e = Event::parse(topic, Some(value.to_string().as_bytes())).unwrap_or_else(|e| panic!("event {n} on {topic}: {e}"));
            match e {
                Event::Order { order, .. } if order.buyer_id == DEMO_BUYER => buyer_orders += 1,
                Event::Inventory(inv) if inv.stock == 0 => out_of_stock += 1,
                _ => {}
            }
        }
        assert!(buyer_orders > 50, "{buyer_orders}");
        assert!(out_of_stock > 0);
    }
}
