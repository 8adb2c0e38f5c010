//! Issue 10: several installations on one engine, orphans, and deletes that
//! race a deploy. Every test runs real `zcaas` processes (or the in-process
//! app) against the real engine; nothing another installation owns may be
//! stopped, removed or changed, and no data volume is removed by a sweep.

use std::time::{Duration, Instant};

use serde_json::Value;
use zcaas_test_support::process::{zcaas_run, ServerProcess};
use zcaas_test_support::{
    agent_containers, docker_cli, docker_inspect, volume_exists, TestApp, World, STUB_IMAGE,
};

const TIMEOUT: Duration = Duration::from_secs(90);

/// `(Id, State.StartedAt)` of a container: unchanged means untouched.
fn identity(container: &str) -> (Value, Value) {
    let c = docker_inspect(container).unwrap_or_else(|| panic!("{container} is gone"));
    (c["Id"].clone(), c["State"]["StartedAt"].clone())
}

/// The installation id of the data directory, from `zcaas gc`'s first line.
fn installation_of(world: &World, data: &std::path::Path) -> String {
    let out = zcaas_run(world, data, &["gc"]).unwrap();
    out.lines()
        .next()
        .and_then(|l| l.strip_prefix("installation "))
        .unwrap_or_else(|| panic!("no installation line in {out:?}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_installations_on_one_engine_never_touch_each_other() {
    let world = World::start().await;
    // The worst case: same network, same labels, only the data directory
    // differs (zcaas started from two working directories). Orphans are
    // swept without a grace period, so any mistake shows at once.
    let env = [("ZCAAS_ORPHAN_GRACE_SECS", "0")];
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server_a = ServerProcess::start(&world, data_a.path(), &env).await;
    let container_a = server_a
        .running_agent(&format!("{} alpha", world.prefix))
        .await
        .container();
    let server_b = ServerProcess::start(&world, data_b.path(), &env).await;
    let beta = server_b
        .running_agent(&format!("{} beta", world.prefix))
        .await;
    let (jwt_b, id_b, container_b) = (&beta.jwt, &beta.id, beta.container());
    let (inst_a, inst_b) = (
        installation_of(&world, data_a.path()),
        installation_of(&world, data_b.path()),
    );
    assert_ne!(inst_a, inst_b);
    for (container, inst) in [(&container_a, &inst_a), (&container_b, &inst_b)] {
        let c = docker_inspect(container).unwrap();
        assert_eq!(c["Config"]["Labels"]["io.zcaas.installation"], **inst);
        let volume = docker_inspect(&format!("{container}-data")).unwrap();
        assert_eq!(volume["Labels"]["io.zcaas.installation"], **inst);
    }
    let a_before = identity(&container_a);
    let b_before = identity(&container_b);

    // Restart A (its start-up sweep runs against an engine holding B's
    // agent), let both resync and sweep, restart B's agent through B.
    drop(server_a);
    let server_a = ServerProcess::start(&world, data_a.path(), &env).await;
    let (code, _) = server_b.restart(jwt_b, id_b).await;
    assert_eq!(code, 202);
    server_b
        .wait_for(jwt_b, id_b, TIMEOUT, |a| {
            a["status"] == "RUNNING" && a["containerId"].is_string()
        })
        .await;
    // Two resync intervals: both installations have swept at least once.
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert_eq!(identity(&container_a), a_before, "A's agent was touched");
    assert!(volume_exists(&format!("{container_b}-data")));

    // Restart B: A's agent is still untouched.
    drop(server_b);
    let _server_b = ServerProcess::start(&world, data_b.path(), &env).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(identity(&container_a), a_before, "A's agent was touched");
    assert_eq!(
        identity(&container_b).0,
        b_before.0,
        "B's container was replaced"
    );
    for container in [&container_a, &container_b] {
        assert!(
            volume_exists(&format!("{container}-data")),
            "{container}'s volume is gone"
        );
    }
    drop(server_a);
}

/// Creates a container and its volume with the docker CLI, labelled as ours
/// for agent `no-such-agent`, plus `extra` labels.
fn ghost(world: &World, name: &str, extra: &[String]) {
    let mut labels = vec![
        "--label".to_owned(),
        "io.zcaas.managed=true".to_owned(),
        "--label".to_owned(),
        format!("io.zcaas.test={}", world.prefix),
        "--label".to_owned(),
        "io.zcaas.agent-id=no-such-agent".to_owned(),
    ];
    for label in extra {
        labels.extend(["--label".to_owned(), label.clone()]);
    }
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let volume = format!("{name}-data");
    docker_cli(&[&["volume", "create"], &labels[..], &[&volume]].concat()).unwrap();
    docker_cli(&[&["create", "--name", name], &labels[..], &[STUB_IMAGE]].concat()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_swept_volumes_kept_and_gc_removes_only_ours() {
    let world = World::start().await;
    let data = tempfile::tempdir().unwrap();
    let installation = installation_of(&world, data.path());
    let ours = format!("{}-ours", world.prefix);
    let legacy = format!("{}-legacy", world.prefix);
    let foreign = format!("{}-foreign", world.prefix);
    ghost(
        &world,
        &ours,
        &[format!("io.zcaas.installation={installation}")],
    );
    ghost(&world, &legacy, &[]);
    ghost(
        &world,
        &foreign,
        &["io.zcaas.installation=somebody-else".to_owned()],
    );
    // Ours by label, but no agent's: never an orphan.
    let bystander = format!("{}-provider", world.prefix);

    let _server =
        ServerProcess::start(&world, data.path(), &[("ZCAAS_ORPHAN_GRACE_SECS", "0")]).await;
    // The start-up sweep, or the periodic one, removes our orphan container.
    let deadline = Instant::now() + Duration::from_secs(30);
    while docker_inspect(&ours).is_some() {
        assert!(
            Instant::now() < deadline,
            "our orphan container was not swept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        volume_exists(&format!("{ours}-data")),
        "a sweep removed a data volume"
    );
    for name in [&legacy, &foreign, &bystander] {
        assert!(docker_inspect(name).is_some(), "{name} was removed");
    }
    for name in [&legacy, &foreign] {
        assert!(
            volume_exists(&format!("{name}-data")),
            "{name}-data was removed"
        );
    }

    let listed = zcaas_run(&world, data.path(), &["gc"]).unwrap();
    assert!(
        listed.contains(&format!("orphan volume {ours}-data")),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("unclaimed container {legacy}")),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("unclaimed volume {legacy}-data")),
        "{listed}"
    );
    assert!(
        listed.contains("2 object(s) of other installations"),
        "{listed}"
    );
    assert!(
        volume_exists(&format!("{ours}-data")),
        "gc without --apply removed something"
    );

    // --apply alone keeps volumes; --volumes needs --apply.
    zcaas_run(&world, data.path(), &["gc", "--apply"]).unwrap();
    assert!(volume_exists(&format!("{ours}-data")));
    assert!(zcaas_run(&world, data.path(), &["gc", "--volumes"]).is_err());
    let applied = zcaas_run(&world, data.path(), &["gc", "--apply", "--volumes"]).unwrap();
    assert!(
        applied.contains(&format!("removed volume {ours}-data")),
        "{applied}"
    );
    assert!(!volume_exists(&format!("{ours}-data")));
    for name in [&legacy, &foreign] {
        assert!(docker_inspect(name).is_some(), "gc removed {name}");
        assert!(
            volume_exists(&format!("{name}-data")),
            "gc removed {name}-data"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_during_a_deploy_leaves_nothing_and_never_blocks_the_slug() {
    let mut env = TestApp::in_world().await;
    let jwt = env.register("churn").await;
    let name = format!("{} churn", env.prefix);
    // Delays spread over every deploy step (row, create, upload, start,
    // code, pair, health: about half a second in all), densest over the
    // Docker calls at its start, shuffled.
    let mut delays: Vec<u64> = (0..16)
        .map(|i| i * 12)
        .chain([250, 400, 550, 700])
        .collect();
    for i in (1..delays.len()).rev() {
        let j = (uuid::Uuid::new_v4().as_u128() % (i as u128 + 1)) as usize;
        delays.swap(i, j);
    }
    eprintln!("delete delays (ms): {delays:?}");
    let mut slug = String::new();
    for delay in delays {
        let (code, created) = env.create_agent(&jwt, env.agent_body(&name)).await;
        assert_eq!(code, 202, "the slug is blocked after a delete: {created}");
        let id = created["id"].as_str().unwrap().to_owned();
        slug = created["slug"].as_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let (code, body) = env.delete_agent(&jwt, &id).await;
        assert_eq!(code, 204, "{body}");
        // A create still in flight in the daemon would show up a moment later.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            agent_containers(&id).is_empty(),
            "container left after a delete {delay} ms into the deploy"
        );
        assert!(
            docker_inspect(&format!("zeroclaw-{slug}")).is_none(),
            "the name is held after a delete {delay} ms into the deploy"
        );
        assert!(
            !volume_exists(&format!("zeroclaw-{slug}-data")),
            "volume (labelled or not) left after a delete {delay} ms into the deploy"
        );
    }
    // The slug is free: one more create of the same name runs.
    let (code, created) = env.create_agent(&jwt, env.agent_body(&name)).await;
    assert_eq!(code, 202, "{created}");
    assert_eq!(created["slug"], slug);
    let id = created["id"].as_str().unwrap();
    env.wait_running(&jwt, id).await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_during_the_deploy_is_applied() {
    let world = World::start().await;
    let data = tempfile::tempdir().unwrap();
    // The deploy pauses 5 s after injecting its files: the PATCH lands then.
    let server = ServerProcess::start(
        &world,
        data.path(),
        &[("ZCAAS_PAUSE_AT", "after-upload:5000")],
    )
    .await;
    let jwt = server.register("patcher").await;
    let created = server
        .create_pending_agent(
            &jwt,
            server.agent_body(&format!("{} patched", world.prefix)),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let container = format!("zeroclaw-{}", created["slug"].as_str().unwrap());
    // Wait until the first files are in the container: the deploy is paused.
    let deadline = Instant::now() + TIMEOUT;
    while docker_cli(&[
        "cp",
        &format!("{container}:/zeroclaw-data/workspace/IDENTITY.md"),
        "-",
    ])
    .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the deploy never injected its files"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, patched) = server
        .patch_agent(
            &jwt,
            &id,
            serde_json::json!({"agentName": "Renamed Midway"}),
        )
        .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["status"], "STARTING", "{patched}");
    assert_eq!(patched["restartPending"], true, "{patched}");
    server.wait_running(&jwt, &id).await;
    let identity = docker_cli(&[
        "cp",
        &format!("{container}:/zeroclaw-data/workspace/IDENTITY.md"),
        "-",
    ])
    .unwrap();
    assert!(
        identity.contains("Renamed Midway"),
        "the agent reached RUNNING with the config it began with: {identity}"
    );
    let (code, reply) = server.message(&jwt, &id, "still there").await;
    assert_eq!(code, 200, "{reply}");
    // A PATCH of the display name only restarts nothing.
    let (code, patched) = server
        .patch_agent(&jwt, &id, serde_json::json!({"name": "Just A Label"}))
        .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["restartPending"], false, "{patched}");
    assert_eq!(patched["status"], "RUNNING", "{patched}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_addressing_reaches_agents_at_the_address_the_engine_reports() {
    // The test process is not inside the agents' network, so Docker's
    // embedded DNS cannot resolve `zeroclaw-<slug>` here: only the address
    // read from the engine reaches the agent.
    let mut env = TestApp::in_world_with(|c| {
        c.agent_address = zcaas::config::AgentAddress::Network;
    })
    .await;
    let agent = env
        .running_agent(&format!("{} by address", env.prefix))
        .await;
    let (jwt, id, container) = (&agent.jwt, &agent.id, agent.container());
    let (code, reply) = env.message(jwt, id, "over the bridge").await;
    assert_eq!(code, 200, "{reply}");
    // Restarted, the agent is re-paired at its address of now.
    let before = env.stored_token(id).await;
    docker_cli(&["restart", "-t", "1", &container]).unwrap();
    env.wait_repaired(jwt, id, &before, TIMEOUT).await;
    let (code, reply) = env.message(jwt, id, "after the restart").await;
    assert_eq!(code, 200, "{reply}");
    env.shutdown().await;
}
