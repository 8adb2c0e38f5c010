//! The Slack client against a local fake Slack: the Web API (axum) and a Socket Mode
//! WebSocket server (tokio-tungstenite), both on `127.0.0.1`, speaking Slack's JSON
//! (<https://api.slack.com/apis/socket-mode>, <https://api.slack.com/methods>).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_runtime::channels::slack::{self, Timing};
use agent_runtime::channels::ChannelContext;
use agent_runtime::config::channels::SlackConfig;
use agent_runtime::secret::Secret;
use axum::body::Bytes;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{openai_reply, Stub, TestApp, TEST_KEY};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const BOT_TOKEN: &str = "xoxb-111-222-BOTSECRET";
const APP_TOKEN: &str = "xapp-1-A111-333-APPSECRET";
const BOT_USER: &str = "UBOT";
const ALLOWED: &str = "UALICE";
const STRANGER: &str = "UMALLORY";
const CHANNEL: &str = "C0CHAN";
const REPLY: &str = "the model's answer";
const WAIT: Duration = Duration::from_secs(10);

/// One Web API request the fake received.
#[derive(Debug, Clone)]
struct WebCall {
    method: String,
    auth: Option<String>,
    query: HashMap<String, String>,
    body: Value,
    at: Instant,
}

#[derive(Default)]
struct FakeState {
    calls: Vec<WebCall>,
    /// `auth.test` answers `invalid_auth`.
    invalid_auth: bool,
    /// How many of the next `chat.postMessage` calls answer 429 (`Retry-After: 1`).
    rate_limit_posts: u32,
    /// Messages of `conversations.history` (any channel: the fake has one).
    history: Vec<Value>,
    /// Text frames every WebSocket connection received (acks).
    received: Vec<Value>,
    /// The open WebSocket connection's outbox (`None` closes it).
    socket: Option<mpsc::UnboundedSender<Option<String>>>,
    connections: usize,
}

/// The fake Slack.
struct FakeSlack {
    api: String,
    state: Arc<Mutex<FakeState>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn ok(v: Value) -> Response {
    let mut v = v;
    v["ok"] = Value::Bool(true);
    axum::Json(v).into_response()
}

fn ts_num(v: &Value) -> f64 {
    v["ts"].as_str().unwrap().parse().unwrap()
}

impl FakeSlack {
    async fn start() -> Self {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let ws_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws_url = format!(
            "ws://127.0.0.1:{}/link/?ticket=",
            ws_listener.local_addr().unwrap().port()
        );

        let st = state.clone();
        let handler = move |uri: Uri,
                            Query(query): Query<HashMap<String, String>>,
                            headers: HeaderMap,
                            body: Bytes| {
            let st = st.clone();
            let ws_url = ws_url.clone();
            async move {
                let method = uri.path().trim_start_matches("/api/").to_owned();
                let call = WebCall {
                    method: method.clone(),
                    auth: headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    query: query.clone(),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    at: Instant::now(),
                };
                let mut s = st.lock().unwrap();
                s.calls.push(call.clone());
                let bearer = call.auth.as_deref().unwrap_or_default();
                match method.as_str() {
                    "auth.test" if s.invalid_auth => {
                        axum::Json(json!({"ok": false, "error": "invalid_auth"})).into_response()
                    }
                    "auth.test" if bearer == format!("Bearer {BOT_TOKEN}") => ok(json!({
                        "url": "https://fake.slack.com/", "team": "Fake", "user": "bot",
                        "team_id": "T1", "user_id": BOT_USER, "bot_id": "B1"
                    })),
                    "apps.connections.open" if bearer == format!("Bearer {APP_TOKEN}") => {
                        let n = s.connections + 1;
                        ok(json!({"url": format!("{ws_url}{n}")}))
                    }
                    "chat.postMessage" if s.rate_limit_posts > 0 => {
                        s.rate_limit_posts -= 1;
                        (
                            StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "1")],
                            axum::Json(json!({"ok": false, "error": "ratelimited"})),
                        )
                            .into_response()
                    }
                    "chat.postMessage" if bearer == format!("Bearer {BOT_TOKEN}") => ok(
                        json!({"channel": call.body["channel"], "ts": "1800000000.000001",
                                  "message": {"text": call.body["text"]}}),
                    ),
                    "conversations.history" if bearer == format!("Bearer {BOT_TOKEN}") => {
                        let oldest: f64 = query.get("oldest").map_or(0.0, |o| o.parse().unwrap());
                        let limit: usize = query.get("limit").map_or(100, |l| l.parse().unwrap());
                        let mut msgs: Vec<Value> = s
                            .history
                            .iter()
                            .filter(|m| ts_num(m) > oldest)
                            .cloned()
                            .collect();
                        msgs.sort_by(|a, b| ts_num(b).total_cmp(&ts_num(a)));
                        let has_more = msgs.len() > limit;
                        msgs.truncate(limit);
                        ok(json!({"messages": msgs, "has_more": has_more}))
                    }
                    _ => axum::Json(json!({"ok": false, "error": "not_authed"})).into_response(),
                }
            }
        };
        let router = axum::Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!(
            "http://127.0.0.1:{}/api",
            listener.local_addr().unwrap().port()
        );
        let web = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });

        let st = state.clone();
        let ws = tokio::spawn(async move {
            while let Ok((tcp, _)) = ws_listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    let (tx, mut rx) = mpsc::unbounded_channel();
                    {
                        let mut s = st.lock().unwrap();
                        s.connections += 1;
                        s.socket = Some(tx);
                    }
                    let hello = json!({"type": "hello", "num_connections": 1,
                        "debug_info": {"host": "fake", "approximate_connection_time": 18060},
                        "connection_info": {"app_id": "A111"}});
                    if ws.send(Message::text(hello.to_string())).await.is_err() {
                        return;
                    }
                    loop {
                        tokio::select! {
                            out = rx.recv() => match out {
                                Some(Some(text)) => {
                                    if ws.send(Message::text(text)).await.is_err() {
                                        return;
                                    }
                                }
                                // Drop the connection without a close frame.
                                Some(None) | None => return,
                            },
                            frame = ws.next() => match frame {
                                Some(Ok(Message::Text(t))) => {
                                    let v = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                                    st.lock().unwrap().received.push(v);
                                }
                                Some(Ok(_)) => {}
                                _ => return,
                            },
                        }
                    }
                });
            }
        });
        Self {
            api,
            state,
            tasks: vec![web, ws],
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn calls(&self, method: &str) -> Vec<WebCall> {
        self.with(|s| {
            s.calls
                .iter()
                .filter(|c| c.method == method)
                .cloned()
                .collect()
        })
    }

    fn acked(&self, envelope_id: &str) -> bool {
        self.with(|s| s.received.iter().any(|v| v["envelope_id"] == envelope_id))
    }

    /// Sends a frame on the open connection.
    fn send(&self, frame: &Value) {
        self.with(|s| {
            s.socket
                .as_ref()
                .unwrap()
                .send(Some(frame.to_string()))
                .unwrap();
        });
    }

    /// Sends an `events_api` envelope carrying `event`.
    fn send_event(&self, envelope_id: &str, event: Value) {
        self.send(&json!({
            "envelope_id": envelope_id,
            "payload": {
                "token": "verification-token", "team_id": "T1", "api_app_id": "A111",
                "event": event, "type": "event_callback", "event_id": format!("Ev{envelope_id}"),
                "event_time": 1_700_000_000
            },
            "type": "events_api",
            "accepts_response_payload": false,
            "retry_attempt": 0,
            "retry_reason": ""
        }));
    }

    fn config(&self, app_token: bool) -> SlackConfig {
        SlackConfig {
            bot_token: Secret::new(BOT_TOKEN),
            app_token: app_token.then(|| Secret::new(APP_TOKEN)),
            channel_id: Some(CHANNEL.into()),
            allowed_users: vec![ALLOWED.into()],
            api_base_url: Some(self.api.clone()),
        }
    }
}

fn message(user: &str, text: &str, ts: &str) -> Value {
    json!({"type": "message", "channel": CHANNEL, "user": user, "text": text, "ts": ts,
           "channel_type": "channel", "team": "T1"})
}

/// Polls `cond` every 20 ms until true, failing after [`WAIT`].
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let r = tokio::time::timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(r.is_ok(), "timed out waiting for {what}");
}

/// The `channel:slack` component of `/health`, and the whole body as text.
async fn health(t: &TestApp) -> (Value, String) {
    let (status, body) = t.get("/health", None).await;
    assert_eq!(status, 200);
    let text = body.to_string();
    assert!(
        !text.contains(BOT_TOKEN)
            && !text.contains(APP_TOKEN)
            && !text.contains("BOTSECRET")
            && !text.contains("APPSECRET")
            && !text.contains(TEST_KEY),
        "a token in /health: {text}"
    );
    (body["runtime"]["components"]["channel:slack"].clone(), text)
}

async fn until_status(t: &TestApp, status: &str) -> Value {
    let r = tokio::time::timeout(WAIT, async {
        loop {
            let (c, _) = health(t).await;
            if c["status"] == status {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    r.unwrap_or_else(|_| panic!("channel:slack never became {status}"))
}

/// A gateway whose Slack client runs from its config with production timings.
async fn gateway(stub: &Stub, config: SlackConfig) -> TestApp {
    TestApp::with("openai", stub, |c| c.channels.slack = Some(config)).await
}

/// Short timings for the tests that run the client by hand.
fn fast() -> Timing {
    Timing {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        unauthorized_wait: Duration::from_millis(400),
        poll_interval: Duration::from_millis(50),
        request_timeout: Duration::from_secs(5),
        ping_interval: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(5),
        ..Timing::default()
    }
}

/// A gateway without channels plus a Slack client run by hand with `timing` on its state.
async fn gateway_with_timing(
    stub: &Stub,
    config: SlackConfig,
    timing: Timing,
) -> (TestApp, CancellationToken) {
    let t = TestApp::with("openai", stub, |_| {}).await;
    let cancel = CancellationToken::new();
    let ctx = ChannelContext::new(t.app().state().clone());
    tokio::spawn(slack::run_with(config, ctx, cancel.clone(), timing));
    (t, cancel)
}

fn posts(fake: &FakeSlack) -> Vec<Value> {
    fake.calls("chat.postMessage")
        .into_iter()
        .map(|c| c.body)
        .collect()
}

#[tokio::test]
async fn socket_mode_connects_and_answers_allowed_users_in_their_thread() {
    let stub = Stub::fixed(200, openai_reply(REPLY)).await;
    let fake = FakeSlack::start().await;
    let mut t = gateway(&stub, fake.config(true)).await;

    let c = until_status(&t, "ok").await;
    assert_eq!(c["last_error"], Value::Null);
    let auth = fake.calls("auth.test");
    assert_eq!(auth.len(), 1);
    assert_eq!(
        auth[0].auth.as_deref(),
        Some(format!("Bearer {BOT_TOKEN}").as_str())
    );
    let open = fake.calls("apps.connections.open");
    assert_eq!(open.len(), 1);
    assert_eq!(
        open[0].auth.as_deref(),
        Some(format!("Bearer {APP_TOKEN}").as_str())
    );
    assert!(auth[0].at <= open[0].at);

    // In a thread: the reply goes to the thread.
    let mut threaded = message(ALLOWED, "hello from a thread", "1700000000.000200");
    threaded["thread_ts"] = json!("1700000000.000100");
    fake.send_event("env-1", threaded);
    until("the threaded reply", || posts(&fake).len() == 1).await;
    assert!(fake.acked("env-1"));
    let post = &fake.calls("chat.postMessage")[0];
    assert_eq!(
        post.auth.as_deref(),
        Some(format!("Bearer {BOT_TOKEN}").as_str())
    );
    assert_eq!(
        post.body,
        json!({"channel": CHANNEL, "text": REPLY, "thread_ts": "1700000000.000100"})
    );
    let asked = stub.calls();
    assert_eq!(asked.len(), 1);
    assert!(asked[0].body.to_string().contains("hello from a thread"));

    // Not in a thread: the reply goes to the channel.
    fake.send_event(
        "env-2",
        message(ALLOWED, "top-level question", "1700000000.000300"),
    );
    until("the channel reply", || posts(&fake).len() == 2).await;
    assert_eq!(posts(&fake)[1], json!({"channel": CHANNEL, "text": REPLY}));

    // Ignored, yet every envelope acknowledged.
    fake.send_event("env-3", message(STRANGER, "let me in", "1700000000.000400"));
    fake.send_event(
        "env-4",
        message(BOT_USER, "my own words", "1700000000.000500"),
    );
    let mut from_bot = message(ALLOWED, "bot says", "1700000000.000600");
    from_bot["bot_id"] = json!("B2");
    fake.send_event("env-5", from_bot);
    let mut edited = message(ALLOWED, "edited", "1700000000.000700");
    edited["subtype"] = json!("message_changed");
    fake.send_event("env-6", edited);
    let mut elsewhere = message(ALLOWED, "other channel", "1700000000.000800");
    elsewhere["channel"] = json!("C0OTHER");
    fake.send_event("env-7", elsewhere);
    fake.send(&json!({"envelope_id": "env-8", "type": "slash_commands",
                      "payload": {"command": "/x"}, "accepts_response_payload": true}));
    // Then one more allowed message: once it is answered, the ones before were handled.
    fake.send_event("env-9", message(ALLOWED, "last one", "1700000000.000900"));
    until("the last reply", || posts(&fake).len() >= 3).await;
    for id in [
        "env-3", "env-4", "env-5", "env-6", "env-7", "env-8", "env-9",
    ] {
        until(id, || fake.acked(id)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(posts(&fake).len(), 3, "{:?}", posts(&fake));
    assert_eq!(stub.calls().len(), 3);

    let (c, _) = health(&t).await;
    assert_eq!(c["status"], "ok");
    assert!(t.shutdown().await);
}

#[tokio::test]
async fn disconnect_and_dropped_sockets_reconnect() {
    let stub = Stub::fixed(200, openai_reply(REPLY)).await;
    let fake = FakeSlack::start().await;
    let (t, cancel) = gateway_with_timing(&stub, fake.config(true), fast()).await;
    until_status(&t, "ok").await;
    assert_eq!(fake.calls("apps.connections.open").len(), 1);

    // A `disconnect` frame: a new apps.connections.open, a new connection, no error.
    fake.send(&json!({"type": "disconnect", "reason": "refresh_requested",
                      "debug_info": {"host": "fake"}}));
    until("a second connection", || fake.with(|s| s.connections) == 2).await;
    assert_eq!(fake.calls("apps.connections.open").len(), 2);
    assert_eq!(fake.calls("auth.test").len(), 1);
    let (c, _) = health(&t).await;
    assert_eq!(c["status"], "ok");
    assert_eq!(c["last_error"], Value::Null);

    // Messages arrive on the new connection.
    fake.send_event(
        "env-a",
        message(ALLOWED, "after refresh", "1700000001.000100"),
    );
    until("a reply after the refresh", || posts(&fake).len() == 1).await;
    assert!(fake.acked("env-a"));

    // A dropped connection: an error, then a new connection after the backoff.
    fake.with(|s| s.socket.as_ref().unwrap().send(None).unwrap());
    until("a third connection", || fake.with(|s| s.connections) == 3).await;
    let c = until_status(&t, "ok").await;
    assert!(c["restart_count"].as_u64().unwrap() >= 2, "{c}");
    assert!(
        c["last_error"].as_str().unwrap().contains("socket mode"),
        "{c}"
    );
    let (_, text) = health(&t).await;
    assert!(!text.contains("ticket="), "{text}");
    cancel.cancel();
}

#[tokio::test]
async fn invalid_auth_is_an_error_without_a_tight_loop() {
    let stub = Stub::fixed(200, openai_reply(REPLY)).await;
    let fake = FakeSlack::start().await;
    fake.with(|s| s.invalid_auth = true);
    let mut t = gateway(&stub, fake.config(true)).await;

    let c = until_status(&t, "error").await;
    assert_eq!(c["last_error"], "unauthorized: invalid_auth");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.calls("auth.test").len(), 1);
    assert!(fake.calls("apps.connections.open").is_empty());
    let (c, _) = health(&t).await;
    assert_eq!(c["status"], "error");
    assert_eq!(c["restart_count"], 1);
    assert!(t.shutdown().await);

    // With a short wait it tries again, once per wait, and recovers when the token works.
    let fake = FakeSlack::start().await;
    fake.with(|s| s.invalid_auth = true);
    let (t, cancel) = gateway_with_timing(&stub, fake.config(true), fast()).await;
    until_status(&t, "error").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let n = fake.calls("auth.test").len();
    assert!((2..=4).contains(&n), "{n} auth.test calls in ~1 s");
    fake.with(|s| s.invalid_auth = false);
    until_status(&t, "ok").await;
    cancel.cancel();
}

#[tokio::test]
async fn rate_limited_replies_wait_for_retry_after() {
    let stub = Stub::fixed(200, openai_reply(REPLY)).await;
    let fake = FakeSlack::start().await;
    fake.with(|s| s.rate_limit_posts = 1);
    let (t, cancel) = gateway_with_timing(&stub, fake.config(true), fast()).await;
    until_status(&t, "ok").await;

    fake.send_event("env-r", message(ALLOWED, "hi", "1700000002.000100"));
    until("the retried post", || posts(&fake).len() == 2).await;
    let calls = fake.calls("chat.postMessage");
    let gap = calls[1].at - calls[0].at;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    assert_eq!(calls[1].body, json!({"channel": CHANNEL, "text": REPLY}));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(posts(&fake).len(), 2);
    cancel.cancel();
}

#[tokio::test]
async fn polling_answers_new_messages_only() {
    let stub = Stub::fixed(200, openai_reply(REPLY)).await;
    let fake = FakeSlack::start().await;
    fake.with(|s| {
        s.history = vec![
            message(ALLOWED, "old question", "1700000000.000100"),
            message(ALLOWED, "older question", "1690000000.000100"),
        ];
    });
    let (t, cancel) = gateway_with_timing(&stub, fake.config(false), fast()).await;
    until_status(&t, "ok").await;
    assert!(fake.calls("apps.connections.open").is_empty());

    // Let a few polls pass: history is never answered.
    until("a few polls", || {
        fake.calls("conversations.history").len() >= 3
    })
    .await;
    assert!(posts(&fake).is_empty());

    fake.with(|s| {
        let mut own = message(BOT_USER, "my own reply", "1700000000.000300");
        own["bot_id"] = json!("B1");
        s.history.push(own);
        s.history
            .push(message(STRANGER, "not allowed", "1700000000.000400"));
        s.history
            .push(message(ALLOWED, "new question", "1700000000.000500"));
    });
    until("the reply to the new message", || !posts(&fake).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(posts(&fake), [json!({"channel": CHANNEL, "text": REPLY})]);
    let asked = stub.calls();
    assert_eq!(asked.len(), 1);
    let asked = asked[0].body.to_string();
    assert!(asked.contains("new question") && !asked.contains("old question"));

    let history = fake.calls("conversations.history");
    assert!(history.iter().all(|c| c.query["channel"] == CHANNEL));
    assert!(history
        .iter()
        .all(|c| c.auth.as_deref() == Some(format!("Bearer {BOT_TOKEN}").as_str())));
    assert!(!history[0].query.contains_key("oldest"));
    assert_eq!(history[1].query["oldest"], "1700000000.000100");
    assert_eq!(history.last().unwrap().query["oldest"], "1700000000.000500");
    cancel.cancel();
}

#[tokio::test]
async fn polling_needs_a_channel_id() {
    let stub = Stub::fixed(200, openai_reply(REPLY)).await;
    let fake = FakeSlack::start().await;
    let mut config = fake.config(false);
    config.channel_id = None;
    let mut t = gateway(&stub, config).await;
    let c = until_status(&t, "error").await;
    assert!(
        c["last_error"].as_str().unwrap().contains("channel_id"),
        "{c}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.with(|s| s.calls.is_empty()));
    assert!(t.shutdown().await);
}

#[tokio::test]
async fn tokens_stay_out_of_health_when_nothing_answers() {
    let stub = Stub::fixed(200, openai_reply(REPLY)).await;
    let mut config = FakeSlack::start().await.config(true);
    // Nothing listens there.
    config.api_base_url = Some("http://127.0.0.1:9/api".into());
    let mut t = gateway(&stub, config).await;
    let c = until_status(&t, "error").await;
    let err = c["last_error"].as_str().unwrap();
    assert!(err.starts_with("auth.test: "), "{err}");
    let logs_free = !err.contains("xox") && !err.contains("xapp");
    assert!(logs_free, "{err}");
    assert!(t.shutdown().await);
}
