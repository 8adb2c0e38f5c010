//! Issue 4: crash safety and self-healing against the real engine. Each test
//! breaks something — the control plane killed mid-deploy, an agent container
//! killed, restarted or removed behind its back, a crash loop — and asserts
//! the end state: RUNNING and re-paired, or ERROR with a reason; never two
//! containers for one agent, nothing orphaned.

use std::time::Duration;

use reqwest::Method;
use zcaas_tests::process::ServerProcess;
use zcaas_tests::{
    agent_containers, docker_cli, docker_inspect, volume_exists, EnvOptions, TestEnv, World,
};

const STUB: &str = env!("CARGO_BIN_EXE_provider-stub");
const TIMEOUT: Duration = Duration::from_secs(90);

/// Creates an agent and waits for RUNNING; returns (jwt, id, slug).
async fn running_agent(env: &TestEnv, name: &str) -> (String, String, String) {
    let jwt = env.register(&name.replace(' ', "-")).await.unwrap();
    let (code, created) = env
        .call(
            Method::POST,
            "/api/agents",
            &jwt,
            Some(env.agent_body(name)),
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
    (jwt, id, agent["slug"].as_str().unwrap().to_owned())
}

/// Waits until the agent is RUNNING with a stored token other than `old`.
/// A detour through ERROR with a retry scheduled is fine; giving up is not.
async fn wait_repaired(env: &TestEnv, jwt: &str, id: &str, old: &str) -> String {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let agent = env
            .wait_for(jwt, id, TIMEOUT, |a| {
                a["status"] == "RUNNING" || a["status"] == "ERROR"
            })
            .await
            .unwrap();
        let gave_up = agent["status"] == "ERROR"
            && agent["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("giving up"));
        assert!(!gave_up, "{agent}");
        if agent["status"] == "RUNNING" {
            let token = env.stored_token(id).await.unwrap();
            if token != old {
                return token;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "agent {id} was not re-paired: {agent}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_answers(env: &zcaas_tests::Api, jwt: &str, id: &str) {
    let (code, reply) = env.message(jwt, id, "are you there").await.unwrap();
    assert_eq!(code, 200, "{reply}");
    assert!(
        reply["response"]
            .as_str()
            .unwrap()
            .contains("are you there"),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_restart_is_repaired() {
    let mut env = TestEnv::start(STUB, EnvOptions::default()).await.unwrap();
    let (jwt, id, slug) = running_agent(&env, "Restart Me").await;
    let before = env.stored_token(&id).await.unwrap();
    docker_cli(&["restart", "-t", "1", &format!("zeroclaw-{slug}")]).unwrap();
    let after = wait_repaired(&env, &jwt, &id, &before).await;
    assert_ne!(before, after);
    assert_answers(&env, &jwt, &id).await;
    assert_eq!(agent_containers(&id).len(), 1);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_kill_is_recovered_and_repaired() {
    let mut env = TestEnv::start(STUB, EnvOptions::default()).await.unwrap();
    let (jwt, id, slug) = running_agent(&env, "Kill Me").await;
    let before = env.stored_token(&id).await.unwrap();
    docker_cli(&["kill", &format!("zeroclaw-{slug}")]).unwrap();
    let after = wait_repaired(&env, &jwt, &id, &before).await;
    assert_ne!(before, after);
    assert_answers(&env, &jwt, &id).await;
    assert_eq!(agent_containers(&id).len(), 1);
    // The detour is on record: the kill is a transition to ERROR with its reason.
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT reason FROM agent_events WHERE agent_id = ?1 AND to_status = 'ERROR'",
    )
    .bind(&id)
    .fetch_all(&env.app().state().db)
    .await
    .unwrap();
    assert!(reasons.iter().any(|r| r.contains("137")), "{reasons:?}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_container_is_recreated_with_its_config() {
    let mut env = TestEnv::start(STUB, EnvOptions::default()).await.unwrap();
    let (jwt, id, slug) = running_agent(&env, "Remove Me").await;
    let name = format!("zeroclaw-{slug}");
    let old_id = docker_inspect(&name).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    docker_cli(&["rm", "-f", &name]).unwrap();
    let agent = env
        .wait_for(&jwt, &id, TIMEOUT, |a| {
            a["status"] == "RUNNING" && a["containerId"].as_str().is_some_and(|c| c != old_id)
        })
        .await
        .unwrap();
    assert_answers(&env, &jwt, &id).await;
    assert_eq!(
        agent_containers(&id),
        [agent["containerId"].as_str().unwrap()[..12].to_owned()]
    );
    // Persona injected again into the new container.
    let identity = docker_cli(&[
        "cp",
        &format!("{name}:/zeroclaw-data/workspace/IDENTITY.md"),
        "-",
    ])
    .unwrap();
    assert!(identity.contains("Test Agent"), "{identity}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_goes_to_error_after_the_retry_budget() {
    let opts = EnvOptions {
        retry_budget: Some(3),
        retry_backoff_base: Some(Duration::from_millis(200)),
        ..Default::default()
    };
    let mut env = TestEnv::start(STUB, opts).await.unwrap();
    let (jwt, id, slug) = running_agent(&env, "Crash Loop").await;
    let name = format!("zeroclaw-{slug}");
    // Kill the agent every time it comes back, as a crashing process would.
    let final_state = loop {
        let agent = env
            .wait_for(&jwt, &id, TIMEOUT, |a| {
                a["status"] == "RUNNING"
                    || (a["status"] == "ERROR"
                        && a["lastError"]
                            .as_str()
                            .is_some_and(|e| e.contains("giving up")))
            })
            .await
            .unwrap();
        if agent["status"] == "ERROR" {
            break agent;
        }
        let _ = docker_cli(&["kill", &name]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(final_state["attempts"], 3, "{final_state}");
    assert!(
        final_state["lastError"].as_str().unwrap().contains("137"),
        "{final_state}"
    );
    assert!(
        agent_containers(&id).is_empty(),
        "a failed agent keeps no container"
    );
    assert!(
        volume_exists(&format!("{name}-data")),
        "an agent that ran keeps its memory volume"
    );
    env.shutdown().await;
}

/// SIGKILL (an abort at a crash point) at one deploy step, then a restart of
/// the control plane on the same data directory.
async fn crash_at(point: &str) {
    let world = World::start(STUB).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&world, data.path(), &[("ZCAAS_CRASH_AT", point)])
        .await
        .unwrap();
    let jwt = server.register("crash").await.unwrap();
    let (code, created) = server
        .call(
            Method::POST,
            "/api/agents",
            &jwt,
            Some(server.agent_body(&format!("crash {point}"))),
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let status = server.wait_exit(TIMEOUT).await.unwrap();
    assert!(!status.success(), "zcaas should have died at {point}");
    drop(server);

    let server = ServerProcess::start(&world, data.path(), &[])
        .await
        .unwrap();
    let agent = server
        .wait_status(&jwt, &id, &["RUNNING", "ERROR"], TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        agent["status"], "RUNNING",
        "after a crash at {point}: {agent}"
    );
    let containers = agent_containers(&id);
    assert_eq!(
        containers.len(),
        1,
        "after a crash at {point}: {containers:?}"
    );
    let c = docker_inspect(&containers[0]).unwrap();
    assert_eq!(c["Id"], agent["containerId"]);
    assert_eq!(
        c["HostConfig"]["PortBindings"]["42617/tcp"][0]["HostPort"],
        agent["containerPort"].as_u64().unwrap().to_string()
    );
    assert_answers(&server, &jwt, &id).await;
    let (code, _) = server
        .call(Method::DELETE, &format!("/api/agents/{id}"), &jwt, None)
        .await
        .unwrap();
    assert_eq!(code, 204);
    assert!(agent_containers(&id).is_empty());
    assert!(!volume_exists(&format!("zeroclaw-crash-{point}-data")));
}

macro_rules! crash_tests {
    ($($name:ident => $point:literal),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            crash_at($point).await;
        }
    )*};
}

crash_tests! {
    control_plane_killed_after_the_row => "after-row",
    control_plane_killed_after_create => "after-create",
    control_plane_killed_after_put_archive => "after-upload",
    control_plane_killed_after_start => "after-start",
    control_plane_killed_after_the_code_is_read => "after-code",
    control_plane_killed_after_pairing => "after-pair",
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_agents_stats_and_health_are_refreshed() {
    let mut env = TestEnv::start(STUB, EnvOptions::default()).await.unwrap();
    let (jwt, id, _) = running_agent(&env, "Stats Me").await;
    let first = env
        .wait_status(&jwt, &id, &["RUNNING"], TIMEOUT)
        .await
        .unwrap();
    let polled = env
        .wait_for(&jwt, &id, Duration::from_secs(60), |a| {
            a["memoryMb"].as_f64().is_some_and(|m| m > 0.0)
                && a["cpuPercent"].is_number()
                && a["lastHealthAt"] != first["lastHealthAt"]
        })
        .await
        .unwrap();
    assert!(polled["memoryMb"].as_f64().unwrap() < 256.0, "{polled}");
    env.shutdown().await;
}
