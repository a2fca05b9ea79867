//! The published contract of both sides of the bridge, generated from the service's own
//! types (schemars reads their serde attributes, so the schemas say what serde does):
//!
//! - an AsyncAPI 3.0 document: the Socket.IO side (rooms, the events sent to them, the
//!   handshake, client events and their acks) and the Kafka side (the consumed topics and
//!   their record schemas, the dead-letter topic and its headers) — served at
//!   `/api/docs/asyncapi.json`, committed as `openapi/asyncapi.json`;
//! - one JSON Schema file per consumed topic (`schemas/<topic>.json`), for producer teams
//!   to validate records before they publish.
//!
//! Two views of the same types: what clients receive is the *serialize* view (ids always
//! text), what producers may write is the *deserialize* view (ids as text or integers,
//! `userId` for `buyerId`), plus the rules `Event::parse` checks beyond serde (non-blank
//! ids, `status` outside `order.cancelled`, `name` on `product.created`). The TypeScript
//! client's types are generated from the AsyncAPI document (clients/js).

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::config::DEFAULT_DLQ_TOPIC;
use crate::events::{Envelope, InventoryEvent, NOT_BLANK, NotificationData, OrderEvent, Position, ProductEvent};
use crate::kafka::dead_letter::{HEADER_ERROR, HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC, HEADER_TRUNCATED};
use crate::routing::{ADMIN_ROOM, INVENTORY_ROOM};
use crate::socket::protocol::{
    AUTH_EXPIRED, AUTH_REFRESH, AuthRefresh, CONNECTION_SUCCESS, Closing, ConnectionSuccess, Expired, HandshakeAuth, ProductIds, Refreshed,
    Reply, SESSION_CLOSING, SUBSCRIBE_ADMIN, SUBSCRIBE_INVENTORY, SUBSCRIBE_ORDERS, SUBSCRIBE_PRODUCTS, SYNC_POSITION, UNSUBSCRIBE_ADMIN,
    UNSUBSCRIBE_INVENTORY, UNSUBSCRIBE_PRODUCTS,
};

/// Where the document is served.
pub const ASYNCAPI_PATH: &str = "/api/docs/asyncapi.json";

/// The payload of a refused handshake (Socket.IO's `connect_error`): socket.io-client
/// raises it as an `Error` whose `message` is this one.
#[derive(JsonSchema)]
#[allow(dead_code)] // described, never built: socketioxide writes it from the handler's error
struct ConnectError {
    /// Why: a missing, malformed, expired or wrongly signed token, bad `positions`, or a
    /// connection limit.
    message: String,
}

/// A consumed topic: its name (or pattern), the schema of its record values, and how the
/// schema differs from what serde alone reads.
struct Topic {
    /// The topic, e.g. `order.created`.
    name: &'static str,
    /// Key of its AsyncAPI channel, operation and message.
    key: &'static str,
    /// Name of the record schema in `components/schemas`.
    schema: &'static str,
    /// One line for people.
    summary: &'static str,
    /// The record value's schema (deserialize view, subschemas inlined).
    value: fn(&mut SchemaGenerator) -> Value,
}

fn order_record(generator: &mut SchemaGenerator) -> Value {
    let mut schema = record::<OrderEvent>(generator);
    // `status` is required (non-blank) everywhere but `order.cancelled`.
    require(&mut schema, "status");
    with_user_id_alias(schema)
}

fn order_cancelled_record(generator: &mut SchemaGenerator) -> Value {
    with_user_id_alias(record::<OrderEvent>(generator))
}

fn inventory_record(generator: &mut SchemaGenerator) -> Value {
    record::<InventoryEvent>(generator)
}

fn product_created_record(generator: &mut SchemaGenerator) -> Value {
    let mut schema = record::<ProductEvent>(generator);
    require(&mut schema, "name");
    schema["properties"]["name"] =
        json!({"type": "string", "pattern": NOT_BLANK, "description": "Display name (required on `product.created`)."});
    schema
}

fn product_updated_record(generator: &mut SchemaGenerator) -> Value {
    record::<ProductEvent>(generator)
}

/// Every consumed topic. Other `order.<action>` topics (lowercase letters, digits, `_`,
/// `-`) take the `order.updated` schema.
const TOPICS: &[Topic] = &[
    Topic {
        name: "order.created",
        key: "orderCreated",
        schema: "OrderCreatedRecord",
        summary: "An order was placed.",
        value: order_record,
    },
    Topic {
        name: "order.updated",
        key: "orderUpdated",
        schema: "OrderUpdatedRecord",
        summary: "An order changed (any other `order.<action>` topic has the same schema).",
        value: order_record,
    },
    Topic {
        name: "order.cancelled",
        key: "orderCancelled",
        schema: "OrderCancelledRecord",
        summary: "An order was cancelled; `status` defaults to `cancelled`.",
        value: order_cancelled_record,
    },
    Topic {
        name: "inventory.updated",
        key: "inventoryUpdated",
        schema: "InventoryUpdatedRecord",
        summary: "A product's stock level changed.",
        value: inventory_record,
    },
    Topic {
        name: "product.created",
        key: "productCreated",
        schema: "ProductCreatedRecord",
        summary: "A product was created.",
        value: product_created_record,
    },
    Topic {
        name: "product.updated",
        key: "productUpdated",
        schema: "ProductUpdatedRecord",
        summary: "A product changed.",
        value: product_updated_record,
    },
];

/// The schema of one record value as producers may write it: the deserialize view, self-contained.
fn record<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    let mut schema = generator.root_schema_for::<T>().to_value();
    plain(&mut schema, true);
    if let Some(schema) = schema.as_object_mut() {
        schema.remove("$schema");
        schema.remove("title");
    }
    schema
}

/// Drops what is not JSON Schema vocabulary every validator knows: schemars' number formats
/// (`int64`, `double`, …: strict validators refuse unknown formats) and, in record schemas,
/// `default` (a default of `""` next to a non-blank pattern would only confuse).
fn plain(schema: &mut Value, drop_defaults: bool) {
    match schema {
        Value::Object(map) => {
            if map
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| NUMBER_FORMATS.contains(&f))
            {
                map.remove("format");
            }
            if drop_defaults {
                map.remove("default");
            }
            map.values_mut().for_each(|v| plain(v, drop_defaults));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| plain(v, drop_defaults)),
        _ => {}
    }
}

const NUMBER_FORMATS: &[&str] = &[
    "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float", "double",
];

fn require(schema: &mut Value, field: &str) {
    if let Some(required) = schema["required"].as_array_mut()
        && !required.iter().any(|r| r == field)
    {
        required.push(field.into());
    }
}

/// serde reads `userId` as `buyerId` (an alias schemars cannot express): either one.
fn with_user_id_alias(mut schema: Value) -> Value {
    let buyer = schema["properties"]["buyerId"].clone();
    schema["properties"]["userId"] = json!({"description": "Accepted in place of `buyerId`.", "anyOf": buyer["anyOf"]});
    if let Some(required) = schema["required"].as_array_mut() {
        required.retain(|r| r != "buyerId");
    }
    schema["oneOf"] = json!([{"required": ["buyerId"]}, {"required": ["userId"]}]);
    schema
}

/// The generator of the deserialize view: draft 7, every subschema inlined.
fn record_generator() -> SchemaGenerator {
    SchemaSettings::draft07()
        .for_deserialize()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
}

/// `schemas/<topic>.json`: one self-contained JSON Schema (draft 7) per consumed topic,
/// by file name.
pub fn record_schemas() -> Vec<(String, Value)> {
    let mut generator = record_generator();
    TOPICS
        .iter()
        .map(|topic| {
            let mut schema = Map::new();
            schema.insert("$schema".into(), "http://json-schema.org/draft-07/schema#".into());
            schema.insert("title".into(), format!("{} record value", topic.name).into());
            schema.insert("description".into(), topic.summary.into());
            if let Value::Object(body) = (topic.value)(&mut generator) {
                schema.extend(body.into_iter().filter(|(k, _)| k != "description"));
            }
            (format!("{}.json", topic.name), Value::Object(schema))
        })
        .collect()
}

/// The socket events and their payload types, as clients see them (serialize view).
struct Schemas {
    generator: SchemaGenerator,
}

/// A generator whose definitions go to AsyncAPI's `components/schemas`.
fn component_generator(settings: SchemaSettings) -> SchemaGenerator {
    settings
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator()
}

impl Schemas {
    fn new() -> Self {
        Schemas {
            generator: component_generator(SchemaSettings::draft07().for_serialize()),
        }
    }

    /// A `$ref` to `T`'s schema in `components/schemas`.
    fn of<T: JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }

    fn of_deserialized<T: JsonSchema>(&mut self) -> Value {
        // Client events are read by the bridge: their deserialize view.
        let mut generator = component_generator(SchemaSettings::draft07().for_deserialize());
        let schema = generator.subschema_for::<T>().to_value();
        self.generator.definitions_mut().extend(generator.take_definitions(true));
        schema
    }
}

/// One AsyncAPI message.
fn message(name: &str, title: &str, summary: &str, payload: Option<Value>) -> Value {
    let mut message = json!({"name": name, "title": title, "summary": summary, "contentType": "application/json"});
    if let Some(payload) = payload {
        message["payload"] = payload;
    }
    message
}

fn message_ref(key: &str) -> Value {
    json!({"$ref": format!("#/components/messages/{key}")})
}

fn channel_message_ref(channel: &str, key: &str) -> Value {
    json!({"$ref": format!("#/channels/{channel}/messages/{key}")})
}

/// A channel over `server` whose messages are the given component messages.
fn channel(address: Option<&str>, server: &str, title: &str, description: &str, messages: &[&str]) -> Value {
    let messages: Map<String, Value> = messages.iter().map(|k| ((*k).to_owned(), message_ref(k))).collect();
    json!({
        "address": address,
        "title": title,
        "description": description,
        "servers": [{"$ref": format!("#/servers/{server}")}],
        "messages": messages,
    })
}

/// An operation of the bridge on `channel`, with these of its messages.
fn operation(action: &str, channel: &str, summary: &str, messages: &[&str]) -> Value {
    json!({
        "action": action,
        "channel": {"$ref": format!("#/channels/{channel}")},
        "summary": summary,
        "description": summary,
        "messages": messages.iter().map(|m| channel_message_ref(channel, m)).collect::<Vec<_>>(),
    })
}

/// A client event the bridge receives on the socket and answers through its ack.
fn request(summary: &str, message: &str, acks: &[&str]) -> Value {
    let mut op = operation("receive", "socket", summary, &[message]);
    op["reply"] = json!({
        "channel": {"$ref": "#/channels/socket"},
        "messages": acks.iter().map(|m| channel_message_ref("socket", m)).collect::<Vec<_>>(),
    });
    op
}

/// The AsyncAPI 3.0 document (served at [`ASYNCAPI_PATH`]): declarative, one function per
/// part (messages by kind, channels, operations, the document around them).
pub fn asyncapi() -> Value {
    let mut s = Schemas::new();
    let mut messages = Map::new();
    room_messages(&mut s, &mut messages);
    session_messages(&mut s, &mut messages);
    client_messages(&mut s, &mut messages);
    let schemas = kafka_messages(s, &mut messages);
    let lists = MessageLists::new();
    document(channels(&lists), operations(&lists), schemas, messages)
}

/// Message keys by who receives them.
struct MessageLists {
    user: &'static [&'static str],
    admin: &'static [&'static str],
    storefront: &'static [&'static str],
    session: &'static [&'static str],
    socket: &'static [&'static str],
}

impl MessageLists {
    fn new() -> Self {
        let user: &'static [&'static str] = &["orderCreated", "orderUpdated", "orderCancelled", "orderOther", "notification"];
        let admin: &'static [&'static str] = &[
            "adminOrderCreated",
            "adminOrderUpdated",
            "adminOrderCancelled",
            "adminOrderOther",
            "adminLowStock",
            "adminOutOfStock",
            "adminProductCreated",
            "adminProductUpdated",
            "adminCustom",
        ];
        let storefront: &'static [&'static str] = &["inventoryUpdated", "productCreated", "productUpdated"];
        let session: &'static [&'static str] = &["connectionSuccess", "syncPosition", "sessionClosing", "authExpired"];
        let socket: &'static [&'static str] = &[
            "connect",
            "connectError",
            "connectionSuccess",
            "syncPosition",
            "sessionClosing",
            "authExpired",
            "subscribeInventory",
            "unsubscribeInventory",
            "subscribeAdmin",
            "unsubscribeAdmin",
            "subscribeOrders",
            "subscribeProducts",
            "unsubscribeProducts",
            "authRefresh",
            "reply",
            "refreshed",
        ];

        MessageLists {
            user,
            admin,
            storefront,
            session,
            socket,
        }
    }
}

/// The events sent to rooms. A name with `{…}` stands for any value there.
fn room_messages(s: &mut Schemas, messages: &mut Map<String, Value>) {
    let order = s.of::<Envelope<OrderEvent>>();
    let inventory = s.of::<Envelope<InventoryEvent>>();
    let product = s.of::<Envelope<ProductEvent>>();
    let notification = s.of::<Envelope<NotificationData>>();
    let custom = s.of::<Envelope<Value>>();
    let mut add = |key: &str, m: Value| {
        messages.insert(key.to_owned(), m);
    };
    for (key, action, what) in [
        ("Created", "created", "was placed"),
        ("Updated", "updated", "changed"),
        ("Cancelled", "cancelled", "was cancelled"),
        ("Other", "{action}", "had another action (`order.<action>`)"),
    ] {
        add(
            &format!("order{key}"),
            message(
                &format!("order:{action}"),
                &format!("Order {action}"),
                &format!("The buyer's order {what}."),
                Some(order.clone()),
            ),
        );
        add(
            &format!("adminOrder{key}"),
            message(
                &format!("admin:order:{action}"),
                &format!("Order {action} (admin)"),
                &format!("An order {what}."),
                Some(order.clone()),
            ),
        );
    }
    stock_and_product_messages(inventory, product, custom, notification, messages);
}

/// Room events about stock and products, operators' custom events and notifications.
fn stock_and_product_messages(inventory: Value, product: Value, custom: Value, notification: Value, messages: &mut Map<String, Value>) {
    let mut add = |key: &str, m: Value| {
        messages.insert(key.to_owned(), m);
    };
    add(
        "adminLowStock",
        message(
            "admin:inventory:low-stock",
            "Low stock",
            "Stock fell to the low-stock threshold or below (type `inventory.low-stock`).",
            Some(inventory.clone()),
        ),
    );
    add(
        "adminOutOfStock",
        message(
            "admin:inventory:out-of-stock",
            "Out of stock",
            "Stock reached zero (type `inventory.out-of-stock`).",
            Some(inventory.clone()),
        ),
    );
    for (key, action) in [("Created", "created"), ("Updated", "updated")] {
        add(
            &format!("product{key}"),
            message(
                &format!("product:{action}"),
                &format!("Product {action}"),
                &format!("A product was {action}."),
                Some(product.clone()),
            ),
        );
        add(
            &format!("adminProduct{key}"),
            message(
                &format!("admin:product:{action}"),
                &format!("Product {action} (admin)"),
                &format!("A product was {action}."),
                Some(product.clone()),
            ),
        );
    }
    add(
        "adminCustom",
        message(
            "admin:{name}",
            "Custom admin event",
            "An event an operator sent with `POST /realtime/test/admin` (type `admin.<name>`); `data` is theirs.",
            Some(custom),
        ),
    );
    add(
        "inventoryUpdated",
        message(
            "inventory:updated",
            "Stock changed",
            "A product's stock level changed.",
            Some(inventory),
        ),
    );
    add(
        "notification",
        message(
            "notification",
            "Notification",
            "A notification an operator sent to this user.",
            Some(notification),
        ),
    );
}

/// The session's own events: handshake answers and notices.
fn session_messages(s: &mut Schemas, messages: &mut Map<String, Value>) {
    let mut add = |key: &str, m: Value| {
        messages.insert(key.to_owned(), m);
    };
    add(
        "connectionSuccess",
        message(
            CONNECTION_SUCCESS,
            "Connected",
            "The socket is connected, caught up (what was missed is replayed before it) and in its rooms.",
            Some(s.of::<ConnectionSuccess<'static>>()),
        ),
    );
    add(
        "connectError",
        message(
            "connect_error",
            "Handshake refused",
            "The handshake was refused; socket.io-client raises it as an Error with this message.",
            Some(s.of::<ConnectError>()),
        ),
    );
    add(
        "syncPosition",
        message(
            SYNC_POSITION,
            "A room's head",
            "The room's latest position: a client behind it missed envelopes and should reconnect with its positions to get them replayed.",
            Some(s.of::<Position>()),
        ),
    );
    add(
        "sessionClosing",
        message(
            SESSION_CLOSING,
            "Closing",
            "The server is about to disconnect this socket (too slow, too many client events).",
            Some(s.of::<Closing>()),
        ),
    );
    add(
        "authExpired",
        message(
            AUTH_EXPIRED,
            "Token expired",
            "The token expired: the socket has left its rooms and is disconnected.",
            Some(s.of::<Expired>()),
        ),
    );
}

/// Client events and their acks.
fn client_messages(s: &mut Schemas, messages: &mut Map<String, Value>) {
    let mut add = |key: &str, m: Value| {
        messages.insert(key.to_owned(), m);
    };
    add(
        "connect",
        message(
            "connect",
            "Handshake",
            "The Socket.IO handshake's `auth` payload, sent on every (re)connect.",
            Some(s.of_deserialized::<HandshakeAuth>()),
        ),
    );
    let product_ids = s.of_deserialized::<ProductIds>();
    for (key, event, summary, payload) in [
        ("subscribeInventory", SUBSCRIBE_INVENTORY, "Join `inventory:updates`.", None),
        ("unsubscribeInventory", UNSUBSCRIBE_INVENTORY, "Leave `inventory:updates`.", None),
        ("subscribeAdmin", SUBSCRIBE_ADMIN, "Join `admin:dashboard` (admin role only).", None),
        ("unsubscribeAdmin", UNSUBSCRIBE_ADMIN, "Leave `admin:dashboard`.", None),
        (
            "subscribeOrders",
            SUBSCRIBE_ORDERS,
            "Kept for older clients: order events already reach `user:<sub>`.",
            None,
        ),
        (
            "subscribeProducts",
            SUBSCRIBE_PRODUCTS,
            "Join `product:<id>` for each id; the ack carries each room's position and each product's latest state.",
            Some(product_ids.clone()),
        ),
        (
            "unsubscribeProducts",
            UNSUBSCRIBE_PRODUCTS,
            "Leave those product rooms.",
            Some(product_ids),
        ),
    ] {
        add(key, message(event, event, summary, payload));
    }
    add(
        "authRefresh",
        message(
            AUTH_REFRESH,
            AUTH_REFRESH,
            "A fresh token for the same user, before `exp`: the socket lives until the new `exp`.",
            Some(s.of_deserialized::<AuthRefresh>()),
        ),
    );
    add(
        "reply",
        message(
            "ack",
            "Subscription ack",
            "The answer to every subscribe / unsubscribe event.",
            Some(s.of::<Reply>()),
        ),
    );
    add(
        "refreshed",
        message("ack", "Refresh ack", "The answer to `auth:refresh`.", Some(s.of::<Refreshed>())),
    );
}

/// The Kafka side: the record messages and the dead letter; returns every schema.
fn kafka_messages(mut s: Schemas, messages: &mut Map<String, Value>) -> Map<String, Value> {
    let mut records = record_generator();
    let mut schemas = s.generator.take_definitions(true);
    schemas.values_mut().for_each(|schema| plain(schema, false));
    for topic in TOPICS {
        schemas.insert(topic.schema.to_owned(), (topic.value)(&mut records));
        let mut m = message(
            topic.name,
            topic.name,
            topic.summary,
            Some(json!({"$ref": format!("#/components/schemas/{}", topic.schema)})),
        );
        m["bindings"] = json!({"kafka": {"key": {"type": "string", "description": "Any key; records of one key keep their order (one partition)."}, "bindingVersion": "0.5.0"}});
        messages.insert(format!("{}Record", topic.key), m);
    }
    let headers: Map<String, Value> = [
        (HEADER_TOPIC, "The topic the record was read from."),
        (HEADER_PARTITION, "Its partition, in decimal."),
        (HEADER_OFFSET, "Its offset, in decimal."),
        (HEADER_ERROR, "Why it was refused."),
        (
            HEADER_TRUNCATED,
            "Present when the copy was cut to fit the topic: what was cut (16 KiB of value and 1 KiB of key are kept).",
        ),
    ]
    .into_iter()
    .map(|(name, description)| (name.to_owned(), json!({"type": "string", "description": description})))
    .collect();
    messages.insert(
        "deadLetter".to_owned(),
        json!({
            "name": "dead letter",
            "title": "Refused record",
            "summary": "A record that could not become an event: its key, value and headers copied as they were, with `dlq.*` headers saying where it came from and why.",
            "contentType": "application/octet-stream",
            "headers": {"type": "object", "required": [HEADER_TOPIC, HEADER_PARTITION, HEADER_OFFSET, HEADER_ERROR], "properties": headers},
            "payload": {"description": "The source record's value, byte for byte (or its first 16 KiB with `dlq.truncated`)."},
        }),
    );

    schemas
}

fn channels(l: &MessageLists) -> Value {
    let (user, admin, storefront, socket_messages) = (l.user, l.admin, l.storefront, l.socket);
    let mut channels = json!({
        "userRoom": channel(Some("user:{userId}"), "bridge", "A buyer's devices",
            "Every socket of one user (the token's `sub`) is in it from the handshake on.", user),
        "adminDashboard": channel(Some(ADMIN_ROOM), "bridge", "Admin dashboards",
            "Every order, stock alerts, product changes and operators' custom events; admins join it with `subscribe:admin`.", admin),
        "inventoryUpdates": channel(Some(INVENTORY_ROOM), "bridge", "Storefronts",
            "Every stock change and product change of the catalogue; joined with `subscribe:inventory`.", storefront),
        "productRoom": channel(Some("product:{productId}"), "bridge", "One product's watchers",
            "Stock and product changes of one product; joined with `subscribe:products`.", storefront),
        "socket": channel(None, "bridge", "The connection",
            "The socket itself: the handshake, session notices, client events and their acks.", socket_messages),
    });
    channels["userRoom"]["parameters"] = json!({"userId": {"description": "The token's `sub`."}});
    channels["productRoom"]["parameters"] =
        json!({"productId": {"description": "1 to 64 letters, digits, `-`, `_`, `.` or `:`, starting with a letter or digit."}});
    for topic in TOPICS {
        channels[topic.key] = channel(
            Some(topic.name),
            "kafka",
            topic.name,
            topic.summary,
            &[&format!("{}Record", topic.key)],
        );
    }
    channels["deadLetter"] = channel(
        Some(DEFAULT_DLQ_TOPIC),
        "kafka",
        "Dead-letter topic",
        "Records that are not events (`KAFKA_DLQ_TOPIC`, this name by default).",
        &["deadLetter"],
    );

    channels
}

fn operations(l: &MessageLists) -> Value {
    let (user, admin, storefront, session) = (l.user, l.admin, l.storefront, l.session);
    let mut operations = json!({
        "emitToUser": operation("send", "userRoom", "Order events and notifications to the buyer's devices.", user),
        "emitToAdmins": operation("send", "adminDashboard", "Every order, stock alerts, product changes and custom events to admin dashboards.", admin),
        "emitToStorefronts": operation("send", "inventoryUpdates", "Stock and product changes to storefronts.", storefront),
        "emitToProductWatchers": operation("send", "productRoom", "One product's stock and product changes to its watchers.", storefront),
        "emitSessionEvents": operation("send", "socket", "Session notices to one socket.", session),
        "handshake": request("Authenticate a socket (JWT in `auth.token`) and replay what it missed in the rooms of `auth.positions`.", "connect", &["connectionSuccess", "connectError"]),
        "subscribeInventory": request("Join `inventory:updates`.", "subscribeInventory", &["reply"]),
        "unsubscribeInventory": request("Leave `inventory:updates`.", "unsubscribeInventory", &["reply"]),
        "subscribeAdmin": request("Join `admin:dashboard` (admin role only).", "subscribeAdmin", &["reply"]),
        "unsubscribeAdmin": request("Leave `admin:dashboard`.", "unsubscribeAdmin", &["reply"]),
        "subscribeOrders": request("Kept for older clients; answers with the socket's rooms.", "subscribeOrders", &["reply"]),
        "subscribeProducts": request("Join product rooms; the ack carries positions and each product's latest state.", "subscribeProducts", &["reply"]),
        "unsubscribeProducts": request("Leave product rooms.", "unsubscribeProducts", &["reply"]),
        "authRefresh": request("Extend the socket's life with a fresh token for the same user.", "authRefresh", &["refreshed"]),
        "produceDeadLetters": operation("send", "deadLetter", "Copy a record that is not an event to the dead-letter topic, then move past it.", &["deadLetter"]),
    });
    for topic in TOPICS {
        operations[format!("consume_{}", topic.key)] = operation(
            "receive",
            topic.key,
            &format!("Consume `{}` records as a member of the consumer group.", topic.name),
            &[&format!("{}Record", topic.key)],
        );
    }

    operations
}

/// The document around its parts.
fn document(channels: Value, operations: Value, schemas: Map<String, Value>, messages: Map<String, Value>) -> Value {
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "realtime-bridge",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Reads business events from Kafka (a consumer group) and pushes them live to browsers and apps over Socket.IO v4 rooms. Every socket event carries one envelope shape with a position per room, for replay on reconnect. Generated from the service's own types; see docs/client-protocol.md and docs/producers.md.",
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
            "tags": [{"name": "socket.io", "description": "The browser side."}, {"name": "kafka", "description": "The producer side."}],
        },
        "defaultContentType": "application/json",
        "servers": {
            "bridge": {
                "host": "localhost:3009",
                "pathname": "/socket.io/",
                "protocol": "ws",
                "title": "The bridge (Socket.IO v4)",
                "description": "Socket.IO v4 (Engine.IO 4) over WebSocket or HTTP long-polling, default namespace. Authenticate with a JWT in the handshake's `auth.token`.",
                "security": [{"$ref": "#/components/securitySchemes/jwt"}],
            },
            "kafka": {
                "host": "localhost:9092",
                "protocol": "kafka",
                "title": "The Kafka cluster",
                "description": "Where the bridge consumes (KAFKA_BROKERS); PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (KAFKA_SECURITY_PROTOCOL).",
                "security": [
                    {"$ref": "#/components/securitySchemes/scram"},
                    {"$ref": "#/components/securitySchemes/plain"},
                    {"$ref": "#/components/securitySchemes/mtls"},
                    {"$ref": "#/components/securitySchemes/oauthbearer"},
                ],
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": {
                "jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "A JWT (HS256 with JWT_SECRET, RS256/ES256 with JWT_PUBLIC_KEY) in the handshake's `auth.token`; `sub` is the user, `roles` containing `admin` allows `subscribe:admin`."},
                "scram": {"type": "scramSha512", "description": "SASL/SCRAM-SHA-512 (or -256): KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD."},
                "plain": {"type": "plain", "description": "SASL/PLAIN over TLS."},
                "mtls": {"type": "X509", "description": "TLS client certificates: KAFKA_SSL_CERTIFICATE_LOCATION, KAFKA_SSL_KEY_LOCATION."},
                "oauthbearer": {"type": "oauth2", "description": "SASL/OAUTHBEARER with tokens from an OIDC provider (client credentials).",
                    "flows": {"clientCredentials": {"tokenUrl": "https://idp.example.com/oauth2/token", "availableScopes": {}}}},
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;

    fn record_schema(topic: &str) -> Value {
        record_schemas()
            .into_iter()
            .find(|(file, _)| file == &format!("{topic}.json"))
            .map(|(_, schema)| schema)
            .unwrap()
    }

    #[test]
    fn record_schemas_say_what_the_parser_reads() {
        let order = record_schema("order.created");
        assert_eq!(
            order["properties"]["orderId"]["anyOf"][1]["type"], "integer",
            "integer ids are read"
        );
        assert!(order["properties"]["userId"].is_object(), "userId is read for buyerId");
        assert!(order["required"].as_array().unwrap().contains(&json!("status")));
        let cancelled = record_schema("order.cancelled");
        assert!(!cancelled["required"].as_array().unwrap().contains(&json!("status")));
        assert!(
            record_schema("product.created")["required"]
                .as_array()
                .unwrap()
                .contains(&json!("name"))
        );
        // What the parser accepts of the examples below is what the schemas say (their
        // validation by a JSON Schema validator is in clients/js's tests).
        assert!(Event::parse("order.cancelled", Some(br#"{"orderId": 7, "userId": "u"}"#)).is_ok());
        assert!(Event::parse("order.created", Some(br#"{"orderId": 7, "userId": "u"}"#)).is_err());
    }

    #[test]
    fn clients_get_text_ids() {
        let doc = asyncapi();
        let order = &doc["components"]["schemas"]["OrderEvent"];
        assert_eq!(order["properties"]["orderId"]["type"], "string");
        assert!(order["required"].as_array().unwrap().contains(&json!("status")), "always sent");
        assert_eq!(
            doc["components"]["schemas"]["OrderEventEnvelope"]["properties"]["data"]["allOf"][0]["$ref"],
            "#/components/schemas/OrderEvent"
        );
    }
}
