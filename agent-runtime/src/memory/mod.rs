//! Conversation memory: what the agent remembers between messages.
//!
//! Memory is kept **per conversation**: every recall and save names one. `/webhook` is the
//! conversation [`WEBHOOK_CONVERSATION`] (`webhook`); each channel chat is its own
//! (`telegram:<chat id>`, `discord:<channel id>`, `slack:<channel>`, see [`crate::channels`]).
//! No conversation sees another's history. What earlier versions (and upstream) stored, a single
//! history, is the webhook conversation's and stays where it was.
//!
//! Backends (`[memory] backend`):
//! - `sqlite` (default): turns in `<workspace>/memory/brain.db`, each tagged with its
//!   conversation; the last [`RECALL_TURNS`] turns of the conversation (at most
//!   [`RECALL_CHARS`] characters) are replayed as chat history. A database from before
//!   conversations is migrated on open, its rows becoming the webhook conversation's;
//! - `markdown`: each exchange appended to a daily log (UTC): the webhook conversation's in
//!   `<workspace>/memory/YYYY-MM-DD.md` as before, any other conversation's in
//!   `<workspace>/memory/conversations/<name>/YYYY-MM-DD.md` ([`conversation_dir_name`] makes
//!   `<name>` path-safe). `<workspace>/MEMORY.md` is the curated long-term file (created
//!   empty-headed if missing; it is also a persona file, shared by all conversations). The tail
//!   of the conversation's yesterday's and today's logs is recalled into the system prompt;
//! - `none`: nothing stored or recalled.
//!
//! With `auto_save` each exchange is stored after the provider answers. All calls are blocking
//! (file and SQLite I/O): run them on `spawn_blocking`. Opening is lazy ([`MemoryHandle`]) so
//! it never delays the start-up banner.
//!
//! Bounds, so that no conversation (nor many of them) fills the disk: every stored message
//! (user or assistant) is cut to [`MAX_TURN_BYTES`] by [`cap_turn`]; the sqlite backend keeps
//! at most [`MAX_STORED_TURNS`] turns, all conversations together; the markdown backend keeps
//! each daily log under [`MAX_DAY_LOG_BYTES`] and all daily logs of all conversations together
//! under [`MAX_DAILY_LOGS_BYTES`].

mod markdown;
mod sqlite;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

pub use markdown::{
    conversation_dir_name, MarkdownMemory, CONVERSATIONS_DIR, MAX_DAILY_LOGS_BYTES,
    MAX_DAY_LOG_BYTES,
};
pub use sqlite::{SqliteMemory, MAX_STORED_TURNS};

/// The conversation of `/webhook`. Everything stored before memory was kept per conversation
/// (sqlite rows without a conversation, markdown logs directly in `memory/`) is its history.
pub const WEBHOOK_CONVERSATION: &str = "webhook";

/// Most turns (user or assistant messages) replayed from memory.
pub const RECALL_TURNS: usize = 20;
/// Most characters replayed from memory (turns or notes).
pub const RECALL_CHARS: usize = 16_000;

/// Largest stored message, in UTF-8 bytes (16 KiB), marker included. Longer user or assistant
/// texts are cut on a character boundary and end with [`TRUNCATION_MARKER`]; the answer sent
/// back to the caller is not affected, only what is remembered.
pub const MAX_TURN_BYTES: usize = 16 * 1024;
/// Appended to a message cut by [`cap_turn`].
pub const TRUNCATION_MARKER: &str = "…[truncated]";

/// `text` if it fits in [`MAX_TURN_BYTES`]; otherwise its longest prefix ending on a character
/// boundary that, followed by [`TRUNCATION_MARKER`], is at most [`MAX_TURN_BYTES`] bytes.
pub fn cap_turn(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_TURN_BYTES {
        return Cow::Borrowed(text);
    }
    let mut end = MAX_TURN_BYTES - TRUNCATION_MARKER.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{TRUNCATION_MARKER}", &text[..end]))
}

/// `[memory] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryBackend {
    /// `workspace/memory/brain.db`.
    Sqlite,
    /// `workspace/MEMORY.md` + `workspace/memory/YYYY-MM-DD.md` (webhook) and
    /// `workspace/memory/conversations/<name>/YYYY-MM-DD.md` (other conversations).
    Markdown,
    /// No memory.
    None,
}

impl MemoryBackend {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Markdown => "markdown",
            Self::None => "none",
        }
    }
}

impl FromStr for MemoryBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "sqlite" => Ok(Self::Sqlite),
            "markdown" => Ok(Self::Markdown),
            "none" => Ok(Self::None),
            _ => Err("expected \"sqlite\", \"markdown\" or \"none\"".into()),
        }
    }
}

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The human (or the system calling `/webhook`).
    User,
    /// The agent.
    Assistant,
}

impl Role {
    /// `user` / `assistant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// Speaker.
    pub role: Role,
    /// Text.
    pub content: String,
}

/// What memory contributes to the next request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recall {
    /// Chat history, oldest first, starting with a user turn.
    pub turns: Vec<Turn>,
    /// Free-text notes for the system prompt (markdown backend).
    pub notes: Option<String>,
}

/// A memory failure.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// File or directory I/O.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// SQLite.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Opening failed earlier (the message of that failure).
    #[error("memory unavailable: {0}")]
    Unavailable(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MemoryError + '_ {
    move |source| MemoryError::Io {
        path: path.to_owned(),
        source,
    }
}

/// An open memory backend.
#[derive(Debug)]
pub enum Memory {
    /// `none`.
    None,
    /// `sqlite`.
    Sqlite(SqliteMemory),
    /// `markdown`.
    Markdown(MarkdownMemory),
}

impl Memory {
    /// Opens `backend` in `workspace`, creating directories and files as needed.
    ///
    /// # Errors
    /// [`MemoryError`] when the workspace is not writable or the database cannot be opened.
    pub fn open(backend: MemoryBackend, workspace: &Path) -> Result<Self, MemoryError> {
        Ok(match backend {
            MemoryBackend::None => Self::None,
            MemoryBackend::Sqlite => Self::Sqlite(SqliteMemory::open(workspace)?),
            MemoryBackend::Markdown => Self::Markdown(MarkdownMemory::open(workspace)?),
        })
    }

    /// The context of `conversation` to replay before its next message (only that
    /// conversation's history).
    ///
    /// # Errors
    /// [`MemoryError`] on I/O or SQLite failure.
    pub fn recall(&self, conversation: &str) -> Result<Recall, MemoryError> {
        match self {
            Self::None => Ok(Recall::default()),
            Self::Sqlite(m) => Ok(Recall {
                turns: m.recall(conversation, RECALL_TURNS, RECALL_CHARS)?,
                notes: None,
            }),
            Self::Markdown(m) => Ok(Recall {
                turns: Vec::new(),
                notes: m.recall(conversation, chrono::Utc::now(), RECALL_CHARS)?,
            }),
        }
    }

    /// Stores one exchange of `conversation`.
    ///
    /// # Errors
    /// [`MemoryError`] on I/O or SQLite failure.
    pub fn save(&self, conversation: &str, user: &str, assistant: &str) -> Result<(), MemoryError> {
        match self {
            Self::None => Ok(()),
            Self::Sqlite(m) => m.save(conversation, user, assistant),
            Self::Markdown(m) => m.save(conversation, chrono::Utc::now(), user, assistant),
        }
    }
}

/// A memory backend opened on first use (or by a warm-up task right after start).
#[derive(Debug)]
pub struct MemoryHandle {
    backend: MemoryBackend,
    workspace: PathBuf,
    cell: OnceLock<Result<Memory, String>>,
}

impl MemoryHandle {
    /// A handle that will open `backend` in `workspace`.
    pub fn new(backend: MemoryBackend, workspace: PathBuf) -> Self {
        Self {
            backend,
            workspace,
            cell: OnceLock::new(),
        }
    }

    /// The backend kind.
    pub fn backend(&self) -> MemoryBackend {
        self.backend
    }

    /// The open memory (opening it now if needed; blocking).
    ///
    /// # Errors
    /// [`MemoryError::Unavailable`] when opening failed (the failure is sticky).
    pub fn get(&self) -> Result<&Memory, MemoryError> {
        self.cell
            .get_or_init(|| Memory::open(self.backend, &self.workspace).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| MemoryError::Unavailable(e.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_spellings() {
        for b in [
            MemoryBackend::Sqlite,
            MemoryBackend::Markdown,
            MemoryBackend::None,
        ] {
            assert_eq!(b.as_str().parse::<MemoryBackend>(), Ok(b));
        }
        assert!("Sqlite".parse::<MemoryBackend>().is_err());
    }

    #[test]
    fn long_turns_are_cut_on_a_char_boundary_with_a_marker() {
        assert!(matches!(cap_turn("short"), Cow::Borrowed("short")));
        let exact = "x".repeat(MAX_TURN_BYTES);
        assert_eq!(cap_turn(&exact), exact.as_str());
        // 100 KiB of 3-byte characters: the cut must not split one.
        let long = "€".repeat(100 * 1024 / 3);
        let capped = cap_turn(&long);
        assert!(capped.len() <= MAX_TURN_BYTES, "{}", capped.len());
        assert!(capped.len() > MAX_TURN_BYTES - TRUNCATION_MARKER.len() - 3);
        assert!(capped.ends_with(TRUNCATION_MARKER));
        let kept = capped.trim_end_matches(TRUNCATION_MARKER);
        assert!(kept.chars().all(|c| c == '€'));
        assert!(long.starts_with(kept));
    }

    #[test]
    fn none_backend_stores_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = Memory::open(MemoryBackend::None, dir.path()).expect("open");
        m.save(WEBHOOK_CONVERSATION, "hi", "hello").expect("save");
        assert_eq!(
            m.recall(WEBHOOK_CONVERSATION).expect("recall"),
            Recall::default()
        );
        assert!(std::fs::read_dir(dir.path()).expect("ls").next().is_none());
    }

    #[test]
    fn conversations_do_not_share_history_in_any_backend() {
        for backend in [MemoryBackend::Sqlite, MemoryBackend::Markdown] {
            let dir = tempfile::tempdir().expect("tmp");
            let m = Memory::open(backend, dir.path()).expect("open");
            m.save(WEBHOOK_CONVERSATION, "webhook question", "webhook answer")
                .expect("save");
            m.save("telegram:-100123", "telegram question", "telegram answer")
                .expect("save");
            let text = |r: Recall| {
                r.turns
                    .iter()
                    .map(|t| t.content.clone())
                    .chain(r.notes)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let webhook = text(m.recall(WEBHOOK_CONVERSATION).expect("recall"));
            assert!(
                webhook.contains("webhook question"),
                "{backend:?}: {webhook}"
            );
            assert!(!webhook.contains("telegram"), "{backend:?}: {webhook}");
            let telegram = text(m.recall("telegram:-100123").expect("recall"));
            assert!(
                telegram.contains("telegram answer"),
                "{backend:?}: {telegram}"
            );
            assert!(!telegram.contains("webhook"), "{backend:?}: {telegram}");
            assert_eq!(
                m.recall("slack:C1").expect("recall"),
                Recall::default(),
                "{backend:?}"
            );
        }
    }

    #[test]
    fn handle_reports_open_failures() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").expect("w");
        let h = MemoryHandle::new(MemoryBackend::Sqlite, file);
        assert!(matches!(h.get(), Err(MemoryError::Unavailable(_))));
    }
}
