//! Store fixtures: which backend a test runs on, a fresh database of it, a
//! raw SQL pool for assertions the store's API does not offer, and rows with
//! defaults for tests that write to the store directly.
//!
//! The backend is chosen by `ZCAAS_TEST_STORE`: `sqlite` (default, a file in
//! the test's data directory) or `postgres` (a fresh database on the server
//! `ZCAAS_TEST_POSTGRES_URL` names, dropped when the test ends). The test
//! command in README.md runs the store and API suites once per backend.

use sqlx::AnyPool;
use zcaas::config::Config;
use zcaas::model::{Plan, Role};
use zcaas::store::{agents::NewAgent, users, Store};

pub use crate::postgres::TestDatabase;

/// A fresh, prepared data directory (`<tmp>/data`: keys, and the SQLite
/// file unless the test runs on PostgreSQL) and its migrated store. The
/// directory and database go when this drops: keep it for the whole test.
pub struct FreshStore {
    /// `Config::with_data_dir(<tmp>/data)`, `database_url` set to the test database.
    pub config: Config,
    pub db: Store,
    /// Raw SQL on the same database (placeholders `$1`, `$2`… work on both backends).
    pub sql: AnyPool,
    pub database: TestDatabase,
    pub dir: tempfile::TempDir,
}

/// A [`FreshStore`].
pub async fn fresh_store() -> FreshStore {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = Config::with_data_dir(dir.path().join("data"));
    zcaas::app::prepare_data_dir(&config.data_dir).expect("preparing the data directory");
    let database = TestDatabase::create(&config.database_url).await;
    config.database_url = database.url.clone();
    let db = Store::open(&config.database_url)
        .await
        .unwrap_or_else(|e| panic!("opening the store: {e:#}"));
    let sql = raw_pool(&config.database_url).await;
    FreshStore {
        config,
        db,
        sql,
        database,
        dir,
    }
}

/// A raw pool on `url` for a test's own SQL (placeholders `$1`, `$2`…).
pub async fn raw_pool(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::pool::PoolOptions::<sqlx::Any>::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("a raw pool on the test database: {e}"))
}

/// A user `email` (role user, free plan; the password hash is a
/// placeholder, so it never logs in) → its id.
pub async fn user_row(db: &Store, email: &str) -> String {
    let new = users::NewUser {
        email,
        password_hash: "x",
        role: Role::User,
        plan: Plan::Free,
    };
    db.users().create(&new).await.expect("creating the user").id
}

/// A new agent of `user_id` named, slugged and titled `slug`: a random id,
/// `openai`/`gpt-4o-mini`, no secrets, `<slug>.localhost`, a placeholder
/// image. Change what a test needs with struct update syntax
/// (`NewAgent { encrypted_api_key, ..agent_row(..) }`).
pub fn agent_row(user_id: &str, slug: &str) -> NewAgent {
    NewAgent {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.into(),
        name: slug.into(),
        slug: slug.into(),
        agent_name: slug.into(),
        user_name: None,
        timezone: "UTC".into(),
        communication_style: None,
        provider: "openai".into(),
        provider_url: None,
        model: "gpt-4o-mini".into(),
        temperature: 0.7,
        memory_backend: "sqlite".into(),
        auto_save: true,
        encrypted_api_key: None,
        encrypted_channels: None,
        subdomain: format!("{slug}.localhost"),
        image: "img".into(),
        memory_limit_mb: 256,
        nano_cpus: 500_000_000,
        channel_tokens: Vec::new(),
    }
}
