//! [`AgentTokenStore`] on SQLite.

use chrono::Utc;

use super::{is_unique_violation, SqliteStore};
use crate::model::Agent;
use crate::store::agent_tokens::{AgentToken, AgentTokenStore, IssueError, NewAgentToken};

/// Bumps the configuration generation of `user_id`'s agent `agent_id` (not
/// being deleted) and returns the row; the statement that takes the write
/// lock.
const BUMP: &str = "UPDATE agents SET config_generation = config_generation + 1, updated_at = ?1
     WHERE id = ?2 AND user_id = ?3 AND desired_state != 'deleted' RETURNING *";

#[async_trait::async_trait]
impl AgentTokenStore for SqliteStore {
    async fn issue(
        &self,
        user_id: &str,
        agent_id: &str,
        new: &NewAgentToken,
        max: u32,
    ) -> Result<Option<Agent>, IssueError> {
        // The UPDATE comes first: the transaction holds the write lock from
        // it to the insert, so the count below cannot go stale.
        let mut tx = self.pool.begin().await?;
        let agent: Option<Agent> = sqlx::query_as(BUMP)
            .bind(Utc::now())
            .bind(agent_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(agent) = agent else {
            return Ok(None);
        };
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agent_tokens WHERE agent_id = ?1")
            .bind(agent_id)
            .fetch_one(&mut *tx)
            .await?;
        if held >= i64::from(max) {
            return Err(IssueError::TooMany { max });
        }
        let done = sqlx::query(
            "INSERT INTO agent_tokens (id, agent_id, name, token_hash, last_four, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&new.id)
        .bind(agent_id)
        .bind(&new.name)
        .bind(&new.token_hash)
        .bind(&new.last_four)
        .bind(new.created_at)
        .execute(&mut *tx)
        .await;
        match done {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(IssueError::NameTaken),
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(Some(agent))
    }

    async fn list(&self, agent_id: &str) -> Result<Vec<AgentToken>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, agent_id, name, token_hash, last_four, created_at FROM agent_tokens
             WHERE agent_id = ?1 ORDER BY created_at, rowid",
        )
        .bind(agent_id)
        .fetch_all(&self.pool)
        .await
    }

    async fn revoke(
        &self,
        user_id: &str,
        agent_id: &str,
        token_id: &str,
    ) -> Result<Option<Agent>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query(
            "DELETE FROM agent_tokens WHERE id = ?1 AND agent_id = ?2 AND agent_id IN
             (SELECT id FROM agents WHERE user_id = ?3 AND desired_state != 'deleted')",
        )
        .bind(token_id)
        .bind(agent_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        let agent: Option<Agent> = sqlx::query_as(BUMP)
            .bind(Utc::now())
            .bind(agent_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(agent)
    }

    async fn hashes(&self, agent_id: &str) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT token_hash FROM agent_tokens WHERE agent_id = ?1 ORDER BY token_hash",
        )
        .bind(agent_id)
        .fetch_all(&self.pool)
        .await
    }
}
