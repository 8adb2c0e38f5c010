//! The Slack client: the `/health` component `channel:slack`.
//!
//! * Start: [`auth.test`](https://api.slack.com/methods/auth.test) with the bot token (`xoxb-…`)
//!   gives the bot's own user id, so its own messages are never answered. An authentication
//!   error (`invalid_auth`, `token_revoked`, …) is recorded as `unauthorized: <error>` and
//!   retried only after [`Timing::unauthorized_wait`] (a long wait, never a tight loop).
//! * With an `app_token` (`xapp-…`): [Socket Mode](https://api.slack.com/apis/socket-mode).
//!   [`apps.connections.open`](https://api.slack.com/methods/apps.connections.open) with the app
//!   token gives a one-time WebSocket URL; the `hello` frame makes the component `ok`; every
//!   envelope is acknowledged at once with `{"envelope_id": "…"}` (before any model call); a
//!   `disconnect` frame opens a new connection; `events_api` envelopes carrying a plain
//!   [`message` event](https://api.slack.com/events/message) are answered.
//! * Without an `app_token`: [`conversations.history`](https://api.slack.com/methods/conversations.history)
//!   of `channel_id` (then required) is polled every [`Timing::poll_interval`] with `oldest` =
//!   the newest message seen. The first poll only finds that newest message, so the channel's
//!   history is never answered; the component is `ok` after it.
//!
//! A message is answered when it is a plain user message (no `subtype`, no `bot_id`, not from
//! the bot itself), in `channel_id` when that is set, from a sender that passes
//! `allowed_users` ([`super::is_allowed`] on the member id). The reply goes out by
//! [`chat.postMessage`](https://api.slack.com/methods/chat.postMessage) in chunks of at most
//! [`MAX_MESSAGE_CHARS`]; when the message was in a thread (it has a `thread_ts`) the reply is
//! posted in that thread, otherwise in the channel.
//!
//! HTTP 429 answers are retried after their `Retry-After` seconds
//! ([rate limits](https://api.slack.com/apis/rate-limits)). Other failures are recorded with
//! [`ChannelContext::failed`] and retried after [`super::backoff`]. Tokens travel only in the
//! `Authorization` header; every error string goes through [`super::redact`] with both tokens
//! (and the one-time WebSocket URL), and `reqwest` errors drop their URL.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{AnswerError, ChannelContext};
use crate::config::channels::SlackConfig;
use crate::secret::Secret;

/// The channel's name (`/health` component `channel:slack`, conversations `slack:<channel>`).
const NAME: &str = "slack";

/// The Web API when `api_base_url` is not set (<https://api.slack.com/web>).
pub const DEFAULT_API_BASE: &str = "https://slack.com/api";

/// The longest reply chunk posted at once. Slack truncates `text` past 40,000 characters and
/// recommends staying under 4,000
/// (<https://api.slack.com/methods/chat.postMessage#truncating>).
pub const MAX_MESSAGE_CHARS: usize = 4000;

/// What the bot answers when the model failed.
const TURN_FAILED_REPLY: &str = "Sorry, I could not answer that right now.";

/// Web API `error` codes that mean the token itself is unusable: retrying soon cannot help
/// (<https://api.slack.com/methods/auth.test#errors>,
/// <https://api.slack.com/methods/apps.connections.open#errors>).
const AUTH_ERRORS: &[&str] = &[
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "not_allowed_token_type",
    "missing_scope",
    "no_permission",
];

/// The client's timings. [`Timing::default`] is production's; tests shorten them.
#[derive(Debug, Clone)]
pub struct Timing {
    /// First retry delay after a failure (doubling, with jitter): 1 s.
    pub backoff_min: Duration,
    /// Longest retry delay: 60 s.
    pub backoff_max: Duration,
    /// Wait after an authentication error (`invalid_auth`, …) before trying again: 10 min.
    pub unauthorized_wait: Duration,
    /// Interval of `conversations.history` polls without Socket Mode: 3 s.
    pub poll_interval: Duration,
    /// Deadline of one Web API request and of the WebSocket handshake: 30 s.
    pub request_timeout: Duration,
    /// Interval of our WebSocket pings in Socket Mode: 30 s.
    pub ping_interval: Duration,
    /// A Socket Mode connection with no frame at all for this long is dead: 120 s.
    pub idle_timeout: Duration,
    /// Wait after a 429 that has no usable `Retry-After`: 1 s; a `Retry-After` is honoured up to
    /// [`Timing::max_retry_after`].
    pub default_retry_after: Duration,
    /// Upper bound of an honoured `Retry-After`: 1 h.
    pub max_retry_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            unauthorized_wait: Duration::from_secs(600),
            poll_interval: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            default_retry_after: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(3600),
        }
    }
}

/// Runs the Slack client until `cancel` fires, with production [`Timing`].
pub async fn run(config: SlackConfig, ctx: ChannelContext, cancel: CancellationToken) {
    run_with(config, ctx, cancel, Timing::default()).await;
}

/// Runs the Slack client until `cancel` fires: Socket Mode when `app_token` is set, otherwise
/// `conversations.history` polling of `channel_id` (see the module docs).
pub async fn run_with(
    config: SlackConfig,
    ctx: ChannelContext,
    cancel: CancellationToken,
    timing: Timing,
) {
    if config.app_token.is_none() && config.channel_id.is_none() {
        ctx.failed(
            NAME,
            "channel_id is required without app_token (polling conversations.history)",
        );
        cancel.cancelled().await;
        return;
    }
    let http = match reqwest::Client::builder()
        .timeout(timing.request_timeout)
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            ctx.failed(NAME, &format!("HTTP client: {}", e.without_url()));
            cancel.cancelled().await;
            return;
        }
    };
    let base = config
        .api_base_url
        .as_deref()
        .unwrap_or(DEFAULT_API_BASE)
        .trim_end_matches('/')
        .to_owned();
    let client = Arc::new(Client {
        http,
        base,
        config,
        ctx,
        cancel,
        timing,
    });
    client.run().await;
}

/// Why a step failed. `Display` never holds a token (see [`Client::fail`]).
#[derive(Debug)]
enum Error {
    /// `cancel` fired.
    Cancelled,
    /// The Web API refused the token (`ok: false` with one of [`AUTH_ERRORS`]).
    Unauthorized(String),
    /// The Web API answered `ok: false` with another error.
    Api { method: &'static str, error: String },
    /// Transport, HTTP status or body problems.
    Other(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cancelled => f.write_str("cancelled"),
            Self::Unauthorized(e) => write!(f, "unauthorized: {e}"),
            Self::Api { method, error } => write!(f, "{method}: {error}"),
            Self::Other(e) => f.write_str(e),
        }
    }
}

/// A `reqwest` error without its URL, with its causes.
fn http_error(method: &str, e: reqwest::Error) -> Error {
    let e = e.without_url();
    let mut text = format!("{method}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    Error::Other(text)
}

/// How a Socket Mode connection ended without an error.
enum SocketEnd {
    /// Slack sent `disconnect` (a refresh): open a new connection at once.
    Disconnect(String),
}

/// One incoming message worth answering.
#[derive(Debug, Clone)]
struct Incoming {
    channel: String,
    text: String,
    thread_ts: Option<String>,
}

/// The running client (shared with the tasks answering messages).
struct Client {
    http: reqwest::Client,
    base: String,
    config: SlackConfig,
    ctx: ChannelContext,
    cancel: CancellationToken,
    timing: Timing,
}

type Delays = Box<dyn Iterator<Item = Duration> + Send>;

impl Client {
    fn delays(&self) -> Delays {
        Box::new(super::backoff(
            self.timing.backoff_min,
            self.timing.backoff_max,
        ))
    }

    /// `text` with both tokens (and `extra`, e.g. the WebSocket URL) masked.
    fn redact(&self, text: &str, extra: Option<&Secret>) -> String {
        let mut secrets = vec![&self.config.bot_token];
        if let Some(app) = &self.config.app_token {
            secrets.push(app);
        }
        if let Some(x) = extra {
            secrets.push(x);
        }
        super::redact(text, &secrets)
    }

    /// Records `error` and waits before the next attempt: [`Timing::unauthorized_wait`] after
    /// an authentication error, the next `delays` otherwise. `false` when cancelled.
    async fn fail(&self, error: &Error, delays: &mut Delays) -> bool {
        if matches!(error, Error::Cancelled) {
            return false;
        }
        let text = self.redact(&error.to_string(), None);
        tracing::warn!(channel = NAME, error = %text, "slack client failed");
        self.ctx.failed(NAME, &text);
        let delay = match error {
            Error::Unauthorized(_) => self.timing.unauthorized_wait,
            _ => delays.next().unwrap_or(self.timing.backoff_max),
        };
        super::sleep_or_cancel(delay, &self.cancel).await
    }

    async fn run(self: Arc<Self>) {
        let mut delays = self.delays();
        let me = loop {
            match self.auth_test().await {
                Ok(me) => break me,
                Err(e) => {
                    if !self.fail(&e, &mut delays).await {
                        return;
                    }
                }
            }
        };
        tracing::info!(channel = NAME, user_id = %me, "slack bot authenticated");
        if self.config.app_token.is_some() {
            self.socket_mode(&me).await;
        } else {
            self.poll(&me).await;
        }
    }

    /// Calls Web API `method` (`POST {base}/{method}`, or `GET` with `query`) with `token` as
    /// bearer and `body` as JSON; returns the body of an `ok: true` answer. A 429 is retried
    /// after its `Retry-After`.
    async fn call(
        &self,
        method: &'static str,
        token: &Secret,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let url = format!("{}/{method}", self.base);
        loop {
            let mut req = if body.is_none() && !query.is_empty() {
                self.http.get(&url).query(query)
            } else {
                self.http.post(&url)
            };
            req = req.bearer_auth(token.expose());
            if let Some(b) = body {
                req = req.json(b);
            } else if query.is_empty() {
                // No arguments: an empty form, as Slack's SDKs send.
                req = req.form(&[] as &[(&str, &str)]);
            }
            let resp = tokio::select! {
                _ = self.cancel.cancelled() => return Err(Error::Cancelled),
                r = req.send() => r.map_err(|e| http_error(method, e))?,
            };
            let status = resp.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(self.timing.default_retry_after, Duration::from_secs)
                    .min(self.timing.max_retry_after);
                tracing::warn!(
                    channel = NAME,
                    method,
                    wait_seconds = wait.as_secs_f64(),
                    "slack rate limit (429); waiting for Retry-After"
                );
                if !super::sleep_or_cancel(wait, &self.cancel).await {
                    return Err(Error::Cancelled);
                }
                continue;
            }
            if !status.is_success() {
                return Err(Error::Other(format!("{method}: HTTP {status}")));
            }
            let value: Value = tokio::select! {
                _ = self.cancel.cancelled() => return Err(Error::Cancelled),
                r = resp.json() => r.map_err(|e| http_error(method, e))?,
            };
            if value["ok"].as_bool() == Some(true) {
                return Ok(value);
            }
            let error = value["error"]
                .as_str()
                .unwrap_or("unknown_error")
                .to_owned();
            return Err(if AUTH_ERRORS.contains(&error.as_str()) {
                Error::Unauthorized(error)
            } else {
                Error::Api { method, error }
            });
        }
    }

    /// `auth.test`: the bot's own user id.
    async fn auth_test(&self) -> Result<String, Error> {
        let v = self
            .call("auth.test", &self.config.bot_token, &[], None)
            .await?;
        v["user_id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| Error::Other("auth.test: no user_id in the answer".into()))
    }

    // ---------------------------------------------------------------- Socket Mode

    /// Socket Mode until cancelled: connect, serve, reconnect.
    async fn socket_mode(self: &Arc<Self>, me: &str) {
        let Some(app_token) = self.config.app_token.clone() else {
            return;
        };
        let mut delays = self.delays();
        // Kept across connections: Slack redelivers an event whose ack it did not get.
        let mut seen = Seen::default();
        loop {
            match self
                .socket_once(&app_token, me, &mut delays, &mut seen)
                .await
            {
                Ok(SocketEnd::Disconnect(reason)) => {
                    tracing::info!(channel = NAME, reason = %reason, "slack asked to reconnect");
                    self.ctx
                        .state
                        .health
                        .mark_restart(&ChannelContext::component(NAME));
                }
                Err(e) => {
                    let e = match e {
                        Error::Unauthorized(code) => {
                            Error::Unauthorized(format!("{code} (app_token)"))
                        }
                        other => other,
                    };
                    if !self.fail(&e, &mut delays).await {
                        return;
                    }
                }
            }
            if self.cancel.is_cancelled() {
                return;
            }
        }
    }

    /// One Socket Mode connection: `apps.connections.open`, connect, then frames until it ends.
    async fn socket_once(
        self: &Arc<Self>,
        app_token: &Secret,
        me: &str,
        delays: &mut Delays,
        seen: &mut Seen,
    ) -> Result<SocketEnd, Error> {
        let opened = self
            .call("apps.connections.open", app_token, &[], None)
            .await?;
        let url = opened["url"]
            .as_str()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Error::Other("apps.connections.open: no url in the answer".into()))?
            .to_owned();
        // The URL holds a one-time ticket: never shown.
        let ticket = Secret::new(url.clone());
        let ws_error = |what: &str, e: &dyn std::fmt::Display| {
            Error::Other(self.redact(&format!("socket mode {what}: {e}"), Some(&ticket)))
        };
        let connect = tokio::time::timeout(
            self.timing.request_timeout,
            tokio_tungstenite::connect_async(url.as_str()),
        );
        let (mut ws, _) = tokio::select! {
            _ = self.cancel.cancelled() => return Err(Error::Cancelled),
            r = connect => match r {
                Err(_) => return Err(Error::Other("socket mode connect: timed out".into())),
                Ok(Err(e)) => return Err(ws_error("connect", &e)),
                Ok(Ok(pair)) => pair,
            },
        };
        let mut ping = tokio::time::interval(self.timing.ping_interval);
        ping.tick().await;
        let idle = tokio::time::sleep(self.timing.idle_timeout);
        tokio::pin!(idle);
        loop {
            let frame = tokio::select! {
                _ = self.cancel.cancelled() => {
                    let _ = ws.close(None).await;
                    return Err(Error::Cancelled);
                }
                () = &mut idle => return Err(Error::Other("socket mode: no frame within the idle timeout".into())),
                _ = ping.tick() => {
                    ws.send(Message::Ping(Vec::new().into())).await.map_err(|e| ws_error("send", &e))?;
                    continue;
                }
                f = ws.next() => f,
            };
            idle.as_mut()
                .reset(tokio::time::Instant::now() + self.timing.idle_timeout);
            let text = match frame {
                None => return Err(Error::Other("socket mode: connection closed".into())),
                Some(Err(e)) => return Err(ws_error("read", &e)),
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(c))) => {
                    let reason = c.map(|c| c.reason.to_string()).unwrap_or_default();
                    let text = format!("socket mode: closed by Slack {reason}");
                    return Err(Error::Other(self.redact(text.trim_end(), Some(&ticket))));
                }
                Some(Ok(_)) => continue,
            };
            let Ok(envelope) = serde_json::from_str::<Value>(text.as_str()) else {
                tracing::warn!(channel = NAME, "slack sent a frame that is not JSON");
                continue;
            };
            if let Some(id) = envelope["envelope_id"].as_str() {
                let ack = json!({ "envelope_id": id }).to_string();
                ws.send(Message::Text(ack.into()))
                    .await
                    .map_err(|e| ws_error("ack", &e))?;
            }
            match envelope["type"].as_str().unwrap_or_default() {
                "hello" => {
                    self.ctx.listening(NAME);
                    *delays = self.delays();
                    tracing::info!(channel = NAME, "slack socket mode connected");
                }
                "disconnect" => {
                    let reason = envelope["reason"].as_str().unwrap_or("unknown").to_owned();
                    let _ = ws.close(None).await;
                    // `link_disabled`: Socket Mode was turned off for the app; reconnecting
                    // at once would only loop.
                    if reason == "link_disabled" {
                        return Err(Error::Other(
                            "socket mode disabled for the app (disconnect: link_disabled)".into(),
                        ));
                    }
                    return Ok(SocketEnd::Disconnect(reason));
                }
                "events_api" => {
                    let event = &envelope["payload"]["event"];
                    if event["type"] == "message" {
                        if let Some(msg) = self.accept(event, me, seen) {
                            self.spawn_answer(msg);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    // ---------------------------------------------------------------- polling

    /// Polls `conversations.history` of `channel_id` until cancelled.
    async fn poll(self: &Arc<Self>, me: &str) {
        let Some(channel) = self.config.channel_id.clone() else {
            return;
        };
        let mut delays = self.delays();
        let mut oldest: Option<String> = None;
        let mut seen = Seen::default();
        loop {
            match self.poll_once(&channel, me, &mut oldest, &mut seen).await {
                Ok(()) => {
                    if !self.ctx.is_ok(NAME) {
                        self.ctx.listening(NAME);
                        delays = self.delays();
                    }
                    if !super::sleep_or_cancel(self.timing.poll_interval, &self.cancel).await {
                        return;
                    }
                }
                Err(e) => {
                    if !self.fail(&e, &mut delays).await {
                        return;
                    }
                }
            }
        }
    }

    /// One poll. The first one (`oldest` unset) only records the newest message's `ts`.
    async fn poll_once(
        self: &Arc<Self>,
        channel: &str,
        me: &str,
        oldest: &mut Option<String>,
        seen: &mut Seen,
    ) -> Result<(), Error> {
        let token = &self.config.bot_token;
        let Some(since) = oldest.clone() else {
            let v = self
                .call(
                    "conversations.history",
                    token,
                    &[("channel", channel), ("limit", "1")],
                    None,
                )
                .await?;
            let newest = messages(&v)
                .iter()
                .filter_map(|m| m["ts"].as_str())
                .max_by_key(|ts| ts_key(ts))
                .unwrap_or("0")
                .to_owned();
            *oldest = Some(newest);
            return Ok(());
        };
        let v = self
            .call(
                "conversations.history",
                token,
                &[("channel", channel), ("oldest", &since), ("limit", "200")],
                None,
            )
            .await?;
        let mut batch: Vec<Value> = messages(&v)
            .iter()
            .filter(|m| {
                m["ts"]
                    .as_str()
                    .is_some_and(|ts| ts_key(ts) > ts_key(&since))
            })
            .cloned()
            .collect();
        batch.sort_by_key(|m| ts_key(m["ts"].as_str().unwrap_or("0")));
        if v["has_more"].as_bool() == Some(true) {
            tracing::warn!(
                channel = NAME,
                "more new slack messages than one poll reads; answering the newest"
            );
        }
        for mut m in batch {
            if let Some(ts) = m["ts"].as_str() {
                *oldest = Some(ts.to_owned());
            }
            if m.get("channel").is_none() {
                m["channel"] = Value::String(channel.to_owned());
            }
            if let Some(msg) = self.accept(&m, me, seen) {
                self.spawn_answer(msg);
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- answering

    /// The message to answer in a Slack `message` object, or `None` when it is not one: a
    /// `subtype` (edits, joins, bot messages), a `bot_id`, the bot's own, another channel than
    /// `channel_id`, a sender not allowed, an empty text or one already seen.
    fn accept(&self, event: &Value, me: &str, seen: &mut Seen) -> Option<Incoming> {
        if event.get("subtype").is_some_and(|s| !s.is_null())
            || event.get("bot_id").is_some_and(|s| !s.is_null())
        {
            return None;
        }
        let user = event["user"].as_str().filter(|u| !u.is_empty())?;
        let channel = event["channel"].as_str().filter(|c| !c.is_empty())?;
        let text = event["text"].as_str().map(str::trim).unwrap_or_default();
        if user == me || text.is_empty() {
            return None;
        }
        if self
            .config
            .channel_id
            .as_deref()
            .is_some_and(|only| only != channel)
        {
            return None;
        }
        if !super::is_allowed(&self.config.allowed_users, &[user]) {
            tracing::info!(
                channel = NAME,
                user,
                "ignoring a slack user not in allowed_users"
            );
            return None;
        }
        if let Some(ts) = event["ts"].as_str() {
            if !seen.insert(format!("{channel}:{ts}")) {
                return None;
            }
        }
        Some(Incoming {
            channel: channel.to_owned(),
            text: text.to_owned(),
            thread_ts: event["thread_ts"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        })
    }

    /// Answers `msg` in its own task, so the socket keeps acknowledging envelopes meanwhile.
    fn spawn_answer(self: &Arc<Self>, msg: Incoming) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                _ = me.cancel.cancelled() => {}
                () = me.answer(msg) => {}
            }
        });
    }

    async fn answer(&self, msg: Incoming) {
        let conversation = format!("{NAME}:{}", msg.channel);
        let reply = match self.ctx.answer(&conversation, &msg.text).await {
            Ok(r) => r,
            Err(AnswerError::RateLimited) => {
                tracing::warn!(channel = NAME, conversation = %conversation, "slack chat rate limited; message dropped");
                return;
            }
            Err(AnswerError::Turn(e)) => {
                tracing::warn!(channel = NAME, error = %e, "slack turn failed");
                TURN_FAILED_REPLY.to_owned()
            }
        };
        for chunk in super::split_message(&reply, MAX_MESSAGE_CHARS) {
            let mut body = json!({ "channel": msg.channel, "text": chunk });
            if let Some(ts) = &msg.thread_ts {
                body["thread_ts"] = Value::String(ts.clone());
            }
            if let Err(e) = self
                .call("chat.postMessage", &self.config.bot_token, &[], Some(&body))
                .await
            {
                if !matches!(e, Error::Cancelled) {
                    let text = self.redact(&e.to_string(), None);
                    tracing::warn!(channel = NAME, error = %text, "slack reply failed");
                    self.ctx
                        .state
                        .metrics
                        .record_error(&ChannelContext::component(NAME));
                }
                return;
            }
        }
    }
}

/// The `messages` array of a `conversations.history` answer.
fn messages(v: &Value) -> &[Value] {
    v["messages"].as_array().map_or(&[], Vec::as_slice)
}

/// A Slack `ts` (`"1512085950.000216"`) as a sortable key.
fn ts_key(ts: &str) -> (u64, u64) {
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, "0"));
    let frac = format!("{frac:0<6}");
    (
        secs.parse().unwrap_or(0),
        frac.get(..6).and_then(|f| f.parse().ok()).unwrap_or(0),
    )
}

/// The last messages handled (`channel:ts`), so a redelivered event is answered once.
#[derive(Default)]
struct Seen(VecDeque<String>);

impl Seen {
    const CAPACITY: usize = 256;

    /// `false` when `key` was already seen.
    fn insert(&mut self, key: String) -> bool {
        if self.0.contains(&key) {
            return false;
        }
        if self.0.len() == Self::CAPACITY {
            self.0.pop_front();
        }
        self.0.push_back(key);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_keys_sort_numerically() {
        assert!(ts_key("1700000000.000200") > ts_key("1700000000.000100"));
        assert!(ts_key("1700000001.000000") > ts_key("999999999.999999"));
        assert_eq!(ts_key("12.5"), (12, 500_000));
        assert_eq!(ts_key("0"), (0, 0));
    }

    #[test]
    fn seen_remembers_a_bounded_window() {
        let mut s = Seen::default();
        assert!(s.insert("a".into()));
        assert!(!s.insert("a".into()));
        for i in 0..Seen::CAPACITY {
            s.insert(i.to_string());
        }
        assert!(s.insert("a".into()));
    }

    #[test]
    fn errors_name_the_auth_failure() {
        assert_eq!(
            Error::Unauthorized("invalid_auth".into()).to_string(),
            "unauthorized: invalid_auth"
        );
    }
}
