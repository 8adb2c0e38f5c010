//! Status transitions as they happen, for SSE subscribers (admins, owners).
//! The database (`agent_events`) is the history; this bus is the live feed.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::status::Status;

/// One status transition of one agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentEvent {
    /// Row id in `agent_events` (monotonic; SSE event id).
    pub id: i64,
    pub agent_id: String,
    pub user_id: String,
    pub slug: String,
    /// `None` for the creation event.
    pub from: Option<Status>,
    pub to: Status,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// Broadcast of [`AgentEvent`]s. Cheap to clone; slow subscribers lag (and
/// can re-read history from the database) rather than slowing writers.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<AgentEvent>,
}

impl EventBus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        EventBus { tx }
    }

    /// Publishes an event; having no subscriber is fine.
    pub fn publish(&self, event: AgentEvent) {
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<AgentEvent> {
        self.tx.subscribe()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}
