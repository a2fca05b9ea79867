//! The latest state of one product, for a storefront page that could not recover its
//! product room (`recovered: false`) or renders before it subscribes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::HttpState;
use super::auth::Reader;
use super::error::{ApiError, ErrorBody};
use crate::events::Position;
use crate::routing::{product_room, valid_product_id};

/// A product's latest known state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductResponse {
    /// The product.
    pub product_id: String,
    /// Merged from its last `inventory.updated` and `product.*` records: `stock`,
    /// `previousStock`, `name`, `sku`, `price`, `updatedAt` (whichever are known).
    #[schema(value_type = Object)]
    pub state: crate::history::State,
    /// The position in `product:<productId>` this state is as of: resume from it and apply
    /// only envelopes after it.
    pub position: Position,
}

/// The latest state of a product (any valid user token or API key).
#[utoipa::path(
    get, path = "/realtime/products/{productId}", tag = "products",
    params(("productId" = String, Path, description = "1 to 64 letters, digits, '-', '_', '.' or ':', starting with a letter or digit", pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$", min_length = 1, max_length = 64)),
    responses(
        (status = 200, description = "The latest state and its position", body = ProductResponse),
        (status = 401, description = "No valid credential", body = ErrorBody),
        (status = 404, description = "Nothing known about this product yet", body = ErrorBody),
        (status = 422, description = "Not a valid product id", body = ErrorBody),
        (status = 503, description = "The state store did not answer", body = ErrorBody),
    ),
    security(("bearer" = []), ("apiKey" = [])),
)]
pub async fn product(
    _reader: Reader,
    State(state): State<HttpState>,
    Path(product_id): Path<String>,
) -> Result<Json<ProductResponse>, ApiError> {
    if !valid_product_id(&product_id) {
        return Err(ApiError::field(
            "productId",
            "expected 1 to 64 letters, digits, '-', '_', '.' or ':', starting with a letter or digit",
        ));
    }
    let snapshot = state.history.snapshot(&product_room(&product_id)).await.map_err(|e| {
        tracing::error!(error = %e, "product state read failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the state store is unavailable; retry shortly")
    })?;
    let found = snapshot
        .state
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("nothing is known about product {product_id} yet")))?;
    let position = snapshot.head.in_room(product_room(&product_id));
    Ok(Json(ProductResponse {
        product_id,
        state: found,
        position,
    }))
}
