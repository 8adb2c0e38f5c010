//! The reader connections behind `GET /api/agents` on SQLite: the list
//! query runs through rusqlite on one thread of tokio's blocking pool, not
//! on one of sqlx's connection worker threads.
//!
//! Why: sqlx runs each SQLite connection on a worker thread of its own; the
//! statement and every row cross a channel to and from it (futex wake-ups,
//! context switches), and its pool pings that thread on every acquire and
//! release. For a ten-row indexed read that hand-off costs several times the
//! query itself (BENCHMARKS.md, issue 14). Here the whole query is one
//! hand-off to the blocking pool and back. Not inline on the async worker:
//! a WAL reader can wait inside SQLite while a writer commits or
//! checkpoints (`walTryBeginRead` retries with sleeps, whatever the busy
//! timeout), and such a wait on an async worker stalls every request
//! queued on it (measured: p99 above 100 ms with the stats poll writing).
//!
//! The fast path is only an optimisation: when no reader is free, the
//! database is busy, or anything fails — opening, preparing, stepping,
//! decoding a value in a form this decoder does not take — the caller runs
//! the same query through the sqlx pool, whose answer (or error) is
//! authoritative.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};
use rusqlite::{Connection, OpenFlags, Row};

use crate::model::Agent;
use crate::status::{DesiredState, Status};

/// Read-only rusqlite connections on the store's file, outside sqlx's pool.
/// A reader is taken with `try_lock` for one synchronous query (never held
/// across an `.await`); opened on first use, dropped after an error (the
/// next use opens it again).
pub(crate) struct Readers {
    /// The database file; `None` for an in-memory database (a reader would
    /// open another, empty, database) — then there are no readers.
    path: Option<PathBuf>,
    slots: Box<[Mutex<Option<Connection>>]>,
    next: AtomicUsize,
    closed: AtomicBool,
    /// Queries answered on the fast path (for tests and profiling).
    served: AtomicU64,
}

impl Readers {
    /// `n` readers on the file `path` (none when `path` is `None`).
    pub(crate) fn new(path: Option<PathBuf>, n: usize) -> Self {
        let n = if path.is_some() { n } else { 0 };
        Readers {
            path,
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            served: AtomicU64::new(0),
        }
    }

    /// Runs `query` on a free reader, on the calling thread (a blocking one:
    /// it may wait inside SQLite). `None`: no reader was free,
    /// there are none, the store is closed, or the query failed in any way
    /// (the reader is then dropped) — the caller takes the pool's path.
    pub(crate) fn run<T>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Option<T> {
        let n = self.slots.len();
        if n == 0 || self.closed.load(Ordering::Acquire) {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut slot = (0..n).find_map(|k| self.slots[(start + k) % n].try_lock().ok())?;
        if slot.is_none() {
            *slot = Some(open(self.path.as_ref()?).ok()?);
        }
        let conn = slot.as_ref()?;
        match query(conn) {
            Ok(value) => {
                self.served.fetch_add(1, Ordering::Relaxed);
                Some(value)
            }
            Err(e) => {
                // Busy is transient and leaves the connection sound; anything
                // else may not, so that reader is reopened on its next use.
                if e.sqlite_error_code() != Some(rusqlite::ErrorCode::DatabaseBusy) {
                    tracing::debug!(error = %e, "list reader failed; using the pool");
                    slot.take();
                }
                None
            }
        }
    }

    /// How many queries the readers answered.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Closes every reader; later [`Self::run`]s answer `None`.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for slot in self.slots.iter() {
            let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            slot.take();
        }
    }
}

/// A read-only, query-only connection with no busy wait (a busy database
/// sends the request to the pool rather than hold a blocking thread).
fn open(path: &PathBuf) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::ZERO)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// A timestamp as the store binds it (`DateTime<Utc>` through sqlx: RFC 3339
/// text). Any other form is an error, which sends the query to the pool,
/// whose decoder takes every form SQLite allows.
struct Rfc3339(DateTime<Utc>);

impl FromSql for Rfc3339 {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        DateTime::parse_from_rfc3339(text)
            .map(|t| Rfc3339(t.with_timezone(&Utc)))
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// A stored enum word ([`Status`], [`DesiredState`]) through its `FromStr`.
struct Word<T>(T);

impl<T> FromSql for Word<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map(Word)
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

fn time(row: &Row<'_>, i: usize) -> rusqlite::Result<DateTime<Utc>> {
    Ok(row.get::<_, Rfc3339>(i)?.0)
}

fn time_opt(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    Ok(row.get::<_, Option<Rfc3339>>(i)?.map(|t| t.0))
}

/// The [`Agent`] in the first columns of `row`, selected as
/// [`crate::store::agents::AGENT_COLUMNS`] (the same order as
/// [`crate::store::agents::agent_at`], which decodes sqlx rows).
pub(crate) fn agent_from_row(row: &Row<'_>) -> rusqlite::Result<Agent> {
    let mut column = 0usize;
    let mut next = || {
        column += 1;
        column - 1
    };
    // A struct expression evaluates its fields in the order written: this
    // order is AGENT_COLUMNS'.
    Ok(Agent {
        id: row.get(next())?,
        user_id: row.get(next())?,
        name: row.get(next())?,
        slug: row.get(next())?,
        agent_name: row.get(next())?,
        user_name: row.get(next())?,
        timezone: row.get(next())?,
        communication_style: row.get(next())?,
        container_id: row.get(next())?,
        container_port: row.get(next())?,
        status: row.get::<_, Word<Status>>(next())?.0,
        provider: row.get(next())?,
        provider_url: row.get(next())?,
        model: row.get(next())?,
        temperature: row.get(next())?,
        memory_backend: row.get(next())?,
        auto_save: row.get(next())?,
        encrypted_token: row.get(next())?,
        encrypted_api_key: row.get(next())?,
        encrypted_channels: row.get(next())?,
        subdomain: row.get(next())?,
        memory_mb: row.get(next())?,
        cpu_percent: row.get(next())?,
        last_health_at: time_opt(row, next())?,
        desired_state: row.get::<_, Word<DesiredState>>(next())?.0,
        attempts: row.get(next())?,
        next_attempt_at: time_opt(row, next())?,
        last_error: row.get(next())?,
        spec_hash: row.get(next())?,
        image: row.get(next())?,
        memory_limit_mb: row.get(next())?,
        nano_cpus: row.get(next())?,
        ever_running: row.get(next())?,
        paired_started_at: time_opt(row, next())?,
        config_generation: row.get(next())?,
        deployed_generation: row.get(next())?,
        channel_health: row.get(next())?,
        created_at: time(row, next())?,
        updated_at: time(row, next())?,
        network: row.get(next())?,
    })
}

/// The rows of the owner's `LEFT JOIN` (`sql`, one parameter: the user id)
/// as [`crate::store::agents::owned_agents`] reads them: `None` when the user
/// does not exist, an empty list for a row of NULL agent columns.
pub(crate) fn owned_agents(
    conn: &Connection,
    sql: &str,
    user_id: &str,
) -> rusqlite::Result<Option<Vec<Agent>>> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query([user_id])?;
    let mut agents = Vec::new();
    let mut any = false;
    while let Some(row) = rows.next()? {
        any = true;
        if row.get_ref(0)? == ValueRef::Null {
            continue;
        }
        agents.push(agent_from_row(row)?);
    }
    Ok(any.then_some(agents))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Plan, Role};
    use crate::store::agents::{NewAgent, AGENT_COLUMNS};
    use crate::store::users::NewUser;

    /// The rusqlite decoder gives exactly what sqlx's `FromRow` gives on
    /// `SELECT *`, every column set and unset; the readers answer (no
    /// fallback) and close with the store.
    #[tokio::test]
    async fn rows_decode_as_sqlx_decodes_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("zcaas.db");
        let url = format!("sqlite://{}", file.display());
        let store = super::super::connect(&url).await.unwrap();
        store.admin().migrate().await.unwrap();
        let user = NewUser {
            email: "r@x.io",
            password_hash: "x",
            role: Role::User,
            plan: Plan::Free,
        };
        let u = store.users().create(&user).await.unwrap().id;
        let new = |slug: &str| NewAgent {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: u.clone(),
            name: slug.into(),
            slug: slug.into(),
            agent_name: slug.into(),
            user_name: None,
            timezone: "UTC".into(),
            communication_style: None,
            provider: "openai".into(),
            provider_url: None,
            model: "m".into(),
            temperature: 0.123_456_789_012_345_67,
            memory_backend: "sqlite".into(),
            auto_save: false,
            encrypted_api_key: None,
            encrypted_channels: None,
            subdomain: format!("{slug}.localhost"),
            image: "img".into(),
            memory_limit_mb: 256,
            nano_cpus: 500_000_000,
            channel_tokens: Vec::new(),
        };
        store
            .agents()
            .insert_pending(&new("bare"), None)
            .await
            .unwrap();
        let full = store
            .agents()
            .insert_pending(&new("full"), None)
            .await
            .unwrap()
            .0
            .id;
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query(
            "UPDATE agents SET user_name = 'Ada', communication_style = 'terse',
                 provider_url = 'https://llm.example/v1', container_id = 'c1',
                 container_port = 40001, status = 'RUNNING', encrypted_token = 'v1:t',
                 encrypted_api_key = 'v1:k', encrypted_channels = 'v1:c', memory_mb = 12.5,
                 cpu_percent = 0.25, last_health_at = created_at, attempts = 3,
                 next_attempt_at = updated_at, last_error = 'ünïcode \"q\"',
                 spec_hash = 'h', ever_running = 1, paired_started_at = created_at,
                 config_generation = 4, deployed_generation = 4,
                 channel_health = '{}' WHERE id = ?1",
        )
        .bind(&full)
        .execute(&pool)
        .await
        .unwrap();

        let expected: Vec<Agent> = sqlx::query_as("SELECT * FROM agents ORDER BY created_at, id")
            .fetch_all(&pool)
            .await
            .unwrap();
        let readers = Readers::new(Some(file), 2);
        let sql = format!(
            "SELECT {AGENT_COLUMNS} FROM users u LEFT JOIN agents a ON a.user_id = u.id
             WHERE u.id = ?1 ORDER BY a.created_at, a.id"
        );
        let got = readers
            .run(|conn| owned_agents(conn, &sql, &u))
            .expect("the reader answers")
            .expect("the user exists");
        assert_eq!(format!("{got:#?}"), format!("{expected:#?}"));
        let nobody = readers.run(|conn| owned_agents(conn, &sql, "nobody"));
        assert!(matches!(nobody, Some(None)), "no such user");
        assert_eq!(readers.served(), 2);
        readers.close();
        assert!(readers.run(|conn| owned_agents(conn, &sql, &u)).is_none());
        store.admin().close().await;
    }
}
