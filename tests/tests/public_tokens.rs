//! Agent URLs users can use (issue 13), against the real engine and our
//! runtime image: a token the owner issues reaches the agent as a
//! pre-seeded `paired_tokens` hash and opens its `/webhook` (called here on
//! the agent's published loopback port, where Traefik would send
//! `https://<slug>.<domain>/webhook`); the control plane keeps reaching
//! the agent although seeded hashes suppress the pairing code — after a
//! `docker restart` behind its back and after a restart through the API —
//! because its own token is seeded too; and a revoked token gets 401 once
//! the agent is RUNNING again, while the control plane still messages it.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use zcaas_test_support::{agent_containers, docker_cli, RunningAgent, TestApp};

const TIMEOUT: Duration = Duration::from_secs(90);

/// `POST /webhook` on the agent's gateway (its host port) with `token` as
/// the bearer token → (status, body).
async fn webhook(
    env: &TestApp,
    jwt: &str,
    id: &str,
    token: &str,
    text: &str,
) -> (StatusCode, Value) {
    let (code, agent) = env.get_agent(jwt, id).await;
    assert_eq!(code, 200, "{agent}");
    let port = agent["containerPort"].as_u64().expect("a host port");
    let res = env
        .http
        .post(format!("http://127.0.0.1:{port}/webhook"))
        .bearer_auth(token)
        .json(&json!({ "message": text }))
        .send()
        .await
        .expect("the agent's gateway answers");
    let code = res.status();
    let body = res.text().await.expect("a body");
    (
        code,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// The issued `token` opens the agent's `/webhook`: the provider stand-in's
/// reply (it echoes the message).
async fn assert_token_works(env: &TestApp, jwt: &str, id: &str, token: &str) {
    let (code, reply) = webhook(env, jwt, id, token, "hello through my token").await;
    assert_eq!(code, StatusCode::OK, "{reply}");
    assert!(
        reply["response"]
            .as_str()
            .is_some_and(|r| r.contains("hello through my token")),
        "{reply}"
    );
}

async fn assert_token_refused(env: &TestApp, jwt: &str, id: &str, token: &str) {
    let (code, reply) = webhook(env, jwt, id, token, "let me in").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{reply}");
}

/// The control plane still messages the agent (with its own token).
async fn assert_control_plane_reaches(env: &TestApp, jwt: &str, id: &str) {
    let (code, reply) = env.message(jwt, id, "are you there").await;
    assert_eq!(code, 200, "{reply}");
    assert!(
        reply["response"]
            .as_str()
            .is_some_and(|r| r.contains("are you there")),
        "{reply}"
    );
}

/// Issues a token named `name` (asserting 201 and a redeploy of the RUNNING
/// agent), waits until the agent is RUNNING again; returns (id, token).
async fn issue(env: &TestApp, jwt: &str, id: &str, name: &str) -> (String, String) {
    let (code, issued) = env.issue_token(jwt, id, name).await;
    assert_eq!(code, StatusCode::CREATED, "{issued}");
    assert_eq!(issued["restartPending"], true, "{issued}");
    env.wait_running(jwt, id).await;
    (
        issued["id"].as_str().expect("an id").to_owned(),
        issued["token"].as_str().expect("a token").to_owned(),
    )
}

/// Revokes token `token_id` (asserting 204), waits until RUNNING again.
async fn revoke(env: &TestApp, jwt: &str, id: &str, token_id: &str) {
    let (code, body) = env.revoke_token(jwt, id, token_id).await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    let agent = env
        .wait_status(
            jwt,
            id,
            &["STOPPING", "STARTING", "RUNNING", "ERROR"],
            TIMEOUT,
        )
        .await;
    assert_ne!(agent["status"], "ERROR", "{agent}");
    env.wait_running(jwt, id).await;
}

/// Waits until agent `id` is RUNNING and paired for a container start later
/// than `after`; returns that start.
async fn wait_paired_after(
    env: &TestApp,
    jwt: &str,
    id: &str,
    after: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_, agent) = env.get_agent(jwt, id).await;
        let (_, started) = env.stored_pairing(id).await;
        if agent["status"] == "RUNNING" && started > after {
            return started;
        }
        assert!(
            agent["status"] != "ERROR" || agent["lastError"].is_null(),
            "{agent}"
        );
        assert!(Instant::now() < deadline, "not re-paired in time: {agent}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_tokens_open_the_public_url_and_revocation_closes_it() {
    let mut env = TestApp::in_world().await;
    let RunningAgent {
        jwt,
        id,
        slug,
        record,
    } = env.running_agent("Public Face").await;
    assert_eq!(
        record["publicUrl"],
        format!("https://{slug}.agents.test"),
        "{record}"
    );
    // Paired with a code, as every agent without issued tokens.
    let paired_with_code = env.stored_token(&id).await;

    // Issue: the agent is redeployed with the token's hash seeded, and its
    // public webhook takes it.
    let (laptop_id, laptop) = issue(&env, &jwt, &id, "laptop").await;
    assert_token_works(&env, &jwt, &id, &laptop).await;
    assert_token_refused(&env, &jwt, &id, "zcp_not-a-token-of-this-agent").await;
    // The control plane kept its own token (seeded with the issued one; the
    // agent printed no code) and still messages the agent.
    assert_eq!(env.stored_token(&id).await, paired_with_code);
    assert_control_plane_reaches(&env, &jwt, &id).await;
    // The control plane's own token is not the user's: it is never shown.
    let (_, listed) = env.list_tokens(&jwt, &id).await;
    assert!(!listed.to_string().contains(&paired_with_code), "{listed}");

    // `docker restart` behind the control plane's back: no code is printed
    // (the runtime holds seeded tokens), the control plane re-pairs with its
    // seeded token, and the issued one still works.
    let (_, before) = env.stored_pairing(&id).await;
    docker_cli(&["restart", "-t", "1", &format!("zeroclaw-{slug}")]).unwrap();
    let restarted = wait_paired_after(&env, &jwt, &id, before).await;
    assert_control_plane_reaches(&env, &jwt, &id).await;
    assert_token_works(&env, &jwt, &id, &laptop).await;

    // A restart through the API: the same.
    let (code, body) = env.restart(&jwt, &id).await;
    assert!(code.is_success(), "{body}");
    wait_paired_after(&env, &jwt, &id, restarted).await;
    assert_control_plane_reaches(&env, &jwt, &id).await;
    assert_token_works(&env, &jwt, &id, &laptop).await;

    // A second token; both work.
    let (_, phone) = issue(&env, &jwt, &id, "phone").await;
    assert_token_works(&env, &jwt, &id, &phone).await;
    assert_token_works(&env, &jwt, &id, &laptop).await;

    // Revoke the first: once RUNNING again it is refused, the other still
    // works, and the control plane still reaches the agent.
    revoke(&env, &jwt, &id, &laptop_id).await;
    assert_token_refused(&env, &jwt, &id, &laptop).await;
    assert_token_works(&env, &jwt, &id, &phone).await;
    assert_control_plane_reaches(&env, &jwt, &id).await;
    // Still refused after another restart behind the control plane's back
    // (nothing of it survives on the volume).
    let (_, before) = env.stored_pairing(&id).await;
    docker_cli(&["restart", "-t", "1", &format!("zeroclaw-{slug}")]).unwrap();
    wait_paired_after(&env, &jwt, &id, before).await;
    assert_token_refused(&env, &jwt, &id, &laptop).await;
    assert_token_works(&env, &jwt, &id, &phone).await;

    // Revoke the last: the agent is back to pairing with a code, the token
    // is refused, the control plane reaches it.
    let (_, listed) = env.list_tokens(&jwt, &id).await;
    let phone_id = listed[0]["id"].as_str().expect("an id").to_owned();
    revoke(&env, &jwt, &id, &phone_id).await;
    assert_token_refused(&env, &jwt, &id, &phone).await;
    assert_control_plane_reaches(&env, &jwt, &id).await;
    assert_eq!(agent_containers(&id).len(), 1);
    env.shutdown().await;
}

/// When the control plane holds no token of an agent with issued tokens
/// (here: cleared while the agent is STOPPED; in life, an agent whose owner
/// issues a token before its first start), it mints its own before the
/// start, seeds its hash with the issued ones, and is accepted without any
/// pairing code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_mints_its_own_token_when_it_holds_none() {
    let mut env = TestApp::in_world().await;
    let RunningAgent { jwt, id, .. } = env.running_agent("Fresh Mint").await;
    let paired_with_code = env.stored_token(&id).await;
    let (code, body) = env.stop(&jwt, &id).await;
    assert!(code.is_success(), "{body}");
    env.wait_status(&jwt, &id, &["STOPPED"], TIMEOUT).await;
    sqlx::query("UPDATE agents SET encrypted_token = NULL WHERE id = $1")
        .bind(&id)
        .execute(env.sql())
        .await
        .unwrap();
    let (code, issued) = env.issue_token(&jwt, &id, "from the start").await;
    assert_eq!(code, StatusCode::CREATED, "{issued}");
    assert_eq!(issued["restartPending"], false, "stopped: {issued}");
    let token = issued["token"].as_str().expect("a token").to_owned();

    let (code, body) = env.start(&jwt, &id).await;
    assert!(code.is_success(), "{body}");
    env.wait_running(&jwt, &id).await;
    assert_token_works(&env, &jwt, &id, &token).await;
    assert_control_plane_reaches(&env, &jwt, &id).await;
    // A fresh token of our runtime's shape, neither the old one nor the
    // issued one.
    let own = env.stored_token(&id).await;
    assert!(own.starts_with("zc_") && own.len() == 67, "{own}");
    assert_ne!(own, paired_with_code);
    assert_ne!(own, token);
    env.shutdown().await;
}
