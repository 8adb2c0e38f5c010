//! [`AgentStore`] on SQLite.

use chrono::Utc;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::{is_unique_violation, lifecycle::insert_event, SqliteStore};
use crate::events::AgentEvent;
use crate::model::Agent;
use crate::secrets::SecretField;
use crate::status::Status;
use crate::store::agents::{
    owned_agents, AgentChanges, AgentStore, AgentWithOwner, ChannelToken, ClaimError, InsertError,
    NewAgent, StoredSecrets, UpdateError, AGENT_COLUMNS,
};

/// Replaces the channel tokens of agent `id` with `tokens`, inside the
/// caller's write transaction: the agent's rows go first (its own tokens
/// are then free for it), and a token another agent holds fails on the
/// primary key, naming its field.
async fn claim_tokens(
    tx: &mut SqliteConnection,
    id: &str,
    tokens: &[ChannelToken],
) -> Result<(), ClaimError> {
    sqlx::query("DELETE FROM channel_tokens WHERE agent_id = ?1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(ClaimError::Db)?;
    for t in tokens {
        let done = sqlx::query(
            "INSERT INTO channel_tokens (token_hash, agent_id, field) VALUES (?1, ?2, ?3)",
        )
        .bind(&t.hash)
        .bind(id)
        .bind(&t.field)
        .execute(&mut *tx)
        .await;
        match done {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(ClaimError::Taken(t.field.clone())),
            Err(e) => return Err(ClaimError::Db(e)),
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl AgentStore for SqliteStore {
    async fn insert_pending(
        &self,
        new: &NewAgent,
        max_agents: Option<u32>,
    ) -> Result<(Agent, AgentEvent), InsertError> {
        let db = &self.pool;
        let now = Utc::now();
        let limit = max_agents.map_or(i64::MAX, i64::from);
        let mut tx = db.begin().await?;
        let inserted: Result<Option<Agent>, sqlx::Error> = sqlx::query_as(
        "INSERT INTO agents (id, user_id, name, slug, agent_name, user_name, timezone, communication_style,
                status, provider, provider_url, model, temperature, memory_backend, auto_save,
                encrypted_api_key, encrypted_channels, subdomain, desired_state, image, memory_limit_mb,
                nano_cpus, created_at, updated_at)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, 'running',
                ?19, ?20, ?21, ?22, ?22
         WHERE (SELECT COUNT(*) FROM agents WHERE user_id = ?2 AND desired_state != 'deleted') < ?23
         RETURNING *",
    )
    .bind(&new.id)
    .bind(&new.user_id)
    .bind(&new.name)
    .bind(&new.slug)
    .bind(&new.agent_name)
    .bind(&new.user_name)
    .bind(&new.timezone)
    .bind(&new.communication_style)
    .bind(Status::Pending)
    .bind(&new.provider)
    .bind(&new.provider_url)
    .bind(&new.model)
    .bind(new.temperature)
    .bind(&new.memory_backend)
    .bind(if new.auto_save { "true" } else { "false" })
    .bind(&new.encrypted_api_key)
    .bind(&new.encrypted_channels)
    .bind(&new.subdomain)
    .bind(&new.image)
    .bind(new.memory_limit_mb)
    .bind(new.nano_cpus)
    .bind(now)
    .bind(limit)
    .fetch_optional(&mut *tx)
    .await;
        let agent = match inserted {
            Ok(Some(agent)) => agent,
            Ok(None) => {
                return Err(InsertError::QuotaExceeded {
                    max: max_agents.unwrap_or(u32::MAX),
                })
            }
            Err(e) if is_unique_violation(&e) => return Err(InsertError::SlugTaken),
            Err(e) => return Err(e.into()),
        };
        claim_tokens(&mut tx, &agent.id, &new.channel_tokens).await?;
        let event = insert_event(
            &mut tx,
            &agent.id,
            &agent.user_id,
            &agent.slug,
            None,
            Status::Pending,
            "created",
            now,
        )
        .await?;
        tx.commit().await?;
        Ok((agent, event))
    }

    async fn get_for_user(&self, user_id: &str, id: &str) -> Result<Option<Agent>, sqlx::Error> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT * FROM agents WHERE id = ?1 AND user_id = ?2 AND desired_state != 'deleted'",
        )
        .bind(id)
        .bind(user_id)
        .fetch_optional(db)
        .await
    }

    async fn list_for_user(&self, user_id: &str) -> Result<Vec<Agent>, sqlx::Error> {
        let db = &self.pool;
        sqlx::query_as("SELECT * FROM agents WHERE user_id = ?1 AND desired_state != 'deleted' ORDER BY created_at, id")
        .bind(user_id)
        .fetch_all(db)
        .await
    }

    async fn list_owned(&self, user_id: &str) -> Result<Option<Vec<Agent>>, sqlx::Error> {
        // One row per agent, or one row of NULL agent columns for a user
        // without agents; no row at all when the user does not exist.
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT {AGENT_COLUMNS} FROM users u
                 LEFT JOIN agents a ON a.user_id = u.id AND a.desired_state != 'deleted'
                 WHERE u.id = ?1 ORDER BY a.created_at, a.id"
            )
        });
        let readers = self.readers.clone();
        let user = user_id.to_owned();
        let fast = tokio::task::spawn_blocking(move || {
            readers.run(|conn| super::readers::owned_agents(conn, &SQL, &user))
        })
        .await
        .ok()
        .flatten();
        if let Some(owned) = fast {
            return Ok(owned);
        }
        let rows = sqlx::query(SQL.as_str())
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        owned_agents(&rows)
    }

    async fn count_for_user(&self, user_id: &str) -> Result<i64, sqlx::Error> {
        let db = &self.pool;
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM agents WHERE user_id = ?1 AND desired_state != 'deleted'",
        )
        .bind(user_id)
        .fetch_one(db)
        .await
    }

    async fn count_by_status(&self) -> Result<Vec<(Status, i64)>, sqlx::Error> {
        let db = &self.pool;
        sqlx::query_as("SELECT status, COUNT(*) FROM agents GROUP BY status")
            .fetch_all(db)
            .await
    }

    async fn list_all_with_owner(&self) -> Result<Vec<AgentWithOwner>, sqlx::Error> {
        let db = &self.pool;
        sqlx::query_as(
            "SELECT a.*, u.email AS owner_email FROM agents a JOIN users u ON u.id = a.user_id
         ORDER BY a.created_at, a.id",
        )
        .fetch_all(db)
        .await
    }

    async fn update_config(
        &self,
        user_id: &str,
        id: &str,
        changes: &AgentChanges,
    ) -> Result<Option<Agent>, UpdateError> {
        if changes.is_empty() {
            return Ok(self.get_for_user(user_id, id).await?);
        }
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("UPDATE agents SET updated_at = ");
        q.push_bind(Utc::now());
        macro_rules! set {
            ($col:literal, $val:expr) => {
                if let Some(v) = $val {
                    q.push(concat!(", ", $col, " = ")).push_bind(v);
                }
            };
        }
        set!("name", &changes.name);
        set!("agent_name", &changes.agent_name);
        set!("user_name", &changes.user_name);
        set!("timezone", &changes.timezone);
        set!("communication_style", &changes.communication_style);
        set!("provider", &changes.provider);
        set!("provider_url", &changes.provider_url);
        set!("model", &changes.model);
        set!("temperature", changes.temperature);
        set!("memory_backend", &changes.memory_backend);
        set!(
            "auto_save",
            changes.auto_save.map(|b| if b { "true" } else { "false" })
        );
        set!("encrypted_api_key", &changes.encrypted_api_key);
        set!("encrypted_channels", &changes.encrypted_channels);
        if changes.changes_runtime() {
            // A deploy under way checks this before it reaches RUNNING.
            q.push(", config_generation = config_generation + 1");
        }
        q.push(" WHERE id = ").push_bind(id);
        q.push(" AND user_id = ").push_bind(user_id);
        q.push(" AND desired_state != 'deleted' RETURNING *");
        // The UPDATE comes first: the transaction holds the write lock from
        // it to the token rows.
        let mut tx = self.pool.begin().await?;
        let updated: Option<Agent> = q.build_query_as().fetch_optional(&mut *tx).await?;
        if let (Some(agent), Some(tokens)) = (&updated, &changes.channel_tokens) {
            claim_tokens(&mut tx, &agent.id, tokens).await?;
        }
        tx.commit().await?;
        Ok(updated)
    }

    async fn running_channel_health(&self) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT channel_health FROM agents
             WHERE status = ?1 AND channel_health IS NOT NULL ORDER BY id",
        )
        .bind(Status::Running)
        .fetch_all(&self.pool)
        .await
    }

    async fn list_secrets(&self) -> Result<Vec<StoredSecrets>, sqlx::Error> {
        let db = &self.pool;
        sqlx::query_as(
        "SELECT id, encrypted_token, encrypted_api_key, encrypted_channels FROM agents ORDER BY id",
    )
    .fetch_all(db)
    .await
    }

    async fn replace_secret(
        &self,
        id: &str,
        field: SecretField,
        old: &str,
        new: &str,
    ) -> Result<bool, sqlx::Error> {
        let db = &self.pool;
        let sql = match field {
        SecretField::Token => {
            "UPDATE agents SET encrypted_token = ?1 WHERE id = ?2 AND encrypted_token = ?3"
        }
        SecretField::ApiKey => {
            "UPDATE agents SET encrypted_api_key = ?1 WHERE id = ?2 AND encrypted_api_key = ?3"
        }
        SecretField::Channels => {
            "UPDATE agents SET encrypted_channels = ?1 WHERE id = ?2 AND encrypted_channels = ?3"
        }
    };
        let done = sqlx::query(sql)
            .bind(new)
            .bind(id)
            .bind(old)
            .execute(db)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
