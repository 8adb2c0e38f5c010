//! `GET /api/agents/{id}/logs`: the last lines of the agent's container
//! (`?follow` absent or false: one JSON answer, see
//! [`agent_ops::logs`](super::agent_ops)), or its log stream as
//! Server-Sent Events (`?follow=true`).
//!
//! The stream sends the last `?tail=N` lines (default [`DEFAULT_TAIL`], at
//! most [`MAX_TAIL`]) and then every new line, each as a `line` event with
//! JSON `{"at","stream","text"}`, redacted exactly like the non-follow form
//! (pairing codes, `zc_` tokens, the agent's own API key and bot tokens).
//! Docker ends a follow when the container stops (PITFALLS: it does not
//! follow a restart); the stream then inspects the container and sends one
//! `end` event `{"reason": "stopped" | "removed" | "interrupted" | "error" |
//! "no container"}` and closes, so a client knows not to reconnect blindly.
//! It also ends at shutdown. Each user may hold
//! [`MAX_LOG_STREAMS`](super::streams::MAX_LOG_STREAMS) open (429
//! `too_many_streams` beyond). Authentication: a bearer JWT, or (follow
//! only) a stream ticket.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Query, Request, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use super::agent_ops::{self, own_secrets, LogLineView};
use super::agents::owned;
use super::events::KEEP_ALIVE;
use super::extract::AgentId;
use super::streams::{guarded, StreamUser};
use super::view::redact_line;
use super::REQUEST_TIMEOUT;
use crate::api::AppState;
use crate::api::AuthUser;
use crate::error::ApiError;
use crate::orchestrator::{LogLine, Orchestrator, OrchestratorError};

/// Lines replayed before following, by default.
pub const DEFAULT_TAIL: usize = 200;
/// Most lines replayed before following.
pub const MAX_TAIL: usize = 1000;

/// The route of this module (streaming: no request timeout on `follow`).
pub fn router() -> Router<AppState> {
    Router::new().route("/api/agents/{id}/logs", get(logs))
}

/// Query of `…/logs`.
#[derive(Debug, Default, Deserialize)]
pub struct LogsQuery {
    /// Stream as SSE instead of answering once.
    #[serde(default)]
    pub follow: bool,
    /// Lines replayed before following (follow only).
    pub tail: Option<usize>,
}

/// `{"reason"}` of the final `end` event.
#[derive(Serialize)]
struct End<'a> {
    reason: &'a str,
}

/// `GET …/logs[?follow=true&tail=N]`: 200 JSON or 200 `text/event-stream`;
/// 401 unauthenticated, 404 not the caller's agent, 422 `tail` too large,
/// 429 too many open log streams.
async fn logs(
    State(state): State<AppState>,
    Query(query): Query<LogsQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    if !query.follow {
        // A ticket is for streams only: the one-shot form takes the JWT.
        let user = AuthUser::from_request_parts(&mut parts, &state).await?;
        let id = AgentId::from_request_parts(&mut parts, &state).await?;
        return match tokio::time::timeout(REQUEST_TIMEOUT, agent_ops::logs(State(state), user, id))
            .await
        {
            Ok(answer) => answer.map(IntoResponse::into_response),
            Err(_) => Err(ApiError::Timeout),
        };
    }
    let StreamUser(user) = StreamUser::from_request_parts(&mut parts, &state).await?;
    let AgentId(id) = AgentId::from_request_parts(&mut parts, &state).await?;
    let tail = query.tail.unwrap_or(DEFAULT_TAIL);
    if tail > MAX_TAIL {
        return Err(ApiError::validation(
            "tail",
            format!("tail: at most {MAX_TAIL}"),
        ));
    }
    let agent = owned(&state, &user, &id).await?;
    let slot = state.streams.logs.acquire(&user.id)?;
    let secrets = Arc::new(own_secrets(&state, &agent));
    let events: BoxStream<'static, Event> = match agent.container_id {
        None => stream::iter([end_event("no container")]).boxed(),
        Some(container) => {
            let lines = state.orchestrator.logs_follow(&container, tail);
            let span = tracing::info_span!("log_stream", agent_id = %agent.id, slug = %agent.slug);
            follow(state.orchestrator.clone(), container, lines, secrets, span)
        }
    };
    tracing::debug!(agent_id = %agent.id, slug = %agent.slug, "log stream opened");
    let events = events
        .map(Ok::<_, Infallible>)
        .take_until(state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(guarded(events, slot))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// `line` events for `lines`, then one `end` event. `span` (the agent's id
/// and slug) covers what this stream logs.
fn follow(
    docker: Arc<dyn Orchestrator>,
    container: String,
    lines: BoxStream<'static, Result<LogLine, OrchestratorError>>,
    secrets: Arc<Vec<String>>,
    span: tracing::Span,
) -> BoxStream<'static, Event> {
    stream::unfold(Some(lines), move |state| {
        let docker = docker.clone();
        let container = container.clone();
        let secrets = secrets.clone();
        async move {
            let mut lines = state?;
            match lines.next().await {
                Some(Ok(line)) => Some((line_event(&line, &secrets), Some(lines))),
                Some(Err(e)) if e.is_not_found() => Some((end_event("removed"), None)),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "log stream failed");
                    Some((end_event("error"), None))
                }
                None => Some((
                    end_event(why_ended(docker.as_ref(), &container).await),
                    None,
                )),
            }
        }
        .instrument(span.clone())
    })
    .boxed()
}

/// Why Docker ended a follow: the container stopped, is gone, or still
/// runs (the connection was cut).
async fn why_ended(docker: &dyn Orchestrator, container: &str) -> &'static str {
    match docker.inspect(container).await {
        Ok(Some(c)) if c.running => "interrupted",
        Ok(Some(_)) => "stopped",
        Ok(None) => "removed",
        Err(_) => "error",
    }
}

/// One redacted log line as a `line` event.
fn line_event(line: &LogLine, secrets: &[String]) -> Event {
    let view = LogLineView {
        at: line.at,
        stream: line.stream,
        text: redact_line(&line.text, secrets),
    };
    Event::default()
        .event("line")
        .json_data(&view)
        .unwrap_or_else(|_| Event::default().event("line").data("{}"))
}

/// The final `end` event.
fn end_event(reason: &str) -> Event {
    Event::default()
        .event("end")
        .json_data(End { reason })
        .unwrap_or_else(|_| Event::default().event("end").data("{}"))
}
