//! A fake Telegram Bot API (<https://core.telegram.org/bots/api>) served by
//! the provider stand-in, so an agent container's Telegram client can be
//! driven end to end on the agents' network without calling Telegram.
//!
//! Wire format, per bot token (`/bot<token>/<method>`, JSON bodies, answers
//! `{"ok":true,"result":…}`): `getMe`; `getUpdates` (`offset` drops the
//! updates before it; long-polls up to `timeout` seconds, at most 25, for
//! one to arrive); `sendMessage` (`chat_id`, `text`, recorded).
//!
//! Test controls (not Telegram's): `POST /_telegram/<token>/updates` with a
//! `message` object queues an update (its `update_id` assigned here) and
//! answers it; `GET /_telegram/<token>/sent` lists what the bot sent, and
//! `GET /_telegram/<token>/polls` the `offset` of every `getUpdates`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Default)]
struct Bot {
    next_update: i64,
    queued: Vec<Value>,
    sent: Vec<Value>,
    polls: Vec<Value>,
}

type Bots = Arc<Mutex<HashMap<String, Bot>>>;

/// The fake's routes, to merge into the stand-in's router.
pub fn router() -> Router {
    Router::new()
        .route("/{bot}/{method}", post(method))
        .route("/_telegram/{token}/updates", post(enqueue))
        .route("/_telegram/{token}/sent", get(sent))
        .route("/_telegram/{token}/polls", get(polls))
        .with_state(Bots::default())
}

fn with_bot<T>(bots: &Bots, token: &str, f: impl FnOnce(&mut Bot) -> T) -> T {
    let mut bots = bots.lock().unwrap_or_else(|p| p.into_inner());
    f(bots.entry(token.to_owned()).or_default())
}

fn ok(result: Value) -> (StatusCode, Json<Value>) {
    (StatusCode::OK, Json(json!({"ok": true, "result": result})))
}

async fn method(
    State(bots): State<Bots>,
    Path((bot, name)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> (StatusCode, Json<Value>) {
    let Some(token) = bot.strip_prefix("bot").filter(|t| !t.is_empty()) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"ok": false, "error_code": 404, "description": "Not Found"})),
        );
    };
    let body = body.map(|Json(v)| v).unwrap_or_else(|| json!({}));
    match name.as_str() {
        "getMe" => {
            ok(json!({"id": 4242, "is_bot": true, "first_name": "Fake", "username": "fake_bot"}))
        }
        "getUpdates" => {
            let offset = body["offset"].as_i64().unwrap_or(0);
            let wait = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0).min(25));
            with_bot(&bots, token, |b| b.polls.push(json!(offset)));
            let deadline = Instant::now() + wait;
            loop {
                let ready = with_bot(&bots, token, |b| {
                    b.queued
                        .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
                    b.queued.clone()
                });
                if !ready.is_empty() || Instant::now() >= deadline {
                    return ok(json!(ready));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        "sendMessage" => {
            let n = with_bot(&bots, token, |b| {
                b.sent.push(body.clone());
                b.sent.len()
            });
            ok(json!({"message_id": n, "chat": {"id": body["chat_id"]}, "text": body["text"]}))
        }
        _ => (
            StatusCode::NOT_FOUND,
            Json(
                json!({"ok": false, "error_code": 404, "description": "Not Found: method not found"}),
            ),
        ),
    }
}

async fn enqueue(
    State(bots): State<Bots>,
    Path(token): Path<String>,
    Json(message): Json<Value>,
) -> Json<Value> {
    Json(with_bot(&bots, &token, |b| {
        b.next_update += 1;
        let update = json!({"update_id": b.next_update, "message": message});
        b.queued.push(update.clone());
        update
    }))
}

async fn sent(State(bots): State<Bots>, Path(token): Path<String>) -> Json<Value> {
    Json(json!(with_bot(&bots, &token, |b| b.sent.clone())))
}

async fn polls(State(bots): State<Bots>, Path(token): Path<String>) -> Json<Value> {
    Json(json!(with_bot(&bots, &token, |b| b.polls.clone())))
}
