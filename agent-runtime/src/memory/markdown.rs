//! The `markdown` memory backend: `<workspace>/MEMORY.md` + `<workspace>/memory/YYYY-MM-DD.md`.
//!
//! Every exchange is appended to the UTC day's log as
//! `### HH:MM:SSZ` / `**User:** …` / `**Agent:** …`. Recall is the tail of yesterday's and
//! today's logs, for the system prompt; `MEMORY.md` itself reaches the prompt as a persona file.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};

use super::{io_err, MemoryError};

const MEMORY_HEADER: &str = "# MEMORY.md — long-term memory\n";

/// Daily markdown logs.
#[derive(Debug)]
pub struct MarkdownMemory {
    workspace: PathBuf,
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
        })
    }

    /// The log file of `day`'s UTC date.
    pub fn day_file(&self, day: DateTime<Utc>) -> PathBuf {
        self.workspace
            .join("memory")
            .join(format!("{}.md", day.format("%Y-%m-%d")))
    }

    /// Appends one exchange to `now`'s log.
    ///
    /// # Errors
    /// [`MemoryError::Io`].
    pub fn save(&self, now: DateTime<Utc>, user: &str, assistant: &str) -> Result<(), MemoryError> {
        let path = self.day_file(now);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let entry = format!(
            "### {}\n**User:** {}\n\n**Agent:** {}\n\n",
            now.format("%H:%M:%SZ"),
            user.trim(),
            assistant.trim()
        );
        f.write_all(entry.as_bytes()).map_err(io_err(&path))
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
}
