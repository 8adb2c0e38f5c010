//! The SQLite backend (default, embedded): one file, WAL, one writer at a
//! time. Its migrations are `migrations/sqlite/` (append-only).

mod agent_tokens;
mod agents;
mod history;
mod lifecycle;
mod shared;
mod users;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::{AdminStore, Backend, Notification, Parts, Store};

/// The embedded migrations (`migrations/sqlite`, append-only).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a connection waits for SQLite's write lock before `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The database's clock in SQL: milliseconds since the Unix epoch.
pub(crate) const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

/// Every table of the store on one SQLite pool, plus the few connections
/// the hottest read (`GET /api/agents`) takes directly ([`Readers`]).
pub struct SqliteStore {
    pool: SqlitePool,
    readers: Readers,
}

/// How many [`Readers`] a file database keeps: one per core of the small
/// hosts zcaas runs on; a list waits for a free one rather than adding
/// another worker thread to switch to.
const READERS: usize = 2;

/// Connections that only read (`PRAGMA query_only`), outside the pool, for
/// the list query. sqlx runs each SQLite connection on its own worker
/// thread, and its pool pings that thread on every acquire and every
/// release: two more round trips between threads per query than the query
/// itself (futex wake-ups and context switches). A reader is taken
/// with `try_lock` round-robin (waiting in turn on one when all are busy),
/// opened on first use and dropped after any error (the next use opens it
/// again). A reader only ever runs single autocommit `SELECT`s, so a
/// request dropped mid-query leaves no transaction behind. In-memory
/// databases have none (a reader would open another database).
pub(crate) struct Readers {
    options: SqliteConnectOptions,
    slots: Box<[tokio::sync::Mutex<Option<sqlx::SqliteConnection>>]>,
    next: std::sync::atomic::AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
}

/// A reader taken from [`Readers`], held until dropped.
pub(crate) struct Reader<'a>(tokio::sync::MutexGuard<'a, Option<sqlx::SqliteConnection>>);

impl Readers {
    fn new(options: SqliteConnectOptions, n: usize) -> Self {
        Readers {
            options: options.pragma("query_only", "ON"),
            slots: (0..n).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A free reader; `None` when there are none (in-memory database).
    pub(crate) async fn get(&self) -> Result<Option<Reader<'_>>, sqlx::Error> {
        use std::sync::atomic::Ordering;
        let n = self.slots.len();
        if n == 0 {
            return Ok(None);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let free = (0..n).find_map(|k| self.slots[(start + k) % n].try_lock().ok());
        let mut slot = match free {
            Some(slot) => slot,
            None => self.slots[start].lock().await,
        };
        if self.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed);
        }
        if slot.is_none() {
            *slot = Some(sqlx::ConnectOptions::connect(&self.options).await?);
        }
        Ok(Some(Reader(slot)))
    }

    /// Closes every reader; later [`Self::get`]s fail with `PoolClosed`.
    async fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        for slot in self.slots.iter() {
            if let Some(conn) = slot.lock().await.take() {
                let _ = sqlx::Connection::close(conn).await;
            }
        }
    }
}

impl Reader<'_> {
    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut sqlx::SqliteConnection {
        // `Readers::get` fills the slot before handing it out.
        self.0.as_mut().expect("a reader holds a connection")
    }

    /// Drops the connection after an error; the next use opens another.
    pub(crate) fn discard(mut self) {
        self.0.take();
    }
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
    let readers = Readers::new(options.clone(), if in_memory { 0 } else { READERS });
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
        self.readers.close().await;
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
