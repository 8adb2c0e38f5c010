//! `agents` as the reconciler and the lifecycle requests change it: status
//! transitions (with their `agent_events` row), port claims, container
//! facts, tokens, errors and backoff.
//!
//! Architecture invariant: a status only changes through
//! [`LifecycleStore::transition`] (or its guarded form), a single conditional
//! `UPDATE … WHERE status = from` plus the event row in one transaction, so
//! two writers — two tasks or two replicas — can never both move the same
//! agent.

use chrono::{DateTime, Utc};

use crate::events::AgentEvent;
use crate::model::Agent;
use crate::status::{DesiredState, Status};

/// Lifecycle reads and writes of agent rows.
#[async_trait::async_trait]
pub trait LifecycleStore: Send + Sync {
    /// Moves agent `id` from `from` to `to` if it is in `from`, records the
    /// event with `reason`, and optionally sets the desired state, in one
    /// transaction. Returns the event if applied, `None` if the agent was
    /// not in `from` (or is gone). Moving to RUNNING clears `last_error`, sets
    /// `ever_running` and stamps `last_health_at` (every move to RUNNING
    /// follows a passed health check), in the same statement: no reader
    /// sees a RUNNING agent without a health time.
    ///
    /// Guarantees: conditional (compare-and-set on `status`); event ids
    /// become visible in increasing order, so a reader that saw id N and
    /// asks for "after N" never skips one (SQLite: one writer at a time;
    /// PostgreSQL: an advisory transaction lock around event inserts).
    async fn transition(
        &self,
        id: &str,
        from: Status,
        to: Status,
        reason: &str,
        desired: Option<DesiredState>,
    ) -> Result<Option<AgentEvent>, sqlx::Error>;

    /// STARTING → RUNNING for a deploy of `agent` as read at its start:
    /// applied only if `config_generation` is still the one that deploy
    /// rendered (a PATCH meanwhile makes it `None`: the agent stays STARTING
    /// and the new configuration is deployed), and records it as
    /// `deployed_generation`. Same guarantees as [`Self::transition`].
    async fn transition_to_running(
        &self,
        agent: &Agent,
        reason: &str,
    ) -> Result<Option<AgentEvent>, sqlx::Error>;

    /// One agent by id, whoever owns it (the API scopes by owner itself).
    async fn get(&self, id: &str) -> Result<Option<Agent>, sqlx::Error>;

    /// Every agent row, oldest first (reconciler resync).
    async fn list_all(&self) -> Result<Vec<Agent>, sqlx::Error>;

    /// Host ports currently claimed by any agent.
    async fn claimed_ports(&self) -> Result<Vec<i64>, sqlx::Error>;

    /// Claims `port` for agent `id` if the agent holds none. `false` when
    /// another agent holds that port (a UNIQUE column: two claims of one
    /// port never both succeed) or the agent already has one.
    async fn try_claim_port(&self, id: &str, port: u16) -> Result<bool, sqlx::Error>;

    /// Releases the agent's host port and forgets its container.
    async fn release_port_and_container(&self, id: &str) -> Result<(), sqlx::Error>;

    /// Records the container the agent runs in and the spec hash it was made from.
    async fn set_container(
        &self,
        id: &str,
        container_id: &str,
        spec_hash: &str,
    ) -> Result<(), sqlx::Error>;

    /// Stores the encrypted bearer token obtained (or confirmed) for the
    /// container start at `started_at`.
    async fn set_pairing(
        &self,
        id: &str,
        encrypted_token: &str,
        started_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error>;

    /// Stores the encrypted bearer token the control plane minted itself for
    /// agent `id`, before a start (an agent with issued tokens gets it
    /// pre-seeded, as a hash, and prints no pairing code). Unlike
    /// [`Self::set_pairing`] it records no container start: the start that
    /// follows is still paired (the stored token found accepted).
    async fn set_token(&self, id: &str, encrypted_token: &str) -> Result<(), sqlx::Error>;

    /// Records a successful health check. The retry budget is not reset
    /// here: a crash loop passes health checks between crashes.
    async fn set_healthy(&self, id: &str, at: DateTime<Utc>) -> Result<(), sqlx::Error>;

    /// Records a failure's reason and the backoff before the next attempt.
    async fn set_error(
        &self,
        id: &str,
        error: &str,
        attempts: i64,
        next_attempt_at: Option<DateTime<Utc>>,
    ) -> Result<(), sqlx::Error>;

    /// Gives the agent a fresh retry budget (an owner's explicit retry).
    async fn reset_backoff(&self, id: &str) -> Result<(), sqlx::Error>;

    /// Stores polled resource use (MiB, percent of one CPU).
    async fn set_stats(
        &self,
        id: &str,
        memory_mb: f64,
        cpu_percent: f64,
    ) -> Result<(), sqlx::Error>;

    /// Stores the agent's channel health report (JSON of
    /// [`crate::channel_health::Report`], `None` clears it), as the stats
    /// poll last read it from the agent's `/health`.
    async fn set_channel_health(&self, id: &str, report: Option<&str>) -> Result<(), sqlx::Error>;

    /// Sets the desired state without changing the status.
    async fn set_desired(&self, id: &str, desired: DesiredState) -> Result<(), sqlx::Error>;

    /// Deletes the agent row (its events stay as history).
    async fn delete(&self, id: &str) -> Result<(), sqlx::Error>;
}
