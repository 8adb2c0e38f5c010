//! [`HistoryStore`] on SQLite.

use super::SqliteStore;
use crate::events::AgentEvent;
use crate::store::history::{newest_page, HistoryStore, Scope};

/// The SQL condition and its bound value (`?2`) for `scope`.
fn condition(scope: &Scope) -> (&'static str, Option<&str>) {
    match scope {
        Scope::All => ("1 = 1", None),
        Scope::User(id) => ("user_id = ?2", Some(id)),
        Scope::Agent(id) => ("agent_id = ?2", Some(id)),
    }
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
        let rows = sqlx::query_as(&sql)
            .bind(after.unwrap_or(0))
            .bind(value)
            .bind(i64::from(limit) + 1)
            .fetch_all(db)
            .await?;
        Ok(newest_page(rows, limit))
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
        sqlx::query_as(&sql)
            .bind(after)
            .bind(value)
            .bind(i64::from(limit))
            .fetch_all(db)
            .await
    }

    async fn last_id(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM agent_events")
            .fetch_one(&self.pool)
            .await
    }
}
