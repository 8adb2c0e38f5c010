//! Agents, seed 003's second and third tables: lifecycle
//! (`POST /api/agents/{id}/start|stop|restart|retry`), inspection
//! (`GET …/logs|stats|health`) and the message proxy (`POST …/message`).
//! All scoped to the owner (404 otherwise).
//!
//! Architecture invariant: the agent's bearer token is decrypted only to
//! call its gateway and never leaves this process.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::agents::{owned, view};
use super::extract::{AgentId, Json};
use super::view::{redact_line, AgentView};
use crate::addressing::agent_base_url;
use crate::api::AppState;
use crate::api::AuthUser;
use crate::error::ApiError;
use crate::model::Agent;
use crate::orchestrator::OrchestratorError;
use crate::reconciler::requests;
use crate::secrets::{Redacted, SecretField};
use crate::status::Status;
use crate::validation;

/// Log lines returned by `…/logs`.
pub const LOG_TAIL: usize = 200;

/// Lifecycle and inspection routes (bounded by the normal request timeout).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/agents/{id}/start", post(start))
        .route("/api/agents/{id}/stop", post(stop))
        .route("/api/agents/{id}/restart", post(restart))
        .route("/api/agents/{id}/retry", post(retry))
        .route("/api/agents/{id}/stats", get(stats))
        .route("/api/agents/{id}/health", get(health))
}

/// The message proxy (an LLM answer may take longer: its own timeout).
pub fn message_router() -> Router<AppState> {
    Router::new().route("/api/agents/{id}/message", post(message))
}

type Accepted = (StatusCode, axum::Json<AgentView>);

/// `POST …/start` → 202: STOPPED → STARTING (re-pair) or ERROR → PENDING; 409 otherwise.
async fn start(
    State(state): State<AppState>,
    user: AuthUser,
    AgentId(id): AgentId,
) -> Result<Accepted, ApiError> {
    let agent = owned(&state, &user, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        view(&state, requests::start(&state.reconciler, &agent).await?),
    ))
}

/// `POST …/stop` → 202: RUNNING → STOPPING; 409 otherwise.
async fn stop(
    State(state): State<AppState>,
    user: AuthUser,
    AgentId(id): AgentId,
) -> Result<Accepted, ApiError> {
    let agent = owned(&state, &user, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        view(&state, requests::stop(&state.reconciler, &agent).await?),
    ))
}

/// `POST …/restart` → 202: RUNNING → STOPPING → … → RUNNING re-paired; 409 otherwise.
async fn restart(
    State(state): State<AppState>,
    user: AuthUser,
    AgentId(id): AgentId,
) -> Result<Accepted, ApiError> {
    let agent = owned(&state, &user, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        view(&state, requests::restart(&state.reconciler, &agent).await?),
    ))
}

/// `POST …/retry` → 202: ERROR → PENDING; 409 otherwise.
async fn retry(
    State(state): State<AppState>,
    user: AuthUser,
    AgentId(id): AgentId,
) -> Result<Accepted, ApiError> {
    let agent = owned(&state, &user, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        view(&state, requests::retry(&state.reconciler, &agent).await?),
    ))
}

/// The base URL of the agent's gateway (the reconciler's
/// [`agent_base_url`], so both follow `agent_address`), or 409 if it has no
/// gateway yet.
async fn gateway_base(state: &AppState, agent: &Agent) -> Result<String, ApiError> {
    agent_base_url(state.orchestrator.as_ref(), &state.config, agent)
        .await?
        .ok_or_else(|| ApiError::conflict(format!("agent is {}: no gateway yet", agent.status)))
}

/// `{"message"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    /// 1 byte to 32 KiB.
    pub message: Redacted<String>,
}

/// `POST …/message` → the agent's `/webhook` status and JSON, passed
/// through. 409 unless RUNNING and paired; 502 if the agent cannot be
/// reached or refuses our token (a re-pair is then requested).
/// `X-Idempotency-Key` (≤ 128 visible ASCII characters) is forwarded.
async fn message(
    State(state): State<AppState>,
    user: AuthUser,
    AgentId(id): AgentId,
    headers: HeaderMap,
    Json(body): Json<MessageBody>,
) -> Result<Response, ApiError> {
    let agent = owned(&state, &user, &id).await?;
    validation::message(body.message.expose())?;
    let key = match headers.get("x-idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| {
                    !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic())
                })
                .ok_or_else(|| ApiError::BadRequest {
                    message: "X-Idempotency-Key must be 1 to 128 visible ASCII characters".into(),
                    field: Some("X-Idempotency-Key".into()),
                })?,
        ),
    };
    if agent.status != Status::Running {
        return Err(ApiError::conflict(format!(
            "agent is {}, not RUNNING",
            agent.status
        )));
    }
    let stored = agent
        .encrypted_token
        .as_deref()
        .ok_or_else(|| ApiError::conflict("agent is not paired yet"))?;
    let token = Redacted(
        state
            .secrets
            .decrypt(&agent.id, SecretField::Token, stored)?,
    );
    let base = gateway_base(&state, &agent).await?;
    let reply = state
        .gateway
        .webhook(&base, token.expose(), body.message.expose(), key)
        .await?;
    if reply.status == 401 || reply.status == 403 {
        tracing::warn!(agent_id = %agent.id, slug = %agent.slug, "agent refused our token; asking for a re-pair");
        state.reconciler.wake(&agent.id).await;
        return Err(ApiError::BadGateway {
            code: "agent_unauthorized",
            message:
                "the agent refused the control plane's token; it is being re-paired, retry shortly",
            source: None,
        });
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
    Ok((status, axum::Json(reply.body)).into_response())
}

/// One line of `…/logs`.
#[derive(Serialize)]
pub struct LogLineView {
    pub at: Option<DateTime<Utc>>,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    pub text: String,
}

/// `{"lines": […]}`.
#[derive(Serialize)]
pub struct LogsView {
    pub lines: Vec<LogLineView>,
}

/// The agent's own secrets, to redact from its logs.
pub(crate) fn own_secrets(state: &AppState, agent: &Agent) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(k) = agent.encrypted_api_key.as_deref() {
        if let Ok(k) = state.secrets.decrypt(&agent.id, SecretField::ApiKey, k) {
            out.push(k);
        }
    }
    if let Ok(Some(c)) = agent.channels(&state.secrets) {
        out.extend(
            crate::channel_health::tokens(&c)
                .into_iter()
                .map(|(_, token)| token.to_owned()),
        );
    }
    out
}

/// `GET …/logs` → 200 `{"lines":[{"at","stream","text"}]}`: the last 200
/// lines of both streams, oldest first, with pairing codes, tokens and the
/// agent's secrets redacted; empty when it has no container. Routed by
/// [`super::logs_stream`], which also serves `?follow=true`.
pub(crate) async fn logs(
    State(state): State<AppState>,
    user: AuthUser,
    AgentId(id): AgentId,
) -> Result<axum::Json<LogsView>, ApiError> {
    let agent = owned(&state, &user, &id).await?;
    let Some(container) = agent.container_id.as_deref() else {
        return Ok(axum::Json(LogsView { lines: vec![] }));
    };
    let lines = match state.orchestrator.logs_tail(container, LOG_TAIL).await {
        Ok(lines) => lines,
        Err(e) if e.is_not_found() => vec![],
        Err(e) => return Err(e.into()),
    };
    let secrets = own_secrets(&state, &agent);
    Ok(axum::Json(LogsView {
        lines: lines
            .into_iter()
            .map(|l| LogLineView {
                at: l.at,
                stream: l.stream,
                text: redact_line(&l.text, &secrets),
            })
            .collect(),
    }))
}

/// `{"visible":true,"cpuPercent","memoryMb"}`, or `{"visible":false,
/// "reason"}` when the engine cannot show them from where the control
/// plane runs (Swarm: the agent's task is on another node).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsView {
    /// Whether the figures below were read.
    pub visible: bool,
    /// Percent of one CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<f64>,
    /// Why they are not visible.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET …/stats` → 200 with one live sample (or `visible: false` and the
/// reason); 409 if the agent has no container.
async fn stats(
    State(state): State<AppState>,
    user: AuthUser,
    AgentId(id): AgentId,
) -> Result<axum::Json<StatsView>, ApiError> {
    let agent = owned(&state, &user, &id).await?;
    let container = agent
        .container_id
        .as_deref()
        .ok_or_else(|| ApiError::conflict("agent has no container"))?;
    match state.orchestrator.stats(container).await {
        Ok(s) => Ok(axum::Json(StatsView {
            visible: true,
            cpu_percent: Some(s.cpu_percent),
            memory_mb: Some(s.memory_mb),
            reason: None,
        })),
        Err(OrchestratorError::NotVisible(why)) => Ok(axum::Json(StatsView {
            visible: false,
            cpu_percent: None,
            memory_mb: None,
            reason: Some(why),
        })),
        Err(e) if e.is_not_found() => Err(ApiError::conflict("agent has no container")),
        Err(e) => Err(e.into()),
    }
}

/// `GET …/health` → 200 with the agent's `/health` JSON; 409 without a
/// gateway port, 502 if it does not answer.
async fn health(
    State(state): State<AppState>,
    user: AuthUser,
    AgentId(id): AgentId,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let agent = owned(&state, &user, &id).await?;
    let base = gateway_base(&state, &agent).await?;
    Ok(axum::Json(state.gateway.health(&base).await?))
}
