//! Lifecycle writes on `agents` made by the reconciler and the lifecycle
//! requests: status transitions (with their `agent_events` row), port claims,
//! container facts, tokens, errors and backoff.
//!
//! Architecture invariant: a status only changes through [`transition`], a
//! single conditional `UPDATE … WHERE status = from` plus the event row in one
//! transaction, so two writers can never both move the same agent.

use chrono::{DateTime, Utc};

use crate::db::Db;
use crate::events::AgentEvent;
use crate::model::Agent;
use crate::status::{DesiredState, Status};

/// Moves agent `id` from `from` to `to` if it is in `from`, records the event
/// with `reason`, and optionally sets the desired state in the same write.
/// Returns the event if the transition was applied, `None` if the agent was
/// not in `from` (or is gone). Panics in debug builds on an edge the state
/// machine refuses (callers check first).
pub async fn transition(
    db: &Db,
    id: &str,
    from: Status,
    to: Status,
    reason: &str,
    desired: Option<DesiredState>,
) -> Result<Option<AgentEvent>, sqlx::Error> {
    transition_guarded(db, id, from, to, reason, desired, None).await
}

/// STARTING → RUNNING for a deploy of `agent` as read at its start: applied
/// only if the agent's `config_generation` is still the one that deploy
/// rendered (a PATCH meanwhile makes it `None`: the agent stays STARTING and
/// the new configuration is deployed), and records it as
/// `deployed_generation`.
pub async fn transition_to_running(
    db: &Db,
    agent: &Agent,
    reason: &str,
) -> Result<Option<AgentEvent>, sqlx::Error> {
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

/// [`transition`], and with `generation` only while `config_generation`
/// equals it (then also stored as `deployed_generation`).
async fn transition_guarded(
    db: &Db,
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
pub async fn insert_event(
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

/// Reads one agent by id, whoever owns it (reconciler use; the API scopes by owner).
pub async fn get(db: &Db, id: &str) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM agents WHERE id = ?1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Every agent row (reconciler resync).
pub async fn list_all(db: &Db) -> Result<Vec<Agent>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM agents ORDER BY created_at")
        .fetch_all(db)
        .await
}

/// Host ports currently claimed by any agent.
pub async fn claimed_ports(db: &Db) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT container_port FROM agents WHERE container_port IS NOT NULL")
        .fetch_all(db)
        .await
}

/// Claims `port` for agent `id` if the agent holds none. Returns `false` when
/// another agent holds that port (the UNIQUE constraint) or the agent already
/// has one, so the caller tries another.
pub async fn try_claim_port(db: &Db, id: &str, port: u16) -> Result<bool, sqlx::Error> {
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

/// Releases the agent's host port and forgets its container.
pub async fn release_port_and_container(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE agents SET container_port = NULL, container_id = NULL, updated_at = ?1 WHERE id = ?2",
    )
    .bind(Utc::now())
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Records the container the agent runs in and the spec hash it was made from.
pub async fn set_container(
    db: &Db,
    id: &str,
    container_id: &str,
    spec_hash: &str,
) -> Result<(), sqlx::Error> {
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

/// Stores the encrypted bearer token obtained (or confirmed) for the
/// container start at `started_at`.
pub async fn set_pairing(
    db: &Db,
    id: &str,
    encrypted_token: &str,
    started_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
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

/// Records a successful health check. The retry budget is not reset here: a
/// crash loop passes health checks between crashes (see `Step::ResetBackoff`).
pub async fn set_healthy(db: &Db, id: &str, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE agents SET last_health_at = ?1 WHERE id = ?2")
        .bind(at)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Records a failure's reason and the backoff before the next attempt.
pub async fn set_error(
    db: &Db,
    id: &str,
    error: &str,
    attempts: i64,
    next_attempt_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
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

/// Gives the agent a fresh retry budget (an owner's explicit retry).
pub async fn reset_backoff(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE agents SET attempts = 0, next_attempt_at = NULL, updated_at = ?1 WHERE id = ?2",
    )
    .bind(Utc::now())
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Stores polled resource use.
pub async fn set_stats(
    db: &Db,
    id: &str,
    memory_mb: f64,
    cpu_percent: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE agents SET memory_mb = ?1, cpu_percent = ?2 WHERE id = ?3")
        .bind(memory_mb)
        .bind(cpu_percent)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Sets the desired state without changing the status.
pub async fn set_desired(db: &Db, id: &str, desired: DesiredState) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE agents SET desired_state = ?1, updated_at = ?2 WHERE id = ?3")
        .bind(desired)
        .bind(Utc::now())
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes the agent row (its events stay as history).
pub async fn delete(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM agents WHERE id = ?1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}
