//! History of status transitions (`agent_events`), read by the SSE streams
//! to replay what a subscriber missed before going live. Rows are written
//! only by [`super::LifecycleStore`] and [`super::AgentStore::insert_pending`]
//! (with the change they record) and are kept when their agent is deleted:
//! the admins' history outlives it.
//!
//! Guarantee (both backends): ids become visible in increasing order, so
//! "every event with an id above N" is exactly what a reader that saw N has
//! not seen.

use crate::events::AgentEvent;

/// Which agents' events a stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every agent (admins).
    All,
    /// Every agent of one user (id), deleted ones included.
    User(String),
    /// One agent (id).
    Agent(String),
}

impl Scope {
    /// Whether `event` belongs to this scope.
    pub fn matches(&self, event: &AgentEvent) -> bool {
        match self {
            Scope::All => true,
            Scope::User(id) => event.user_id == *id,
            Scope::Agent(id) => event.agent_id == *id,
        }
    }
}

/// The answer of [`HistoryStore::newest`] from rows read newest first with
/// one row more than `limit` (which tells whether older ones were left
/// out): the newest `limit`, oldest first, and that flag.
pub(crate) fn newest_page(mut rows: Vec<AgentEvent>, limit: u32) -> (Vec<AgentEvent>, bool) {
    let truncated = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    rows.reverse();
    (rows, truncated)
}

/// Reads of `agent_events`.
#[async_trait::async_trait]
pub trait HistoryStore: Send + Sync {
    /// The newest `limit` events of `scope` with an id above `after` (all
    /// ids when `None`), oldest first. The second value is whether more
    /// matching events existed than were returned (older ones left out).
    async fn newest(
        &self,
        scope: &Scope,
        after: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<AgentEvent>, bool), sqlx::Error>;

    /// Every event of `scope` with an id above `after`, oldest first, at
    /// most `limit` (the oldest ones). Fills a gap after a lagging live feed,
    /// and feeds the live bus from the database on PostgreSQL.
    async fn after(
        &self,
        scope: &Scope,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AgentEvent>, sqlx::Error>;

    /// The highest event id, 0 when there is none.
    async fn last_id(&self) -> Result<i64, sqlx::Error>;
}
