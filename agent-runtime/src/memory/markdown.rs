//! The `markdown` memory backend: `<workspace>/MEMORY.md` + `<workspace>/memory/YYYY-MM-DD.md`.
//!
//! Every exchange is appended to the UTC day's log as
//! `### HH:MM:SSZ` / `**User:** …` / `**Agent:** …`. Recall is the tail of yesterday's and
//! today's logs, for the system prompt; `MEMORY.md` itself reaches the prompt as a persona file.
//!
//! Bounded: each message is cut to [`MAX_TURN_BYTES`](super::MAX_TURN_BYTES); an append that
//! would take the day's log past [`MAX_DAY_LOG_BYTES`] first drops the log's oldest entries,
//! keeping its newest [`DAY_LOG_KEEP_BYTES`]; after each append, whole daily logs are deleted,
//! oldest date first (never today's), while all `YYYY-MM-DD.md` files of `memory/` together
//! exceed [`MAX_DAILY_LOGS_BYTES`]. Other files in `memory/` are never touched. `MEMORY.md`
//! is only ever written once, as a one-line header, when it is missing; what an operator puts
//! there is theirs (and reaches the prompt capped like every persona file).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::{cap_turn, io_err, MemoryError};

const MEMORY_HEADER: &str = "# MEMORY.md — long-term memory\n";

/// Largest size of one day's log, in bytes (1 MiB).
pub const MAX_DAY_LOG_BYTES: u64 = 1024 * 1024;
/// What is kept of a day's log when it is full, in bytes (512 KiB, the newest whole entries):
/// trimming happens at most once per half MiB appended.
pub const DAY_LOG_KEEP_BYTES: u64 = MAX_DAY_LOG_BYTES / 2;
/// Largest total size of the daily logs (`memory/YYYY-MM-DD.md`), in bytes (16 MiB: at least
/// 16 full days, usually months).
pub const MAX_DAILY_LOGS_BYTES: u64 = 16 * 1024 * 1024;

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

    /// The log file of `day`'s UTC date.
    pub fn day_file(&self, day: DateTime<Utc>) -> PathBuf {
        self.workspace
            .join("memory")
            .join(format!("{}.md", day.format("%Y-%m-%d")))
    }

    /// Appends one exchange (each message cut by [`cap_turn`]) to `now`'s log, then enforces
    /// [`MAX_DAY_LOG_BYTES`] and [`MAX_DAILY_LOGS_BYTES`] (see the module docs).
    ///
    /// # Errors
    /// [`MemoryError::Io`].
    pub fn save(&self, now: DateTime<Utc>, user: &str, assistant: &str) -> Result<(), MemoryError> {
        let _saving = self
            .saving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let path = self.day_file(now);
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

    /// Deletes whole daily logs, oldest date first and never `today`, while all of them
    /// together exceed [`MAX_DAILY_LOGS_BYTES`].
    fn prune_daily_logs(&self, today: &Path) -> Result<(), MemoryError> {
        let dir = self.workspace.join("memory");
        let mut logs = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let Some(date) = name.to_str().and_then(log_date) else {
                continue;
            };
            let meta = entry.metadata().map_err(io_err(&entry.path()))?;
            if meta.is_file() {
                logs.push((date, entry.path(), meta.len()));
            }
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

    /// The last `max_chars` characters of yesterday's and today's logs, if any.
    ///
    /// # Errors
    /// [`MemoryError::Io`] for read errors other than a missing file.
    pub fn recall(
        &self,
        now: DateTime<Utc>,
        max_chars: usize,
    ) -> Result<Option<String>, MemoryError> {
        let mut text = String::new();
        for day in [now - Duration::days(1), now] {
            let path = self.day_file(day);
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
        assert_eq!(m.recall(day2, 1000).expect("empty"), None);
        m.save(day1, "old question", "old answer").expect("save");
        m.save(day2, "hi", "hello").expect("save");
        let log = std::fs::read_to_string(dir.path().join("memory/2026-11-21.md")).expect("log");
        assert_eq!(log, "### 00:01:00Z\n**User:** hi\n\n**Agent:** hello\n\n");
        let notes = m.recall(day2, 10_000).expect("recall").expect("some");
        assert!(
            notes.starts_with("### 23:59:00Z\n**User:** old question"),
            "{notes}"
        );
        assert!(notes.contains("**Agent:** hello"));
        let tail = m.recall(day2, 10).expect("recall").expect("some");
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
        m.save(noon(1), &"q".repeat(100 * 1024), &"a".repeat(100 * 1024))
            .expect("save");
        let log = std::fs::read_to_string(m.day_file(noon(1))).expect("log");
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
            m.save(noon(2), &format!("question {i} {big}"), &big)
                .expect("save");
            let len = std::fs::metadata(m.day_file(noon(2))).expect("meta").len();
            assert!(len <= MAX_DAY_LOG_BYTES, "after {i}: {len}");
        }
        let log = std::fs::read_to_string(m.day_file(noon(2))).expect("log");
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
            std::fs::write(m.day_file(noon(d)), &day).expect("seed");
        }
        let other = dir.path().join("memory/notes.md");
        std::fs::write(&other, &day).expect("seed");
        m.save(noon(21), "hi", "hello").expect("save");
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
        std::fs::write(m.day_file(noon(3)), huge).expect("seed");
        m.save(noon(3), "hi", "hello").expect("save");
        let log = std::fs::read_to_string(m.day_file(noon(3))).expect("log");
        assert_eq!(log, "### 12:00:00Z\n**User:** hi\n\n**Agent:** hello\n\n");
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
