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
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(state)
}

/// Summary of every component; 200 when ready, 503 otherwise.
async fn health(State(s): State<HttpState>) -> (StatusCode, Json<HealthReport>) {
    report(&s)
}

/// The process serves HTTP; never depends on Kafka, so a broker outage does not restart pods.
async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Whether to send this node traffic: consumer in its group and not draining.
async fn ready(State(s): State<HttpState>) -> (StatusCode, Json<HealthReport>) {
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
