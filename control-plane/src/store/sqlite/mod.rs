//! The SQLite backend (default, embedded): one file, WAL, one writer at a
//! time. Its migrations are `migrations/sqlite/` (append-only).

mod agent_tokens;
mod agents;
mod history;
mod lifecycle;
mod readers;
mod shared;
mod users;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use readers::Readers;

use super::{AdminStore, Backend, Notification, Parts, Store};

/// The embedded migrations (`migrations/sqlite`, append-only).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a connection waits for SQLite's write lock before `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The database's clock in SQL: milliseconds since the Unix epoch.
pub(crate) const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

/// Every table of the store on one SQLite pool, plus the read-only
/// connections the hottest read (`GET /api/agents`) runs on from the
/// blocking pool ([`Readers`]).
pub struct SqliteStore {
    pool: SqlitePool,
    readers: Arc<Readers>,
}

/// How many [`Readers`] a file database keeps: two per core (at least 4),
/// so that lists queued on the blocking pool rarely find none free (they
/// would take the slower pool path).
fn reader_count() -> usize {
    2 * std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// Opens a pool on `url` (`sqlite://path`, created if missing) with WAL,
/// `synchronous = NORMAL`, a 5 s busy timeout and foreign keys on every
/// connection (a `PRAGMA` query would reach only one pooled connection).
pub async fn connect(url: &str) -> Result<Store, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let file = (!in_memory).then(|| options.get_filename().to_path_buf());
    let readers = Arc::new(Readers::new(file, reader_count()));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    let s = Arc::new(SqliteStore { pool, readers });
    Ok(Store::from_parts(Parts {
        backend: Backend::Sqlite,
        agents: s.clone(),
        agent_tokens: s.clone(),
        lifecycle: s.clone(),
        users: s.clone(),
        history: s.clone(),
        leases: s.clone(),
        tickets: s.clone(),
        limits: s.clone(),
        admin: s,
    }))
}

/// Whether a database error is a UNIQUE constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[async_trait::async_trait]
impl AdminStore for SqliteStore {
    async fn migrate(&self) -> Result<(), MigrateError> {
        MIGRATOR.run(&self.pool).await
    }

    async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query_scalar::<_, i64>("SELECT 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(())
    }

    async fn close(&self) {
        self.readers.close();
        self.pool.close().await
    }

    async fn installation_id(&self) -> Result<String, sqlx::Error> {
        sqlx::query(
            "INSERT INTO installation (singleton, id, created_at) VALUES (1, ?1, ?2)
             ON CONFLICT (singleton) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(chrono::Utc::now())
        .execute(&self.pool)
        .await?;
        sqlx::query_scalar("SELECT id FROM installation WHERE singleton = 1")
            .fetch_one(&self.pool)
            .await
    }

    async fn now(&self) -> Result<chrono::DateTime<chrono::Utc>, sqlx::Error> {
        let ms: i64 = sqlx::query_scalar(&format!("SELECT {NOW_MS}"))
            .fetch_one(&self.pool)
            .await?;
        chrono::DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| sqlx::Error::Decode("database clock out of range".into()))
    }

    async fn notify(&self, _channel: &str, _payload: &str) -> Result<(), sqlx::Error> {
        Ok(())
    }

    async fn listen(
        &self,
        _channels: &[&str],
    ) -> Result<Option<BoxStream<'static, Result<Notification, sqlx::Error>>>, sqlx::Error> {
        Ok(None)
    }
}
