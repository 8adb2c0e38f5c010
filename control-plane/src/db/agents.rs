//! `agents`: create, read, update and delete of agent rows, always scoped to
//! an owner where a user asks. Status changes go through `db::lifecycle`.
//!
//! An agent whose desired state is `deleted` is on its way out: owners no
//! longer see it and it no longer counts against their quota.

use chrono::Utc;
use sqlx::{QueryBuilder, Sqlite};

use crate::db::{is_unique_violation, lifecycle, Db};
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
    #[error(transparent)]
    Db(#[from] sqlx::Error),
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
}

/// Inserts `new` as PENDING (desired running) with its creation event
/// (NULL → PENDING, "created"), in one transaction whose first statement is
/// the write, so the quota check and the insert cannot interleave with
/// another writer's: a single `INSERT … SELECT … WHERE (count) < max`.
/// `max_agents = None` means unlimited. The caller publishes the event.
pub async fn insert_pending(
    db: &Db,
    new: &NewAgent,
    max_agents: Option<u32>,
) -> Result<(Agent, AgentEvent), InsertError> {
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
    let event = lifecycle::insert_event(
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

/// The agent `id` if `user_id` owns it (and it is not being deleted). Admins
/// read any agent with `lifecycle::get`.
pub async fn get_for_user(db: &Db, user_id: &str, id: &str) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM agents WHERE id = ?1 AND user_id = ?2 AND desired_state != 'deleted'",
    )
    .bind(id)
    .bind(user_id)
    .fetch_optional(db)
    .await
}

/// The agents of `user_id`, oldest first.
pub async fn list_for_user(db: &Db, user_id: &str) -> Result<Vec<Agent>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM agents WHERE user_id = ?1 AND desired_state != 'deleted' ORDER BY created_at, id")
        .bind(user_id)
        .fetch_all(db)
        .await
}

/// How many agents `user_id` has (those being deleted excluded).
pub async fn count_for_user(db: &Db, user_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM agents WHERE user_id = ?1 AND desired_state != 'deleted'",
    )
    .bind(user_id)
    .fetch_one(db)
    .await
}

/// How many agents are in each status (every row, those being deleted
/// included); statuses without agents are absent. Read at each `/metrics`
/// scrape.
pub async fn count_by_status(db: &Db) -> Result<Vec<(Status, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT status, COUNT(*) FROM agents GROUP BY status")
        .fetch_all(db)
        .await
}

/// An agent with its owner's email (admin views).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentWithOwner {
    #[sqlx(flatten)]
    pub agent: Agent,
    pub owner_email: String,
}

/// Every agent (being deleted included) with its owner's email, oldest first.
pub async fn list_all_with_owner(db: &Db) -> Result<Vec<AgentWithOwner>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.*, u.email AS owner_email FROM agents a JOIN users u ON u.id = a.user_id
         ORDER BY a.created_at, a.id",
    )
    .fetch_all(db)
    .await
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

/// Applies `changes` to agent `id` if `user_id` owns it (one statement) and
/// returns the updated row; `None` if it is not theirs or gone.
pub async fn update_config(
    db: &Db,
    user_id: &str,
    id: &str,
    changes: &AgentChanges,
) -> Result<Option<Agent>, sqlx::Error> {
    if changes.is_empty() {
        return get_for_user(db, user_id, id).await;
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
    q.build_query_as().fetch_optional(db).await
}

/// The encrypted secrets of one agent (`zcaas keys rotate`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredSecrets {
    pub id: String,
    pub encrypted_token: Option<String>,
    pub encrypted_api_key: Option<String>,
    pub encrypted_channels: Option<String>,
}

/// Every agent's encrypted secrets.
pub async fn list_secrets(db: &Db) -> Result<Vec<StoredSecrets>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, encrypted_token, encrypted_api_key, encrypted_channels FROM agents ORDER BY id",
    )
    .fetch_all(db)
    .await
}

/// Replaces one secret column of agent `id` with `new` if it still holds
/// `old` (a concurrent writer, e.g. a re-pair storing a new token, wins).
/// Returns whether it was replaced.
pub async fn replace_secret(
    db: &Db,
    id: &str,
    field: SecretField,
    old: &str,
    new: &str,
) -> Result<bool, sqlx::Error> {
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
