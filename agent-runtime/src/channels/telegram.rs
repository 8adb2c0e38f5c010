//! The Telegram client: a [Bot API](https://core.telegram.org/bots/api) long poller.
//!
//! Wire format (all methods are `POST {base}/bot{token}/{method}` with a JSON body; every
//! answer is `{"ok":true,"result":…}` or
//! `{"ok":false,"error_code":N,"description":"…","parameters":{"retry_after":S}}`):
//!
//! 1. [`getMe`](https://core.telegram.org/bots/api#getme) once at start: checks the token.
//! 2. [`getUpdates`](https://core.telegram.org/bots/api#getupdates) in a loop with
//!    `{"offset":N,"timeout":30,"allowed_updates":["message"]}` (a 30 s long poll; the HTTP
//!    client waits 40 s). `offset` is the last handled `update_id + 1`, which also confirms
//!    the handled updates to Telegram: an update is only confirmed after it was answered or
//!    deliberately ignored, so one interrupted mid-way is delivered again.
//! 3. For each text message whose sender (`from.id` or `from.username`) passes
//!    `allowed_users` ([`super::is_allowed`]), the agent turn runs in conversation
//!    `telegram:<chat id>` ([`ChannelContext::answer`]) and the answer goes back by
//!    [`sendMessage`](https://core.telegram.org/bots/api#sendmessage) `{"chat_id","text"}`,
//!    split into chunks of at most 4096 characters ([`super::split_message`]). Other senders
//!    get no reply (logged at debug level, without the text).
//!
//! The `/health` component `channel:telegram` is `ok` once `getMe` succeeded and a
//! `getUpdates` returned; failures mark it `error` ([`ChannelContext::failed`]) and wait
//! before the next attempt ([`Timing`]): HTTP 409 (another poller on the same token) at
//! least 35 s, HTTP 401/404 (bad token) 5 minutes, HTTP 429 the `retry_after` Telegram asks
//! for, anything else (network, 5xx) a jittered exponential backoff of 2 s to 60 s.
//!
//! The bot token is part of every URL, so no error text here ever carries a URL
//! ([`reqwest::Error::without_url`]) and every recorded error goes through
//! [`super::redact`].

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{AnswerError, ChannelContext};
use crate::config::channels::TelegramConfig;

/// The channel's name (its `/health` component is `channel:telegram`).
const NAME: &str = "telegram";
/// The public Bot API server.
const DEFAULT_BASE_URL: &str = "https://api.telegram.org";
/// Seconds a `getUpdates` long poll may be held open by Telegram.
const LONG_POLL_SECS: u64 = 30;
/// The HTTP timeout of a `getUpdates` call: longer than the long poll.
const POLL_HTTP_TIMEOUT: Duration = Duration::from_secs(LONG_POLL_SECS + 10);
/// The HTTP timeout of the other calls (`getMe`, `sendMessage`).
const CALL_HTTP_TIMEOUT: Duration = Duration::from_secs(20);
/// Telegram's limit on a message's text, in characters.
const MAX_MESSAGE_CHARS: usize = 4096;
/// Attempts at sending one chunk when the failure is transient (network, 5xx, 429).
const SEND_ATTEMPTS: u32 = 5;

/// `last_error` when Telegram refuses the token (HTTP 401, or 404 for a malformed one).
const UNAUTHORIZED: &str = "unauthorized: bad bot token";
/// `last_error` when another `getUpdates` poller uses the token (HTTP 409).
const CONFLICT: &str = "conflict: another poller is using this bot token (HTTP 409)";
/// The reply when a chat exceeds [`super::CHAT_MESSAGES_PER_MINUTE`].
const RATE_LIMITED_REPLY: &str = "Too many messages, slow down.";
/// The reply when the agent turn failed (no internals).
const TURN_FAILED_REPLY: &str = "Sorry, I could not answer that right now. Please try again later.";

/// How long the client waits after a failure. [`Timing::default`] holds the production
/// values; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The minimum wait after HTTP 409 Conflict (another `getUpdates` poller on the same
    /// token): longer than that poller's 30 s long poll, so the two do not keep kicking each
    /// other off. Default 35 s.
    pub conflict_min: Duration,
    /// The wait after HTTP 401 (or 404) for a bad token, before checking it again with
    /// `getMe`. Default 300 s.
    pub unauthorized: Duration,
    /// The first delay of the exponential backoff after other failures (network, 5xx, a
    /// 429 without `retry_after`). Default 2 s.
    pub backoff_min: Duration,
    /// The cap of that backoff (jitter may add up to one more of it). Default 60 s.
    pub backoff_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            conflict_min: Duration::from_secs(35),
            unauthorized: Duration::from_secs(300),
            backoff_min: Duration::from_secs(2),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// Runs the Telegram client with the production [`Timing`] until `cancel` fires.
pub async fn run(config: TelegramConfig, ctx: ChannelContext, cancel: CancellationToken) {
    run_with(config, ctx, cancel, Timing::default()).await;
}

/// Runs the Telegram client until `cancel` fires, waiting after failures as `timing` says.
///
/// Never returns an error: every failure is recorded in the `/health` component
/// `channel:telegram` (secret-free) and retried after the wait `timing` prescribes. Returns
/// promptly when `cancel` fires, also in the middle of a long poll, a turn or a wait.
pub async fn run_with(
    config: TelegramConfig,
    ctx: ChannelContext,
    cancel: CancellationToken,
    timing: Timing,
) {
    let api = match Api::new(&config) {
        Ok(api) => api,
        Err(e) => {
            ctx.failed(NAME, &redact(&config, &e.to_string()));
            cancel.cancelled().await;
            return;
        }
    };
    let mut poller = Poller {
        config: &config,
        ctx: &ctx,
        api,
        offset: None,
    };
    let mut backoff = super::backoff(timing.backoff_min, timing.backoff_max);
    let mut authenticated = false;
    loop {
        let step = if authenticated {
            poller.poll_once(&cancel).await
        } else {
            poller.get_me(&cancel).await.map(|()| {
                authenticated = true;
                true
            })
        };
        let error = match step {
            Ok(true) => {
                backoff = super::backoff(timing.backoff_min, timing.backoff_max);
                continue;
            }
            // Cancelled.
            Ok(false) => return,
            Err(e) => e,
        };
        let mut next_backoff = || backoff.next().unwrap_or(timing.backoff_max);
        let delay = match &error {
            ApiError::Unauthorized => {
                authenticated = false;
                timing.unauthorized
            }
            ApiError::Conflict => timing.conflict_min.max(next_backoff()),
            ApiError::RetryAfter(Some(secs)) => Duration::from_secs(*secs),
            ApiError::RetryAfter(None) | ApiError::Api { .. } | ApiError::Network(_) => {
                next_backoff()
            }
        };
        let reason = redact(&config, &error.to_string());
        tracing::warn!(channel = NAME, error = %reason, retry_in_ms = delay.as_millis() as u64, "telegram request failed");
        ctx.failed(NAME, &reason);
        if !super::sleep_or_cancel(delay, &cancel).await {
            return;
        }
    }
}

/// `text` with the bot token masked.
fn redact(config: &TelegramConfig, text: &str) -> String {
    super::redact(text, &[&config.bot_token])
}

/// Why a Bot API call failed. `Display` is secret-free (no URL).
#[derive(Debug, thiserror::Error)]
enum ApiError {
    /// HTTP 401, or 404 (Telegram's answer to a malformed token).
    #[error("{UNAUTHORIZED}")]
    Unauthorized,
    /// HTTP 409: another `getUpdates` poller (or a webhook) uses the token.
    #[error("{CONFLICT}")]
    Conflict,
    /// HTTP 429, with `parameters.retry_after` seconds when given.
    #[error("rate limited by Telegram (HTTP 429){}", .0.map(|s| format!(", retry after {s} s")).unwrap_or_default())]
    RetryAfter(Option<u64>),
    /// Any other refusal (`error_code`, `description`).
    #[error("Telegram API error {code}: {description}")]
    Api { code: u16, description: String },
    /// No (usable) HTTP answer: connect, timeout, TLS, a body that is not the Bot API's.
    #[error("network error: {0}")]
    Network(String),
}

impl ApiError {
    /// Whether a later attempt at the same call may succeed (network, 5xx, 429).
    fn is_transient(&self) -> bool {
        match self {
            Self::Network(_) | Self::RetryAfter(_) => true,
            Self::Api { code, .. } => *code >= 500,
            Self::Unauthorized | Self::Conflict => false,
        }
    }
}

/// A `reqwest` error without its URL (which holds the token), with its causes.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The Bot API answer envelope (<https://core.telegram.org/bots/api#making-requests>).
#[derive(Debug, Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error_code: Option<u16>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<ResponseParameters>,
}

/// <https://core.telegram.org/bots/api#responseparameters>.
#[derive(Debug, Deserialize)]
struct ResponseParameters {
    #[serde(default)]
    retry_after: Option<u64>,
}

/// <https://core.telegram.org/bots/api#update> (only what is read).
#[derive(Debug, Deserialize)]
struct Update {
    update_id: i64,
    #[serde(default)]
    message: Option<Value>,
}

/// <https://core.telegram.org/bots/api#message> (only what is read).
#[derive(Debug, Deserialize)]
struct Message {
    chat: Chat,
    #[serde(default)]
    from: Option<User>,
    #[serde(default)]
    text: Option<String>,
}

/// <https://core.telegram.org/bots/api#chat>.
#[derive(Debug, Deserialize)]
struct Chat {
    id: i64,
}

/// <https://core.telegram.org/bots/api#user>.
#[derive(Debug, Deserialize)]
struct User {
    id: i64,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    is_bot: bool,
}

/// The Bot API over HTTP.
struct Api {
    http: reqwest::Client,
    /// `{base}/bot{token}/`: secret, never logged.
    prefix: String,
}

impl Api {
    fn new(config: &TelegramConfig) -> Result<Self, ApiError> {
        let base = config
            .api_base_url
            .as_deref()
            .unwrap_or(DEFAULT_BASE_URL)
            .trim_end_matches('/');
        let http = reqwest::Client::builder()
            .timeout(POLL_HTTP_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ApiError::Network(describe(e)))?;
        Ok(Self {
            http,
            prefix: format!("{base}/bot{}/", config.bot_token.expose()),
        })
    }

    /// Calls `method` with `body`; the `result` on `ok:true`.
    async fn call(&self, method: &str, body: &Value, timeout: Duration) -> Result<Value, ApiError> {
        let resp = self
            .http
            .post(format!("{}{method}", self.prefix))
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| ApiError::Network(describe(e)))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ApiError::Network(describe(e)))?;
        let mut envelope = serde_json::from_slice::<Envelope>(&bytes).ok();
        if status.is_success() {
            if let Some(e) = envelope.as_mut().filter(|e| e.ok) {
                if let Some(result) = e.result.take() {
                    return Ok(result);
                }
            }
        }
        let code = envelope
            .as_ref()
            .and_then(|e| e.error_code)
            .unwrap_or(status.as_u16());
        Err(match code {
            401 | 404 => ApiError::Unauthorized,
            409 => ApiError::Conflict,
            429 => ApiError::RetryAfter(
                envelope
                    .as_ref()
                    .and_then(|e| e.parameters.as_ref())
                    .and_then(|p| p.retry_after),
            ),
            _ => match envelope.and_then(|e| e.description) {
                Some(description) => ApiError::Api { code, description },
                None if status.is_success() => ApiError::Network("not a Bot API answer".to_owned()),
                None => ApiError::Api {
                    code,
                    description: status.canonical_reason().unwrap_or("error").to_owned(),
                },
            },
        })
    }
}

/// The polling state.
struct Poller<'a> {
    config: &'a TelegramConfig,
    ctx: &'a ChannelContext,
    api: Api,
    /// The next `offset` (last handled `update_id + 1`); `None` before the first update.
    offset: Option<i64>,
}

impl Poller<'_> {
    /// `getMe`: `Ok(())` when the token is good (also when cancelled; the caller's next
    /// wait notices).
    async fn get_me(&self, cancel: &CancellationToken) -> Result<(), ApiError> {
        let body = json!({});
        let call = self.api.call("getMe", &body, CALL_HTTP_TIMEOUT);
        let me = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            r = call => r?,
        };
        let username = me.get("username").and_then(Value::as_str).unwrap_or("");
        tracing::info!(channel = NAME, bot = username, "telegram bot authenticated");
        Ok(())
    }

    /// One `getUpdates` and the handling of what it returned. `Ok(false)` when cancelled.
    async fn poll_once(&mut self, cancel: &CancellationToken) -> Result<bool, ApiError> {
        if cancel.is_cancelled() {
            return Ok(false);
        }
        // The first poll while not `ok` does not wait: its answer proves the client is
        // listening at once, instead of up to 30 s later on an idle bot.
        let wait = if self.ctx.is_ok(NAME) {
            LONG_POLL_SECS
        } else {
            0
        };
        let mut body = json!({"timeout": wait, "allowed_updates": ["message"]});
        if let Some(offset) = self.offset {
            body["offset"] = json!(offset);
        }
        let call = self.api.call("getUpdates", &body, POLL_HTTP_TIMEOUT);
        let result = tokio::select! {
            () = cancel.cancelled() => return Ok(false),
            r = call => r?,
        };
        let updates = match result {
            Value::Array(updates) => updates,
            _ => return Err(ApiError::Network("getUpdates: result is not a list".into())),
        };
        if !self.ctx.is_ok(NAME) {
            tracing::info!(channel = NAME, "telegram channel listening");
            self.ctx.listening(NAME);
        }
        for raw in updates {
            let Ok(update) = serde_json::from_value::<Update>(raw) else {
                tracing::warn!(channel = NAME, "skipping an update without update_id");
                continue;
            };
            if self.offset.is_some_and(|o| update.update_id < o) {
                continue;
            }
            if !self.handle(&update, cancel).await? {
                return Ok(false);
            }
            self.offset = Some(update.update_id + 1);
        }
        Ok(true)
    }

    /// Answers or ignores one update. `Ok(false)` when cancelled before it was handled.
    async fn handle(&self, update: &Update, cancel: &CancellationToken) -> Result<bool, ApiError> {
        let Some(message) = update
            .message
            .clone()
            .and_then(|m| serde_json::from_value::<Message>(m).ok())
        else {
            tracing::debug!(
                channel = NAME,
                update_id = update.update_id,
                "ignoring a non-message update"
            );
            return Ok(true);
        };
        let chat_id = message.chat.id;
        let Some(text) = message.text.filter(|t| !t.trim().is_empty()) else {
            tracing::debug!(channel = NAME, chat_id, "ignoring a message without text");
            return Ok(true);
        };
        let Some(from) = message.from.filter(|f| !f.is_bot) else {
            tracing::debug!(
                channel = NAME,
                chat_id,
                "ignoring a message without a human sender"
            );
            return Ok(true);
        };
        let id = from.id.to_string();
        let username = from.username.as_deref().unwrap_or("");
        if !super::is_allowed(&self.config.allowed_users, &[&id, username]) {
            tracing::debug!(channel = NAME, chat_id, user_id = %id, "ignoring a sender not in allowed_users");
            return Ok(true);
        }
        let conversation = format!("{NAME}:{chat_id}");
        let answer = tokio::select! {
            () = cancel.cancelled() => return Ok(false),
            a = self.ctx.answer(&conversation, &text) => a,
        };
        let reply = match answer {
            Ok(reply) => reply,
            Err(AnswerError::RateLimited) => {
                tracing::debug!(channel = NAME, chat_id, "chat rate limited");
                RATE_LIMITED_REPLY.to_owned()
            }
            Err(AnswerError::Turn(e)) => {
                tracing::warn!(channel = NAME, chat_id, error = %e, "turn failed");
                TURN_FAILED_REPLY.to_owned()
            }
        };
        for chunk in super::split_message(&reply, MAX_MESSAGE_CHARS) {
            if !self.send(chat_id, &chunk, cancel).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends one chunk, retrying transient failures a few times. A refused or undeliverable
    /// chunk is dropped (logged, and recorded when transient); a bad token is returned.
    /// `Ok(false)` when cancelled.
    async fn send(
        &self,
        chat_id: i64,
        text: &str,
        cancel: &CancellationToken,
    ) -> Result<bool, ApiError> {
        let body = json!({"chat_id": chat_id, "text": text});
        let mut delays = super::backoff(Duration::from_millis(500), Duration::from_secs(10));
        for attempt in 1..=SEND_ATTEMPTS {
            let call = self.api.call("sendMessage", &body, CALL_HTTP_TIMEOUT);
            let result = tokio::select! {
                () = cancel.cancelled() => return Ok(false),
                r = call => r,
            };
            let error = match result {
                Ok(_) => return Ok(true),
                Err(ApiError::Unauthorized) => return Err(ApiError::Unauthorized),
                Err(e) => e,
            };
            let reason = redact(self.config, &format!("sendMessage failed: {error}"));
            if !error.is_transient() {
                tracing::warn!(channel = NAME, chat_id, error = %reason, "reply dropped");
                return Ok(true);
            }
            if attempt == SEND_ATTEMPTS {
                tracing::error!(channel = NAME, chat_id, error = %reason, "reply dropped after retries");
                self.ctx.failed(NAME, &reason);
                return Ok(true);
            }
            let delay = match error {
                ApiError::RetryAfter(Some(secs)) => Duration::from_secs(secs),
                _ => delays.next().unwrap_or(Duration::from_secs(10)),
            };
            tracing::warn!(channel = NAME, chat_id, error = %reason, attempt, "sendMessage failed; retrying");
            if !super::sleep_or_cancel(delay, cancel).await {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
