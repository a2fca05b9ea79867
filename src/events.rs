//! The typed business events and the envelope every socket payload is wrapped in.
//!
//! Pure: no I/O. A Kafka record (topic + JSON bytes) becomes an [`Event`] or a
//! [`ParseError`] that says exactly what is wrong, so a bad record can be logged
//! (and later dead-lettered) without guessing.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// The most characters of a parser's message a [`ParseError`] keeps. serde's messages
/// quote the offending value whole (`invalid type: string "…"`), so a large value would
/// make a large error — and that text travels on as the `dlq.error` header, where the
/// dead-letter topic's size limit would then refuse even the record's truncated copy.
pub const MAX_ERROR_CHARS: usize = 512;

/// `text` cut to at most [`MAX_ERROR_CHARS`] characters (on a character boundary), with
/// `…` marking the cut.
pub fn bounded_error(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(MAX_ERROR_CHARS) {
        text.truncate(at);
        text.push('…');
    }
    text
}

/// Why a record could not become an event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// The record's event type (its topic, or what its mapping source made of it) is not
    /// one the bridge knows.
    #[error("no event type {0:?} (known: order.<action>, inventory.updated, product.created, product.updated)")]
    UnknownTopic(String),
    /// The record has no value (a tombstone or an empty produce).
    #[error("record has no payload")]
    EmptyPayload,
    /// Not JSON, wrong JSON type, or a required field missing / mistyped.
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    /// A required string field is present but empty.
    #[error("field {0:?} must not be empty")]
    EmptyField(&'static str),
    /// The value is larger than the configured limit (`KAFKA_MAX_RECORD_BYTES`).
    #[error("record value is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The value's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// What happened to an order: `order.created`, `order.updated`, `order.cancelled`, or any `order.<action>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderEvent {
    /// The order's id (numbers are accepted and kept as text).
    #[serde(deserialize_with = "id_text")]
    #[schemars(schema_with = "id_schema")]
    pub order_id: String,
    /// The buyer; order services that say `userId` are accepted too.
    #[serde(alias = "userId", deserialize_with = "id_text")]
    #[schemars(schema_with = "id_schema")]
    pub buyer_id: String,
    /// The order's status after this event; defaults to `cancelled` on `order.cancelled`.
    #[serde(default)]
    #[schemars(extend("pattern" = NOT_BLANK))]
    pub status: String,
    /// The status before this event, when the producer knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<String>,
    /// Order total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_amount: Option<f64>,
    /// Why (cancellations, refunds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the order was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When the order last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// When the order was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<String>,
}

/// A product's stock level changed: `inventory.updated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEvent {
    /// The product's id.
    #[serde(deserialize_with = "id_text")]
    #[schemars(schema_with = "id_schema")]
    pub product_id: String,
    /// Units in stock now.
    #[serde(deserialize_with = "whole_number")]
    pub stock: i64,
    /// Units in stock before, when known; alerts fire only on a crossing when it is given.
    #[serde(default, deserialize_with = "opt_whole_number", skip_serializing_if = "Option::is_none")]
    pub previous_stock: Option<i64>,
    /// Stock keeping unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    /// When the stock changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// A product was created or changed: `product.created`, `product.updated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductEvent {
    /// The product's id.
    #[serde(deserialize_with = "id_text")]
    #[schemars(schema_with = "id_schema")]
    pub product_id: String,
    /// Display name (required on `product.created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Stock keeping unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Unit price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    /// Units in stock.
    #[serde(default, deserialize_with = "opt_whole_number", skip_serializing_if = "Option::is_none")]
    pub stock: Option<i64>,
    /// When the product changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// One business event, with the action taken from its topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `order.<action>`; the action is e.g. `created`, `updated`, `cancelled`, `returned`.
    Order {
        /// The topic suffix.
        action: String,
        /// The payload.
        order: OrderEvent,
    },
    /// `inventory.updated`.
    Inventory(InventoryEvent),
    /// `product.created` / `product.updated`.
    Product {
        /// `created` or `updated`.
        action: ProductAction,
        /// The payload.
        product: ProductEvent,
    },
}

/// The two product topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductAction {
    /// `product.created`.
    Created,
    /// `product.updated`.
    Updated,
}

impl ProductAction {
    /// The topic suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            ProductAction::Created => "created",
            ProductAction::Updated => "updated",
        }
    }
}

impl Event {
    /// Parses a record value published on `topic` in the bridge's own JSON: the event type
    /// is the topic. The decoding stage ([`crate::decode`]) reads every other shape.
    pub fn parse(topic: &str, payload: Option<&[u8]>) -> Result<Event, ParseError> {
        // Decide the type before touching the payload so an unknown topic is reported as such.
        EventKind::of(topic)?;
        let payload = payload.filter(|p| !p.is_empty()).ok_or(ParseError::EmptyPayload)?;
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| ParseError::InvalidPayload(bounded_error(e.to_string())))?;
        Event::from_value(topic, value)
    }

    /// The typed event of type `event_type` (`order.<action>`, `inventory.updated`,
    /// `product.created|updated`) from a decoded value: the one step every record shape
    /// ends in.
    pub fn from_value(event_type: &str, value: serde_json::Value) -> Result<Event, ParseError> {
        let kind = EventKind::of(event_type)?;
        // serde would also read a struct from a JSON array; events are objects only.
        if !value.is_object() {
            return Err(ParseError::InvalidPayload("expected a JSON object".to_owned()));
        }
        let invalid = |e: serde_json::Error| ParseError::InvalidPayload(bounded_error(e.to_string()));
        match kind {
            EventKind::Order(action) => {
                let mut order: OrderEvent = serde_json::from_value(value).map_err(invalid)?;
                if order.status.is_empty() && action == "cancelled" {
                    order.status = "cancelled".to_owned();
                }
                non_empty("orderId", &order.order_id)?;
                non_empty("buyerId", &order.buyer_id)?;
                non_empty("status", &order.status)?;
                Ok(Event::Order {
                    action: action.to_owned(),
                    order,
                })
            }
            EventKind::Inventory => {
                let inv: InventoryEvent = serde_json::from_value(value).map_err(invalid)?;
                non_empty("productId", &inv.product_id)?;
                Ok(Event::Inventory(inv))
            }
            EventKind::Product(action) => {
                let product: ProductEvent = serde_json::from_value(value).map_err(invalid)?;
                non_empty("productId", &product.product_id)?;
                if action == ProductAction::Created {
                    non_empty("name", product.name.as_deref().unwrap_or(""))?;
                }
                Ok(Event::Product { action, product })
            }
        }
    }

    /// The dotted type, e.g. `order.updated`.
    pub fn event_type(&self) -> String {
        match self {
            Event::Order { action, .. } => format!("order.{action}"),
            Event::Inventory(_) => "inventory.updated".to_owned(),
            Event::Product { action, .. } => format!("product.{}", action.as_str()),
        }
    }

    /// The payload as the JSON clients receive in `data`.
    pub fn data(&self) -> serde_json::Value {
        // Serializing plain structs of strings and numbers cannot fail.
        match self {
            Event::Order { order, .. } => serde_json::to_value(order),
            Event::Inventory(inv) => serde_json::to_value(inv),
            Event::Product { product, .. } => serde_json::to_value(product),
        }
        .unwrap_or(serde_json::Value::Null)
    }
}

/// The event types the bridge knows, told from their dotted name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind<'a> {
    /// `order.<action>` with this action.
    Order(&'a str),
    /// `inventory.updated`.
    Inventory,
    /// `product.created` / `product.updated`.
    Product(ProductAction),
}

impl<'a> EventKind<'a> {
    /// The kind of `event_type`, or [`ParseError::UnknownTopic`].
    pub fn of(event_type: &'a str) -> Result<EventKind<'a>, ParseError> {
        let unknown = || ParseError::UnknownTopic(event_type.to_owned());
        let (family, action) = event_type.split_once('.').ok_or_else(unknown)?;
        match (family, action) {
            ("order", a) if is_action(a) => Ok(EventKind::Order(a)),
            ("inventory", "updated") => Ok(EventKind::Inventory),
            ("product", "created") => Ok(EventKind::Product(ProductAction::Created)),
            ("product", "updated") => Ok(EventKind::Product(ProductAction::Updated)),
            _ => Err(unknown()),
        }
    }
}

/// How urgent a notification is, for the client's UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Informational.
    Low,
    /// Worth a toast.
    Normal,
    /// Needs attention (cancellations, out of stock).
    High,
}

/// The one payload shape every socket event carries.
// `D` is the type of `data`: any JSON in the service, each event's own type in the
// published contract (`crate::contract`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "{D}Envelope")]
pub struct Envelope<D = serde_json::Value> {
    /// Unique and stable per source record (`topic:partition:offset` for Kafka): clients de-duplicate by it.
    pub id: String,
    /// The dotted event type, e.g. `order.updated` or `inventory.low-stock`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the event happened (RFC 3339, UTC).
    pub occurred_at: String,
    /// The event's fields.
    pub data: D,
    /// A sentence for people, added by routing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How urgent, added by routing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Where this envelope sits in its room's replay history, set when it is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
}

/// An envelope's place in a room's history: the `seq`-th envelope of `room` in `epoch`.
/// Clients keep the last one per room and hand it back when they reconnect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, JsonSchema)]
pub struct Position {
    /// The room the envelope was sent to.
    pub room: String,
    /// The room history's epoch; a new one means earlier positions cannot be replayed.
    pub epoch: String,
    /// 1, 2, 3… within the epoch.
    pub seq: u64,
}

/// What a product room knows of its product: the fields of its `inventory.updated` and
/// `product.*` events merged, later over earlier (see `routing::product_state`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductState {
    /// The product's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    /// Units in stock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock: Option<i64>,
    /// Units in stock before the last change, when the producer said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_stock: Option<i64>,
    /// Display name (`name` of `product.*`, `productName` of `inventory.updated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Stock keeping unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Unit price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    /// When it last changed: the record's `updatedAt`, else the record's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// The `data` of a `notification` envelope (`POST /realtime/test/notification`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationData {
    /// The user it was sent to.
    pub user_id: String,
    /// A short title.
    pub title: String,
    /// The text.
    pub message: String,
}

/// A string with something in it besides whitespace (what the parser calls non-empty).
pub(crate) const NOT_BLANK: &str = "\\S";

/// The schema of an id field: producers may write a string or an integer
/// ([`id_text`]); clients always get a string.
fn id_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    if generator.contract().is_deserialize() {
        schemars::json_schema!({"anyOf": [{"type": "string", "pattern": NOT_BLANK}, {"type": "integer"}]})
    } else {
        schemars::json_schema!({"type": "string", "minLength": 1})
    }
}

/// Where a record came from; gives the envelope its stable id and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Stable unique id for the record.
    pub id: String,
    /// RFC 3339 time of the record.
    pub occurred_at: String,
}

impl Source {
    /// The source of a Kafka record: its coordinates are its identity.
    pub fn kafka(topic: &str, partition: i32, offset: i64, timestamp_ms: Option<i64>) -> Source {
        Source {
            id: format!("{topic}:{partition}:{offset}"),
            occurred_at: rfc3339_millis(timestamp_ms),
        }
    }

    /// The source of a REST broadcast: a fresh random id (`rest:<hex>`), now.
    pub fn rest() -> Source {
        Source {
            id: format!("rest:{:032x}", rand::random::<u128>()),
            occurred_at: rfc3339_millis(None),
        }
    }
}

/// The last millisecond RFC 3339 can write (9999-12-31T23:59:59.999Z).
const RFC3339_MAX_MS: u64 = 253_402_300_799_999;

/// Formats epoch milliseconds as RFC 3339 UTC; a time it cannot write (absent, negative, or
/// past year 9999 — a producer writing microseconds, say) is replaced by now, the time the
/// bridge saw it, rather than failing: the timestamp comes from outside.
pub fn rfc3339_millis(ms: Option<i64>) -> String {
    let t = match ms.and_then(|ms| u64::try_from(ms).ok()).filter(|ms| *ms <= RFC3339_MAX_MS) {
        Some(ms) => std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        None => std::time::SystemTime::now(),
    };
    // humantime's Display fails (and `to_string` would panic) only beyond year 9999,
    // excluded above; `write!` keeps even that from panicking.
    let mut out = String::with_capacity(24);
    let _ = std::fmt::Write::write_fmt(&mut out, format_args!("{}", humantime::format_rfc3339_millis(t)));
    out
}

fn is_action(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 64
        && a.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn non_empty(field: &'static str, v: &str) -> Result<(), ParseError> {
    if v.trim().is_empty() {
        Err(ParseError::EmptyField(field))
    } else {
        Ok(())
    }
}

/// An integer, also when written `5.0` (JSON has one number type, and JSON Schema counts
/// `5.0` as an integer); `5.5` is refused.
pub fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(i64),
        Float(f64),
    }
    match Number::deserialize(d).map_err(|_| serde::de::Error::custom("expected an integer"))? {
        Number::Int(i) => Ok(i),
        // The bounds keep the cast exact: every integer below 2^53 is an f64 exactly.
        Number::Float(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => Ok(f as i64),
        Number::Float(_) => Err(serde::de::Error::custom("expected an integer")),
    }
}

/// [`whole_number`], optional (`null` or absent is `None`).
pub fn opt_whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "whole_number")] i64);
    Ok(Option::<Wrap>::deserialize(d)?.map(|Wrap(n)| n))
}

/// Ids arrive as strings from some services and as integers from others; rooms need text.
fn id_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Int(i64),
        Uint(u64),
    }
    Ok(
        match Id::deserialize(d).map_err(|_| serde::de::Error::custom("expected a string or integer id"))? {
            Id::Text(s) => s,
            Id::Int(i) => i.to_string(),
            Id::Uint(u) => u.to_string(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(topic: &str, v: serde_json::Value) -> Result<Event, ParseError> {
        Event::parse(topic, Some(v.to_string().as_bytes()))
    }

    #[test]
    fn an_error_quoting_a_huge_value_is_bounded() {
        // serde quotes the mistyped value whole: 400 000 quote characters become 800 000
        // escaped bytes in its message.
        let huge = "\"".repeat(400_000);
        let Err(ParseError::InvalidPayload(message)) = parse(
            "order.updated",
            json!({"orderId": "o1", "buyerId": "u1", "status": "paid", "totalAmount": huge}),
        ) else {
            panic!("a string amount is invalid");
        };
        assert!(message.chars().count() <= MAX_ERROR_CHARS + 1, "{} chars", message.chars().count());
        assert!(message.starts_with("invalid type: string"), "{message}");
        assert!(message.ends_with('…'));
        assert_eq!(bounded_error("short".to_owned()), "short");
        assert_eq!(bounded_error("é".repeat(MAX_ERROR_CHARS + 5)).chars().count(), MAX_ERROR_CHARS + 1);
    }

    #[test]
    fn any_record_timestamp_gives_a_time() {
        assert_eq!(rfc3339_millis(Some(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(Some(1_795_359_845_123)), "2026-11-22T15:04:05.123Z");
        assert_eq!(rfc3339_millis(Some(RFC3339_MAX_MS as i64)), "9999-12-31T23:59:59.999Z");
        // Microseconds instead of milliseconds (`Date.now() * 1000`), negative, extremes:
        // the time the bridge saw the record, never a panic.
        let now_year = &rfc3339_millis(None)[..4];
        for odd in [1_795_359_845_123_000, RFC3339_MAX_MS as i64 + 1, i64::MAX, -1, i64::MIN] {
            let t = rfc3339_millis(Some(odd));
            assert_eq!(&t[..4], now_year, "{odd} -> {t}");
        }
    }

    proptest::proptest! {
        #[test]
        fn a_kafka_source_is_built_from_any_coordinates(topic in ".{0,300}", partition in proptest::prelude::any::<i32>(), offset in proptest::prelude::any::<i64>(), ts in proptest::option::of(proptest::prelude::any::<i64>())) {
            let source = Source::kafka(&topic, partition, offset, ts);
            proptest::prop_assert!(source.occurred_at.ends_with('Z'));
        }
    }

    #[test]
    fn stock_is_a_whole_number_however_written() {
        let e = parse("inventory.updated", json!({"productId": "p", "stock": 5.0, "previousStock": 7})).unwrap();
        let Event::Inventory(inv) = e else { panic!() };
        assert_eq!((inv.stock, inv.previous_stock), (5, Some(7)));
        let e = parse("inventory.updated", json!({"productId": "p", "stock": 1, "previousStock": null})).unwrap();
        let Event::Inventory(inv) = e else { panic!() };
        assert_eq!(inv.previous_stock, None);
        assert!(parse("inventory.updated", json!({"productId": "p", "stock": 5.5})).is_err());
        assert!(parse("inventory.updated", json!({"productId": "p", "stock": 1e300})).is_err());
    }

    #[test]
    fn order_with_user_id_alias_and_numeric_ids() {
        let e = parse(
            "order.updated",
            json!({"orderId": 123, "userId": 42, "status": "shipped", "previousStatus": "paid", "extra": true}),
        )
        .unwrap();
        let Event::Order { action, order } = e else {
            panic!("not an order")
        };
        assert_eq!(action, "updated");
        assert_eq!(order.order_id, "123");
        assert_eq!(order.buyer_id, "42");
        assert_eq!(order.status, "shipped");
        assert_eq!(order.previous_status.as_deref(), Some("paid"));
    }

    #[test]
    fn order_requires_ids_and_status() {
        assert!(
            matches!(parse("order.updated", json!({"buyerId": "u1", "status": "paid"})), Err(ParseError::InvalidPayload(m)) if m.contains("orderId"))
        );
        assert!(
            matches!(parse("order.updated", json!({"orderId": "o1", "status": "paid"})), Err(ParseError::InvalidPayload(m)) if m.contains("buyerId"))
        );
        assert_eq!(
            parse("order.updated", json!({"orderId": "o1", "buyerId": "u1"})),
            Err(ParseError::EmptyField("status"))
        );
        assert_eq!(
            parse("order.created", json!({"orderId": "o1", "buyerId": " ", "status": "x"})),
            Err(ParseError::EmptyField("buyerId"))
        );
        assert!(matches!(
            parse("order.created", json!({"orderId": {"a": 1}, "buyerId": "u", "status": "x"})),
            Err(ParseError::InvalidPayload(_))
        ));
    }

    #[test]
    fn cancelled_defaults_its_status() {
        let Event::Order { order, .. } = parse(
            "order.cancelled",
            json!({"orderId": "o1", "buyerId": "u1", "reason": "out of stock"}),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(order.status, "cancelled");
    }

    #[test]
    fn new_order_topics_are_orders() {
        let e = parse("order.returned", json!({"orderId": "o1", "buyerId": "u1", "status": "returned"})).unwrap();
        assert_eq!(e.event_type(), "order.returned");
    }

    #[test]
    fn inventory_and_product() {
        let e = parse(
            "inventory.updated",
            json!({"productId": "p1", "stock": 3, "previousStock": 9, "sku": "SKU-1"}),
        )
        .unwrap();
        assert_eq!(e.event_type(), "inventory.updated");
        assert!(matches!(
            parse("inventory.updated", json!({"productId": "p1", "stock": "3"})),
            Err(ParseError::InvalidPayload(_))
        ));
        assert!(
            matches!(parse("inventory.updated", json!({"productId": "p1"})), Err(ParseError::InvalidPayload(m)) if m.contains("stock"))
        );
        assert_eq!(
            parse("product.created", json!({"productId": "p1"})),
            Err(ParseError::EmptyField("name"))
        );
        assert!(parse("product.updated", json!({"productId": "p1", "price": 9.5})).is_ok());
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        assert_eq!(Event::parse("order.updated", None), Err(ParseError::EmptyPayload));
        assert_eq!(Event::parse("order.updated", Some(b"")), Err(ParseError::EmptyPayload));
        assert!(matches!(
            Event::parse("order.updated", Some(b"\xff garbage")),
            Err(ParseError::InvalidPayload(_))
        ));
        assert!(matches!(
            Event::parse("order.updated", Some(b"[1,2]")),
            Err(ParseError::InvalidPayload(_))
        ));
        assert!(matches!(
            Event::parse("inventory.reserved", Some(b"{}")),
            Err(ParseError::UnknownTopic(_))
        ));
        assert!(matches!(
            Event::parse("order.Bad Name", Some(b"{}")),
            Err(ParseError::UnknownTopic(_))
        ));
        assert!(matches!(Event::parse("orders", Some(b"{}")), Err(ParseError::UnknownTopic(_))));
    }

    #[test]
    fn data_uses_camel_case_and_normalised_buyer() {
        let e = parse(
            "order.created",
            json!({"orderId": "o1", "userId": "u1", "status": "pending", "totalAmount": 12.5}),
        )
        .unwrap();
        assert_eq!(
            e.data(),
            json!({"orderId": "o1", "buyerId": "u1", "status": "pending", "totalAmount": 12.5})
        );
    }

    #[test]
    fn kafka_source_is_stable() {
        let a = Source::kafka("order.updated", 2, 41, Some(0));
        assert_eq!(a, Source::kafka("order.updated", 2, 41, Some(0)));
        assert_eq!(a.id, "order.updated:2:41");
        assert_eq!(a.occurred_at, "1970-01-01T00:00:00.000Z");
    }
}
