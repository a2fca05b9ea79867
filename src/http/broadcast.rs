//! `POST /realtime/...`: send events by hand. Each request becomes the same routes a Kafka
//! record would (same routing, same history, same envelope), so a client cannot tell a
//! REST-sent order update from a Kafka one — except by its `rest:` id.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::HttpState;
use super::auth::Operator;
use super::error::{ApiError, ErrorBody, JsonBody, Validate, text};
use crate::delivery::{CLUSTER_RETRY_FOR, DeliveryError, Patience};
use crate::events::{Event, InventoryEvent, OrderEvent, Position, Source, opt_whole_number, whole_number};
use crate::routing::{self, Route};

// Text fields carry `pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s…]…$"` in the OpenAPI
// document: what `text()` accepts (some non-space character, no control characters),
// spelled out per field because utoipa takes only a literal there.

/// Largest stock value accepted (either sign).
const MAX_STOCK: i64 = 1_000_000_000;

/// `POST /realtime/test/notification`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"userId": "u-42", "title": "Hello", "message": "Your parcel is on its way"}))]
pub struct NotificationRequest {
    /// The user whose devices receive it (`user:<userId>`).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub user_id: String,
    /// A short title.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub title: String,
    /// The text.
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub message: String,
}

impl Validate for NotificationRequest {
    fn validate(&self) -> Result<(), ApiError> {
        text("userId", &self.user_id, 128)?;
        text("title", &self.title, 200)?;
        text("message", &self.message, 2000)
    }
}

/// `POST /realtime/broadcast/order`: what an `order.updated` record carries.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"userId": "u-42", "orderId": "1042", "status": "shipped", "previousStatus": "paid"}))]
pub struct OrderBroadcast {
    /// The buyer.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub user_id: String,
    /// The order.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub order_id: String,
    /// Its status now.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub status: String,
    /// Its status before.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub previous_status: Option<String>,
}

impl Validate for OrderBroadcast {
    fn validate(&self) -> Result<(), ApiError> {
        text("userId", &self.user_id, 128)?;
        text("orderId", &self.order_id, 128)?;
        text("status", &self.status, 64)?;
        if let Some(p) = &self.previous_status {
            text("previousStatus", p, 64)?;
        }
        Ok(())
    }
}

/// `POST /realtime/broadcast/inventory`: what an `inventory.updated` record carries.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"productId": "p-100", "stock": 0, "previousStock": 4, "sku": "CUP-ESP", "productName": "Espresso cup"}))]
pub struct InventoryBroadcast {
    /// The product.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub product_id: String,
    /// Units in stock now.
    #[serde(deserialize_with = "whole_number")]
    #[schema(minimum = -1_000_000_000, maximum = 1_000_000_000)]
    pub stock: i64,
    /// Stock keeping unit.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub sku: Option<String>,
    /// Display name.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub product_name: Option<String>,
    /// Units in stock before; alerts fire on a downward crossing when given.
    #[serde(default, deserialize_with = "opt_whole_number")]
    #[schema(minimum = -1_000_000_000, maximum = 1_000_000_000)]
    pub previous_stock: Option<i64>,
}

impl Validate for InventoryBroadcast {
    fn validate(&self) -> Result<(), ApiError> {
        text("productId", &self.product_id, 128)?;
        stock("stock", self.stock)?;
        if let Some(p) = self.previous_stock {
            stock("previousStock", p)?;
        }
        if let Some(sku) = &self.sku {
            text("sku", sku, 64)?;
        }
        if let Some(name) = &self.product_name {
            text("productName", name, 200)?;
        }
        Ok(())
    }
}

fn stock(field: &str, v: i64) -> Result<(), ApiError> {
    if v.abs() > MAX_STOCK {
        return Err(ApiError::field(field, format!("field {field:?} must be within ±{MAX_STOCK}")));
    }
    Ok(())
}

/// `POST /realtime/broadcast/admin`: a custom event for the admin dashboard.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"event": "maintenance", "data": {"startsAt": "2026-11-22T22:00:00Z"}}))]
pub struct AdminBroadcast {
    /// Sent as `admin:<event>`: 1–64 characters of `a-z 0-9 : _ -`.
    #[schema(pattern = r"^[a-z0-9:_-]{1,64}$", min_length = 1, max_length = 64)]
    pub event: String,
    /// Any JSON, passed through as the envelope's `data` (null when absent).
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Validate for AdminBroadcast {
    fn validate(&self) -> Result<(), ApiError> {
        let ok = (1..=64).contains(&self.event.len())
            && self
                .event
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b":_-".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(ApiError::field("event", "field \"event\" must be 1-64 characters of a-z 0-9 : _ -"))
        }
    }
}

/// What a broadcast did.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "rest:0d9f6c1e2b7a4c5d8e9f0a1b2c3d4e5f", "deliveries": [{"room": "user:u-42", "event": "order:updated", "position": {"room": "user:u-42", "epoch": "9f1c2a7be04d3318", "seq": 18}}]}))]
pub struct BroadcastResponse {
    /// The envelope id (`rest:<hex>`), the same in every room.
    pub id: String,
    /// One per room emit, in order.
    pub deliveries: Vec<Delivered>,
}

/// One room emit.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivered {
    /// The room.
    pub room: String,
    /// The socket event name.
    pub event: String,
    /// The envelope's position in the room's history.
    pub position: Option<Position>,
}

/// The refusals every broadcast endpoint documents (see [`super::error`]).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only its OpenAPI description is used; handlers return ApiError
enum BroadcastErrors {
    /// Malformed JSON
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No valid credential
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Token without the admin role
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Body over REST_MAX_BODY_BYTES
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Not application/json
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// A field is missing or invalid (named in `field`)
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// The replay history is unavailable
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Send a `notification` to one user's devices.
#[utoipa::path(
    post, path = "/realtime/test/notification", tag = "broadcast",
    request_body = NotificationRequest,
    responses(
        (status = 200, description = "Sent to `user:<userId>`", body = BroadcastResponse),
        BroadcastErrors,
    ),
    security(("bearer" = []), ("apiKey" = [])),
)]
pub async fn notification(
    State(state): State<HttpState>,
    operator: Operator,
    JsonBody(req): JsonBody<NotificationRequest>,
) -> Result<Json<BroadcastResponse>, ApiError> {
    let source = Source::rest();
    let routes = routing::notification(&req.user_id, &req.title, &req.message, &source);
    send(&state, &operator, "notification", source, routes).await
}

/// Send an order update to the buyer and the admin dashboard, as `order.updated` would.
#[utoipa::path(
    post, path = "/realtime/broadcast/order", tag = "broadcast",
    request_body = OrderBroadcast,
    responses(
        (status = 200, description = "Sent to `user:<userId>` and `admin:dashboard`", body = BroadcastResponse),
        BroadcastErrors,
    ),
    security(("bearer" = []), ("apiKey" = [])),
)]
pub async fn order(
    State(state): State<HttpState>,
    operator: Operator,
    JsonBody(req): JsonBody<OrderBroadcast>,
) -> Result<Json<BroadcastResponse>, ApiError> {
    let event = Event::Order {
        action: "updated".to_owned(),
        order: OrderEvent {
            order_id: req.order_id,
            buyer_id: req.user_id,
            status: req.status,
            previous_status: req.previous_status,
            total_amount: None,
            reason: None,
            created_at: None,
            updated_at: None,
            cancelled_at: None,
        },
    };
    let source = Source::rest();
    let routes = routing::route(&event, &source, state.rules);
    send(&state, &operator, "order", source, routes).await
}

/// Send a stock change to inventory subscribers (and alerts to admins), as `inventory.updated` would.
#[utoipa::path(
    post, path = "/realtime/broadcast/inventory", tag = "broadcast",
    request_body = InventoryBroadcast,
    responses(
        (status = 200, description = "Sent to `inventory:updates` and `product:<productId>` (and `admin:dashboard` for alerts)", body = BroadcastResponse),
        BroadcastErrors,
    ),
    security(("bearer" = []), ("apiKey" = [])),
)]
pub async fn inventory(
    State(state): State<HttpState>,
    operator: Operator,
    JsonBody(req): JsonBody<InventoryBroadcast>,
) -> Result<Json<BroadcastResponse>, ApiError> {
    let event = Event::Inventory(InventoryEvent {
        product_id: req.product_id,
        stock: req.stock,
        previous_stock: req.previous_stock,
        sku: req.sku,
        product_name: req.product_name,
        updated_at: None,
    });
    let source = Source::rest();
    let routes = routing::route(&event, &source, state.rules);
    send(&state, &operator, "inventory", source, routes).await
}

/// Send `admin:<event>` to the admin dashboard.
#[utoipa::path(
    post, path = "/realtime/broadcast/admin", tag = "broadcast",
    request_body = AdminBroadcast,
    responses(
        (status = 200, description = "Sent to `admin:dashboard`", body = BroadcastResponse),
        BroadcastErrors,
    ),
    security(("bearer" = []), ("apiKey" = [])),
)]
pub async fn admin(
    State(state): State<HttpState>,
    operator: Operator,
    JsonBody(req): JsonBody<AdminBroadcast>,
) -> Result<Json<BroadcastResponse>, ApiError> {
    let source = Source::rest();
    let routes = routing::admin_event(&req.event, req.data, &source);
    send(&state, &operator, "admin", source, routes).await
}

/// The 503 body when the history cannot store a broadcast (the cause is logged).
pub const BROADCAST_UNAVAILABLE: &str = "the replay history is unavailable; nothing was sent, retry later";
/// The 503 body when earlier deliveries kept the pipeline busy for the whole wait.
pub(crate) const BROADCAST_BUSY: &str =
    "the bridge is still retrying earlier deliveries (the cluster link is down); nothing was sent, retry later";
/// The 503 body when the broadcast was stored but the cluster did not take it live.
pub(crate) const BROADCAST_NOT_LIVE: &str =
    "stored in the replay history but not broadcast live (the cluster link is down); clients receive it when they resync";

async fn send(
    state: &HttpState,
    operator: &Operator,
    kind: &'static str,
    source: Source,
    routes: Vec<Route>,
) -> Result<Json<BroadcastResponse>, ApiError> {
    let stored = state
        .delivery
        .deliver(&routes, Patience::AtMost(CLUSTER_RETRY_FOR))
        .await
        .map_err(|e| {
            // The cause (addresses, store errors) is for the logs, not for callers.
            tracing::error!(error = %e, kind, "REST broadcast failed");
            let message = match e {
                DeliveryError::History(_) => BROADCAST_UNAVAILABLE,
                DeliveryError::NotBroadcast => BROADCAST_NOT_LIVE,
                DeliveryError::Busy => BROADCAST_BUSY,
            };
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
        })?;
    state.stats.rest_broadcast(kind);
    tracing::info!(%operator, kind, id = %source.id, rooms = stored.len(), "REST broadcast");
    Ok(Json(BroadcastResponse {
        id: source.id,
        deliveries: stored
            .iter()
            .map(|e| Delivered {
                room: e.envelope.position.as_ref().map(|p| p.room.clone()).unwrap_or_default(),
                event: e.event.clone(),
                position: e.envelope.position.clone(),
            })
            .collect(),
    }))
}
