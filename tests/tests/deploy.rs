//! Issue 3 end to end: `POST /api/agents` to a paired, RUNNING agent on the
//! real Docker engine, every lifecycle operation, and nothing left behind.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use zcaas_tests::{docker_inspect, volume_exists, EnvOptions, TestEnv};

const STUB: &str = env!("CARGO_BIN_EXE_provider-stub");
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(90);

async fn message(env: &TestEnv, jwt: &str, id: &str, text: &str) -> (u16, Value) {
    env.call(
        Method::POST,
        &format!("/api/agents/{id}/message"),
        jwt,
        Some(json!({ "message": text })),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_message_restart_stop_start_delete() {
    let mut env = TestEnv::start(STUB, EnvOptions::default()).await.unwrap();
    let jwt = env.register("alice").await.unwrap();

    // 202 with the PENDING record, at once.
    let (code, created) = env
        .call(
            Method::POST,
            "/api/agents",
            &jwt,
            Some(env.agent_body("Alice Helper")),
        )
        .await
        .unwrap();
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

    let agent = env
        .wait_status(&jwt, &id, &["RUNNING", "ERROR"], DEPLOY_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(agent["status"], "RUNNING", "{agent}");
    let port = agent["containerPort"].as_u64().unwrap();
    assert!((40000..=50000).contains(&port), "{port}");
    assert!(agent["containerId"].is_string());
    assert!(agent["lastHealthAt"].is_string());

    // The container matches seed 003's spec.
    let c = docker_inspect("zeroclaw-alice-helper").expect("container exists");
    assert_eq!(c["Id"], agent["containerId"]);
    assert_eq!(c["Config"]["Cmd"], json!(["gateway"]));
    let bindings = &c["HostConfig"]["PortBindings"]["42617/tcp"][0];
    assert_eq!(bindings["HostIp"], "127.0.0.1");
    assert_eq!(bindings["HostPort"], port.to_string());
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
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
        "Host(`alice-helper.agents.test`)"
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
    let (code, reply) = message(&env, &jwt, &id, "hello there").await;
    assert_eq!(code, 200, "{reply}");
    assert!(
        reply["response"].as_str().unwrap().contains("hello there"),
        "{reply}"
    );

    // Restart: re-paired with a different token, and messages still work.
    let first_token = env.stored_token(&id).await.unwrap();
    let (code, body) = env
        .call(
            Method::POST,
            &format!("/api/agents/{id}/restart"),
            &jwt,
            None,
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "STOPPING");
    let agent = env
        .wait_status(&jwt, &id, &["RUNNING", "ERROR"], DEPLOY_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(agent["status"], "RUNNING", "{agent}");
    let second_token = env.stored_token(&id).await.unwrap();
    assert_ne!(
        first_token, second_token,
        "restart must re-pair with a new token"
    );
    let (code, reply) = message(&env, &jwt, &id, "after restart").await;
    assert_eq!(code, 200, "{reply}");

    // Stop → STOPPED, container not running; a message now is a conflict.
    let (code, _) = env
        .call(Method::POST, &format!("/api/agents/{id}/stop"), &jwt, None)
        .await
        .unwrap();
    assert_eq!(code, 202);
    env.wait_status(&jwt, &id, &["STOPPED"], DEPLOY_TIMEOUT)
        .await
        .unwrap();
    let c = docker_inspect("zeroclaw-alice-helper").unwrap();
    assert_eq!(c["State"]["Running"], false);
    let (code, _) = message(&env, &jwt, &id, "while stopped").await;
    assert_eq!(code, 409);
    // Stopping a stopped agent is refused by the state machine.
    let (code, body) = env
        .call(Method::POST, &format!("/api/agents/{id}/stop"), &jwt, None)
        .await
        .unwrap();
    assert_eq!(code, 409, "{body}");

    // Start → new code since that start, new token → RUNNING.
    let (code, body) = env
        .call(Method::POST, &format!("/api/agents/{id}/start"), &jwt, None)
        .await
        .unwrap();
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "STARTING");
    env.wait_status(&jwt, &id, &["RUNNING"], DEPLOY_TIMEOUT)
        .await
        .unwrap();
    let third_token = env.stored_token(&id).await.unwrap();
    assert_ne!(second_token, third_token);
    let (code, reply) = message(&env, &jwt, &id, "after start").await;
    assert_eq!(code, 200, "{reply}");

    // Logs, stats and health proxies.
    let (code, logs) = env
        .call(Method::GET, &format!("/api/agents/{id}/logs"), &jwt, None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{logs}");
    let logs_text = logs.to_string();
    assert!(!logs_text.contains(&third_token), "token in logs");
    let (code, stats) = env
        .call(Method::GET, &format!("/api/agents/{id}/stats"), &jwt, None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{stats}");
    assert!(stats["memoryMb"].as_f64().unwrap() > 0.0, "{stats}");
    let (code, health) = env
        .call(Method::GET, &format!("/api/agents/{id}/health"), &jwt, None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "ok");

    // Every transition is in agent_events with its reason.
    let state = env.app().state();
    let events: Vec<(Option<String>, String, String)> = sqlx::query_as(
        "SELECT from_status, to_status, reason FROM agent_events WHERE agent_id = ?1 ORDER BY id",
    )
    .bind(&id)
    .fetch_all(&state.db)
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
    let (code, _) = env
        .call(Method::DELETE, &format!("/api/agents/{id}"), &jwt, None)
        .await
        .unwrap();
    assert_eq!(code, 204);
    assert!(
        docker_inspect("zeroclaw-alice-helper").is_none(),
        "container left behind"
    );
    assert!(!volume_exists(volume), "volume left behind");
    let (code, _) = env
        .call(Method::GET, &format!("/api/agents/{id}"), &jwt, None)
        .await
        .unwrap();
    assert_eq!(code, 404);
    let ports: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE container_port IS NOT NULL")
            .fetch_one(&state.db)
            .await
            .unwrap();
    assert_eq!(ports, 0);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_see_only_their_own_agents() {
    let mut env = TestEnv::start(STUB, EnvOptions::default()).await.unwrap();
    let alice = env.register("alice").await.unwrap();
    let bob = env.register("bob").await.unwrap();
    let (_, a) = env
        .call(
            Method::POST,
            "/api/agents",
            &alice,
            Some(env.agent_body("Alice One")),
        )
        .await
        .unwrap();
    let (_, b) = env
        .call(
            Method::POST,
            "/api/agents",
            &bob,
            Some(env.agent_body("Bob One")),
        )
        .await
        .unwrap();
    let (a_id, b_id) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    let (a_run, b_run) = tokio::join!(
        env.wait_status(&alice, &a_id, &["RUNNING", "ERROR"], DEPLOY_TIMEOUT),
        env.wait_status(&bob, &b_id, &["RUNNING", "ERROR"], DEPLOY_TIMEOUT)
    );
    assert_eq!(a_run.unwrap()["status"], "RUNNING");
    assert_eq!(b_run.unwrap()["status"], "RUNNING");

    let (_, list) = env
        .call(Method::GET, "/api/agents", &alice, None)
        .await
        .unwrap();
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
        let (code, body) = env.call(method.clone(), &path, &bob, None).await.unwrap();
        assert_eq!(code, 404, "{method} {path}: {body}");
    }
    let (code, reply) = message(&env, &bob, &b_id, "bob's message").await;
    assert_eq!(code, 200, "{reply}");
    for (jwt, id) in [(&alice, &a_id), (&bob, &b_id)] {
        let (code, _) = env
            .call(Method::DELETE, &format!("/api/agents/{id}"), jwt, None)
            .await
            .unwrap();
        assert_eq!(code, 204);
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_creates_have_no_collision() {
    let mut env = TestEnv::start(STUB, EnvOptions::default()).await.unwrap();
    let jwt = env.register("bulk").await.unwrap();
    sqlx::query("UPDATE users SET plan = 'enterprise'")
        .execute(&env.app().state().db)
        .await
        .unwrap();
    let creates = (0..20).map(|i| {
        let env = &env;
        let jwt = &jwt;
        async move {
            let (code, body) = env
                .call(
                    Method::POST,
                    "/api/agents",
                    jwt,
                    Some(env.agent_body(&format!("bulk {i}"))),
                )
                .await
                .unwrap();
            assert_eq!(code, 202, "{body}");
            body["id"].as_str().unwrap().to_owned()
        }
    });
    let ids = futures::future::join_all(creates).await;
    let waits = ids
        .iter()
        .map(|id| env.wait_status(&jwt, id, &["RUNNING", "ERROR"], Duration::from_secs(240)));
    let agents: Vec<Value> = futures::future::join_all(waits)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
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
        let (code, _) = env
            .call(Method::DELETE, &format!("/api/agents/{id}"), &jwt, None)
            .await
            .unwrap();
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
    let mut env = TestEnv::start(
        STUB,
        EnvOptions {
            runtime_image: Some(broken.into()),
            retry_budget: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let jwt = env.register("carol").await.unwrap();
    let (code, created) = env
        .call(
            Method::POST,
            "/api/agents",
            &jwt,
            Some(env.agent_body("Broken One")),
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{created}");
    let id = created["id"].as_str().unwrap();
    let agent = env
        .wait_status(&jwt, id, &["ERROR", "RUNNING"], DEPLOY_TIMEOUT)
        .await
        .unwrap();
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
    let (code, body) = env
        .call(Method::POST, &format!("/api/agents/{id}/start"), &jwt, None)
        .await
        .unwrap();
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "PENDING");
    env.wait_status(&jwt, id, &["ERROR"], DEPLOY_TIMEOUT)
        .await
        .unwrap();
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_of_a_running_agent_reinjects_and_repairs() {
    let mut env = TestEnv::start(STUB, EnvOptions::default()).await.unwrap();
    let jwt = env.register("dave").await.unwrap();
    let (_, created) = env
        .call(
            Method::POST,
            "/api/agents",
            &jwt,
            Some(env.agent_body("Patch Me")),
        )
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    env.wait_status(&jwt, &id, &["RUNNING"], DEPLOY_TIMEOUT)
        .await
        .unwrap();
    let before = env.stored_token(&id).await.unwrap();

    let (code, body) = env
        .call(
            Method::PATCH,
            &format!("/api/agents/{id}"),
            &jwt,
            Some(json!({"agentName": "Renamed Agent", "communicationStyle": "like a pirate"})),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["agentName"], "Renamed Agent");
    let agent = env
        .wait_for(&jwt, &id, DEPLOY_TIMEOUT, |a| {
            a["status"] == "RUNNING" && a["updatedAt"] != body["updatedAt"]
        })
        .await
        .unwrap();
    assert_eq!(agent["status"], "RUNNING");
    let after = env.stored_token(&id).await.unwrap();
    assert_ne!(
        before, after,
        "a reconfigured agent is restarted and re-paired"
    );
    let identity = zcaas_tests::docker_cli(&[
        "cp",
        "zeroclaw-patch-me:/zeroclaw-data/workspace/IDENTITY.md",
        "-",
    ])
    .unwrap();
    assert!(identity.contains("Renamed Agent"), "{identity}");
    let soul = zcaas_tests::docker_cli(&[
        "cp",
        "zeroclaw-patch-me:/zeroclaw-data/workspace/SOUL.md",
        "-",
    ])
    .unwrap();
    assert!(soul.contains("like a pirate"), "{soul}");
    let (code, reply) = message(&env, &jwt, &id, "after patch").await;
    assert_eq!(code, 200, "{reply}");
    let path: Vec<String> =
        sqlx::query_scalar("SELECT to_status FROM agent_events WHERE agent_id = ?1 ORDER BY id")
            .bind(&id)
            .fetch_all(&env.app().state().db)
            .await
            .unwrap();
    assert_eq!(
        path[path.len() - 4..],
        ["STOPPING", "STOPPED", "STARTING", "RUNNING"],
        "{path:?}"
    );
    env.shutdown().await;
}
