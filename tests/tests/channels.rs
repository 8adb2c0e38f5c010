//! Issue 12 (and issue 11's last item), end to end on the real engine: an
//! agent container of our runtime with a Telegram channel pointed at a fake
//! Bot API on the agents' network (the provider stand-in serves it:
//! `zcaas_tests::fake_telegram`) answers an allowed user's message with the
//! provider's reply through `sendMessage`, ignores a user who is not in
//! `allowedUsers`, answers again after a restart, and a second agent with
//! the same bot token is refused.
//!
//! Against our image only: the stock 0.6.9 runtime has no setting for the
//! Bot API's base URL (it would call api.telegram.org).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use zcaas_test_support::{assert_error, docker_inspect, TestApp, STUB_PORT};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The fake Bot API's test controls, reached from the host at the stand-in's
/// address on the test network.
struct FakeBotApi {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl FakeBotApi {
    fn of(env: &TestApp, token: &str) -> FakeBotApi {
        let stub = docker_inspect(&format!("{}-provider", env.prefix)).unwrap();
        let ip = stub["NetworkSettings"]["Networks"][&env.world().network]["IPAddress"]
            .as_str()
            .unwrap()
            .to_owned();
        FakeBotApi {
            http: reqwest::Client::new(),
            base: format!("http://{ip}:{STUB_PORT}/_telegram/{token}"),
            token: token.to_owned(),
        }
    }

    /// Queues a private-chat message from user `id` (`username`).
    async fn message_from(&self, id: i64, username: &str, text: &str) {
        let message = json!({
            "message_id": 1,
            "date": 0,
            "chat": {"id": id, "type": "private"},
            "from": {"id": id, "is_bot": false, "first_name": username, "username": username},
            "text": text,
        });
        let r = self
            .http
            .post(format!("{}/updates", self.base))
            .json(&message)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    async fn sent(&self) -> Vec<Value> {
        let r = self
            .http
            .get(format!("{}/sent", self.base))
            .send()
            .await
            .unwrap();
        r.json::<Vec<Value>>().await.unwrap()
    }

    /// Waits until the bot sent chat `chat` a message containing `text`.
    async fn wait_reply(&self, chat: i64, text: &str) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(m) = self.sent().await.into_iter().find(|m| {
                m["chat_id"] == json!(chat) && m["text"].as_str().unwrap_or("").contains(text)
            }) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "no reply containing {text:?} to chat {chat} (bot {}): {:?}",
                self.token,
                self.sent().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_channel_answers_allowed_users_through_the_bot_api() {
    let mut env = TestApp::in_world().await;
    let jwt = env.register("telly").await;
    // A token in Telegram's shape (`<bot id>:<secret>`), unique to the test.
    let token = format!("4242424242:AAE0fake-{}-not-a-real-token", env.prefix);
    let mut body = env.agent_body("Telly");
    body["channels"] = json!({"telegram": {
        "botToken": token,
        "allowedUsers": ["alice", "1002"],
        "apiBaseUrl": env.local_channel_api(),
    }});
    let agent = env.create_running_agent(&jwt, body).await;
    let id = agent["id"].as_str().unwrap().to_owned();
    let bot = FakeBotApi::of(&env, &token);

    // The agent's /health reports the channel listening.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (code, health) = env.health(&jwt, &id).await;
        assert_eq!(code, 200, "{health}");
        if health["runtime"]["components"]["channel:telegram"]["status"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "channel never ok: {health}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // An allowed user (by username) is answered with the provider's reply.
    bot.message_from(1001, "alice", "hello from telegram").await;
    bot.wait_reply(1001, "echo: hello from telegram").await;

    // A user not in allowedUsers is ignored; an allowed one (by id) sent
    // after them is answered, so the first was handled and dropped.
    bot.message_from(666, "mallory", "let me in").await;
    bot.message_from(1002, "bob", "bob by id").await;
    bot.wait_reply(1002, "echo: bob by id").await;
    assert!(
        bot.sent().await.iter().all(|m| m["chat_id"] != json!(666)),
        "mallory was answered"
    );

    // After a restart the channel answers again.
    let old = env.stored_token(&id).await;
    let (code, _) = env.restart(&jwt, &id).await;
    assert_eq!(code, 202);
    env.wait_repaired(&jwt, &id, &old, TIMEOUT).await;
    bot.message_from(1001, "alice", "after restart").await;
    bot.wait_reply(1001, "echo: after restart").await;

    // A second agent with the same bot token is refused: one token, one
    // poller (Telegram would answer both with 409 Conflict).
    let mut twin = env.agent_body("Telly Twin");
    twin["channels"] = json!({"telegram": {"botToken": token, "allowedUsers": ["*"]}});
    let (code, body) = env.create_agent(&jwt, twin).await;
    assert_error(
        code,
        &body,
        StatusCode::CONFLICT,
        Some("channels.telegram.botToken"),
    );
    assert!(
        !body.to_string().contains(&token),
        "the token echoed: {body}"
    );

    let (code, _) = env.delete_agent(&jwt, &id).await;
    assert_eq!(code, 204);
    env.shutdown().await;
}
