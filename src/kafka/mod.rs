//! Everything that talks to Kafka: the consumer group loop, the dead-letter producer and
//! the embedded development broker.

use rdkafka::config::ClientConfig;

use crate::config::ClientProperties;

pub mod consumer;
pub mod dead_letter;
pub mod dev_broker;

/// The topics the development broker creates and the demo producer writes to.
pub(crate) const DEV_TOPICS: [&str; 6] = [
    "order.created",
    "order.updated",
    "order.cancelled",
    "inventory.updated",
    "product.created",
    "product.updated",
];

/// The configuration every Kafka client of the bridge starts from: the brokers, then the
/// security and pass-through properties (the same for the consumer, the dead-letter producer
/// and the demo producer). Callers then set what they need for their guarantees.
pub fn client_config(brokers: &str, properties: &ClientProperties) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in &properties.0 {
        config.set(key, value);
    }
    config
}
