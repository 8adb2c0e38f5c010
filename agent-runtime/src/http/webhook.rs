//! `POST /webhook`: one message in, the model's answer out.
//!
//! Checks, in this order: rate limit (429) → bearer (401) → body (413 over 64 KiB, 400 unless
//! `{"message": "<non-empty string>"}`) → `X-Idempotency-Key` seen within 300 s (200
//! `{"status":"duplicate",…}`) → provider (200 `{"response","model"}` or 500
//! `{"error":"LLM request failed"}`). The system prompt is the persona files plus the recalled
//! memory of the conversation [`WEBHOOK_CONVERSATION`] (`webhook`: all `/webhook` calls share
//! one history, the one earlier versions stored); with `auto_save` the exchange is stored there
//! before answering.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{bearer, client_ip, ApiError, AppState};
use crate::memory::WEBHOOK_CONVERSATION;
use crate::turn;

/// Header naming an idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "x-idempotency-key";

#[derive(Deserialize)]
struct WebhookBody {
    message: String,
}

/// The handler; see the module docs for the check order.
pub async fn webhook(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let ip = client_ip(peer);
    st.rate.check(ip).map_err(ApiError::RateLimited)?;
    if !st.pairing.authorize(bearer(&headers)) {
        return Err(ApiError::Unauthorized);
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::InvalidJson
        }
    })?;
    let message = serde_json::from_slice::<WebhookBody>(&body)
        .map_err(|_| ApiError::InvalidJson)?
        .message;
    if message.trim().is_empty() {
        return Err(ApiError::InvalidJson);
    }
    if let Some(key) = headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        if st.idempotency.check_and_record(key) {
            return Ok(Json(json!({
                "status": "duplicate",
                "idempotent": true,
                "message": "Request already processed for this idempotency key",
            })));
        }
    }

    match turn::run(&st, WEBHOOK_CONVERSATION, &message).await {
        Ok(text) => Ok(Json(
            json!({"response": text, "model": st.provider.model()}),
        )),
        Err(_) => Err(ApiError::LlmFailed),
    }
}
