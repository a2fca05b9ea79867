//! Reads leave nothing behind (issue 25): a product GET, `subscribe:products` and
//! `auth.positions` name any product id a client likes; none of them may create a room in the
//! store. Measured before the fix: 20 000 GETs of unknown ids → 20 000 new Redis keys.

mod common;

use std::time::Duration;

use common::{API_KEY, Polling, SECRET, spawn_app};
use serde_json::json;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn keys(prefix: &str) -> Vec<String> {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
    keys.sort();
    keys
}

#[tokio::test]
async fn reads_of_unknown_products_create_no_redis_keys() {
    let prefix = format!("rb-reads:{:08x}:", rand::random::<u32>());
    let url = redis_url();
    let app = spawn_app(&[
        ("KAFKA_BROKERS", "127.0.0.1:1"),
        ("API_KEYS", API_KEY),
        ("REDIS_URL", &url),
        ("REDIS_PREFIX", &prefix),
        ("HANDSHAKES_PER_MINUTE_PER_IP", "1000"),
    ])
    .await;
    let token = realtime_bridge::auth::mint_hs256(SECRET, "u-9", false, Duration::from_secs(600));
    // The socket is served once the adapter has subscribed its channels.
    let mut client = loop {
        let mut client = Polling::open(&app).await;
        let positions =
            json!({"product:ghost-1": {"epoch": "made-up", "seq": 4}, "product:ghost-2": {"epoch": "~1796000000000", "seq": 0}});
        if client.connect(&token, positions).await.starts_with("40{") {
            break client;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let hello = client.event("connection:success").await;
    assert_eq!(hello["recovery"]["product:ghost-1"]["reason"], "epoch-changed", "{hello}");
    assert_eq!(hello["positions"]["product:ghost-1"]["seq"], 0, "{hello}");
    assert!(
        hello["positions"]["product:ghost-1"]["epoch"].as_str().unwrap().starts_with('~'),
        "no history: an unborn position {hello}"
    );
    let before = keys(&prefix).await;
    assert_eq!(before, [format!("{prefix}{{user:u-9}}:m")], "the socket's own room only");

    let ids: Vec<String> = (0..50).map(|i| format!("ghost-{i}")).collect();
    client
        .send(&[Polling::emit_packet(1, "subscribe:products", json!({"productIds": ids}))])
        .await;
    let ack = client.ack(1).await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["snapshot"], json!({}), "nothing known of them");
    for i in 0..300 {
        let res = app
            .http
            .get(app.url(&format!("/realtime/products/unknown-{i}")))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
    }
    assert_eq!(keys(&prefix).await, before, "reads created rooms");
    app.stop().await;
}
