//! Status transitions as Server-Sent Events, with history:
//!
//! - `GET /api/admin/events` — every agent (admins; 403 for anyone else);
//! - `GET /api/events` — every agent of the caller (their dashboard list);
//! - `GET /api/agents/{id}/events` — one agent of the caller (404 otherwise).
//!
//! Each transition is one `transition` event whose `id:` is its
//! `agent_events` row id and whose data is the JSON [`AgentEvent`]
//! (`{"id","agentId","userId","slug","from","to","reason","at"}`).
//!
//! History: `?history=N` (at most [`MAX_HISTORY`]) replays the newest N
//! stored events first; `Last-Event-ID: <id>` (sent by `EventSource` when it
//! reconnects) or `?after=<id>` (for a stream reopened by hand) replays every
//! event after that id (the newest [`MAX_HISTORY`]; a `truncated` event comes
//! first when older ones had to be left out). Replay and live feed join
//! without gaps or duplicates: the stream subscribes to the live bus
//! *before* reading history, then skips live events whose id is not above
//! the last replayed one (ids are assigned in commit order). If this
//! subscriber falls behind the bus, the events it missed are re-read from
//! the database.
//!
//! Streams send a keep-alive comment every [`KEEP_ALIVE`], end when the
//! service shuts down, and count against the caller's
//! [`MAX_EVENT_STREAMS`](super::streams::MAX_EVENT_STREAMS) (429 beyond).
//! Authentication: a bearer JWT or a stream ticket (see [`super::streams`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;

use super::extract::AgentId;
use super::streams::{guarded, StreamUser};
use crate::api::AppState;
use crate::error::ApiError;
use crate::events::AgentEvent;
use crate::store::history::Scope;
use crate::store::Store;

/// Most events replayed when a stream opens.
pub const MAX_HISTORY: u32 = 500;
/// Interval of the keep-alive comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// What a browser waits before reconnecting a dropped stream, milliseconds.
const RETRY_MS: u64 = 3000;
/// Batches of history read to fill the gap of a lagging subscriber.
const REFILL_BATCHES: usize = 4;

/// The streaming routes of this module (no request timeout).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/events", get(admin_events))
        .route("/api/events", get(my_events))
        .route("/api/agents/{id}/events", get(agent_events))
}

/// Query of the event streams. `ticket` is read by [`StreamUser`].
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    /// Replay the newest N stored events (0..=[`MAX_HISTORY`]) first.
    pub history: Option<u32>,
    /// Replay every event after this id (as `Last-Event-ID`).
    pub after: Option<i64>,
}

/// `GET /api/admin/events` → 200 `text/event-stream`; 401, 403 for a
/// non-admin, 400 on a bad query or `Last-Event-ID`, 429 over the cap.
async fn admin_events(
    State(state): State<AppState>,
    StreamUser(user): StreamUser,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if !user.is_admin() {
        return Err(ApiError::Forbidden("admin role required"));
    }
    open(&state, &user.id, Scope::All, &headers, &query).await
}

/// `GET /api/events` → 200 `text/event-stream` of the caller's agents'
/// transitions; 401, 400, 429 as above.
async fn my_events(
    State(state): State<AppState>,
    StreamUser(user): StreamUser,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    open(
        &state,
        &user.id,
        Scope::User(user.id.clone()),
        &headers,
        &query,
    )
    .await
}

/// `GET /api/agents/{id}/events` → 200 `text/event-stream` of one agent's
/// transitions; 404 unless the caller owns it; 401, 400, 429 as above.
async fn agent_events(
    State(state): State<AppState>,
    StreamUser(user): StreamUser,
    AgentId(id): AgentId,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let agent = state
        .store
        .agents()
        .get_for_user(&user.id, &id)
        .await?
        .ok_or(ApiError::NotFound("agent"))?;
    open(&state, &user.id, Scope::Agent(agent.id), &headers, &query).await
}

/// Where replay starts: `Last-Event-ID` or `?after=` (the header wins).
fn resume_point(headers: &HeaderMap, query: &EventsQuery) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(query.after);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text.is_empty() {
        return Ok(query.after);
    }
    text.parse::<i64>()
        .map(Some)
        .map_err(|_| ApiError::BadRequest {
            message: "Last-Event-ID must be an event id (an integer)".into(),
            field: Some("Last-Event-ID".into()),
        })
}

/// Subscribes, replays history, and returns the SSE response.
async fn open(
    state: &AppState,
    user_id: &str,
    scope: Scope,
    headers: &HeaderMap,
    query: &EventsQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = resume_point(headers, query)?;
    let limit = match (query.history, after) {
        (Some(n), _) if n > MAX_HISTORY => {
            return Err(ApiError::validation(
                "history",
                format!("history: at most {MAX_HISTORY}"),
            ))
        }
        (Some(n), _) => n,
        (None, Some(_)) => MAX_HISTORY,
        (None, None) => 0,
    };
    let slot = state.streams.events.acquire(user_id)?;
    // Subscribe first: whatever commits from now on is on this receiver,
    // and whatever committed before is in the history read below.
    let rx = state.events.subscribe();
    let (replay, truncated) = state.store.history().newest(&scope, after, limit).await?;
    let boundary = replay
        .last()
        .map_or(after.unwrap_or(0), |e| e.id.max(after.unwrap_or(0)));
    let mut pending: VecDeque<Event> = VecDeque::new();
    if truncated && after.is_some() {
        pending.push_back(
            Event::default()
                .event("truncated")
                .data("older events were left out; reload the current state"),
        );
    }
    pending.extend(replay.iter().map(transition_event));
    if let Some(first) = pending.pop_front() {
        pending.push_front(first.retry(Duration::from_millis(RETRY_MS)));
    }
    let feed = Feed {
        store: state.store.clone(),
        scope,
        rx,
        pending,
        boundary,
        last_sent: boundary,
    };
    let stream = futures::stream::unfold(feed, Feed::next)
        .map(Ok)
        .take_until(state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(guarded(stream, slot)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// The SSE event of one transition.
pub fn transition_event(event: &AgentEvent) -> Event {
    Event::default()
        .event("transition")
        .id(event.id.to_string())
        .json_data(event)
        .unwrap_or_else(|_| Event::default().event("error").data("unserialisable event"))
}

/// The state of one subscriber's stream.
struct Feed {
    store: Store,
    scope: Scope,
    rx: broadcast::Receiver<AgentEvent>,
    /// Events ready to send (replayed history, gap fills).
    pending: VecDeque<Event>,
    /// Live events with an id at or below this were replayed already.
    boundary: i64,
    /// The highest event id sent.
    last_sent: i64,
}

impl Feed {
    /// The next event to send, or `None` when the bus closes.
    async fn next(mut self) -> Option<(Event, Feed)> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some((ev, self));
            }
            match self.rx.recv().await {
                Ok(ev) if ev.id > self.boundary && self.scope.matches(&ev) => {
                    self.last_sent = self.last_sent.max(ev.id);
                    return Some((transition_event(&ev), self));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "event stream subscriber lagged; refilling from history"
                    );
                    self.refill().await;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Re-reads what this subscriber missed while lagging (at most
    /// [`REFILL_BATCHES`] × [`MAX_HISTORY`] events; beyond that, or if the
    /// database fails, a `truncated` event tells the client to reload).
    async fn refill(&mut self) {
        for _ in 0..REFILL_BATCHES {
            match self
                .store
                .history()
                .after(&self.scope, self.last_sent, MAX_HISTORY)
                .await
            {
                Ok(events) => {
                    if let Some(last) = events.last() {
                        self.boundary = self.boundary.max(last.id);
                        self.last_sent = self.last_sent.max(last.id);
                    }
                    self.pending.extend(events.iter().map(transition_event));
                    if events.len() < MAX_HISTORY as usize {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading missed events failed");
                    break;
                }
            }
        }
        self.pending.push_back(
            Event::default()
                .event("truncated")
                .data("events were missed; reload the current state"),
        );
    }
}
