//! The `markdown` memory backend: `<workspace>/MEMORY.md` + daily logs, one set per
//! conversation.
//!
//! Where each conversation's logs are ([`MarkdownMemory::log_dir`]):
//! - the webhook conversation ([`WEBHOOK_CONVERSATION`]): `<workspace>/memory/YYYY-MM-DD.md`,
//!   where upstream and earlier versions (which had one history) put every log, so those are
//!   its history;
//! - any other: `<workspace>/memory/conversations/<name>/YYYY-MM-DD.md`, `<name>` being
//!   [`conversation_dir_name`] of the conversation key (`telegram:-100123` →
//!   `telegram_3A-100123`): only `[A-Za-z0-9_-]`, so no key (`../x`, `a/b`, empty) reaches
//!   outside its directory, and distinct keys get distinct directories.
//!
//! Every exchange is appended to the UTC day's log of its conversation as
//! `### HH:MM:SSZ` / `**User:** …` / `**Agent:** …`. Recall is the tail of the conversation's
//! yesterday's and today's logs, for the system prompt; `MEMORY.md` itself reaches the prompt
//! as a persona file (in every conversation).
//!
//! Bounded: each message is cut to [`MAX_TURN_BYTES`](super::MAX_TURN_BYTES); an append that
//! would take the day's log past [`MAX_DAY_LOG_BYTES`] first drops the log's oldest entries,
//! keeping its newest [`DAY_LOG_KEEP_BYTES`]; after each append, whole daily logs are deleted,
//! oldest date first (never the log just written), while all `YYYY-MM-DD.md` files of
//! `memory/` and of the directories in `memory/conversations/` together exceed
//! [`MAX_DAILY_LOGS_BYTES`]. Other files in `memory/` are never touched. `MEMORY.md` is only
//! ever written once, as a one-line header, when it is missing; what an operator puts there is
//! theirs (and reaches the prompt capped like every persona file).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use sha2::{Digest, Sha256};

use super::{cap_turn, io_err, MemoryError, WEBHOOK_CONVERSATION};

const MEMORY_HEADER: &str = "# MEMORY.md — long-term memory\n";

/// Largest size of one day's log, in bytes (1 MiB).
pub const MAX_DAY_LOG_BYTES: u64 = 1024 * 1024;
/// What is kept of a day's log when it is full, in bytes (512 KiB, the newest whole entries):
/// trimming happens at most once per half MiB appended.
pub const DAY_LOG_KEEP_BYTES: u64 = MAX_DAY_LOG_BYTES / 2;
/// Largest total size of the daily logs of all conversations (`memory/YYYY-MM-DD.md` and
/// `memory/conversations/*/YYYY-MM-DD.md`), in bytes (16 MiB: at least 16 full days, usually
/// months).
pub const MAX_DAILY_LOGS_BYTES: u64 = 16 * 1024 * 1024;

/// The directory, under `memory/`, of the logs of conversations other than the webhook.
pub const CONVERSATIONS_DIR: &str = "conversations";

/// Longest [`conversation_dir_name`] before it is shortened with a hash (bytes; well under
/// the 255 of a file name).
const MAX_DIR_NAME: usize = 120;

/// The directory name of `conversation`'s logs: made only of `[A-Za-z0-9_-]`, never empty,
/// distinct for distinct keys, at most 120 bytes.
///
/// ASCII letters, digits and `-` are kept; every other byte (`_` included) becomes `_XX`, its
/// uppercase hex (`telegram:-100123` → `telegram_3A-100123`, `../x` → `_2E_2E_2Fx`). An empty
/// key is `_`. A longer result keeps its first 100 bytes, then `__` and 16 hex digits of the
/// key's SHA-256 (`__` never occurs in an unshortened name: `_` is always followed by a hex
/// digit there).
pub fn conversation_dir_name(conversation: &str) -> String {
    if conversation.is_empty() {
        return "_".into();
    }
    let mut name = String::with_capacity(conversation.len());
    for b in conversation.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("_{b:02X}"));
        }
    }
    if name.len() > MAX_DIR_NAME {
        let digest = hex::encode(Sha256::digest(conversation.as_bytes()));
        name.truncate(100);
        name.push_str("__");
        name.push_str(&digest[..16]);
    }
    name
}

/// The date of a daily log's file name (`YYYY-MM-DD.md`), if it is one.
fn log_date(name: &str) -> Option<NaiveDate> {
    let stem = name.strip_suffix(".md")?;
    (stem.len() == 10)
        .then(|| NaiveDate::parse_from_str(stem, "%Y-%m-%d").ok())
        .flatten()
}

/// Keeps the newest whole entries of the log at `path`, at most `keep` bytes of it: reads only
/// that tail, cuts it at the first entry heading (`### ` at a line start), and replaces the
/// file atomically.
fn trim_head(path: &Path, keep: u64) -> Result<(), MemoryError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(keep)))
        .map_err(io_err(path))?;
    let mut tail = Vec::new();
    f.take(keep).read_to_end(&mut tail).map_err(io_err(path))?;
    // A '\n' byte is never inside a multi-byte UTF-8 character, so this cut is on a boundary.
    let start = tail
        .windows(5)
        .position(|w| w == b"\n### ")
        .map_or(tail.len(), |i| i + 1);
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, &tail[start..]).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Adds the daily logs (regular files named `YYYY-MM-DD.md`, symlinks not followed) directly
/// in `dir` to `logs`, as (date, path, size).
fn daily_logs(dir: &Path, logs: &mut Vec<(NaiveDate, PathBuf, u64)>) -> Result<(), MemoryError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(date) = name.to_str().and_then(log_date) else {
            continue;
        };
        let meta = entry.metadata().map_err(io_err(&entry.path()))?;
        if meta.is_file() {
            logs.push((date, entry.path(), meta.len()));
        }
    }
    Ok(())
}

/// Daily markdown logs.
#[derive(Debug)]
pub struct MarkdownMemory {
    workspace: PathBuf,
    /// Serializes saves: trimming replaces the day's log, and an append racing that
    /// replacement would land in the discarded file.
    saving: Mutex<()>,
}

impl MarkdownMemory {
    /// Creates `<workspace>/memory/` and `<workspace>/MEMORY.md` if missing.
    ///
    /// # Errors
    /// [`MemoryError::Io`] when they cannot be created.
    pub fn open(workspace: &Path) -> Result<Self, MemoryError> {
        let dir = workspace.join("memory");
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let long_term = workspace.join("MEMORY.md");
        if !long_term.exists() {
            std::fs::write(&long_term, MEMORY_HEADER).map_err(io_err(&long_term))?;
        }
        Ok(Self {
            workspace: workspace.to_owned(),
            saving: Mutex::new(()),
        })
    }

    /// The directory of `conversation`'s logs: `memory/` for the webhook,
    /// `memory/conversations/<`[`conversation_dir_name`]`>/` for any other.
    pub fn log_dir(&self, conversation: &str) -> PathBuf {
        let memory = self.workspace.join("memory");
        if conversation == WEBHOOK_CONVERSATION {
            memory
        } else {
            memory
                .join(CONVERSATIONS_DIR)
                .join(conversation_dir_name(conversation))
        }
    }

    /// The log file of `conversation` for `day`'s UTC date.
    pub fn day_file(&self, conversation: &str, day: DateTime<Utc>) -> PathBuf {
        self.log_dir(conversation)
            .join(format!("{}.md", day.format("%Y-%m-%d")))
    }

    /// Appends one exchange of `conversation` (each message cut by [`cap_turn`]) to `now`'s
    /// log, creating the conversation's directory if needed, then enforces
    /// [`MAX_DAY_LOG_BYTES`] and [`MAX_DAILY_LOGS_BYTES`] (see the module docs).
    ///
    /// # Errors
    /// [`MemoryError::Io`].
    pub fn save(
        &self,
        conversation: &str,
        now: DateTime<Utc>,
        user: &str,
        assistant: &str,
    ) -> Result<(), MemoryError> {
        let _saving = self
            .saving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = self.log_dir(conversation);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = self.day_file(conversation, now);
        let entry = format!(
            "### {}\n**User:** {}\n\n**Agent:** {}\n\n",
            now.format("%H:%M:%SZ"),
            cap_turn(user.trim()),
            cap_turn(assistant.trim())
        );
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&path)(e)),
        };
        let entry_len = u64::try_from(entry.len()).unwrap_or(u64::MAX);
        if len.saturating_add(entry_len) > MAX_DAY_LOG_BYTES {
            trim_head(&path, DAY_LOG_KEEP_BYTES)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.write_all(entry.as_bytes()).map_err(io_err(&path))?;
        self.prune_daily_logs(&path)
    }

    /// Deletes whole daily logs of all conversations, oldest date first and never `today`
    /// (the log just written), while all of them together exceed [`MAX_DAILY_LOGS_BYTES`].
    fn prune_daily_logs(&self, today: &Path) -> Result<(), MemoryError> {
        let memory = self.workspace.join("memory");
        let mut logs = Vec::new();
        daily_logs(&memory, &mut logs)?;
        let conversations = memory.join(CONVERSATIONS_DIR);
        match std::fs::read_dir(&conversations) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(io_err(&conversations))?;
                    // Not following symlinks: only real directories are conversations.
                    let file_type = entry.file_type().map_err(io_err(&entry.path()))?;
                    if file_type.is_dir() {
                        daily_logs(&entry.path(), &mut logs)?;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&conversations)(e)),
        }
        let mut total: u64 = logs.iter().map(|(_, _, len)| len).sum();
        logs.sort_unstable_by_key(|(date, _, _)| *date);
        for (_, path, len) in logs {
            if total <= MAX_DAILY_LOGS_BYTES {
                break;
            }
            if path == today {
                continue;
            }
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            total -= len;
        }
        Ok(())
    }

    /// The last `max_chars` characters of `conversation`'s yesterday's and today's logs, if
    /// any.
    ///
    /// # Errors
    /// [`MemoryError::Io`] for read errors other than a missing file.
    pub fn recall(
        &self,
        conversation: &str,
        now: DateTime<Utc>,
        max_chars: usize,
    ) -> Result<Option<String>, MemoryError> {
        let mut text = String::new();
        for day in [now - Duration::days(1), now] {
            let path = self.day_file(conversation, day);
            match std::fs::read_to_string(&path) {
                Ok(t) => text.push_str(&t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        let total = text.chars().count();
        if total == 0 {
            return Ok(None);
        }
        Ok(Some(
            text.chars().skip(total.saturating_sub(max_chars)).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const W: &str = WEBHOOK_CONVERSATION;

    #[test]
    fn appends_to_the_day_log_and_recalls_the_tail() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = MarkdownMemory::open(dir.path()).expect("open");
        assert!(dir.path().join("MEMORY.md").exists());
        let day1 = Utc
            .with_ymd_and_hms(2026, 11, 20, 23, 59, 0)
            .single()
            .expect("t");
        let day2 = day1 + Duration::minutes(2);
        assert_eq!(m.recall(W, day2, 1000).expect("empty"), None);
        m.save(W, day1, "old question", "old answer").expect("save");
        m.save(W, day2, "hi", "hello").expect("save");
        let log = std::fs::read_to_string(dir.path().join("memory/2026-11-21.md")).expect("log");
        assert_eq!(log, "### 00:01:00Z\n**User:** hi\n\n**Agent:** hello\n\n");
        let notes = m.recall(W, day2, 10_000).expect("recall").expect("some");
        assert!(
            notes.starts_with("### 23:59:00Z\n**User:** old question"),
            "{notes}"
        );
        assert!(notes.contains("**Agent:** hello"));
        let tail = m.recall(W, day2, 10).expect("recall").expect("some");
        assert_eq!(tail.chars().count(), 10);
        // An existing MEMORY.md is left alone.
        std::fs::write(dir.path().join("MEMORY.md"), "curated").expect("w");
        MarkdownMemory::open(dir.path()).expect("reopen");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("MEMORY.md")).expect("r"),
            "curated"
        );
    }

    fn noon(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, 12, 0, 0)
            .single()
            .expect("t")
    }

    #[test]
    fn long_messages_are_logged_capped() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = MarkdownMemory::open(dir.path()).expect("open");
        m.save(W, noon(1), &"q".repeat(100 * 1024), &"a".repeat(100 * 1024))
            .expect("save");
        let log = std::fs::read_to_string(m.day_file(W, noon(1))).expect("log");
        assert!(
            log.len() <= 2 * super::super::MAX_TURN_BYTES + 64,
            "{}",
            log.len()
        );
        assert_eq!(log.matches(super::super::TRUNCATION_MARKER).count(), 2);
    }

    #[test]
    fn a_full_day_log_drops_its_oldest_entries() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = MarkdownMemory::open(dir.path()).expect("open");
        let big = "x".repeat(20 * 1024);
        // ~40 KiB per exchange, 100 exchanges: ~4 MiB appended to one day.
        for i in 0..100 {
            m.save(W, noon(2), &format!("question {i} {big}"), &big)
                .expect("save");
            let len = std::fs::metadata(m.day_file(W, noon(2)))
                .expect("meta")
                .len();
            assert!(len <= MAX_DAY_LOG_BYTES, "after {i}: {len}");
        }
        let log = std::fs::read_to_string(m.day_file(W, noon(2))).expect("log");
        assert!(
            log.starts_with("### 12:00:00Z\n**User:** question "),
            "{}",
            &log[..40]
        );
        assert!(log.contains("question 99 "));
        assert!(!log.contains("question 0 "));
    }

    #[test]
    fn old_daily_logs_are_deleted_past_the_total_cap() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = MarkdownMemory::open(dir.path()).expect("open");
        // 20 full days written by an older version, plus a file that is not a daily log.
        let day = vec![b'x'; usize::try_from(MAX_DAY_LOG_BYTES).expect("fits")];
        for d in 1..=20 {
            std::fs::write(m.day_file(W, noon(d)), &day).expect("seed");
        }
        let other = dir.path().join("memory/notes.md");
        std::fs::write(&other, &day).expect("seed");
        m.save(W, noon(21), "hi", "hello").expect("save");
        let mut logs: Vec<String> = std::fs::read_dir(dir.path().join("memory"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| log_date(n).is_some())
            .collect();
        logs.sort();
        let total: u64 = logs
            .iter()
            .map(|n| {
                std::fs::metadata(dir.path().join("memory").join(n))
                    .expect("meta")
                    .len()
            })
            .sum();
        assert!(total <= MAX_DAILY_LOGS_BYTES, "{total}");
        // The oldest days went first; the newest full days and today stay.
        assert_eq!(logs.first().map(String::as_str), Some("2026-11-06.md"));
        assert_eq!(logs.last().map(String::as_str), Some("2026-11-21.md"));
        assert!(other.exists(), "files other than daily logs are left alone");
    }

    #[test]
    fn todays_log_is_never_deleted() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = MarkdownMemory::open(dir.path()).expect("open");
        // Only today's log, larger than the total cap (written by hand).
        let huge = vec![b'x'; usize::try_from(MAX_DAILY_LOGS_BYTES + 1).expect("fits")];
        std::fs::write(m.day_file(W, noon(3)), huge).expect("seed");
        m.save(W, noon(3), "hi", "hello").expect("save");
        let log = std::fs::read_to_string(m.day_file(W, noon(3))).expect("log");
        assert_eq!(log, "### 12:00:00Z\n**User:** hi\n\n**Agent:** hello\n\n");
    }

    #[test]
    fn each_conversation_has_its_own_logs_and_the_webhook_keeps_the_old_place() {
        let dir = tempfile::tempdir().expect("tmp");
        // A log written by an earlier version (one global history): now the webhook's.
        std::fs::create_dir_all(dir.path().join("memory")).expect("mkdir");
        std::fs::write(
            dir.path().join("memory/2026-11-05.md"),
            "### 11:00:00Z\n**User:** the blue door\n\n**Agent:** noted\n\n",
        )
        .expect("old log");
        let m = MarkdownMemory::open(dir.path()).expect("open");
        let webhook = m.recall(W, noon(5), 10_000).expect("recall").expect("some");
        assert!(webhook.contains("the blue door"), "{webhook}");
        assert_eq!(
            m.recall("telegram:-100123", noon(5), 10_000)
                .expect("recall"),
            None
        );

        m.save("telegram:-100123", noon(5), "red window", "ok")
            .expect("save");
        m.save("slack:C1", noon(5), "green roof", "ok")
            .expect("save");
        m.save(W, noon(5), "yellow wall", "ok").expect("save");
        assert_eq!(
            m.day_file("telegram:-100123", noon(5)),
            dir.path()
                .join("memory/conversations/telegram_3A-100123/2026-11-05.md")
        );
        assert!(m.day_file("telegram:-100123", noon(5)).exists());
        assert!(dir
            .path()
            .join("memory/conversations/slack_3AC1/2026-11-05.md")
            .exists());
        assert_eq!(
            m.day_file(W, noon(5)),
            dir.path().join("memory/2026-11-05.md")
        );

        let recall = |c: &str| m.recall(c, noon(5), 10_000).expect("recall").expect("some");
        let webhook = recall(W);
        assert!(webhook.contains("the blue door") && webhook.contains("yellow wall"));
        assert!(!webhook.contains("red window") && !webhook.contains("green roof"));
        let telegram = recall("telegram:-100123");
        assert!(telegram.contains("red window"), "{telegram}");
        assert!(!telegram.contains("blue door") && !telegram.contains("yellow wall"));
        assert!(!telegram.contains("green roof"));
        let slack = recall("slack:C1");
        assert!(slack.contains("green roof") && !slack.contains("red window"));
    }

    #[test]
    fn conversation_names_are_path_safe_and_distinct() {
        let keys = [
            "../x",
            "../../etc/passwd",
            "..",
            ".",
            "",
            "/",
            "a/b",
            "a\\b",
            "telegram:-100123",
            "telegram_3A-100123",
            "slack:C0123/../../MEMORY",
            "webhook/..",
            "C:\\x",
            "é\0\n",
            "__",
            "_",
        ];
        let long = "x".repeat(500);
        let long2 = format!("{long}y");
        let mut names = std::collections::HashSet::new();
        for key in keys.iter().copied().chain([long.as_str(), long2.as_str()]) {
            let name = conversation_dir_name(key);
            assert!(
                !name.is_empty() && name.len() <= MAX_DIR_NAME,
                "{key:?} → {name}"
            );
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{key:?} → {name}"
            );
            assert!(names.insert(name.clone()), "{key:?} → {name} twice");
        }
        assert_eq!(conversation_dir_name("../x"), "_2E_2E_2Fx");
        assert_eq!(
            conversation_dir_name("telegram:-100123"),
            "telegram_3A-100123"
        );
        assert!(conversation_dir_name(&long).contains("__"));

        // Saving under each key writes only inside memory/conversations/<one dir>/.
        let dir = tempfile::tempdir().expect("tmp");
        let ws = dir.path().join("ws");
        let m = MarkdownMemory::open(&ws).expect("open");
        for key in keys.iter().copied().filter(|k| *k != W) {
            m.save(key, noon(7), "secret", "ok").expect("save");
            assert!(
                m.recall(key, noon(7), 100).expect("recall").is_some(),
                "{key:?}"
            );
        }
        let conversations = ws.join("memory").join(CONVERSATIONS_DIR);
        let mut found = Vec::new();
        let mut stack = vec![dir.path().to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("ls") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    found.push(p);
                }
            }
        }
        found.retain(|p| p != &ws.join("MEMORY.md"));
        assert_eq!(found.len(), keys.len(), "{found:?}");
        for p in &found {
            assert_eq!(
                p.parent().and_then(Path::parent),
                Some(conversations.as_path()),
                "{p:?}"
            );
            assert_eq!(
                p.file_name().and_then(|n| n.to_str()),
                Some("2026-11-07.md")
            );
        }
        // No log of the webhook was written or read by the others.
        assert!(!m.day_file(W, noon(7)).exists());
        assert_eq!(
            std::fs::read_to_string(ws.join("MEMORY.md")).expect("r"),
            MEMORY_HEADER
        );
    }

    #[test]
    fn the_total_cap_counts_every_conversation() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = MarkdownMemory::open(dir.path()).expect("open");
        let day = vec![b'x'; usize::try_from(MAX_DAY_LOG_BYTES).expect("fits")];
        // 20 full days spread over the webhook and two chats (written by hand).
        for d in 1..=20 {
            let conversation = match d % 3 {
                0 => W,
                1 => "telegram:1",
                _ => "discord:2",
            };
            std::fs::create_dir_all(m.log_dir(conversation)).expect("mkdir");
            std::fs::write(m.day_file(conversation, noon(d)), &day).expect("seed");
        }
        m.save("slack:C1", noon(21), "hi", "hello").expect("save");
        let mut kept = Vec::new();
        let mut total = 0;
        for d in 1..=21 {
            for c in [W, "telegram:1", "discord:2", "slack:C1"] {
                if let Ok(meta) = std::fs::metadata(m.day_file(c, noon(d))) {
                    kept.push(d);
                    total += meta.len();
                }
            }
        }
        assert!(total <= MAX_DAILY_LOGS_BYTES, "{total}");
        // The oldest days went first, whatever their conversation; the newest stay.
        assert_eq!(kept.first(), Some(&6), "{kept:?}");
        assert_eq!(kept.last(), Some(&21), "{kept:?}");
        assert_eq!(kept.len(), 16, "{kept:?}");
    }

    #[test]
    fn only_dated_file_names_are_daily_logs() {
        assert!(log_date("2026-11-21.md").is_some());
        for n in [
            "MEMORY.md",
            "brain.db",
            "2026-11-21.md.tmp",
            "2026-13-01.md",
            "x2026-11-21.md",
        ] {
            assert_eq!(log_date(n), None, "{n}");
        }
    }
}
