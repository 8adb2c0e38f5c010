//! Issue 4: the Docker daemon itself restarts under a running agent. Every
//! container is stopped with the daemon and brought back by its restart
//! policy; the control plane's event stream ends and reconnects, the full
//! resync that follows sees a new container start, and the agent is re-paired.
//!
//! Ignored by default: it restarts the machine's Docker daemon, disrupting
//! anything else using it. `scripts/test.sh` runs it on its own, after the
//! rest of the suite: `cargo test -p zcaas-tests --test daemon_restart -- --ignored`.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use zcaas_tests::{agent_containers, EnvOptions, TestEnv};

const STUB: &str = env!("CARGO_BIN_EXE_provider-stub");
const TIMEOUT: Duration = Duration::from_secs(120);

fn docker_up() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ID}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Restarts the daemon through its init script and waits until it answers.
fn restart_daemon() {
    let out = Command::new("service")
        .args(["docker", "restart"])
        .output()
        .expect("service docker restart");
    assert!(
        out.status.success(),
        "service docker restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !docker_up() {
        assert!(
            Instant::now() < deadline,
            "the Docker daemon did not come back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the machine's Docker daemon; run alone (scripts/test.sh does)"]
async fn daemon_restart_is_survived_and_agents_are_repaired() {
    let mut env = TestEnv::start(STUB, EnvOptions::default()).await.unwrap();
    let jwt = env.register("daemon").await.unwrap();
    let (code, created) = env
        .call(
            Method::POST,
            "/api/agents",
            &jwt,
            Some(env.agent_body("Daemon Proof")),
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    env.wait_status(&jwt, &id, &["RUNNING"], TIMEOUT)
        .await
        .unwrap();
    let before = env.stored_token(&id).await.unwrap();

    tokio::task::spawn_blocking(restart_daemon).await.unwrap();

    // Back to RUNNING with a token for the new start, without any user action.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (code, agent) = env
            .call(Method::GET, &format!("/api/agents/{id}"), &jwt, None)
            .await
            .unwrap();
        assert_eq!(code, 200, "{agent}");
        if agent["status"] == "RUNNING" && env.stored_token(&id).await.unwrap() != before {
            break;
        }
        let gave_up = agent["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("giving up"));
        assert!(
            !gave_up && Instant::now() < deadline,
            "not re-paired after the daemon restart: {agent}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, reply) = env
        .message(&jwt, &id, "after the daemon restart")
        .await
        .unwrap();
    assert_eq!(code, 200, "{reply}");
    assert_eq!(agent_containers(&id).len(), 1);
    env.shutdown().await;
}
