//! `GET /api/status`: bearer-protected runtime summary; the control plane uses it to check
//! that a stored token is still accepted.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::{bearer, ApiError, AppState};

/// 200 `{"status":"ok","paired","require_pairing","provider","model","memory_backend",
/// "auto_save","channels":[…],"uptime_seconds","pid","version"}`; 401 without a valid token
/// (when pairing is required).
pub async fn status(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    if !st.pairing.authorize(bearer(&headers)) {
        return Err(ApiError::Unauthorized);
    }
    Ok(Json(json!({
        "status": "ok",
        "paired": st.pairing.is_paired(),
        "require_pairing": st.pairing.require_pairing(),
        "provider": st.provider.name(),
        "model": st.provider.model(),
        "memory_backend": st.memory.backend().as_str(),
        "auto_save": st.auto_save,
        "channels": st.channels,
        "uptime_seconds": st.health.uptime_seconds(),
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
    })))
}
