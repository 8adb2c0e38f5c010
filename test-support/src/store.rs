//! Store fixtures, for tests that write to the store directly rather than
//! through the API: a fresh data directory with its migrated database, and
//! rows with defaults.

use zcaas::config::Config;
use zcaas::db::{self, agents::NewAgent, users, Db};
use zcaas::model::{Plan, Role};

/// A fresh, prepared data directory (`<tmp>/data`: keys, store) and its
/// migrated database. The directory goes when this drops: keep it for the
/// whole test.
pub struct FreshStore {
    /// `Config::with_data_dir(<tmp>/data)`.
    pub config: Config,
    pub db: Db,
    pub dir: tempfile::TempDir,
}

/// A [`FreshStore`].
pub async fn fresh_store() -> FreshStore {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = Config::with_data_dir(dir.path().join("data"));
    zcaas::app::prepare_data_dir(&config.data_dir).expect("preparing the data directory");
    let db = db::connect(&config.database_url)
        .await
        .expect("opening the store");
    db::migrate(&db).await.expect("migrating the store");
    FreshStore { config, db, dir }
}

/// A user `email` (role user, free plan; the password hash is a
/// placeholder, so it never logs in) → its id.
pub async fn user_row(db: &Db, email: &str) -> String {
    let new = users::NewUser {
        email,
        password_hash: "x",
        role: Role::User,
        plan: Plan::Free,
    };
    users::create(db, &new).await.expect("creating the user").id
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
    }
}
