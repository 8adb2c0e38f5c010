//! The Discord client against a local fake Discord: REST (axum) and the gateway (a WebSocket
//! server on another `127.0.0.1` listener, handed out by `GET /gateway/bot`), speaking the real
//! v10 JSON frames. Every wait is bounded; timings are shortened through `run_with`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_runtime::channels::discord::{self, Timing, INTENTS};
use agent_runtime::channels::ChannelContext;
use agent_runtime::config::channels::DiscordConfig;
use agent_runtime::health::Status;
use agent_runtime::secret::Secret;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Json;
use common::{openai_reply, Stub, TestApp, TEST_KEY};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "MTIzNDU2.discord-SECRET-token.abcdef";
const BOT_ID: &str = "900";
const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// The fake Discord.

/// One reply posted through `POST /channels/{id}/messages`.
#[derive(Debug, Clone)]
struct Post {
    channel: String,
    content: String,
    auth: Option<String>,
}

#[derive(Default)]
struct Shared {
    ws_url: Mutex<String>,
    gateway_calls: AtomicU32,
    gateway_auth: Mutex<Vec<Option<String>>>,
    posts: Mutex<Vec<Post>>,
    /// How many of the next POSTs answer 429.
    posts_429: AtomicU32,
    rate_limited: AtomicU32,
    /// Answer every heartbeat with an ACK.
    auto_ack: AtomicBool,
    connections: AtomicU32,
}

/// One accepted gateway connection, driven by the test.
struct Conn {
    /// The request path and query of the WebSocket upgrade.
    path: String,
    out: mpsc::UnboundedSender<Message>,
    inbox: mpsc::UnboundedReceiver<Value>,
}

impl Conn {
    fn send(&self, v: Value) {
        self.out.send(Message::Text(v.to_string().into())).unwrap();
    }

    fn hello(&self, interval_ms: u64) {
        self.send(
            json!({"op": 10, "d": {"heartbeat_interval": interval_ms}, "s": null, "t": null}),
        );
    }

    fn dispatch(&self, t: &str, s: u64, d: Value) {
        self.send(json!({"op": 0, "t": t, "s": s, "d": d}));
    }

    fn ready(&self, s: u64, session: &str, resume_url: &str) {
        self.dispatch(
            "READY",
            s,
            json!({"v": 10, "session_id": session, "resume_gateway_url": resume_url,
                   "user": {"id": BOT_ID, "username": "zc", "bot": true},
                   "guilds": [], "application": {"id": BOT_ID}}),
        );
    }

    fn close(&self, code: u16) {
        let _ = self.out.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "bye".into(),
        })));
    }

    /// The next payload from the client, within `WAIT`; `None` when the connection ended.
    async fn recv(&mut self) -> Option<Value> {
        timeout(WAIT, self.inbox.recv())
            .await
            .expect("a payload in time")
    }

    /// The next payload with `op`, skipping heartbeats (unless `op` is 1).
    async fn expect_op(&mut self, op: u64) -> Value {
        loop {
            let p = self.recv().await.expect("connection open");
            if p["op"] == op {
                return p;
            }
            assert_eq!(
                p["op"], 1,
                "unexpected payload while waiting for op {op}: {p}"
            );
        }
    }
}

struct Fake {
    shared: Arc<Shared>,
    conns: mpsc::UnboundedReceiver<Conn>,
    rest_base: String,
    ws_url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn gateway_bot(State(s): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    s.gateway_calls.fetch_add(1, Ordering::SeqCst);
    s.gateway_auth.lock().unwrap().push(
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    );
    let url = s.ws_url.lock().unwrap().clone();
    Json(json!({"url": url, "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}))
}

async fn create_message(
    State(s): State<Arc<Shared>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let pending = s.posts_429.load(Ordering::SeqCst);
    if pending > 0 {
        s.posts_429.store(pending - 1, Ordering::SeqCst);
        s.rate_limited.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"message": "You are being rate limited.", "retry_after": 0.05, "global": false})),
        )
            .into_response();
    }
    s.posts.lock().unwrap().push(Post {
        channel: channel.clone(),
        content: body["content"].as_str().unwrap_or_default().to_owned(),
        auth: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    Json(json!({"id": "1", "channel_id": channel})).into_response()
}

impl Fake {
    async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        shared.auto_ack.store(true, Ordering::SeqCst);

        let ws_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws_url = format!(
            "ws://127.0.0.1:{}",
            ws_listener.local_addr().unwrap().port()
        );
        *shared.ws_url.lock().unwrap() = ws_url.clone();
        let (conn_tx, conns) = mpsc::unbounded_channel();
        let s2 = shared.clone();
        let ws_task = tokio::spawn(async move {
            while let Ok((stream, _)) = ws_listener.accept().await {
                let shared = s2.clone();
                let conn_tx = conn_tx.clone();
                tokio::spawn(async move {
                    let path = Arc::new(Mutex::new(String::new()));
                    let p2 = path.clone();
                    // The callback's signature is tungstenite's (its error is an HTTP response).
                    #[allow(clippy::result_large_err)]
                    let cb = move |req: &Request, resp: Response| {
                        *p2.lock().unwrap() = req.uri().to_string();
                        Ok(resp)
                    };
                    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, cb).await else {
                        return;
                    };
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let (mut sink, mut stream) = ws.split();
                    let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
                    let (in_tx, inbox) = mpsc::unbounded_channel();
                    let path = path.lock().unwrap().clone();
                    let _ = conn_tx.send(Conn {
                        path,
                        out: out.clone(),
                        inbox,
                    });
                    let writer = tokio::spawn(async move {
                        while let Some(m) = out_rx.recv().await {
                            let close = matches!(m, Message::Close(_));
                            if sink.send(m).await.is_err() || close {
                                break;
                            }
                        }
                        let _ = sink.close().await;
                    });
                    while let Some(Ok(m)) = stream.next().await {
                        if let Message::Text(t) = m {
                            let v: Value = serde_json::from_str(t.as_str()).unwrap();
                            if v["op"] == 1 && shared.auto_ack.load(Ordering::SeqCst) {
                                let _ =
                                    out.send(Message::Text(json!({"op": 11}).to_string().into()));
                            }
                            let _ = in_tx.send(v);
                        }
                    }
                    // The client went away: the test sees `None`.
                    drop(in_tx);
                    writer.abort();
                });
            }
        });

        let router = axum::Router::new()
            .route("/api/v10/gateway/bot", get(gateway_bot))
            .route("/api/v10/channels/{id}/messages", post(create_message))
            .with_state(shared.clone());
        let rest_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rest_base = format!(
            "http://127.0.0.1:{}/api/v10",
            rest_listener.local_addr().unwrap().port()
        );
        let rest_task = tokio::spawn(async move {
            let _ = axum::serve(rest_listener, router).await;
        });
        Self {
            shared,
            conns,
            rest_base,
            ws_url,
            tasks: vec![ws_task, rest_task],
        }
    }

    /// The next gateway connection, within `WAIT`.
    async fn conn(&mut self) -> Conn {
        timeout(WAIT, self.conns.recv())
            .await
            .expect("a gateway connection in time")
            .unwrap()
    }

    /// Whether another connection arrives within `within`.
    async fn no_conn_within(&mut self, within: Duration) -> bool {
        timeout(within, self.conns.recv()).await.is_err()
    }

    fn resume_url(&self) -> String {
        format!("{}/resume", self.ws_url)
    }

    fn posts(&self) -> Vec<Post> {
        self.shared.posts.lock().unwrap().clone()
    }

    /// Waits until `n` replies were posted.
    async fn posts_at_least(&self, n: usize) -> Vec<Post> {
        timeout(WAIT, async {
            loop {
                let p = self.posts();
                if p.len() >= n {
                    return p;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} posts expected, got {:?}", self.posts()))
    }

    fn config(&self, allowed: &[&str], guild: Option<&str>) -> DiscordConfig {
        DiscordConfig {
            bot_token: Secret::new(TOKEN),
            guild_id: guild.map(str::to_owned),
            allowed_users: allowed.iter().map(|s| (*s).to_owned()).collect(),
            api_base_url: Some(self.rest_base.clone()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The gateway under test, with a provider stub that echoes.

/// A provider stub answering `echo: <message>`, or 4500 characters when the message says LONG.
async fn echo_stub() -> Stub {
    Stub::start("127.0.0.1:0", Duration::ZERO, |call| {
        let msg = call.body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned();
        let text = if msg.contains("LONG") {
            "lorem ipsum dolor ".repeat(250)
        } else {
            format!("echo: {msg}")
        };
        (200, openai_reply(&text))
    })
    .await
}

fn short_timing() -> Timing {
    Timing {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        hello_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        invalid_session_max: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(2),
    }
}

struct Harness {
    fake: Fake,
    app: TestApp,
    _stub: Stub,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    async fn start(allowed: &[&str], guild: Option<&str>) -> Self {
        let fake = Fake::start().await;
        let stub = echo_stub().await;
        let app = TestApp::with("openai", &stub, |_| {}).await;
        let state = app.app().state().clone();
        state
            .health
            .register(&ChannelContext::component("discord"), Status::Starting);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(discord::run_with(
            fake.config(allowed, guild),
            ChannelContext::new(state),
            cancel.clone(),
            short_timing(),
        ));
        Self {
            fake,
            app,
            _stub: stub,
            cancel,
            task: Some(task),
        }
    }

    async fn component(&self) -> Value {
        let (status, body) = self.app.get("/health", None).await;
        assert_eq!(status, 200);
        let text = body.to_string();
        assert!(!text.contains(TOKEN), "token leaked into /health: {text}");
        assert!(!text.contains("discord-SECRET"), "token leaked: {text}");
        assert!(!text.contains(TEST_KEY));
        body["runtime"]["components"]["channel:discord"].clone()
    }

    /// Waits until the component satisfies `pred`.
    async fn wait_component(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let c = self.component().await;
            if pred(&c) {
                return c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "component never {what}: {c}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_status(&self, status: &str) -> Value {
        self.wait_component(status, |c| c["status"] == status).await
    }

    /// Accepts the first connection and takes it to READY (`s` = 1).
    async fn connect_ready(&mut self, interval_ms: u64) -> Conn {
        let mut c = self.fake.conn().await;
        c.hello(interval_ms);
        let identify = c.expect_op(2).await;
        assert_eq!(identify["d"]["token"], TOKEN);
        c.ready(1, "sess-1", &self.fake.resume_url());
        self.wait_status("ok").await;
        c
    }

    async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            timeout(WAIT, t)
                .await
                .expect("client stops on cancel")
                .unwrap();
        }
        self.app.shutdown().await;
    }
}

fn message(id: &str, channel: &str, guild: Option<&str>, author: Value, content: &str) -> Value {
    let mut d = json!({"id": id, "channel_id": channel, "author": author, "content": content,
                       "timestamp": "2024-01-01T00:00:00.000000+00:00", "tts": false,
                       "mention_everyone": false, "mentions": [], "attachments": [], "embeds": [],
                       "pinned": false, "type": 0});
    if let Some(g) = guild {
        d["guild_id"] = json!(g);
    }
    d
}

fn user(id: &str) -> Value {
    json!({"id": id, "username": format!("user{id}"), "discriminator": "0"})
}

// ---------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn identify_ready_then_component_ok() {
    let mut h = Harness::start(&["111"], None).await;
    assert_eq!(h.component().await["status"], "starting");
    let mut c = h.fake.conn().await;
    assert_eq!(c.path, "/?v=10&encoding=json");
    assert_eq!(
        h.fake.shared.gateway_auth.lock().unwrap().clone(),
        [Some(format!("Bot {TOKEN}"))]
    );
    c.hello(45_000);
    let identify = c.expect_op(2).await;
    let d = &identify["d"];
    assert_eq!(d["token"], TOKEN);
    assert_eq!(d["intents"], INTENTS);
    assert_eq!(
        INTENTS,
        (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15),
        "GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT"
    );
    for k in ["os", "browser", "device"] {
        assert!(d["properties"][k].is_string(), "{k} in {identify}");
    }
    // Not ok before READY.
    assert_eq!(h.component().await["status"], "starting");
    c.ready(1, "sess-1", &h.fake.resume_url());
    let comp = h.wait_status("ok").await;
    assert_eq!(comp["restart_count"], 0);
    // A server heartbeat request (op 1) is answered at once.
    c.send(json!({"op": 1, "d": null}));
    let beat = c.expect_op(1).await;
    assert_eq!(beat["d"], 1);
    h.stop().await;
}

#[tokio::test]
async fn allowed_users_are_answered_others_ignored() {
    let mut h = Harness::start(&["111", "222"], Some("g1")).await;
    let c = h.connect_ready(45_000).await;
    let mut s = 1;
    let mut send = |d: Value| {
        s += 1;
        c.dispatch("MESSAGE_CREATE", s, d);
    };
    // Ignored: a stranger, a bot, the bot itself, another guild, an empty message.
    send(message("m1", "c1", Some("g1"), user("999"), "stranger"));
    send(message(
        "m2",
        "c1",
        Some("g1"),
        json!({"id": "111", "username": "b", "bot": true}),
        "from a bot",
    ));
    send(message("m3", "c1", Some("g1"), user(BOT_ID), "myself"));
    send(message("m4", "c1", Some("g2"), user("111"), "other guild"));
    send(message("m5", "c1", Some("g1"), user("111"), "  "));
    // Answered: an allowed user in the guild, and a DM (no guild_id) from an allowed user.
    send(message("m6", "c1", Some("g1"), user("111"), "hello"));
    let posts = h.fake.posts_at_least(1).await;
    assert_eq!(posts[0].channel, "c1");
    assert_eq!(posts[0].content, "echo: hello");
    assert_eq!(
        posts[0].auth.as_deref(),
        Some(format!("Bot {TOKEN}").as_str())
    );
    send(message("m7", "dm9", None, user("222"), "private"));
    let posts = h.fake.posts_at_least(2).await;
    assert_eq!(posts[1].channel, "dm9");
    assert_eq!(posts[1].content, "echo: private");
    // A DM from a stranger is ignored too.
    send(message("m8", "dm8", None, user("999"), "let me in"));
    send(message("m9", "c1", Some("g1"), user("222"), "last"));
    let posts = h.fake.posts_at_least(3).await;
    assert_eq!(posts[2].content, "echo: last");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let contents: Vec<_> = h.fake.posts().into_iter().map(|p| p.content).collect();
    assert_eq!(
        contents,
        ["echo: hello", "echo: private", "echo: last"],
        "only allowed users are answered"
    );
    h.stop().await;
}

#[tokio::test]
async fn long_replies_are_split_and_429_is_retried() {
    let mut h = Harness::start(&["*"], None).await;
    let c = h.connect_ready(45_000).await;
    h.fake.shared.posts_429.store(1, Ordering::SeqCst);
    c.dispatch(
        "MESSAGE_CREATE",
        2,
        message("m1", "c7", Some("g1"), user("5"), "say something LONG"),
    );
    let posts = h.fake.posts_at_least(3).await;
    assert_eq!(h.fake.shared.rate_limited.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let posts_now = h.fake.posts();
    assert_eq!(posts_now.len(), 3, "4500 characters → 3 messages");
    assert!(posts
        .iter()
        .all(|p| p.channel == "c7" && p.content.chars().count() <= 2000));
    let joined: String = posts_now.iter().map(|p| p.content.as_str()).collect();
    assert_eq!(joined, "lorem ipsum dolor ".repeat(250));
    h.stop().await;
}

#[tokio::test]
async fn heartbeats_carry_the_sequence_and_a_missed_ack_resumes() {
    let mut h = Harness::start(&["*"], None).await;
    let mut c = h.connect_ready(100).await;
    c.dispatch(
        "TYPING_START",
        5,
        json!({"channel_id": "c1", "user_id": "1"}),
    );
    // Heartbeats arrive (acknowledged by the fake) and carry the last sequence number.
    let mut beats = 0;
    timeout(WAIT, async {
        while beats < 3 {
            let p = c.recv().await.expect("open");
            if p["op"] == 1 && p["d"] == 5 {
                beats += 1;
            }
        }
    })
    .await
    .expect("heartbeats every 100 ms");
    assert_eq!(h.component().await["status"], "ok");

    // Stop acknowledging: the next due heartbeat finds the previous one un-acked.
    h.fake.shared.auto_ack.store(false, Ordering::SeqCst);
    let mut r = h.fake.conn().await;
    assert_eq!(
        r.path, "/resume/?v=10&encoding=json",
        "reconnects to resume_gateway_url"
    );
    let comp = h.component().await;
    assert!(comp["restart_count"].as_u64().unwrap() >= 1, "{comp}");
    assert!(
        comp["last_error"].as_str().unwrap().contains("heartbeat"),
        "{comp}"
    );
    h.fake.shared.auto_ack.store(true, Ordering::SeqCst);
    r.hello(45_000);
    let resume = r.expect_op(6).await;
    assert_eq!(
        resume["d"],
        json!({"token": TOKEN, "session_id": "sess-1", "seq": 5})
    );
    r.dispatch("RESUMED", 6, json!({}));
    h.wait_status("ok").await;
    // The zombie was closed by the client.
    timeout(WAIT, async { while c.inbox.recv().await.is_some() {} })
        .await
        .expect("old connection closed");
    h.stop().await;
}

#[tokio::test]
async fn server_drop_reconnect_and_invalid_session() {
    let mut h = Harness::start(&["*"], None).await;
    let c = h.connect_ready(45_000).await;
    c.dispatch("GUILD_CREATE", 3, json!({"id": "g1"}));

    // A dropped connection (non-fatal close): resume with the last sequence.
    c.close(4000);
    let mut r = h.fake.conn().await;
    assert!(r.path.starts_with("/resume/"), "{}", r.path);
    r.hello(45_000);
    let resume = r.expect_op(6).await;
    assert_eq!(resume["d"]["session_id"], "sess-1");
    assert_eq!(resume["d"]["seq"], 3);
    assert_eq!(resume["d"]["token"], TOKEN);
    r.dispatch("RESUMED", 4, json!({}));
    h.wait_status("ok").await;
    let restarts = h.component().await["restart_count"].as_u64().unwrap();
    assert!(restarts >= 1);

    // op 7 Reconnect: resume again.
    r.send(json!({"op": 7, "d": null}));
    let mut r2 = h.fake.conn().await;
    assert!(r2.path.starts_with("/resume/"), "{}", r2.path);
    r2.hello(45_000);
    let resume = r2.expect_op(6).await;
    assert_eq!(resume["d"]["seq"], 4);
    r2.dispatch("RESUMED", 5, json!({}));

    // op 9 Invalid Session, not resumable: a fresh Identify on the main gateway URL.
    r2.send(json!({"op": 9, "d": false}));
    let mut fresh = h.fake.conn().await;
    assert_eq!(fresh.path, "/?v=10&encoding=json");
    fresh.hello(45_000);
    let identify = fresh.expect_op(2).await;
    assert_eq!(identify["d"]["intents"], INTENTS);
    fresh.ready(1, "sess-2", &h.fake.resume_url());
    h.wait_status("ok").await;
    // op 9 resumable: resume the new session.
    fresh.send(json!({"op": 9, "d": true}));
    let mut again = h.fake.conn().await;
    again.hello(45_000);
    let resume = again.expect_op(6).await;
    assert_eq!(resume["d"]["session_id"], "sess-2");
    assert_eq!(resume["d"]["seq"], 1);
    h.stop().await;
}

async fn fatal_close(code: u16, expected: &[&str]) {
    let mut h = Harness::start(&["*"], None).await;
    let mut c = h.fake.conn().await;
    c.hello(45_000);
    c.expect_op(2).await;
    c.close(code);
    let comp = h.wait_status("error").await;
    let err = comp["last_error"].as_str().unwrap().to_owned();
    for e in expected {
        assert!(err.contains(e), "{err:?} should name {e:?}");
    }
    // No further attempt (the backoff would retry within ~100 ms).
    assert!(
        h.fake.no_conn_within(Duration::from_millis(600)).await,
        "reconnected after fatal close {code}"
    );
    assert_eq!(h.fake.shared.gateway_calls.load(Ordering::SeqCst), 1);
    assert_eq!(h.fake.shared.connections.load(Ordering::SeqCst), 1);
    assert_eq!(h.component().await["status"], "error");
    h.stop().await;
}

#[tokio::test]
async fn close_4014_is_fatal_and_names_the_privileged_intent() {
    fatal_close(
        4014,
        &[
            "privileged intent",
            "MESSAGE_CONTENT",
            "Developer Portal",
            "4014",
        ],
    )
    .await;
}

#[tokio::test]
async fn close_4004_is_fatal() {
    fatal_close(4004, &["authentication failed", "4004"]).await;
}

#[tokio::test]
async fn non_fatal_closes_reconnect_and_count_restarts() {
    let mut h = Harness::start(&["*"], None).await;
    let mut last = 0;
    for round in 0..3 {
        let mut c = h.fake.conn().await;
        // No session yet: every attempt identifies via GET /gateway/bot.
        assert_eq!(c.path, "/?v=10&encoding=json");
        c.hello(45_000);
        c.expect_op(2).await;
        c.close(4000);
        let comp = h
            .wait_component("restarted", |c| c["restart_count"].as_u64().unwrap() > last)
            .await;
        assert_eq!(comp["status"], "error", "round {round}: {comp}");
        assert!(
            comp["last_error"].as_str().unwrap().contains("4000"),
            "{comp}"
        );
        last = comp["restart_count"].as_u64().unwrap();
    }
    assert!(last >= 3);
    let mut c = h.fake.conn().await;
    c.hello(45_000);
    c.expect_op(2).await;
    c.ready(1, "sess-9", &h.fake.resume_url());
    h.wait_status("ok").await;
    assert!(h.fake.shared.gateway_calls.load(Ordering::SeqCst) >= 4);
    h.stop().await;
}

#[tokio::test]
async fn failing_resumes_fall_back_to_identify() {
    let mut h = Harness::start(&["*"], None).await;
    let c = h.connect_ready(45_000).await;
    c.close(4000);
    // The drop and two failed resumes make three failures in a row.
    for _ in 0..2 {
        let mut r = h.fake.conn().await;
        assert!(r.path.starts_with("/resume/"), "{}", r.path);
        r.hello(45_000);
        r.expect_op(6).await;
        r.close(4000);
    }
    let mut fresh = h.fake.conn().await;
    assert_eq!(fresh.path, "/?v=10&encoding=json");
    fresh.hello(45_000);
    fresh.expect_op(2).await;
    fresh.ready(1, "sess-2", &h.fake.resume_url());
    h.wait_status("ok").await;
    assert_eq!(h.fake.shared.gateway_calls.load(Ordering::SeqCst), 2);
    h.stop().await;
}

#[tokio::test]
async fn the_gateway_runs_the_configured_client() {
    // Wired through `[channels_config.discord]` with production timings.
    let mut fake = Fake::start().await;
    let stub = echo_stub().await;
    let cfg = fake.config(&["*"], None);
    let mut app = TestApp::with("openai", &stub, |c| c.channels.discord = Some(cfg)).await;
    let mut c = fake.conn().await;
    c.hello(45_000);
    let identify = c.expect_op(2).await;
    assert_eq!(identify["d"]["token"], TOKEN);
    c.ready(1, "sess-1", &fake.resume_url());
    timeout(WAIT, async {
        loop {
            let (_, body) = app.get("/health", None).await;
            let text = body.to_string();
            assert!(!text.contains(TOKEN));
            if body["runtime"]["components"]["channel:discord"]["status"] == "ok" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("channel:discord ok");
    c.dispatch(
        "MESSAGE_CREATE",
        2,
        message("m1", "c1", None, user("42"), "hi there"),
    );
    let posts = fake.posts_at_least(1).await;
    assert_eq!(posts[0].content, "echo: hi there");
    assert!(app.shutdown().await);
}
