//! `POST /pair` (code → token) and `GET /pair/code` (the current code, loopback only).
//!
//! `/pair/code` answers 403 to any non-loopback peer. In a container that covers every
//! caller coming through a published port (they arrive from the bridge gateway address), so
//! the code only leaves the container through stdout/`docker logs`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::{client_ip, ApiError, AppState};
use crate::lockout::{LOCKOUT_DURATION, MAX_FAILED_ATTEMPTS};
use crate::pairing::PairOutcome;

/// Header carrying the code.
pub const PAIRING_HEADER: &str = "x-pairing-code";

/// `POST /pair`: header `X-Pairing-Code: <6 digits>`, body ignored.
///
/// 200 `{"paired":true,"persisted":bool,"token":"zc_…","message":"…"}`; 403 wrong/used code
/// or pairing disabled; 429 during a lockout. Logs: one `warn` line when a client gets locked
/// out, `debug` for other wrong codes, nothing during the lock.
pub async fn pair(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let ip = client_ip(peer);
    let code = headers.get(PAIRING_HEADER).and_then(|v| v.to_str().ok());
    match st.pairing.try_pair(ip, code) {
        PairOutcome::Disabled => Err(ApiError::PairingDisabled),
        // Logged once per lockout, not per attempt: a guessing client must not be able to
        // fill the disk with log lines. Attempts during the lock log nothing; the code is
        // never logged.
        PairOutcome::LockedOut(secs) => Err(ApiError::LockedOut(secs)),
        PairOutcome::Invalid { lockout_started } => {
            if lockout_started {
                tracing::warn!(
                    client = %ip,
                    failed_attempts = MAX_FAILED_ATTEMPTS,
                    lockout_secs = LOCKOUT_DURATION.as_secs(),
                    "pairing locked out after too many invalid codes"
                );
            } else {
                tracing::debug!(client = %ip, "invalid pairing code");
            }
            Err(ApiError::InvalidPairingCode)
        }
        PairOutcome::Paired { token, persisted } => {
            let persisted = persisted.unwrap_or_else(|e| {
                tracing::error!(error = %e, "could not persist the token hash; it lives in memory only");
                false
            });
            tracing::info!(client = %ip, persisted, "client paired");
            let message = if persisted {
                "Paired. Send Authorization: Bearer <token> with each request. The token survives restarts."
            } else {
                "Paired. Send Authorization: Bearer <token> with each request. The token is valid until the gateway restarts."
            };
            Ok(Json(json!({
                "paired": true,
                "persisted": persisted,
                "token": token,
                "message": message,
            })))
        }
    }
}

/// `GET /pair/code`: `{"success":true,"pairing_required":bool,"pairing_code":"123456"|null}`
/// to loopback peers; 403 to anyone else. As upstream 0.6.9 answers it
/// (`src/gateway/mod.rs`, `handle_pair_code`): `pairing_required` is the configuration's
/// `require_pairing`, and the code is there only while the gateway is unpaired.
pub async fn code(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Json<Value>, ApiError> {
    if !client_ip(peer).is_loopback() {
        return Err(ApiError::LoopbackOnly);
    }
    Ok(Json(json!({
        "success": true,
        "pairing_required": st.pairing.require_pairing(),
        "pairing_code": st.pairing.current_code().filter(|_| !st.pairing.is_paired()),
    })))
}
