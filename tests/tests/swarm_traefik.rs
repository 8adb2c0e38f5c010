//! Traefik on a swarm (issue 15): `traefik/traefik-swarm.yml` (the swarm
//! provider) and `deploy/swarm-stack.yml`, on paper and for real.
//!
//! On paper: the swarm static file is the single-engine one
//! (`traefik/traefik.yml`) but for its provider, and that provider is what
//! the Swarm backend's service labels need; the stack file parses and runs
//! zcaas in swarm mode beside Traefik the way the deploy notes say.
//!
//! For real: a two-node swarm of namespaced dockerds
//! (`zcaas_test_support::swarm_world`), zcaas in `swarm` mode against the
//! manager, our Traefik image run on node 0 with the repository's swarm
//! static file (adapted only where a test must differ: no certificate
//! resolver, the world's network, a constraint on the test label), reached
//! from the host through a relay into its namespace. An agent whose task
//! runs on the *worker* (node 1) is routed at `https://<slug>.<domain>`:
//! across nodes, over the overlay, from service labels Traefik polled on
//! the manager, to the task's own overlay address (Traefik's access log
//! names it). Only public paths are routed, plain HTTP is redirected, and
//! the route goes with DELETE. Skipped, with a message, where the harness
//! cannot run (not root, tools missing).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_yaml::Value as Yaml;
use zcaas_test_support::swarm::{self, SwarmCluster};
use zcaas_test_support::swarm_world::SwarmWorld;
use zcaas_test_support::traefik::{
    read_repo_yaml, repo_static_config, repo_swarm_static_config, test_swarm_static_config,
    SwarmTraefik,
};
use zcaas_test_support::{ensure_traefik_image, TestApp, TEST_LABEL, TRAEFIK_IMAGE};

/// Until a deploy settles.
const SETTLE: Duration = Duration::from_secs(120);
/// Until Traefik routes (or stops routing) an agent: a few rounds of the
/// swarm provider's poll (`refreshSeconds: 5`).
const ROUTE_WAIT: Duration = Duration::from_secs(30);
/// Agents created at most to find one whose task Swarm placed on node 1.
const MAX_AGENTS: usize = 4;

/// `v[k0][k1]…`, or `None` if any key is missing.
fn at<'a>(v: &'a Yaml, path: &[&str]) -> Option<&'a Yaml> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn str_at<'a>(v: &'a Yaml, path: &[&str]) -> &'a str {
    at(v, path)
        .and_then(Yaml::as_str)
        .unwrap_or_else(|| panic!("{} is not a string", path.join(".")))
}

#[test]
fn swarm_static_config_is_the_single_engine_one_with_the_swarm_provider() {
    let single = repo_static_config();
    let swarm = repo_swarm_static_config();

    // Everything but `providers` is the same: entrypoints, redirect,
    // middlewares, resolver, logs, API.
    let without_providers = |v: &Yaml| {
        let mut m = v.as_mapping().expect("a mapping").clone();
        m.remove("providers");
        m
    };
    assert_eq!(
        without_providers(&single),
        without_providers(&swarm),
        "traefik/traefik-swarm.yml differs from traefik/traefik.yml outside `providers`"
    );
    assert_eq!(
        at(&single, &["providers", "file"]),
        at(&swarm, &["providers", "file"]),
        "the file provider differs"
    );

    // The swarm provider alone (no docker provider beside it), as the
    // Swarm backend's labels need it.
    let providers = at(&swarm, &["providers"])
        .and_then(Yaml::as_mapping)
        .expect("providers");
    let names: Vec<&str> = providers.keys().filter_map(Yaml::as_str).collect();
    assert_eq!(names, ["swarm", "file"], "providers of traefik-swarm.yml");
    let p = |k: &str| at(&swarm, &["providers", "swarm", k]).unwrap_or_else(|| panic!("{k}"));
    assert_eq!(
        p("endpoint").as_str(),
        Some("unix:///var/run/docker.sock"),
        "the stack bind-mounts the manager's socket there"
    );
    assert_eq!(p("exposedByDefault").as_bool(), Some(false));
    assert_eq!(
        p("constraints").as_str(),
        at(&single, &["providers", "docker", "constraints"]).and_then(Yaml::as_str),
        "the same constraint as the single-engine file"
    );
    assert_eq!(
        p("network").as_str(),
        Some(
            zcaas::config::Config::with_data_dir(Default::default())
                .network
                .as_str()
        ),
        "the agents' network is ZCAAS_NETWORK's default"
    );
    let refresh = p("refreshSeconds").as_u64().expect("refreshSeconds");
    assert!(
        (1..=15).contains(&refresh),
        "refreshSeconds {refresh}: a new agent would wait that long for its route"
    );
    assert_eq!(p("watch").as_bool(), Some(true));

    // The test's adaptation touches only the resolver, network and
    // constraint.
    let adapted: Yaml =
        serde_yaml::from_str(&test_swarm_static_config("n", Some("Label(`a`, `b`)"))).unwrap();
    assert!(at(&adapted, &["certificatesResolvers"]).is_none());
    assert_eq!(str_at(&adapted, &["providers", "swarm", "network"]), "n");
    assert_eq!(
        at(&adapted, &["providers", "swarm", "refreshSeconds"]),
        Some(&Yaml::from(refresh))
    );
}

#[test]
fn swarm_stack_runs_zcaas_in_swarm_mode_behind_traefik_on_a_manager() {
    let stack = read_repo_yaml("deploy/swarm-stack.yml");
    let services = at(&stack, &["services"])
        .and_then(Yaml::as_mapping)
        .expect("services");
    let names: Vec<&str> = services.keys().filter_map(Yaml::as_str).collect();
    assert_eq!(names, ["traefik", "control-plane"]);
    let default_of = |s: &str| -> String {
        match s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            Some(inner) => inner
                .split_once(":-")
                .or_else(|| inner.split_once('-'))
                .map(|(_, d)| d.to_owned())
                .unwrap_or_else(|| panic!("{s} has no default")),
            None => s.to_owned(),
        }
    };

    for name in ["traefik", "control-plane"] {
        let s = &services[name];
        let constraints = at(s, &["deploy", "placement", "constraints"])
            .and_then(Yaml::as_sequence)
            .unwrap_or_else(|| panic!("{name}: placement constraints"));
        assert!(
            constraints
                .iter()
                .any(|c| c.as_str() == Some("node.role == manager")),
            "{name} needs a manager's API"
        );
        assert_eq!(
            at(s, &["deploy", "replicas"]).and_then(Yaml::as_u64),
            Some(1)
        );
        assert_eq!(
            str_at(s, &["deploy", "endpoint_mode"]),
            "dnsrr",
            "{name}: no VIP (nodes without IPVS have none)"
        );
        let networks: Vec<&str> = at(s, &["networks"])
            .and_then(Yaml::as_sequence)
            .expect("networks")
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        assert!(networks.contains(&"agents"), "{name} must reach the agents");
        let sockets = at(s, &["volumes"])
            .and_then(Yaml::as_sequence)
            .expect("volumes")
            .iter()
            .filter_map(|v| at(v, &["source"]).and_then(Yaml::as_str))
            .filter(|source| default_of(source) == "/var/run/docker.sock")
            .count();
        assert_eq!(sockets, 1, "{name}: the manager's socket");
    }
    let agents_net = &stack["networks"]["agents"];
    assert_eq!(agents_net["external"].as_bool(), Some(true));
    assert_eq!(default_of(str_at(agents_net, &["name"])), "zeroone-net");

    // Traefik: our image, the swarm static file as its configuration, the
    // ports in host mode (the routing mesh needs IPVS).
    let t = &services["traefik"];
    assert_eq!(default_of(str_at(t, &["image"])), TRAEFIK_IMAGE);
    let configs: BTreeMap<String, String> = at(t, &["configs"])
        .and_then(Yaml::as_sequence)
        .expect("traefik configs")
        .iter()
        .map(|c| {
            (
                str_at(c, &["target"]).to_owned(),
                str_at(c, &["source"]).to_owned(),
            )
        })
        .collect();
    let static_source = &configs["/etc/traefik/traefik.yml"];
    assert_eq!(
        default_of(str_at(&stack, &["configs", static_source, "file"])),
        "../traefik/traefik-swarm.yml"
    );
    for (target, source) in &configs {
        if let Some(file) = target.strip_prefix("/etc/traefik/dynamic/") {
            assert_eq!(
                str_at(&stack, &["configs", source, "file"]),
                format!("../traefik/dynamic/{file}")
            );
        }
    }
    let dynamic_files =
        std::fs::read_dir(zcaas_test_support::traefik::repo_root().join("traefik/dynamic"))
            .expect("traefik/dynamic")
            .count();
    assert_eq!(
        configs.len(),
        1 + dynamic_files,
        "every file of traefik/dynamic is a config of the stack: {configs:?}"
    );
    let ports = at(t, &["ports"])
        .and_then(Yaml::as_sequence)
        .expect("ports");
    let mut targets = Vec::new();
    for port in ports {
        assert_eq!(str_at(port, &["mode"]), "host", "{port:?}");
        targets.push(port["target"].as_u64().expect("target"));
    }
    assert_eq!(targets, [80, 443]);

    // The control plane: swarm mode, network addresses, the data volume,
    // and the router labels on the *service* (what the swarm provider
    // reads).
    let c = &services["control-plane"];
    let env = |k: &str| default_of(str_at(c, &["environment", k]));
    assert_eq!(env("ZCAAS_ORCHESTRATOR"), "swarm");
    assert_eq!(env("ZCAAS_AGENT_ADDRESS"), "network");
    assert_eq!(env("ZCAAS_NETWORK"), "zeroone-net");
    assert!(
        at(c, &["environment", "ZCAAS_NETWORK_ATTACH"]).is_none(),
        "a task cannot be connected to a network by hand"
    );
    let volumes: Vec<&Yaml> = at(c, &["volumes"])
        .and_then(Yaml::as_sequence)
        .expect("volumes")
        .iter()
        .collect();
    assert!(
        volumes
            .iter()
            .any(|v| v.as_str() == Some("zcaas-data:/data")),
        "the data volume"
    );
    let labels = at(c, &["deploy", "labels"]).expect("service labels");
    assert_eq!(str_at(labels, &["io.zcaas.managed"]), "true");
    assert_eq!(str_at(labels, &["traefik.enable"]), "true");
    assert_eq!(
        default_of(str_at(labels, &["traefik.swarm.network"])),
        "zcaas-edge"
    );
    assert_eq!(
        str_at(
            labels,
            &["traefik.http.services.zcaas.loadbalancer.server.port"]
        ),
        "8080"
    );
    assert!(
        at(c, &["labels"]).is_none(),
        "container labels are invisible to the swarm provider: use deploy.labels"
    );
}

/// The running task of service `name`: (node index, its address on
/// `network`).
fn running_task(cluster: &SwarmCluster, name: &str, network: &str) -> (usize, IpAddr) {
    let t = cluster
        .running_task(name, Some(network))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let addr = t
        .addr
        .as_deref()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{name}'s task has no address on {network}: {t:?}"));
    (t.node.expect("a node of the cluster"), addr)
}

/// The backend address (`ServiceAddr`) of the last request for `host` that
/// Traefik's JSON access log records with status 200.
fn routed_to(traefik: &SwarmTraefik, host: &str) -> Option<String> {
    traefik
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["RequestHost"] == host && e["DownstreamStatus"] == 200)
        .filter_map(|e| e["ServiceAddr"].as_str().map(str::to_owned))
        .next_back()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_routes_an_agent_on_a_worker_through_the_swarm_provider() {
    if let Some(why) = swarm::unsupported() {
        eprintln!("skipping: the swarm harness cannot run here: {why}");
        return;
    }
    let started = Instant::now();
    let image = ensure_traefik_image().await;
    let world = SwarmWorld::start_with_images(2, &[image])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let tag = world.tag().to_owned();
    eprintln!("[{tag}] swarm of 2 up in {:.1?}", started.elapsed());
    let app = TestApp::in_swarm(&world, |c| {
        c.domain = "swarm-routes.test".into();
        // The adapted configuration has no resolver: Traefik's default
        // certificate (nothing may ask an ACME server).
        c.traefik_cert_resolver = String::new();
        c.retry_backoff_base = Duration::from_secs(1);
    })
    .await;
    // Started before the agents, so it has polled the manager at least
    // once by the time they run; only this test's services are routed.
    let constraint = format!(
        "Label(`io.zcaas.managed`, `true`) && Label(`{TEST_LABEL}`, `{}`)",
        world.prefix
    );
    let t0 = Instant::now();
    let traefik = SwarmTraefik::start(&world, 0, &constraint).await;
    eprintln!(
        "[{tag}] Traefik answering on node 0 in {:.1?}",
        t0.elapsed()
    );
    let cluster = &world.cluster;
    let jwt = app.register("swarmtraefik").await;

    // Agents until one's task runs on the worker, two at least (Swarm
    // spreads tasks over the nodes; zcaas pins each to its first node).
    let mut placed: Vec<(String, String, usize, IpAddr)> = Vec::new();
    for i in 0..MAX_AGENTS {
        let (status, created) = app
            .create_agent(&jwt, app.agent_body(&format!("Router {i}")))
            .await;
        assert!(status.is_success(), "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let agent = app
            .wait_status(&jwt, &id, &["RUNNING", "ERROR"], SETTLE)
            .await;
        assert_eq!(agent["status"], "RUNNING", "{agent}");
        let slug = agent["slug"].as_str().unwrap().to_owned();
        let (node, addr) = running_task(cluster, &format!("zeroclaw-{slug}"), &world.network);
        placed.push((id, slug, node, addr));
        // Two at least: the other one is routed too, wherever it runs.
        if placed.len() >= 2 && placed.iter().any(|(.., n, _)| *n == 1) {
            break;
        }
    }
    let (id, slug, _, task_addr) = placed
        .iter()
        .find(|(.., node, _)| *node == 1)
        .cloned()
        .unwrap_or_else(|| panic!("no agent's task on node 1 after {MAX_AGENTS}: {placed:?}"));
    let host = format!("{slug}.{}", app.config.domain);
    let (_, agent) = app.get_agent(&jwt, &id).await;
    assert_eq!(
        agent["publicUrl"].as_str(),
        Some(format!("https://{host}").as_str())
    );

    // Routed from the service's labels within a few polls of RUNNING.
    let t1 = Instant::now();
    traefik
        .wait_status(&host, "/health", 200, ROUTE_WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nTraefik:\n{}", traefik.logs()));
    eprintln!(
        "[{tag}] {host} (task on node 1 at {task_addr}) routed {:.1?} after RUNNING",
        t1.elapsed()
    );
    let client = traefik.client(&host);
    let r = client
        .get(traefik.https_url(&host, "/health"))
        .send()
        .await
        .expect("GET /health through Traefik");
    assert_eq!(r.status(), 200);
    let health: Value = r.json().await.expect("the agent's health JSON");
    assert_eq!(health["status"], "ok", "{health}");
    assert!(health["paired"].is_boolean(), "{health}");
    assert!(health["runtime"]["pid"].is_u64(), "{health}");
    // The same agent the control plane reads directly.
    let (status, direct) = app.health(&jwt, &id).await;
    assert_eq!(status, 200, "{direct}");
    // Traefik sent it to the worker's task, at its overlay address.
    let deadline = Instant::now() + Duration::from_secs(5);
    let backend = loop {
        if let Some(addr) = routed_to(&traefik, &host) {
            break addr;
        }
        assert!(
            Instant::now() < deadline,
            "no access-log line for {host}:\n{}",
            traefik.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        backend,
        format!("{task_addr}:42617"),
        "Traefik's backend for {host} is not the node-1 task's overlay address"
    );

    // Every other agent, on whichever node, is routed too.
    for (_, other, node, _) in placed.iter().filter(|(i, ..)| *i != id) {
        let other_host = format!("{other}.{}", app.config.domain);
        traefik
            .wait_status(&other_host, "/health", 200, ROUTE_WAIT)
            .await
            .unwrap_or_else(|e| panic!("{other} on node {node}: {e:#}"));
        eprintln!("[{tag}] {other_host} (task on node {node}) routed too");
    }

    // Only the public paths: the pairing endpoints and the runtime's API
    // are Traefik's 404.
    for path in ["/pair", "/pair/code", "/metrics", "/api/status"] {
        let r = client
            .get(traefik.https_url(&host, path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status(), 404, "{path} must not be routed");
    }

    // Plain HTTP is redirected to HTTPS, path kept.
    zcaas_test_support::traefik::assert_https_redirect(
        &traefik.http_url("/health"),
        &host,
        "/health",
    )
    .await;

    // DELETE: the route goes with the service, within a few polls.
    let (status, body) = app.delete_agent(&jwt, &id).await;
    assert!(status.is_success(), "{body}");
    let t2 = Instant::now();
    traefik
        .wait_status(&host, "/health", 404, ROUTE_WAIT)
        .await
        .unwrap_or_else(|e| panic!("after DELETE: {e:#}\nTraefik:\n{}", traefik.logs()));
    eprintln!("[{tag}] route gone {:.1?} after DELETE", t2.elapsed());

    drop(traefik);
    drop(app);
    world.shutdown().unwrap_or_else(|e| panic!("{e:#}"));
    let left = swarm::leftovers(&tag);
    assert!(left.is_empty(), "left on the machine: {left:?}");
    eprintln!("[{tag}] whole test {:.1?}", started.elapsed());
}
