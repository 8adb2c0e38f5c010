//! [`LifecycleStore`] on PostgreSQL. Transitions are one conditional
//! `UPDATE` plus the event row in one transaction; the event insert takes
//! the advisory lock [`EVENTS_LOCK`] first, so event ids are committed in
//! increasing order.

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::{PgConnection, PgPool};

use super::{has_nul, now, text, violates, PgStore, EVENTS_LOCK, NETWORKS_LOCK};
use crate::events::AgentEvent;
use crate::model::Agent;
use crate::status::{DesiredState, Status};
use crate::store::lifecycle::{LifecycleStore, PollRecord};

#[async_trait::async_trait]
impl LifecycleStore for PgStore {
    async fn transition(
        &self,
        id: &str,
        from: Status,
        to: Status,
        reason: &str,
        desired: Option<DesiredState>,
    ) -> Result<Option<AgentEvent>, sqlx::Error> {
        transition_guarded(&self.pool, id, from, to, reason, desired, None).await
    }

    async fn transition_to_running(
        &self,
        agent: &Agent,
        reason: &str,
    ) -> Result<Option<AgentEvent>, sqlx::Error> {
        transition_guarded(
            &self.pool,
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
        if has_nul(id) {
            return Ok(None);
        }
        sqlx::query_as("SELECT * FROM agents WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    async fn list_all(&self) -> Result<Vec<Agent>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM agents ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
    }

    async fn claimed_ports(&self) -> Result<Vec<i64>, sqlx::Error> {
        sqlx::query_scalar("SELECT container_port FROM agents WHERE container_port IS NOT NULL")
            .fetch_all(&self.pool)
            .await
    }

    async fn try_claim_port(&self, id: &str, port: u16) -> Result<bool, sqlx::Error> {
        if has_nul(id) {
            return Ok(false);
        }
        let res = sqlx::query(
            "UPDATE agents SET container_port = $1, updated_at = $2
             WHERE id = $3 AND container_port IS NULL",
        )
        .bind(i64::from(port))
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await;
        match res {
            Ok(done) => Ok(done.rows_affected() == 1),
            // Another agent holds the port (a concurrent claim that
            // committed first included: the UNIQUE check waits for it).
            Err(e) if violates(&e, "agents_container_port_key") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// In one transaction: the advisory lock [`NETWORKS_LOCK`] (held until
    /// the transaction ends), so claims count and write one at a time; the
    /// count runs after the lock is granted, and under READ COMMITTED each
    /// statement sees every claim committed before it.
    async fn claim_network(
        &self,
        id: &str,
        first: &str,
        per_network: u32,
    ) -> Result<Option<String>, sqlx::Error> {
        if has_nul(id) {
            return Ok(None);
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(NETWORKS_LOCK)
            .execute(&mut *tx)
            .await?;
        let held: Option<Option<String>> =
            sqlx::query_scalar("SELECT network FROM agents WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(held) = held else {
            return Ok(None);
        };
        if let Some(network) = held {
            return Ok(Some(network));
        }
        let others: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT network FROM agents
             WHERE id <> $1 AND desired_state <> 'deleted'
               AND (network IS NOT NULL OR container_id IS NOT NULL)",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let network = crate::store::lifecycle::pick_network(first, &others, per_network);
        sqlx::query("UPDATE agents SET network = $1, updated_at = $2 WHERE id = $3")
            .bind(text(&network))
            .bind(now())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(network))
    }

    async fn networks_in_use(&self, first: &str) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT DISTINCT COALESCE(network, $1) AS n FROM agents
             WHERE network IS NOT NULL OR container_id IS NOT NULL ORDER BY n",
        )
        .bind(text(first))
        .fetch_all(&self.pool)
        .await
    }

    async fn release_port_and_container(&self, id: &str) -> Result<(), sqlx::Error> {
        if has_nul(id) {
            return Ok(());
        }
        sqlx::query(
            "UPDATE agents SET container_port = NULL, container_id = NULL, updated_at = $1
             WHERE id = $2",
        )
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_container(
        &self,
        id: &str,
        container_id: &str,
        spec_hash: &str,
    ) -> Result<(), sqlx::Error> {
        if has_nul(id) {
            return Ok(());
        }
        sqlx::query(
            "UPDATE agents SET container_id = $1, spec_hash = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(container_id)
        .bind(spec_hash)
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `started_at` is rounded *up* to the microsecond `TIMESTAMPTZ` keeps:
    /// the reconciler re-pairs when the container's `State.StartedAt`
    /// (nanoseconds) is later than the stored start, so truncating would
    /// make every start look newer than its own pairing.
    async fn set_pairing(
        &self,
        id: &str,
        encrypted_token: &str,
        started_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        if has_nul(id) {
            return Ok(());
        }
        sqlx::query(
            "UPDATE agents SET encrypted_token = $1, paired_started_at = $2, updated_at = $3
             WHERE id = $4",
        )
        .bind(encrypted_token)
        .bind(ceil_micros(started_at))
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_token(&self, id: &str, encrypted_token: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE agents SET encrypted_token = $1, updated_at = $2 WHERE id = $3")
            .bind(encrypted_token)
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_healthy(&self, id: &str, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
        if has_nul(id) {
            return Ok(());
        }
        sqlx::query("UPDATE agents SET last_health_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
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
        if has_nul(id) {
            return Ok(());
        }
        sqlx::query(
            "UPDATE agents SET last_error = $1, attempts = $2, next_attempt_at = $3, updated_at = $4
             WHERE id = $5",
        )
        .bind(text(error))
        .bind(attempts)
        .bind(next_attempt_at)
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn reset_backoff(&self, id: &str) -> Result<(), sqlx::Error> {
        if has_nul(id) {
            return Ok(());
        }
        sqlx::query(
            "UPDATE agents SET attempts = 0, next_attempt_at = NULL, updated_at = $1 WHERE id = $2",
        )
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_stats(
        &self,
        id: &str,
        memory_mb: f64,
        cpu_percent: f64,
    ) -> Result<(), sqlx::Error> {
        if has_nul(id) {
            return Ok(());
        }
        sqlx::query("UPDATE agents SET memory_mb = $1, cpu_percent = $2 WHERE id = $3")
            .bind(memory_mb)
            .bind(cpu_percent)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// One statement: the records travel as parallel arrays, `UNNEST`ed
    /// into a table the update joins on.
    async fn record_polls(&self, records: &[PollRecord]) -> Result<u64, sqlx::Error> {
        let records: Vec<&PollRecord> = records.iter().filter(|r| !has_nul(&r.id)).collect();
        if records.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let memory: Vec<Option<f64>> = records.iter().map(|r| r.memory_mb).collect();
        let cpu: Vec<Option<f64>> = records.iter().map(|r| r.cpu_percent).collect();
        let healthy: Vec<Option<DateTime<Utc>>> = records.iter().map(|r| r.healthy_at).collect();
        let set_channels: Vec<bool> = records.iter().map(|r| r.channel_health.is_some()).collect();
        let channels: Vec<Option<String>> = records
            .iter()
            .map(|r| {
                r.channel_health
                    .as_ref()?
                    .as_deref()
                    .map(|c| text(c).into_owned())
            })
            .collect();
        let done = sqlx::query(
            "UPDATE agents AS a SET memory_mb = COALESCE(u.memory_mb, a.memory_mb),
                cpu_percent = COALESCE(u.cpu_percent, a.cpu_percent),
                last_health_at = COALESCE(u.healthy_at, a.last_health_at),
                channel_health = CASE WHEN u.set_channels THEN u.channel_health
                                      ELSE a.channel_health END
             FROM UNNEST($1::text[], $2::float8[], $3::float8[], $4::timestamptz[], $5::bool[],
                         $6::text[])
                  AS u(id, memory_mb, cpu_percent, healthy_at, set_channels, channel_health)
             WHERE a.id = u.id AND a.status = $7",
        )
        .bind(&ids)
        .bind(&memory)
        .bind(&cpu)
        .bind(&healthy)
        .bind(&set_channels)
        .bind(&channels)
        .bind(Status::Running.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn set_desired(&self, id: &str, desired: DesiredState) -> Result<(), sqlx::Error> {
        if has_nul(id) {
            return Ok(());
        }
        sqlx::query("UPDATE agents SET desired_state = $1, updated_at = $2 WHERE id = $3")
            .bind(desired.as_str())
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_channel_health(&self, id: &str, report: Option<&str>) -> Result<(), sqlx::Error> {
        if has_nul(id) {
            return Ok(());
        }
        sqlx::query("UPDATE agents SET channel_health = $1 WHERE id = $2")
            .bind(report.map(text))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The agent's `channel_tokens` rows go with it (`ON DELETE CASCADE`).
    async fn delete(&self, id: &str) -> Result<(), sqlx::Error> {
        if has_nul(id) {
            return Ok(());
        }
        sqlx::query("DELETE FROM agents WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// `at` rounded up to a whole microsecond.
fn ceil_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    let truncated = at.trunc_subsecs(6);
    if truncated == at {
        at
    } else {
        truncated + chrono::Duration::microseconds(1)
    }
}

/// [`LifecycleStore::transition`], and with `generation` only while
/// `config_generation` equals it (then also stored as `deployed_generation`).
async fn transition_guarded(
    db: &PgPool,
    id: &str,
    from: Status,
    to: Status,
    reason: &str,
    desired: Option<DesiredState>,
    generation: Option<i64>,
) -> Result<Option<AgentEvent>, sqlx::Error> {
    debug_assert!(from.can_transition_to(to), "{from} -> {to}");
    if has_nul(id) {
        return Ok(None);
    }
    let now = now();
    let mut tx = db.begin().await?;
    // Compare-and-set: a concurrent transition of the same agent waits for
    // this row lock, then re-checks `status` and matches nothing.
    let row: Option<(String, String)> = sqlx::query_as(
        "UPDATE agents SET status = $1, desired_state = COALESCE($2, desired_state), updated_at = $3,
                last_error = CASE WHEN $7 THEN NULL ELSE last_error END,
                ever_running = ever_running OR $7,
                last_health_at = CASE WHEN $7 THEN $3 ELSE last_health_at END,
                deployed_generation = COALESCE($6, deployed_generation)
         WHERE id = $4 AND status = $5 AND ($6::BIGINT IS NULL OR config_generation = $6)
         RETURNING user_id, slug",
    )
    .bind(to.as_str())
    .bind(desired.map(DesiredState::as_str))
    .bind(now)
    .bind(id)
    .bind(from.as_str())
    .bind(generation)
    .bind(to == Status::Running)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((user_id, slug)) = row else {
        return Ok(None);
    };
    let event = insert_event(&mut tx, id, &user_id, &slug, Some(from), to, reason, now).await?;
    tx.commit().await?;
    Ok(Some(event))
}

/// Writes one `agent_events` row inside the transaction `tx` and returns
/// it. Takes [`EVENTS_LOCK`] (held until `tx` ends) before drawing the id,
/// so ids are drawn and committed in the same order: a reader resuming
/// "after N" never misses an id below a later commit's.
#[allow(clippy::too_many_arguments)]
pub(super) async fn insert_event(
    tx: &mut PgConnection,
    agent_id: &str,
    user_id: &str,
    slug: &str,
    from: Option<Status>,
    to: Status,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<AgentEvent, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(EVENTS_LOCK)
        .execute(&mut *tx)
        .await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO agent_events (agent_id, user_id, slug, from_status, to_status, reason, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(agent_id)
    .bind(user_id)
    .bind(slug)
    .bind(from.map(Status::as_str))
    .bind(to.as_str())
    .bind(text(reason))
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
        reason: text(reason).into_owned(),
        at,
    })
}
