//! Everything that talks to Kafka: the consumer group loop, the dead-letter producer and
//! the embedded development broker.

use rdkafka::config::ClientConfig;

use crate::config::ClientProperties;

pub mod consumer;
pub mod dead_letter;
pub mod dev_broker;
pub(crate) mod peers;

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

#[cfg(test)]
mod tests {
    use rdkafka::consumer::BaseConsumer;

    use super::*;

    /// librdkafka accepts OIDC settings only when it was built with libcurl (and OpenSSL):
    /// otherwise creating the client fails with "OAuth/OIDC depends on libcurl…". This is
    /// what `KAFKA_PROPERTIES_FILE` passes for an OIDC cluster (docs/operations.md).
    #[test]
    fn oidc_client_credentials_are_compiled_in() {
        let properties = ClientProperties(
            [
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "OAUTHBEARER"),
                ("sasl.oauthbearer.method", "oidc"),
                ("sasl.oauthbearer.client.id", "realtime-bridge"),
                ("sasl.oauthbearer.client.secret", "secret"),
                ("sasl.oauthbearer.token.endpoint.url", "https://127.0.0.1:9/token"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        );
        let created = client_config("127.0.0.1:9", &properties)
            .set("group.id", "oidc-check")
            .create::<BaseConsumer>();
        assert!(created.is_ok(), "{:?}", created.err());
    }
}
