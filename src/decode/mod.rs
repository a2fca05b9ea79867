//! The decoding stage: a Kafka record, whatever its producer wrote, becomes a JSON value
//! and then, through the [`Mapping`], the typed [`Event`] — so routing, history, positions
//! and everything after see one shape.
//!
//! Detected per record, outside in:
//! 1. CloudEvents ([`cloudevents`]): structured mode (`content-type:
//!    application/cloudevents+json…`, the value is the event, `data` inside) or binary mode
//!    (`ce_*` headers, the value is `data`); the attributes go to the mapping.
//! 2. The wire format ([`confluent`]): magic byte 0 and a schema id → Avro, Protobuf or JSON
//!    Schema through the registry ([`registry`]); anything else is JSON text.
//! 3. Envelopes ([`envelope`]): a Kafka Connect `JsonConverter` value (`schema` + `payload`)
//!    → the payload; a JSON string holding an object (Debezium's outbox router) → the object.
//!
//! Pure once the record's schemas are at hand: the consumer fetches them first
//! ([`registry::Registry::resolve`]), waiting while the registry is down, so decoding never
//! waits and an outage never dead-letters a record.

pub mod avro;
pub mod cloudevents;
pub mod confluent;
pub mod envelope;
pub mod registry;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::events::{Event, bounded_error};
use crate::mapping::{MapError, Mapping, Meta};

pub use confluent::Schema;

/// A record as the decoding stage reads it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its headers, in order (a header without a value is left out).
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Its value.
    pub payload: Option<&'a [u8]>,
}

/// The wire format a value was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON text.
    Json,
    /// Confluent wire format, Avro.
    Avro,
    /// Confluent wire format, Protobuf.
    Protobuf,
    /// Confluent wire format, JSON Schema.
    JsonSchema,
}

impl Format {
    /// Its metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Avro => "avro",
            Format::Protobuf => "protobuf",
            Format::JsonSchema => "json-schema",
        }
    }
}

/// What the value was wrapped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// Nothing.
    None,
    /// A CloudEvent in binary mode.
    CloudEventsBinary,
    /// A CloudEvent in structured mode.
    CloudEventsStructured,
    /// A Kafka Connect `JsonConverter` envelope.
    Connect,
    /// A JSON string holding the JSON object.
    JsonString,
}

impl Envelope {
    /// Its metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Envelope::None => "none",
            Envelope::CloudEventsBinary => "cloudevents-binary",
            Envelope::CloudEventsStructured => "cloudevents-structured",
            Envelope::Connect => "connect",
            Envelope::JsonString => "json-string",
        }
    }
}

/// A decoded value with what it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The value the mapping reads.
    pub value: Value,
    /// The wire format.
    pub format: Format,
    /// The outermost envelope.
    pub envelope: Envelope,
    /// CloudEvents attributes (`type`, `source`, `id`, `time`, `subject`, extensions).
    pub cloud_event: Option<Map<String, Value>>,
}

/// Why a record could not be decoded, naming the stage.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// No value (a tombstone or an empty produce).
    #[error("record has no payload")]
    Empty,
    /// Not JSON text (and not the Confluent wire format).
    #[error("invalid payload: {0}")]
    Json(String),
    /// A CloudEvent that breaks the Kafka protocol binding.
    #[error("cloudevents: {0}")]
    CloudEvents(String),
    /// The Confluent wire format, but no registry is configured.
    #[error("confluent wire format (schema id {0}) but SCHEMA_REGISTRY_URL is not set")]
    NoRegistry(u32),
    /// The registry has no such schema, or it is not one the bridge can read.
    #[error("registry: schema id {id}: {reason}")]
    Schema {
        /// The schema id.
        id: u32,
        /// Why.
        reason: String,
    },
    /// The body does not decode with its schema.
    #[error("{format}: schema id {id}: {reason}")]
    Body {
        /// `avro`, `protobuf` or `json-schema`.
        format: &'static str,
        /// The schema id.
        id: u32,
        /// Why.
        reason: String,
    },
}

impl DecodeError {
    fn json(e: serde_json::Error) -> DecodeError {
        DecodeError::Json(bounded_error(e.to_string()))
    }
}

/// Why a record is not an event: undecodable, or not mapped to one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The decoding stage refused it.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The mapping (or the typed event) refused it.
    #[error(transparent)]
    Map(#[from] MapError),
}

/// The schemas a batch's records name, fetched before it is decoded: a schema, or why
/// there is none (an unknown id, a schema the bridge cannot read).
#[derive(Debug, Default, Clone)]
pub struct Schemas(pub HashMap<u32, Arc<Result<Schema, String>>>);

/// The decoding stage and the mapping, shared by the consumer and `check-mapping`.
#[derive(Debug, Clone)]
pub struct Decoder {
    mapping: Arc<Mapping>,
    registry: Option<Arc<registry::Registry>>,
}

impl Decoder {
    /// Decodes with `mapping`, and the Confluent wire format with `registry` when given.
    pub fn new(mapping: Mapping, registry: Option<Arc<registry::Registry>>) -> Self {
        Decoder {
            mapping: Arc::new(mapping),
            registry,
        }
    }

    /// The registry, when `SCHEMA_REGISTRY_URL` is set.
    pub fn registry(&self) -> Option<&Arc<registry::Registry>> {
        self.registry.as_ref()
    }

    /// The event `input` is, with the formats it came in.
    pub fn event(&self, input: &Input<'_>, schemas: &Schemas) -> Result<(Event, Format, Envelope), RecordError> {
        let decoded = decode(input, self.registry.is_some(), schemas)?;
        let meta = Meta {
            topic: input.topic,
            key: input.key,
            headers: input.headers,
            cloud_event: decoded.cloud_event.as_ref(),
        };
        let event = self.mapping.apply(&meta, decoded.value)?;
        Ok((event, decoded.format, decoded.envelope))
    }

    /// The mapping.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }
}

/// The schema id of a value written in the Confluent wire format.
pub fn schema_id(input: &Input<'_>) -> Option<u32> {
    if cloudevents::is_structured(input.headers) {
        return None;
    }
    confluent::schema_id(input.payload?)
}

/// Decodes `input` (see the module's documentation for the order of the steps).
pub fn decode(input: &Input<'_>, registry: bool, schemas: &Schemas) -> Result<Decoded, DecodeError> {
    let payload = input.payload.filter(|p| !p.is_empty()).ok_or(DecodeError::Empty)?;
    if cloudevents::is_structured(input.headers) {
        let (data, attributes) = cloudevents::structured(payload)?;
        let (value, envelope) = envelope::unwrap(data, Envelope::CloudEventsStructured);
        return Ok(Decoded {
            value,
            format: Format::Json,
            envelope,
            cloud_event: Some(attributes),
        });
    }
    let cloud_event = cloudevents::binary_attributes(input.headers);
    let (value, format) = wire(payload, registry, schemas)?;
    let outer = if cloud_event.is_some() {
        Envelope::CloudEventsBinary
    } else {
        Envelope::None
    };
    let (value, envelope) = match format {
        Format::Json | Format::JsonSchema => envelope::unwrap(value, outer),
        Format::Avro | Format::Protobuf => (value, outer),
    };
    Ok(Decoded {
        value,
        format,
        envelope,
        cloud_event,
    })
}

/// The value of a record's bytes: the Confluent wire format, or JSON text.
fn wire(payload: &[u8], registry: bool, schemas: &Schemas) -> Result<(Value, Format), DecodeError> {
    match confluent::schema_id(payload) {
        Some(id) if !registry => Err(DecodeError::NoRegistry(id)),
        Some(id) => {
            let schema = schemas.0.get(&id).ok_or_else(|| DecodeError::Schema {
                id,
                reason: "not fetched (a bug: the consumer fetches every id first)".to_owned(),
            })?;
            match schema.as_ref() {
                Ok(schema) => confluent::decode_body(id, schema, &payload[5..]),
                Err(reason) => Err(DecodeError::Schema {
                    id,
                    reason: reason.clone(),
                }),
            }
        }
        None => serde_json::from_slice(payload)
            .map(|v| (v, Format::Json))
            .map_err(DecodeError::json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const MAPPING: &str = r#"
[[source]]
topic = "shop.orders"
event = "{header:eventType}"
[source.events]
OrderShipped = "order.updated"
[source.fields]
orderId = "/id"
buyerId = "/customer/id"
status = "/state"

[[source]]
topic = "^ce\\."
event = "{ce:type}"
"#;

    fn decoder() -> Decoder {
        Decoder::new(Mapping::parse("test", MAPPING).unwrap(), None)
    }

    fn schemas() -> Schemas {
        let avro = r#"{"type":"record","name":"O","fields":[{"name":"orderId","type":"string"},{"name":"buyerId","type":["null","long"]},{"name":"status","type":"string"}]}"#;
        let proto = "syntax = \"proto3\"; message O { string order_id = 1; string buyer_id = 2; string status = 3; }";
        let entries = [
            (1, Schema::compile(1, confluent::Kind::Avro, avro, &[])),
            (2, Schema::compile(2, confluent::Kind::Protobuf, proto, &[])),
            (3, Ok(Schema::Json)),
            (4, Err("not found in the registry".to_owned())),
        ];
        Schemas(entries.into_iter().map(|(id, s)| (id, Arc::new(s))).collect())
    }

    fn event(topic: &str, headers: &[(&str, &[u8])], payload: &[u8]) -> Result<(Event, Format, Envelope), RecordError> {
        let d = Decoder::new(Mapping::parse("test", MAPPING).unwrap(), None);
        let d = Decoder {
            registry: Some(Arc::new(
                registry::Registry::new(&crate::config::RegistryConfig {
                    url: "http://127.0.0.1:9".into(),
                    username: None,
                    password: None,
                    token: None,
                    ca_file: None,
                    cache_size: 10,
                })
                .unwrap(),
            )),
            ..d
        };
        let input = Input {
            topic,
            key: None,
            headers,
            payload: Some(payload),
        };
        d.event(&input, &schemas())
    }

    #[test]
    fn every_shape_becomes_the_same_event() {
        let own = br#"{"orderId":"o","buyerId":"u","status":"paid"}"#;
        let expected = |r: Result<(Event, Format, Envelope), RecordError>| {
            let (e, f, env) = r.unwrap();
            assert_eq!(
                (e.event_type().as_str(), e.data()["orderId"].as_str()),
                ("order.updated", Some("o"))
            );
            (f, env)
        };
        assert_eq!(expected(event("order.updated", &[], own)), (Format::Json, Envelope::None));
        let connect = br#"{"schema":{"type":"struct"},"payload":{"orderId":"o","buyerId":"u","status":"paid"}}"#;
        assert_eq!(expected(event("order.updated", &[], connect)), (Format::Json, Envelope::Connect));
        let outbox = br#""{\"id\":\"o\",\"customer\":{\"id\":\"u\"},\"state\":\"paid\"}""#;
        let shipped: &[(&str, &[u8])] = &[("eventType", b"OrderShipped")];
        assert_eq!(
            expected(event("shop.orders", shipped, outbox)),
            (Format::Json, Envelope::JsonString)
        );
        let binary: &[(&str, &[u8])] = &[
            ("ce_specversion", b"1.0"),
            ("ce_type", b"order.updated"),
            ("content-type", b"application/json"),
        ];
        assert_eq!(
            expected(event("ce.orders", binary, own)),
            (Format::Json, Envelope::CloudEventsBinary)
        );
        let structured: &[(&str, &[u8])] = &[("content-type", b"application/cloudevents+json; charset=UTF-8")];
        let ce = json!({"specversion": "1.0", "type": "order.updated", "source": "/s", "id": "1", "data": {"orderId": "o", "buyerId": "u", "status": "paid"}});
        assert_eq!(
            expected(event("ce.orders", structured, ce.to_string().as_bytes())),
            (Format::Json, Envelope::CloudEventsStructured)
        );
        // Avro: "o", union branch 1 (long 7), "paid".
        let avro = [0, 0, 0, 0, 1, 2, b'o', 2, 14, 8, b'p', b'a', b'i', b'd'];
        assert_eq!(expected(event("order.updated", &[], &avro)), (Format::Avro, Envelope::None));
        let mut json_schema = vec![0, 0, 0, 0, 3];
        json_schema.extend_from_slice(own);
        assert_eq!(
            expected(event("order.updated", &[], &json_schema)),
            (Format::JsonSchema, Envelope::None)
        );
        // Protobuf: index [0] (one 0 byte), then fields 1, 2, 3.
        let proto = [0, 0, 0, 0, 2, 0, 10, 1, b'o', 18, 1, b'u', 26, 4, b'p', b'a', b'i', b'd'];
        assert_eq!(expected(event("order.updated", &[], &proto)), (Format::Protobuf, Envelope::None));
    }

    #[test]
    fn reasons_name_the_stage() {
        let reason = |topic: &str, payload: &[u8]| event(topic, &[], payload).unwrap_err().to_string();
        assert_eq!(
            reason("order.updated", &[0, 0, 0, 0, 4, 1]),
            "registry: schema id 4: not found in the registry"
        );
        assert!(reason("order.updated", &[0, 0, 0, 0, 1, 2]).starts_with("avro: schema id 1: "));
        assert!(reason("order.updated", &[0, 0, 0, 0, 2, 9]).starts_with("protobuf: schema id 2: "));
        assert!(reason("order.updated", &[0, 0, 0, 0, 3, b'x']).starts_with("json-schema: schema id 3: "));
        assert_eq!(reason("shop.returns", b"{}"), "no source for topic shop.returns");
        let no_registry = decoder().event(
            &Input {
                topic: "order.updated",
                key: None,
                headers: &[],
                payload: Some(&[0, 0, 0, 0, 9]),
            },
            &Schemas::default(),
        );
        assert_eq!(
            no_registry.unwrap_err().to_string(),
            "confluent wire format (schema id 9) but SCHEMA_REGISTRY_URL is not set"
        );
    }

    fn header() -> impl Strategy<Value = (String, Vec<u8>)> {
        (
            prop_oneof![
                Just("ce_specversion".to_owned()),
                Just("ce_type".to_owned()),
                Just("content-type".to_owned()),
                Just("eventType".to_owned()),
                "[a-z_]{1,12}",
            ],
            prop_oneof![
                Just(b"application/cloudevents+json".to_vec()),
                Just(b"OrderShipped".to_vec()),
                Just(b"order.updated".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..24),
            ],
        )
    }

    proptest! {
        /// Any bytes, with or without the magic byte and a known schema id, under any
        /// headers and topic: an event or a reason, never a panic.
        #[test]
        fn any_record_is_an_event_or_a_reason(
            topic in prop_oneof![Just("order.updated".to_owned()), Just("shop.orders".to_owned()), Just("ce.x".to_owned()), ".{0,40}"],
            prefix in prop_oneof![Just(vec![]), (1u8..=5).prop_map(|id| vec![0, 0, 0, 0, id])],
            body in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..96),
                Just(br#"{"orderId":"o","buyerId":"u","status":"paid"}"#.to_vec()),
                Just(br#"{"schema":{},"payload":"{\"id\":1}"}"#.to_vec()),
                Just(br#"{"specversion":"1.0","type":"order.updated","data_base64":"e30="}"#.to_vec()),
            ],
            headers in proptest::collection::vec(header(), 0..6),
        ) {
            let payload: Vec<u8> = prefix.into_iter().chain(body).collect();
            let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            let outcome = event(&topic, &headers, &payload);
            if let Err(reason) = outcome {
                prop_assert!(!reason.to_string().is_empty());
            }
        }
    }
}
