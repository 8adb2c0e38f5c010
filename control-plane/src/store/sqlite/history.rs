//! [`HistoryStore`] on SQLite.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::SqliteStore;
use crate::events::AgentEvent;
use crate::store::history::{HistoryStore, Scope};

/// The SQL condition and its bound value (`?2`) for `scope`.
fn condition(scope: &Scope) -> (&'static str, Option<&str>) {
    match scope {
        Scope::All => ("1 = 1", None),
        Scope::User(id) => ("user_id = ?2", Some(id)),
        Scope::Agent(id) => ("agent_id = ?2", Some(id)),
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

#[async_trait::async_trait]
impl HistoryStore for SqliteStore {
    async fn newest(
        &self,
        scope: &Scope,
        after: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<AgentEvent>, bool), sqlx::Error> {
        let db = &self.pool;
        if limit == 0 {
            return Ok((Vec::new(), false));
        }
        let (condition, value) = condition(scope);
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

    async fn after(
        &self,
        scope: &Scope,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AgentEvent>, sqlx::Error> {
        let db = &self.pool;
        let (condition, value) = condition(scope);
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

    async fn last_id(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM agent_events")
            .fetch_one(&self.pool)
            .await
    }
}
