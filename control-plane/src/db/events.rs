//! History of status transitions (`agent_events`), read by the SSE streams
//! to replay what a subscriber missed before going live. Rows are written
//! only by [`crate::db::lifecycle`] (with the transition they record) and
//! are kept when their agent is deleted: the admins' history outlives it.
//!
//! Row ids are assigned in commit order (SQLite has one writer at a time),
//! so "every event with an id above N" is exactly what a subscriber that
//! saw N has not seen.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::db::Db;
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

    /// The SQL condition and its bound value (`?2`) for this scope.
    fn condition(&self) -> (&'static str, Option<&str>) {
        match self {
            Scope::All => ("1 = 1", None),
            Scope::User(id) => ("user_id = ?2", Some(id)),
            Scope::Agent(id) => ("agent_id = ?2", Some(id)),
        }
    }
}

fn from_row(row: &SqliteRow) -> Result<AgentEvent, sqlx::Error> {
    Ok(AgentEvent {
        id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        user_id: row.try_get("user_id")?,
        slug: row.try_get("slug")?,
        from: row.try_get("from_status")?,
        to: row.try_get("to_status")?,
        reason: row.try_get("reason")?,
        at: row.try_get("at")?,
    })
}

/// The newest `limit` events of `scope` with an id above `after` (all ids
/// when `None`), oldest first. The second value is whether more matching
/// events existed than were returned (older ones were left out).
pub async fn newest(
    db: &Db,
    scope: &Scope,
    after: Option<i64>,
    limit: u32,
) -> Result<(Vec<AgentEvent>, bool), sqlx::Error> {
    if limit == 0 {
        return Ok((Vec::new(), false));
    }
    let (condition, value) = scope.condition();
    // One row more than asked tells whether older ones were left out.
    let sql = format!(
        "SELECT id, agent_id, user_id, slug, from_status, to_status, reason, at
         FROM agent_events WHERE id > ?1 AND {condition} ORDER BY id DESC LIMIT ?3"
    );
    let rows = sqlx::query(&sql)
        .bind(after.unwrap_or(0))
        .bind(value)
        .bind(i64::from(limit) + 1)
        .fetch_all(db)
        .await?;
    let truncated = rows.len() > limit as usize;
    let mut events = rows
        .iter()
        .take(limit as usize)
        .map(from_row)
        .collect::<Result<Vec<_>, _>>()?;
    events.reverse();
    Ok((events, truncated))
}

/// Every event of `scope` with an id above `after`, oldest first, at most
/// `limit` (the oldest ones). Used to fill a gap after a lagging live feed.
pub async fn after(
    db: &Db,
    scope: &Scope,
    after: i64,
    limit: u32,
) -> Result<Vec<AgentEvent>, sqlx::Error> {
    let (condition, value) = scope.condition();
    let sql = format!(
        "SELECT id, agent_id, user_id, slug, from_status, to_status, reason, at
         FROM agent_events WHERE id > ?1 AND {condition} ORDER BY id LIMIT ?3"
    );
    sqlx::query(&sql)
        .bind(after)
        .bind(value)
        .bind(i64::from(limit))
        .fetch_all(db)
        .await?
        .iter()
        .map(from_row)
        .collect()
}
