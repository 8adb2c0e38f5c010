//! Issue 7: the Traefik labels the control plane puts on a real agent
//! container agree with the repository's Traefik configuration
//! (`traefik/traefik.yml`, `traefik/dynamic/`) and with the compose stack
//! (`deploy/docker-compose.yml`), so the two cannot drift apart: router rule,
//! entrypoint, certificate resolver, service port, network and middlewares.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::Value as Yaml;
use zcaas::config::Config;
use zcaas::docker::AGENT_PORT;
use zcaas_test_support::{docker_inspect, TestApp};

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read_yaml(path: &Path) -> Yaml {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// `v[k0][k1]…`, or `None` if any key is missing.
fn at<'a>(v: &'a Yaml, path: &[&str]) -> Option<&'a Yaml> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn keys(v: Option<&Yaml>) -> BTreeSet<String> {
    v.and_then(Yaml::as_mapping)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The default of a compose interpolation `${VAR:-default}` (or the text
/// itself when it is a plain value).
fn compose_default(s: &str) -> String {
    match s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(inner) => inner
            .split_once(":-")
            .map(|(_, d)| d.to_owned())
            .unwrap_or_else(|| panic!("{s} has no default")),
        None => s.to_owned(),
    }
}

/// What the labels may refer to, read from `traefik/`.
struct Traefik {
    static_config: Yaml,
    entrypoints: BTreeSet<String>,
    resolvers: BTreeSet<String>,
    /// Middlewares the file provider defines (`<name>@file`).
    file_middlewares: BTreeMap<String, Yaml>,
}

impl Traefik {
    fn load() -> Traefik {
        let static_config = read_yaml(&repo().join("traefik/traefik.yml"));
        let entrypoints = keys(at(&static_config, &["entryPoints"]));
        let resolvers = keys(at(&static_config, &["certificatesResolvers"]));
        let dir = at(&static_config, &["providers", "file", "directory"])
            .and_then(Yaml::as_str)
            .expect("providers.file.directory");
        assert_eq!(
            dir, "/etc/traefik/dynamic",
            "deploy/docker-compose.yml mounts traefik/dynamic there"
        );
        let mut file_middlewares = BTreeMap::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("traefik/dynamic"))
            .expect("traefik/dynamic")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "traefik/dynamic has no YAML file");
        for file in files {
            let doc = read_yaml(&file);
            if let Some(m) = at(&doc, &["http", "middlewares"]).and_then(Yaml::as_mapping) {
                for (name, def) in m {
                    let name = name.as_str().expect("middleware name").to_owned();
                    assert!(
                        file_middlewares.insert(name.clone(), def.clone()).is_none(),
                        "middleware {name} defined twice"
                    );
                }
            }
        }
        Traefik {
            static_config,
            entrypoints,
            resolvers,
            file_middlewares,
        }
    }

    /// Asserts that `reference` (from a label or the static file) names a
    /// middleware of the file provider, and that a chain's members exist.
    fn assert_middleware(&self, reference: &str, from: &str) {
        let name = reference.strip_suffix("@file").unwrap_or_else(|| {
            panic!("{from}: middleware {reference:?} must be a file-provider one (<name>@file)")
        });
        let def = self
            .file_middlewares
            .get(name)
            .unwrap_or_else(|| panic!("{from}: middleware {name} is not in traefik/dynamic/"));
        if let Some(members) = at(def, &["chain", "middlewares"]).and_then(Yaml::as_sequence) {
            for m in members {
                let m = m.as_str().expect("chain member");
                assert!(
                    self.file_middlewares.contains_key(m),
                    "chain {name}: member {m} is not in traefik/dynamic/"
                );
            }
        }
    }

    /// Asserts that the router labels under `traefik.http.routers.<router>`
    /// refer to what this configuration defines: entrypoints (TLS ones),
    /// certificate resolver, middlewares.
    fn assert_router(&self, labels: &BTreeMap<String, String>, router: &str, from: &str) {
        let key = |suffix: &str| format!("traefik.http.routers.{router}.{suffix}");
        let entrypoints = labels
            .get(&key("entrypoints"))
            .unwrap_or_else(|| panic!("{from}: router {router} has no entrypoints label"));
        for ep in entrypoints.split(',').map(str::trim) {
            assert!(
                self.entrypoints.contains(ep),
                "{from}: entrypoint {ep} is not in traefik.yml ({:?})",
                self.entrypoints
            );
            assert_eq!(
                at(&self.static_config, &["entryPoints", ep, "address"]).and_then(Yaml::as_str),
                Some(":443"),
                "{from}: routers must use the TLS entrypoint"
            );
        }
        let resolver = labels
            .get(&key("tls.certresolver"))
            .unwrap_or_else(|| panic!("{from}: router {router} has no certresolver label"));
        assert!(
            self.resolvers.contains(resolver),
            "{from}: resolver {resolver} is not in traefik.yml ({:?})",
            self.resolvers
        );
        if let Some(refs) = labels.get(&key("middlewares")) {
            for r in refs.split(',').map(str::trim) {
                self.assert_middleware(r, from);
            }
        }
    }
}

/// `traefik.http.routers.<name>.…` → the set of router names.
fn router_names(labels: &BTreeMap<String, String>) -> BTreeSet<String> {
    labels
        .keys()
        .filter_map(|k| k.strip_prefix("traefik.http.routers."))
        .filter_map(|rest| rest.split_once('.').map(|(name, _)| name.to_owned()))
        .collect()
}

/// `traefik.http.services.<name>.…` → the set of service names.
fn service_names(labels: &BTreeMap<String, String>) -> BTreeSet<String> {
    labels
        .keys()
        .filter_map(|k| k.strip_prefix("traefik.http.services."))
        .filter_map(|rest| rest.split_once('.').map(|(name, _)| name.to_owned()))
        .collect()
}

/// The static file's own invariants: HTTP→HTTPS redirect, Docker provider
/// opt-in on the agents' default network, dashboard not exposed, an ACME
/// resolver with a challenge, and every middleware it references defined.
#[test]
fn static_configuration_is_complete() {
    let t = Traefik::load();
    let s = &t.static_config;
    assert_eq!(
        at(s, &["entryPoints", "web", "address"]).and_then(Yaml::as_str),
        Some(":80")
    );
    let redirect = at(
        s,
        &["entryPoints", "web", "http", "redirections", "entryPoint"],
    )
    .expect("web redirects");
    let to = redirect.get("to").and_then(Yaml::as_str).expect("to");
    assert_eq!(
        to,
        Config::with_data_dir(PathBuf::new()).traefik_entrypoint,
        "web must redirect to the entrypoint agents are routed on"
    );
    assert_eq!(redirect.get("scheme").and_then(Yaml::as_str), Some("https"));
    assert_eq!(
        at(s, &["providers", "docker", "exposedByDefault"]).and_then(Yaml::as_bool),
        Some(false)
    );
    assert_eq!(
        at(s, &["providers", "docker", "network"]).and_then(Yaml::as_str),
        Some(Config::with_data_dir(PathBuf::new()).network.as_str()),
        "the Docker provider must use the agents' network (ZCAAS_NETWORK's default)"
    );
    assert_eq!(
        at(s, &["api", "dashboard"]).and_then(Yaml::as_bool),
        Some(false)
    );
    assert_ne!(
        at(s, &["api", "insecure"]).and_then(Yaml::as_bool),
        Some(true)
    );
    for resolver in &t.resolvers {
        let acme = at(s, &["certificatesResolvers", resolver, "acme"]).expect("acme");
        assert!(acme.get("storage").is_some(), "{resolver}: no storage");
        match acme.get("httpChallenge") {
            Some(http) => {
                let ep = http.get("entryPoint").and_then(Yaml::as_str).expect("ep");
                assert!(t.entrypoints.contains(ep), "{resolver}: HTTP-01 on {ep}");
            }
            None => assert!(
                acme.get("dnsChallenge").is_some(),
                "{resolver}: no challenge"
            ),
        }
    }
    let mut referenced = 0;
    for ep in &t.entrypoints {
        if let Some(list) =
            at(s, &["entryPoints", ep, "http", "middlewares"]).and_then(Yaml::as_sequence)
        {
            for m in list {
                t.assert_middleware(m.as_str().expect("name"), &format!("entrypoint {ep}"));
                referenced += 1;
            }
        }
    }
    assert!(
        referenced > 0,
        "the websecure entrypoint applies the security middlewares"
    );
}

/// The compose stack routes the control plane through the same entrypoint
/// and resolver, configures zcaas with names traefik.yml defines, and puts
/// both on the network the Docker provider uses.
#[test]
fn compose_stack_matches_traefik_configuration() {
    let t = Traefik::load();
    let compose = read_yaml(&repo().join("deploy/docker-compose.yml"));
    let cp = at(&compose, &["services", "control-plane"]).expect("control-plane service");
    let env: BTreeMap<String, String> = serde_yaml::from_value(
        cp.get("environment")
            .cloned()
            .expect("control-plane environment"),
    )
    .expect("environment is a map of strings");
    assert_eq!(
        env.get("ZCAAS_AGENT_ADDRESS").map(String::as_str),
        Some("network")
    );
    let entrypoint = &env["ZCAAS_TRAEFIK_ENTRYPOINT"];
    let resolver = &env["ZCAAS_TRAEFIK_CERT_RESOLVER"];
    assert!(t.entrypoints.contains(entrypoint), "{entrypoint}");
    assert!(t.resolvers.contains(resolver), "{resolver}");
    let defaults = Config::with_data_dir(PathBuf::new());
    assert!(t.entrypoints.contains(&defaults.traefik_entrypoint));
    assert!(t.resolvers.contains(&defaults.traefik_cert_resolver));

    let provider_network = at(&t.static_config, &["providers", "docker", "network"])
        .and_then(Yaml::as_str)
        .expect("providers.docker.network");
    assert_eq!(compose_default(&env["ZCAAS_NETWORK"]), provider_network);
    let network_name = at(&compose, &["networks", "agents", "name"])
        .and_then(Yaml::as_str)
        .expect("networks.agents.name");
    assert_eq!(compose_default(network_name), provider_network);
    for service in ["traefik", "control-plane"] {
        let nets = at(&compose, &["services", service, "networks"])
            .and_then(Yaml::as_sequence)
            .unwrap_or_else(|| panic!("{service} networks"));
        for net in ["agents", "edge"] {
            assert!(
                nets.iter().any(|n| n.as_str() == Some(net)),
                "{service} is not on the {net} network"
            );
        }
    }
    // Traefik reaches the API over the edge network, whose subnet is the
    // control plane's trusted proxy range.
    let edge_name = at(&compose, &["networks", "edge", "name"])
        .and_then(Yaml::as_str)
        .expect("networks.edge.name");
    let edge_subnet = at(&compose, &["networks", "edge", "ipam", "config"])
        .and_then(Yaml::as_sequence)
        .and_then(|c| c.first())
        .and_then(|c| c.get("subnet"))
        .and_then(Yaml::as_str)
        .expect("networks.edge.ipam.config[0].subnet");
    assert_eq!(
        compose_default(&env["ZCAAS_TRUSTED_PROXIES"]),
        compose_default(edge_subnet)
    );

    let labels: BTreeMap<String, String> =
        serde_yaml::from_value(cp.get("labels").cloned().expect("labels")).expect("label map");
    assert_eq!(labels["traefik.docker.network"], edge_name);
    let routers = router_names(&labels);
    assert!(!routers.is_empty(), "the control plane has a router");
    for router in &routers {
        assert!(
            zcaas::validation::slug(router).is_err(),
            "router {router} could be an agent's slug: agents' routers are named after their slug"
        );
        t.assert_router(&labels, router, "deploy/docker-compose.yml");
    }
}

/// Deploys one real agent and checks the labels Docker holds for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_on_a_real_agent_container_match_traefik_configuration() {
    let t = Traefik::load();
    let env = TestApp::in_world().await;
    let jwt = env.register("routes").await;
    let agent = env
        .create_running_agent(&jwt, env.agent_body("Route Check"))
        .await;
    let id = agent["id"].as_str().unwrap().to_owned();
    let slug = agent["slug"].as_str().unwrap().to_owned();

    let c = docker_inspect(&format!("zeroclaw-{slug}")).expect("the agent's container");
    let labels: BTreeMap<String, String> =
        serde_json::from_value(c["Config"]["Labels"].clone()).unwrap();
    assert_eq!(labels["traefik.enable"], "true");

    // One router and one service, both named after the slug; the router
    // uses that service (no `.service` label needed with exactly one).
    let routers = router_names(&labels);
    assert_eq!(routers, BTreeSet::from([slug.clone()]), "{labels:?}");
    let services = service_names(&labels);
    assert_eq!(services, BTreeSet::from([slug.clone()]), "{labels:?}");
    if let Some(s) = labels.get(&format!("traefik.http.routers.{slug}.service")) {
        assert_eq!(s, &slug);
    }
    assert_eq!(
        labels[&format!("traefik.http.routers.{slug}.rule")],
        format!("Host(`{slug}.{}`)", env.config.domain)
    );
    t.assert_router(&labels, &slug, "agent container");

    // The service port is the port the agent's image exposes and its
    // gateway listens on.
    let port = &labels[&format!("traefik.http.services.{slug}.loadbalancer.server.port")];
    assert_eq!(port, &AGENT_PORT.to_string());
    let exposed: Vec<&String> = c["Config"]["ExposedPorts"]
        .as_object()
        .expect("exposed ports")
        .keys()
        .collect();
    assert_eq!(exposed, vec![&format!("{port}/tcp")]);
    let image = docker_inspect(&env.config.runtime_image).expect("runtime image");
    assert!(
        image["Config"]["ExposedPorts"]
            .get(format!("{port}/tcp"))
            .is_some(),
        "the runtime image does not expose {port}: {}",
        image["Config"]["ExposedPorts"]
    );

    // The network Traefik must use is the control plane's, and the
    // container is on it.
    assert_eq!(labels["traefik.docker.network"], env.config.network);
    let networks = c["NetworkSettings"]["Networks"]
        .as_object()
        .expect("networks");
    assert!(
        networks.contains_key(&env.config.network),
        "container not on {}: {:?}",
        env.config.network,
        networks.keys().collect::<Vec<_>>()
    );
    assert!(networks[&env.config.network]["IPAddress"]
        .as_str()
        .is_some_and(|ip| !ip.is_empty()));

    // Every other Traefik label is one of the above: nothing unchecked.
    let checked: BTreeSet<String> = [
        "traefik.enable".to_owned(),
        "traefik.docker.network".to_owned(),
        format!("traefik.http.routers.{slug}.rule"),
        format!("traefik.http.routers.{slug}.entrypoints"),
        format!("traefik.http.routers.{slug}.tls.certresolver"),
        format!("traefik.http.routers.{slug}.middlewares"),
        format!("traefik.http.routers.{slug}.service"),
        format!("traefik.http.services.{slug}.loadbalancer.server.port"),
    ]
    .into();
    let unchecked: Vec<&String> = labels
        .keys()
        .filter(|k| k.starts_with("traefik.") && !checked.contains(*k))
        .collect();
    assert!(
        unchecked.is_empty(),
        "labels this test does not check: {unchecked:?}"
    );

    let (code, _) = env.delete_agent(&jwt, &id).await;
    assert_eq!(code, 204, "delete");
}
