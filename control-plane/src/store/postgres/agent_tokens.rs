//! [`AgentTokenStore`] on PostgreSQL.

use super::{has_nul, now, violates, PgStore};
use crate::model::Agent;
use crate::store::agent_tokens::{AgentToken, AgentTokenStore, IssueError, NewAgentToken};

/// Bumps the configuration generation of `user_id`'s agent `agent_id` (not
/// being deleted) and returns the row; it also locks the row until the
/// transaction ends, which serialises the token writes of one agent.
const BUMP: &str = "UPDATE agents SET config_generation = config_generation + 1, updated_at = $1
     WHERE id = $2 AND user_id = $3 AND desired_state <> 'deleted' RETURNING *";

#[async_trait::async_trait]
impl AgentTokenStore for PgStore {
    async fn issue(
        &self,
        user_id: &str,
        agent_id: &str,
        new: &NewAgentToken,
        max: u32,
    ) -> Result<Option<Agent>, IssueError> {
        if has_nul(user_id) || has_nul(agent_id) {
            return Ok(None);
        }
        let mut tx = self.pool.begin().await?;
        let agent: Option<Agent> = sqlx::query_as(BUMP)
            .bind(now())
            .bind(agent_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(agent) = agent else {
            return Ok(None);
        };
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agent_tokens WHERE agent_id = $1")
            .bind(agent_id)
            .fetch_one(&mut *tx)
            .await?;
        if held >= i64::from(max) {
            return Err(IssueError::TooMany { max });
        }
        let done = sqlx::query(
            "INSERT INTO agent_tokens (id, agent_id, name, token_hash, last_four, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
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
            Err(e) if violates(&e, "agent_tokens_agent_name") => return Err(IssueError::NameTaken),
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(Some(agent))
    }

    async fn list(&self, agent_id: &str) -> Result<Vec<AgentToken>, sqlx::Error> {
        if has_nul(agent_id) {
            return Ok(Vec::new());
        }
        sqlx::query_as(
            "SELECT id, agent_id, name, token_hash, last_four, created_at FROM agent_tokens
             WHERE agent_id = $1 ORDER BY created_at, id",
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
        if has_nul(user_id) || has_nul(agent_id) || has_nul(token_id) {
            return Ok(None);
        }
        let mut tx = self.pool.begin().await?;
        // The agent row first (locked until the end): the same order as
        // `issue`, so two writers of one agent never deadlock.
        let agent: Option<Agent> = sqlx::query_as(BUMP)
            .bind(now())
            .bind(agent_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        if agent.is_none() {
            return Ok(None);
        }
        let deleted = sqlx::query("DELETE FROM agent_tokens WHERE id = $1 AND agent_id = $2")
            .bind(token_id)
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            // Rolled back on drop: the generation is not bumped.
            return Ok(None);
        }
        tx.commit().await?;
        Ok(agent)
    }

    async fn hashes(&self, agent_id: &str) -> Result<Vec<String>, sqlx::Error> {
        if has_nul(agent_id) {
            return Ok(Vec::new());
        }
        sqlx::query_scalar(
            "SELECT token_hash FROM agent_tokens WHERE agent_id = $1 ORDER BY token_hash",
        )
        .bind(agent_id)
        .fetch_all(&self.pool)
        .await
    }
}
