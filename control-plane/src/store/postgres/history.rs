//! [`HistoryStore`] on PostgreSQL. Ids are committed in increasing order
//! (see `lifecycle::insert_event`), so `id > N` is exactly what a reader
//! that saw N has not seen.

use sqlx::postgres::PgRow;
use sqlx::Row;

use super::{has_nul, PgStore};
use crate::events::AgentEvent;
use crate::status::Status;
use crate::store::history::{HistoryStore, Scope};

/// The SQL condition and its bound value (`$2`) for `scope`; `$2` is
/// bound (as NULL) even when the condition does not name it.
fn condition(scope: &Scope) -> (&'static str, Option<&str>) {
    match scope {
        Scope::All => ("$2::TEXT IS NULL", None),
        Scope::User(id) => ("user_id = $2", Some(id)),
        Scope::Agent(id) => ("agent_id = $2", Some(id)),
    }
}

fn status(s: &str) -> Result<Status, sqlx::Error> {
    s.parse()
        .map_err(|e: crate::status::UnknownStatus| sqlx::Error::Decode(e.into()))
}

fn from_row(row: &PgRow) -> Result<AgentEvent, sqlx::Error> {
    let from: Option<String> = row.try_get("from_status")?;
    let to: String = row.try_get("to_status")?;
    Ok(AgentEvent {
        id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        user_id: row.try_get("user_id")?,
        slug: row.try_get("slug")?,
        from: from.as_deref().map(status).transpose()?,
        to: status(&to)?,
        reason: row.try_get("reason")?,
        at: row.try_get("at")?,
    })
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
        let rows = sqlx::query(&sql)
            .bind(after.unwrap_or(0))
            .bind(value)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
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
        let (condition, value) = condition(scope);
        if value.is_some_and(has_nul) {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, agent_id, user_id, slug, from_status, to_status, reason, at
             FROM agent_events WHERE id > $1 AND {condition} ORDER BY id LIMIT $3"
        );
        sqlx::query(&sql)
            .bind(after)
            .bind(value)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
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
