//! The messaging channels: Telegram ([`telegram`]), Discord ([`discord`]) and Slack
//! ([`slack`]) clients, one task each, started by [`spawn`] for every configured channel.
//!
//! Every client is the `/health` component `channel:<name>` ([`ChannelContext::component`]):
//! `starting` until it is authenticated **and** listening, then `ok`; any failure is `error`
//! with a secret-free `last_error` and one more `restart_count` ([`ChannelContext::failed`]).
//! Each inbound message that passes the channel's allow-list ([`is_allowed`]) runs the same
//! agent turn as `/webhook` ([`crate::turn::run`]) through [`ChannelContext::answer`], which
//! also rate-limits per chat. Replies longer than a platform's limit are split
//! ([`split_message`]). Retries wait by [`backoff`] (exponential with jitter, from `backon`).
//!
//! Architecture invariant: a bot or app token is never in a log line, a `/health` error or a
//! metric label: clients put errors through [`redact`] before recording them.

pub mod discord;
pub mod slack;
pub mod telegram;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::channels::ChannelsConfig;
use crate::health::Status;
use crate::http::AppState;
use crate::secret::Secret;
use crate::turn::{self, TurnError};

/// Messages one chat (conversation) may send per minute before [`ChannelContext::answer`]
/// refuses with [`AnswerError::RateLimited`].
pub const CHAT_MESSAGES_PER_MINUTE: u32 = 20;

/// Why a channel message got no model answer.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The chat sent more than [`CHAT_MESSAGES_PER_MINUTE`] messages in a minute.
    #[error("rate limited")]
    RateLimited,
    /// The turn failed.
    #[error(transparent)]
    Turn(#[from] TurnError),
}

/// What every client shares: the gateway's state (provider, memory, health, metrics) and the
/// per-chat rate limiter. Cheap to clone.
#[derive(Clone)]
pub struct ChannelContext {
    /// The gateway's shared state.
    pub state: AppState,
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
}

impl std::fmt::Debug for ChannelContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelContext").finish_non_exhaustive()
    }
}

impl ChannelContext {
    /// A context over `state` with a fresh per-chat limiter.
    pub fn new(state: AppState) -> Self {
        let per_minute = NonZeroU32::new(CHAT_MESSAGES_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        Self {
            state,
            limiter: Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))),
        }
    }

    /// The `/health` component of channel `name`: `channel:<name>`.
    pub fn component(name: &str) -> String {
        format!("channel:{name}")
    }

    /// Channel `name` is authenticated and listening.
    pub fn listening(&self, name: &str) {
        self.state.health.mark_ok(&Self::component(name));
    }

    /// Channel `name` failed with `error` (already redacted): status `error`, `last_error`,
    /// one more `restart_count`, and the `zeroclaw_errors_total{component}` counter.
    pub fn failed(&self, name: &str, error: &str) {
        let component = Self::component(name);
        self.state.health.mark_error(&component, error);
        self.state.health.mark_restart(&component);
        self.state.metrics.record_error(&component);
    }

    /// Whether channel `name` is `ok` now.
    pub fn is_ok(&self, name: &str) -> bool {
        self.state.health.status(&Self::component(name)) == Some(Status::Ok)
    }

    /// Runs the agent turn for `text` received in `conversation` (e.g. `telegram:<chat id>`),
    /// after the per-chat rate limit, with that conversation's own memory.
    ///
    /// # Errors
    /// [`AnswerError`].
    pub async fn answer(&self, conversation: &str, text: &str) -> Result<String, AnswerError> {
        if self.limiter.check_key(&conversation.to_owned()).is_err() {
            return Err(AnswerError::RateLimited);
        }
        Ok(turn::run(&self.state, conversation, text).await?)
    }
}

/// Whether a sender passes an allow-list: `"*"` lets everyone in, an empty list nobody;
/// otherwise one of `identities` (a user id, a username — compared without a leading `@`,
/// case-insensitively for names) must be listed.
pub fn is_allowed(allowed: &[String], identities: &[&str]) -> bool {
    allowed.iter().any(|entry| {
        let entry = entry.trim();
        entry == "*"
            || identities.iter().any(|id| {
                let (a, b) = (entry.trim_start_matches('@'), id.trim_start_matches('@'));
                !b.is_empty() && a.eq_ignore_ascii_case(b)
            })
    })
}

/// Splits `text` into chunks of at most `max_chars` characters (Unicode scalar values, as
/// Telegram and Discord count), cutting at the last newline, else the last space, of each
/// chunk when there is one in its second half. An empty text gives no chunk.
pub fn split_message(text: &str, max_chars: usize) -> Vec<String> {
    let max_chars = max_chars.max(1);
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some((cut, _)) = rest.char_indices().nth(max_chars) else {
            out.push(rest.to_owned());
            break;
        };
        let window = &rest[..cut];
        let half = window
            .char_indices()
            .nth(max_chars / 2)
            .map_or(0, |(i, _)| i);
        let at = window
            .rfind('\n')
            .or_else(|| window.rfind(' '))
            .filter(|&i| i >= half && i > 0)
            .map_or(cut, |i| i + 1);
        out.push(rest[..at].to_owned());
        rest = &rest[at..];
    }
    out
}

/// The retry delays of a client: exponential from `min` to `max` (doubling), with jitter, for
/// ever. Reset by building a new one after a success.
pub fn backoff(min: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// `text` with every secret of `secrets` masked (for errors that may quote a URL holding a
/// token, as Telegram's `https://api.telegram.org/bot<token>/…` does).
pub fn redact(text: &str, secrets: &[&Secret]) -> String {
    secrets
        .iter()
        .fold(text.to_owned(), |acc, secret| secret.redact(&acc))
}

/// Waits `delay` unless `cancel` fires first; `false` when cancelled.
pub async fn sleep_or_cancel(delay: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// Starts one task per configured channel; each ends when `cancel` fires.
pub fn spawn(
    config: &ChannelsConfig,
    ctx: &ChannelContext,
    cancel: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(c) = &config.telegram {
        tasks.push(tokio::spawn(telegram::run(
            c.clone(),
            ctx.clone(),
            cancel.clone(),
        )));
    }
    if let Some(c) = &config.discord {
        tasks.push(tokio::spawn(discord::run(
            c.clone(),
            ctx.clone(),
            cancel.clone(),
        )));
    }
    if let Some(c) = &config.slack {
        tasks.push(tokio::spawn(slack::run(
            c.clone(),
            ctx.clone(),
            cancel.clone(),
        )));
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists() {
        let list = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(is_allowed(&list(&["*"]), &["1"]));
        assert!(!is_allowed(&list(&[]), &["1", "alice"]));
        assert!(is_allowed(&list(&["@Alice"]), &["42", "alice"]));
        assert!(is_allowed(&list(&["42"]), &["42", "bob"]));
        assert!(!is_allowed(&list(&["42"]), &["43", ""]));
        assert!(!is_allowed(&list(&[""]), &[""]));
    }

    #[test]
    fn splitting_respects_the_limit_and_prefers_line_ends() {
        assert!(split_message("", 10).is_empty());
        assert_eq!(split_message("short", 10), ["short"]);
        let text = "aaaa bbbb\ncccc dddd eeee";
        let parts = split_message(text, 12);
        assert!(parts.iter().all(|p| p.chars().count() <= 12), "{parts:?}");
        assert_eq!(parts.concat(), text);
        assert_eq!(parts[0], "aaaa bbbb\n");
        let long = "é".repeat(4097);
        let parts = split_message(&long, 4096);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].chars().count(), 4096);
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let delays: Vec<_> = backoff(Duration::from_secs(2), Duration::from_secs(60))
            .take(12)
            .collect();
        assert!(delays[0] >= Duration::from_secs(2), "{delays:?}");
        // Jitter adds up to one base delay on top of the capped value.
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(120)),
            "{delays:?}"
        );
        assert!(delays[8] >= Duration::from_secs(60), "{delays:?}");
    }
}
