//! The Telegram channel client against a fake Bot API server on `127.0.0.1:0` that speaks
//! the real wire format (<https://core.telegram.org/bots/api>), with the fake LLM provider
//! of `common` behind the real gateway.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_runtime::channels::telegram::{self, Timing};
use agent_runtime::channels::ChannelContext;
use agent_runtime::config::channels::TelegramConfig;
use agent_runtime::health::Status;
use agent_runtime::secret::Secret;
use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{openai_reply, Stub, TestApp, TEST_KEY};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The token the fake accepts.
const BOT_TOKEN: &str = "123456:AAH-telegram-SECRET-token";
/// The secret part of [`BOT_TOKEN`], which must never show up anywhere.
const TOKEN_SECRET: &str = "telegram-SECRET-token";
const CONFLICT: &str = "conflict: another poller is using this bot token (HTTP 409)";
const CONFLICT_BODY: &str = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";
/// A bound on every wait of the tests.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The fake Bot API.

/// One request the fake received.
#[derive(Debug, Clone)]
struct Req {
    at: Instant,
    method: String,
    body: Value,
}

#[derive(Default)]
struct FakeState {
    /// Updates not yet confirmed by an `offset` past them.
    updates: Vec<Value>,
    calls: Vec<Req>,
    /// Answers given (in order) before the normal behaviour, per method.
    scripted: HashMap<String, VecDeque<(u16, Value)>>,
    /// An answer given to every call of a method while set.
    sticky: HashMap<String, (u16, Value)>,
    next_message_id: i64,
}

struct FakeTelegram {
    addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
    task: JoinHandle<()>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn api_error(code: u16, description: &str) -> Value {
    json!({"ok": false, "error_code": code, "description": description})
}

impl FakeTelegram {
    async fn start() -> Self {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let shared = state.clone();
        let handler = move |uri: Uri, body: Bytes| {
            let state = shared.clone();
            async move { Self::serve(&state, uri.path(), &body).await }
        };
        let router = axum::Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, state, task }
    }

    async fn serve(state: &Mutex<FakeState>, path: &str, body: &[u8]) -> Response {
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let Some((token, method)) = path
            .strip_prefix("/bot")
            .and_then(|rest| rest.rsplit_once('/'))
        else {
            return reply(404, api_error(404, "Not Found"));
        };
        let method = method.to_owned();
        {
            let mut st = state.lock().unwrap();
            st.calls.push(Req {
                at: Instant::now(),
                method: method.clone(),
                body: body.clone(),
            });
            if token != BOT_TOKEN {
                return reply(401, api_error(401, "Unauthorized"));
            }
            if let Some((status, answer)) =
                st.scripted.get_mut(&method).and_then(VecDeque::pop_front)
            {
                return reply(status, answer);
            }
            if let Some((status, answer)) = st.sticky.get(&method).cloned() {
                return reply(status, answer);
            }
        }
        match method.as_str() {
            "getMe" => reply(
                200,
                json!({"ok": true, "result": {"id": 123456, "is_bot": true, "first_name": "Test", "username": "test_bot"}}),
            ),
            "getUpdates" => {
                let offset = body["offset"].as_i64().unwrap_or(0);
                // A short long poll: up to ~100 ms for something to arrive.
                for _ in 0..10 {
                    let pending: Vec<Value> = {
                        let mut st = state.lock().unwrap();
                        st.updates
                            .retain(|u| u["update_id"].as_i64().unwrap() >= offset);
                        st.updates.clone()
                    };
                    if !pending.is_empty() {
                        return reply(200, json!({"ok": true, "result": pending}));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                reply(200, json!({"ok": true, "result": []}))
            }
            "sendMessage" => {
                let id = {
                    let mut st = state.lock().unwrap();
                    st.next_message_id += 1;
                    st.next_message_id
                };
                reply(
                    200,
                    json!({"ok": true, "result": {"message_id": id, "date": 0,
                        "chat": {"id": body["chat_id"], "type": "private"}, "text": body["text"]}}),
                )
            }
            _ => reply(404, api_error(404, "Not Found: method not found")),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    fn push(&self, update: Value) {
        self.state.lock().unwrap().updates.push(update);
    }

    /// A text message from user `user` (`username`) in chat `chat`.
    fn push_text(&self, update_id: i64, user: i64, username: &str, chat: i64, text: &str) {
        self.push(json!({"update_id": update_id, "message": {
            "message_id": update_id * 10, "date": 1_700_000_000,
            "from": {"id": user, "is_bot": false, "first_name": "U", "username": username},
            "chat": {"id": chat, "type": if chat < 0 { "group" } else { "private" }},
            "text": text}}));
    }

    fn script(&self, method: &str, status: u16, body: Value) {
        self.state
            .lock()
            .unwrap()
            .scripted
            .entry(method.to_owned())
            .or_default()
            .push_back((status, body));
    }

    fn set_sticky(&self, method: &str, answer: Option<(u16, Value)>) {
        let mut st = self.state.lock().unwrap();
        match answer {
            Some(a) => st.sticky.insert(method.to_owned(), a),
            None => st.sticky.remove(method),
        };
    }

    fn calls(&self, method: &str) -> Vec<Req> {
        let st = self.state.lock().unwrap();
        st.calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    fn all_calls(&self) -> Vec<Req> {
        self.state.lock().unwrap().calls.clone()
    }

    /// `(chat_id, text)` of every `sendMessage`, in order.
    fn sent(&self) -> Vec<(i64, String)> {
        self.calls("sendMessage")
            .iter()
            .map(|c| {
                (
                    c.body["chat_id"].as_i64().unwrap(),
                    c.body["text"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Whether a `getUpdates` asked for `offset`.
    fn polled_with_offset(&self, offset: i64) -> bool {
        self.calls("getUpdates")
            .iter()
            .any(|c| c.body["offset"].as_i64() == Some(offset))
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn telegram_config(token: &str, allowed: &[&str], base: &str) -> TelegramConfig {
    TelegramConfig {
        bot_token: Secret::new(token),
        allowed_users: allowed.iter().map(|s| (*s).to_owned()).collect(),
        api_base_url: Some(base.to_owned()),
    }
}

/// Polls `cond` every 10 ms until it holds; panics after [`WAIT`].
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

/// Like [`wait_for`] with an async condition.
async fn wait_for_async<F: Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let waited = tokio::time::timeout(WAIT, async {
        while !cond().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

/// The `/health` body, checked to be free of the token.
async fn health(t: &TestApp) -> Value {
    let (status, body) = t.get("/health", None).await;
    assert_eq!(status, 200);
    let text = body.to_string();
    assert!(
        !text.contains(TOKEN_SECRET) && !text.contains(TEST_KEY),
        "a secret in /health: {text}"
    );
    body
}

/// The `channel:telegram` component of `/health`.
async fn component(t: &TestApp) -> Value {
    health(t).await["runtime"]["components"]["channel:telegram"].clone()
}

async fn wait_status(t: &TestApp, status: &str) -> Value {
    let mut last = Value::Null;
    let waited = tokio::time::timeout(WAIT, async {
        loop {
            last = component(t).await;
            if last["status"] == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "never {status}; last {last}");
    last
}

/// Test timings: short, so the tests run fast, but distinct so waits can be told apart.
fn short_timing() -> Timing {
    Timing {
        conflict_min: Duration::from_millis(700),
        unauthorized: Duration::from_millis(400),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(50),
    }
}

/// A client run by the test itself (with `timing`) on the gateway `t`, which has no Telegram
/// channel of its own.
struct Client {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Client {
    fn spawn(t: &TestApp, config: TelegramConfig, timing: Timing) -> Self {
        let state = t.app().state().clone();
        state
            .health
            .register(&ChannelContext::component("telegram"), Status::Starting);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(telegram::run_with(
            config,
            ChannelContext::new(state),
            cancel.clone(),
            timing,
        ));
        Self { cancel, task }
    }

    /// Cancels the client and checks that it ends promptly.
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("the client ends promptly when cancelled")
            .unwrap();
    }
}

/// A gateway whose own Telegram client (production timing) talks to `fake`.
async fn gateway_with_channel(stub: &Stub, fake: &FakeTelegram, allowed: &[&str]) -> TestApp {
    let config = telegram_config(BOT_TOKEN, allowed, &fake.url());
    TestApp::with("openai", stub, move |c| c.channels.telegram = Some(config)).await
}

/// Asserts consecutive calls are at least `min` apart (minus a little scheduling slack).
fn assert_gaps_at_least(calls: &[Req], min: Duration) {
    let slack = Duration::from_millis(15);
    for pair in calls.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap + slack >= min, "calls only {gap:?} apart (min {min:?})");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn production_timing_matches_the_spec() {
    let t = Timing::default();
    assert!(t.conflict_min >= Duration::from_secs(35));
    assert!(t.unauthorized >= Duration::from_secs(60));
    assert_eq!(t.backoff_min, Duration::from_secs(2));
    assert_eq!(t.backoff_max, Duration::from_secs(60));
}

#[tokio::test]
async fn allowed_user_is_answered_in_its_chat() {
    let stub = Stub::fixed(200, openai_reply("hello from the model")).await;
    let fake = FakeTelegram::start().await;
    let mut t = gateway_with_channel(&stub, &fake, &["@Alice"]).await;

    wait_status(&t, "ok").await;
    fake.push_text(100, 1001, "alice", -100_123, "hi bot");
    wait_for("a reply", || !fake.sent().is_empty()).await;

    assert_eq!(fake.sent(), [(-100_123, "hello from the model".to_owned())]);
    let calls = stub.calls();
    assert_eq!(calls.len(), 1);
    let msgs = calls[0].body["messages"].as_array().unwrap();
    assert_eq!(
        msgs.last().unwrap(),
        &json!({"role": "user", "content": "hi bot"})
    );

    // The wire: getMe first, then one poll that does not wait (it proves the client is
    // listening at once), then long polls, for messages only.
    let all = fake.all_calls();
    assert_eq!(all[0].method, "getMe");
    let polls = fake.calls("getUpdates");
    assert_eq!(polls[0].body["timeout"], 0);
    assert!(
        polls[1..].iter().all(|p| p.body["timeout"] == 30),
        "{polls:?}"
    );
    assert!(polls
        .iter()
        .all(|p| p.body["allowed_updates"] == json!(["message"])));
    wait_for("the update confirmed", || fake.polled_with_offset(101)).await;

    let c = component(&t).await;
    assert_eq!(c["status"], "ok");
    assert_eq!(c["restart_count"], 0);
    assert!(tokio::time::timeout(WAIT, t.shutdown()).await.unwrap());
}

#[tokio::test]
async fn unlisted_sender_is_ignored_but_consumed() {
    let stub = Stub::fixed(200, openai_reply("for bob")).await;
    let fake = FakeTelegram::start().await;
    let t = gateway_with_channel(&stub, &fake, &["42"]).await;

    fake.push_text(5, 99, "mallory", 9900, "from mallory");
    // A message without text from the allowed user: ignored too.
    fake.push(
        json!({"update_id": 6, "message": {"message_id": 60, "date": 0,
        "from": {"id": 42, "is_bot": false, "first_name": "Bob", "username": "bob"},
        "chat": {"id": 4200, "type": "private"}, "sticker": {"file_id": "x"}}}),
    );
    fake.push_text(7, 42, "bob", 4200, "from bob");

    wait_for("all three consumed", || fake.polled_with_offset(8)).await;
    assert_eq!(fake.sent(), [(4200, "for bob".to_owned())]);
    let calls = stub.calls();
    assert_eq!(calls.len(), 1, "only bob's message reaches the model");
    assert!(calls[0].body.to_string().contains("from bob"));
    assert!(!calls[0].body.to_string().contains("from mallory"));

    // Nobody at all with an empty list.
    let stub2 = Stub::fixed(200, openai_reply("never")).await;
    let fake2 = FakeTelegram::start().await;
    let _t2 = gateway_with_channel(&stub2, &fake2, &[]).await;
    fake2.push_text(1, 42, "bob", 4200, "hello");
    wait_for("consumed", || fake2.polled_with_offset(2)).await;
    assert!(fake2.sent().is_empty());
    assert!(stub2.calls().is_empty());
    drop(t);
}

#[tokio::test]
async fn long_reply_is_split_into_ordered_chunks() {
    let long = "lorem ipsum ".repeat(700); // 8400 characters
    let stub = Stub::fixed(200, openai_reply(&long)).await;
    let fake = FakeTelegram::start().await;
    let _t = gateway_with_channel(&stub, &fake, &["*"]).await;

    fake.push_text(1, 7, "carol", 77, "tell me a lot");
    wait_for("three chunks", || fake.sent().len() >= 3).await;
    wait_for("the update confirmed", || fake.polled_with_offset(2)).await;
    let sent = fake.sent();
    assert_eq!(
        sent.len(),
        3,
        "{:?}",
        sent.iter().map(|s| s.1.len()).collect::<Vec<_>>()
    );
    assert!(sent.iter().all(|(chat, _)| *chat == 77));
    assert!(sent.iter().all(|(_, text)| text.chars().count() <= 4096));
    let joined: String = sent.iter().map(|(_, text)| text.as_str()).collect();
    assert_eq!(joined, long);
}

#[tokio::test]
async fn offset_advances_only_after_the_update_was_handled() {
    let stub = Stub::start("127.0.0.1:0", Duration::from_millis(600), |_| {
        (200, openai_reply("slow answer"))
    })
    .await;
    let fake = FakeTelegram::start().await;
    let t = gateway_with_channel(&stub, &fake, &["*"]).await;
    wait_status(&t, "ok").await;
    assert!(fake
        .calls("getUpdates")
        .iter()
        .all(|c| c.body.get("offset").is_none()));

    fake.push_text(7, 1, "dave", 11, "question");
    wait_for("the turn started", || !stub.calls().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The turn is still running: nothing sent, the update not confirmed.
    assert!(fake.sent().is_empty());
    assert!(!fake.polled_with_offset(8));

    wait_for("the reply", || !fake.sent().is_empty()).await;
    wait_for("the update confirmed", || fake.polled_with_offset(8)).await;
    let send = fake.calls("sendMessage")[0].at;
    let confirm = fake
        .calls("getUpdates")
        .into_iter()
        .find(|c| c.body["offset"] == 8)
        .unwrap()
        .at;
    assert!(confirm >= send, "confirmed before the reply was sent");
    assert_eq!(stub.calls().len(), 1, "the update was handled once");
}

#[tokio::test]
async fn conflict_is_an_error_and_waits_the_minimum() {
    let stub = Stub::fixed(200, openai_reply("hi")).await;
    let fake = FakeTelegram::start().await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    fake.set_sticky("getUpdates", Some((409, api_error(409, CONFLICT_BODY))));
    let timing = short_timing();
    let client = Client::spawn(&t, telegram_config(BOT_TOKEN, &["*"], &fake.url()), timing);

    wait_for("two polls", || fake.calls("getUpdates").len() >= 2).await;
    let c = component(&t).await;
    assert_eq!(c["status"], "error");
    assert_eq!(c["last_error"], CONFLICT);
    assert!(c["restart_count"].as_u64().unwrap() >= 1, "{c}");
    let polls = fake.calls("getUpdates");
    assert_gaps_at_least(&polls, timing.conflict_min);
    let restarts = component(&t).await["restart_count"].as_u64().unwrap();

    // The other poller went away: back to ok.
    fake.set_sticky("getUpdates", None);
    let c = wait_status(&t, "ok").await;
    assert!(c["restart_count"].as_u64().unwrap() >= restarts);
    assert_gaps_at_least(&fake.calls("getUpdates")[..3], timing.conflict_min);
    client.stop().await;
}

#[tokio::test]
async fn bad_token_is_an_error_without_a_tight_loop() {
    let stub = Stub::fixed(200, openai_reply("hi")).await;
    let fake = FakeTelegram::start().await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    let timing = short_timing();
    let wrong = "654321:AAH-telegram-SECRET-token-but-wrong";
    let client = Client::spawn(&t, telegram_config(wrong, &["*"], &fake.url()), timing);

    let c = wait_status(&t, "error").await;
    assert_eq!(c["last_error"], "unauthorized: bad bot token");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let calls = fake.all_calls();
    assert!(
        calls.iter().all(|c| c.method == "getMe"),
        "polled with a bad token"
    );
    // 1 s at one attempt per 400 ms: 2 to 4 attempts, never a tight loop.
    assert!(
        (2..=4).contains(&calls.len()),
        "{} getMe calls",
        calls.len()
    );
    assert_gaps_at_least(&calls, timing.unauthorized);
    let c = component(&t).await;
    assert_eq!(c["status"], "error");
    assert!(c["restart_count"].as_u64().unwrap() >= 2);
    client.stop().await;

    // With the production wait, a single attempt, and cancelling interrupts the wait.
    let fake = FakeTelegram::start().await;
    let client = Client::spawn(
        &t,
        telegram_config(wrong, &["*"], &fake.url()),
        Timing::default(),
    );
    wait_for("the first getMe", || !fake.all_calls().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.all_calls().len(), 1);
    client.stop().await;
}

#[tokio::test]
async fn bad_token_on_get_me_404_is_unauthorized() {
    let stub = Stub::fixed(200, openai_reply("hi")).await;
    let fake = FakeTelegram::start().await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    fake.script("getMe", 404, api_error(404, "Not Found"));
    let client = Client::spawn(
        &t,
        telegram_config(BOT_TOKEN, &["*"], &fake.url()),
        short_timing(),
    );
    let c = wait_status(&t, "error").await;
    assert_eq!(c["last_error"], "unauthorized: bad bot token");
    // The next check (after the wait) succeeds.
    let c = wait_status(&t, "ok").await;
    assert_eq!(c["restart_count"], 1);
    client.stop().await;
}

#[tokio::test]
async fn rate_limit_retry_after_is_honoured() {
    let stub = Stub::fixed(200, openai_reply("hi")).await;
    let fake = FakeTelegram::start().await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    fake.script(
        "getUpdates",
        429,
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1",
               "parameters": {"retry_after": 1}}),
    );
    let client = Client::spawn(
        &t,
        telegram_config(BOT_TOKEN, &["*"], &fake.url()),
        short_timing(),
    );

    let c = wait_status(&t, "error").await;
    assert!(c["last_error"].as_str().unwrap().contains("429"), "{c}");
    wait_for("a second poll", || fake.calls("getUpdates").len() >= 2).await;
    let polls = fake.calls("getUpdates");
    let gap = polls[1].at.duration_since(polls[0].at);
    assert!(gap >= Duration::from_millis(990), "retried after {gap:?}");
    assert!(gap < Duration::from_secs(3), "retried after {gap:?}");
    wait_status(&t, "ok").await;
    client.stop().await;
}

#[tokio::test]
async fn server_errors_back_off_and_recover() {
    let stub = Stub::fixed(200, openai_reply("back again")).await;
    let fake = FakeTelegram::start().await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    fake.script("getUpdates", 502, json!("<html>502 Bad Gateway</html>"));
    fake.script("getUpdates", 502, json!("<html>502 Bad Gateway</html>"));
    fake.script("getUpdates", 500, api_error(500, "Internal Server Error"));
    let timing = short_timing();
    let client = Client::spawn(&t, telegram_config(BOT_TOKEN, &["*"], &fake.url()), timing);

    let c = wait_status(&t, "ok").await;
    assert_eq!(c["restart_count"], 3);
    assert_eq!(
        c["last_error"],
        "Telegram API error 500: Internal Server Error"
    );
    assert_gaps_at_least(&fake.calls("getUpdates")[..4], timing.backoff_min);

    // And it works after recovering.
    fake.push_text(1, 5, "erin", 55, "still there?");
    wait_for("a reply", || !fake.sent().is_empty()).await;
    assert_eq!(fake.sent(), [(55, "back again".to_owned())]);
    client.stop().await;
}

#[tokio::test]
async fn network_errors_never_leak_the_token() {
    let stub = Stub::fixed(200, openai_reply("hi")).await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{closed}");
    let client = Client::spawn(
        &t,
        telegram_config(BOT_TOKEN, &["*"], &base),
        short_timing(),
    );

    wait_for_async("a few failed attempts", || async {
        component(&t).await["restart_count"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    let c = component(&t).await;
    assert_eq!(c["status"], "error");
    let error = c["last_error"].as_str().unwrap();
    assert!(error.starts_with("network error"), "{error}");
    assert!(
        !error.contains(TOKEN_SECRET) && !error.contains("/bot"),
        "{error}"
    );
    let metrics = t.metrics().await;
    assert!(!metrics.contains(TOKEN_SECRET));
    client.stop().await;
}

#[tokio::test]
async fn failed_turn_and_chat_flood_get_short_notes() {
    let stub = Stub::fixed(
        500,
        json!({"error": {"message": "internal provider detail"}}),
    )
    .await;
    let fake = FakeTelegram::start().await;
    let _t = gateway_with_channel(&stub, &fake, &["*"]).await;
    fake.push_text(1, 5, "frank", 66, "hello?");
    wait_for("a reply", || !fake.sent().is_empty()).await;
    let (chat, text) = fake.sent()[0].clone();
    assert_eq!(chat, 66);
    assert!(text.starts_with("Sorry"), "{text}");
    assert!(!text.contains("500") && !text.contains("internal provider detail"));

    // More than 20 messages a minute from one chat: the extra one gets the slow-down note.
    let stub = Stub::fixed(200, openai_reply("ok")).await;
    let fake = FakeTelegram::start().await;
    let _t = gateway_with_channel(&stub, &fake, &["*"]).await;
    for i in 1..=21 {
        fake.push_text(i, 5, "frank", 66, &format!("message {i}"));
    }
    wait_for("21 replies", || fake.sent().len() >= 21).await;
    let sent = fake.sent();
    assert_eq!(stub.calls().len(), 20);
    assert!(sent[..20].iter().all(|(_, text)| text == "ok"));
    assert_eq!(sent[20], (66, "Too many messages, slow down.".to_owned()));
}
