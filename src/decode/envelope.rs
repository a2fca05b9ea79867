//! Envelopes around a JSON value: Kafka Connect's `JsonConverter` with schemas
//! (`{"schema": …, "payload": …}`) and a JSON string holding a JSON object (Debezium's
//! outbox event router without `table.expand.json.payload`). Unwrapped at most twice: a
//! Connect payload may itself be such a string.

use serde_json::Value;

use super::Envelope;

/// The value inside its envelopes, and the outermost envelope (`outer` when the value
/// came in one already: a CloudEvent).
pub fn unwrap(mut value: Value, outer: Envelope) -> (Value, Envelope) {
    let mut envelope = outer;
    for _ in 0..2 {
        let (inner, found) = match value {
            Value::Object(mut o) if is_connect(&o) => (o.remove("payload").unwrap_or(Value::Null), Envelope::Connect),
            Value::String(ref text) if text.trim_start().starts_with('{') => match serde_json::from_str::<Value>(text) {
                Ok(inner @ Value::Object(_)) => (inner, Envelope::JsonString),
                _ => break,
            },
            _ => break,
        };
        value = inner;
        if envelope == Envelope::None {
            envelope = found;
        }
    }
    (value, envelope)
}

/// Exactly `schema` (an object or null) and `payload`: what `JsonConverter` writes.
fn is_connect(o: &serde_json::Map<String, Value>) -> bool {
    o.len() == 2 && o.contains_key("payload") && o.get("schema").is_some_and(|s| s.is_object() || s.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn connect_and_string_payloads_are_unwrapped() {
        let connect = json!({"schema": {"type": "struct", "fields": []}, "payload": {"orderId": 1}});
        assert_eq!(unwrap(connect, Envelope::None), (json!({"orderId": 1}), Envelope::Connect));
        let outbox = json!("{\"orderId\": 1}");
        assert_eq!(unwrap(outbox, Envelope::None), (json!({"orderId": 1}), Envelope::JsonString));
        let both = json!({"schema": {"type": "string"}, "payload": "{\"orderId\": 1}"});
        assert_eq!(unwrap(both, Envelope::None), (json!({"orderId": 1}), Envelope::Connect));
        // Not envelopes: an event with a field called payload, a string that is not an object.
        let event = json!({"schema": 1, "payload": {}});
        assert_eq!(unwrap(event.clone(), Envelope::None), (event, Envelope::None));
        assert_eq!(unwrap(json!("{not json"), Envelope::None), (json!("{not json"), Envelope::None));
        assert_eq!(unwrap(json!({"a": 1}), Envelope::CloudEventsBinary).1, Envelope::CloudEventsBinary);
    }
}
