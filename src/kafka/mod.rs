//! Everything that talks to Kafka: the consumer group loop, the dead-letter producer and
//! the embedded development broker.

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
