//! The HTTP side beside Socket.IO: probes, metrics, the operator REST API and its OpenAPI
//! description (served at `/api/docs`, committed as `openapi/openapi.json`).
//!
//! Handlers live by concern: [`probes`], [`broadcast`], [`stats`]; the error policy and
//! body parsing in [`error`]; who may call what in [`auth`].

pub mod auth;
pub mod broadcast;
pub mod dashboard;
pub mod error;
pub mod probes;
pub mod products;
pub mod stats;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::Verifier;
use crate::config::ApiKeys;
use crate::delivery::Delivery;
use crate::health::Health;
use crate::history::History;
use crate::routing::RoutingRules;
use crate::socket::hub::Hub;
use crate::stats::Stats;

/// Where the OpenAPI document is served.
pub(crate) const OPENAPI_PATH: &str = "/api/docs/openapi.json";

/// What HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// Component state.
    pub health: Arc<Health>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Verifies admin bearer tokens.
    pub verifier: Arc<Verifier>,
    /// Accepted service keys.
    pub api_keys: Arc<ApiKeys>,
    /// The pipeline REST broadcasts go through.
    pub delivery: Delivery,
    /// For socket and room counts.
    pub hub: Arc<dyn Hub>,
    /// Routing settings (alerts).
    pub rules: RoutingRules,
    /// The consumer group, for stats.
    pub group_id: Arc<str>,
    /// Latest product states.
    pub history: Arc<dyn History>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "realtime-bridge",
        description = "Kafka business events → Socket.IO rooms. This API sends events by hand, reports stats, and answers the Kubernetes probes.\n\n\
            Broadcast and stats endpoints need `Authorization: Bearer <JWT with the admin role>` or `X-API-Key: <key from API_KEYS>`. \
            Errors are `{error, field?}` with a 4xx status.",
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "broadcast", description = "Send events through the same routing and history as Kafka records"),
        (name = "stats", description = "What this node is doing"),
        (name = "products", description = "Latest product states (any signed-in user or API key)"),
        (name = "probes", description = "Kubernetes probes and Prometheus metrics (no authentication)"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components.add_security_scheme("apiKey", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
    }
}

fn api(with_metrics: bool) -> OpenApiRouter<HttpState> {
    let api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(probes::health))
        .routes(routes!(probes::live))
        .routes(routes!(probes::ready));
    let api = if with_metrics { api.routes(routes!(probes::metrics)) } else { api };
    api.routes(routes!(stats::stats))
        .routes(routes!(broadcast::notification))
        .routes(routes!(broadcast::order))
        .routes(routes!(broadcast::inventory))
        .routes(routes!(broadcast::admin))
        .routes(routes!(products::product))
}

/// The OpenAPI document, as served (and committed as `openapi/openapi.json`). It always
/// lists `/metrics`, which moves to `METRICS_PORT` when that is set.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api(true).into_openapi()
}

/// Every HTTP route. With `metrics_here` false, `/metrics` is left to [`metrics_router`] on
/// its own port.
///
/// `dashboard`: whether `/dashboard` is served, and whether `/` redirects to it.
pub(crate) fn router(state: HttpState, max_body_bytes: usize, metrics_here: bool, dashboard: Option<bool>) -> Router {
    let (router, _) = api(metrics_here).split_for_parts();
    let router = match dashboard {
        Some(redirect_root) => router.merge(dashboard::router(redirect_root)),
        None => router,
    };
    router
        .with_state(state)
        .merge(SwaggerUi::new("/api/docs").url(OPENAPI_PATH, openapi()))
        .route(crate::contract::ASYNCAPI_PATH, axum::routing::get(asyncapi))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(crate::metrics::track_http))
}

/// The AsyncAPI document (committed as `openapi/asyncapi.json`): public, like the OpenAPI
/// one. Built and serialised once; each request gets the same bytes.
async fn asyncapi() -> impl axum::response::IntoResponse {
    static DOCUMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| crate::contract::asyncapi().to_string());
    ([(axum::http::header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}

/// `/metrics` alone, for `METRICS_PORT`.
pub(crate) fn metrics_router() -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(probes::metrics))
        .layer(axum::middleware::from_fn(crate::metrics::track_http))
}
