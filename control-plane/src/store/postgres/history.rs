//! [`HistoryStore`] on PostgreSQL. Ids are committed in increasing order
//! (see `lifecycle::insert_event`), so `id > N` is exactly what a reader
//! that saw N has not seen.

use super::{has_nul, PgStore};
use crate::events::AgentEvent;
use crate::store::history::{newest_page, HistoryStore, Scope};

/// The SQL condition and its bound value (`$2`) for `scope`; `$2` is
/// bound (as NULL) even when the condition does not name it.
fn condition(scope: &Scope) -> (&'static str, Option<&str>) {
    match scope {
        Scope::All => ("$2::TEXT IS NULL", None),
        Scope::User(id) => ("user_id = $2", Some(id)),
        Scope::Agent(id) => ("agent_id = $2", Some(id)),
    }
}

#[async_trait::async_trait]
impl HistoryStore for PgStore {
    async fn newest(
        &self,
        scope: &Scope,
        after: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<AgentEvent>, bool), sqlx::Error> {
        let (condition, value) = condition(scope);
        if limit == 0 || value.is_some_and(has_nul) {
            return Ok((Vec::new(), false));
        }
        // One row more than asked tells whether older ones were left out.
        let sql = format!(
            "SELECT id, agent_id, user_id, slug, from_status, to_status, reason, at
             FROM agent_events WHERE id > $1 AND {condition} ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query_as(&sql)
            .bind(after.unwrap_or(0))
            .bind(value)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        Ok(newest_page(rows, limit))
    }

    async fn after(
        &self,
        scope: &Scope,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AgentEvent>, sqlx::Error> {
        let (condition, value) = condition(scope);
        if value.is_some_and(has_nul) {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, agent_id, user_id, slug, from_status, to_status, reason, at
             FROM agent_events WHERE id > $1 AND {condition} ORDER BY id LIMIT $3"
        );
        sqlx::query_as(&sql)
            .bind(after)
            .bind(value)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
    }

    async fn last_id(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM agent_events")
            .fetch_one(&self.pool)
            .await
    }
}
