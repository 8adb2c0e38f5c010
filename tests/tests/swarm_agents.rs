//! The Swarm backend end to end (issue 15): zcaas in `swarm` mode against
//! the manager of a three-node swarm of namespaced dockerds
//! (`zcaas_test_support::swarm_world`), agents deployed as services, spread
//! over the nodes, reached at their task addresses on the overlay.
//!
//! One test, phases in order (one swarm start, ≈ 10–40 s, for all of
//! them): deploy three agents (all RUNNING, on at least two nodes, each
//! service labelled, limited and hardened as the Docker backend's
//! container, pinned to its first node); message, logs (tail and follow),
//! stats (visible on the manager, "not visible" elsewhere), health; stop,
//! start, restart, PATCH; every new task re-paired without user action (a
//! `docker service update --force`, a killed task container); a drained
//! worker's pinned agent ERROR with Swarm's reason, back after the node
//! returns; DELETE (service and secrets gone); and the machine left as it
//! was.
//!
//! Skipped, with a message, where the harness cannot run (not root, tools
//! missing).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use zcaas_test_support::images::ensure_control_plane_image;
use zcaas_test_support::swarm::{self, SwarmCluster};
use zcaas_test_support::swarm_world::SwarmWorld;
use zcaas_test_support::{SseReader, TestApp};

/// Until a deploy, start or re-pair settles.
const SETTLE: Duration = Duration::from_secs(120);
/// Until a drained node's agent is reported ERROR.
const DRAIN_ERROR: Duration = Duration::from_secs(90);
/// Until a streamed log line arrives.
const STREAM_WAIT: Duration = Duration::from_secs(30);

/// The service's inspect JSON on the manager.
fn service(cluster: &SwarmCluster, name: &str) -> Value {
    let out = cluster
        .docker(0, &["service", "inspect", name])
        .unwrap_or_else(|e| panic!("service inspect {name}: {e:#}"));
    let all: Vec<Value> = serde_json::from_str(&out).expect("service inspect JSON");
    all.into_iter().next().expect("one service")
}

/// The running task of service `name`: (task id, node index, container id).
fn running_task(cluster: &SwarmCluster, name: &str) -> (String, usize, String) {
    let t = cluster
        .running_task(name, None)
        .unwrap_or_else(|e| panic!("{e:#}"));
    (t.id, t.node.expect("a node of the cluster"), t.container)
}

/// A field of `/proc/<pid>/status` of container `container`'s first
/// process on node `node` (the nodes share the host's PID namespace).
fn proc_status(cluster: &SwarmCluster, node: usize, container: &str, field: &str) -> String {
    let pid = cluster
        .docker(node, &["inspect", "-f", "{{.State.Pid}}", container])
        .expect("container pid");
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
        .expect("the task's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// Sends a message and asserts the stand-in's answer came back.
async fn assert_answers(app: &TestApp, jwt: &str, id: &str) {
    let (status, body) = app.message(jwt, id, "hello from the swarm").await;
    assert_eq!(status, 200, "message to {id}: {body}");
    assert!(
        body["response"].is_string() || body["reply"].is_string(),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_run_as_swarm_services_across_nodes() {
    if let Some(why) = swarm::unsupported() {
        eprintln!("skipping: the swarm harness cannot run here: {why}");
        return;
    }
    // The control-plane image on every node: the janitor job that removes
    // a deleted agent's volume on a worker runs it.
    let janitor = ensure_control_plane_image().await;
    let world = SwarmWorld::start_with_images(3, &[janitor])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let tag = world.tag().to_owned();
    let app = TestApp::in_swarm(&world, |c| {
        c.retry_backoff_base = Duration::from_secs(1);
        c.janitor_image = janitor.to_owned();
    })
    .await;
    let cluster = &world.cluster;
    let jwt = app.register("swarm").await;

    // Deploy three agents; all RUNNING, spread over the nodes.
    let mut agents = Vec::new();
    for name in ["Ada", "Bob", "Cyd"] {
        let (status, created) = app.create_agent(&jwt, app.agent_body(name)).await;
        assert!(status.is_success(), "{created}");
        agents.push(created["id"].as_str().unwrap().to_owned());
    }
    let mut slugs = Vec::new();
    for id in &agents {
        let agent = app
            .wait_status(&jwt, id, &["RUNNING", "ERROR"], SETTLE)
            .await;
        assert_eq!(agent["status"], "RUNNING", "{agent}");
        slugs.push(agent["slug"].as_str().unwrap().to_owned());
    }
    let names: Vec<String> = slugs.iter().map(|s| format!("zeroclaw-{s}")).collect();
    let nodes: BTreeSet<usize> = names.iter().map(|n| running_task(cluster, n).1).collect();
    assert!(nodes.len() >= 2, "three agents on one node: {nodes:?}");

    // The service: ours, limited, hardened, routed, pinned, files as secrets.
    let s = service(cluster, &names[0]);
    let labels = &s["Spec"]["Labels"];
    assert_eq!(labels["io.zcaas.managed"], "true", "{s}");
    assert_eq!(labels["io.zcaas.agent-id"], agents[0].as_str());
    assert_eq!(labels["io.zcaas.test"], world.prefix.as_str());
    assert!(labels["io.zcaas.installation"].is_string(), "{s}");
    assert_eq!(labels["traefik.swarm.network"], world.network.as_str());
    assert_eq!(
        labels[format!(
            "traefik.http.services.{}.loadbalancer.server.port",
            slugs[0]
        )],
        "42617"
    );
    let task = &s["Spec"]["TaskTemplate"];
    let limits = &task["Resources"]["Limits"];
    assert!(limits["NanoCPUs"].as_i64().unwrap() > 0, "{limits}");
    assert!(limits["MemoryBytes"].as_i64().unwrap() > 0, "{limits}");
    assert_eq!(limits["Pids"], 256);
    let c = &task["ContainerSpec"];
    assert_eq!(c["ReadOnly"], true);
    assert_eq!(c["User"], "65534:65534");
    assert_eq!(c["CapabilityDrop"], serde_json::json!(["ALL"]));
    let targets: Vec<&str> = c["Secrets"]
        .as_array()
        .expect("files as secrets")
        .iter()
        .filter_map(|r| r["File"]["Name"].as_str())
        .collect();
    assert!(
        targets.contains(&"/zeroclaw-data/.zeroclaw/config.toml"),
        "{targets:?}"
    );
    assert_eq!(s["Spec"]["EndpointSpec"]["Mode"], "dnsrr");
    let (_, node0, container0) = running_task(cluster, &names[0]);
    let pinned = format!("node.id=={}", cluster.node_id(node0));
    assert_eq!(
        task["Placement"]["Constraints"],
        serde_json::json!([pinned])
    );
    // Inside the task: no capabilities, no new privileges (the daemon's).
    assert_eq!(
        proc_status(cluster, node0, &container0, "CapEff"),
        "0000000000000000"
    );
    assert_eq!(proc_status(cluster, node0, &container0, "NoNewPrivs"), "1");

    // Messages, logs, health, stats.
    for id in &agents {
        assert_answers(&app, &jwt, id).await;
    }
    let (status, logs) = app.logs(&jwt, &agents[0]).await;
    assert_eq!(status, 200, "{logs}");
    let text = logs.to_string();
    assert!(text.contains("X-Pairing-Code: ******"), "{text}");
    let (status, health) = app.health(&jwt, &agents[0]).await;
    assert_eq!(status, 200, "{health}");
    let mut follow: SseReader = app
        .events(
            &format!("/api/agents/{}/logs?follow=true&tail=5", agents[1]),
            &jwt,
            &[],
        )
        .await;
    let first = tokio::time::timeout(STREAM_WAIT, follow.next())
        .await
        .expect("a followed log line in time")
        .expect("a followed log line");
    assert_eq!(first.event, "line", "{}", first.data);
    drop(follow);
    for (i, id) in agents.iter().enumerate() {
        let (_, node, _) = running_task(cluster, &names[i]);
        let (status, stats) = app.stats(&jwt, id).await;
        assert_eq!(status, 200, "{stats}");
        if node == 0 {
            assert_eq!(stats["visible"], true, "{stats}");
            assert!(stats["memoryMb"].as_f64().unwrap() > 0.0, "{stats}");
        } else {
            assert_eq!(stats["visible"], false, "{stats}");
            assert!(
                stats["reason"].as_str().unwrap().contains("node"),
                "{stats}"
            );
        }
    }

    // Stop and start: replicas 0 then 1, re-paired, same node (pinned).
    let old = app.stored_token(&agents[0]).await;
    let (status, body) = app.stop(&jwt, &agents[0]).await;
    assert!(status.is_success(), "{body}");
    app.wait_status(&jwt, &agents[0], &["STOPPED"], SETTLE)
        .await;
    let s = service(cluster, &names[0]);
    assert_eq!(s["Spec"]["Mode"]["Replicated"]["Replicas"], 0, "{s}");
    let (status, body) = app.start(&jwt, &agents[0]).await;
    assert!(status.is_success(), "{body}");
    let token = app.wait_repaired(&jwt, &agents[0], &old, SETTLE).await;
    assert_eq!(
        running_task(cluster, &names[0]).1,
        node0,
        "the data stays on its node"
    );
    assert_answers(&app, &jwt, &agents[0]).await;

    // Restart through the API: a new task, re-paired.
    let (status, body) = app.restart(&jwt, &agents[0]).await;
    assert!(status.is_success(), "{body}");
    let token = app.wait_repaired(&jwt, &agents[0], &token, SETTLE).await;
    assert_answers(&app, &jwt, &agents[0]).await;

    // PATCH: the new configuration deployed, still pinned.
    let (status, body) = app
        .patch_agent(
            &jwt,
            &agents[0],
            serde_json::json!({"communicationStyle": "Terse."}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let _ = app.wait_repaired(&jwt, &agents[0], &token, SETTLE).await;
    assert_eq!(running_task(cluster, &names[0]).1, node0);
    assert_answers(&app, &jwt, &agents[0]).await;

    // Tasks replaced behind zcaas's back: re-paired with no user action.
    let old = app.stored_token(&agents[1]).await;
    cluster
        .docker(0, &["service", "update", "--force", "--detach", &names[1]])
        .expect("service update --force");
    let old = app.wait_repaired(&jwt, &agents[1], &old, SETTLE).await;
    assert_answers(&app, &jwt, &agents[1]).await;
    let (_, node, container) = running_task(cluster, &names[1]);
    cluster
        .docker(node, &["kill", &container])
        .expect("killing the task's container");
    app.wait_repaired(&jwt, &agents[1], &old, SETTLE).await;
    assert_answers(&app, &jwt, &agents[1]).await;

    // Drain a worker: its pinned agent cannot move, and says why.
    let (i, worker) = names
        .iter()
        .enumerate()
        .map(|(i, n)| (i, running_task(cluster, n).1))
        .find(|(_, node)| *node != 0)
        .expect("an agent on a worker");
    let worker_id = cluster.node_id(worker).to_owned();
    cluster
        .docker(
            0,
            &["node", "update", "--availability", "drain", &worker_id],
        )
        .expect("draining the worker");
    let failed = app
        .wait_for(&jwt, &agents[i], DRAIN_ERROR, |a| a["status"] == "ERROR")
        .await;
    let why = failed["lastError"].as_str().unwrap_or_default();
    assert!(why.contains("no suitable node"), "{failed}");
    cluster
        .docker(
            0,
            &["node", "update", "--availability", "active", &worker_id],
        )
        .expect("re-activating the worker");
    let (status, body) = app.retry(&jwt, &agents[i]).await;
    assert!(status.is_success() || status == 409, "{body}");
    let back = app
        .wait_status(&jwt, &agents[i], &["RUNNING"], SETTLE)
        .await;
    assert_eq!(back["status"], "RUNNING");
    assert_eq!(
        running_task(cluster, &names[i]).1,
        worker,
        "back on its node"
    );
    assert_answers(&app, &jwt, &agents[i]).await;

    // Every other agent the drain stopped (Swarm may have put two on that
    // worker) comes back too, before the volumes are counted.
    for id in &agents {
        let (status, body) = app.retry(&jwt, id).await;
        assert!(status.is_success() || status == 409, "{body}");
        app.wait_status(&jwt, id, &["RUNNING"], SETTLE).await;
    }

    // DELETE: services, secrets, pin records and every node's volumes gone
    // (those on workers through the janitor job).
    let volume_nodes: BTreeSet<usize> = names.iter().map(|n| running_task(cluster, n).1).collect();
    assert!(volume_nodes.iter().any(|n| *n != 0), "a volume on a worker");
    for id in &agents {
        let (status, body) = app.delete_agent(&jwt, id).await;
        assert!(status.is_success(), "{body}");
    }
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let services = cluster
            .docker(
                0,
                &[
                    "service",
                    "ls",
                    "-q",
                    "--filter",
                    "label=io.zcaas.managed=true",
                ],
            )
            .expect("service ls");
        let secrets = cluster
            .docker(
                0,
                &[
                    "secret",
                    "ls",
                    "-q",
                    "--filter",
                    "label=io.zcaas.managed=true",
                ],
            )
            .expect("secret ls");
        if services.trim().is_empty() && secrets.trim().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "left after DELETE: services {services:?}, secrets {secrets:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    drop(app);
    world.shutdown().unwrap_or_else(|e| panic!("{e:#}"));
    let left = swarm::leftovers(&tag);
    assert!(left.is_empty(), "left on the machine: {left:?}");
}

/// With a volume driver every node shares (here `local` bind mounts of one
/// host directory, which all the namespaced nodes see), an agent's data is
/// not pinned: when its node is lost (dockerd, containerd, shims and tasks
/// SIGKILLed, no goodbye) Swarm starts its task on another node, and when
/// a node is drained its task moves; each time zcaas re-pairs it with no
/// user action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_shared_volume_driver_agents_survive_a_lost_and_a_drained_node() {
    if let Some(why) = swarm::unsupported() {
        eprintln!("skipping: the swarm harness cannot run here: {why}");
        return;
    }
    let mut world = SwarmWorld::start(3)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let tag = world.tag().to_owned();
    let shared = world.cluster.dir().join("shared");
    // The bind mounts' directories must exist (as an NFS export's would).
    std::fs::create_dir_all(shared.join("zeroclaw-eve-data")).expect("the shared directory");
    let device = format!("{}/{{volume}}", shared.display());
    let app = TestApp::in_swarm(&world, |c| {
        c.volume_driver = Some(zcaas::config::VolumeDriver {
            name: "local".into(),
            options: [
                ("type".to_owned(), "none".to_owned()),
                ("o".to_owned(), "bind".to_owned()),
                ("device".to_owned(), device),
            ]
            .into(),
        });
    })
    .await;
    let jwt = app.register("shared").await;
    let manager = world.cluster.node_id(0).to_owned();
    // Workers only, so that the node lost is a worker.
    world
        .cluster
        .docker(0, &["node", "update", "--availability", "drain", &manager])
        .expect("draining the manager");
    let (status, created) = app.create_agent(&jwt, app.agent_body("Eve")).await;
    assert!(status.is_success(), "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    app.wait_running(&jwt, &id).await;
    assert_answers(&app, &jwt, &id).await;
    let s = service(&world.cluster, "zeroclaw-eve");
    assert!(
        s["Spec"]["TaskTemplate"]["Placement"]["Constraints"].is_null(),
        "not pinned: {s}"
    );

    // Node loss.
    let (_, lost, _) = running_task(&world.cluster, "zeroclaw-eve");
    assert_ne!(lost, 0);
    let token = app.stored_token(&id).await;
    world
        .cluster
        .kill_node(lost)
        .expect("losing the agent's node");
    let token = app.wait_repaired(&jwt, &id, &token, SETTLE).await;
    let (_, now_on, _) = running_task(&world.cluster, "zeroclaw-eve");
    assert!(now_on != lost && now_on != 0, "on node {now_on}");
    assert_answers(&app, &jwt, &id).await;

    // Drain: back to the manager, the only node left.
    world
        .cluster
        .docker(0, &["node", "update", "--availability", "active", &manager])
        .expect("re-activating the manager");
    let drained = world.cluster.node_id(now_on).to_owned();
    world
        .cluster
        .docker(0, &["node", "update", "--availability", "drain", &drained])
        .expect("draining the agent's node");
    app.wait_repaired(&jwt, &id, &token, SETTLE).await;
    assert_eq!(running_task(&world.cluster, "zeroclaw-eve").1, 0);
    assert_answers(&app, &jwt, &id).await;

    let (status, body) = app.delete_agent(&jwt, &id).await;
    assert!(status.is_success(), "{body}");
    let deadline = tokio::time::Instant::now() + SETTLE;
    while app.get_agent(&jwt, &id).await.0 != 404 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent {id} not deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(app);
    world.shutdown().unwrap_or_else(|e| panic!("{e:#}"));
    let left = swarm::leftovers(&tag);
    assert!(left.is_empty(), "left on the machine: {left:?}");
}
