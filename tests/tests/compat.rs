//! The control plane speaks the gateway protocol, not our runtime's
//! implementation of it: here it drives a runtime that keeps its tokens across
//! restarts and prints no new pairing code (the upstream ZeroClaw behaviour),
//! unchanged.

use std::time::Duration;

use reqwest::Method;
use zcaas_tests::{
    docker_cli, docker_inspect, ensure_agent_image, EnvOptions, TestEnv, AGENT_IMAGE,
};

const STUB: &str = env!("CARGO_BIN_EXE_provider-stub");
const TIMEOUT: Duration = Duration::from_secs(90);
const PERSISTING_IMAGE: &str = "zcaas/agent-runtime-persisting:e2e";

fn started_at(container: &str) -> chrono::DateTime<chrono::Utc> {
    let c = docker_inspect(container).unwrap();
    c["State"]["StartedAt"].as_str().unwrap().parse().unwrap()
}

/// Waits until the control plane has confirmed a token for the container's
/// current start.
async fn wait_confirmed(env: &TestEnv, id: &str, container: &str) -> String {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let (token, paired) = env.stored_pairing(id).await.unwrap();
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
    ensure_agent_image(&docker).await.unwrap();
    docker
        .build_image_from_context(
            PERSISTING_IMAGE,
            &format!("FROM {AGENT_IMAGE}\nENV ZEROCLAW_PERSIST_TOKENS=true\n"),
            &[],
        )
        .await
        .unwrap();
    let opts = EnvOptions {
        runtime_image: Some(PERSISTING_IMAGE.into()),
        ..Default::default()
    };
    let mut env = TestEnv::start(STUB, opts).await.unwrap();
    let jwt = env.register("keeper").await.unwrap();
    let (code, created) = env
        .call(
            Method::POST,
            "/api/agents",
            &jwt,
            Some(env.agent_body("Keeper")),
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let agent = env
        .wait_status(&jwt, &id, &["RUNNING", "ERROR"], TIMEOUT)
        .await
        .unwrap();
    assert_eq!(agent["status"], "RUNNING", "{agent}");
    let (first, _) = env.stored_pairing(&id).await.unwrap();

    // Docker restarts it: no new code; the stored token is confirmed and kept.
    docker_cli(&["restart", "-t", "1", "zeroclaw-keeper"]).unwrap();
    let after_restart = wait_confirmed(&env, &id, "zeroclaw-keeper").await;
    assert_eq!(first, after_restart);
    let (code, reply) = env.message(&jwt, &id, "still paired").await.unwrap();
    assert_eq!(code, 200, "{reply}");

    // Stop and start through the API: the same.
    let (code, _) = env
        .call(Method::POST, &format!("/api/agents/{id}/stop"), &jwt, None)
        .await
        .unwrap();
    assert_eq!(code, 202);
    env.wait_status(&jwt, &id, &["STOPPED"], TIMEOUT)
        .await
        .unwrap();
    let (code, _) = env
        .call(Method::POST, &format!("/api/agents/{id}/start"), &jwt, None)
        .await
        .unwrap();
    assert_eq!(code, 202);
    let agent = env
        .wait_status(&jwt, &id, &["RUNNING", "ERROR"], TIMEOUT)
        .await
        .unwrap();
    assert_eq!(agent["status"], "RUNNING", "{agent}");
    let (after_start, _) = env.stored_pairing(&id).await.unwrap();
    assert_eq!(first, after_start);
    let (code, reply) = env.message(&jwt, &id, "after start").await.unwrap();
    assert_eq!(code, 200, "{reply}");
    env.shutdown().await;
}
