//! Kubernetes probes and the Prometheus endpoint; open, no authentication.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::HttpState;
use crate::health::HealthReport;

/// The liveness body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Live {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process serves HTTP. Never depends on Kafka, so a broker outage does not
/// make Kubernetes restart healthy pods.
#[utoipa::path(get, path = "/health/live", tag = "probes", responses((status = 200, description = "Serving", body = Live)))]
pub async fn live() -> Json<Live> {
    Json(Live { status: "ok" })
}

/// Readiness: the consumer is in its group (an empty assignment counts) and the node is
/// not draining; 200 or 503, with every component's state.
#[utoipa::path(
    get, path = "/health/ready", tag = "probes",
    responses(
        (status = 200, description = "Ready for traffic", body = HealthReport),
        (status = 503, description = "Not ready: joining the group, or draining", body = HealthReport),
    )
)]
pub async fn ready(State(s): State<HttpState>) -> (StatusCode, Json<HealthReport>) {
    report(&s)
}

/// Summary of every component; the same status code and body as readiness, so the two
/// cannot drift apart.
#[utoipa::path(
    get, path = "/health", tag = "probes",
    responses(
        (status = 200, description = "All components up", body = HealthReport),
        (status = 503, description = "A component is not up, or the node is draining", body = HealthReport),
    )
)]
pub async fn health(State(s): State<HttpState>) -> (StatusCode, Json<HealthReport>) {
    report(&s)
}

fn report(s: &HttpState) -> (StatusCode, Json<HealthReport>) {
    let code = if s.health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(s.health.report(&s.stats)))
}

/// Prometheus metrics, text format. Keep it off the public network: set `METRICS_PORT` to
/// serve it on its own port (then it is absent from this one).
#[utoipa::path(
    get, path = "/metrics", tag = "probes",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain; version=0.0.4"))
)]
pub async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render())
}
