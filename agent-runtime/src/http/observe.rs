//! `GET /health` (public component snapshot) and `GET /metrics` (Prometheus).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::Value;

use super::AppState;
use crate::metrics::CONTENT_TYPE;

/// `GET /health`: always 200, no secrets.
pub async fn health(State(st): State<AppState>) -> Json<Value> {
    Json(
        st.health
            .snapshot(st.pairing.is_paired(), st.pairing.require_pairing()),
    )
}

/// `GET /metrics`: OpenMetrics text of the `zeroclaw_*` series.
pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], st.metrics.render())
}
