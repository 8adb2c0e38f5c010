//! The `sqlite` memory backend: `<workspace>/memory/brain.db`.
//!
//! One table, `turns(id, created_at, role, content, conversation)`, indexed by
//! `(conversation, id)`: recall reads only the asking conversation's turns. WAL with
//! `synchronous = NORMAL`: a save costs no fsync, and a crash loses at most the last
//! exchanges, never the database.
//!
//! Schema: `CREATE TABLE IF NOT EXISTS` as before. A database written before conversations
//! existed (in an agent's volume, by an earlier version) has no `conversation` column; opening
//! it adds one with `ALTER TABLE turns ADD COLUMN conversation TEXT NOT NULL DEFAULT 'webhook'`
//! (constant time, nothing rewritten), so its rows become the history of
//! [`WEBHOOK_CONVERSATION`], as `/webhook` saw them before. The migration runs in one
//! immediate transaction and is idempotent.
//!
//! Bounded: each message is cut to [`MAX_TURN_BYTES`](super::MAX_TURN_BYTES) and the table
//! keeps the newest [`MAX_STORED_TURNS`] turns, the oldest being deleted in the same
//! transaction that stores a new exchange (and on open, for a database that predates the cap).
//! Deleted pages are reused by later inserts, so the file stops growing at roughly
//! `MAX_STORED_TURNS × MAX_TURN_BYTES` (about 160 MiB) in the worst case.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, TransactionBehavior};

use super::{cap_turn, io_err, MemoryError, Role, Turn, WEBHOOK_CONVERSATION};

/// Most turns (user and assistant messages; two per exchange) kept per agent, all
/// conversations together (a per-conversation cap would not bound the disk). Older turns are
/// deleted when a save passes it.
pub const MAX_STORED_TURNS: usize = 10_000;

/// Creates the table and index, adding the `conversation` column to a table from before it
/// (see the module docs).
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS turns (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             created_at TEXT NOT NULL,
             role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
             content TEXT NOT NULL,
             conversation TEXT NOT NULL DEFAULT '{WEBHOOK_CONVERSATION}'
         );"
    ))?;
    let has_conversation = tx
        .prepare("SELECT 1 FROM pragma_table_info('turns') WHERE name = 'conversation'")?
        .exists([])?;
    if !has_conversation {
        tx.execute_batch(&format!(
            "ALTER TABLE turns ADD COLUMN conversation TEXT NOT NULL \
             DEFAULT '{WEBHOOK_CONVERSATION}';"
        ))?;
    }
    tx.execute_batch(
        "CREATE INDEX IF NOT EXISTS turns_by_conversation ON turns (conversation, id);",
    )?;
    tx.commit()
}

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
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        migrate(&mut conn)?;
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

    /// Appends one exchange of `conversation` (user then assistant, each cut by [`cap_turn`])
    /// and deletes the turns past [`MAX_STORED_TURNS`], in one transaction.
    ///
    /// # Errors
    /// [`MemoryError::Sqlite`].
    pub fn save(&self, conversation: &str, user: &str, assistant: &str) -> Result<(), MemoryError> {
        let now = chrono::Utc::now().to_rfc3339();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO turns (created_at, role, content, conversation) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            stmt.execute(params![now, "user", cap_turn(user), conversation])?;
            stmt.execute(params![now, "assistant", cap_turn(assistant), conversation])?;
        }
        prune(&tx, MAX_STORED_TURNS)?;
        tx.commit()?;
        Ok(())
    }

    /// The last `max_turns` turns of `conversation`, oldest first, trimmed from the oldest end
    /// to at most `max_chars` characters and to start with a user turn.
    ///
    /// # Errors
    /// [`MemoryError::Sqlite`].
    pub fn recall(
        &self,
        conversation: &str,
        max_turns: usize,
        max_chars: usize,
    ) -> Result<Vec<Turn>, MemoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT role, content FROM turns WHERE conversation = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let limit = i64::try_from(max_turns).unwrap_or(i64::MAX);
        let mut newest_first = Vec::new();
        let mut chars = 0usize;
        for row in stmt.query_map(params![conversation, limit], |r| {
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

    const W: &str = WEBHOOK_CONVERSATION;

    #[test]
    fn saves_and_recalls_bounded_history() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = SqliteMemory::open(dir.path()).expect("open");
        assert!(dir.path().join("memory/brain.db").exists());
        assert!(m.recall(W, 20, 1000).expect("empty").is_empty());
        for i in 0..15 {
            m.save(W, &format!("q{i}"), &format!("a{i}")).expect("save");
        }
        let turns = m.recall(W, 20, 10_000).expect("recall");
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
        let turns = m.recall(W, 3, 10_000).expect("recall");
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[0].content, "q14");
        // The character bound trims from the old end.
        let turns = m.recall(W, 20, 7).expect("recall");
        assert_eq!(
            turns.iter().map(|t| t.content.as_str()).collect::<Vec<_>>(),
            ["q14", "a14"]
        );
        // Survives reopening.
        drop(m);
        let m = SqliteMemory::open(dir.path()).expect("reopen");
        assert_eq!(m.recall(W, 2, 100).expect("recall").len(), 2);
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
    fn conversations_recall_only_their_own_turns() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = SqliteMemory::open(dir.path()).expect("open");
        for i in 0..3 {
            m.save("telegram:1", &format!("t-q{i}"), &format!("t-a{i}"))
                .expect("save");
            m.save("slack:C1", &format!("s-q{i}"), &format!("s-a{i}"))
                .expect("save");
        }
        let contents = |conversation: &str| -> Vec<String> {
            m.recall(conversation, 20, 10_000)
                .expect("recall")
                .into_iter()
                .map(|t| t.content)
                .collect()
        };
        assert_eq!(
            contents("telegram:1"),
            ["t-q0", "t-a0", "t-q1", "t-a1", "t-q2", "t-a2"]
        );
        assert_eq!(
            contents("slack:C1"),
            ["s-q0", "s-a0", "s-q1", "s-a1", "s-q2", "s-a2"]
        );
        assert!(contents(W).is_empty());
        assert!(contents("telegram:2").is_empty());
        // The turn limit counts only the conversation's own turns.
        let last = m.recall("telegram:1", 2, 10_000).expect("recall");
        assert_eq!(last.len(), 2);
        assert_eq!(last[0].content, "t-q2");
    }

    /// The schema of earlier versions: no `conversation` column.
    const OLD_SCHEMA: &str = "CREATE TABLE turns (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         created_at TEXT NOT NULL,
         role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
         content TEXT NOT NULL
     );";

    #[test]
    fn an_old_database_is_migrated_and_its_history_is_the_webhooks() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("memory")).expect("mkdir");
        {
            let old = Connection::open(dir.path().join("memory/brain.db")).expect("old db");
            old.pragma_update(None, "journal_mode", "WAL").expect("wal");
            old.execute_batch(OLD_SCHEMA).expect("old schema");
            old.execute_batch(
                "INSERT INTO turns (created_at, role, content) VALUES
                     ('2026-01-01T00:00:00+00:00', 'user', 'my name is Ada'),
                     ('2026-01-01T00:00:00+00:00', 'assistant', 'hello Ada');",
            )
            .expect("old rows");
        }
        let m = SqliteMemory::open(dir.path()).expect("open old db");
        let turns = m.recall(W, 20, 10_000).expect("recall");
        assert_eq!(
            turns,
            [
                Turn {
                    role: Role::User,
                    content: "my name is Ada".into()
                },
                Turn {
                    role: Role::Assistant,
                    content: "hello Ada".into()
                }
            ]
        );
        assert!(m
            .recall("telegram:1", 20, 10_000)
            .expect("recall")
            .is_empty());
        {
            let conn = m.conn();
            let index: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master \
                     WHERE type = 'index' AND name = 'turns_by_conversation'",
                    [],
                    |r| r.get(0),
                )
                .expect("index");
            assert_eq!(index, 1);
        }
        // New exchanges go on after the old ones, in their conversations.
        m.save(W, "what is my name?", "Ada").expect("save");
        m.save("telegram:1", "hi", "hello").expect("save");
        assert_eq!(m.recall(W, 20, 10_000).expect("recall").len(), 4);
        // Opening a migrated database again changes nothing.
        drop(m);
        let m = SqliteMemory::open(dir.path()).expect("reopen");
        assert_eq!(m.recall(W, 20, 10_000).expect("recall").len(), 4);
        assert_eq!(m.recall("telegram:1", 20, 10_000).expect("recall").len(), 2);
    }

    #[test]
    fn a_new_database_has_the_same_columns_as_a_migrated_one() {
        let columns = |conn: &Connection| -> Vec<String> {
            let mut stmt = conn
                .prepare(
                    "SELECT name || ' ' || type || ' ' || \"notnull\" || ' ' || ifnull(dflt_value, '-') \
                          FROM pragma_table_info('turns') ORDER BY cid",
                )
                .expect("prepare");
            let rows = stmt.query_map([], |r| r.get(0)).expect("query");
            rows.collect::<Result<_, _>>().expect("rows")
        };
        let fresh = tempfile::tempdir().expect("tmp");
        let fresh = SqliteMemory::open(fresh.path()).expect("open");
        let old = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(old.path().join("memory")).expect("mkdir");
        Connection::open(old.path().join("memory/brain.db"))
            .expect("old db")
            .execute_batch(OLD_SCHEMA)
            .expect("old schema");
        let migrated = SqliteMemory::open(old.path()).expect("open");
        let fresh_columns = columns(&fresh.conn());
        assert_eq!(fresh_columns, columns(&migrated.conn()));
        assert_eq!(
            fresh_columns.last().map(String::as_str),
            Some("conversation TEXT 1 'webhook'")
        );
    }

    #[test]
    fn keeps_only_the_newest_turns() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = SqliteMemory::open(dir.path()).expect("open");
        // MAX_STORED_TURNS + 10 turns, two per exchange.
        let exchanges = (MAX_STORED_TURNS + 10) / 2;
        for i in 0..exchanges {
            m.save(W, &format!("q{i}"), &format!("a{i}")).expect("save");
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
        m.save(W, &user, &answer).expect("save");
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
