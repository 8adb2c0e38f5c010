//! [`LifecycleStore`] on SQLite. SQLite has one writer at a time, so event
//! ids are assigned, and become visible, in commit order.

use chrono::{DateTime, Utc};
use sqlx::SqlitePool;

use super::SqliteStore;
use crate::events::AgentEvent;
use crate::model::Agent;
use crate::status::{DesiredState, Status};
use crate::store::lifecycle::{LifecycleStore, PollRecord};

#[async_trait::async_trait]
impl LifecycleStore for SqliteStore {
    async fn transition(
        &self,
        id: &str,
        from: Status,
        to: Status,
        reason: &str,
        desired: Option<DesiredState>,
    ) -> Result<Option<AgentEvent>, sqlx::Error> {
        let db = &self.pool;
        transition_guarded(db, id, from, to, reason, desired, None).await
    }

    async fn transition_to_running(
        &self,
        agent: &Agent,
        reason: &str,
    ) -> Result<Option<AgentEvent>, sqlx::Error> {
        let db = &self.pool;
        transition_guarded(
            db,
            &agent.id,
            Status::Starting,
            Status::Running,
            reason,
            None,
            Some(agent.config_generation),
        )
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<Agent>, sqlx::Error> {
        let db = &self.pool;
        sqlx::query_as("SELECT * FROM agents WHERE id = ?1")
            .bind(id)
            .fetch_optional(db)
            .await
    }

    async fn list_all(&self) -> Result<Vec<Agent>, sqlx::Error> {
        let db = &self.pool;
        sqlx::query_as("SELECT * FROM agents ORDER BY created_at")
            .fetch_all(db)
            .await
    }

    async fn claimed_ports(&self) -> Result<Vec<i64>, sqlx::Error> {
        let db = &self.pool;
        sqlx::query_scalar("SELECT container_port FROM agents WHERE container_port IS NOT NULL")
            .fetch_all(db)
            .await
    }

    async fn try_claim_port(&self, id: &str, port: u16) -> Result<bool, sqlx::Error> {
        let db = &self.pool;
        let res = sqlx::query(
        "UPDATE agents SET container_port = ?1, updated_at = ?2 WHERE id = ?3 AND container_port IS NULL",
    )
    .bind(i64::from(port))
    .bind(Utc::now())
    .bind(id)
    .execute(db)
    .await;
        match res {
            Ok(done) => Ok(done.rows_affected() == 1),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One transaction whose first statement writes (a no-op UPDATE of the
    /// agent's row), so it holds SQLite's single write lock from the start:
    /// the count and the claim that follows see every claim committed
    /// before, and no other claim can commit in between.
    async fn claim_network(
        &self,
        id: &str,
        first: &str,
        per_network: u32,
    ) -> Result<Option<String>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let held: Option<(Option<String>,)> =
            sqlx::query_as("UPDATE agents SET network = network WHERE id = ?1 RETURNING network")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((held,)) = held else {
            return Ok(None);
        };
        if let Some(network) = held {
            return Ok(Some(network));
        }
        let others: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT network FROM agents
             WHERE id <> ?1 AND desired_state <> 'deleted'
               AND (network IS NOT NULL OR container_id IS NOT NULL)",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let network = crate::store::lifecycle::pick_network(first, &others, per_network);
        sqlx::query("UPDATE agents SET network = ?1, updated_at = ?2 WHERE id = ?3")
            .bind(&network)
            .bind(Utc::now())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(network))
    }

    async fn networks_in_use(&self, first: &str) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT DISTINCT COALESCE(network, ?1) AS n FROM agents
             WHERE network IS NOT NULL OR container_id IS NOT NULL ORDER BY n",
        )
        .bind(first)
        .fetch_all(&self.pool)
        .await
    }

    async fn release_port_and_container(&self, id: &str) -> Result<(), sqlx::Error> {
        let db = &self.pool;
        sqlx::query(
        "UPDATE agents SET container_port = NULL, container_id = NULL, updated_at = ?1 WHERE id = ?2",
    )
    .bind(Utc::now())
    .bind(id)
    .execute(db)
    .await?;
        Ok(())
    }

    async fn set_container(
        &self,
        id: &str,
        container_id: &str,
        spec_hash: &str,
    ) -> Result<(), sqlx::Error> {
        let db = &self.pool;
        sqlx::query(
            "UPDATE agents SET container_id = ?1, spec_hash = ?2, updated_at = ?3 WHERE id = ?4",
        )
        .bind(container_id)
        .bind(spec_hash)
        .bind(Utc::now())
        .bind(id)
        .execute(db)
        .await?;
        Ok(())
    }

    async fn set_pairing(
        &self,
        id: &str,
        encrypted_token: &str,
        started_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let db = &self.pool;
        sqlx::query(
        "UPDATE agents SET encrypted_token = ?1, paired_started_at = ?2, updated_at = ?3 WHERE id = ?4",
    )
    .bind(encrypted_token)
    .bind(started_at)
    .bind(Utc::now())
    .bind(id)
    .execute(db)
    .await?;
        Ok(())
    }

    async fn set_token(&self, id: &str, encrypted_token: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE agents SET encrypted_token = ?1, updated_at = ?2 WHERE id = ?3")
            .bind(encrypted_token)
            .bind(Utc::now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_healthy(&self, id: &str, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
        let db = &self.pool;
        sqlx::query("UPDATE agents SET last_health_at = ?1 WHERE id = ?2")
            .bind(at)
            .bind(id)
            .execute(db)
            .await?;
        Ok(())
    }

    async fn set_error(
        &self,
        id: &str,
        error: &str,
        attempts: i64,
        next_attempt_at: Option<DateTime<Utc>>,
    ) -> Result<(), sqlx::Error> {
        let db = &self.pool;
        sqlx::query(
        "UPDATE agents SET last_error = ?1, attempts = ?2, next_attempt_at = ?3, updated_at = ?4 WHERE id = ?5",
    )
    .bind(error)
    .bind(attempts)
    .bind(next_attempt_at)
    .bind(Utc::now())
    .bind(id)
    .execute(db)
    .await?;
        Ok(())
    }

    async fn reset_backoff(&self, id: &str) -> Result<(), sqlx::Error> {
        let db = &self.pool;
        sqlx::query(
            "UPDATE agents SET attempts = 0, next_attempt_at = NULL, updated_at = ?1 WHERE id = ?2",
        )
        .bind(Utc::now())
        .bind(id)
        .execute(db)
        .await?;
        Ok(())
    }

    async fn set_stats(
        &self,
        id: &str,
        memory_mb: f64,
        cpu_percent: f64,
    ) -> Result<(), sqlx::Error> {
        let db = &self.pool;
        sqlx::query("UPDATE agents SET memory_mb = ?1, cpu_percent = ?2 WHERE id = ?3")
            .bind(memory_mb)
            .bind(cpu_percent)
            .bind(id)
            .execute(db)
            .await?;
        Ok(())
    }

    /// One transaction, one prepared statement run per record: one commit
    /// (and one take of SQLite's write lock) per round instead of one per
    /// agent.
    async fn record_polls(&self, records: &[PollRecord]) -> Result<u64, sqlx::Error> {
        if records.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let mut written = 0;
        for r in records {
            written += sqlx::query(
                "UPDATE agents SET memory_mb = COALESCE(?1, memory_mb),
                    cpu_percent = COALESCE(?2, cpu_percent),
                    last_health_at = COALESCE(?3, last_health_at),
                    channel_health = CASE WHEN ?4 THEN ?5 ELSE channel_health END
                 WHERE id = ?6 AND status = ?7",
            )
            .bind(r.memory_mb)
            .bind(r.cpu_percent)
            .bind(r.healthy_at)
            .bind(r.channel_health.is_some())
            .bind(r.channel_health.clone().flatten())
            .bind(&r.id)
            .bind(Status::Running.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }

    async fn set_desired(&self, id: &str, desired: DesiredState) -> Result<(), sqlx::Error> {
        let db = &self.pool;
        sqlx::query("UPDATE agents SET desired_state = ?1, updated_at = ?2 WHERE id = ?3")
            .bind(desired)
            .bind(Utc::now())
            .bind(id)
            .execute(db)
            .await?;
        Ok(())
    }

    async fn set_channel_health(&self, id: &str, report: Option<&str>) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE agents SET channel_health = ?1 WHERE id = ?2")
            .bind(report)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The agent's `channel_tokens` rows go with it (`ON DELETE CASCADE`).
    async fn delete(&self, id: &str) -> Result<(), sqlx::Error> {
        let db = &self.pool;
        sqlx::query("DELETE FROM agents WHERE id = ?1")
            .bind(id)
            .execute(db)
            .await?;
        Ok(())
    }
}

/// [`transition`], and with `generation` only while `config_generation`
/// equals it (then also stored as `deployed_generation`).
async fn transition_guarded(
    db: &SqlitePool,
    id: &str,
    from: Status,
    to: Status,
    reason: &str,
    desired: Option<DesiredState>,
    generation: Option<i64>,
) -> Result<Option<AgentEvent>, sqlx::Error> {
    debug_assert!(from.can_transition_to(to), "{from} -> {to}");
    let now = Utc::now();
    let mut tx = db.begin().await?;
    // The UPDATE comes first, so this transaction takes SQLite's write lock at
    // once and never has to upgrade a read lock (which fails with SQLITE_BUSY).
    let row: Option<(String, String)> = sqlx::query_as(
        "UPDATE agents SET status = ?1, desired_state = COALESCE(?2, desired_state), updated_at = ?3,
                last_error = CASE WHEN ?1 = 'RUNNING' THEN NULL ELSE last_error END,
                ever_running = CASE WHEN ?1 = 'RUNNING' THEN 1 ELSE ever_running END,
                last_health_at = CASE WHEN ?1 = 'RUNNING' THEN ?3 ELSE last_health_at END,
                deployed_generation = COALESCE(?6, deployed_generation)
         WHERE id = ?4 AND status = ?5 AND (?6 IS NULL OR config_generation = ?6)
         RETURNING user_id, slug",
    )
    .bind(to)
    .bind(desired.map(DesiredState::as_str))
    .bind(now)
    .bind(id)
    .bind(from)
    .bind(generation)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((user_id, slug)) = row else {
        return Ok(None);
    };
    let event = insert_event(&mut tx, id, &user_id, &slug, Some(from), to, reason, now).await?;
    tx.commit().await?;
    Ok(Some(event))
}

/// Writes one `agent_events` row inside `tx` and returns it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn insert_event(
    tx: &mut sqlx::SqliteConnection,
    agent_id: &str,
    user_id: &str,
    slug: &str,
    from: Option<Status>,
    to: Status,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<AgentEvent, sqlx::Error> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO agent_events (agent_id, user_id, slug, from_status, to_status, reason, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
    )
    .bind(agent_id)
    .bind(user_id)
    .bind(slug)
    .bind(from)
    .bind(to)
    .bind(reason)
    .bind(at)
    .fetch_one(&mut *tx)
    .await?;
    Ok(AgentEvent {
        id,
        agent_id: agent_id.to_owned(),
        user_id: user_id.to_owned(),
        slug: slug.to_owned(),
        from,
        to,
        reason: reason.to_owned(),
        at,
    })
}
