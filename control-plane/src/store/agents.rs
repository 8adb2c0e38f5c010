//! `agents` as owners and admins see it: create, read and configure, always
//! scoped to an owner where a user asks. Status changes go through
//! [`super::LifecycleStore`].
//!
//! An agent whose desired state is `deleted` is on its way out: owners no
//! longer see it and it no longer counts against their quota.

use crate::events::AgentEvent;
use crate::model::Agent;
use crate::secrets::SecretField;
use crate::status::Status;

/// Why an agent could not be created.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// The owner already has `max` agents.
    #[error("agent quota of {max} reached")]
    QuotaExceeded { max: u32 },
    /// Another agent has this slug (UNIQUE constraint).
    #[error("slug already taken")]
    SlugTaken,
    /// Another agent holds one of the channel tokens; `field` is the API
    /// field it came from (`channels.telegram.botToken`).
    #[error("{field}: already used by another agent")]
    TokenTaken { field: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Why a configuration change was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// Another agent holds one of the new channel tokens.
    #[error("{field}: already used by another agent")]
    TokenTaken { field: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Why a backend's claim of an agent's channel tokens failed (both backends
/// replace the agent's rows in the caller's transaction).
pub(crate) enum ClaimError {
    /// Another agent holds the token of this field.
    Taken(String),
    Db(sqlx::Error),
}

impl From<ClaimError> for InsertError {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::Taken(field) => InsertError::TokenTaken { field },
            ClaimError::Db(e) => InsertError::Db(e),
        }
    }
}

impl From<ClaimError> for UpdateError {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::Taken(field) => UpdateError::TokenTaken { field },
            ClaimError::Db(e) => UpdateError::Db(e),
        }
    }
}

/// One channel token as `channel_tokens` keeps it: a keyed hash
/// ([`crate::secrets::SecretBox::token_hashes`]), never the token, and the
/// API field it came from. A token has one row per master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelToken {
    pub hash: String,
    /// `channels.telegram.botToken`, `channels.slack.appToken`, …
    pub field: String,
}

/// A validated agent to insert as PENDING. Secrets are already encrypted
/// (with this `id` in their associated data).
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub slug: String,
    pub agent_name: String,
    pub user_name: Option<String>,
    pub timezone: String,
    pub communication_style: Option<String>,
    pub provider: String,
    pub provider_url: Option<String>,
    pub model: String,
    pub temperature: f64,
    pub memory_backend: String,
    pub auto_save: bool,
    pub encrypted_api_key: Option<String>,
    pub encrypted_channels: Option<String>,
    /// `<slug>.<domain>`.
    pub subdomain: String,
    pub image: String,
    /// Container memory limit, MiB.
    pub memory_limit_mb: i64,
    /// Container CPU limit, 10^-9 CPUs.
    pub nano_cpus: i64,
    /// The hashes of the channel tokens in `encrypted_channels` (distinct).
    pub channel_tokens: Vec<ChannelToken>,
}

/// Every column of `agents`, qualified by `a.`, in the order of [`Agent`]'s
/// fields: the select list of the hot list query, decoded by position with
/// [`agent_at`] instead of by name (`FromRow` looks each of the 40 names up
/// per row).
pub(crate) const AGENT_COLUMNS: &str = "a.id, a.user_id, a.name, a.slug, a.agent_name, \
     a.user_name, a.timezone, a.communication_style, a.container_id, a.container_port, a.status, \
     a.provider, a.provider_url, a.model, a.temperature, a.memory_backend, a.auto_save, \
     a.encrypted_token, a.encrypted_api_key, a.encrypted_channels, a.subdomain, a.memory_mb, \
     a.cpu_percent, a.last_health_at, a.desired_state, a.attempts, a.next_attempt_at, \
     a.last_error, a.spec_hash, a.image, a.memory_limit_mb, a.nano_cpus, a.ever_running, \
     a.paired_started_at, a.config_generation, a.deployed_generation, a.channel_health, \
     a.created_at, a.updated_at, a.network";

/// The [`Agent`] in the first columns of `row`, selected as
/// [`AGENT_COLUMNS`], decoded by position (both backends).
pub(crate) fn agent_at<'r, R>(row: &'r R) -> Result<Agent, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    chrono::DateTime<chrono::Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Status: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    crate::status::DesiredState: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut column = 0usize;
    let mut next = || {
        column += 1;
        column - 1
    };
    // A struct expression evaluates its fields in the order written: this
    // order is AGENT_COLUMNS' (`tests/store_list.rs` compares the result
    // with `FromRow` on `SELECT *`, every column set and unset).
    Ok(Agent {
        id: row.try_get(next())?,
        user_id: row.try_get(next())?,
        name: row.try_get(next())?,
        slug: row.try_get(next())?,
        agent_name: row.try_get(next())?,
        user_name: row.try_get(next())?,
        timezone: row.try_get(next())?,
        communication_style: row.try_get(next())?,
        container_id: row.try_get(next())?,
        container_port: row.try_get(next())?,
        status: row.try_get(next())?,
        provider: row.try_get(next())?,
        provider_url: row.try_get(next())?,
        model: row.try_get(next())?,
        temperature: row.try_get(next())?,
        memory_backend: row.try_get(next())?,
        auto_save: row.try_get(next())?,
        encrypted_token: row.try_get(next())?,
        encrypted_api_key: row.try_get(next())?,
        encrypted_channels: row.try_get(next())?,
        subdomain: row.try_get(next())?,
        memory_mb: row.try_get(next())?,
        cpu_percent: row.try_get(next())?,
        last_health_at: row.try_get(next())?,
        desired_state: row.try_get(next())?,
        attempts: row.try_get(next())?,
        next_attempt_at: row.try_get(next())?,
        last_error: row.try_get(next())?,
        spec_hash: row.try_get(next())?,
        image: row.try_get(next())?,
        memory_limit_mb: row.try_get(next())?,
        nano_cpus: row.try_get(next())?,
        ever_running: row.try_get(next())?,
        paired_started_at: row.try_get(next())?,
        config_generation: row.try_get(next())?,
        deployed_generation: row.try_get(next())?,
        channel_health: row.try_get(next())?,
        created_at: row.try_get(next())?,
        updated_at: row.try_get(next())?,
        network: row.try_get(next())?,
    })
}

/// The owner's agents from the rows of the list query: each row is
/// [`AGENT_COLUMNS`] of one agent of the user's `LEFT JOIN`, or all NULL for
/// a user without agents; no row at all means no such user (`None`).
pub(crate) fn owned_agents<'r, R>(rows: &'r [R]) -> Result<Option<Vec<Agent>>, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    chrono::DateTime<chrono::Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Status: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    crate::status::DesiredState: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    if rows.len() == 1 && first.try_get::<Option<String>, _>(0)?.is_none() {
        return Ok(Some(Vec::new()));
    }
    rows.iter()
        .map(agent_at)
        .collect::<Result<_, _>>()
        .map(Some)
}

/// An agent with its owner's email (admin views).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentWithOwner {
    #[sqlx(flatten)]
    pub agent: Agent,
    pub owner_email: String,
}

/// A partial update of an agent's configuration. `None` leaves a field as
/// it is; for nullable fields `Some(None)` clears it. Secrets are already
/// encrypted for this agent.
#[derive(Debug, Clone, Default)]
pub struct AgentChanges {
    pub name: Option<String>,
    pub agent_name: Option<String>,
    pub user_name: Option<Option<String>>,
    pub timezone: Option<String>,
    pub communication_style: Option<Option<String>>,
    pub provider: Option<String>,
    pub provider_url: Option<Option<String>>,
    pub model: Option<String>,
    pub temperature: Option<f64>,
    pub memory_backend: Option<String>,
    pub auto_save: Option<bool>,
    pub encrypted_api_key: Option<Option<String>>,
    pub encrypted_channels: Option<Option<String>>,
    /// With `encrypted_channels`: the hashes of the new channels' tokens
    /// (distinct), replacing the agent's (`Some(vec![])` frees them all).
    pub channel_tokens: Option<Vec<ChannelToken>>,
}

impl AgentChanges {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && !self.changes_runtime()
    }

    /// Whether a change reaches the agent's injected config or persona files
    /// (everything but the display name), so a running agent must be
    /// reconfigured.
    pub fn changes_runtime(&self) -> bool {
        self.agent_name.is_some()
            || self.user_name.is_some()
            || self.timezone.is_some()
            || self.communication_style.is_some()
            || self.provider.is_some()
            || self.provider_url.is_some()
            || self.model.is_some()
            || self.temperature.is_some()
            || self.memory_backend.is_some()
            || self.auto_save.is_some()
            || self.encrypted_api_key.is_some()
            || self.encrypted_channels.is_some()
    }
}

/// The encrypted secrets of one agent (`zcaas keys rotate`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredSecrets {
    pub id: String,
    pub encrypted_token: Option<String>,
    pub encrypted_api_key: Option<String>,
    pub encrypted_channels: Option<String>,
}

/// Reads and configuration writes of agent rows.
#[async_trait::async_trait]
pub trait AgentStore: Send + Sync {
    /// Inserts `new` as PENDING (desired running) with its creation event
    /// (NULL → PENDING, "created") in one transaction, and returns both
    /// (the caller publishes the event). `max_agents = None` is unlimited.
    ///
    /// Guarantee: two concurrent inserts for one owner never both pass the
    /// quota (SQLite: one `INSERT … SELECT … WHERE count < max`, a single
    /// writer; PostgreSQL: the owner's row locked `FOR UPDATE` first).
    /// `new.channel_tokens` are inserted in the same transaction: one token
    /// serves one agent across the installation (the primary key of
    /// `channel_tokens`), and an agent refused leaves nothing behind.
    /// Errors: [`InsertError::QuotaExceeded`], [`InsertError::SlugTaken`],
    /// [`InsertError::TokenTaken`].
    async fn insert_pending(
        &self,
        new: &NewAgent,
        max_agents: Option<u32>,
    ) -> Result<(Agent, AgentEvent), InsertError>;

    /// The agent `id` if `user_id` owns it (and it is not being deleted).
    /// Admins read any agent with [`super::LifecycleStore::get`].
    async fn get_for_user(&self, user_id: &str, id: &str) -> Result<Option<Agent>, sqlx::Error>;

    /// The agents of `user_id` (those being deleted excluded), oldest first.
    async fn list_for_user(&self, user_id: &str) -> Result<Vec<Agent>, sqlx::Error>;

    /// [`Self::list_for_user`] in one query that also proves the user
    /// exists: `None` when there is no user `user_id` (a deleted account's
    /// still-unexpired token). Lets `GET /api/agents` authenticate and list
    /// with one round trip instead of two.
    async fn list_owned(&self, user_id: &str) -> Result<Option<Vec<Agent>>, sqlx::Error>;

    /// How many agents `user_id` has (those being deleted excluded).
    async fn count_for_user(&self, user_id: &str) -> Result<i64, sqlx::Error>;

    /// How many agents are in each status (every row, those being deleted
    /// included); statuses without agents are absent. Read at each
    /// `/metrics` scrape.
    async fn count_by_status(&self) -> Result<Vec<(Status, i64)>, sqlx::Error>;

    /// Every agent (being deleted included) with its owner's email, oldest first.
    async fn list_all_with_owner(&self) -> Result<Vec<AgentWithOwner>, sqlx::Error>;

    /// Applies `changes` to agent `id` if `user_id` owns it (one statement)
    /// and returns the updated row; `None` if it is not theirs or gone. A
    /// change that [`AgentChanges::changes_runtime`] bumps
    /// `config_generation` in the same statement. With
    /// [`AgentChanges::channel_tokens`], the agent's `channel_tokens` rows are
    /// replaced in the same transaction; a token another agent holds fails
    /// the whole change with [`UpdateError::TokenTaken`] (nothing applied).
    async fn update_config(
        &self,
        user_id: &str,
        id: &str,
        changes: &AgentChanges,
    ) -> Result<Option<Agent>, UpdateError>;

    /// The `channel_health` reports of every RUNNING agent that has one
    /// (JSON, see [`crate::channel_health`]); read at each `/metrics` scrape.
    async fn running_channel_health(&self) -> Result<Vec<String>, sqlx::Error>;

    /// Every agent's encrypted secrets, by id (`zcaas keys rotate`).
    async fn list_secrets(&self) -> Result<Vec<StoredSecrets>, sqlx::Error>;

    /// Replaces one secret column of agent `id` with `new` if it still holds
    /// `old` (a concurrent writer, e.g. a re-pair storing a new token, wins).
    /// Returns whether it was replaced.
    async fn replace_secret(
        &self,
        id: &str,
        field: SecretField,
        old: &str,
        new: &str,
    ) -> Result<bool, sqlx::Error>;
}
