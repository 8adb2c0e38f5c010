//! `POST /webhook`: one message in, the model's answer out.
//!
//! Checks, in this order: rate limit (429) → bearer (401) → body (413 over 64 KiB, 400 unless
//! `{"message": "<non-empty string>"}`) → `X-Idempotency-Key` seen within 300 s (200
//! `{"status":"duplicate",…}`) → provider (200 `{"response","model"}` or 500
//! `{"error":"LLM request failed"}`). The system prompt is the persona files plus recalled
//! memory; with `auto_save` the exchange is stored before answering.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{bearer, client_ip, ApiError, AppState};
use crate::memory::{Recall, Turn};
use crate::persona;
use crate::providers::ChatRequest;

/// Header naming an idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "x-idempotency-key";

#[derive(Deserialize)]
struct WebhookBody {
    message: String,
}

/// Builds the system prompt and history (blocking file and SQLite reads).
fn prepare(st: &AppState) -> (String, Vec<Turn>) {
    let sections = persona::load_sections(&st.workspace);
    let recall = match st.memory.get().and_then(|m| m.recall()) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "memory recall failed; answering without history");
            st.metrics.record_error("memory");
            Recall::default()
        }
    };
    let notes = recall
        .notes
        .as_deref()
        .map(|n| ("Recent conversation (memory/YYYY-MM-DD.md)", n));
    (persona::assemble(&sections, notes), recall.turns)
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

    let _session = st.metrics.session();
    let st2 = st.clone();
    let (system, history) = tokio::task::spawn_blocking(move || prepare(&st2))
        .await
        .map_err(|_| ApiError::LlmFailed)?;

    let started = Instant::now();
    let result = st
        .provider
        .chat(ChatRequest {
            system: &system,
            history: &history,
            message: &message,
        })
        .await;
    let component = st.provider_component();
    let (provider, model) = (st.provider.name(), st.provider.model());
    match result {
        Ok(reply) => {
            st.metrics.record_llm(
                provider,
                model,
                true,
                started.elapsed(),
                (reply.input_tokens, reply.output_tokens),
            );
            st.health.mark_ok(&component);
            if st.auto_save {
                let st2 = st.clone();
                let answer = reply.text.clone();
                let saved = tokio::task::spawn_blocking(move || {
                    st2.memory.get().and_then(|m| m.save(&message, &answer))
                })
                .await;
                if let Ok(Err(e)) = saved {
                    tracing::warn!(error = %e, "memory save failed");
                    st.metrics.record_error("memory");
                }
            }
            Ok(Json(json!({"response": reply.text, "model": model})))
        }
        Err(e) => {
            st.metrics
                .record_llm(provider, model, false, started.elapsed(), (None, None));
            st.health.mark_error(&component, &e.to_string());
            tracing::error!(provider, model, error = %e, "LLM request failed");
            Err(ApiError::LlmFailed)
        }
    }
}
