//! Issue 16's two density walls, end to end on the real engine: in
//! `network` address mode no host port is published (so no `docker-proxy`
//! runs per agent) and none is claimed; agents are spread over several
//! agents' networks, at most `agents_per_network` on each (the first keeps
//! the configured name, then `<network>-2`), recorded per agent; and every
//! container named in `network_attach` is connected to each agents'
//! network zcaas uses (a missing one is only a warning).
//!
//! zcaas runs in-process on the host and reaches agents at their bridge
//! addresses (a Linux host routes to them directly).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use zcaas::config::AgentAddress;
use zcaas::docker::MANAGED_LABEL;
use zcaas_test_support::{
    agent_containers, docker_cli, docker_inspect, volume_exists, TestApp, STUB_IMAGE, STUB_PORT,
    TEST_LABEL,
};

/// Bound of every wait for a deletion.
const DELETE_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts a small labelled container `name` (the provider stand-in's image,
/// idle) on the engine's default bridge only: it stands in for Traefik in
/// `network_attach`. The test's cleanup removes it by label.
fn start_edge(prefix: &str, name: &str) {
    docker_cli(&[
        "run",
        "-d",
        "--name",
        name,
        "--label",
        &format!("{MANAGED_LABEL}=true"),
        "--label",
        &format!("{TEST_LABEL}={prefix}"),
        "-e",
        &format!("PORT={STUB_PORT}"),
        STUB_IMAGE,
    ])
    .unwrap_or_else(|e| panic!("starting the edge stand-in: {e:#}"));
}

/// The names of the networks container `name` is attached to.
fn networks_of(name: &str) -> Vec<String> {
    let c = docker_inspect(name).unwrap_or_else(|| panic!("container {name} exists"));
    let mut names: Vec<String> = c["NetworkSettings"]["Networks"]
        .as_object()
        .map(|n| n.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Asserts the agent's container publishes nothing, and is on `network`
/// (its network mode and its Traefik label).
fn assert_unpublished_on(agent: &Value, network: &str) {
    let name = format!("zeroclaw-{}", agent["slug"].as_str().unwrap());
    let c = docker_inspect(&name).expect("the agent's container");
    let bindings = &c["HostConfig"]["PortBindings"];
    assert!(
        bindings.is_null() || bindings.as_object().is_some_and(|b| b.is_empty()),
        "{name} publishes {bindings}"
    );
    let ports = &c["NetworkSettings"]["Ports"];
    if let Some(ports) = ports.as_object() {
        assert!(
            ports.values().all(Value::is_null),
            "{name} has host ports: {ports:?}"
        );
    }
    assert_eq!(c["HostConfig"]["NetworkMode"], network, "{name}");
    assert_eq!(
        c["Config"]["Labels"]["traefik.docker.network"], network,
        "{name}"
    );
    assert!(
        c["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .is_some_and(|ip| !ip.is_empty()),
        "{name} has an address on {network}"
    );
    assert!(agent["containerPort"].is_null(), "{agent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_mode_spreads_agents_over_capped_networks_without_ports() {
    let mut edge = String::new();
    let mut missing = String::new();
    let env = TestApp::in_world_with(|config| {
        // The world's network is `<prefix>-net`.
        let prefix = config
            .network
            .strip_suffix("-net")
            .expect("a world network")
            .to_owned();
        edge = format!("{prefix}-edge");
        missing = format!("{prefix}-no-such-container");
        // Before the app starts: it is attached at start-up.
        start_edge(&prefix, &edge);
        config.agent_address = AgentAddress::Network;
        config.agents_per_network = 2;
        // The provider stand-in too, so agents on the second network reach it.
        config.network_attach = vec![format!("{prefix}-provider"), edge.clone(), missing.clone()];
    })
    .await;
    let first = env.config.network.clone();
    let second = format!("{first}-2");
    let provider = format!("{}-provider", env.prefix);
    // At start-up the edge joined the first network (a missing container
    // did not stop the start).
    assert!(
        networks_of(&edge).contains(&first),
        "{:?}",
        networks_of(&edge)
    );
    assert!(docker_inspect(&second).is_none(), "no second network yet");

    let jwt = env.register("dense").await;
    let mut agents = Vec::new();
    // Two fill the first network.
    for name in ["Dense One", "Dense Two"] {
        agents.push(env.create_pending_agent(&jwt, env.agent_body(name)).await);
    }
    for a in &agents {
        env.wait_running(&jwt, a["id"].as_str().unwrap()).await;
    }
    // The third goes to `<network>-2`, created now, with the edge and the
    // provider stand-in attached to it before the agent's container.
    let third = env
        .create_pending_agent(&jwt, env.agent_body("Dense Three"))
        .await;
    agents.push(third);
    let mut running = Vec::new();
    for a in &agents {
        running.push(env.wait_running(&jwt, a["id"].as_str().unwrap()).await);
    }
    for (a, network) in running.iter().zip([&first, &first, &second]) {
        assert_unpublished_on(a, network);
        // Each answers a message, through its network address.
        let id = a["id"].as_str().unwrap();
        let (code, reply) = env.message(&jwt, id, "hello over the bridge").await;
        assert_eq!(code, 200, "{reply}");
        assert!(
            reply["response"]
                .as_str()
                .unwrap_or_default()
                .contains("hello over the bridge"),
            "{reply}"
        );
    }

    // The second network is ours (labelled, so swept by label), a plain
    // bridge agents can leave (not internal), with the edge containers on it.
    let net = docker_inspect(&second).expect("the second network");
    assert_eq!(net["Labels"]["io.zcaas.managed"], "true");
    assert_eq!(net["Labels"][TEST_LABEL], env.prefix.as_str());
    assert_eq!(net["Driver"], "bridge");
    assert_eq!(net["Internal"], false);
    for container in [&edge, &provider] {
        let on = networks_of(container);
        assert!(
            on.contains(&first) && on.contains(&second),
            "{container} is on {on:?}"
        );
    }

    // The admin view shows each agent's network.
    let admin = env.admin("root@networks.test").await;
    let (code, all) = env
        .call(Method::GET, "/api/admin/agents", Some(&admin), None)
        .await;
    assert_eq!(code, 200, "{all}");
    for (a, network) in running.iter().zip([&first, &first, &second]) {
        let row = all
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == a["id"])
            .expect("the agent in the admin list");
        assert_eq!(row["network"], network.as_str(), "{row}");
        assert!(row["containerPort"].is_null(), "{row}");
    }

    // Deleting removes each agent's container and volume; the networks
    // and the edges stay (the test's cleanup removes them by label).
    for a in &running {
        let id = a["id"].as_str().unwrap();
        let (code, body) = env.delete_agent(&jwt, id).await;
        assert!(code.is_success(), "{code} {body}");
    }
    let deadline = Instant::now() + DELETE_TIMEOUT;
    for a in &running {
        let id = a["id"].as_str().unwrap();
        loop {
            let (code, _) = env.get_agent(&jwt, id).await;
            if code == 404 && agent_containers(id).is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "agent {id} not deleted in time");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let volume = format!("zeroclaw-{}-data", a["slug"].as_str().unwrap());
        assert!(!volume_exists(&volume), "{volume} left behind");
    }
}
