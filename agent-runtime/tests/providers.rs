//! Every provider family against an in-process server speaking its wire format: request path,
//! JSON shape and auth headers; answer parsing; errors and timeouts → 500, `/metrics`,
//! `/health`; the key never echoed.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_runtime::providers::MAX_REPLY_BYTES;
use axum::body::{Body, Bytes};
use common::{
    anthropic_reply, gemini_reply, ollama_reply, openai_reply, Call, Stub, TestApp, TEST_KEY,
};
use serde_json::{json, Value};

/// Pairs, sends "hello", returns the webhook answer and the one call the stub saw.
async fn exchange(provider: &str, stub: &Stub) -> ((u16, Value), Call) {
    let t = TestApp::with(provider, stub, |c| {
        c.provider.temperature = 0.4;
        std::fs::create_dir_all(c.paths.workspace.clone()).unwrap();
        std::fs::write(c.paths.workspace.join("IDENTITY.md"), "I am Claw.").unwrap();
    })
    .await;
    let token = t.pair().await;
    let answer = t.webhook(&token, "hello").await;
    let calls = stub.calls();
    assert_eq!(calls.len(), 1, "{provider}");
    (answer, calls[0].clone())
}

/// The failure path of one family: 500, recorded, no key anywhere.
async fn failure(provider: &str, ok_body: Value) {
    let failing = Stub::fixed(503, json!({"error": format!("overloaded; key={TEST_KEY}")})).await;
    let t = TestApp::with(provider, &failing, |_| {}).await;
    let token = t.pair().await;
    assert_eq!(
        t.webhook(&token, "x").await,
        (500, json!({"error": "LLM request failed"})),
        "{provider}"
    );
    let name = agent_runtime::providers::ProviderSpec::parse(provider)
        .unwrap()
        .name;
    let health = t.get("/health", None).await.1;
    let comp = &health["runtime"]["components"][format!("provider:{name}")];
    assert_eq!(comp["status"], "error", "{provider}: {health}");
    assert_eq!(comp["last_error"], "provider answered HTTP 503");
    let metrics = t.metrics().await;
    assert!(
        metrics.contains(&format!(
            "zeroclaw_llm_requests_total{{provider=\"{name}\",model=\"test-model\",success=\"false\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("zeroclaw_errors_total{component=\"provider\"} 1"));
    assert!(!health.to_string().contains(TEST_KEY) && !metrics.contains(TEST_KEY));

    // Malformed success body: also a 500.
    let garbled = Stub::fixed(200, json!({"unexpected": true})).await;
    let t = TestApp::with(provider, &garbled, |_| {}).await;
    let token = t.pair().await;
    assert_eq!(t.webhook(&token, "x").await.0, 500, "{provider}");

    // Oversized success body: a valid reply padded to 5 MiB is refused at the 1 MiB cap.
    let mut huge = ok_body.clone();
    huge["padding"] = json!(format!("{TEST_KEY}{}", "x".repeat(5 << 20)));
    let oversized = Stub::fixed(200, huge).await;
    let t = TestApp::with(provider, &oversized, |_| {}).await;
    let token = t.pair().await;
    assert_eq!(
        t.webhook(&token, "x").await,
        (500, json!({"error": "LLM request failed"})),
        "{provider}"
    );
    let health = t.get("/health", None).await.1;
    assert_eq!(
        health["runtime"]["components"][format!("provider:{name}")]["last_error"],
        format!("provider reply larger than {MAX_REPLY_BYTES} bytes"),
        "{provider}"
    );
    let metrics = t.metrics().await;
    assert!(metrics.contains("zeroclaw_errors_total{component=\"provider\"} 1"));
    assert!(!health.to_string().contains(TEST_KEY) && !metrics.contains(TEST_KEY));

    // Timeout: a provider slower than the provider deadline.
    let slow = Stub::start("127.0.0.1:0", Duration::from_secs(3), move |_| {
        (200, ok_body.clone())
    })
    .await;
    let t = TestApp::with(provider, &slow, |c| {
        c.provider.timeout = Duration::from_millis(250)
    })
    .await;
    let token = t.pair().await;
    assert_eq!(t.webhook(&token, "x").await.0, 500, "{provider}");
    let health = t.get("/health", None).await.1;
    let err = health["runtime"]["components"][format!("provider:{name}")]["last_error"].clone();
    assert!(
        err.as_str().unwrap().contains("timed out"),
        "{provider}: {err}"
    );
}

#[tokio::test]
async fn openai_family_speaks_chat_completions_with_bearer() {
    for provider in [
        "openai",
        "openrouter",
        "groq",
        "mistral",
        "deepseek",
        "together",
    ] {
        let stub = Stub::fixed(200, openai_reply("hi from openai")).await;
        let (answer, call) = exchange(provider, &stub).await;
        assert_eq!(
            answer,
            (
                200,
                json!({"response": "hi from openai", "model": "test-model"})
            )
        );
        assert_eq!(call.path, "/chat/completions", "{provider}");
        assert_eq!(
            call.header("authorization").unwrap(),
            format!("Bearer {TEST_KEY}")
        );
        assert!(call
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
        assert_eq!(call.body["model"], "test-model");
        assert_eq!(call.body["temperature"], 0.4);
        assert_eq!(
            call.body["messages"],
            json!([{"role": "system", "content": "## IDENTITY.md\n\nI am Claw."},
                   {"role": "user", "content": "hello"}])
        );
    }
    failure("groq", openai_reply("late")).await;
}

#[tokio::test]
async fn custom_provider_uses_its_url_and_needs_no_key() {
    let stub = Stub::fixed(200, openai_reply("custom ok")).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config_for(
        dir.path(),
        &format!("custom:{}/v1", stub.url()),
        "http://unused",
    );
    cfg.provider.api_url = None;
    cfg.provider.api_key = None;
    let t = TestApp::start(cfg, dir).await;
    let token = t.pair().await;
    assert_eq!(t.webhook(&token, "hi").await.1["response"], "custom ok");
    let call = &stub.calls()[0];
    assert_eq!(call.path, "/v1/chat/completions");
    assert_eq!(call.header("authorization"), None);
    failure(&format!("custom:{}", stub.url()), openai_reply("late")).await;
}

#[tokio::test]
async fn missing_key_fails_without_calling_out() {
    let stub = Stub::fixed(200, openai_reply("never")).await;
    let t = TestApp::with("openai", &stub, |c| c.provider.api_key = None).await;
    let token = t.pair().await;
    assert_eq!(t.webhook(&token, "hi").await.0, 500);
    assert!(stub.calls().is_empty());
    let health = t.get("/health", None).await.1;
    assert!(
        health["runtime"]["components"]["provider:openai"]["last_error"]
            .as_str()
            .unwrap()
            .contains("no API key")
    );
}

#[tokio::test]
async fn anthropic_speaks_messages() {
    let stub = Stub::fixed(200, anthropic_reply("hi from claude")).await;
    let (answer, call) = exchange("anthropic", &stub).await;
    assert_eq!(
        answer,
        (
            200,
            json!({"response": "hi from claude", "model": "test-model"})
        )
    );
    assert_eq!(call.path, "/v1/messages");
    assert_eq!(call.header("x-api-key").unwrap(), TEST_KEY);
    assert_eq!(call.header("anthropic-version").unwrap(), "2023-06-01");
    assert_eq!(call.header("authorization"), None);
    assert_eq!(call.body["model"], "test-model");
    assert_eq!(call.body["system"], "## IDENTITY.md\n\nI am Claw.");
    assert!(call.body["max_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        call.body["messages"],
        json!([{"role": "user", "content": "hello"}])
    );
    failure("anthropic", anthropic_reply("late")).await;
}

#[tokio::test]
async fn gemini_speaks_generate_content() {
    let stub = Stub::fixed(200, gemini_reply("hi from gemini")).await;
    let (answer, call) = exchange("gemini", &stub).await;
    assert_eq!(
        answer,
        (
            200,
            json!({"response": "hi from gemini", "model": "test-model"})
        )
    );
    assert_eq!(call.path, "/v1beta/models/test-model:generateContent");
    assert_eq!(call.header("x-goog-api-key").unwrap(), TEST_KEY);
    assert_eq!(call.header("authorization"), None);
    assert_eq!(
        call.body["systemInstruction"],
        json!({"parts": [{"text": "## IDENTITY.md\n\nI am Claw."}]})
    );
    assert_eq!(
        call.body["contents"],
        json!([{"role": "user", "parts": [{"text": "hello"}]}])
    );
    assert_eq!(call.body["generationConfig"]["temperature"], 0.4);
    failure("gemini", gemini_reply("late")).await;
}

#[tokio::test]
async fn ollama_speaks_api_chat_without_a_key() {
    let stub = Stub::fixed(200, ollama_reply("hi from ollama")).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config_for(dir.path(), "ollama", &stub.url());
    cfg.provider.api_key = None;
    let t = TestApp::start(cfg, dir).await;
    let token = t.pair().await;
    assert_eq!(
        t.webhook(&token, "hello").await,
        (
            200,
            json!({"response": "hi from ollama", "model": "test-model"})
        )
    );
    let call = &stub.calls()[0];
    assert_eq!(call.path, "/api/chat");
    assert_eq!(call.header("authorization"), None);
    assert_eq!(call.body["stream"], false);
    assert_eq!(call.body["model"], "test-model");
    assert_eq!(
        call.body["messages"][1],
        json!({"role": "user", "content": "hello"})
    );
    let metrics = t.metrics().await;
    assert!(metrics.contains("zeroclaw_tokens_input_total{provider=\"ollama\"} 14"));
    failure("ollama", ollama_reply("late")).await;
}

#[tokio::test]
async fn history_is_mapped_per_wire_format() {
    let stub = Stub::start("127.0.0.1:0", Duration::ZERO, |call| {
        let reply = if call.path.contains("generateContent") {
            gemini_reply("g")
        } else {
            anthropic_reply("a")
        };
        (200, reply)
    })
    .await;
    for provider in ["anthropic", "gemini"] {
        let t = TestApp::with(provider, &stub, |_| {}).await;
        let token = t.pair().await;
        assert_eq!(t.webhook(&token, "first").await.0, 200);
        assert_eq!(t.webhook(&token, "second").await.0, 200);
    }
    let calls = stub.calls();
    assert_eq!(
        calls[1].body["messages"],
        json!([{"role": "user", "content": "first"}, {"role": "assistant", "content": "a"},
               {"role": "user", "content": "second"}])
    );
    assert_eq!(
        calls[3].body["contents"],
        json!([{"role": "user", "parts": [{"text": "first"}]}, {"role": "model", "parts": [{"text": "g"}]},
               {"role": "user", "parts": [{"text": "second"}]}])
    );
}

#[tokio::test]
async fn a_streamed_reply_is_abandoned_at_the_cap() {
    // A valid reply followed by 64 MiB of JSON whitespace, chunked (no Content-Length): read
    // whole it would parse, so only the cap turns it into a failure.
    const CHUNK: usize = 64 * 1024;
    const TOTAL: usize = 64 * MAX_REPLY_BYTES;
    let produced = Arc::new(AtomicUsize::new(0));
    let counter = produced.clone();
    let stub = Stub::start_raw("127.0.0.1:0", Duration::ZERO, move |_| {
        let counter = counter.clone();
        let head = Bytes::from(openai_reply("streamed").to_string());
        let pad = Bytes::from(vec![b' '; CHUNK]);
        let chunks = std::iter::once(head)
            .chain(std::iter::repeat_n(pad, TOTAL / CHUNK))
            .map(move |b| {
                counter.fetch_add(b.len(), Ordering::SeqCst);
                Ok::<_, std::io::Error>(b)
            });
        axum::response::Response::new(Body::from_stream(futures::stream::iter(chunks)))
    })
    .await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    let token = t.pair().await;
    assert_eq!(
        t.webhook(&token, "hello").await,
        (500, json!({"error": "LLM request failed"}))
    );
    let health = t.get("/health", None).await.1;
    assert_eq!(
        health["runtime"]["components"]["provider:openai"]["last_error"],
        format!("provider reply larger than {MAX_REPLY_BYTES} bytes")
    );
    // The gateway hung up after the first MiB: the stub could hand over little more than
    // that plus the loopback socket buffers, far from the whole body.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = produced.load(Ordering::SeqCst);
    assert!(sent < TOTAL / 4, "stub produced {sent} of {TOTAL} bytes");
    // Nothing of the failed exchange was stored.
    assert_eq!(t.webhook(&token, "again").await.0, 500);
    let second = &stub.calls()[1];
    assert_eq!(
        second.body["messages"].as_array().unwrap().len(),
        2,
        "only system + user, no recalled history"
    );
}
