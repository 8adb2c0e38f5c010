//! provider-stub: a stand-in for the LLM providers an agent calls, for the
//! end-to-end tests. It speaks the wire formats of DESIGN.md §1 — OpenAI chat
//! completions, Anthropic Messages, Gemini `generateContent`, Ollama
//! `/api/chat` — and answers every chat with `echo: <last user message>`.
//!
//! - Listens on `0.0.0.0:$PORT` (default 8080); SIGTERM/SIGINT stop it.
//! - Keyed formats need a non-empty key (`Authorization: Bearer …`,
//!   `x-api-key`, `x-goog-api-key` or `?key=`), else 401; Ollama needs none.
//! - `GET /health` → `ok`; `GET /requests` → `{"count": n, "requests": [...]}`
//!   (the last 100 chat requests: format, path, model, whether a key came,
//!   the last user message), for assertions.
//! - A last user message `!status <code>` answers that HTTP status with an
//!   error body (to test the agent's error path); `!sleep <ms>` waits first;
//!   `!system` (OpenAI format) answers `system: <the system prompt>`, so a
//!   test sees the persona the agent sent.
//! - It also serves a fake Telegram Bot API
//!   ([`zcaas_tests::fake_telegram`]) for the channel tests.
//! - With `STUB_BANNER=1` it prints a random pairing-code banner at start, in
//!   the agent gateway's two forms, so the Docker layer's code-from-logs
//!   logic can be tested without an agent image.
//!
//! Built static like everything in the workspace, so the tests can copy it
//! into a `FROM scratch` image.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many chat requests `/requests` remembers.
const REMEMBERED: usize = 100;

#[derive(Default)]
struct Seen {
    count: u64,
    recent: VecDeque<Value>,
}

type Shared = Arc<Mutex<Seen>>;

#[derive(Clone, Copy, PartialEq)]
enum Format {
    OpenAi,
    Anthropic,
    Gemini,
    Ollama,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Anthropic => "anthropic",
            Format::Gemini => "gemini",
            Format::Ollama => "ollama",
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse().map_err(|e| anyhow::anyhow!("PORT={p:?}: {e}"))?,
        Err(_) => 8080,
    };
    let state: Shared = Arc::default();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/requests", get(requests))
        .route("/v1/chat/completions", post(openai))
        .route("/chat/completions", post(openai))
        .route("/v1/messages", post(anthropic))
        .route("/v1beta/models/{model_action}", post(gemini))
        .route("/api/chat", post(ollama))
        .with_state(state)
        .merge(zcaas_tests::fake_telegram::router());
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    println!("provider-stub listening on {}", listener.local_addr()?);
    if std::env::var("STUB_BANNER").is_ok_and(|v| v == "1") {
        // Six decimal digits from a v4 UUID's random bits (bias irrelevant here).
        let code = uuid::Uuid::new_v4().as_u128() % 1_000_000;
        println!("     ┌──────────────┐");
        println!("     │  {code:06}  │");
        println!("     └──────────────┘");
        println!("     Send: POST /pair with header X-Pairing-Code: {code:06}");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(zcaas_tests::shutdown_signal())
        .await?;
    Ok(())
}

async fn requests(State(seen): State<Shared>) -> Json<Value> {
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    Json(json!({ "count": seen.count, "requests": seen.recent }))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn bearer(headers: &HeaderMap) -> bool {
    header(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| !t.trim().is_empty())
}

/// The text of an OpenAI/Anthropic/Ollama `content`: a string, or the text
/// parts of a list of blocks.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// The last `role == "user"` entry of `messages`.
fn last_user(messages: Option<&Value>) -> String {
    messages
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default()
}

/// The text of the first `system` message (OpenAI format).
fn system_prompt(messages: Option<&Value>) -> String {
    messages
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("system"))
        })
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default()
}

fn gemini_last_user(body: &Value) -> String {
    body.get("contents")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .rev()
                .find(|c| c.get("role").and_then(Value::as_str).unwrap_or("user") == "user")
        })
        .and_then(|c| c.get("parts"))
        .map(content_text)
        .unwrap_or_default()
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Records the request and applies `!sleep` / `!status`; `Err` is the
/// response to send instead of an echo.
async fn handle(
    seen: &Shared,
    format: Format,
    path: &str,
    model: &str,
    keyed: bool,
    message: &str,
) -> Result<(), Response> {
    {
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.count += 1;
        if seen.recent.len() == REMEMBERED {
            seen.recent.pop_front();
        }
        seen.recent.push_back(json!({
            "format": format.name(), "path": path, "model": model,
            "key_present": keyed, "message": message,
        }));
    }
    println!("{} {path} model={model} key={keyed}", format.name());
    if let Some(ms) = message
        .strip_prefix("!sleep ")
        .and_then(|m| m.trim().parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if format != Format::Ollama && !keyed {
        return Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "missing API key"}})),
        )
            .into_response());
    }
    if let Some(code) = message
        .strip_prefix("!status ")
        .and_then(|c| c.trim().parse::<u16>().ok())
    {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err((
            status,
            Json(json!({"error": {"message": format!("injected {code}")}})),
        )
            .into_response());
    }
    Ok(())
}

async fn openai(
    State(seen): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("stub-model")
        .to_owned();
    let message = last_user(body.get("messages"));
    if let Err(r) = handle(
        &seen,
        Format::OpenAi,
        "chat/completions",
        &model,
        bearer(&headers),
        &message,
    )
    .await
    {
        return r;
    }
    let reply = if message.trim() == "!system" {
        format!("system: {}", system_prompt(body.get("messages")))
    } else {
        format!("echo: {message}")
    };
    let (p, c) = (words(&message), words(&reply));
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let chunk = json!({"id": "chatcmpl-stub", "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": reply}, "finish_reason": "stop"}]});
        let sse = format!("data: {chunk}\n\ndata: [DONE]\n\n");
        return ([("content-type", "text/event-stream")], sse).into_response();
    }
    Json(json!({
        "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
    }))
    .into_response()
}

async fn anthropic(
    State(seen): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("stub-model")
        .to_owned();
    let message = last_user(body.get("messages"));
    let keyed = header(&headers, "x-api-key").is_some() || bearer(&headers);
    if let Err(r) = handle(
        &seen,
        Format::Anthropic,
        "v1/messages",
        &model,
        keyed,
        &message,
    )
    .await
    {
        return r;
    }
    let reply = format!("echo: {message}");
    Json(json!({
        "id": "msg_stub", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": reply}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": words(&message), "output_tokens": words(&reply)},
    }))
    .into_response()
}

async fn gemini(
    State(seen): State<Shared>,
    Path(model_action): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let Some(model) = model_action.strip_suffix(":generateContent") else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"message": "unknown action"}})),
        )
            .into_response();
    };
    let message = gemini_last_user(&body);
    let keyed = header(&headers, "x-goog-api-key").is_some()
        || query.get("key").is_some_and(|k| !k.is_empty())
        || bearer(&headers);
    if let Err(r) = handle(
        &seen,
        Format::Gemini,
        "generateContent",
        model,
        keyed,
        &message,
    )
    .await
    {
        return r;
    }
    let reply = format!("echo: {message}");
    let (p, c) = (words(&message), words(&reply));
    Json(json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": reply}]},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": p, "candidatesTokenCount": c, "totalTokenCount": p + c},
        "modelVersion": model,
    }))
    .into_response()
}

async fn ollama(
    State(seen): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("stub-model")
        .to_owned();
    let message = last_user(body.get("messages"));
    let keyed = bearer(&headers);
    if let Err(r) = handle(&seen, Format::Ollama, "api/chat", &model, keyed, &message).await {
        return r;
    }
    let reply = format!("echo: {message}");
    let done = json!({
        "model": model, "created_at": "1970-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": reply},
        "done": true, "done_reason": "stop",
        "prompt_eval_count": words(&message), "eval_count": words(&reply),
    });
    // Ollama streams NDJSON unless the request says `"stream": false`.
    if body.get("stream").and_then(Value::as_bool) == Some(false) {
        return Json(done).into_response();
    }
    let chunk = json!({"model": model, "created_at": "1970-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": reply}, "done": false});
    let mut last = done;
    last["message"]["content"] = Value::String(String::new());
    (
        [("content-type", "application/x-ndjson")],
        format!("{chunk}\n{last}\n"),
    )
        .into_response()
}
