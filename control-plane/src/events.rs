//! Status transitions as they happen, for SSE subscribers (admins, owners).
//! The database (`agent_events`) is the history; this bus is the live feed.
//!
//! Two kinds of bus, chosen by the wiring (`App::build`):
//!
//! - [`EventBus::new`] (one replica, SQLite): [`EventBus::publish`]
//!   broadcasts the event at once;
//! - [`EventBus::relayed`] (several replicas, PostgreSQL): `publish` only
//!   records that an event committed; the relay (`crate::feed`) tells the
//!   other replicas, reads every replica's events back from the database in
//!   id order and [`EventBus::deliver`]s them, so every replica's
//!   subscribers see one sequence, in id order, whichever replica made the
//!   transition.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::status::Status;

/// One status transition of one agent.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct AgentEvent {
    /// Row id in `agent_events` (monotonic; SSE event id).
    pub id: i64,
    pub agent_id: String,
    pub user_id: String,
    pub slug: String,
    /// `None` for the creation event.
    #[sqlx(rename = "from_status")]
    pub from: Option<Status>,
    #[sqlx(rename = "to_status")]
    pub to: Status,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// Broadcast of [`AgentEvent`]s. Cheap to clone; slow subscribers lag (and
/// can re-read history from the database) rather than slowing writers.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<AgentEvent>,
    /// Relayed bus: the highest event id committed by this replica, for the
    /// relay to announce and read back.
    committed: Option<watch::Sender<i64>>,
}

impl EventBus {
    /// A bus that broadcasts what is published at once (one replica).
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        EventBus {
            tx,
            committed: None,
        }
    }

    /// A bus fed by a relay (several replicas): [`EventBus::publish`] hands
    /// the committed event's id to the returned receiver (the relay), which
    /// [`EventBus::deliver`]s the events in id order.
    pub fn relayed() -> (Self, watch::Receiver<i64>) {
        let (tx, _) = broadcast::channel(1024);
        let (committed, rx) = watch::channel(0);
        (
            EventBus {
                tx,
                committed: Some(committed),
            },
            rx,
        )
    }

    /// Publishes an event that has committed; having no subscriber is fine.
    /// On a relayed bus the event reaches subscribers through the relay.
    pub fn publish(&self, event: AgentEvent) {
        match &self.committed {
            Some(committed) => {
                committed.send_if_modified(|last| {
                    let newer = event.id > *last;
                    if newer {
                        *last = event.id;
                    }
                    newer
                });
            }
            None => {
                let _ = self.tx.send(event);
            }
        }
    }

    /// Broadcasts `event` to this replica's subscribers now (the relay's
    /// door; everyone else calls [`EventBus::publish`]).
    pub fn deliver(&self, event: AgentEvent) {
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
