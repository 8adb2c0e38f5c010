//! Agent URLs users can use (issue 13) through the API, on the run's
//! backend (`ZCAAS_TEST_STORE=postgres` for PostgreSQL): bearer tokens an
//! owner issues for the agent's public URL — shown once, stored only as
//! SHA-256, listed without the token, revoked — with their validation,
//! their scoping to the owner, and the configuration generation they bump
//! (so the reconciler redeploys the agent with the new token set).
//! Delivery to a real agent is `tests/tests/public_tokens.rs`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;
use zcaas_test_support::{assert_error, minimal_agent_body, TestApp};

async fn agent(app: &TestApp, jwt: &str, name: &str) -> (String, Value) {
    let (status, created) = app.create_agent(jwt, minimal_agent_body(name)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    (created["id"].as_str().unwrap().to_owned(), created)
}

/// The stored rows of agent `id`: (name, token_hash, last_four).
async fn rows(app: &TestApp, id: &str) -> Vec<(String, String, String)> {
    sqlx::query(
        "SELECT name, token_hash, last_four FROM agent_tokens WHERE agent_id = $1 ORDER BY name",
    )
    .bind(id)
    .fetch_all(app.sql())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

async fn generation(app: &TestApp, id: &str) -> i64 {
    sqlx::query("SELECT config_generation FROM agents WHERE id = $1")
        .bind(id)
        .fetch_one(app.sql())
        .await
        .unwrap()
        .get(0)
}

fn sha256(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

#[tokio::test]
async fn issue_list_and_revoke() {
    // The deploy fails at once (no image) and is not retried: the agent
    // stays in ERROR, so no redeploy is pending.
    let app = TestApp::spawn_with(|c| c.retry_budget = 1).await;
    let alice = app.register_email("alice@example.com").await;
    let (id, created) = agent(&app, &alice, "Public").await;
    app.wait_status(&alice, &id, &["ERROR"], Duration::from_secs(30))
        .await;
    let slug = created["slug"].as_str().unwrap();
    assert_eq!(
        created["publicUrl"],
        format!("https://{slug}.test.local"),
        "{created}"
    );

    let (status, list) = app.list_tokens(&alice, &id).await;
    assert_eq!((status, list), (StatusCode::OK, json!([])));

    let before = generation(&app, &id).await;
    let (status, first) = app.issue_token(&alice, &id, "laptop").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let token = first["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("zcp_"), "{first}");
    assert_eq!(token.len(), 4 + 43, "32 bytes base64url, no padding");
    assert_eq!(first["name"], "laptop");
    assert_eq!(first["lastFour"], &token[token.len() - 4..]);
    assert_eq!(first["lastUsedAt"], Value::Null);
    assert!(first["createdAt"].is_string() && first["id"].is_string());
    assert_eq!(first["restartPending"], false, "not running: {first}");
    // Stored as its SHA-256 only, and the agent's configuration moved on.
    assert_eq!(
        rows(&app, &id).await,
        vec![(
            "laptop".to_owned(),
            sha256(&token),
            token[token.len() - 4..].to_owned()
        )]
    );
    assert_eq!(generation(&app, &id).await, before + 1);

    let (status, second) = app.issue_token(&alice, &id, "phone ✓").await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second_token = second["token"].as_str().unwrap().to_owned();
    assert_ne!(second_token, token);
    assert_eq!(generation(&app, &id).await, before + 2);

    // Oldest first; never the token or its hash.
    let (status, list) = app.list_tokens(&alice, &id).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["laptop", "phone ✓"]);
    assert_eq!(list[0]["id"], first["id"]);
    assert_eq!(list[0]["createdAt"], first["createdAt"]);
    assert_eq!(list[0]["lastFour"], first["lastFour"]);
    let mut keys: Vec<&String> = list[0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        vec!["createdAt", "id", "lastFour", "lastUsedAt", "name"]
    );
    let text = list.to_string();
    for secret in [&token, &second_token] {
        assert!(!text.contains(secret.as_str()), "{text}");
        assert!(!text.contains(&sha256(secret)), "{text}");
    }
    // Nor does the agent's record show them.
    let (_, record) = app.get_agent(&alice, &id).await;
    assert!(!record.to_string().contains(&token), "{record}");

    // Revoke: 204, gone from the list and the store, generation bumped.
    let token_id = first["id"].as_str().unwrap();
    let (status, body) = app.revoke_token(&alice, &id, token_id).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(generation(&app, &id).await, before + 3);
    let (_, list) = app.list_tokens(&alice, &id).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "phone ✓");
    assert_eq!(rows(&app, &id).await.len(), 1);
    // Unknown now: 404, nothing bumped.
    let (status, body) = app.revoke_token(&alice, &id, token_id).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, None);
    let (status, body) = app.revoke_token(&alice, &id, "no-such-token").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, None);
    assert_eq!(generation(&app, &id).await, before + 3);

    // A name is free again once revoked.
    let (status, again) = app.issue_token(&alice, &id, "laptop").await;
    assert_eq!(status, StatusCode::CREATED, "{again}");

    // The agent's DELETE takes its tokens with it.
    let (status, _) = app.delete_agent(&alice, &id).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(rows(&app, &id).await.is_empty());
}

#[tokio::test]
async fn names_are_validated_and_unique_and_tokens_capped() {
    let app = TestApp::spawn().await;
    let alice = app.register_email("alice@example.com").await;
    let (id, _) = agent(&app, &alice, "Capped").await;
    let before = generation(&app, &id).await;

    for bad in [
        "",
        "   ",
        "tab\there",
        "new\nline",
        "nul\u{0}",
        &"x".repeat(65),
    ] {
        let (status, body) = app.issue_token(&alice, &id, bad).await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("name"),
        );
    }
    let path = format!("/api/agents/{id}/tokens");
    for body in [
        json!({}),
        json!({"name": 5}),
        json!({"name": "a", "extra": 1}),
    ] {
        let (status, answer) = app
            .call(
                reqwest::Method::POST,
                &path,
                Some(&alice),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
    }
    let (status, body) = app
        .call(reqwest::Method::POST, &path, Some(&alice), Some(json!({})))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("name"),
    );
    assert_eq!(generation(&app, &id).await, before, "nothing refused bumps");

    // 64 characters (not bytes) is the limit.
    let (status, body) = app.issue_token(&alice, &id, &"é".repeat(64)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, body) = app.issue_token(&alice, &id, "ci").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app.issue_token(&alice, &id, "ci").await;
    assert_error(status, &body, StatusCode::CONFLICT, Some("name"));
    assert_eq!(rows(&app, &id).await.len(), 2);
    let bumped = generation(&app, &id).await;
    assert_eq!(bumped, before + 2, "a refused duplicate bumps nothing");

    // Another agent may use the same name.
    let (other, _) = agent(&app, &alice, "Other").await;
    let (status, body) = app.issue_token(&alice, &other, "ci").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // At most 20 per agent: the 21st is refused naming `tokens`.
    for n in 2..20 {
        let (status, body) = app.issue_token(&alice, &id, &format!("t{n}")).await;
        assert_eq!(status, StatusCode::CREATED, "{n}: {body}");
    }
    assert_eq!(rows(&app, &id).await.len(), 20);
    let (status, body) = app.issue_token(&alice, &id, "one too many").await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("tokens"),
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("20"),
        "{body}"
    );
    assert_eq!(rows(&app, &id).await.len(), 20);
}

#[tokio::test]
async fn another_users_agent_is_a_404() {
    let app = TestApp::spawn().await;
    let alice = app.register_email("alice@example.com").await;
    let bob = app.register_email("bob@example.com").await;
    let (id, _) = agent(&app, &alice, "Alices").await;
    let (bobs, _) = agent(&app, &bob, "Bobs").await;
    let (status, issued) = app.issue_token(&alice, &id, "mine").await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let token_id = issued["id"].as_str().unwrap();

    let (status, body) = app.issue_token(&bob, &id, "theirs").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, None);
    let (status, body) = app.list_tokens(&bob, &id).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, None);
    let (status, body) = app.revoke_token(&bob, &id, token_id).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, None);
    // Nor through an agent of bob's.
    let (status, body) = app.revoke_token(&bob, &bobs, token_id).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, None);
    // Unknown agents, and ids no store holds.
    let (status, body) = app.list_tokens(&alice, "no-such-agent").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, None);
    let (status, body) = app.revoke_token(&alice, &id, &"x".repeat(65)).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, None);
    let (status, body) = app.revoke_token(&alice, &id, "nul%00byte").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, None);
    // Without a JWT: 401.
    let (status, _) = app
        .call(
            reqwest::Method::GET,
            &format!("/api/agents/{id}/tokens"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Alice's token is untouched.
    let (_, list) = app.list_tokens(&alice, &id).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

/// What the reconciler reads and writes for delivery, on the run's backend:
/// the sorted digests it seeds, and its own token stored without a start.
#[tokio::test]
async fn the_store_gives_the_reconciler_the_digests_and_keeps_its_own_token() {
    let app = TestApp::spawn_with(|c| c.retry_budget = 1).await;
    let alice = app.register_email("alice@example.com").await;
    let (id, _) = agent(&app, &alice, "Seeded").await;
    app.wait_status(&alice, &id, &["ERROR"], Duration::from_secs(30))
        .await;
    let store = &app.state().store;
    assert!(store.agent_tokens().hashes(&id).await.unwrap().is_empty());
    let mut want = Vec::new();
    for name in ["b", "a", "c"] {
        let (status, issued) = app.issue_token(&alice, &id, name).await;
        assert_eq!(status, StatusCode::CREATED, "{issued}");
        want.push(sha256(issued["token"].as_str().unwrap()));
    }
    want.sort();
    assert_eq!(store.agent_tokens().hashes(&id).await.unwrap(), want);
    assert!(store
        .agent_tokens()
        .hashes("no-such-agent")
        .await
        .unwrap()
        .is_empty());
    // Listed oldest first whatever the names.
    let listed: Vec<String> = store
        .agent_tokens()
        .list(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(listed, vec!["b", "a", "c"]);

    let before = store.lifecycle().get(&id).await.unwrap().unwrap();
    store
        .lifecycle()
        .set_token(&id, "v1:k1:minted")
        .await
        .unwrap();
    let after = store.lifecycle().get(&id).await.unwrap().unwrap();
    assert_eq!(after.encrypted_token.as_deref(), Some("v1:k1:minted"));
    assert_eq!(after.paired_started_at, before.paired_started_at);
    assert_eq!(after.config_generation, before.config_generation);
}
