//! `zcaas keys rotate` under running agents, and ciphertexts moved between
//! rows by a database writer.

use serde_json::json;
use zcaas::secrets::SecretField;
use zcaas_test_support::{agent_containers, TestApp, DEPLOY_TIMEOUT};

use super::capture::*;
use super::support::*;

/// `zcaas keys rotate` beside a running server with deployed agents: every
/// ciphertext moves to the new key, old ciphertexts still decrypt, agents
/// keep answering and re-pair with the new key. A ciphertext moved into
/// another agent's row is refused (its associated data names its agent):
/// the deploy fails with a clear reason instead of using another tenant's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_and_swapped_ciphertexts() {
    capture();
    let mut env = TestApp::in_world_with(|c| c.retry_budget = 1).await;
    let jwt = env.register("rotor").await;
    let key_a = unique("sk-agent-a-");
    let key_b = unique("sk-agent-b-");
    let mut body_a = env.agent_body(&format!("Rotor A {}", env.prefix));
    body_a["apiKey"] = json!(key_a);
    body_a["channels"] = json!({"telegram": {"botToken": format!("123456789:{}", unique("tg-a-")), "allowedUsers": ["*"],
        "apiBaseUrl": env.local_channel_api()}});
    let mut body_b = env.agent_body(&format!("Rotor B {}", env.prefix));
    body_b["apiKey"] = json!(key_b);
    let (a, b) = tokio::join!(
        env.create_running_agent(&jwt, body_a),
        env.create_running_agent(&jwt, body_b)
    );
    let (a, b) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    let state = env.app().state();
    let old_kid = state.secrets.current_key_id();
    let old_a = stored(&env, &a).await;

    // Rotate while the server runs.
    let report = zcaas::cli::rotate_keys(&env.config).await.unwrap();
    assert_eq!(
        (
            report.reencrypted,
            report.changed_meanwhile,
            report.unreadable
        ),
        (5, 0, 0),
        "A: token, key, channels; B: token, key"
    );
    let new_kid = report.new_key_id.clone();
    assert_ne!(new_kid, old_kid);
    for id in [&a, &b] {
        let (t, k, c) = stored(&env, id).await;
        for ct in [t, k].into_iter().chain(c.into_iter().map(Some)) {
            let ct = ct.unwrap();
            assert!(ct.starts_with(&format!("v1:{new_kid}:")), "{ct}");
        }
    }
    // Old ciphertexts still decrypt: the old key stays in the keyring.
    let fresh = zcaas::secrets::SecretBox::load(&env.config.master_key_path()).unwrap();
    assert_eq!(fresh.current_key_id(), new_kid);
    assert!(fresh.key_ids().contains(&old_kid));
    let old_key_ct = old_a.1.clone().unwrap();
    assert!(old_key_ct.starts_with(&format!("v1:{old_kid}:")));
    for secrets in [&fresh, &*state.secrets] {
        assert_eq!(
            secrets
                .decrypt(&a, SecretField::ApiKey, &old_key_ct)
                .unwrap(),
            key_a
        );
    }
    // The running server reads the new ciphertexts (it learns the new key).
    for id in [&a, &b] {
        let (code, reply) = env.message(&jwt, id, "after rotation").await;
        assert_eq!(code, 200, "{reply}");
    }
    assert_eq!(
        state.secrets.current_key_id(),
        new_kid,
        "the server now encrypts with it"
    );
    // A restart re-pairs, and the new token is stored under the new key.
    restart(&env, &jwt, &a).await;
    let (token_a, _, _) = stored(&env, &a).await;
    assert!(token_a.unwrap().starts_with(&format!("v1:{new_kid}:")));
    let (code, reply) = env.message(&jwt, &a, "after restart").await;
    assert_eq!(code, 200, "{reply}");

    // A database writer swaps the two agents' API key ciphertexts.
    let (_, ka, _) = stored(&env, &a).await;
    let (_, kb, _) = stored(&env, &b).await;
    set_api_keys(&env, [(&a, &kb), (&b, &ka)]).await;
    // Neither key shows, not even masked: the view cannot decrypt it.
    let (_, view) = env.get_agent(&jwt, &a).await;
    assert_eq!(view["apiKey"], "***", "{view}");
    // A's next start must decrypt its key: refused, ERROR with the reason.
    let (code, body) = env.restart(&jwt, &a).await;
    assert_eq!(code, 202, "{body}");
    let failed = env.wait_status(&jwt, &a, &["ERROR"], DEPLOY_TIMEOUT).await;
    let reason = failed["lastError"].as_str().unwrap();
    assert!(
        reason.contains("decrypting the API key") && reason.contains("decryption failed"),
        "{reason}"
    );
    assert!(
        !reason.contains(&key_a) && !reason.contains(&key_b),
        "{reason}"
    );
    assert!(
        agent_containers(&a).is_empty(),
        "no container was started with a wrong key"
    );
    // B runs on: its container has its own key in its volume.
    let (code, reply) = env.message(&jwt, &b, "b is fine").await;
    assert_eq!(code, 200, "{reply}");

    // Put them back: A deploys again with its own key.
    set_api_keys(&env, [(&a, &ka), (&b, &kb)]).await;
    let (_, k_after, _) = stored(&env, &a).await;
    assert_eq!(k_after, ka);
    let (code, body) = env.retry(&jwt, &a).await;
    assert_eq!(code, 202, "{body}");
    let agent = env.wait_running(&jwt, &a).await;
    let container = agent["containerId"].as_str().unwrap();
    let (_, config) = container_file(container, "/zeroclaw-data/.zeroclaw/config.toml");
    assert!(
        String::from_utf8(config).unwrap().contains(&key_a),
        "A's own key"
    );
    let (code, reply) = env.message(&jwt, &a, "a is back").await;
    assert_eq!(code, 200, "{reply}");
    env.shutdown().await;
}
