//! The message and health proxies against an in-process stand-in for an
//! agent gateway (zero-to-production style): the decrypted bearer token
//! reaches the agent and never the caller, `X-Idempotency-Key` is forwarded,
//! the agent's status and JSON come back as they are, and a token the agent
//! refuses becomes a 502.
//!
//! The agent row is written straight to the store as RUNNING on the stand-in's
//! port (no container exists), and every call is made within a second or so,
//! well before the reconciler's periodic resync would notice the missing
//! container.

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use axum::routing::{get, post};
use reqwest::StatusCode;
use serde_json::{json, Value};
use zcaas::secrets::SecretField;
use zcaas::store::agents::NewAgent;
use zcaas_test_support::store::agent_row;
use zcaas_test_support::{assert_error, TestApp};

const TOKEN: &str = "zc_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[derive(Default)]
struct Seen {
    auth: Vec<String>,
    keys: Vec<Option<String>>,
}

/// A gateway stand-in on a port in 40000–50000 (the column's range).
async fn stand_in(seen: Arc<Mutex<Seen>>) -> u16 {
    let webhook = move |headers: HeaderMap, body: axum::Json<Value>| {
        let seen = seen.clone();
        async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let key = headers
                .get("x-idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            {
                let mut s = seen.lock().unwrap();
                s.auth.push(auth.clone());
                s.keys.push(key);
            }
            if auth != format!("Bearer {TOKEN}") {
                return (
                    axum::http::StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"error": "Unauthorized"})),
                );
            }
            if body["message"] == "fail" {
                return (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(json!({"error": "LLM request failed"})),
                );
            }
            (
                axum::http::StatusCode::OK,
                axum::Json(
                    json!({"response": format!("echo: {}", body["message"].as_str().unwrap_or("")), "model": "stub"}),
                ),
            )
        }
    };
    let router = axum::Router::new().route("/webhook", post(webhook)).route(
        "/health",
        get(|| async { axum::Json(json!({"status": "ok", "paired": true})) }),
    );
    for _ in 0..200 {
        let port = 40000 + (rand_u16() % 10000);
        if let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            tokio::spawn(async move { axum::serve(listener, router).await });
            return port;
        }
    }
    panic!("no free port in 40000–50000");
}

fn rand_u16() -> u16 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u16::from_le_bytes([b[0], b[1]])
}

#[tokio::test]
async fn message_and_health_are_proxied_with_the_hidden_token() {
    let mut app = TestApp::spawn().await;
    let owner = app.register_email("owner@example.com").await;
    let other = app.register_email("other@example.com").await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = stand_in(seen.clone()).await;

    let (_, me) = app.me(&owner).await;
    let state = app.state();
    let new = NewAgent {
        name: "Proxied".into(),
        agent_name: "Proxied".into(),
        subdomain: "proxied.test.local".into(),
        ..agent_row(
            me["id"].as_str().unwrap(),
            &format!("proxied-{}", app.prefix),
        )
    };
    let id = new.id.clone();
    state
        .store
        .agents()
        .insert_pending(&new, None)
        .await
        .unwrap();
    let token = state
        .secrets
        .encrypt(&id, SecretField::Token, TOKEN)
        .unwrap();
    sqlx::query(
        "UPDATE agents SET status = 'RUNNING', container_port = $1, encrypted_token = $2 WHERE id = $3",
    )
    .bind(i64::from(port))
    .bind(&token)
    .bind(&id)
    .execute(app.sql())
    .await
    .unwrap();

    let msg = format!("/api/agents/{id}/message");
    // The owner's message reaches the agent with the decrypted token.
    let resp = app
        .http
        .post(app.url(&msg))
        .bearer_auth(&owner)
        .header("x-idempotency-key", "req-1")
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"response": "echo: hello", "model": "stub"}));
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.auth, vec![format!("Bearer {TOKEN}")]);
        assert_eq!(s.keys, vec![Some("req-1".to_owned())]);
    }
    // The agent's own errors come back as they are.
    let (status, body) = app.message(&owner, &id, "fail").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, json!({"error": "LLM request failed"}));
    // A bad idempotency key is refused before anything is sent.
    let resp = app
        .http
        .post(app.url(&msg))
        .bearer_auth(&owner)
        .header("x-idempotency-key", "has space")
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Health is proxied; the record never shows the token.
    let (status, body) = app.health(&owner, &id).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"status": "ok", "paired": true}))
    );
    let (status, view) = app.get_agent(&owner, &id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["paired"], true);
    assert!(!view.to_string().contains(TOKEN) && !view.to_string().contains(&token));
    // No container: logs are empty, stats are a conflict.
    let (status, logs) = app.logs(&owner, &id).await;
    assert_eq!((status, logs), (StatusCode::OK, json!({"lines": []})));
    let (status, body) = app.stats(&owner, &id).await;
    assert_error(status, &body, StatusCode::CONFLICT, None);

    // Another user reaches nothing, and the agent sees nothing from them.
    let (status, body) = app.message(&other, &id, "hi").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, None);
    assert_eq!(seen.lock().unwrap().auth.len(), 2);

    // A token the agent refuses: 502, never the agent's 401 (which would
    // read as the caller's own credentials failing).
    let stale = state
        .secrets
        .encrypt(&id, SecretField::Token, "zc_stale")
        .unwrap();
    sqlx::query("UPDATE agents SET encrypted_token = $1 WHERE id = $2")
        .bind(stale)
        .bind(&id)
        .execute(app.sql())
        .await
        .unwrap();
    let (status, body) = app.message(&owner, &id, "hello").await;
    assert_error(status, &body, StatusCode::BAD_GATEWAY, None);
    assert_eq!(body["error"]["code"], "agent_unauthorized");
    assert!(!body.to_string().contains("zc_"));

    let (status, _) = app.delete_agent(&owner, &id).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.shutdown().await;
}
