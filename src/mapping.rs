//! Which event a decoded record is: the sources of `EVENT_MAPPING_FILE`, then the built-in
//! one that reads the bridge's own topics (`order.<action>`, `inventory.updated`,
//! `product.created|updated`) — both in the same structures, so there is one code path.
//!
//! A source matches a record's topic (an exact name, or a regex starting with `^`); the
//! first that matches says the event type (fixed, or read from a header, a field of the
//! value, a CloudEvents attribute or the topic, optionally translated by `[source.events]`)
//! and where each event field is read from (`[source.fields]`: a JSON Pointer into the
//! decoded value, the record key, a header, a CloudEvents attribute). Fields not listed keep
//! their standard names. Pure: no I/O once loaded.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

use crate::events::{Event, EventKind, ParseError};

/// The built-in source: the bridge's own topics, whose name is the event type.
const BUILT_IN: &str = r#"
[[source]]
topic = "^(order|inventory|product)\\."
event = "{topic}"
"#;

/// Every field name the typed events read (`userId` is `buyerId`'s alias).
const EVENT_FIELDS: [&str; 17] = [
    "orderId",
    "buyerId",
    "userId",
    "status",
    "previousStatus",
    "totalAmount",
    "reason",
    "createdAt",
    "updatedAt",
    "cancelledAt",
    "productId",
    "stock",
    "previousStock",
    "sku",
    "productName",
    "name",
    "price",
];

/// The most sources a mapping file may hold (each record is matched against them in order).
const MAX_SOURCES: usize = 256;

/// Why a mapping file was refused: the line and the key, when known.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct MappingFileError(pub String);

/// Where a record stands, besides its decoded value: what a mapping may read.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    /// The record's topic.
    pub topic: &'a str,
    /// The record's key.
    pub key: Option<&'a [u8]>,
    /// The record's headers, in order (a repeated name: the last one counts).
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The CloudEvents attributes, when the record is a CloudEvent.
    pub cloud_event: Option<&'a Map<String, Value>>,
}

impl Meta<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        let (_, value) = self.headers.iter().rev().find(|(k, _)| *k == name)?;
        std::str::from_utf8(value).ok()
    }

    fn ce(&self, name: &str) -> Option<Value> {
        self.cloud_event?.get(name).cloned()
    }
}

/// One place a value is read from.
#[derive(Debug, Clone, PartialEq)]
enum From {
    Topic,
    Key,
    Header(String),
    Ce(String),
    Field(String),
}

impl From {
    fn read(&self, meta: &Meta<'_>, value: &Value) -> Option<Value> {
        match self {
            From::Topic => Some(Value::String(meta.topic.to_owned())),
            From::Key => std::str::from_utf8(meta.key?).ok().map(|k| Value::String(k.to_owned())),
            From::Header(name) => meta.header(name).map(|h| Value::String(h.to_owned())),
            From::Ce(name) => meta.ce(name),
            From::Field(pointer) => value.pointer(pointer).filter(|v| !v.is_null()).cloned(),
        }
    }

    fn describe(&self) -> String {
        match self {
            From::Topic => "{topic}".to_owned(),
            From::Key => "the record key".to_owned(),
            From::Header(name) => format!("header {name}"),
            From::Ce(name) => format!("CloudEvents attribute {name}"),
            From::Field(pointer) => pointer.clone(),
        }
    }

    /// `{topic}`, `{key}`, `{header:NAME}`, `{ce:NAME}`, `{field:/pointer}` (or, for a
    /// field, a bare `/pointer`).
    fn parse_placeholder(inner: &str) -> Result<From, String> {
        let named = |prefix: &str| inner.strip_prefix(prefix).filter(|n| !n.is_empty()).map(str::to_owned);
        if inner == "topic" {
            Ok(From::Topic)
        } else if inner == "key" {
            Ok(From::Key)
        } else if let Some(name) = named("header:") {
            Ok(From::Header(name))
        } else if let Some(name) = named("ce:") {
            Ok(From::Ce(name))
        } else if let Some(pointer) = inner.strip_prefix("field:") {
            pointer_of(pointer).map(From::Field)
        } else {
            Err(format!(
                "{{{inner}}} is not one of {{topic}}, {{key}}, {{header:NAME}}, {{ce:NAME}}, {{field:/json/pointer}}"
            ))
        }
    }
}

fn pointer_of(text: &str) -> Result<String, String> {
    if text.starts_with('/') {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a JSON Pointer (RFC 6901: it starts with /)"))
    }
}

/// The event template: literal text and placeholders, e.g. `{header:eventType}`,
/// `inventory.updated` or `order.{field:/action}`.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Read(From),
}

fn parse_template(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let close = rest[open..].find('}').ok_or_else(|| format!("{text:?}: a {{ without its }}"))? + open;
        parts.push(Part::Read(From::parse_placeholder(&rest[open + 1..close])?));
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("{text:?}: a }} without its {{"));
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    if parts.is_empty() {
        return Err("empty".to_owned());
    }
    Ok(parts)
}

/// Which topics a source takes.
#[derive(Debug, Clone)]
enum Topic {
    Exact(String),
    Pattern(regex::Regex),
}

impl Topic {
    fn matches(&self, topic: &str) -> bool {
        match self {
            Topic::Exact(name) => name == topic,
            Topic::Pattern(re) => re.is_match(topic),
        }
    }

    fn subscription(&self) -> String {
        match self {
            Topic::Exact(name) => name.clone(),
            Topic::Pattern(re) => re.as_str().to_owned(),
        }
    }
}

/// One `[[source]]`.
#[derive(Debug, Clone)]
struct Source {
    topic: Topic,
    event: Vec<Part>,
    events: Option<BTreeMap<String, String>>,
    /// Event field → where it is read from: the first place that has it (the file gives one,
    /// or a list).
    fields: Vec<(String, Vec<From>)>,
    /// The line of `[[source]]` in its file (0: built in).
    line: usize,
}

/// The sources, the file's first, then the built-in one.
#[derive(Debug, Clone)]
pub struct Mapping {
    sources: Vec<Source>,
    file_sources: usize,
}

/// Why a record did not become an event, naming the step.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    /// No source takes the record's topic.
    #[error("no source for topic {0}")]
    NoSource(String),
    /// The source's `event` read nothing.
    #[error("event: {0} is missing")]
    EventMissing(String),
    /// `[source.events]` does not list what `event` yielded.
    #[error("event {0} is not in [source.events]")]
    NotListed(String),
    /// A listed field's place has nothing, and the event needs it.
    #[error("{field}: {from} is missing")]
    FieldMissing {
        /// The event field.
        field: String,
        /// Where the mapping reads it.
        from: String,
    },
    /// The typed event refused the value.
    #[error(transparent)]
    Event(#[from] ParseError),
}

// The file's syntax, as read; checked into [`Source`] with the lines kept.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    source: Vec<Spanned<SourceDoc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceDoc {
    topic: Spanned<String>,
    event: Spanned<String>,
    #[serde(default)]
    events: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    fields: BTreeMap<Spanned<String>, Spanned<FieldDoc>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FieldDoc {
    One(String),
    FirstOf(Vec<String>),
}

impl Mapping {
    /// The built-in source only (no `EVENT_MAPPING_FILE`).
    pub fn built_in() -> Mapping {
        Mapping::parse("", "").expect("the built-in mapping is valid")
    }

    /// Reads and checks a mapping file; the built-in source is added after its own.
    pub fn load(path: &str) -> Result<Mapping, MappingFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| MappingFileError(format!("{path:?}: {e}")))?;
        Mapping::parse(path, &text)
    }

    /// Checks a mapping file's text (`name` names it in errors).
    pub fn parse(name: &str, text: &str) -> Result<Mapping, MappingFileError> {
        let mut sources = read_sources(name, text)?;
        if sources.len() > MAX_SOURCES {
            return Err(MappingFileError(format!("{name}: more than {MAX_SOURCES} sources")));
        }
        let file_sources = sources.len();
        let built_in = read_sources("(built in)", BUILT_IN).map_err(|e| MappingFileError(format!("built-in mapping: {e}")))?;
        sources.extend(built_in.into_iter().map(|s| Source { line: 0, ..s }));
        Ok(Mapping { sources, file_sources })
    }

    /// The topics the file's sources read, to consume besides `KAFKA_TOPICS`.
    pub fn subscriptions(&self) -> Vec<String> {
        self.sources[..self.file_sources].iter().map(|s| s.topic.subscription()).collect()
    }

    /// The event a decoded record is.
    pub fn apply(&self, meta: &Meta<'_>, mut value: Value) -> Result<Event, MapError> {
        let source = self
            .sources
            .iter()
            .find(|s| s.topic.matches(meta.topic))
            .ok_or_else(|| MapError::NoSource(meta.topic.to_owned()))?;
        let said = render(&source.event, meta, &value)?;
        let event_type = match &source.events {
            Some(events) => events.get(&said).cloned().ok_or(MapError::NotListed(said))?,
            None => said,
        };
        let missing = source.place_fields(meta, &mut value);
        Event::from_value(&event_type, value).map_err(|error| {
            // A field the mapping could not find is the reason, when it is what the event lacks.
            let text = error.to_string();
            missing
                .into_iter()
                .find(|(field, _)| text.contains(&format!("`{field}`")) || error == ParseError::EmptyField(field_name(field)))
                .map_or(MapError::Event(error), |(field, from)| MapError::FieldMissing { field, from })
        })
    }

    /// How many sources came from the file.
    pub fn file_sources(&self) -> usize {
        self.file_sources
    }

    /// The line of the source that takes `topic` (0: the built-in one), for `check-mapping`.
    pub fn source_line(&self, topic: &str) -> Option<usize> {
        self.sources.iter().find(|s| s.topic.matches(topic)).map(|s| s.line)
    }
}

/// The static name of an event field (for comparing with [`ParseError::EmptyField`]).
fn field_name(field: &str) -> &'static str {
    EVENT_FIELDS.iter().find(|f| **f == field).copied().unwrap_or("")
}

impl Source {
    /// Writes each listed field under its standard name (read from the value as it was
    /// decoded, so a mapping may swap names); returns the fields with nothing at their place.
    fn place_fields(&self, meta: &Meta<'_>, value: &mut Value) -> Vec<(String, String)> {
        if self.fields.is_empty() {
            return Vec::new();
        }
        let read: Vec<(&str, Result<Value, String>)> = self
            .fields
            .iter()
            .map(|(field, places)| {
                let found = places.iter().find_map(|p| p.read(meta, value));
                let describe = || places.iter().map(From::describe).collect::<Vec<_>>().join(" or ");
                (field.as_str(), found.ok_or_else(describe))
            })
            .collect();
        let Some(object) = value.as_object_mut() else {
            return Vec::new();
        };
        let mut missing = Vec::new();
        for (field, found) in read {
            match found {
                Ok(v) => {
                    object.insert(field.to_owned(), v);
                }
                Err(from) => {
                    // Not the value's own field of that name: the mapping says where it is.
                    object.remove(field);
                    missing.push((field.to_owned(), from));
                }
            }
        }
        missing
    }
}

fn render(parts: &[Part], meta: &Meta<'_>, value: &Value) -> Result<String, MapError> {
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Text(t) => out.push_str(t),
            Part::Read(from) => match from.read(meta, value) {
                Some(Value::String(s)) => out.push_str(&s),
                Some(other @ (Value::Number(_) | Value::Bool(_))) => out.push_str(&other.to_string()),
                _ => return Err(MapError::EventMissing(from.describe())),
            },
        }
    }
    Ok(out)
}

/// The line (1-based) of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

fn read_sources(name: &str, text: &str) -> Result<Vec<Source>, MappingFileError> {
    // toml's message names the line, the column and the key (a missing `topic`, an unknown key).
    let doc: FileDoc = toml::from_str(text).map_err(|e| MappingFileError(format!("{name}: {}", e.to_string().trim_end())))?;
    let at =
        |offset: usize, key: &str, reason: String| MappingFileError(format!("{name}: line {}: {key}: {reason}", line_of(text, offset)));
    doc.source
        .into_iter()
        .map(|spanned| {
            let line = line_of(text, spanned.span().start);
            let doc = spanned.into_inner();
            let topic = read_topic(doc.topic.get_ref()).map_err(|r| at(doc.topic.span().start, "topic", r))?;
            let event = parse_template(doc.event.get_ref()).map_err(|r| at(doc.event.span().start, "event", r))?;
            let events = read_events(&doc.events).map_err(|(offset, r)| at(offset, "events", r))?;
            if events.is_none() {
                check_fixed_event(&event).map_err(|r| at(doc.event.span().start, "event", r))?;
            }
            let fields = read_fields(doc.fields).map_err(|(offset, key, r)| at(offset, &format!("fields.{key}"), r))?;
            Ok(Source {
                topic,
                event,
                events,
                fields,
                line,
            })
        })
        .collect()
}

fn read_topic(topic: &str) -> Result<Topic, String> {
    if topic.starts_with('^') {
        regex::Regex::new(topic)
            .map(Topic::Pattern)
            .map_err(|e| format!("{topic:?} is not a valid regex: {e}"))
    } else if topic.is_empty() || topic.len() > 249 || !topic.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        Err(format!("{topic:?} is not a Kafka topic name (or a regex starting with ^)"))
    } else {
        Ok(Topic::Exact(topic.to_owned()))
    }
}

/// A fixed `event` without `[source.events]` must be an event type itself.
fn check_fixed_event(parts: &[Part]) -> Result<(), String> {
    match parts {
        [Part::Text(fixed)] => EventKind::of(fixed).map(|_| ()).map_err(|e| e.to_string()),
        _ => Ok(()),
    }
}

fn read_events(events: &BTreeMap<Spanned<String>, Spanned<String>>) -> Result<Option<BTreeMap<String, String>>, (usize, String)> {
    if events.is_empty() {
        return Ok(None);
    }
    events
        .iter()
        .map(|(said, event_type)| {
            EventKind::of(event_type.get_ref()).map_err(|e| (event_type.span().start, format!("{}: {e}", said.get_ref())))?;
            Ok((said.get_ref().clone(), event_type.get_ref().clone()))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

type FieldError = (usize, String, String);

fn read_fields(fields: BTreeMap<Spanned<String>, Spanned<FieldDoc>>) -> Result<Vec<(String, Vec<From>)>, FieldError> {
    fields
        .into_iter()
        .map(|(field, place)| {
            let offset = field.span().start;
            let field = field.into_inner();
            if !EVENT_FIELDS.contains(&field.as_str()) {
                return Err((offset, field, format!("not an event field (one of {})", EVENT_FIELDS.join(", "))));
            }
            let texts = match place.into_inner() {
                FieldDoc::One(text) => vec![text],
                FieldDoc::FirstOf(texts) if !texts.is_empty() => texts,
                FieldDoc::FirstOf(_) => return Err((offset, field, "an empty list".to_owned())),
            };
            let places = texts
                .iter()
                .map(|t| read_place(t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|r| (offset, field.clone(), r))?;
            Ok((field, places))
        })
        .collect()
}

/// A field's place: a JSON Pointer (`/customer/id`) or a placeholder (`{key}`, `{header:X}`).
fn read_place(text: &str) -> Result<From, String> {
    match text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        Some(inner) => From::parse_placeholder(inner),
        None => pointer_of(text).map(From::Field),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHOP: &str = r#"
[[source]]                        # the first source whose topic matches wins
topic = "shop.orders"
event = "{header:eventType}"
[source.events]
OrderPlaced = "order.created"
OrderShipped = "order.updated"
[source.fields]
orderId = "/id"
buyerId = "/customer/id"
status = "/state"
totalAmount = "/total/amount"

[[source]]
topic = "^stock\\."
event = "inventory.updated"
[source.fields]
productId = "{key}"
stock = ["/level", "/quantity"]
"#;

    fn meta<'a>(topic: &'a str, headers: &'a [(&'a str, &'a [u8])]) -> Meta<'a> {
        Meta {
            topic,
            key: Some(b"p-7"),
            headers,
            cloud_event: None,
        }
    }

    #[test]
    fn a_shop_order_becomes_an_order() {
        let m = Mapping::parse("shop.toml", SHOP).unwrap();
        let headers: &[(&str, &[u8])] = &[("eventType", b"OrderShipped")];
        let value = json!({"id": 1042, "customer": {"id": "u-9"}, "state": "SHIPPED", "total": {"amount": 12.5}});
        let Event::Order { action, order } = m.apply(&meta("shop.orders", headers), value).unwrap() else {
            panic!("not an order");
        };
        assert_eq!(action, "updated");
        assert_eq!(
            (order.order_id.as_str(), order.buyer_id.as_str(), order.status.as_str()),
            ("1042", "u-9", "SHIPPED")
        );
        assert_eq!(order.total_amount, Some(12.5));
    }

    #[test]
    fn reasons_name_the_step() {
        let m = Mapping::parse("shop.toml", SHOP).unwrap();
        let shipped: &[(&str, &[u8])] = &[("eventType", b"OrderShipped")];
        let refunded: &[(&str, &[u8])] = &[("eventType", b"OrderRefunded")];
        let value = json!({"id": 1, "customer": {}, "state": "x"});
        let reason = |t, h, v| m.apply(&meta(t, h), v).unwrap_err().to_string();
        assert_eq!(reason("shop.returns", shipped, value.clone()), "no source for topic shop.returns");
        assert_eq!(reason("shop.orders", shipped, value.clone()), "buyerId: /customer/id is missing");
        assert_eq!(
            reason("shop.orders", refunded, value.clone()),
            "event OrderRefunded is not in [source.events]"
        );
        assert_eq!(reason("shop.orders", &[], value), "event: header eventType is missing");
        // An optional field that is missing is no reason.
        let ok = json!({"id": 1, "customer": {"id": 2}, "state": "x"});
        assert!(m.apply(&meta("shop.orders", shipped), ok).is_ok());
    }

    #[test]
    fn keys_and_lists_of_places() {
        let m = Mapping::parse("shop.toml", SHOP).unwrap();
        let Event::Inventory(inv) = m.apply(&meta("stock.eu", &[]), json!({"quantity": 3})).unwrap() else {
            panic!("not inventory");
        };
        assert_eq!((inv.product_id.as_str(), inv.stock), ("p-7", 3));
    }

    #[test]
    fn the_built_in_source_reads_the_bridges_own_topics() {
        let m = Mapping::built_in();
        assert!(m.subscriptions().is_empty());
        let e = m
            .apply(&meta("order.created", &[]), json!({"orderId": 1, "userId": 2, "status": "new"}))
            .unwrap();
        assert_eq!(e.event_type(), "order.created");
        // Behind a file's sources too.
        let m = Mapping::parse("shop.toml", SHOP).unwrap();
        assert_eq!(m.subscriptions(), vec!["shop.orders".to_owned(), "^stock\\.".to_owned()]);
        assert!(
            m.apply(&meta("inventory.updated", &[]), json!({"productId": "p", "stock": 1}))
                .is_ok()
        );
        assert!(matches!(
            m.apply(&meta("inventory.reserved", &[]), json!({})),
            Err(MapError::Event(ParseError::UnknownTopic(_)))
        ));
        assert_eq!(m.source_line("shop.orders"), Some(2));
        assert_eq!(m.source_line("order.created"), Some(0));
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let err = |text: &str| Mapping::parse("m.toml", text).unwrap_err().to_string();
        let e = err("[[source]]\ntopic = \"shop.orders\"\nevent = \"order.created\"\n[source.fields]\nbuyerID = \"/x\"\n");
        assert!(e.starts_with("m.toml: line 5: fields.buyerID: not an event field"), "{e}");
        let e = err("[[source]]\ntopic = \"^shop(\"\nevent = \"order.created\"\n");
        assert!(e.starts_with("m.toml: line 2: topic:"), "{e}");
        let e = err("[[source]]\ntopic = \"a\"\nevent = \"{headr:x}\"\n");
        assert!(e.starts_with("m.toml: line 3: event:"), "{e}");
        let e = err("[[source]]\ntopic = \"a\"\nevent = \"orders\"\n");
        assert!(e.contains("line 3: event: no event type \"orders\""), "{e}");
        let e = err("[[source]]\ntopic = \"a\"\nevent = \"{header:t}\"\n[source.events]\nX = \"order.Created\"\n");
        assert!(e.contains("line 5: events: X: no event type"), "{e}");
        let e = err("[[source]]\ntopic = \"a\"\nevent = \"order.created\"\n[source.fields]\norderId = \"id\"\n");
        assert!(e.contains("line 5: fields.orderId: \"id\" is not a JSON Pointer"), "{e}");
        // toml's own: a missing key, an unknown key, bad syntax.
        let e = err("[[source]]\nevent = \"order.created\"\n");
        assert!(e.contains("line 1") && e.contains("topic"), "{e}");
        let e = err("[[source]]\ntopic = \"a\"\nevent = \"order.created\"\nevnets = 1\n");
        assert!(e.contains("line 4") && e.contains("evnets"), "{e}");
        let e = err("[[source]\n");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn templates_mix_text_and_placeholders() {
        let m = Mapping::parse(
            "m",
            "[[source]]\ntopic = \"^ce\\\\.\"\nevent = \"order.{field:/action}\"\n[source.fields]\nbuyerId = \"{ce:subject}\"\n",
        )
        .unwrap();
        let ce = json!({"subject": "u-1"});
        let meta = Meta {
            topic: "ce.orders",
            key: None,
            headers: &[],
            cloud_event: ce.as_object(),
        };
        let e = m.apply(&meta, json!({"action": "paid", "orderId": "o", "status": "paid"})).unwrap();
        assert_eq!(e.event_type(), "order.paid");
    }
}
