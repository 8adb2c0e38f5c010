//! The store seam: one cheap-to-clone [`Store`] handle with one accessor per
//! table, each returning a trait object (STYLE.md "Seams": atuin's database
//! trait with Plane's one-accessor-per-table facade). Two backends implement
//! the traits, each in its own module with its SQL, row mapping and embedded
//! migrations (`migrations/<backend>/`):
//!
//! - [`sqlite`] (default, embedded): `sqlite://path`;
//! - [`postgres`]: `postgres://…` (several replicas on one database).
//!
//! Architecture invariant: no SQL outside `store/` (checked by
//! `control-plane/tests/layering.rs`). Every trait documents the guarantees
//! its callers rely on; both backends keep them, and
//! `control-plane/tests/store_story.rs` proves them against both.
//!
//! Errors are [`sqlx::Error`], which is the same type for every backend.

pub mod agent_tokens;
pub mod agents;
pub mod history;
pub mod leases;
pub mod lifecycle;
pub mod limits;
pub mod postgres;
pub mod sqlite;
pub mod tickets;
pub mod users;

use std::sync::Arc;

use futures::stream::BoxStream;

pub use agent_tokens::AgentTokenStore;
pub use agents::AgentStore;
pub use history::HistoryStore;
pub use leases::LeaseStore;
pub use lifecycle::LifecycleStore;
pub use limits::LimitStore;
pub use tickets::TicketStore;
pub use users::UserStore;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One embedded SQLite file (one replica).
    Sqlite,
    /// A PostgreSQL server (any number of replicas).
    Postgres,
}

impl Backend {
    /// The backend a database URL names: `postgres://` or `postgresql://`
    /// select PostgreSQL, anything else SQLite.
    pub fn of_url(url: &str) -> Backend {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The whole store: what the API, the reconciler, the CLI and the tests hold.
/// Cheap to clone (a few `Arc`s over one connection pool).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    agents: Arc<dyn AgentStore>,
    agent_tokens: Arc<dyn AgentTokenStore>,
    lifecycle: Arc<dyn LifecycleStore>,
    users: Arc<dyn UserStore>,
    history: Arc<dyn HistoryStore>,
    leases: Arc<dyn LeaseStore>,
    tickets: Arc<dyn TicketStore>,
    limits: Arc<dyn LimitStore>,
    admin: Arc<dyn AdminStore>,
}

/// Parts a backend hands to [`Store::from_parts`].
pub struct Parts {
    pub backend: Backend,
    pub agents: Arc<dyn AgentStore>,
    pub agent_tokens: Arc<dyn AgentTokenStore>,
    pub lifecycle: Arc<dyn LifecycleStore>,
    pub users: Arc<dyn UserStore>,
    pub history: Arc<dyn HistoryStore>,
    pub leases: Arc<dyn LeaseStore>,
    pub tickets: Arc<dyn TicketStore>,
    pub limits: Arc<dyn LimitStore>,
    pub admin: Arc<dyn AdminStore>,
}

impl Store {
    /// Opens the database `url` names (see [`Backend::of_url`]); does not
    /// migrate. SQLite files are created if missing.
    ///
    /// Errors: the URL cannot be parsed or the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Store, sqlx::Error> {
        match Backend::of_url(url) {
            Backend::Sqlite => sqlite::connect(url).await,
            Backend::Postgres => postgres::connect(url).await,
        }
    }

    /// [`Store::connect`] then [`Store::migrate`].
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        use anyhow::Context;
        let store = Store::connect(url).await.context("connecting")?;
        store.migrate().await.context("applying migrations")?;
        Ok(store)
    }

    /// Assembles a store from a backend's table implementations.
    pub fn from_parts(p: Parts) -> Store {
        Store {
            backend: p.backend,
            agents: p.agents,
            agent_tokens: p.agent_tokens,
            lifecycle: p.lifecycle,
            users: p.users,
            history: p.history,
            leases: p.leases,
            tickets: p.tickets,
            limits: p.limits,
            admin: p.admin,
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// `agents` as owners and admins see it.
    pub fn agents(&self) -> &dyn AgentStore {
        &*self.agents
    }

    /// `agent_tokens`: the bearer tokens owners issue for their agents'
    /// public URLs (only their SHA-256 is stored).
    pub fn agent_tokens(&self) -> &dyn AgentTokenStore {
        &*self.agent_tokens
    }

    /// `agents` as the reconciler and the lifecycle requests change it.
    pub fn lifecycle(&self) -> &dyn LifecycleStore {
        &*self.lifecycle
    }

    /// `users`.
    pub fn users(&self) -> &dyn UserStore {
        &*self.users
    }

    /// `agent_events`: the history of status transitions.
    pub fn history(&self) -> &dyn HistoryStore {
        &*self.history
    }

    /// `leases`: the reconciler's leadership.
    pub fn leases(&self) -> &dyn LeaseStore {
        &*self.leases
    }

    /// `stream_tickets`: one-use SSE tickets, valid on every replica.
    pub fn tickets(&self) -> &dyn TicketStore {
        &*self.tickets
    }

    /// `rate_limits`: fixed-window counters shared by every replica.
    pub fn limits(&self) -> &dyn LimitStore {
        &*self.limits
    }

    /// Migrations, health, installation identity and notifications.
    pub fn admin(&self) -> &dyn AdminStore {
        &*self.admin
    }

    /// Applies every embedded migration of this backend not applied yet
    /// (checksums of applied ones are verified).
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        self.admin.migrate().await
    }

    /// `SELECT 1`: whether the store answers (readiness).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        self.admin.ping().await
    }

    /// Closes the pool: waits for checked-out connections to come back.
    pub async fn close(&self) {
        self.admin.close().await
    }
}

/// A notification between replicas: a channel name and a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub channel: String,
    pub payload: String,
}

/// What is not a table: migrations, readiness, the installation row and the
/// notification channel between replicas.
#[async_trait::async_trait]
pub trait AdminStore: Send + Sync {
    /// See [`Store::migrate`].
    async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError>;

    /// See [`Store::ping`].
    async fn ping(&self) -> Result<(), sqlx::Error>;

    /// See [`Store::close`].
    async fn close(&self);

    /// This installation's id: the stored one, or a fresh UUID v4 stored now
    /// (first start). Two processes starting at once on one store get the
    /// same id (the insert is conditional on the single row).
    async fn installation_id(&self) -> Result<String, sqlx::Error>;

    /// The database's clock (leases are timed by it, never by a replica's).
    async fn now(&self) -> Result<chrono::DateTime<chrono::Utc>, sqlx::Error>;

    /// Sends `payload` to every replica listening on `channel` (PostgreSQL
    /// `NOTIFY`); a no-op where there is only one replica (SQLite).
    async fn notify(&self, channel: &str, payload: &str) -> Result<(), sqlx::Error>;

    /// Notifications on `channels` from every replica (this one included),
    /// in the order the database delivers them, or `None` where there is
    /// only one replica (SQLite). The stream ends when the connection is
    /// lost; the caller listens again and re-reads what it may have missed.
    async fn listen(
        &self,
        channels: &[&str],
    ) -> Result<Option<BoxStream<'static, Result<Notification, sqlx::Error>>>, sqlx::Error>;
}
