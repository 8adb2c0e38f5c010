//! HTTP tests of `/health`, `/pair`, `/pair/code`, `/api/status`, `/metrics` and the 404,
//! against the real gateway on `127.0.0.1:0`.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use agent_runtime::clock::ManualClock;
use agent_runtime::config::channels::TelegramConfig;
use agent_runtime::secret::Secret;
use axum::body::Body;
use axum::extract::ConnectInfo;
use common::{config_for, openai_reply, Stub, TestApp, TEST_KEY};
use serde_json::json;
use tower::ServiceExt;

const UNAUTHORIZED: &str =
    "Unauthorized — pair first via POST /pair, then send Authorization: Bearer <token>";

#[tokio::test]
async fn health_is_public_and_lists_components() {
    let stub = Stub::fixed(200, openai_reply("hi")).await;
    let t = TestApp::with("openai", &stub, |c| {
        c.channels.telegram = Some(TelegramConfig {
            bot_token: Secret::new("123:telegram-secret"),
            allowed_users: vec!["*".into()],
            // Nothing listens there: the client fails at once, and never calls out.
            api_base_url: Some("http://127.0.0.1:9".into()),
        });
    })
    .await;
    let (status, body) = t.get("/health", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["paired"], false);
    assert_eq!(body["require_pairing"], true);
    let rt = &body["runtime"];
    assert_eq!(rt["pid"], std::process::id());
    assert!(rt["uptime_seconds"].is_u64());
    chrono::DateTime::parse_from_rfc3339(rt["updated_at"].as_str().unwrap()).unwrap();
    let comps = rt["components"].as_object().unwrap();
    let names: Vec<_> = comps.keys().cloned().collect();
    assert_eq!(names, ["channel:telegram", "gateway", "provider:openai"]);
    assert_eq!(comps["gateway"]["status"], "ok");
    assert_eq!(comps["provider:openai"]["status"], "starting");
    // Not `ok`: nothing answers the client (`starting`, or `error` once it tried).
    assert_ne!(comps["channel:telegram"]["status"], "ok");
    for c in comps.values() {
        for k in ["updated_at", "last_ok", "last_error", "restart_count"] {
            assert!(c.get(k).is_some(), "{k} missing in {c}");
        }
    }
    let text = body.to_string();
    assert!(!text.contains("telegram-secret") && !text.contains(TEST_KEY));
}

#[tokio::test]
async fn pair_wrong_right_and_reused_code() {
    let stub = Stub::fixed(200, openai_reply("hi")).await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    let code = t.app().pairing_code().unwrap();
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()));
    let wrong = if code == "000000" { "000001" } else { "000000" };

    assert_eq!(
        t.pair_with(Some(wrong)).await,
        (403, json!({"error": "Invalid pairing code"}))
    );
    assert_eq!(
        t.pair_with(None).await,
        (403, json!({"error": "Invalid pairing code"}))
    );

    let (status, body) = t.pair_with(Some(&code)).await;
    assert_eq!(status, 200);
    assert_eq!(body["paired"], true);
    assert_eq!(body["persisted"], false);
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    let token = body["token"].as_str().unwrap();
    let re = regex::Regex::new("^zc_[0-9a-f]{64}$").unwrap();
    assert!(re.is_match(token), "{token}");

    // One-time: the same code again is refused, and /health says paired.
    assert_eq!(t.pair_with(Some(&code)).await.0, 403);
    assert_eq!(t.get("/health", None).await.1["paired"], true);
    let (status, body) = t.get("/pair/code", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"success": true, "pairing_required": true, "pairing_code": null})
    );
}

#[tokio::test]
async fn pair_code_answers_loopback_only() {
    let stub = Stub::fixed(200, openai_reply("hi")).await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    let code = t.app().pairing_code().unwrap();
    let (status, body) = t.get("/pair/code", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"success": true, "pairing_required": true, "pairing_code": code})
    );

    // The same router, as seen from a non-loopback peer.
    let router = agent_runtime::http::router(t.app().state().clone(), Duration::from_secs(5));
    let mut req = axum::http::Request::get("/pair/code")
        .body(Body::empty())
        .unwrap();
    let peer: SocketAddr = "192.0.2.10:40000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    let resp = router.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 403);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(!body.to_string().contains(&code));
    assert!(body["error"].as_str().unwrap().contains("loopback"));
}

#[tokio::test]
async fn five_failures_lock_the_client_for_300_seconds() {
    let stub = Stub::fixed(200, openai_reply("hi")).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_for(dir.path(), "openai", &stub.url());
    let clock = ManualClock::new();
    let t = TestApp::start_with_clock(cfg, dir, clock.clone()).await;
    let code = t.app().pairing_code().unwrap();
    let wrong = if code == "999999" { "999998" } else { "999999" };
    for i in 1..=5 {
        assert_eq!(t.pair_with(Some(wrong)).await.0, 403, "attempt {i}");
    }
    let locked =
        json!({"error": "Too many failed attempts. Try again in 300s.", "retry_after": 300});
    assert_eq!(t.pair_with(Some(wrong)).await, (429, locked.clone()));
    // Even the right code is refused while locked, and the code is not consumed.
    assert_eq!(t.pair_with(Some(&code)).await, (429, locked));
    clock.advance(Duration::from_secs(120));
    assert_eq!(
        t.pair_with(Some(&code)).await,
        (
            429,
            json!({"error": "Too many failed attempts. Try again in 180s.", "retry_after": 180})
        )
    );
    clock.advance(Duration::from_secs(180));
    let (status, body) = t.pair_with(Some(&code)).await;
    assert_eq!(status, 200, "{body}");

    // The lockout is per client address: another peer is not locked.
    let router = agent_runtime::http::router(t.app().state().clone(), Duration::from_secs(5));
    for (i, expected) in [(1, 403), (2, 403), (3, 403), (4, 403), (5, 403), (6, 429)] {
        let mut req = axum::http::Request::post("/pair")
            .header("X-Pairing-Code", wrong)
            .body(Body::empty())
            .unwrap();
        let peer: SocketAddr = "192.0.2.77:1".parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        let resp = router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), expected, "attempt {i} from 192.0.2.77");
    }
    assert_eq!(
        t.pair_with(Some(wrong)).await.0,
        403,
        "127.0.0.1 has its own count"
    );
}

#[tokio::test]
async fn pairing_disabled_means_pair_403_and_open_webhook() {
    let stub = Stub::fixed(200, openai_reply("open")).await;
    let t = TestApp::with("openai", &stub, |c| c.gateway.require_pairing = false).await;
    assert_eq!(t.app().pairing_code(), None);
    let (status, body) = t.pair_with(Some("123456")).await;
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().contains("disabled"));
    let (status, body) = t
        .webhook_raw(None, json!({"message": "hi"}).to_string(), None)
        .await;
    assert_eq!((status, body["response"].as_str()), (200, Some("open")));
    assert_eq!(t.get("/api/status", None).await.0, 200);
    assert_eq!(t.get("/health", None).await.1["require_pairing"], false);
}

#[tokio::test]
async fn api_status_requires_the_token() {
    let stub = Stub::fixed(200, openai_reply("hi")).await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    assert_eq!(
        t.get("/api/status", None).await,
        (401, json!({"error": UNAUTHORIZED}))
    );
    let token = t.pair().await;
    assert_eq!(t.get("/api/status", Some("zc_wrong")).await.0, 401);
    let (status, body) = t.get("/api/status", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["paired"], true);
    assert_eq!(body["provider"], "openai");
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["memory_backend"], "sqlite");
    assert!(body["uptime_seconds"].is_u64() && body["version"].is_string());
    assert!(!body.to_string().contains(TEST_KEY));
}

#[tokio::test]
async fn metrics_serves_the_six_series() {
    let stub = Stub::fixed(200, openai_reply("hi")).await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    let resp = t
        .http
        .get(format!("{}/metrics", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = resp.text().await.unwrap();
    for series in [
        "zeroclaw_llm_requests_total",
        "zeroclaw_request_latency_seconds",
        "zeroclaw_errors_total",
        "zeroclaw_active_sessions",
        "zeroclaw_tokens_input_total",
        "zeroclaw_tokens_output_total",
    ] {
        assert!(text.contains(series), "{series}");
    }
    let token = t.pair().await;
    assert_eq!(t.webhook(&token, "hello").await.0, 200);
    let text = t.metrics().await;
    assert!(text.contains(
        "zeroclaw_llm_requests_total{provider=\"openai\",model=\"test-model\",success=\"true\"} 1"
    ));
    assert!(text.contains("zeroclaw_tokens_input_total{provider=\"openai\"} 11"));
    assert!(text.contains("zeroclaw_tokens_output_total{provider=\"openai\"} 5"));
    assert!(text.contains("zeroclaw_request_latency_seconds_count{provider=\"openai\"} 1"));
    assert!(text.contains("zeroclaw_active_sessions 0"));
}

#[tokio::test]
async fn unknown_route_is_a_json_404() {
    let stub = Stub::fixed(200, openai_reply("hi")).await;
    let t = TestApp::with("openai", &stub, |_| {}).await;
    assert_eq!(
        t.get("/nope", None).await,
        (404, json!({"error": "Not found"}))
    );
}

#[tokio::test]
async fn restart_invalidates_tokens_unless_persisted() {
    let stub = Stub::fixed(200, openai_reply("hi")).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();

    // Default: a restart prints a new code and forgets the token.
    let mut t = TestApp::start(config_for(&root, "openai", &stub.url()), dir).await;
    let token = t.pair().await;
    assert!(t.shutdown().await);
    let t2 = TestApp::start(
        config_for(&root, "openai", &stub.url()),
        tempfile::tempdir().unwrap(),
    )
    .await;
    assert!(
        t2.app().pairing_code().is_some(),
        "a new code after restart"
    );
    assert_eq!(t2.get("/api/status", Some(&token)).await.0, 401);

    // persist_tokens: the hash is kept, no code is printed, the token still works.
    let persisted = |root: &std::path::Path| {
        let mut c = config_for(root, "openai", &stub.url());
        c.gateway.persist_tokens = true;
        c
    };
    let mut t3 = TestApp::start(persisted(&root), tempfile::tempdir().unwrap()).await;
    let code = t3.app().pairing_code().unwrap();
    let (status, body) = t3.pair_with(Some(&code)).await;
    assert_eq!((status, &body["persisted"]), (200, &json!(true)));
    let token = body["token"].as_str().unwrap().to_owned();
    let state = std::fs::read_to_string(root.join(".zeroclaw/paired_tokens.txt")).unwrap();
    assert!(state.contains(&agent_runtime::tokens::hash_token(&token)));
    assert!(!state.contains(&token));
    assert!(t3.shutdown().await);
    let t4 = TestApp::start(persisted(&root), tempfile::tempdir().unwrap()).await;
    assert_eq!(t4.app().pairing_code(), None);
    assert!(t4.app().startup_lines().contains("Already paired"));
    assert_eq!(t4.get("/api/status", Some(&token)).await.0, 200);
    assert_eq!(t4.get("/health", None).await.1["paired"], true);
}

#[tokio::test]
async fn preseeded_paired_tokens_are_accepted_without_a_code() {
    let stub = Stub::fixed(200, openai_reply("seeded")).await;
    let raw = "zc_".to_owned() + &"ab".repeat(32);
    let other = "zc_other-raw-token";
    let t = TestApp::with("openai", &stub, |c| {
        c.gateway.paired_tokens = vec![
            agent_runtime::tokens::hash_token(&raw),
            agent_runtime::tokens::normalize_configured(other),
        ];
    })
    .await;
    assert_eq!(t.app().pairing_code(), None);
    assert!(!t.app().startup_lines().contains("X-Pairing-Code"));
    assert_eq!(t.webhook(&raw, "hi").await.0, 200);
    assert_eq!(t.webhook(other, "hi").await.0, 200);
    assert_eq!(t.webhook("zc_nope", "hi").await.0, 401);
}

#[tokio::test]
async fn shutdown_is_prompt() {
    let stub = Stub::fixed(200, openai_reply("hi")).await;
    let mut t = TestApp::with("openai", &stub, |_| {}).await;
    let _ = t.get("/health", None).await;
    let started = std::time::Instant::now();
    assert!(t.shutdown().await);
    assert!(started.elapsed() < Duration::from_secs(2));
}
