//! Records compressed with each of Kafka's codecs are consumed and delivered like plain ones
//! (librdkafka compiles a codec in or not: a missing one fails only at run time).

mod common;

use std::time::Duration;

use common::{build_app, eventually, spawn};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test]
async fn records_in_every_codec_are_delivered() {
    let app = build_app(&[("KAFKA_AUTO_OFFSET_RESET", "earliest"), ("KAFKA_TOPICS", "order.updated")]).await;
    let brokers = app.brokers().to_owned();
    let app = spawn(app);
    const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
    for (i, codec) in CODECS.iter().enumerate() {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("compression.codec", *codec)
            .create()
            .unwrap_or_else(|e| panic!("a producer with {codec}: {e}"));
        let value = serde_json::json!({"orderId": format!("c-{i}"), "buyerId": "u-codec", "status": codec}).to_string();
        producer
            .send(
                FutureRecord::<(), _>::to("order.updated").partition(0).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("producing with {codec}: {e}"));
    }
    let counts = || async {
        let h = app.health().await;
        (
            h["kafka"]["recordsConsumed"].as_u64().unwrap(),
            h["kafka"]["recordsInvalid"].as_u64().unwrap(),
            h["socketio"]["emits"].as_u64().unwrap(),
        )
    };
    eventually("every record consumed and emitted to the buyer and the admins", || async {
        counts().await == (5, 0, 10)
    })
    .await;
    app.stop().await;
}
