//! Accounts over real HTTP: register, login, /api/me, JWT checks (audience,
//! algorithm, expiry, deleted user), admin-only routes, the login limit.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use zcaas_test_support::{assert_error, TestApp};

fn forge(app: &TestApp, claims: Value, alg: Algorithm) -> String {
    let path = app.state().config.jwt_secret_path();
    let secret = hex::decode(std::fs::read_to_string(path).unwrap().trim()).unwrap();
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(&secret),
    )
    .unwrap()
}

#[tokio::test]
async fn accounts_and_tokens() {
    let mut app = TestApp::spawn().await;

    // Register, then log in with the same credentials.
    let token = app.register_email("Alice@Example.com").await;
    let (status, me) = app.me(&token).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["role"], "user");
    assert_eq!(me["plan"], "free");
    assert_eq!(me["limits"]["maxAgents"], 3);
    assert_eq!(me["limits"]["cpus"], 0.5);
    assert!(me.get("passwordHash").is_none() && !me.to_string().contains("argon2"));
    let user_id = me["id"].as_str().unwrap().to_owned();

    let creds = json!({"email": "alice@example.com", "password": "password-123"});
    let (status, body) = app
        .call(Method::POST, "/api/auth/login", None, Some(creds))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["token"].is_string());

    // Duplicate email: 409 naming the field.
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"email": "alice@example.com", "password": "password-456"})),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, Some("email"));

    // Bad input: 422 naming the field.
    for (payload, field) in [
        (
            json!({"email": "not-an-email", "password": "password-123"}),
            "email",
        ),
        (
            json!({"email": "b@example.com", "password": "short"}),
            "password",
        ),
        (
            json!({"email": "b@example.com", "password": "x".repeat(129)}),
            "password",
        ),
        (json!({"email": "b@example.com"}), "password"),
        (
            json!({"email": "b@example.com", "password": "password-123", "role": "admin"}),
            "role",
        ),
        (json!({"email": 5, "password": "password-123"}), "email"),
    ] {
        let (status, body) = app
            .call(Method::POST, "/api/auth/register", None, Some(payload))
            .await;
        assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, Some(field));
    }

    // Wrong password and unknown email: the same generic 401.
    let (s1, b1) = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": "alice@example.com", "password": "wrong-pass"})),
        )
        .await;
    let (s2, b2) = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": "nobody@example.com", "password": "wrong-pass"})),
        )
        .await;
    assert_error(s1, &b1, StatusCode::UNAUTHORIZED, None);
    assert_eq!((s1, &b1["error"]["message"]), (s2, &b2["error"]["message"]));

    // Tokens: missing, garbage, wrong audience, no audience, wrong algorithm,
    // expired, and a wrong secret are all 401.
    let now = chrono::Utc::now().timestamp();
    let good = json!({"sub": user_id, "exp": now + 600, "iat": now, "iss": "zcaas", "aud": "zcaas-api", "role": "user"});
    let (status, _) = app
        .call(
            Method::GET,
            "/api/me",
            Some(&forge(&app, good.clone(), Algorithm::HS256)),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a correctly forged token is accepted (the harness is right)"
    );
    let mut no_aud = good.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = "other".into();
    let mut no_iss = good.clone();
    no_iss.as_object_mut().unwrap().remove("iss");
    let mut expired = good.clone();
    expired["exp"] = (now - 3600).into();
    let wrong_secret = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(&[1u8; 32]),
    )
    .unwrap();
    let alg_none = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(good.to_string())
        )
    };
    for bad in [
        "garbage".to_owned(),
        forge(&app, no_aud, Algorithm::HS256),
        forge(&app, wrong_aud, Algorithm::HS256),
        forge(&app, no_iss, Algorithm::HS256),
        forge(&app, expired, Algorithm::HS256),
        forge(&app, good.clone(), Algorithm::HS512),
        wrong_secret,
        alg_none,
    ] {
        let (status, body) = app.call(Method::GET, "/api/me", Some(&bad), None).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, None);
    }
    let (status, body) = app.call(Method::GET, "/api/me", None, None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, None);

    // Admin routes: 403 for a user, 200 for an admin.
    let (status, body) = app
        .call(Method::GET, "/api/admin/agents", Some(&token), None)
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, None);
    let admin = app.admin("root@example.com").await;
    let (status, body) = app
        .call(Method::GET, "/api/admin/agents", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.is_array());

    // A deleted user's unexpired token is refused.
    assert!(app.state().store.users().delete(&user_id).await.unwrap());
    let (status, body) = app.me(&token).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, None);

    app.shutdown().await;
}

#[tokio::test]
async fn login_failures_are_rate_limited() {
    let mut app = TestApp::spawn().await;
    app.register_email("carol@example.com").await;
    let wrong = json!({"email": "carol@example.com", "password": "wrong-pass"});
    for _ in 0..10 {
        let (status, _) = app
            .call(Method::POST, "/api/auth/login", None, Some(wrong.clone()))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Even the right password waits now.
    let right = json!({"email": "carol@example.com", "password": "password-123"});
    let (status, body) = app
        .call(Method::POST, "/api/auth/login", None, Some(right))
        .await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, None);
    app.shutdown().await;
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let mut app = TestApp::spawn().await;
    let (status, body) = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["database"], "ok", "{body}");
    assert_eq!(body["docker"], "ok", "{body}");
    // A lone replica leads the reconciler from its start.
    assert_eq!(body["reconciler"], "leader", "{body}");
    let replica = body["replica"].as_str().expect("a replica id");
    assert_eq!(body["leader"], replica, "{body}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(6), "{body}");
    let (status, body) = app.call(Method::GET, "/api/nope", None, None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, None);
    let (status, body) = app.call(Method::PUT, "/api/agents", None, None).await;
    assert_error(status, &body, StatusCode::METHOD_NOT_ALLOWED, None);
    // The first admin was bootstrapped.
    assert_eq!(app.state().store.users().count_admins().await.unwrap(), 1);
    let admin = app
        .state()
        .store
        .users()
        .get_by_email("admin@test.local")
        .await
        .unwrap();
    assert!(admin.is_some());
    // Key files exist with mode 0600 in a 0700 directory.
    use std::os::unix::fs::PermissionsExt;
    let cfg = &app.state().config;
    for p in [cfg.master_key_path(), cfg.jwt_secret_path()] {
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            p.display()
        );
    }
    assert_eq!(
        std::fs::metadata(&cfg.data_dir)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    app.shutdown().await;
}
