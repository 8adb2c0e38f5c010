//! The stored shapes shared by the API, the store and the reconciler.
//!
//! [`Agent`] is one row of `agents` exactly as stored (secrets still
//! encrypted); the API turns it into its camelCase view and never returns the
//! encrypted fields.

use crate::status::{DesiredState, Status};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A user's role: `user` or `admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

/// A user's plan, which bounds how many agents they may run and how much CPU
/// each gets (seed 003: free 0.5 CPU / 3 agents, pro 1.0 / 20, enterprise
/// custom / unlimited). Memory limits are ours, configurable in `Config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum Plan {
    Free,
    Pro,
    Enterprise,
}

/// One row of `users`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub plan: Plan,
    pub created_at: DateTime<Utc>,
}

/// One row of `agents`. Field names are the column names; see
/// `migrations/sqlite/0001_initial.sql` for the meaning of each.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Agent {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub slug: String,
    pub agent_name: String,
    pub user_name: Option<String>,
    pub timezone: String,
    pub communication_style: Option<String>,
    pub container_id: Option<String>,
    /// Host port (40000–50000) bound to 127.0.0.1 and mapped to the agent's
    /// 42617; `None` in `network` address mode (nothing is published).
    pub container_port: Option<i64>,
    pub status: Status,
    /// A DESIGN §1 provider name (`openai`, `anthropic`, `custom:<url>`, …).
    pub provider: String,
    /// Optional base-URL override for the provider (`api_url` in the agent's config).
    pub provider_url: Option<String>,
    pub model: String,
    pub temperature: f64,
    /// `sqlite` | `markdown` | `none`.
    pub memory_backend: String,
    /// `"true"` | `"false"` (stored as a string, as in seed 003).
    pub auto_save: String,
    pub encrypted_token: Option<String>,
    pub encrypted_api_key: Option<String>,
    /// Encrypted JSON of [`Channels`].
    pub encrypted_channels: Option<String>,
    pub subdomain: Option<String>,
    pub memory_mb: Option<f64>,
    pub cpu_percent: Option<f64>,
    pub last_health_at: Option<DateTime<Utc>>,
    pub desired_state: DesiredState,
    pub attempts: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Hash of everything that shapes the container and its injected files;
    /// also set as a container label so drift is visible.
    pub spec_hash: Option<String>,
    /// The runtime image this agent's container runs.
    pub image: String,
    /// Container memory limit in MiB (from the owner's plan at create time).
    pub memory_limit_mb: i64,
    /// Container CPU limit in units of 10^-9 CPUs (`NanoCpus`).
    pub nano_cpus: i64,
    /// Whether the agent ever reached RUNNING (a failed first deploy removes
    /// its volume; a later failure keeps the agent's memory).
    pub ever_running: bool,
    /// `State.StartedAt` of the container start the stored token was paired
    /// for; a container started later must be re-paired.
    pub paired_started_at: Option<DateTime<Utc>>,
    /// Bumped by every change to what is injected into the container
    /// (`migrations/sqlite/0002_*`).
    pub config_generation: i64,
    /// The [`Self::config_generation`] the running container was deployed
    /// with; `None` before the first RUNNING.
    pub deployed_generation: Option<i64>,
    /// JSON of [`crate::channel_health::Report`]: each channel's health as
    /// the stats poll last read it from the agent's `/health`.
    pub channel_health: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The agents' network the agent's container joins, claimed at its
    /// first deploy and never changed afterwards
    /// ([`crate::store::LifecycleStore::claim_network`]); `None` before
    /// that, and for agents deployed before networks were recorded (they
    /// are on the first network: [`Agent::network_or`]).
    pub network: Option<String>,
}

impl Agent {
    /// The network the agent's container is on: its recorded one, or
    /// `first` (the configured `network`) when none is recorded.
    pub fn network_or<'a>(&'a self, first: &'a str) -> &'a str {
        self.network.as_deref().unwrap_or(first)
    }

    /// The agent's channels, decrypted (`None` when it has none). Errors:
    /// the ciphertext does not decrypt for this agent, or its JSON is not
    /// a [`Channels`].
    pub fn channels(
        &self,
        secrets: &crate::secrets::SecretBox,
    ) -> anyhow::Result<Option<Channels>> {
        let Some(stored) = &self.encrypted_channels else {
            return Ok(None);
        };
        let json = secrets.decrypt(&self.id, crate::secrets::SecretField::Channels, stored)?;
        Ok(Some(serde_json::from_str(&json)?))
    }

    /// The container name: `zeroclaw-<slug>` (seed 003).
    pub fn container_name(&self) -> String {
        format!("zeroclaw-{}", self.slug)
    }

    /// The named data volume mounted at `/zeroclaw-data`.
    pub fn volume_name(&self) -> String {
        format!("zeroclaw-{}-data", self.slug)
    }
}

/// Messaging channels of an agent, stored encrypted as JSON in
/// `encrypted_channels`, rendered into `[channels_config.*]` of the agent's
/// config (seed 003 field names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram: Option<TelegramChannel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discord: Option<DiscordChannel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackChannel>,
}

/// `[channels_config.telegram]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TelegramChannel {
    #[serde(alias = "bot_token")]
    pub bot_token: String,
    #[serde(default, alias = "allowed_users")]
    pub allowed_users: Vec<String>,
    /// Our runtime's `api_base_url`: the platform API server the agent's
    /// client talks to (a self-hosted server; tests' fakes). Held to the
    /// `providerUrl` policy. Upstream runtimes ignore it.
    #[serde(
        default,
        alias = "api_base_url",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_base_url: Option<String>,
}

/// `[channels_config.discord]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DiscordChannel {
    #[serde(alias = "bot_token")]
    pub bot_token: String,
    #[serde(default, alias = "guild_id", skip_serializing_if = "Option::is_none")]
    pub guild_id: Option<String>,
    #[serde(default, alias = "allowed_users")]
    pub allowed_users: Vec<String>,
    /// Our runtime's `api_base_url`: the platform API server the agent's
    /// client talks to (a self-hosted server; tests' fakes). Held to the
    /// `providerUrl` policy. Upstream runtimes ignore it.
    #[serde(
        default,
        alias = "api_base_url",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_base_url: Option<String>,
}

/// `[channels_config.slack]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlackChannel {
    #[serde(alias = "bot_token")]
    pub bot_token: String,
    #[serde(default, alias = "app_token", skip_serializing_if = "Option::is_none")]
    pub app_token: Option<String>,
    #[serde(default, alias = "channel_id", skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// Slack member ids (`U…`, `W…`) allowed to talk to the agent; `"*"` =
    /// everyone. Absent in rows stored before it existed (rendered empty:
    /// upstream then ignores every user).
    #[serde(default, alias = "allowed_users")]
    pub allowed_users: Vec<String>,
    /// Our runtime's `api_base_url`: the platform API server the agent's
    /// client talks to (a self-hosted server; tests' fakes). Held to the
    /// `providerUrl` policy. Upstream runtimes ignore it.
    #[serde(
        default,
        alias = "api_base_url",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_base_url: Option<String>,
}

/// The name of the `index`-th agents' network (1-based): the first keeps
/// the configured name `first` (existing installations are unchanged), the
/// next ones are `<first>-2`, `<first>-3`, … One Linux bridge takes at
/// most 1 024 ports, so a large fleet is spread over several networks.
pub fn agent_network_name(first: &str, index: u32) -> String {
    if index <= 1 {
        first.to_owned()
    } else {
        format!("{first}-{index}")
    }
}

/// The index of `name` among the agents' networks named after `first`
/// ([`agent_network_name`]): 1 for `first`, `n` for `<first>-<n>` (n ≥ 2,
/// written without leading zeros); `None` for any other name.
pub fn agent_network_index(first: &str, name: &str) -> Option<u32> {
    if name == first {
        return Some(1);
    }
    let digits = name.strip_prefix(first)?.strip_prefix('-')?;
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n >= 2)
}
