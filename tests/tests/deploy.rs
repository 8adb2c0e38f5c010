//! Issue 3 end to end: `POST /api/agents` to a paired, RUNNING agent on the
//! real Docker engine, every lifecycle operation, and nothing left behind.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use zcaas_test_support::{docker_cli, docker_inspect, volume_exists, TestApp};

const DEPLOY_TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_message_restart_stop_start_delete() {
    let mut env = TestApp::in_world().await;
    let jwt = env.register("alice").await;

    // 202 with the PENDING record, at once.
    let (code, created) = env.create_agent(&jwt, env.agent_body("Alice Helper")).await;
    assert_eq!(code, 202, "{created}");
    assert_eq!(created["status"], "PENDING");
    assert_eq!(created["slug"], "alice-helper");
    let id = created["id"].as_str().unwrap().to_owned();
    let text = created.to_string();
    assert!(
        !text.contains("sk-test-not-a-real-key-1234"),
        "API key returned in clear: {text}"
    );
    assert!(
        !text.to_lowercase().contains("encrypted"),
        "encrypted field returned: {text}"
    );

    let agent = env.wait_running(&jwt, &id).await;
    let port = agent["containerPort"].as_u64().unwrap();
    assert!((40000..=50000).contains(&port), "{port}");
    assert!(agent["containerId"].is_string());
    assert!(agent["lastHealthAt"].is_string());

    // The container matches seed 003's spec.
    let c = docker_inspect("zeroclaw-alice-helper").expect("container exists");
    assert_eq!(c["Id"], agent["containerId"]);
    // Our image is labelled with the zcaas runtime profile: `daemon`.
    assert_eq!(c["Config"]["Cmd"], json!(["daemon"]));
    let bindings = &c["HostConfig"]["PortBindings"]["42617/tcp"][0];
    assert_eq!(bindings["HostIp"], "127.0.0.1");
    assert_eq!(bindings["HostPort"], port.to_string());
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    assert_eq!(c["HostConfig"]["Init"], true, "an init process as PID 1");
    assert_eq!(c["HostConfig"]["NetworkMode"], env.config.network);
    assert!(c["HostConfig"]["Memory"].as_i64().unwrap() > 0);
    assert_eq!(
        c["HostConfig"]["NanoCpus"], 500_000_000,
        "free plan: 0.5 CPU"
    );
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["io.zcaas.managed"], "true");
    assert_eq!(labels["io.zcaas.agent-id"], id.as_str());
    assert_eq!(labels["traefik.enable"], "true");
    assert_eq!(
        labels["traefik.http.routers.alice-helper.rule"],
        "Host(`alice-helper.agents.test`) && (Path(`/webhook`) || Path(`/health`))"
    );
    assert_eq!(
        labels["traefik.http.services.alice-helper.loadbalancer.server.port"],
        "42617"
    );
    let env_vars = c["Config"]["Env"].to_string();
    assert!(!env_vars.contains("sk-test"), "secret in Env: {env_vars}");
    let volume = "zeroclaw-alice-helper-data";
    assert!(volume_exists(volume));

    // A message goes through the agent to the provider stand-in and back.
    let (code, reply) = env.message(&jwt, &id, "hello there").await;
    assert_eq!(code, 200, "{reply}");
    assert!(
        reply["response"].as_str().unwrap().contains("hello there"),
        "{reply}"
    );

    // Restart: re-paired with a different token, and messages still work.
    let first_token = env.stored_token(&id).await;
    let (code, body) = env.restart(&jwt, &id).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "STOPPING");
    env.wait_running(&jwt, &id).await;
    let second_token = env.stored_token(&id).await;
    assert_ne!(
        first_token, second_token,
        "restart must re-pair with a new token"
    );
    let (code, reply) = env.message(&jwt, &id, "after restart").await;
    assert_eq!(code, 200, "{reply}");

    // Stop → STOPPED, container not running; a message now is a conflict.
    let (code, _) = env.stop(&jwt, &id).await;
    assert_eq!(code, 202);
    env.wait_status(&jwt, &id, &["STOPPED"], DEPLOY_TIMEOUT)
        .await;
    let c = docker_inspect("zeroclaw-alice-helper").unwrap();
    assert_eq!(c["State"]["Running"], false);
    // SIGTERM reached the agent through the init process: a clean exit,
    // not the SIGKILL (137) of a stop timeout.
    assert_eq!(c["State"]["ExitCode"], 0, "{}", c["State"]);
    let (code, _) = env.message(&jwt, &id, "while stopped").await;
    assert_eq!(code, 409);
    // Stopping a stopped agent is refused by the state machine.
    let (code, body) = env.stop(&jwt, &id).await;
    assert_eq!(code, 409, "{body}");

    // Start → new code since that start, new token → RUNNING.
    let (code, body) = env.start(&jwt, &id).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "STARTING");
    env.wait_status(&jwt, &id, &["RUNNING"], DEPLOY_TIMEOUT)
        .await;
    let third_token = env.stored_token(&id).await;
    assert_ne!(second_token, third_token);
    let (code, reply) = env.message(&jwt, &id, "after start").await;
    assert_eq!(code, 200, "{reply}");

    // Logs, stats and health proxies.
    let (code, logs) = env.logs(&jwt, &id).await;
    assert_eq!(code, 200, "{logs}");
    let logs_text = logs.to_string();
    assert!(!logs_text.contains(&third_token), "token in logs");
    let (code, stats) = env.stats(&jwt, &id).await;
    assert_eq!(code, 200, "{stats}");
    assert!(stats["memoryMb"].as_f64().unwrap() > 0.0, "{stats}");
    let (code, health) = env.health(&jwt, &id).await;
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "ok");

    // Every transition is in agent_events with its reason.
    let events: Vec<(Option<String>, String, String)> = sqlx::query_as(
        "SELECT from_status, to_status, reason FROM agent_events WHERE agent_id = $1 ORDER BY id",
    )
    .bind(&id)
    .fetch_all(env.sql())
    .await
    .unwrap();
    let path: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        path,
        [
            "PENDING", "STARTING", "RUNNING", "STOPPING", "STOPPED", "STARTING", "RUNNING",
            "STOPPING", "STOPPED", "STARTING", "RUNNING"
        ],
        "{events:?}"
    );
    assert!(events.iter().all(|e| !e.2.is_empty()));

    // Delete removes container, volume and the port claim.
    let (code, _) = env.delete_agent(&jwt, &id).await;
    assert_eq!(code, 204);
    assert!(
        docker_inspect("zeroclaw-alice-helper").is_none(),
        "container left behind"
    );
    assert!(!volume_exists(volume), "volume left behind");
    let (code, _) = env.get_agent(&jwt, &id).await;
    assert_eq!(code, 404);
    let ports: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE container_port IS NOT NULL")
            .fetch_one(env.sql())
            .await
            .unwrap();
    assert_eq!(ports, 0);
    env.shutdown().await;
}

/// Forced to the `zeroclaw-v3` profile, our image gets a V3 config (which
/// our runtime reads too): the provider, key and model come from
/// `[providers.models.*]`, and the persona from the workspace the config
/// names, where the files were written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v3_config_deploys_and_its_persona_reaches_the_provider() {
    let mut env = TestApp::in_world_with(|c| {
        c.runtime_profile = zcaas::runtime_profile::ProfileSetting::ZeroclawV3;
    })
    .await;
    let jwt = env.register("vthree").await;
    let mut body = env.agent_body("Vthree Helper");
    body["channels"] = json!({"telegram": {"botToken": format!("123456789:AAE0v3-{}-not-a-real-token", env.prefix), "allowedUsers": ["*"],
        "apiBaseUrl": env.local_channel_api()}});
    let agent = env.create_running_agent(&jwt, body).await;
    let id = agent["id"].as_str().unwrap().to_owned();

    let c = docker_inspect("zeroclaw-vthree-helper").expect("container exists");
    assert_eq!(c["Config"]["Cmd"], json!(["daemon"]));
    let env_vars = c["Config"]["Env"].to_string();
    assert!(
        env_vars.contains("ZEROCLAW_gateway__port=42617"),
        "{env_vars}"
    );
    let out = std::process::Command::new("docker")
        .args([
            "cp",
            "zeroclaw-vthree-helper:/zeroclaw-data/.zeroclaw/config.toml",
            "-",
        ])
        .output()
        .expect("docker cp");
    let tar = String::from_utf8_lossy(&out.stdout);
    assert!(tar.contains("schema_version = 3"), "{tar}");
    assert!(tar.contains("[peer_groups.telegram_default]"), "{tar}");

    let (code, reply) = env.message(&jwt, &id, "!system").await;
    assert_eq!(code, 200, "{reply}");
    let system = reply["response"].as_str().unwrap();
    assert!(system.contains("Your name is Test Agent"), "{system}");
    assert!(system.contains("Timezone: Europe/Paris"), "{system}");
    let (code, _) = env.delete_agent(&jwt, &id).await;
    assert_eq!(code, 204);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_see_only_their_own_agents() {
    let mut env = TestApp::in_world().await;
    let alice = env.register("alice").await;
    let bob = env.register("bob").await;
    let (_, a) = env.create_agent(&alice, env.agent_body("Alice One")).await;
    let (_, b) = env.create_agent(&bob, env.agent_body("Bob One")).await;
    let (a_id, b_id) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    tokio::join!(
        env.wait_running(&alice, &a_id),
        env.wait_running(&bob, &b_id)
    );

    let (_, list) = env.list_agents(&alice).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a_id.as_str()]);
    for (method, path) in [
        (Method::GET, format!("/api/agents/{a_id}")),
        (Method::POST, format!("/api/agents/{a_id}/stop")),
        (Method::GET, format!("/api/agents/{a_id}/logs")),
        (Method::DELETE, format!("/api/agents/{a_id}")),
    ] {
        let (code, body) = env.call(method.clone(), &path, Some(&bob), None).await;
        assert_eq!(code, 404, "{method} {path}: {body}");
    }
    let (code, reply) = env.message(&bob, &b_id, "bob's message").await;
    assert_eq!(code, 200, "{reply}");
    for (jwt, id) in [(&alice, &a_id), (&bob, &b_id)] {
        let (code, _) = env.delete_agent(jwt, id).await;
        assert_eq!(code, 204);
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_creates_have_no_collision() {
    let mut env = TestApp::in_world().await;
    let jwt = env.register("bulk").await;
    sqlx::query("UPDATE users SET plan = 'enterprise'")
        .execute(env.sql())
        .await
        .unwrap();
    let creates = (0..20).map(|i| {
        let env = &env;
        let jwt = &jwt;
        async move {
            let (code, body) = env
                .create_agent(jwt, env.agent_body(&format!("bulk {i}")))
                .await;
            assert_eq!(code, 202, "{body}");
            body["id"].as_str().unwrap().to_owned()
        }
    });
    let ids = futures::future::join_all(creates).await;
    let waits = ids
        .iter()
        .map(|id| env.wait_status(&jwt, id, &["RUNNING", "ERROR"], Duration::from_secs(240)));
    let agents: Vec<Value> = futures::future::join_all(waits).await;
    for a in &agents {
        assert_eq!(a["status"], "RUNNING", "{a}");
    }
    let ports: HashSet<u64> = agents
        .iter()
        .map(|a| a["containerPort"].as_u64().unwrap())
        .collect();
    let names: HashSet<&str> = agents.iter().map(|a| a["slug"].as_str().unwrap()).collect();
    assert_eq!(ports.len(), 20, "port collision");
    assert_eq!(names.len(), 20, "name collision");
    for id in &ids {
        let (code, _) = env.delete_agent(&jwt, id).await;
        assert_eq!(code, 204);
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_image_ends_in_error_with_nothing_left_behind() {
    // An image whose entrypoint does not exist: create succeeds, start fails.
    let broken = "zcaas/broken-runtime:e2e";
    let docker = zcaas::docker::DockerRuntime::connect(Default::default())
        .await
        .unwrap();
    docker
        .build_image_from_context(
            broken,
            "FROM scratch\nCOPY note /note\nENTRYPOINT [\"/no-such-binary\"]\n",
            &[("note".to_string(), b"broken on purpose\n".to_vec(), 0o644)],
        )
        .await
        .unwrap();
    let mut env = TestApp::in_world_with(|c| {
        c.runtime_image = broken.into();
        c.retry_budget = 1;
    })
    .await;
    let jwt = env.register("carol").await;
    let created = env
        .create_pending_agent(&jwt, env.agent_body("Broken One"))
        .await;
    let id = created["id"].as_str().unwrap();
    let agent = env
        .wait_status(&jwt, id, &["ERROR", "RUNNING"], DEPLOY_TIMEOUT)
        .await;
    assert_eq!(agent["status"], "ERROR", "{agent}");
    assert!(
        agent["lastError"].as_str().is_some_and(|e| !e.is_empty()),
        "{agent}"
    );
    assert!(
        agent["containerPort"].is_null(),
        "port not released: {agent}"
    );
    assert!(
        docker_inspect("zeroclaw-broken-one").is_none(),
        "container left behind"
    );
    assert!(
        !volume_exists("zeroclaw-broken-one-data"),
        "volume left behind"
    );
    // ERROR → retry → PENDING is allowed and fails the same way again.
    let (code, body) = env.start(&jwt, id).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "PENDING");
    env.wait_status(&jwt, id, &["ERROR"], DEPLOY_TIMEOUT).await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_of_a_running_agent_reinjects_and_repairs() {
    let mut env = TestApp::in_world().await;
    let jwt = env.register("dave").await;
    let (_, created) = env.create_agent(&jwt, env.agent_body("Patch Me")).await;
    let id = created["id"].as_str().unwrap().to_owned();
    env.wait_status(&jwt, &id, &["RUNNING"], DEPLOY_TIMEOUT)
        .await;
    let before = env.stored_token(&id).await;

    let patch = json!({"agentName": "Renamed Agent", "communicationStyle": "like a pirate"});
    let (code, body) = env.patch_agent(&jwt, &id, patch).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["agentName"], "Renamed Agent");
    let agent = env
        .wait_for(&jwt, &id, DEPLOY_TIMEOUT, |a| {
            a["status"] == "RUNNING" && a["updatedAt"] != body["updatedAt"]
        })
        .await;
    assert_eq!(agent["status"], "RUNNING");
    let after = env.stored_token(&id).await;
    assert_ne!(
        before, after,
        "a reconfigured agent is restarted and re-paired"
    );
    let identity = docker_cli(&[
        "cp",
        "zeroclaw-patch-me:/zeroclaw-data/workspace/IDENTITY.md",
        "-",
    ])
    .unwrap();
    assert!(identity.contains("Renamed Agent"), "{identity}");
    let soul = docker_cli(&[
        "cp",
        "zeroclaw-patch-me:/zeroclaw-data/workspace/SOUL.md",
        "-",
    ])
    .unwrap();
    assert!(soul.contains("like a pirate"), "{soul}");
    let (code, reply) = env.message(&jwt, &id, "after patch").await;
    assert_eq!(code, 200, "{reply}");
    let path: Vec<String> =
        sqlx::query_scalar("SELECT to_status FROM agent_events WHERE agent_id = $1 ORDER BY id")
            .bind(&id)
            .fetch_all(env.sql())
            .await
            .unwrap();
    assert_eq!(
        path[path.len() - 4..],
        ["STOPPING", "STOPPED", "STARTING", "RUNNING"],
        "{path:?}"
    );
    env.shutdown().await;
}
