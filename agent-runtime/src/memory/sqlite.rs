//! The `sqlite` memory backend: `<workspace>/memory/brain.db`.
//!
//! One table, `turns(id, created_at, role, content)`. WAL with `synchronous = NORMAL`: a save
//! costs no fsync, and a crash loses at most the last exchanges, never the database.
//!
//! Bounded: each message is cut to [`MAX_TURN_BYTES`](super::MAX_TURN_BYTES) and the table
//! keeps the newest [`MAX_STORED_TURNS`] turns, the oldest being deleted in the same
//! transaction that stores a new exchange (and on open, for a database that predates the cap).
//! Deleted pages are reused by later inserts, so the file stops growing at roughly
//! `MAX_STORED_TURNS × MAX_TURN_BYTES` (about 160 MiB) in the worst case.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection};

use super::{cap_turn, io_err, MemoryError, Role, Turn};

/// Most turns (user and assistant messages; two per exchange) kept per agent. Older turns are
/// deleted when a save passes it.
pub const MAX_STORED_TURNS: usize = 10_000;

/// Deletes every turn but the newest `max_turns`. Ids only grow (`AUTOINCREMENT`), so the
/// newest `max_turns` turns are those with `id > MAX(id) - max_turns`; with gaps in the ids
/// fewer are kept, never more.
fn prune(conn: &Connection, max_turns: usize) -> rusqlite::Result<usize> {
    let keep = i64::try_from(max_turns).unwrap_or(i64::MAX);
    conn.execute(
        "DELETE FROM turns WHERE id <= (SELECT MAX(id) FROM turns) - ?1",
        [keep],
    )
}

/// Conversation turns in SQLite.
#[derive(Debug)]
pub struct SqliteMemory {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteMemory {
    /// Opens (creating if needed) `<workspace>/memory/brain.db`.
    ///
    /// # Errors
    /// [`MemoryError`] when the directory cannot be created or the database opened.
    pub fn open(workspace: &Path) -> Result<Self, MemoryError> {
        let dir = workspace.join("memory");
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join("brain.db");
        let conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS turns (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 created_at TEXT NOT NULL,
                 role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
                 content TEXT NOT NULL
             );",
        )?;
        prune(&conn, MAX_STORED_TURNS)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable; take it back.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends one exchange (user then assistant, each cut by [`cap_turn`]) and deletes the
    /// turns past [`MAX_STORED_TURNS`], in one transaction.
    ///
    /// # Errors
    /// [`MemoryError::Sqlite`].
    pub fn save(&self, user: &str, assistant: &str) -> Result<(), MemoryError> {
        let now = chrono::Utc::now().to_rfc3339();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO turns (created_at, role, content) VALUES (?1, ?2, ?3)",
            )?;
            stmt.execute(params![now, "user", cap_turn(user)])?;
            stmt.execute(params![now, "assistant", cap_turn(assistant)])?;
        }
        prune(&tx, MAX_STORED_TURNS)?;
        tx.commit()?;
        Ok(())
    }

    /// The last `max_turns` turns, oldest first, trimmed from the oldest end to at most
    /// `max_chars` characters and to start with a user turn.
    ///
    /// # Errors
    /// [`MemoryError::Sqlite`].
    pub fn recall(&self, max_turns: usize, max_chars: usize) -> Result<Vec<Turn>, MemoryError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT role, content FROM turns ORDER BY id DESC LIMIT ?1")?;
        let limit = i64::try_from(max_turns).unwrap_or(i64::MAX);
        let mut newest_first = Vec::new();
        let mut chars = 0usize;
        for row in stmt.query_map([limit], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })? {
            let (role, content) = row?;
            chars += content.chars().count();
            if chars > max_chars {
                break;
            }
            let role = if role == "user" {
                Role::User
            } else {
                Role::Assistant
            };
            newest_first.push(Turn { role, content });
        }
        let mut turns: Vec<Turn> = newest_first.into_iter().rev().collect();
        let first_user = turns
            .iter()
            .position(|t| t.role == Role::User)
            .unwrap_or(turns.len());
        turns.drain(..first_user);
        Ok(turns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_recalls_bounded_history() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = SqliteMemory::open(dir.path()).expect("open");
        assert!(dir.path().join("memory/brain.db").exists());
        assert!(m.recall(20, 1000).expect("empty").is_empty());
        for i in 0..15 {
            m.save(&format!("q{i}"), &format!("a{i}")).expect("save");
        }
        let turns = m.recall(20, 10_000).expect("recall");
        assert_eq!(turns.len(), 20);
        assert_eq!(
            turns[0],
            Turn {
                role: Role::User,
                content: "q5".into()
            }
        );
        assert_eq!(
            turns[19],
            Turn {
                role: Role::Assistant,
                content: "a14".into()
            }
        );
        // An odd limit drops the dangling assistant turn at the old end.
        let turns = m.recall(3, 10_000).expect("recall");
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[0].content, "q14");
        // The character bound trims from the old end.
        let turns = m.recall(20, 7).expect("recall");
        assert_eq!(
            turns.iter().map(|t| t.content.as_str()).collect::<Vec<_>>(),
            ["q14", "a14"]
        );
        // Survives reopening.
        drop(m);
        let m = SqliteMemory::open(dir.path()).expect("reopen");
        assert_eq!(m.recall(2, 100).expect("recall").len(), 2);
    }

    fn stored(m: &SqliteMemory) -> Vec<(i64, String)> {
        let conn = m.conn();
        let mut stmt = conn
            .prepare("SELECT id, content FROM turns ORDER BY id")
            .expect("prepare");
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query");
        rows.collect::<Result<_, _>>().expect("rows")
    }

    #[test]
    fn keeps_only_the_newest_turns() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = SqliteMemory::open(dir.path()).expect("open");
        // MAX_STORED_TURNS + 10 turns, two per exchange.
        let exchanges = (MAX_STORED_TURNS + 10) / 2;
        for i in 0..exchanges {
            m.save(&format!("q{i}"), &format!("a{i}")).expect("save");
        }
        let rows = stored(&m);
        assert_eq!(rows.len(), MAX_STORED_TURNS);
        // The 10 oldest turns (exchanges 0–4) are gone; exchange 5 is now the oldest.
        assert_eq!(rows[0].1, "q5");
        assert!(!rows.iter().any(|(_, c)| c == "q4" || c == "a4"));
        assert_eq!(rows[rows.len() - 1].1, format!("a{}", exchanges - 1));
    }

    #[test]
    fn an_oversized_database_is_pruned_on_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = SqliteMemory::open(dir.path()).expect("open");
        {
            // Rows written before the cap existed.
            let conn = m.conn();
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                 INSERT INTO turns (created_at, role, content) SELECT 'then', 'user', 'old' || i FROM n",
                [i64::try_from(MAX_STORED_TURNS + 500).expect("fits")],
            )
            .expect("seed");
        }
        drop(m);
        let m = SqliteMemory::open(dir.path()).expect("reopen");
        let rows = stored(&m);
        assert_eq!(rows.len(), MAX_STORED_TURNS);
        assert_eq!(rows[0].1, "old501");
    }

    #[test]
    fn long_messages_are_stored_capped() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = SqliteMemory::open(dir.path()).expect("open");
        let user = "u".repeat(100 * 1024);
        let answer = "é".repeat(50 * 1024);
        m.save(&user, &answer).expect("save");
        let rows = stored(&m);
        assert_eq!(rows.len(), 2);
        for (_, content) in &rows {
            assert!(
                content.len() <= super::super::MAX_TURN_BYTES,
                "{}",
                content.len()
            );
            assert!(content.ends_with(super::super::TRUNCATION_MARKER));
        }
        assert!(rows[0].1.starts_with("uuu") && rows[1].1.starts_with("ééé"));
    }
}
