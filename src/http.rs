//! The HTTP routes beside Socket.IO: the Kubernetes probes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use crate::health::{Health, HealthReport, Stats};

/// What HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// Component state.
    pub health: Arc<Health>,
    /// Counters.
    pub stats: Arc<Stats>,
}

/// The probe routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        // `/health` is the same report as readiness: one handler, so they cannot drift apart.
        .route("/health", get(ready))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(state)
}

/// The process serves HTTP; never depends on Kafka, so a broker outage does not restart pods.
async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Whether to send this node traffic (consumer in its group, not draining), with every
/// component's state; 200 when ready, 503 otherwise.
async fn ready(State(s): State<HttpState>) -> (StatusCode, Json<HealthReport>) {
    let code = if s.health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(s.health.report(&s.stats)))
}
