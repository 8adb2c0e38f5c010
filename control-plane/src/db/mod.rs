//! The store: a small facade over sqlx, one file per table. SQLite by default
//! (WAL, busy timeout, foreign keys set in the connect options). Functions
//! that must join a transaction take the transaction.

pub mod agents;
pub mod events;
pub mod installation;
pub mod lifecycle;
pub mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// The connection pool every store function takes.
pub type Db = sqlx::SqlitePool;

/// The embedded migrations (`migrations/sqlite`, append-only).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a connection waits for SQLite's write lock before `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a pool on `url` (`sqlite://path`, created if missing) with WAL,
/// `synchronous = NORMAL`, a 5 s busy timeout and foreign keys on every
/// connection (a `PRAGMA` query would reach only one pooled connection).
pub async fn connect(url: &str) -> Result<Db, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
}

/// Applies every embedded migration not applied yet (checksums of applied
/// ones are verified).
pub async fn migrate(db: &Db) -> Result<(), MigrateError> {
    MIGRATOR.run(db).await
}

/// `SELECT 1`: whether the store answers (readiness).
pub async fn ping(db: &Db) -> Result<(), sqlx::Error> {
    sqlx::query_scalar::<_, i64>("SELECT 1")
        .fetch_one(db)
        .await?;
    Ok(())
}

/// Whether a database error is a UNIQUE constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
