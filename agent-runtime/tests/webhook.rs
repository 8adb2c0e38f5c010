//! HTTP tests of `POST /webhook` against the real gateway: check order, body limit,
//! idempotency, timeouts, persona and memory.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use agent_runtime::memory::{MemoryBackend, MAX_TURN_BYTES, TRUNCATION_MARKER};
use common::{openai_reply, Stub, TestApp, TEST_KEY};
use serde_json::json;

const UNAUTHORIZED: &str =
    "Unauthorized — pair first via POST /pair, then send Authorization: Bearer <token>";
const INVALID_JSON: &str = "Invalid JSON body. Expected: {\"message\": \"...\"}";

#[tokio::test]
async fn round_trip_returns_response_and_model() {
    let stub = Stub::fixed(200, openai_reply("Hello from the model")).await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    let token = t.pair().await;
    let (status, body) = t.webhook(&token, "Hi there").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"response": "Hello from the model", "model": "test-model"})
    );
    let calls = stub.calls();
    assert_eq!(calls.len(), 1);
    let msgs = calls[0].body["messages"].as_array().unwrap();
    assert_eq!(
        msgs.last().unwrap(),
        &json!({"role": "user", "content": "Hi there"})
    );
    assert_eq!(
        t.get("/health", None).await.1["runtime"]["components"]["provider:openai"]["status"],
        "ok"
    );
}

#[tokio::test]
async fn check_order_rate_limit_then_bearer_then_json() {
    let stub = Stub::fixed(200, openai_reply("ok")).await;
    let t = TestApp::with("openai", &stub, |c| {
        c.gateway.webhook_rate_limit_per_minute = 4
    })
    .await;
    let token = t.pair().await;
    // Bearer before JSON: garbage without a token is a 401, not a 400.
    assert_eq!(
        t.webhook_raw(None, "not json", None).await,
        (401, json!({"error": UNAUTHORIZED}))
    );
    assert_eq!(t.webhook_raw(Some("zc_bad"), "{}", None).await.0, 401);
    // JSON after bearer.
    assert_eq!(
        t.webhook_raw(Some(&token), "not json", None).await,
        (400, json!({"error": INVALID_JSON}))
    );
    assert_eq!(
        t.webhook_raw(Some(&token), r#"{"msg":"x"}"#, None).await.0,
        400
    );
    // Four requests used the bucket: rate limit comes first, even with a good token and body.
    let (status, body) = t.webhook(&token, "hi").await;
    assert_eq!(status, 429, "{body}");
    assert!(body["retry_after"].as_u64().unwrap() >= 1);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .starts_with("Too many webhook requests"));
    let (status, _) = t.webhook_raw(None, "x", None).await;
    assert_eq!(status, 429, "rate limit precedes the bearer check");
    assert!(stub.calls().is_empty());
}

#[tokio::test]
async fn empty_or_non_string_message_is_a_400() {
    let stub = Stub::fixed(200, openai_reply("ok")).await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    let token = t.pair().await;
    for body in [
        r#"{"message":""}"#,
        r#"{"message":"  "}"#,
        r#"{"message":5}"#,
        "[]",
        "",
    ] {
        assert_eq!(
            t.webhook_raw(Some(&token), body, None).await,
            (400, json!({"error": INVALID_JSON})),
            "{body}"
        );
    }
    assert!(stub.calls().is_empty());
}

#[tokio::test]
async fn bodies_over_64_kib_are_413() {
    let stub = Stub::fixed(200, openai_reply("ok")).await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    let token = t.pair().await;
    let big = json!({"message": "x".repeat(64 * 1024)}).to_string();
    let (status, body) = t.webhook_raw(Some(&token), big.clone(), None).await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("65536"));
    // Chunked (no Content-Length): refused while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(8192)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let stream = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (status, _) = t.webhook_raw(Some(&token), stream, None).await;
    assert_eq!(status, 413);
    // Just under the limit is fine.
    let fits = json!({"message": "y".repeat(60 * 1024)}).to_string();
    assert_eq!(t.webhook_raw(Some(&token), fits, None).await.0, 200);
    assert_eq!(stub.calls().len(), 1);
}

#[tokio::test]
async fn idempotency_key_repeats_are_duplicates() {
    let stub = Stub::fixed(200, openai_reply("once")).await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    let token = t.pair().await;
    let body = json!({"message": "charge card"}).to_string();
    let (s1, b1) = t
        .webhook_raw(Some(&token), body.clone(), Some("key-1"))
        .await;
    assert_eq!((s1, b1["response"].as_str()), (200, Some("once")));
    let (s2, b2) = t
        .webhook_raw(Some(&token), body.clone(), Some("key-1"))
        .await;
    assert_eq!(s2, 200);
    assert_eq!(b2["status"], "duplicate");
    assert_eq!(b2["idempotent"], true);
    assert_eq!(stub.calls().len(), 1, "the provider is not called again");
    assert_eq!(
        t.webhook_raw(Some(&token), body, Some("key-2")).await.1["response"],
        "once"
    );
    assert_eq!(stub.calls().len(), 2);
}

#[tokio::test]
async fn provider_error_is_500_and_recorded_without_the_key() {
    let stub = Stub::fixed(
        401,
        json!({"error": {"message": format!("Incorrect API key provided: {TEST_KEY}")}}),
    )
    .await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    let token = t.pair().await;
    assert_eq!(
        t.webhook(&token, "hi").await,
        (500, json!({"error": "LLM request failed"}))
    );
    let health = t.get("/health", None).await.1;
    let p = &health["runtime"]["components"]["provider:openai"];
    assert_eq!(p["status"], "error");
    assert_eq!(p["last_error"], "provider answered HTTP 401");
    let metrics = t.metrics().await;
    assert!(metrics.contains(
        "zeroclaw_llm_requests_total{provider=\"openai\",model=\"test-model\",success=\"false\"} 1"
    ));
    assert!(metrics.contains("zeroclaw_errors_total{component=\"provider\"} 1"));
    assert!(!health.to_string().contains(TEST_KEY) && !metrics.contains(TEST_KEY));
}

#[tokio::test]
async fn provider_timeout_is_500_and_request_timeout_is_408() {
    let slow = Stub::start("127.0.0.1:0", Duration::from_secs(3), |_| {
        (200, openai_reply("late"))
    })
    .await;
    let t = TestApp::with("openai", &slow, |c| {
        c.provider.timeout = Duration::from_millis(300)
    })
    .await;
    let token = t.pair().await;
    let started = std::time::Instant::now();
    assert_eq!(
        t.webhook(&token, "hi").await,
        (500, json!({"error": "LLM request failed"}))
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let health = t.get("/health", None).await.1;
    let err = health["runtime"]["components"]["provider:openai"]["last_error"]
        .as_str()
        .unwrap();
    assert!(err.contains("timed out"), "{err}");
    assert!(t
        .metrics()
        .await
        .contains("zeroclaw_errors_total{component=\"provider\"} 1"));

    let t = TestApp::with("openai", &slow, |c| {
        c.gateway.request_timeout = Duration::from_millis(300);
        c.provider.timeout = Duration::from_secs(10);
    })
    .await;
    let token = t.pair().await;
    assert_eq!(
        t.webhook(&token, "hi").await,
        (408, json!({"error": "Request timed out"}))
    );
}

#[tokio::test]
async fn persona_files_become_the_system_prompt() {
    let stub = Stub::fixed(200, openai_reply("ok")).await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    let ws = t.workspace();
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("IDENTITY.md"), "Name: Clawd").unwrap();
    std::fs::write(ws.join("SOUL.md"), "Style: terse").unwrap();
    std::fs::write(ws.join("USER.md"), "User: Ada (UTC)").unwrap();
    std::fs::write(ws.join("TOOLS.md"), "No tools.").unwrap();
    let token = t.pair().await;
    assert_eq!(t.webhook(&token, "who are you?").await.0, 200);
    let system = stub.calls()[0].body["messages"][0].clone();
    assert_eq!(system["role"], "system");
    assert_eq!(
        system["content"],
        "## IDENTITY.md\n\nName: Clawd\n\n## SOUL.md\n\nStyle: terse\n\n## USER.md\n\nUser: Ada (UTC)\n\n## TOOLS.md\n\nNo tools."
    );
}

#[tokio::test]
async fn sqlite_memory_recalls_the_previous_exchange() {
    let stub = Stub::start("127.0.0.1:0", Duration::ZERO, |call| {
        let n = call.body["messages"].as_array().map_or(0, Vec::len);
        (200, openai_reply(&format!("answer with {n} messages")))
    })
    .await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    let token = t.pair().await;
    assert_eq!(
        t.webhook(&token, "my name is Ada").await.1["response"],
        "answer with 2 messages"
    );
    assert_eq!(
        t.webhook(&token, "what is my name?").await.1["response"],
        "answer with 4 messages"
    );
    let msgs = stub.calls()[1].body["messages"].clone();
    assert_eq!(
        msgs[1],
        json!({"role": "user", "content": "my name is Ada"})
    );
    assert_eq!(
        msgs[2],
        json!({"role": "assistant", "content": "answer with 2 messages"})
    );
    assert!(t.workspace().join("memory/brain.db").exists());
}

#[tokio::test]
async fn long_exchanges_are_answered_whole_but_stored_capped() {
    let answer = "A".repeat(100 * 1024);
    let question = "Q".repeat(60 * 1024);
    for backend in [MemoryBackend::Sqlite, MemoryBackend::Markdown] {
        let stub = Stub::fixed(200, openai_reply(&answer)).await;
        let t = TestApp::with("openai", &stub, |c| c.memory.backend = backend).await;
        let token = t.pair().await;
        let (status, body) = t.webhook(&token, &question).await;
        assert_eq!(status, 200);
        assert_eq!(body["response"].as_str().unwrap().len(), answer.len());
        let ws = t.workspace();
        let stored: Vec<String> = if backend == MemoryBackend::Sqlite {
            let db = rusqlite::Connection::open(ws.join("memory/brain.db")).unwrap();
            let mut stmt = db.prepare("SELECT content FROM turns ORDER BY id").unwrap();
            let rows = stmt.query_map([], |r| r.get(0)).unwrap();
            rows.collect::<Result<_, _>>().unwrap()
        } else {
            let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
            let log = std::fs::read_to_string(ws.join(format!("memory/{day}.md"))).unwrap();
            assert!(log.len() <= 2 * MAX_TURN_BYTES + 64, "{}", log.len());
            log.split("\n\n")
                .filter(|p| p.contains("**"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(stored.len(), 2, "{backend:?}");
        for turn in &stored {
            let text = turn.rsplit("** ").next().unwrap();
            assert!(text.len() <= MAX_TURN_BYTES, "{backend:?}: {}", text.len());
            assert!(text.ends_with(TRUNCATION_MARKER), "{backend:?}");
        }
    }
}

#[tokio::test]
async fn markdown_and_none_backends() {
    let stub = Stub::fixed(200, openai_reply("noted")).await;
    let t = TestApp::with("openai", &stub, |c| {
        c.memory.backend = MemoryBackend::Markdown
    })
    .await;
    let token = t.pair().await;
    t.webhook(&token, "remember the blue door").await;
    t.webhook(&token, "what door?").await;
    let ws = t.workspace();
    assert!(ws.join("MEMORY.md").exists());
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let log = std::fs::read_to_string(ws.join(format!("memory/{day}.md"))).unwrap();
    assert!(log.contains("**User:** remember the blue door") && log.contains("**Agent:** noted"));
    let system = stub.calls()[1].body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(system.contains("remember the blue door"), "{system}");
    assert!(!ws.join("memory/brain.db").exists());

    let stub = Stub::fixed(200, openai_reply("forgot")).await;
    let t = TestApp::with("openai", &stub, |c| c.memory.backend = MemoryBackend::None).await;
    let token = t.pair().await;
    t.webhook(&token, "one").await;
    t.webhook(&token, "two").await;
    assert_eq!(
        stub.calls()[1].body["messages"].as_array().unwrap().len(),
        2
    );
    assert!(!t.workspace().join("memory").exists());

    // auto_save = false: nothing is stored.
    let stub = Stub::fixed(200, openai_reply("x")).await;
    let t = TestApp::with("openai", &stub, |c| c.memory.auto_save = false).await;
    let token = t.pair().await;
    t.webhook(&token, "one").await;
    t.webhook(&token, "two").await;
    assert_eq!(
        stub.calls()[1].body["messages"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn active_sessions_counts_requests_in_flight() {
    let slow = Stub::start("127.0.0.1:0", Duration::from_millis(800), |_| {
        (200, openai_reply("z"))
    })
    .await;
    let t = TestApp::with("openai", &slow, |_| {}).await;
    let token = t.pair().await;
    let (base, http, tok) = (t.base.clone(), t.http.clone(), token.clone());
    let inflight = tokio::spawn(async move {
        http.post(format!("{base}/webhook"))
            .bearer_auth(tok)
            .json(&json!({"message": "slow"}))
            .send()
            .await
            .unwrap()
            .status()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(t.metrics().await.contains("zeroclaw_active_sessions 1"));
    assert_eq!(inflight.await.unwrap(), 200);
    assert!(t.metrics().await.contains("zeroclaw_active_sessions 0"));
}
