//! The multi-node harness's self-test (issue 15, phase 4): three dockerds,
//! each in its own network namespace, form one swarm
//! (`zcaas_test_support::swarm`); a 3-replica service of the agent image
//! gets one task per node; the tasks reach each other over an attachable
//! overlay network (VXLAN between the namespaces); the manager's service
//! logs carry every task's pairing banner; draining a worker moves its task
//! to another node (a new task, with a new banner); and the shutdown leaves
//! nothing of the run on the machine.
//!
//! Skipped, with a message, when not root or when `nsenter`, `ip` or
//! `iptables` is missing; otherwise it runs (and fails when the harness
//! cannot start).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use zcaas_test_support::swarm::{self, SwarmCluster};
use zcaas_test_support::{ensure_agent_image, random_prefix, AGENT_IMAGE, TEST_LABEL};

/// Until the service's tasks run (start, and again after the drain).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Until the banners show in the manager's service logs.
const LOGS_TIMEOUT: Duration = Duration::from_secs(30);
/// Until a task answers another node's task over the overlay.
const OVERLAY_TIMEOUT: Duration = Duration::from_secs(20);
const REPLICAS: usize = 3;

/// One task of the service, from `docker inspect --type task`.
#[derive(Debug, Clone)]
struct Task {
    id: String,
    node: String,
    state: String,
    container: String,
    /// Its address on `network`, without the prefix length.
    addr: Option<String>,
}

/// The tasks whose desired state is `running`.
fn current_tasks(
    cluster: &SwarmCluster,
    service: &str,
    network: &str,
) -> Result<Vec<Task>, String> {
    let tasks = cluster
        .tasks(&[service], Some(network))
        .map_err(|e| format!("{e:#}"))?;
    Ok(tasks
        .into_iter()
        .map(|t| Task {
            id: t.id,
            node: t.node_id,
            state: t.state,
            container: t.container,
            addr: t.addr,
        })
        .collect())
}

fn summary(cluster: &SwarmCluster, tasks: &[Task]) -> String {
    let list: Vec<String> = tasks
        .iter()
        .map(|t| {
            let node = cluster
                .node_index(&t.node)
                .map_or_else(|| t.node.clone(), |i| format!("n{}", i + 1));
            format!("{} on {node}: {}", &t.id[..t.id.len().min(12)], t.state)
        })
        .collect();
    format!("[{}]", list.join(", "))
}

/// Polls `probe` every 500 ms until it returns `Ok`; panics after `timeout`
/// with `what` and the last observation.
fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!(
                    "{what}: not within {} s; last seen: {last}",
                    timeout.as_secs()
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The pairing code each task printed, from the manager's service logs
/// (`<service>.<slot>.<task id>@<node> | <line>`), for the tasks that have
/// printed both banner lines.
fn banners(logs: &str, tasks: &[Task]) -> BTreeMap<String, String> {
    let mut codes = BTreeMap::new();
    for task in tasks {
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&task.id)).collect();
        let required = lines.iter().any(|l| l.contains("PAIRING REQUIRED"));
        let code = lines.iter().find_map(|l| {
            let code = l.split("X-Pairing-Code: ").nth(1)?.get(..6)?;
            code.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| code.to_owned())
        });
        if let (true, Some(code)) = (required, code) {
            codes.insert(task.id.clone(), code);
        }
    }
    codes
}

fn wait_banners(cluster: &SwarmCluster, service: &str, tasks: &[Task]) -> BTreeMap<String, String> {
    wait_for(
        "every task's pairing banner in the manager's service logs",
        LOGS_TIMEOUT,
        || {
            let logs = cluster
                .docker(0, &["service", "logs", "--no-trunc", service])
                .map_err(|e| format!("{e:#}"))?;
            let codes = banners(&logs, tasks);
            if codes.len() == tasks.len() {
                Ok(codes)
            } else {
                Err(format!("banners of {codes:?}; logs:\n{logs}"))
            }
        },
    )
}

#[test]
fn three_namespaced_daemons_form_a_swarm_that_spreads_logs_and_moves_tasks() {
    if let Some(why) = swarm::unsupported() {
        eprintln!("SKIPPED three_namespaced_daemons_form_a_swarm…: {why}");
        return;
    }
    let started = Instant::now();
    let secs = |t: Instant| format!("{:.1} s", t.elapsed().as_secs_f64());

    // The agent image on the machine's daemon, as every end-to-end test
    // builds it (from the current static binary, once per process).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let docker = zcaas::docker::DockerRuntime::connect(Default::default())
                .await
                .expect("connecting to the machine's Docker daemon");
            ensure_agent_image(&docker).await;
        });
    eprintln!("agent image ready: {}", secs(started));

    let netns_dir_before = swarm::netns_dir_state();
    let t = Instant::now();
    let cluster = SwarmCluster::start(3, &[AGENT_IMAGE]).unwrap_or_else(|e| panic!("{e:#}"));
    let tag = cluster.tag().to_owned();
    eprintln!(
        "[{tag}] 3 nodes ({}, {}, {}) ready, image loaded: {}",
        cluster.node_addr(0),
        cluster.node_addr(1),
        cluster.node_addr(2),
        secs(t)
    );

    let prefix = random_prefix();
    let label = format!("{TEST_LABEL}={prefix}");
    let network = format!("{prefix}-agents");
    let service = format!("{prefix}-probe");
    cluster
        .docker(
            0,
            &[
                "network",
                "create",
                "--driver",
                "overlay",
                "--attachable",
                "--label",
                &label,
                &network,
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let t = Instant::now();
    cluster
        .docker(
            0,
            &[
                "service",
                "create",
                "--detach",
                "--no-resolve-image",
                "--name",
                &service,
                "--replicas",
                &REPLICAS.to_string(),
                "--placement-pref",
                "spread=node.id",
                "--label",
                &label,
                "--container-label",
                &label,
                // The image's HEALTHCHECK (30 s interval) would hold each
                // task in "starting"; the image has no shell for a
                // `--health-cmd`.
                "--no-healthcheck",
                // No IPVS in this kernel: no virtual IP.
                "--endpoint-mode",
                "dnsrr",
                "--network",
                &network,
                "--stop-grace-period",
                "5s",
                AGENT_IMAGE,
                "gateway",
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));

    // One task per node, all running.
    let tasks = wait_for("the service's tasks running", CONVERGE_TIMEOUT, || {
        let tasks = current_tasks(&cluster, &service, &network)?;
        if tasks.len() == REPLICAS && tasks.iter().all(|t| t.state == "running") {
            Ok(tasks)
        } else {
            Err(summary(&cluster, &tasks))
        }
    });
    let nodes: BTreeSet<&str> = tasks.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(
        nodes.len(),
        REPLICAS,
        "tasks not spread one per node: {}",
        summary(&cluster, &tasks)
    );
    for task in &tasks {
        assert!(
            cluster.node_index(&task.node).is_some(),
            "task {} on a node not of this run: {}",
            task.id,
            task.node
        );
    }
    eprintln!(
        "[{tag}] {REPLICAS} tasks running, one per node: {}",
        secs(t)
    );

    // Across the overlay: the manager's task fetches /health of the
    // workers' tasks (VXLAN between the namespaces).
    let t = Instant::now();
    let on_manager = tasks
        .iter()
        .find(|t| t.node == cluster.node_id(0))
        .expect("a task on the manager")
        .clone();
    for other in tasks.iter().filter(|t| t.id != on_manager.id) {
        let addr = other.addr.clone().expect("a task address on the overlay");
        let host = format!("ZEROCLAW_GATEWAY_HOST={addr}");
        let reply = wait_for(
            &format!("the manager's task reaching {addr} over the overlay"),
            OVERLAY_TIMEOUT,
            || {
                cluster
                    .docker(
                        0,
                        &[
                            "exec",
                            "-e",
                            &host,
                            &on_manager.container,
                            "/usr/local/bin/agent-runtime",
                            "status",
                            "--format=text",
                        ],
                    )
                    .map_err(|e| format!("{e:#}"))
            },
        );
        assert!(reply.starts_with("ok:"), "{reply}");
    }
    eprintln!("[{tag}] cross-node requests over the overlay: {}", secs(t));

    // Every task's pairing banner, through the manager.
    let t = Instant::now();
    let codes = wait_banners(&cluster, &service, &tasks);
    eprintln!(
        "[{tag}] {} pairing banners in the manager's service logs: {}",
        codes.len(),
        secs(t)
    );

    // One worker task's own logs through the manager (`GET
    // /tasks/{id}/logs`, what pairing will read): its banner, no other
    // task's lines.
    let remote = tasks
        .iter()
        .find(|t| t.node != cluster.node_id(0))
        .expect("a task on a worker");
    let own = cluster
        .docker(0, &["service", "logs", "--no-trunc", &remote.id])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        own.contains(&format!("X-Pairing-Code: {}", codes[&remote.id])),
        "task {}'s logs through the manager lack its code:\n{own}",
        remote.id
    );
    for other in tasks.iter().filter(|t| t.id != remote.id) {
        assert!(
            !own.contains(&other.id),
            "task logs with another task's lines:\n{own}"
        );
    }

    // Drain a worker: its task is replaced by a new one on another node.
    let t = Instant::now();
    let drained = 1;
    let drained_id = cluster.node_id(drained).to_owned();
    let moved = tasks
        .iter()
        .find(|t| t.node == drained_id)
        .expect("a task on the worker to drain")
        .id
        .clone();
    cluster
        .docker(
            0,
            &["node", "update", "--availability", "drain", &drained_id],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let after = wait_for(
        "the drained worker's task rescheduled",
        CONVERGE_TIMEOUT,
        || {
            let now = current_tasks(&cluster, &service, &network)?;
            let settled = now.len() == REPLICAS
                && now
                    .iter()
                    .all(|t| t.state == "running" && t.node != drained_id)
                && !now.iter().any(|t| t.id == moved);
            if settled {
                Ok(now)
            } else {
                Err(summary(&cluster, &now))
            }
        },
    );
    let replacement: Vec<Task> = after
        .iter()
        .filter(|t| !tasks.iter().any(|old| old.id == t.id))
        .cloned()
        .collect();
    assert_eq!(replacement.len(), 1, "{}", summary(&cluster, &after));
    wait_for(
        "the drained worker running none of our containers",
        CONVERGE_TIMEOUT,
        || {
            let running = cluster
                .docker(
                    drained,
                    &["ps", "-q", "--filter", &format!("label={label}")],
                )
                .map_err(|e| format!("{e:#}"))?;
            if running.is_empty() {
                Ok(())
            } else {
                Err(running)
            }
        },
    );
    let new_codes = wait_banners(&cluster, &service, &replacement);
    eprintln!(
        "[{tag}] drained n{}: task {} replaced by {} on n{} with a new banner: {}",
        drained + 1,
        &moved[..12],
        &replacement[0].id[..12],
        cluster.node_index(&replacement[0].node).unwrap() + 1,
        secs(t)
    );
    assert_eq!(new_codes.len(), 1);

    // Shutdown: nothing of the run left on the machine.
    let t = Instant::now();
    cluster.shutdown().unwrap_or_else(|e| panic!("{e:#}"));
    let left = swarm::leftovers(&tag);
    assert!(left.is_empty(), "left behind by {tag}: {left:#?}");
    assert_eq!(
        swarm::netns_dir_state(),
        netns_dir_before,
        "/run/netns not as before"
    );
    eprintln!("[{tag}] shut down, nothing left: {}", secs(t));
    eprintln!("[{tag}] total: {}", secs(started));
}
