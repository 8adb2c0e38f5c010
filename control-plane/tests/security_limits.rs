//! Limits (issue 5): a body limit on every route, with the API's JSON 413
//! (declared `Content-Length` and chunked bodies alike); the login limit's
//! 429 with `Retry-After`; and the JWT rules beyond what `api_auth` checks —
//! `iss`, `exp` and `sub` required, the algorithm pinned (no `none`, no
//! RS256 confusion), the role taken from the database and not from the
//! token, and a deleted user's token refused on every agent route.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use zcaas_test_support::{assert_error, minimal_agent_body, TestApp};

/// Just over the API's 64 KiB body limit.
const OVERSIZED: usize = 64 * 1024 + 1;

/// Every route of the API (the streaming ones included, and a few that may
/// not exist yet: the body limit sits in front of routing), for agent `id`.
fn every_route(id: &str) -> Vec<(Method, String)> {
    let a = format!("/api/agents/{id}");
    vec![
        (Method::POST, "/api/auth/register".into()),
        (Method::POST, "/api/auth/login".into()),
        (Method::POST, "/api/auth/stream-ticket".into()),
        (Method::GET, "/api/me".into()),
        (Method::GET, "/api/events".into()),
        (Method::GET, "/api/agents".into()),
        (Method::POST, "/api/agents".into()),
        (Method::GET, a.clone()),
        (Method::PATCH, a.clone()),
        (Method::DELETE, a.clone()),
        (Method::POST, format!("{a}/start")),
        (Method::POST, format!("{a}/stop")),
        (Method::POST, format!("{a}/restart")),
        (Method::POST, format!("{a}/retry")),
        (Method::POST, format!("{a}/message")),
        (Method::GET, format!("{a}/logs")),
        (Method::GET, format!("{a}/logs?follow=true")),
        (Method::GET, format!("{a}/events")),
        (Method::GET, format!("{a}/stats")),
        (Method::GET, format!("{a}/health")),
        (Method::GET, "/api/admin/agents".into()),
        (Method::GET, "/api/admin/events".into()),
        (Method::GET, "/healthz".into()),
        (Method::GET, "/metrics".into()),
        (Method::GET, "/api/no-such-route".into()),
    ]
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: reqwest::Body,
) -> (StatusCode, Value) {
    let resp = app
        .http
        .request(method, app.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{path}: non-JSON body for {status}: {text:?}"));
    (status, json)
}

fn chunked(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(4096).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn every_route_refuses_an_oversized_body_with_a_json_413() {
    let mut app = TestApp::spawn().await;
    let token = app.admin("limits@example.com").await;
    let agent = app
        .create_pending_agent(&token, minimal_agent_body("Limit Target"))
        .await;
    let id = agent["id"].as_str().unwrap().to_owned();
    // A JSON object of the oversized length: valid, so only its size is wrong.
    let big = {
        let pad = OVERSIZED - r#"{"message":""}"#.len();
        format!(r#"{{"message":"{}"}}"#, "x".repeat(pad)).into_bytes()
    };
    assert_eq!(big.len(), OVERSIZED);

    // Declared length: refused before routing, authentication or handler.
    for (method, path) in every_route(&id) {
        let (status, body) = send(&app, method.clone(), &path, &token, big.clone().into()).await;
        assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, None);
        assert_eq!(
            body["error"]["code"], "payload_too_large",
            "{method} {path}"
        );
    }
    // Chunked, no length: refused while reading, on every route that reads one.
    for (method, path) in [
        (Method::POST, "/api/auth/register".to_owned()),
        (Method::POST, "/api/auth/login".to_owned()),
        (Method::POST, "/api/agents".to_owned()),
        (Method::PATCH, format!("/api/agents/{id}")),
        (Method::POST, format!("/api/agents/{id}/message")),
    ] {
        let (status, body) = send(&app, method.clone(), &path, &token, chunked(big.clone())).await;
        assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, None);
    }
    // Just under the limit is the handler's business (here: a valid PATCH
    // padded with whitespace), so the limit is 64 KiB and not less.
    let mut under = br#"{"communicationStyle":"Terse."}"#.to_vec();
    under.splice(1..1, std::iter::repeat_n(b' ', 64 * 1024 - under.len()));
    assert_eq!(under.len(), 64 * 1024);
    let (status, body) = send(
        &app,
        Method::PATCH,
        &format!("/api/agents/{id}"),
        &token,
        under.into(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["communicationStyle"], "Terse.");

    // Nothing was created by any of it.
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(app.sql())
        .await
        .unwrap();
    let agents: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents")
        .fetch_one(app.sql())
        .await
        .unwrap();
    assert_eq!((users, agents), (2, 1), "bootstrap admin + ours; one agent");
    app.shutdown().await;
}

#[tokio::test]
async fn login_limit_answers_429_with_retry_after_per_email() {
    let mut app = TestApp::spawn().await;
    app.register_email("victim@example.com").await;
    app.register_email("other@example.com").await;
    let wrong = json!({"email": "victim@example.com", "password": "wrong-pass"});
    for _ in 0..zcaas::api::auth::MAX_FAILURES {
        let (status, _) = app
            .call(Method::POST, "/api/auth/login", None, Some(wrong.clone()))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let resp = app
        .http
        .post(app.url("/api/auth/login"))
        .json(&json!({"email": "VICTIM@example.com ", "password": "password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15 * 60).contains(&retry_after), "{retry_after}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_requests");
    // The limit is per email: another account still logs in.
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": "other@example.com", "password": "password-123"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.shutdown().await;
}

fn sign(app: &TestApp, claims: &Value, alg: Algorithm) -> String {
    let path = app.state().config.jwt_secret_path();
    let secret = hex::decode(std::fs::read_to_string(path).unwrap().trim()).unwrap();
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(&secret),
    )
    .unwrap()
}

/// A token with any header, signed HMAC-SHA256 with the real secret.
fn sign_with_header(app: &TestApp, header: &Value, claims: &Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let path = app.state().config.jwt_secret_path();
    let secret = hex::decode(std::fs::read_to_string(path).unwrap().trim()).unwrap();
    let sig = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &EncodingKey::from_secret(&secret),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{signing_input}.{sig}")
}

#[tokio::test]
async fn jwt_claims_algorithm_role_and_deleted_users() {
    let mut app = TestApp::spawn().await;
    let token = app.register_email("jwt@example.com").await;
    let (_, me) = app.me(&token).await;
    let user_id = me["id"].as_str().unwrap().to_owned();
    let agent = app
        .create_pending_agent(&token, minimal_agent_body("Jwt Agent"))
        .await;
    let id = agent["id"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now().timestamp();
    let good = json!({"sub": user_id, "exp": now + 600, "iat": now, "iss": "zcaas", "aud": "zcaas-api", "role": "user"});
    let with = |key: &str, value: Value| {
        let mut c = good.clone();
        c[key] = value;
        c
    };
    let without = |key: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(key);
        c
    };
    // The harness signs correctly: this one is accepted.
    let ok = sign(&app, &good, Algorithm::HS256);
    let (status, _) = app.me(&ok).await;
    assert_eq!(status, StatusCode::OK);
    let same_header = sign_with_header(&app, &json!({"alg": "HS256", "typ": "JWT"}), &good);
    let (status, _) = app.me(&same_header).await;
    assert_eq!(status, StatusCode::OK, "hand-made tokens are well formed");

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut refused = vec![
        sign(&app, &with("iss", json!("someone-else")), Algorithm::HS256),
        sign(
            &app,
            &with("aud", json!(["other", "more"])),
            Algorithm::HS256,
        ),
        sign(&app, &without("exp"), Algorithm::HS256),
        sign(&app, &without("sub"), Algorithm::HS256),
        sign(&app, &with("exp", json!(now - 60)), Algorithm::HS256),
        sign(&app, &with("exp", json!("never")), Algorithm::HS256),
        sign(&app, &with("sub", json!("no-such-user")), Algorithm::HS256),
        sign(&app, &good, Algorithm::HS384),
        sign_with_header(&app, &json!({"alg": "RS256", "typ": "JWT"}), &good),
        sign_with_header(&app, &json!({"alg": "ES256", "typ": "JWT"}), &good),
        format!("{ok}x"),
        ok.rsplit_once('.').unwrap().0.to_owned(),
        format!("{}.", ok.rsplit_once('.').unwrap().0),
    ];
    for none in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": none, "typ": "JWT"});
        refused.push(format!(
            "{}.{}.",
            b64.encode(header.to_string()),
            b64.encode(good.to_string())
        ));
    }
    for bad in &refused {
        for path in ["/api/me".to_owned(), format!("/api/agents/{id}")] {
            let (status, body) = app.call(Method::GET, &path, Some(bad), None).await;
            assert_error(status, &body, StatusCode::UNAUTHORIZED, None);
        }
    }
    // Other schemes and places are not a bearer token.
    for header in [
        format!("Basic {ok}"),
        format!("Token {ok}"),
        ok.clone(),
        "Bearer".into(),
    ] {
        let resp = app
            .http
            .get(app.url("/api/me"))
            .header("authorization", header.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{header}");
    }
    let resp = app
        .http
        .get(app.url(&format!("/api/me?token={ok}&access_token={ok}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // A role claim grants nothing: the database's role decides.
    let forged_admin = sign(&app, &with("role", json!("admin")), Algorithm::HS256);
    let (status, body) = app
        .call(Method::GET, "/api/admin/agents", Some(&forged_admin), None)
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, None);
    let (_, me) = app.me(&forged_admin).await;
    assert_eq!(me["role"], "user");

    // Deleted: every route refuses the still-unexpired token with 401.
    assert!(app.state().store.users().delete(&user_id).await.unwrap());
    let a = format!("/api/agents/{id}");
    for (method, path) in [
        (Method::GET, "/api/me".to_owned()),
        (Method::GET, "/api/agents".to_owned()),
        (Method::GET, a.clone()),
        (Method::POST, format!("{a}/start")),
        (Method::GET, format!("{a}/logs")),
        (Method::DELETE, a.clone()),
    ] {
        let (status, body) = app.call(method, &path, Some(&token), None).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, None);
    }
    let (status, body) = app.create_agent(&token, minimal_agent_body("Ghost")).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, None);
    app.shutdown().await;
}
