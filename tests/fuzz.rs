//! Property tests ("fuzzing" on stable Rust) of everything that parses untrusted input:
//! Kafka record values, REST bodies, and what routing makes of any valid event.
//!
//! CI runs the default 256 cases per property; a long run:
//! `PROPTEST_CASES=200000 cargo test --release --test fuzz`.

use proptest::prelude::*;
use realtime_bridge::events::Event;
use realtime_bridge::http::broadcast::{AdminBroadcast, InventoryBroadcast, NotificationRequest, OrderBroadcast};
use realtime_bridge::http::error::{Validate, parse};
use realtime_bridge::routing::{RoutingRules, route};
use serde_json::Value;

const TOPICS: [&str; 9] = [
    "order.created",
    "order.updated",
    "order.cancelled",
    "order.returned",
    "inventory.updated",
    "product.created",
    "product.updated",
    "product.deleted",
    "weird",
];

/// Any JSON value, nested a few levels.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field names: mostly the ones the parsers look for, so values reach the typed code.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "orderId",
            "buyerId",
            "userId",
            "status",
            "previousStatus",
            "productId",
            "stock",
            "previousStock",
            "sku",
            "productName",
            "name",
            "price",
            "title",
            "message",
            "event",
            "data",
            "totalAmount",
        ])
        .prop_map(str::to_owned),
        ".{0,8}",
    ]
}

fn rules() -> RoutingRules {
    RoutingRules { low_stock_threshold: 5 }
}

proptest! {
    #[test]
    fn any_bytes_on_any_topic_parse_or_fail_cleanly(topic in prop::sample::select(TOPICS.to_vec()), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Event::parse(topic, Some(&bytes));
    }

    #[test]
    fn any_json_on_any_topic_parses_or_fails_and_every_event_routes(topic in prop::sample::select(TOPICS.to_vec()), value in json()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        if let Ok(event) = Event::parse(topic, Some(&bytes)) {
            let source = realtime_bridge::events::Source::kafka(topic, 0, 1, Some(0));
            let routes = route(&event, &source, rules());
            prop_assert!(!routes.is_empty(), "every event goes somewhere");
            for r in routes {
                prop_assert!(!r.room.is_empty() && !r.event.is_empty());
                serde_json::to_string(&r.envelope).unwrap();
            }
        }
    }

    #[test]
    fn rest_bodies_are_accepted_or_refused_with_a_4xx(value in json(), raw in prop::collection::vec(any::<u8>(), 0..128)) {
        let bytes = serde_json::to_vec(&value).unwrap();
        for body in [bytes.as_slice(), raw.as_slice()] {
            check::<NotificationRequest>(body)?;
            check::<OrderBroadcast>(body)?;
            check::<InventoryBroadcast>(body)?;
            check::<AdminBroadcast>(body)?;
        }
    }
}

fn check<T: serde::de::DeserializeOwned + Validate>(body: &[u8]) -> Result<(), TestCaseError> {
    if let Err(e) = parse::<T>(body).and_then(|v| v.validate().map(|_| v)) {
        prop_assert!(e.status.is_client_error(), "{} for {:?}", e.status, String::from_utf8_lossy(body));
        prop_assert!(!e.body.error.is_empty());
    }
    Ok(())
}
