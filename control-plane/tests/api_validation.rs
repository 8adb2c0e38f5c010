//! Bad input on the agent routes: every field's bad values, unknown fields,
//! wrong types, malformed and oversized bodies all answer a 4xx JSON error
//! naming the field, and leave nothing created.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use zcaas_test_support::{assert_error, minimal_agent_body, TestApp};

/// Channel tokens in each platform's shape (not real ones).
const TG: &str = "123456789:AAE0testTokenNotReal-0123456789_ab";
const DISCORD: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GtestA.not-a-real-token_0123456789abcdefghij";
const SLACK_BOT: &str = "xoxb-1234567890-1234567890123-NotARealToken0123456789";

fn with(field: &str, value: Value) -> Value {
    let mut b = minimal_agent_body("Valid Name");
    b[field] = value;
    b
}

#[tokio::test]
async fn create_refuses_every_bad_field() {
    let mut app = TestApp::spawn().await;
    let token = app.register_email("val@example.com").await;

    let cases: Vec<(Value, &str)> = vec![
        (with("name", json!("")), "name"),
        (with("name", json!("x".repeat(65))), "name"),
        (with("name", json!("line\nbreak")), "name"),
        (with("name", json!(42)), "name"),
        (with("name", json!("日本")), "slug"), // nothing to derive a slug from
        (with("name", json!("Admin")), "slug"), // derived slug is reserved
        (with("slug", json!("Bad Slug")), "slug"),
        (with("slug", json!("a`b")), "slug"),
        (with("slug", json!("a&&b")), "slug"),
        (with("slug", json!("a||b")), "slug"),
        (with("slug", json!("a.b")), "slug"),
        (with("slug", json!("a@b")), "slug"),
        (with("slug", json!("a*")), "slug"),
        (with("slug", json!("a\nb")), "slug"),
        (with("slug", json!("ünï")), "slug"),
        (with("slug", json!("-a")), "slug"),
        (with("slug", json!("a".repeat(64))), "slug"),
        (with("slug", json!("traefik")), "slug"),
        (with("slug", json!("www")), "slug"),
        (with("agentName", json!("")), "agentName"),
        (with("agentName", json!("y".repeat(65))), "agentName"),
        (with("userName", json!("u".repeat(65))), "userName"),
        (with("timezone", json!("Not A Zone")), "timezone"),
        (with("timezone", json!("../../etc/passwd")), "timezone"),
        (
            with("communicationStyle", json!("s".repeat(2001))),
            "communicationStyle",
        ),
        (
            with("communicationStyle", json!("bell\u{7}")),
            "communicationStyle",
        ),
        (with("provider", json!("skynet")), "provider"),
        (
            with("provider", json!("custom:ftp://x.example")),
            "provider",
        ),
        (
            with("provider", json!("custom:http://127.0.0.1:9")),
            "provider",
        ),
        (with("provider", json!(["openai"])), "provider"),
        (
            with(
                "providerUrl",
                json!("http://169.254.169.254/latest/meta-data"),
            ),
            "providerUrl",
        ),
        (
            with("providerUrl", json!("http://localhost:11434")),
            "providerUrl",
        ),
        (
            with("providerUrl", json!("http://[::1]:8080")),
            "providerUrl",
        ),
        (with("providerUrl", json!("http://10.0.0.8")), "providerUrl"),
        (
            with("providerUrl", json!("file:///etc/passwd")),
            "providerUrl",
        ),
        (with("model", json!("")), "model"),
        (with("model", json!("gpt 4")), "model"),
        (with("model", json!("m".repeat(129))), "model"),
        (with("temperature", json!(2.5)), "temperature"),
        (with("temperature", json!(-1)), "temperature"),
        (with("temperature", json!("hot")), "temperature"),
        (with("memoryBackend", json!("redis")), "memoryBackend"),
        (with("autoSave", json!("yes")), "autoSave"),
        (with("apiKey", json!("")), "apiKey"),
        (with("apiKey", json!("has space")), "apiKey"),
        (with("apiKey", json!("k".repeat(513))), "apiKey"),
        (with("apiKey", json!("sk-…abcd")), "apiKey"),
        (
            with("channels", json!({"telegram": {"botToken": ""}})),
            "channels.telegram.botToken",
        ),
        (
            with("channels", json!({"telegram": {"botToken": "a\u{0}b"}})),
            "channels.telegram.botToken",
        ),
        (
            with("channels", json!({"telegram": {"allowedUsers": []}})),
            "channels.telegram.botToken",
        ),
        // Each platform's token shape.
        (
            with(
                "channels",
                json!({"telegram": {"botToken": "123:tok", "allowedUsers": ["*"]}}),
            ),
            "channels.telegram.botToken",
        ),
        (
            with(
                "channels",
                json!({"discord": {"botToken": "discord-token-123", "allowedUsers": ["*"]}}),
            ),
            "channels.discord.botToken",
        ),
        (
            with(
                "channels",
                json!({"slack": {"botToken": "xoxp-1234567890-not-a-bot-token", "allowedUsers": ["*"]}}),
            ),
            "channels.slack.botToken",
        ),
        (
            with(
                "channels",
                json!({"slack": {"botToken": SLACK_BOT, "appToken": SLACK_BOT, "allowedUsers": ["*"]}}),
            ),
            "channels.slack.appToken",
        ),
        (
            with(
                "channels",
                json!({"discord": {"botToken": DISCORD, "guildId": "1 2"}}),
            ),
            "channels.discord.guildId",
        ),
        (
            with(
                "channels",
                json!({"slack": {"botToken": SLACK_BOT, "appToken": ""}}),
            ),
            "channels.slack.appToken",
        ),
        (
            with("channels", json!({"telegram": {"botToken": TG}})),
            "channels.telegram.allowedUsers",
        ),
        (
            with(
                "channels",
                json!({"discord": {"botToken": DISCORD, "allowedUsers": ["alice#1"]}}),
            ),
            "channels.discord.allowedUsers[0]",
        ),
        (
            with(
                "channels",
                json!({"slack": {"botToken": SLACK_BOT, "allowedUsers": []}}),
            ),
            "channels.slack.allowedUsers",
        ),
        (
            with(
                "channels",
                json!({"telegram": {"botToken": TG, "allowedUsers": ["*"],
                    "apiBaseUrl": "http://127.0.0.1:8081"}}),
            ),
            "channels.telegram.apiBaseUrl",
        ),
        (
            with(
                "channels",
                json!({"slack": {"botToken": SLACK_BOT, "allowedUsers": ["*"],
                    "apiBaseUrl": "ftp://slack.example"}}),
            ),
            "channels.slack.apiBaseUrl",
        ),
        (
            with(
                "channels",
                json!({"discord": {"botToken": DISCORD, "allowedUsers": ["*"],
                    "apiBaseUrl": "http://169.254.169.254/api"}}),
            ),
            "channels.discord.apiBaseUrl",
        ),
        (with("channels", json!({"irc": {}})), "channels.irc"),
        (
            with(
                "channels",
                json!({"telegram": {"botToken": TG, "extra": 1}}),
            ),
            "channels.telegram.extra",
        ),
        (with("isAdmin", json!(true)), "isAdmin"),
        (with("encryptedToken", json!("v1:x:y")), "encryptedToken"),
        (with("status", json!("RUNNING")), "status"),
        (json!({"provider": "openai", "model": "m"}), "name"),
        (json!({"name": "n", "model": "m"}), "provider"),
        (json!({"name": "n", "provider": "openai"}), "model"),
        (json!([1, 2]), "body"),
        (json!("string"), "body"),
    ];
    for (body, field) in cases {
        let (status, resp) = app.create_agent(&token, body.clone()).await;
        assert!(status.is_client_error(), "{body} → {status} {resp}");
        assert_error(status, &resp, StatusCode::UNPROCESSABLE_ENTITY, Some(field));
    }

    // An empty allow-list says how to allow everyone.
    let (status, resp) = app
        .create_agent(
            &token,
            with(
                "channels",
                json!({"telegram": {"botToken": TG, "allowedUsers": []}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert!(resp.to_string().contains(r#"[\"*\"]"#), "{resp}");

    // A token of the wrong shape: the reason says the expected shape and
    // never echoes the token.
    for (channels, shape, secret) in [
        (
            json!({"telegram": {"botToken": "4242:SecretButTooShort", "allowedUsers": ["*"]}}),
            "numeric id, a colon",
            "SecretButTooShort",
        ),
        (
            json!({"discord": {"botToken": "SecretWithoutAnyDots0123456789", "allowedUsers": ["*"]}}),
            "separated by dots",
            "SecretWithoutAnyDots",
        ),
        (
            json!({"slack": {"botToken": "xoxp-SecretUserToken0123", "allowedUsers": ["*"]}}),
            "xoxb-",
            "SecretUserToken",
        ),
    ] {
        let (status, resp) = app.create_agent(&token, with("channels", channels)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
        let message = resp["error"]["message"].as_str().unwrap();
        assert!(message.contains(shape), "{resp}");
        assert!(!resp.to_string().contains(secret), "token echoed: {resp}");
    }

    // Malformed bodies.
    let (status, resp) = app
        .raw(
            Method::POST,
            "/api/agents",
            Some(&token),
            Some("application/json"),
            b"{\"name\":".to_vec(),
        )
        .await;
    assert_error(status, &resp, StatusCode::BAD_REQUEST, None);
    let (status, resp) = app
        .raw(
            Method::POST,
            "/api/agents",
            Some(&token),
            Some("application/json"),
            Vec::new(),
        )
        .await;
    assert_error(status, &resp, StatusCode::BAD_REQUEST, None);
    let (status, resp) = app
        .raw(
            Method::POST,
            "/api/agents",
            Some(&token),
            Some("text/plain"),
            b"{}".to_vec(),
        )
        .await;
    assert_error(status, &resp, StatusCode::UNSUPPORTED_MEDIA_TYPE, None);
    let (status, resp) = app
        .raw(
            Method::POST,
            "/api/agents",
            Some(&token),
            None,
            b"{}".to_vec(),
        )
        .await;
    assert_error(status, &resp, StatusCode::UNSUPPORTED_MEDIA_TYPE, None);

    // Oversized: with a Content-Length, and chunked without one.
    let huge = serde_json::to_vec(&with("communicationStyle", json!("z".repeat(200_000)))).unwrap();
    let (status, resp) = app
        .raw(
            Method::POST,
            "/api/agents",
            Some(&token),
            Some("application/json"),
            huge.clone(),
        )
        .await;
    assert_error(status, &resp, StatusCode::PAYLOAD_TOO_LARGE, None);
    let stream = futures::stream::iter(
        huge.chunks(8192)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let resp = app
        .http
        .post(app.url("/api/agents"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let resp: Value = resp.json().await.unwrap();
    assert_error(status, &resp, StatusCode::PAYLOAD_TOO_LARGE, None);

    // Unauthenticated creates are refused before the body is looked at.
    let (status, resp) = app
        .call(
            Method::POST,
            "/api/agents",
            None,
            Some(minimal_agent_body("x")),
        )
        .await;
    assert_error(status, &resp, StatusCode::UNAUTHORIZED, None);

    // Nothing was created by any of it.
    let (status, list) = app.list_agents(&token).await;
    assert_eq!((status, list), (StatusCode::OK, json!([])));
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents")
        .fetch_one(app.sql())
        .await
        .unwrap();
    assert_eq!(rows, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn create_patch_quota_and_views() {
    let mut app = TestApp::spawn().await;
    let token = app.register_email("owner@example.com").await;
    let body = json!({
        "name": "My Helper",
        "provider": "openrouter",
        "model": "anthropic/claude-3.5-sonnet",
        "apiKey": "sk-or-v1-0123456789abcdef0123",
        "channels": {"telegram": {"botToken": "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZab-STUV", "allowedUsers": ["@alice"]}},
        "communicationStyle": "Warm.\nConcise. \"Quotes\" and [toml] = syntax",
        "timezone": "Europe/Paris"
    });
    let agent = app.create_pending_agent(&token, body).await;
    assert_eq!(agent["status"], "PENDING");
    assert_eq!(agent["slug"], "my-helper");
    assert_eq!(agent["agentName"], "My Helper");
    assert_eq!(agent["subdomain"], "my-helper.test.local");
    assert_eq!(agent["temperature"], 0.7);
    assert_eq!(agent["memoryBackend"], "sqlite");
    assert_eq!(agent["autoSave"], true);
    assert_eq!(agent["cpus"], 0.5);
    assert_eq!(agent["apiKey"], "sk-…0123");
    assert_eq!(agent["channels"]["telegram"]["botToken"], "123…STUV");
    assert_eq!(
        agent["channels"]["telegram"]["allowedUsers"],
        json!(["@alice"])
    );
    let text = agent.to_string();
    for secret in ["0123456789abcdef", "ABCDEFGHIJKLMNOP", "v1:", "encrypted"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let id = agent["id"].as_str().unwrap().to_owned();

    // Secrets are not in the database in clear.
    let raw: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT encrypted_api_key, encrypted_channels FROM agents WHERE id = $1")
            .bind(&id)
            .fetch_one(app.sql())
            .await
            .unwrap();
    assert!(raw.0.as_deref().unwrap().starts_with("v1:") && !raw.0.unwrap().contains("sk-or"));
    assert!(!raw.1.unwrap().contains("ABCDEFGHIJ"));

    // Same slug again: 409 naming the field.
    let (status, resp) = app
        .create_agent(&token, minimal_agent_body("My Helper"))
        .await;
    assert_error(status, &resp, StatusCode::CONFLICT, Some("slug"));

    // PATCH: bad values are refused naming the field; slug cannot change.
    for (patch, field) in [
        (json!({"temperature": 3}), "temperature"),
        (json!({"slug": "other"}), "slug"),
        (json!({"model": ""}), "model"),
        (json!({"bogus": 1}), "bogus"),
        (json!({"name": null}), "name"),
        (
            json!({"channels": {"slack": {}}}),
            "channels.slack.botToken",
        ),
    ] {
        let (status, resp) = app.patch_agent(&token, &id, patch.clone()).await;
        assert!(status.is_client_error(), "{patch} → {status} {resp}");
        assert_eq!(resp["error"]["field"], field, "{patch} → {resp}");
    }
    // A valid PATCH applies; null clears nullable fields.
    let patch = json!({"name": "Renamed", "userName": "Al", "apiKey": null, "autoSave": false});
    let (status, resp) = app.patch_agent(&token, &id, patch).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(
        (
            resp["name"].clone(),
            resp["userName"].clone(),
            resp["apiKey"].clone(),
            resp["autoSave"].clone()
        ),
        (json!("Renamed"), json!("Al"), Value::Null, json!(false))
    );
    assert_eq!(resp["slug"], "my-helper");

    // Quota: free plan allows 3.
    app.create_pending_agent(&token, minimal_agent_body("Second"))
        .await;
    app.create_pending_agent(&token, minimal_agent_body("Third"))
        .await;
    let (status, resp) = app.create_agent(&token, minimal_agent_body("Fourth")).await;
    assert_error(status, &resp, StatusCode::FORBIDDEN, None);
    assert_eq!(resp["error"]["code"], "quota_exceeded");

    // Message validation happens on the owner's agent: empty and oversized.
    let (status, resp) = app.message(&token, &id, "").await;
    assert_error(
        status,
        &resp,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("message"),
    );
    let (status, resp) = app.message(&token, &id, &"m".repeat(40_000)).await;
    assert_error(
        status,
        &resp,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("message"),
    );
    let msg = format!("/api/agents/{id}/message");
    let (status, resp) = app
        .call(Method::POST, &msg, Some(&token), Some(json!({"msg": "hi"})))
        .await;
    assert_error(status, &resp, StatusCode::UNPROCESSABLE_ENTITY, Some("msg"));
    // Not RUNNING (its deploy cannot succeed here): 409.
    let (status, resp) = app.message(&token, &id, "hi").await;
    assert_error(status, &resp, StatusCode::CONFLICT, None);

    // Everything deletes, and the quota frees up.
    let (_, list) = app.list_agents(&token).await;
    for a in list.as_array().unwrap() {
        let (status, resp) = app.delete_agent(&token, a["id"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{resp}");
    }
    let (_, list) = app.list_agents(&token).await;
    assert_eq!(list, json!([]));
    app.shutdown().await;
}
