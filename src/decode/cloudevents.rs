//! CloudEvents, Kafka protocol binding 1.0: structured mode (the `content-type` header
//! says `application/cloudevents…`; the value is the whole event) and binary mode (every
//! attribute a `ce_<name>` header; the value is `data`).

use base64::Engine as _;
use serde_json::{Map, Value};

use super::DecodeError;

/// The most attributes taken from a record's headers (a record's headers come from outside).
const MAX_ATTRIBUTES: usize = 64;

fn content_type<'a>(headers: &'a [(&'a str, &'a [u8])]) -> Option<&'a [u8]> {
    headers
        .iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| *v)
}

/// Whether the record is a structured-mode CloudEvent.
pub fn is_structured(headers: &[(&str, &[u8])]) -> bool {
    content_type(headers)
        .is_some_and(|ct| ct.len() >= 23 && ct[..23].eq_ignore_ascii_case(b"application/cloudevents") && !ct[23..].starts_with(b"-batch"))
}

/// A binary-mode CloudEvent's attributes (`ce_specversion` present), `content-type` as
/// `datacontenttype`; `None` when the record is not one.
pub fn binary_attributes(headers: &[(&str, &[u8])]) -> Option<Map<String, Value>> {
    if !headers.iter().any(|(k, _)| *k == "ce_specversion") {
        return None;
    }
    let mut attributes = Map::new();
    for (name, value) in headers
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("ce_")?, v)))
        .take(MAX_ATTRIBUTES)
    {
        if let Ok(text) = std::str::from_utf8(value) {
            attributes.insert(name.to_owned(), Value::String(text.to_owned()));
        }
    }
    if let Some(ct) = content_type(headers).and_then(|ct| std::str::from_utf8(ct).ok()) {
        attributes.insert("datacontenttype".to_owned(), Value::String(ct.to_owned()));
    }
    Some(attributes)
}

/// A structured-mode event's `data` (or `data_base64` read as JSON) and its other attributes.
pub fn structured(payload: &[u8]) -> Result<(Value, Map<String, Value>), DecodeError> {
    let error = |reason: &str| DecodeError::CloudEvents(reason.to_owned());
    let event: Value =
        serde_json::from_slice(payload).map_err(|e| DecodeError::CloudEvents(crate::events::bounded_error(e.to_string())))?;
    let Value::Object(mut attributes) = event else {
        return Err(error("a structured-mode event is a JSON object"));
    };
    if !attributes.get("specversion").is_some_and(Value::is_string) {
        return Err(error("the event has no specversion"));
    }
    let data = match (attributes.remove("data"), attributes.remove("data_base64")) {
        (Some(data), None) => data,
        (None, Some(Value::String(encoded))) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| DecodeError::CloudEvents(format!("data_base64: {e}")))?;
            serde_json::from_slice(&bytes).map_err(|e| DecodeError::CloudEvents(format!("data_base64 is not JSON: {e}")))?
        }
        (None, None) => return Err(error("the event has no data")),
        _ => return Err(error("data and data_base64 are exclusive (data_base64 is a string)")),
    };
    Ok((data, attributes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn modes_are_told_by_headers() {
        assert!(is_structured(&[("content-type", b"application/cloudevents+json; charset=UTF-8")]));
        assert!(is_structured(&[("Content-Type", b"application/CloudEvents+json")]));
        assert!(!is_structured(&[("content-type", b"application/cloudevents-batch+json")]));
        assert!(!is_structured(&[("content-type", b"application/json")]));
        let attrs = binary_attributes(&[
            ("ce_specversion", b"1.0"),
            ("ce_type", b"OrderPlaced"),
            ("content-type", b"application/json"),
            ("other", b"x"),
        ])
        .unwrap();
        assert_eq!(
            Value::Object(attrs),
            json!({"specversion": "1.0", "type": "OrderPlaced", "datacontenttype": "application/json"})
        );
        assert_eq!(binary_attributes(&[("ce_type", b"x")]), None);
    }

    #[test]
    fn structured_data_and_its_refusals() {
        let (data, attrs) = structured(br#"{"specversion":"1.0","type":"t","data":{"a":1}}"#).unwrap();
        assert_eq!((data, attrs.get("type")), (json!({"a": 1}), Some(&json!("t"))));
        let (data, _) = structured(br#"{"specversion":"1.0","data_base64":"eyJhIjoxfQ=="}"#).unwrap();
        assert_eq!(data, json!({"a": 1}));
        for bad in [
            &b"[]"[..],
            b"{}",
            br#"{"specversion":"1.0"}"#,
            br#"{"specversion":"1.0","data_base64":"!"}"#,
            b"\xff",
        ] {
            assert!(matches!(structured(bad), Err(DecodeError::CloudEvents(_))), "{bad:?}");
        }
    }
}
