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

/// What one poll of a RUNNING agent read ([`LifecycleStore::record_polls`]).
/// `None` leaves the column as it is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PollRecord {
    pub id: String,
    /// `memory_mb`: MiB, page cache excluded.
    pub memory_mb: Option<f64>,
    /// `cpu_percent`: percent of one CPU since the previous poll.
    pub cpu_percent: Option<f64>,
    /// `last_health_at`: when its `/health` answered.
    pub healthy_at: Option<DateTime<Utc>>,
    /// `channel_health`: `Some(report)` replaces it (`Some(None)` clears it).
    pub channel_health: Option<Option<String>>,
}

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

    /// Claims an agents' network for agent `id` if it holds none, and
    /// returns the one it holds (`None`: no such agent). The claim takes
    /// the lowest-numbered network ([`crate::model::agent_network_name`]
    /// after `first`) on which fewer than `per_network` other agents not
    /// being deleted hold a place ([`pick_network`]); an agent without a
    /// recorded network but with a container (deployed before networks
    /// were recorded) holds a place on the first. A held network never
    /// changes; a deleted agent's place is free again.
    ///
    /// Guarantee: concurrent claims never put more than `per_network`
    /// agents on one network (SQLite: one writer, the write lock taken by
    /// the transaction's first statement; PostgreSQL: an advisory
    /// transaction lock around the count and the claim).
    async fn claim_network(
        &self,
        id: &str,
        first: &str,
        per_network: u32,
    ) -> Result<Option<String>, sqlx::Error>;

    /// Every agents' network some agent holds (every row, those being
    /// deleted included), `first` standing for agents with none recorded
    /// but a container; sorted, distinct.
    async fn networks_in_use(&self, first: &str) -> Result<Vec<String>, sqlx::Error>;

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

    /// Stores what one round of the stats poll read of several agents
    /// ([`PollRecord`]; a `None` field leaves its column as it is), in one
    /// transaction (SQLite) or one statement (PostgreSQL) rather than one
    /// write per agent. Only agents still RUNNING are written: a poll that
    /// raced a stop, a redeploy or a delete leaves that row alone. Returns
    /// how many rows were written.
    async fn record_polls(&self, records: &[PollRecord]) -> Result<u64, sqlx::Error>;

    /// Stores the agent's channel health report (JSON of
    /// [`crate::channel_health::Report`], `None` clears it), as the stats
    /// poll last read it from the agent's `/health`.
    async fn set_channel_health(&self, id: &str, report: Option<&str>) -> Result<(), sqlx::Error>;

    /// Sets the desired state without changing the status.
    async fn set_desired(&self, id: &str, desired: DesiredState) -> Result<(), sqlx::Error>;

    /// Deletes the agent row (its events stay as history).
    async fn delete(&self, id: &str) -> Result<(), sqlx::Error>;
}

/// The network a claim takes (pure): the lowest-numbered agents' network
/// named after `first` ([`crate::model::agent_network_name`]) holding
/// fewer than `per_network` of the agents in `held` (the networks other
/// agents hold, one entry per agent; `None` counts as `first`). Names that
/// are no agents' network of `first` (a network configured before) are
/// not counted.
pub fn pick_network(first: &str, held: &[Option<String>], per_network: u32) -> String {
    let mut counts: std::collections::BTreeMap<u32, u32> = Default::default();
    for name in held {
        let index = match name {
            None => Some(1),
            Some(name) => crate::model::agent_network_index(first, name),
        };
        if let Some(index) = index {
            *counts.entry(index).or_default() += 1;
        }
    }
    let index = (1..)
        .find(|i| counts.get(i).copied().unwrap_or(0) < per_network.max(1))
        .unwrap_or(1);
    crate::model::agent_network_name(first, index)
}

#[cfg(test)]
mod tests {
    use super::pick_network;

    fn held(names: &[Option<&str>]) -> Vec<Option<String>> {
        names.iter().map(|n| n.map(str::to_owned)).collect()
    }

    #[test]
    fn claims_fill_the_lowest_network_with_room() {
        assert_eq!(pick_network("net", &[], 2), "net");
        assert_eq!(pick_network("net", &held(&[Some("net")]), 2), "net");
        assert_eq!(pick_network("net", &held(&[Some("net"), None]), 2), "net-2");
        assert_eq!(
            pick_network("net", &held(&[Some("net"), Some("net"), Some("net-2")]), 2),
            "net-2"
        );
        // A slot freed on the first network is taken before the third.
        assert_eq!(
            pick_network(
                "net",
                &held(&[Some("net"), Some("net-2"), Some("net-2")]),
                2
            ),
            "net"
        );
        // Gaps are filled, other names are not counted.
        assert_eq!(
            pick_network(
                "net",
                &held(&[
                    Some("net"),
                    Some("net"),
                    Some("net-3"),
                    Some("other"),
                    Some("net-02")
                ]),
                2
            ),
            "net-2"
        );
        assert_eq!(pick_network("net", &held(&[Some("net")]), 1), "net-2");
    }
}
