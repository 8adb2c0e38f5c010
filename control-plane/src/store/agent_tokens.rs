//! `agent_tokens`: the bearer tokens an owner issues for an agent's public
//! URL (issue 13). Only the SHA-256 (hex) of a token is kept — the form the
//! agent's `[gateway] paired_tokens` takes, so the reconciler hands the
//! hashes to the agent as they are — with its last four characters for
//! display. The token itself exists only in the answer that issues it.
//!
//! Issuing or revoking a token changes what is injected into the agent
//! (its `paired_tokens`), so both bump the agent's `config_generation` in
//! the same transaction as the row they write, exactly as a PATCH does
//! ([`super::AgentStore::update_config`]): a deploy under way sees the new
//! generation before it reaches RUNNING and deploys the new token set.

use chrono::{DateTime, Utc};

use crate::model::Agent;

/// Most tokens one agent may have.
pub const MAX_TOKENS_PER_AGENT: u32 = 20;

/// One issued token as stored (never the token).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AgentToken {
    pub id: String,
    pub agent_id: String,
    pub name: String,
    /// SHA-256 of the token, 64 lowercase hex digits.
    pub token_hash: String,
    /// The token's last four characters.
    pub last_four: String,
    pub created_at: DateTime<Utc>,
}

/// A token to store for an agent.
#[derive(Debug, Clone)]
pub struct NewAgentToken {
    pub id: String,
    pub name: String,
    /// SHA-256 of the token, 64 lowercase hex digits.
    pub token_hash: String,
    pub last_four: String,
    pub created_at: DateTime<Utc>,
}

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The agent already has a token with this name (UNIQUE(agent_id, name)).
    #[error("the agent already has a token with this name")]
    NameTaken,
    /// The agent already has `max` tokens.
    #[error("the agent already has {max} tokens")]
    TooMany { max: u32 },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Issued tokens of agents.
#[async_trait::async_trait]
pub trait AgentTokenStore: Send + Sync {
    /// Stores `new` for agent `agent_id` if `user_id` owns it (and it is not
    /// being deleted), and bumps the agent's `config_generation`, in one
    /// transaction; returns the updated agent row, `None` if the agent is not
    /// theirs (nothing written).
    ///
    /// Guarantees: the agent row is updated first, so concurrent issues for
    /// one agent are serialised on it (SQLite: the single writer;
    /// PostgreSQL: the row lock) and never both pass `max`
    /// ([`IssueError::TooMany`]); a name the agent already uses fails with
    /// [`IssueError::NameTaken`]. A refusal leaves nothing behind (the
    /// generation is not bumped).
    async fn issue(
        &self,
        user_id: &str,
        agent_id: &str,
        new: &NewAgentToken,
        max: u32,
    ) -> Result<Option<Agent>, IssueError>;

    /// The tokens of agent `agent_id`, oldest first (ties by id). The caller
    /// scopes the agent to its owner.
    async fn list(&self, agent_id: &str) -> Result<Vec<AgentToken>, sqlx::Error>;

    /// Deletes token `token_id` of agent `agent_id` if `user_id` owns the
    /// agent (not being deleted), and bumps the agent's `config_generation`,
    /// in one transaction; returns the updated agent row, `None` (nothing
    /// changed) when there is no such token of that user's agent.
    async fn revoke(
        &self,
        user_id: &str,
        agent_id: &str,
        token_id: &str,
    ) -> Result<Option<Agent>, sqlx::Error>;

    /// The token hashes of agent `agent_id`, sorted (what the reconciler
    /// seeds into the agent's `paired_tokens`).
    async fn hashes(&self, agent_id: &str) -> Result<Vec<String>, sqlx::Error>;
}
