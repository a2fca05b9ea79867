//! The routing table: which socket events an [`Event`] becomes, in which rooms.
//!
//! | topic | socket event | room |
//! |---|---|---|
//! | `order.<action>` | `order:<action>` | `user:<buyerId>` |
//! | `order.<action>` | `admin:order:<action>` | `admin:dashboard` |
//! | `inventory.updated` | `inventory:updated` | `inventory:updates` |
//! | `inventory.updated` (stock crosses down to ≤ threshold, > 0) | `admin:inventory:low-stock` | `admin:dashboard` |
//! | `inventory.updated` (stock crosses down to 0) | `admin:inventory:out-of-stock` | `admin:dashboard` |
//! | `product.<created/updated>` | `product:<action>` | `inventory:updates` |
//! | `product.<created/updated>` | `admin:product:<action>` | `admin:dashboard` |
//! | `inventory.updated` | `inventory:updated` | `product:<productId>` |
//! | `product.<created/updated>` | `product:<action>` | `product:<productId>` |
//!
//! A product room exists only for a valid product id ([`valid_product_id`]); a record with
//! another id still reaches `inventory:updates` and the dashboard. Routes to a product room
//! carry the product's new state ([`product_state`]), which the history stores with them.
//!
//! Pure and synchronous, so the whole table is unit-tested below.

use crate::events::{Envelope, Event, InventoryEvent, NotificationData, OrderEvent, Priority, ProductEvent, ProductState, Source};

/// Every admin dashboard socket is in this room.
pub(crate) const ADMIN_ROOM: &str = "admin:dashboard";
/// Storefront clients watching stock levels.
pub(crate) const INVENTORY_ROOM: &str = "inventory:updates";

/// What every user's private room name starts with.
pub(crate) const USER_ROOM_PREFIX: &str = "user:";

/// What every product's room name starts with.
pub(crate) const PRODUCT_ROOM_PREFIX: &str = "product:";

/// Longest product id with a room of its own.
pub const MAX_PRODUCT_ID_LEN: usize = 64;
/// [`valid_product_id`] as a regular expression, for the published schemas.
pub const PRODUCT_ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$";

/// Whether `id` may name a product room (and be subscribed to): 1 to 64 ASCII letters,
/// digits, `-`, `_`, `.` or `:`, starting with a letter or digit (so never `.` or `..`,
/// which a URL path would resolve away).
pub fn valid_product_id(id: &str) -> bool {
    id.len() <= MAX_PRODUCT_ID_LEN
        && id.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The room of one product's watchers.
pub(crate) fn product_room(product_id: &str) -> String {
    format!("{PRODUCT_ROOM_PREFIX}{product_id}")
}

/// The product state a route to a product room carries: the fields of its event that
/// describe the product now (`stock`, `previousStock`, `name`, `sku`, `price`, `updatedAt`
/// — the record's own time when it has none), to be merged over what was known. `None`
/// for routes to other rooms.
pub(crate) fn product_state(route: &Route) -> Option<serde_json::Map<String, serde_json::Value>> {
    if !route.room.starts_with(PRODUCT_ROOM_PREFIX) {
        return None;
    }
    let data = route.envelope.data.as_object()?;
    let text = |key: &str| data.get(key).and_then(serde_json::Value::as_str).map(str::to_owned);
    let whole = |key: &str| data.get(key).and_then(serde_json::Value::as_i64);
    let state = ProductState {
        product_id: text("productId"),
        stock: whole("stock"),
        previous_stock: whole("previousStock"),
        name: text("name").or_else(|| text("productName")),
        sku: text("sku"),
        price: data.get("price").and_then(serde_json::Value::as_f64),
        updated_at: Some(text("updatedAt").unwrap_or_else(|| route.envelope.occurred_at.clone())),
    };
    // Only the fields it has: they are merged over what was known.
    match serde_json::to_value(state) {
        Ok(serde_json::Value::Object(state)) => Some(state),
        _ => None,
    }
}

/// The private room of one user's sockets.
pub(crate) fn user_room(user_id: &str) -> String {
    format!("{USER_ROOM_PREFIX}{user_id}")
}

/// One emit: this envelope, under this socket event name, to this room.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The room name.
    pub room: String,
    /// The Socket.IO event name.
    pub event: String,
    /// The payload.
    pub envelope: Envelope,
}

/// Settings routing depends on.
#[derive(Debug, Clone, Copy)]
pub struct RoutingRules {
    /// Stock at or below which a low-stock alert is raised.
    pub low_stock_threshold: i64,
}

/// Turns one event into the emits it causes, in the order they should be sent.
pub fn route(event: &Event, source: &Source, rules: RoutingRules) -> Vec<Route> {
    let to = Routes {
        source,
        data: event.data(),
        event_type: event.event_type(),
    };
    match event {
        Event::Order { action, order } => {
            let priority = order_priority(action, order);
            vec![
                to.room(
                    &user_room(&order.buyer_id),
                    format!("order:{action}"),
                    Some(buyer_message(action, order)),
                    Some(priority),
                ),
                to.room(
                    ADMIN_ROOM,
                    format!("admin:order:{action}"),
                    Some(admin_order_message(action, order)),
                    Some(priority),
                ),
            ]
        }
        Event::Inventory(inv) => inventory_routes(&to, inv, rules),
        Event::Product { action, product } => product_routes(&to, action.as_str(), product),
    }
}

/// What every route of one event shares: its source, data and type.
struct Routes<'a> {
    source: &'a Source,
    data: serde_json::Value,
    event_type: String,
}

impl Routes<'_> {
    /// `event` to `room`, with this event's type.
    fn room(&self, room: &str, event: String, message: Option<String>, priority: Option<Priority>) -> Route {
        self.typed(room, event, self.event_type.clone(), message, priority)
    }

    /// `event` to `room`, with another type (alerts).
    fn typed(&self, room: &str, event: String, event_type: String, message: Option<String>, priority: Option<Priority>) -> Route {
        Route {
            room: room.to_owned(),
            event,
            envelope: Envelope {
                id: self.source.id.clone(),
                event_type,
                occurred_at: self.source.occurred_at.clone(),
                data: self.data.clone(),
                message,
                priority,
                position: None,
            },
        }
    }
}

fn inventory_routes(to: &Routes<'_>, inv: &InventoryEvent, rules: RoutingRules) -> Vec<Route> {
    let name = product_label(inv);
    let message = || Some(format!("{name}: {} in stock", inv.stock));
    let mut routes = vec![to.room(INVENTORY_ROOM, "inventory:updated".to_owned(), message(), Some(Priority::Low))];
    if valid_product_id(&inv.product_id) {
        routes.push(to.room(
            &product_room(&inv.product_id),
            "inventory:updated".to_owned(),
            message(),
            Some(Priority::Low),
        ));
    }
    if let Some(alert) = stock_alert(inv, rules.low_stock_threshold) {
        let (kind, message, priority) = match alert {
            StockAlert::OutOfStock => ("out-of-stock", format!("{name} is out of stock"), Priority::High),
            StockAlert::LowStock => ("low-stock", format!("{name} is low on stock: {} left", inv.stock), Priority::Normal),
        };
        routes.push(to.typed(
            ADMIN_ROOM,
            format!("admin:inventory:{kind}"),
            format!("inventory.{kind}"),
            Some(message),
            Some(priority),
        ));
    }
    routes
}

fn product_routes(to: &Routes<'_>, action: &str, product: &ProductEvent) -> Vec<Route> {
    let name = product.name.as_deref().unwrap_or(&product.product_id);
    let message = Some(format!("Product {name} {action}"));
    let mut routes = vec![
        to.room(INVENTORY_ROOM, format!("product:{action}"), message.clone(), Some(Priority::Low)),
        to.room(ADMIN_ROOM, format!("admin:product:{action}"), message.clone(), Some(Priority::Low)),
    ];
    if valid_product_id(&product.product_id) {
        routes.push(to.room(
            &product_room(&product.product_id),
            format!("product:{action}"),
            message,
            Some(Priority::Low),
        ));
    }
    routes
}

/// A notification typed by an operator, to one user's devices: `notification` in `user:<id>`.
pub fn notification(user_id: &str, title: &str, message: &str, source: &Source) -> Vec<Route> {
    vec![Route {
        room: user_room(user_id),
        event: "notification".to_owned(),
        envelope: Envelope {
            id: source.id.clone(),
            event_type: "notification".to_owned(),
            occurred_at: source.occurred_at.clone(),
            data: serde_json::to_value(NotificationData {
                user_id: user_id.to_owned(),
                title: title.to_owned(),
                message: message.to_owned(),
            })
            .unwrap_or_default(),
            message: Some(message.to_owned()),
            priority: Some(Priority::Normal),
            position: None,
        },
    }]
}

/// A custom event for the admin dashboard: `admin:<name>` in `admin:dashboard`.
pub(crate) fn admin_event(name: &str, data: serde_json::Value, source: &Source) -> Vec<Route> {
    vec![Route {
        room: ADMIN_ROOM.to_owned(),
        event: format!("admin:{name}"),
        envelope: Envelope {
            id: source.id.clone(),
            event_type: format!("admin.{name}"),
            occurred_at: source.occurred_at.clone(),
            data,
            message: None,
            priority: None,
            position: None,
        },
    }]
}

/// A stock alert for the admin dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StockAlert {
    /// Stock fell to the threshold or below, but not to zero.
    LowStock,
    /// Stock fell to zero (or below, when oversold).
    OutOfStock,
}

/// The alert an inventory change raises. With `previousStock` known, only a downward
/// crossing alerts (so a restock or a further sale below the line stays quiet); without
/// it the bridge cannot tell and alerts on every update at or below the line.
pub(crate) fn stock_alert(inv: &InventoryEvent, threshold: i64) -> Option<StockAlert> {
    let was_above = |line: i64| inv.previous_stock.is_none_or(|p| p > line);
    if inv.stock <= 0 {
        was_above(0).then_some(StockAlert::OutOfStock)
    } else if inv.stock <= threshold {
        was_above(threshold).then_some(StockAlert::LowStock)
    } else {
        None
    }
}

fn product_label(inv: &InventoryEvent) -> String {
    match (&inv.product_name, &inv.sku) {
        (Some(name), Some(sku)) => format!("{name} ({sku})"),
        (Some(name), None) => name.clone(),
        (None, Some(sku)) => sku.clone(),
        (None, None) => format!("Product {}", inv.product_id),
    }
}

fn order_priority(action: &str, order: &OrderEvent) -> Priority {
    match (action, order.status.as_str()) {
        ("cancelled", _) | (_, "cancelled" | "refunded" | "payment_failed" | "failed") => Priority::High,
        ("created", _) | (_, "shipped" | "out_for_delivery" | "delivered") => Priority::Normal,
        _ => Priority::Low,
    }
}

fn buyer_message(action: &str, order: &OrderEvent) -> String {
    let id = &order.order_id;
    let what = match (action, order.status.as_str()) {
        ("created", _) => "has been placed".to_owned(),
        ("cancelled", _) | (_, "cancelled") => match &order.reason {
            Some(reason) => format!("has been cancelled: {reason}"),
            None => "has been cancelled".to_owned(),
        },
        (_, "pending") => "is pending".to_owned(),
        (_, "confirmed") => "has been confirmed".to_owned(),
        (_, "paid") => "has been paid".to_owned(),
        (_, "processing") => "is being prepared".to_owned(),
        (_, "shipped") => "has shipped".to_owned(),
        (_, "out_for_delivery") => "is out for delivery".to_owned(),
        (_, "delivered") => "has been delivered".to_owned(),
        (_, "refunded") => "has been refunded".to_owned(),
        (_, "returned") => "has been returned".to_owned(),
        (_, "payment_failed") => "could not be paid".to_owned(),
        (_, status) => format!("is now {}", status.replace('_', " ")),
    };
    format!("Your order {id} {what}")
}

fn admin_order_message(action: &str, order: &OrderEvent) -> String {
    let change = match &order.previous_status {
        Some(prev) => format!("{prev} → {}", order.status),
        None => order.status.clone(),
    };
    format!("Order {} ({action}) for buyer {}: {change}", order.order_id, order.buyer_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RULES: RoutingRules = RoutingRules { low_stock_threshold: 5 };

    fn routes(topic: &str, v: serde_json::Value) -> Vec<(String, String, String)> {
        let e = Event::parse(topic, Some(v.to_string().as_bytes())).unwrap();
        route(&e, &Source::kafka(topic, 0, 7, Some(0)), RULES)
            .into_iter()
            .map(|r| {
                assert_eq!(r.envelope.id, format!("{topic}:0:7"), "one id per record");
                (r.room, r.event, r.envelope.event_type)
            })
            .collect()
    }

    fn t(room: &str, event: &str, ty: &str) -> (String, String, String) {
        (room.into(), event.into(), ty.into())
    }

    #[test]
    fn the_routing_table() {
        let order = json!({"orderId": "o1", "buyerId": "u1", "status": "shipped"});
        for action in ["created", "updated", "cancelled", "returned"] {
            assert_eq!(
                routes(&format!("order.{action}"), order.clone()),
                vec![
                    t("user:u1", &format!("order:{action}"), &format!("order.{action}")),
                    t("admin:dashboard", &format!("admin:order:{action}"), &format!("order.{action}")),
                ]
            );
        }
        let product = t("product:p", "inventory:updated", "inventory.updated");
        assert_eq!(
            routes("inventory.updated", json!({"productId": "p", "stock": 50})),
            vec![t("inventory:updates", "inventory:updated", "inventory.updated"), product.clone()]
        );
        assert_eq!(
            routes("inventory.updated", json!({"productId": "p", "stock": 5, "previousStock": 6})),
            vec![
                t("inventory:updates", "inventory:updated", "inventory.updated"),
                product.clone(),
                t("admin:dashboard", "admin:inventory:low-stock", "inventory.low-stock")
            ]
        );
        assert_eq!(
            routes("inventory.updated", json!({"productId": "p", "stock": 0, "previousStock": 2})),
            vec![
                t("inventory:updates", "inventory:updated", "inventory.updated"),
                product,
                t("admin:dashboard", "admin:inventory:out-of-stock", "inventory.out-of-stock")
            ]
        );
        for action in ["created", "updated"] {
            assert_eq!(
                routes(&format!("product.{action}"), json!({"productId": "p", "name": "Mug"})),
                vec![
                    t("inventory:updates", &format!("product:{action}"), &format!("product.{action}")),
                    t("admin:dashboard", &format!("admin:product:{action}"), &format!("product.{action}")),
                    t("product:p", &format!("product:{action}"), &format!("product.{action}")),
                ]
            );
        }
        // An id that cannot name a room still reaches the firehose and the dashboard.
        let long = "p".repeat(MAX_PRODUCT_ID_LEN + 1);
        for id in [long.as_str(), "p 1", "p/1", "ü", "..", "-p"] {
            let rooms: Vec<String> = routes("inventory.updated", json!({"productId": id, "stock": 1, "previousStock": 9}))
                .into_iter()
                .map(|r| r.0)
                .collect();
            assert_eq!(rooms, ["inventory:updates", "admin:dashboard"], "{id:?}");
        }
    }

    #[test]
    fn a_product_route_carries_the_products_state() {
        let source = Source::kafka("inventory.updated", 0, 7, Some(1_795_359_845_123));
        let inv = Event::parse(
            "inventory.updated",
            Some(br#"{"productId":"p-1","stock":3,"previousStock":9,"productName":"Mug","sku":"MUG"}"#),
        )
        .unwrap();
        let routes = route(&inv, &source, RoutingRules { low_stock_threshold: 5 });
        assert_eq!(routes.iter().filter_map(product_state).count(), 1, "only the product room's route");
        let state = routes.iter().find_map(product_state).unwrap();
        assert_eq!(
            serde_json::Value::Object(state),
            json!({"productId": "p-1", "stock": 3, "previousStock": 9, "name": "Mug", "sku": "MUG", "updatedAt": source.occurred_at})
        );
    }

    #[test]
    fn stock_alerts_fire_on_downward_crossings_only() {
        let inv = |stock, previous_stock| InventoryEvent {
            product_id: "p".into(),
            stock,
            previous_stock,
            sku: None,
            product_name: None,
            updated_at: None,
        };
        assert_eq!(stock_alert(&inv(6, Some(10)), 5), None);
        assert_eq!(stock_alert(&inv(5, Some(6)), 5), Some(StockAlert::LowStock));
        assert_eq!(stock_alert(&inv(3, Some(4)), 5), None, "already low");
        assert_eq!(stock_alert(&inv(3, Some(0)), 5), None, "restock into the low band");
        assert_eq!(stock_alert(&inv(0, Some(3)), 5), Some(StockAlert::OutOfStock));
        assert_eq!(stock_alert(&inv(0, Some(0)), 5), None);
        assert_eq!(stock_alert(&inv(-2, Some(1)), 5), Some(StockAlert::OutOfStock), "oversold");
        assert_eq!(stock_alert(&inv(2, None), 5), Some(StockAlert::LowStock));
        assert_eq!(stock_alert(&inv(0, None), 5), Some(StockAlert::OutOfStock));
        assert_eq!(
            stock_alert(&inv(0, Some(9)), 0),
            Some(StockAlert::OutOfStock),
            "threshold 0 still reports out of stock"
        );
    }

    #[test]
    fn messages_and_priorities() {
        let e = Event::parse(
            "order.updated",
            Some(br#"{"orderId":"123","buyerId":"u1","status":"shipped","previousStatus":"paid"}"#),
        )
        .unwrap();
        let r = route(&e, &Source::kafka("order.updated", 0, 1, None), RULES);
        assert_eq!(r[0].envelope.message.as_deref(), Some("Your order 123 has shipped"));
        assert_eq!(r[0].envelope.priority, Some(Priority::Normal));
        assert_eq!(
            r[1].envelope.message.as_deref(),
            Some("Order 123 (updated) for buyer u1: paid → shipped")
        );

        let e = Event::parse(
            "order.cancelled",
            Some(br#"{"orderId":"9","buyerId":"u1","reason":"payment declined"}"#),
        )
        .unwrap();
        let r = route(&e, &Source::kafka("order.cancelled", 0, 1, None), RULES);
        assert_eq!(
            r[0].envelope.message.as_deref(),
            Some("Your order 9 has been cancelled: payment declined")
        );
        assert_eq!(r[0].envelope.priority, Some(Priority::High));
    }

    #[test]
    fn envelope_json_shape() {
        let e = Event::parse("order.created", Some(br#"{"orderId":"1","buyerId":"u1","status":"pending"}"#)).unwrap();
        let r = route(&e, &Source::kafka("order.created", 3, 9, Some(1_700_000_000_000)), RULES);
        assert_eq!(
            serde_json::to_value(&r[0].envelope).unwrap(),
            json!({
                "id": "order.created:3:9",
                "type": "order.created",
                "occurredAt": "2023-11-14T22:13:20.000Z",
                "data": {"orderId": "1", "buyerId": "u1", "status": "pending"},
                "message": "Your order 1 has been placed",
                "priority": "normal"
            })
        );
    }
}
