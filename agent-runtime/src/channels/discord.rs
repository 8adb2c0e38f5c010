//! The Discord client: a bot on the Discord gateway v10
//! (<https://discord.com/developers/docs/topics/gateway>), answering messages through the REST
//! API (<https://discord.com/developers/docs/resources/message#create-message>).
//!
//! The life of a connection, as the gateway documentation describes it:
//!
//! 1. `GET {api}/gateway/bot` (`Authorization: Bot <token>`) gives the WebSocket `url`; the
//!    client connects to `{url}/?v=10&encoding=json`.
//! 2. The server sends **Hello** (op 10) with `heartbeat_interval` (ms). The client sends
//!    **Identify** (op 2: token, [`INTENTS`], `properties`) — or **Resume** (op 6: token,
//!    `session_id`, `seq`) when it holds a session — and then a **Heartbeat** (op 1, `d` = the
//!    last sequence number) every interval, the first after `interval * jitter`
//!    (<https://discord.com/developers/docs/topics/gateway#sending-heartbeats>). A server op 1
//!    is answered with an immediate heartbeat.
//! 3. **READY** (op 0, `t` = `READY`) carries `session_id`, `resume_gateway_url` and the bot's
//!    own user: the component `channel:discord` becomes `ok`. **RESUMED** does the same after
//!    a Resume.
//! 4. Every heartbeat must be acknowledged (op 11) before the next one is due; otherwise the
//!    connection is a *zombie*: the client closes it (with a non-1000 code, so the session
//!    survives) and resumes on `resume_gateway_url`. **Reconnect** (op 7) and a dropped
//!    connection resume the same way; **Invalid Session** (op 9) resumes when `d` is `true`
//!    and identifies afresh (after 1–5 s) when it is `false`. After three failures in a row
//!    (say the drop and two failed resumes) the session is given up and the client identifies
//!    afresh.
//!
//! Close codes 4004, 4010, 4011, 4012, 4013 and 4014 cannot be fixed by reconnecting
//! (<https://discord.com/developers/docs/topics/opcodes-and-status-codes#gateway-gateway-close-event-codes>):
//! the component turns `error` with the cause and the client stops until shutdown. Any other
//! close or error turns it `error` (one more `restart_count`) and it reconnects after
//! [`super::backoff`] (1 s → 60 s). A REST `429` is retried after its `retry_after`
//! (<https://discord.com/developers/docs/topics/rate-limits>).
//!
//! Messages (`MESSAGE_CREATE`): a bot's (`author.bot`) and the bot's own (READY `user.id`) are
//! ignored. With `guild_id` configured, a guild message from another guild is ignored; **direct
//! messages** (no `guild_id`) are accepted in any case, but, like every message, only from a
//! sender on `allowed_users` ([`super::is_allowed`] on `author.id`). An accepted message runs
//! the agent turn ([`ChannelContext::answer`], conversation `discord:<channel_id>`) and the
//! answer is posted to the channel, split into messages of at most [`MAX_MESSAGE_CHARS`]
//! characters.
//!
//! The bot token is only ever sent (header, Identify, Resume); every error is put through
//! [`super::redact`] before it reaches a log line or `/health`.

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use rand::Rng as _;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::{AnswerError, ChannelContext};
use crate::config::channels::DiscordConfig;

/// The channel's name: `/health` component `channel:discord`.
const NAME: &str = "discord";

/// The REST API used when `api_base_url` is not configured.
pub const DEFAULT_API_BASE: &str = "https://discord.com/api/v10";

/// Discord's limit on a message's `content` (characters).
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// The gateway intents the client identifies with
/// (<https://discord.com/developers/docs/topics/gateway#gateway-intents>): `GUILDS` (1 << 0),
/// `GUILD_MESSAGES` (1 << 9), `DIRECT_MESSAGES` (1 << 12) and the privileged `MESSAGE_CONTENT`
/// (1 << 15), which must be enabled for the bot in the Developer Portal (else close 4014).
pub const INTENTS: u64 = (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15);

/// Failures in a row (a dropped connection counts) after which a held session is dropped and
/// the client identifies afresh on the URL of `GET /gateway/bot` instead of resuming on
/// `resume_gateway_url`.
const RESUME_ATTEMPTS: u32 = 3;

/// Gateway opcodes
/// (<https://discord.com/developers/docs/topics/opcodes-and-status-codes#gateway-gateway-opcodes>).
mod op {
    pub const DISPATCH: u64 = 0;
    pub const HEARTBEAT: u64 = 1;
    pub const IDENTIFY: u64 = 2;
    pub const RESUME: u64 = 6;
    pub const RECONNECT: u64 = 7;
    pub const INVALID_SESSION: u64 = 9;
    pub const HELLO: u64 = 10;
    pub const HEARTBEAT_ACK: u64 = 11;
}

/// The client's timings. [`Timing::default`] is what production uses; tests shorten them.
/// The heartbeat interval is not here: the server gives it in Hello.
#[derive(Debug, Clone)]
pub struct Timing {
    /// First delay of the reconnect [`super::backoff`] (1 s).
    pub backoff_min: Duration,
    /// Largest delay of the reconnect backoff (60 s).
    pub backoff_max: Duration,
    /// How long a new connection may take to open and send Hello (30 s).
    pub hello_timeout: Duration,
    /// Timeout of one REST request (30 s).
    pub request_timeout: Duration,
    /// After Invalid Session with `d: false`, the client waits a random time up to this before
    /// identifying again, and at least a fifth of it (5 s, i.e. Discord's "1 to 5 seconds").
    pub invalid_session_max: Duration,
    /// The longest REST `retry_after` honoured (60 s); a longer one fails the request.
    pub max_retry_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            hello_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            invalid_session_max: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// Runs the Discord client with production [`Timing`] until `cancel` fires.
pub async fn run(config: DiscordConfig, ctx: ChannelContext, cancel: CancellationToken) {
    run_with(config, ctx, cancel, Timing::default()).await;
}

/// Runs the Discord client with `timing` until `cancel` fires: connects, identifies, keeps the
/// connection alive (heartbeats, resume) and answers messages, as the module documentation
/// describes. After a fatal close code it only waits for `cancel`.
pub async fn run_with(
    config: DiscordConfig,
    ctx: ChannelContext,
    cancel: CancellationToken,
    timing: Timing,
) {
    let http = match reqwest::Client::builder()
        .timeout(timing.request_timeout)
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            ctx.failed(NAME, &format!("HTTP client: {e}"));
            cancel.cancelled().await;
            return;
        }
    };
    let base = config
        .api_base_url
        .clone()
        .unwrap_or_else(|| DEFAULT_API_BASE.to_owned())
        .trim_end_matches('/')
        .to_owned();
    let rest = Rest {
        http,
        base,
        config,
        timing,
        cancel,
    };
    let mut state = State::default();
    let mut delays = super::backoff(rest.timing.backoff_min, rest.timing.backoff_max);
    // Failed connections since the last READY/RESUMED.
    let mut failures = 0_u32;
    loop {
        if rest.cancel.is_cancelled() {
            return;
        }
        let (outcome, reached_ready) = connect_once(&rest, &ctx, &mut state).await;
        if reached_ready {
            delays = super::backoff(rest.timing.backoff_min, rest.timing.backoff_max);
            failures = 0;
        }
        let wait = match outcome {
            Outcome::Cancelled => return,
            Outcome::Fatal(reason) => {
                let reason = rest.redact(&reason);
                tracing::error!(error = %reason, "discord: giving up until restart");
                ctx.failed(NAME, &reason);
                rest.cancel.cancelled().await;
                return;
            }
            Outcome::Reconnect => {
                ctx.state
                    .health
                    .mark_restart(&ChannelContext::component(NAME));
                Duration::ZERO
            }
            Outcome::Reidentify => {
                ctx.state
                    .health
                    .mark_restart(&ChannelContext::component(NAME));
                let max = rest.timing.invalid_session_max;
                let min = max / 5;
                min + max
                    .saturating_sub(min)
                    .mul_f64(rand::thread_rng().gen::<f64>())
            }
            Outcome::Failed(error) => {
                let error = rest.redact(&error);
                tracing::warn!(error = %error, "discord: connection failed; reconnecting");
                ctx.failed(NAME, &error);
                failures += 1;
                if failures >= RESUME_ATTEMPTS && state.session_id.is_some() {
                    tracing::info!("discord: resuming keeps failing; identifying afresh");
                    state.forget_session();
                }
                delays.next().unwrap_or(rest.timing.backoff_max)
            }
        };
        if !super::sleep_or_cancel(wait, &rest.cancel).await {
            return;
        }
    }
}

/// What survives a connection: the session to resume and who the bot is.
#[derive(Debug, Default)]
struct State {
    /// `session_id` of READY.
    session_id: Option<String>,
    /// `resume_gateway_url` of READY.
    resume_url: Option<String>,
    /// The last sequence number `s` received.
    seq: Option<u64>,
    /// The bot's own user id (READY `user.id`).
    bot_id: Option<String>,
}

impl State {
    fn forget_session(&mut self) {
        self.session_id = None;
        self.resume_url = None;
        self.seq = None;
    }
}

/// How a connection ended.
#[derive(Debug)]
enum Outcome {
    /// Shutdown.
    Cancelled,
    /// A close code that reconnecting cannot fix.
    Fatal(String),
    /// Asked to reconnect (op 7, op 9 resumable): resume at once, not a failure.
    Reconnect,
    /// The session is invalid (op 9 `d: false`): identify afresh after a short random wait.
    Reidentify,
    /// Anything else: record the error, back off, resume when a session is held.
    Failed(String),
}

/// The REST side and everything a connection needs.
#[derive(Clone)]
struct Rest {
    http: reqwest::Client,
    base: String,
    config: DiscordConfig,
    timing: Timing,
    cancel: CancellationToken,
}

impl Rest {
    fn redact(&self, text: &str) -> String {
        super::redact(text, &[&self.config.bot_token])
    }

    fn auth(&self) -> String {
        format!("Bot {}", self.config.bot_token.expose())
    }

    /// Sends the request built by `build` and returns the JSON body of a 2xx answer; a 429 is
    /// retried after its `retry_after` (body, else `Retry-After` header), a few times.
    async fn send(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, RestError> {
        for _ in 0..5 {
            let resp = build()
                .header(reqwest::header::AUTHORIZATION, self.auth())
                .send()
                .await
                .map_err(|e| RestError::Other(self.redact(&format!("{what}: {e}"))))?;
            let status = resp.status();
            if status.as_u16() == 429 {
                let header = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok());
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                let secs = body["retry_after"].as_f64().or(header).unwrap_or(1.0);
                let wait = Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX);
                if wait > self.timing.max_retry_after {
                    return Err(RestError::Other(format!(
                        "{what}: rate limited for {secs} s"
                    )));
                }
                tracing::debug!(what, retry_after = secs, "discord: rate limited");
                if !super::sleep_or_cancel(wait, &self.cancel).await {
                    return Err(RestError::Other(format!("{what}: cancelled")));
                }
                continue;
            }
            if status.as_u16() == 401 {
                return Err(RestError::Unauthorized);
            }
            let text = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                let snippet: String = text.chars().take(200).collect();
                return Err(RestError::Other(
                    self.redact(&format!("{what}: HTTP {status}: {snippet}")),
                ));
            }
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        Err(RestError::Other(format!("{what}: still rate limited")))
    }

    /// `GET /gateway/bot` → the WebSocket URL
    /// (<https://discord.com/developers/docs/topics/gateway#get-gateway-bot>).
    async fn gateway_url(&self) -> Result<String, RestError> {
        let url = format!("{}/gateway/bot", self.base);
        let body = self
            .send("GET /gateway/bot", || self.http.get(&url))
            .await?;
        body["url"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| RestError::Other("GET /gateway/bot: no `url` in the answer".into()))
    }

    /// Posts `text` to `channel_id`, split into messages of at most [`MAX_MESSAGE_CHARS`].
    async fn post_reply(&self, channel_id: &str, text: &str) -> Result<(), RestError> {
        let url = format!("{}/channels/{channel_id}/messages", self.base);
        for chunk in super::split_message(text, MAX_MESSAGE_CHARS) {
            let body = json!({ "content": chunk });
            self.send("POST /channels/{id}/messages", || {
                self.http.post(&url).json(&body)
            })
            .await?;
        }
        Ok(())
    }
}

#[derive(Debug)]
enum RestError {
    /// 401: the token is wrong.
    Unauthorized,
    /// Anything else (redacted).
    Other(String),
}

impl std::fmt::Display for RestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unauthorized => f.write_str("authentication failed: the bot token was rejected"),
            Self::Other(e) => f.write_str(e),
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `url` with the gateway's query: `{url}/?v=10&encoding=json`.
fn with_query(url: &str) -> String {
    let url = url.split('?').next().unwrap_or(url).trim_end_matches('/');
    format!("{url}/?v=10&encoding=json")
}

/// The reason of a close code that reconnecting cannot fix, if `code` is one.
fn fatal_close(code: u16) -> Option<&'static str> {
    Some(match code {
        4004 => "authentication failed: the bot token was rejected (close 4004)",
        4010 => "invalid shard sent when identifying (close 4010)",
        4011 => "sharding required: the bot is in too many guilds for one connection (close 4011)",
        4012 => "invalid API version (close 4012)",
        4013 => "invalid intents (close 4013)",
        4014 => {
            "disallowed intents: a privileged intent (MESSAGE_CONTENT) is not enabled for this \
             bot in the Developer Portal (close 4014)"
        }
        _ => return None,
    })
}

/// One connection, from `GET /gateway/bot` (or the resume URL) to its end. Also returns whether
/// it reached READY or RESUMED.
async fn connect_once(rest: &Rest, ctx: &ChannelContext, state: &mut State) -> (Outcome, bool) {
    let resume = state.session_id.is_some() && state.resume_url.is_some();
    let url = match (resume, &state.resume_url) {
        (true, Some(u)) => u.clone(),
        _ => {
            let got = tokio::select! {
                _ = rest.cancel.cancelled() => return (Outcome::Cancelled, false),
                got = rest.gateway_url() => got,
            };
            match got {
                Ok(u) => u,
                Err(RestError::Unauthorized) => {
                    return (
                        Outcome::Fatal(
                            "authentication failed: the bot token was rejected \
                             (HTTP 401 from GET /gateway/bot)"
                                .into(),
                        ),
                        false,
                    )
                }
                Err(e) => return (Outcome::Failed(e.to_string()), false),
            }
        }
    };
    let url = with_query(&url);
    let connect = tokio::time::timeout(
        rest.timing.hello_timeout,
        tokio_tungstenite::connect_async(url.as_str()),
    );
    let mut ws = tokio::select! {
        _ = rest.cancel.cancelled() => return (Outcome::Cancelled, false),
        r = connect => match r {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => return (Outcome::Failed(format!("gateway connect: {e}")), false),
            Err(_) => return (Outcome::Failed("gateway connect: timed out".into()), false),
        },
    };
    let mut conn = Connection {
        rest,
        ctx,
        state,
        ready: false,
    };
    let outcome = conn.drive(&mut ws, resume).await;
    let ready = conn.ready;
    // A clean 1000 close would end the session; keep it resumable unless we are done.
    let code = match outcome {
        Outcome::Cancelled | Outcome::Reidentify | Outcome::Fatal(_) => CloseCode::Normal,
        Outcome::Reconnect | Outcome::Failed(_) => CloseCode::from(4000),
    };
    let frame = CloseFrame {
        code,
        reason: "".into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
    (outcome, ready)
}

/// A live connection's state.
struct Connection<'a> {
    rest: &'a Rest,
    ctx: &'a ChannelContext,
    state: &'a mut State,
    /// READY or RESUMED seen.
    ready: bool,
}

impl Connection<'_> {
    async fn send(&self, ws: &mut Ws, payload: Value) -> Result<(), String> {
        ws.send(Message::Text(payload.to_string().into()))
            .await
            .map_err(|e| self.rest.redact(&format!("gateway send: {e}")))
    }

    fn heartbeat(&self) -> Value {
        json!({ "op": op::HEARTBEAT, "d": self.state.seq })
    }

    async fn drive(&mut self, ws: &mut Ws, resume: bool) -> Outcome {
        // Hello first.
        let hello = tokio::select! {
            _ = self.rest.cancel.cancelled() => return Outcome::Cancelled,
            r = tokio::time::timeout(self.rest.timing.hello_timeout, next_payload(ws)) => r,
        };
        let interval = match hello {
            Err(_) => return Outcome::Failed("gateway: no Hello in time".into()),
            Ok(Err(end)) => return self.ended(end),
            Ok(Ok(p)) if p["op"].as_u64() == Some(op::HELLO) => {
                match p["d"]["heartbeat_interval"].as_u64() {
                    Some(ms) if ms > 0 => Duration::from_millis(ms),
                    _ => {
                        return Outcome::Failed("gateway: Hello without heartbeat_interval".into())
                    }
                }
            }
            Ok(Ok(p)) => {
                return Outcome::Failed(format!(
                    "gateway: expected Hello (op 10), got op {}",
                    p["op"]
                ))
            }
        };
        let token = self.rest.config.bot_token.expose();
        let first = if resume {
            json!({ "op": op::RESUME, "d": {
                "token": token,
                "session_id": self.state.session_id,
                "seq": self.state.seq,
            }})
        } else {
            json!({ "op": op::IDENTIFY, "d": {
                "token": token,
                "intents": INTENTS,
                "properties": {
                    "os": std::env::consts::OS,
                    "browser": "agent-runtime",
                    "device": "agent-runtime",
                },
            }})
        };
        if let Err(e) = self.send(ws, first).await {
            return Outcome::Failed(e);
        }

        let jitter: f64 = rand::thread_rng().gen();
        let mut next_beat = Instant::now() + interval.mul_f64(jitter);
        let mut acked = true;
        loop {
            tokio::select! {
                _ = self.rest.cancel.cancelled() => return Outcome::Cancelled,
                _ = tokio::time::sleep_until(next_beat) => {
                    if !acked {
                        return Outcome::Failed(
                            "heartbeat not acknowledged: zombied connection".into(),
                        );
                    }
                    if let Err(e) = self.send(ws, self.heartbeat()).await {
                        return Outcome::Failed(e);
                    }
                    acked = false;
                    next_beat += interval;
                }
                p = next_payload(ws) => {
                    let p = match p {
                        Ok(p) => p,
                        Err(end) => return self.ended(end),
                    };
                    if let Some(s) = p["s"].as_u64() {
                        self.state.seq = Some(s);
                    }
                    match p["op"].as_u64() {
                        Some(op::DISPATCH) => self.dispatch(&p),
                        Some(op::HEARTBEAT) => {
                            if let Err(e) = self.send(ws, self.heartbeat()).await {
                                return Outcome::Failed(e);
                            }
                        }
                        Some(op::HEARTBEAT_ACK) => acked = true,
                        Some(op::RECONNECT) => {
                            tracing::info!("discord: the gateway asked to reconnect");
                            return Outcome::Reconnect;
                        }
                        Some(op::INVALID_SESSION) => {
                            if p["d"].as_bool() == Some(true) && self.state.session_id.is_some() {
                                tracing::info!("discord: invalid session (resumable)");
                                return Outcome::Reconnect;
                            }
                            tracing::info!("discord: invalid session; identifying again");
                            self.state.forget_session();
                            return Outcome::Reidentify;
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// The outcome of a connection that ended with `end`.
    fn ended(&mut self, end: End) -> Outcome {
        match end {
            End::Closed(Some(code)) => {
                if let Some(reason) = fatal_close(code) {
                    return Outcome::Fatal(reason.to_owned());
                }
                // Invalid seq / session timed out: the session cannot be resumed.
                if matches!(code, 4007 | 4009) {
                    self.state.forget_session();
                }
                Outcome::Failed(format!("gateway closed the connection (close {code})"))
            }
            End::Closed(None) => Outcome::Failed("gateway closed the connection".into()),
            End::Error(e) => Outcome::Failed(self.rest.redact(&format!("gateway: {e}"))),
        }
    }

    /// Handles a dispatch (op 0) event.
    fn dispatch(&mut self, p: &Value) {
        let d = &p["d"];
        match p["t"].as_str() {
            Some("READY") => {
                self.state.session_id = d["session_id"].as_str().map(str::to_owned);
                self.state.resume_url = d["resume_gateway_url"]
                    .as_str()
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned);
                self.state.bot_id = d["user"]["id"].as_str().map(str::to_owned);
                self.ready = true;
                tracing::info!("discord: connected (READY)");
                self.ctx.listening(NAME);
            }
            Some("RESUMED") => {
                self.ready = true;
                tracing::info!("discord: session resumed");
                self.ctx.listening(NAME);
            }
            Some("MESSAGE_CREATE") => self.message(d),
            _ => {}
        }
    }

    /// A `MESSAGE_CREATE`: filtered, then answered in its own task (heartbeats go on).
    fn message(&self, d: &Value) {
        let author = &d["author"];
        let author_id = author["id"].as_str().unwrap_or_default();
        if author["bot"].as_bool() == Some(true) || self.state.bot_id.as_deref() == Some(author_id)
        {
            return;
        }
        let guild = d["guild_id"].as_str();
        if let (Some(wanted), Some(guild)) = (&self.rest.config.guild_id, guild) {
            if wanted != guild {
                return;
            }
        }
        if !super::is_allowed(&self.rest.config.allowed_users, &[author_id]) {
            tracing::debug!(user = author_id, "discord: sender not allowed; ignored");
            return;
        }
        let (Some(channel_id), Some(content)) = (d["channel_id"].as_str(), d["content"].as_str())
        else {
            return;
        };
        if content.trim().is_empty() {
            return;
        }
        let (channel_id, content) = (channel_id.to_owned(), content.to_owned());
        let ctx = self.ctx.clone();
        let rest = self.rest.clone();
        tokio::spawn(async move {
            let work = async {
                let reply = match ctx.answer(&format!("discord:{channel_id}"), &content).await {
                    Ok(r) => r,
                    Err(AnswerError::RateLimited) => {
                        tracing::warn!(channel = %channel_id, "discord: chat rate limited");
                        return;
                    }
                    Err(e) => format!("Sorry, I could not answer: {e}."),
                };
                if let Err(e) = rest.post_reply(&channel_id, &reply).await {
                    tracing::warn!(error = %rest.redact(&e.to_string()), "discord: reply failed");
                }
            };
            tokio::select! {
                _ = rest.cancel.cancelled() => {}
                _ = work => {}
            }
        });
    }
}

/// Why the stream of payloads ended.
#[derive(Debug)]
enum End {
    /// A close frame (its code) or the end of the stream.
    Closed(Option<u16>),
    /// A transport error.
    Error(String),
}

/// The next JSON payload of the gateway (text frames; others are skipped).
async fn next_payload(ws: &mut Ws) -> Result<Value, End> {
    loop {
        match ws.next().await {
            None => return Err(End::Closed(None)),
            Some(Err(e)) => return Err(End::Error(e.to_string())),
            Some(Ok(Message::Close(frame))) => {
                return Err(End::Closed(frame.map(|f| u16::from(f.code))))
            }
            Some(Ok(Message::Text(text))) => match serde_json::from_str(text.as_str()) {
                Ok(v) => return Ok(v),
                Err(e) => tracing::debug!(error = %e, "discord: unreadable gateway payload"),
            },
            Some(Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_and_urls() {
        assert_eq!(INTENTS, 1 + 512 + 4096 + 32768);
        assert_eq!(
            with_query("wss://gateway.discord.gg"),
            "wss://gateway.discord.gg/?v=10&encoding=json"
        );
        assert_eq!(
            with_query("wss://x.discord.gg/?v=9"),
            "wss://x.discord.gg/?v=10&encoding=json"
        );
        assert!(fatal_close(4014).unwrap().contains("MESSAGE_CONTENT"));
        assert!(fatal_close(4000).is_none());
    }
}
