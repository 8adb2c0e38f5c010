//! The control plane speaks the gateway protocol, not our runtime's
//! implementation of it: here it drives a runtime that keeps its tokens across
//! restarts and prints no new pairing code (the upstream ZeroClaw behaviour),
//! unchanged.

use std::time::Duration;

use zcaas_test_support::{docker_cli, docker_inspect, ensure_agent_image, TestApp, AGENT_IMAGE};

const TIMEOUT: Duration = Duration::from_secs(90);
const PERSISTING_IMAGE: &str = "zcaas/agent-runtime-persisting:e2e";

fn started_at(container: &str) -> chrono::DateTime<chrono::Utc> {
    let c = docker_inspect(container).unwrap();
    c["State"]["StartedAt"].as_str().unwrap().parse().unwrap()
}

/// Waits until the control plane has confirmed a token for the container's
/// current start.
async fn wait_confirmed(env: &TestApp, id: &str, container: &str) -> String {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let (token, paired) = env.stored_pairing(id).await;
        if paired >= started_at(container) {
            return token;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "token never confirmed for the new start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_keeps_tokens_keeps_its_token() {
    let docker = zcaas::docker::DockerRuntime::connect(Default::default())
        .await
        .unwrap();
    ensure_agent_image(&docker).await;
    docker
        .build_image_from_context(
            PERSISTING_IMAGE,
            &format!("FROM {AGENT_IMAGE}\nENV ZEROCLAW_PERSIST_TOKENS=true\n"),
            &[],
        )
        .await
        .unwrap();
    let mut env = TestApp::in_world_with(|c| c.runtime_image = PERSISTING_IMAGE.into()).await;
    let jwt = env.register("keeper").await;
    let agent = env
        .create_running_agent(&jwt, env.agent_body("Keeper"))
        .await;
    let id = agent["id"].as_str().unwrap().to_owned();
    let (first, _) = env.stored_pairing(&id).await;

    // Docker restarts it: no new code; the stored token is confirmed and kept.
    docker_cli(&["restart", "-t", "1", "zeroclaw-keeper"]).unwrap();
    let after_restart = wait_confirmed(&env, &id, "zeroclaw-keeper").await;
    assert_eq!(first, after_restart);
    let (code, reply) = env.message(&jwt, &id, "still paired").await;
    assert_eq!(code, 200, "{reply}");

    // Stop and start through the API: the same.
    let (code, _) = env.stop(&jwt, &id).await;
    assert_eq!(code, 202);
    env.wait_status(&jwt, &id, &["STOPPED"], TIMEOUT).await;
    let (code, _) = env.start(&jwt, &id).await;
    assert_eq!(code, 202);
    env.wait_running(&jwt, &id).await;
    let (after_start, _) = env.stored_pairing(&id).await;
    assert_eq!(first, after_start);
    let (code, reply) = env.message(&jwt, &id, "after start").await;
    assert_eq!(code, 200, "{reply}");
    env.shutdown().await;
}
