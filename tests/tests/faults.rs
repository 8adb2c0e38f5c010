//! Issue 4: crash safety and self-healing against the real engine. Each test
//! breaks something — the control plane killed mid-deploy, an agent container
//! killed, restarted or removed behind its back, a crash loop — and asserts
//! the end state: RUNNING and re-paired, or ERROR with a reason; never two
//! containers for one agent, nothing orphaned.

use std::time::Duration;

use zcaas_test_support::process::ServerProcess;
use zcaas_test_support::{
    agent_containers, docker_cli, docker_inspect, volume_exists, Api, RunningAgent, TestApp, World,
};

const TIMEOUT: Duration = Duration::from_secs(90);

async fn assert_answers(env: &Api, jwt: &str, id: &str) {
    let (code, reply) = env.message(jwt, id, "are you there").await;
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
    let mut env = TestApp::in_world().await;
    let RunningAgent { jwt, id, slug, .. } = env.running_agent("Restart Me").await;
    let before = env.stored_token(&id).await;
    docker_cli(&["restart", "-t", "1", &format!("zeroclaw-{slug}")]).unwrap();
    let after = env.wait_repaired(&jwt, &id, &before, TIMEOUT).await;
    assert_ne!(before, after);
    assert_answers(&env, &jwt, &id).await;
    assert_eq!(agent_containers(&id).len(), 1);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_kill_is_recovered_and_repaired() {
    let mut env = TestApp::in_world().await;
    let RunningAgent { jwt, id, slug, .. } = env.running_agent("Kill Me").await;
    let before = env.stored_token(&id).await;
    docker_cli(&["kill", &format!("zeroclaw-{slug}")]).unwrap();
    let after = env.wait_repaired(&jwt, &id, &before, TIMEOUT).await;
    assert_ne!(before, after);
    assert_answers(&env, &jwt, &id).await;
    assert_eq!(agent_containers(&id).len(), 1);
    // The detour is on record: the kill is a transition to ERROR with its reason.
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT reason FROM agent_events WHERE agent_id = $1 AND to_status = 'ERROR'",
    )
    .bind(&id)
    .fetch_all(env.sql())
    .await
    .unwrap();
    assert!(reasons.iter().any(|r| r.contains("137")), "{reasons:?}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_container_is_recreated_with_its_config() {
    let mut env = TestApp::in_world().await;
    let RunningAgent { jwt, id, slug, .. } = env.running_agent("Remove Me").await;
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
        .await;
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
    let mut env = TestApp::in_world_with(|c| {
        c.retry_budget = 3;
        c.retry_backoff_base = Duration::from_millis(200);
    })
    .await;
    let RunningAgent { jwt, id, slug, .. } = env.running_agent("Crash Loop").await;
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
            .await;
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
    let world = World::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&world, data.path(), &[("ZCAAS_CRASH_AT", point)]).await;
    let jwt = server.register("crash").await;
    let created = server
        .create_pending_agent(&jwt, server.agent_body(&format!("crash {point}")))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let status = server.wait_exit(TIMEOUT).await;
    assert!(!status.success(), "zcaas should have died at {point}");
    drop(server);

    let server = ServerProcess::start(&world, data.path(), &[]).await;
    let agent = server
        .wait_status(&jwt, &id, &["RUNNING", "ERROR"], TIMEOUT)
        .await;
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
    let (code, _) = server.delete_agent(&jwt, &id).await;
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
    let mut env = TestApp::in_world().await;
    let RunningAgent { jwt, id, .. } = env.running_agent("Stats Me").await;
    let first = env.wait_status(&jwt, &id, &["RUNNING"], TIMEOUT).await;
    let polled = env
        .wait_for(&jwt, &id, Duration::from_secs(60), |a| {
            a["memoryMb"].as_f64().is_some_and(|m| m > 0.0)
                && a["cpuPercent"].is_number()
                && a["lastHealthAt"] != first["lastHealthAt"]
        })
        .await;
    assert!(polled["memoryMb"].as_f64().unwrap() < 256.0, "{polled}");
    env.shutdown().await;
}
