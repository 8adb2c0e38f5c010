//! Traefik, on paper and for real.
//!
//! On paper (issue 7): the Traefik labels the control plane puts on a real
//! agent container agree with the repository's Traefik configuration
//! (`traefik/traefik.yml`, `traefik/dynamic/`) and with the compose stack
//! (`deploy/docker-compose.yml`), so the two cannot drift apart: router rule,
//! entrypoint, certificate resolver, service port, network and middlewares.
//!
//! For real (issue 13): a real Traefik (zcaas's own image, the repository's
//! configuration adapted only where a test must differ:
//! [`zcaas_test_support::traefik`]) routes `https://<slug>.<domain>` to the
//! agent from its labels — only the public paths, HTTP redirected to HTTPS,
//! across `docker restart` and a re-deploy, gone after DELETE, with the
//! public bearer tokens the control plane issues — and never routes a
//! container without our labels or of another installation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::Value as Yaml;
use std::time::Duration;
use zcaas::config::Config;
use zcaas::docker::AGENT_PORT;

use reqwest::StatusCode;
use zcaas::docker::router_rule;
use zcaas::docker::{INSTALLATION_LABEL, MANAGED_LABEL};
use zcaas_test_support::traefik::TraefikContainer;
use zcaas_test_support::{docker_cli, docker_inspect, TestApp, STUB_IMAGE, TEST_LABEL};

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

/// The default of a compose interpolation `${VAR:-default}` or
/// `${VAR-default}` (or the text itself when it is a plain value).
fn compose_default(s: &str) -> String {
    match s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(inner) => inner
            .split_once(":-")
            .or_else(|| inner.split_once('-'))
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
        assert_eq!(
            labels.get(&key("tls")).map(String::as_str),
            Some("true"),
            "{from}: router {router} must serve TLS"
        );
        let resolver = compose_default(
            labels
                .get(&key("tls.certresolver"))
                .unwrap_or_else(|| panic!("{from}: router {router} has no certresolver label")),
        );
        assert!(
            self.resolvers.contains(&resolver),
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
    let constraints = at(s, &["providers", "docker", "constraints"])
        .and_then(Yaml::as_str)
        .expect("providers.docker.constraints");
    assert!(
        constraints.contains(&format!("Label(`{MANAGED_LABEL}`, `true`)")),
        "only containers labelled {MANAGED_LABEL}=true may be routed: {constraints}"
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
    let entrypoint = compose_default(&env["ZCAAS_TRAEFIK_ENTRYPOINT"]);
    let resolver = compose_default(&env["ZCAAS_TRAEFIK_CERT_RESOLVER"]);
    assert!(t.entrypoints.contains(&entrypoint), "{entrypoint}");
    assert!(t.resolvers.contains(&resolver), "{resolver}");
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
    assert_eq!(
        compose_default(&labels["traefik.docker.network"]),
        compose_default(edge_name)
    );
    assert_eq!(
        labels.get(MANAGED_LABEL).map(String::as_str),
        Some("true"),
        "traefik.yml's constraint routes only containers labelled {MANAGED_LABEL}=true"
    );
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
        router_rule(
            &format!("{slug}.{}", env.config.domain),
            &env.config.public_paths
        )
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
        format!("traefik.http.routers.{slug}.tls"),
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

/// What a real Traefik answers for a path no router matches.
const TRAEFIK_404: &str = "404 page not found";

/// `GET https://<host><path>` through `traefik`: status and body.
async fn get(traefik: &TraefikContainer, host: &str, path: &str) -> (StatusCode, String) {
    let r = traefik
        .client(host)
        .get(traefik.https_url(host, path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET https://{host}{path}: {e}"));
    (r.status(), r.text().await.unwrap_or_default())
}

/// `POST https://<host>/webhook` through `traefik` with `token` (if any).
async fn webhook(
    traefik: &TraefikContainer,
    host: &str,
    token: Option<&str>,
    message: &str,
) -> (StatusCode, String) {
    let mut req = traefik
        .client(host)
        .post(traefik.https_url(host, "/webhook"))
        .json(&serde_json::json!({ "message": message }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("POST /webhook through Traefik");
    (r.status(), r.text().await.unwrap_or_default())
}

/// Retries `webhook` until it answers `want` (bounded): after a restart the
/// route and the gateway come back within a second or two.
async fn webhook_until(
    traefik: &TraefikContainer,
    host: &str,
    token: Option<&str>,
    want: StatusCode,
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = webhook(traefik, host, token, "hello through traefik").await;
        if status == want {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "POST https://{host}/webhook: wanted {want}, got {status} {body}\nTraefik:\n{}",
            traefik.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// This test app's installation id.
fn installation_of(env: &TestApp) -> String {
    env.state()
        .orchestrator
        .installation()
        .expect("the test app is scoped to an installation")
        .to_owned()
}

/// A real Traefik on the app's network that routes only this
/// installation's containers (the per-installation constraint traefik.yml
/// documents).
async fn traefik_for_this_installation(env: &TestApp) -> TraefikContainer {
    let installation = installation_of(env);
    TraefikContainer::start(
        &env.prefix,
        &env.config.network,
        Some(&format!(
            "Label(`{MANAGED_LABEL}`, `true`) && Label(`{INSTALLATION_LABEL}`, `{installation}`)"
        )),
    )
    .await
}

/// The whole public face of one agent through a real Traefik: routed from
/// its labels at `https://<slug>.<domain>`, HTTP redirected to HTTPS, only
/// the public paths (everything else Traefik's 404), a bearer token the
/// control plane issued works there while the control plane keeps its own,
/// the route survives `docker restart` and a re-deploy, a revoked token is
/// refused, and the route is gone after DELETE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_traefik_routes_only_the_public_paths_of_an_agent() {
    let env = TestApp::in_world_with(|c| {
        // The adapted configuration has no resolver: Traefik's default
        // certificate (nothing may ask an ACME server).
        c.traefik_cert_resolver = String::new();
    })
    .await;
    let traefik = traefik_for_this_installation(&env).await;
    let jwt = env.register("public").await;
    let agent = env
        .create_running_agent(&jwt, env.agent_body("Public Face"))
        .await;
    let id = agent["id"].as_str().unwrap().to_owned();
    let slug = agent["slug"].as_str().unwrap().to_owned();
    let host = format!("{slug}.{}", env.config.domain);
    assert_eq!(
        agent["publicUrl"].as_str(),
        Some(format!("https://{host}").as_str())
    );

    // Routed from its labels (Traefik sees the container within a second
    // or so of its start).
    traefik
        .wait_status(&host, "/health", 200, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nTraefik:\n{}", traefik.logs()));

    // Plain HTTP is redirected to HTTPS, path kept.
    zcaas_test_support::traefik::assert_https_redirect(
        &traefik.http_url("/health"),
        &host,
        "/health",
    )
    .await;

    // Only the public paths: the pairing endpoints, metrics and the
    // runtime's API are Traefik's 404, while the agent itself serves them
    // (so the 404 is the route's, not the agent's).
    let direct = reqwest::Client::new();
    let agent_port = env.get_agent(&jwt, &id).await.1["containerPort"]
        .as_i64()
        .expect("containerPort");
    for path in [
        "/pair/code",
        "/pair",
        "/metrics",
        "/api/status",
        "/",
        "/healthz",
    ] {
        let (status, body) = get(&traefik, &host, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body.trim(), TRAEFIK_404, "{path} reached the agent");
    }
    let direct_status = direct
        .get(format!("http://127.0.0.1:{agent_port}/pair/code"))
        .send()
        .await
        .expect("direct /pair/code")
        .status();
    assert_ne!(
        direct_status,
        StatusCode::NOT_FOUND,
        "the agent serves /pair/code"
    );
    // /webhook is routed: without a token the agent itself refuses.
    let (status, body) = webhook(&traefik, &host, None, "hi").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // A token the control plane issues works at the public URL.
    let (code, issued) = env.issue_token(&jwt, &id, "laptop").await;
    assert_eq!(code, 201, "{issued}");
    let token = issued["token"].as_str().expect("token").to_owned();
    env.wait_running(&jwt, &id).await;
    let body = webhook_until(&traefik, &host, Some(&token), StatusCode::OK).await;
    assert!(body.contains("echo: hello through traefik"), "{body}");
    let (code, answer) = env.message(&jwt, &id, "via the control plane").await;
    assert_eq!(code, 200, "{answer}");

    // `docker restart` behind the control plane's back: same route, same
    // tokens (the control plane's and the issued one).
    let container = format!("zeroclaw-{slug}");
    docker_cli(&["restart", "-t", "5", &container]).expect("docker restart");
    let body = webhook_until(&traefik, &host, Some(&token), StatusCode::OK).await;
    assert!(body.contains("echo:"), "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, answer) = env.message(&jwt, &id, "after docker restart").await;
        if code == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the control plane cannot message the agent after a restart: {code} {answer}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A re-deploy (a configuration change recreates the container): the
    // new container is routed too.
    let before = docker_inspect(&container).expect("container")["Id"].clone();
    let (code, patched) = env
        .patch_agent(&jwt, &id, serde_json::json!({ "temperature": 0.3 }))
        .await;
    assert_eq!(code, 200, "{patched}");
    env.wait_running(&jwt, &id).await;
    let after = docker_inspect(&container).expect("container")["Id"].clone();
    assert_ne!(before, after, "the change re-created the container");
    let body = webhook_until(&traefik, &host, Some(&token), StatusCode::OK).await;
    assert!(body.contains("echo:"), "{body}");

    // Revoked: refused at the public URL once the agent runs again; the
    // control plane still reaches it.
    let token_id = issued["id"].as_str().expect("token id");
    let (code, _) = env.revoke_token(&jwt, &id, token_id).await;
    assert_eq!(code, 204);
    env.wait_running(&jwt, &id).await;
    webhook_until(&traefik, &host, Some(&token), StatusCode::UNAUTHORIZED).await;
    let (code, answer) = env.message(&jwt, &id, "after the revocation").await;
    assert_eq!(code, 200, "{answer}");

    // Deleted: the route is gone.
    let (code, _) = env.delete_agent(&jwt, &id).await;
    assert_eq!(code, 204);
    traefik
        .wait_status(&host, "/health", 404, Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nTraefik:\n{}", traefik.logs()));
}

/// Removes a container by name when dropped (for the one this test starts
/// without our labels, which no cleanup by label may touch).
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

/// Starts the provider stand-in (it answers `GET /health`) as a backend
/// with Traefik labels routing `host`, and the given ownership labels.
fn stand_in(name: &str, network: &str, host: &str, labels: &[(&str, &str)]) {
    let mut args: Vec<String> = ["run", "-d", "--name", name, "--network", network]
        .map(String::from)
        .to_vec();
    let router = name.replace('-', "");
    let traefik_labels = [
        ("traefik.enable".to_owned(), "true".to_owned()),
        (
            format!("traefik.http.routers.{router}.rule"),
            format!("Host(`{host}`)"),
        ),
        (
            format!("traefik.http.routers.{router}.entrypoints"),
            "websecure".to_owned(),
        ),
        (
            format!("traefik.http.routers.{router}.tls"),
            "true".to_owned(),
        ),
        (
            format!("traefik.http.services.{router}.loadbalancer.server.port"),
            "8080".to_owned(),
        ),
        ("traefik.docker.network".to_owned(), network.to_owned()),
    ];
    for (k, v) in traefik_labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(labels.iter().copied())
    {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    args.extend(["-e".into(), "PORT=8080".into(), STUB_IMAGE.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker_cli(&args).unwrap_or_else(|e| panic!("docker run {name}: {e:#}"));
}

/// Traefik routes a container of this installation from its labels, and
/// never one whose labels say Traefik but which lacks ours, nor one of
/// another installation (the constraint traefik.yml documents for several
/// installations on one engine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_traefik_never_routes_foreign_containers() {
    let env = TestApp::in_world().await;
    let installation = installation_of(&env);
    let traefik = traefik_for_this_installation(&env).await;
    let p = &env.prefix;
    let test_label = p.as_str();
    let ours = format!("{p}-ours");
    let other = format!("{p}-other");
    let unlabelled = format!("{p}-unlabelled");
    let _unlabelled_guard = RemoveOnDrop(unlabelled.clone());
    let domain = &env.config.domain;
    let (ours_host, other_host, unlabelled_host) = (
        format!("ours-{p}.{domain}"),
        format!("other-{p}.{domain}"),
        format!("bare-{p}.{domain}"),
    );
    stand_in(
        &ours,
        &env.config.network,
        &ours_host,
        &[
            (MANAGED_LABEL, "true"),
            (TEST_LABEL, test_label),
            (INSTALLATION_LABEL, &installation),
        ],
    );
    stand_in(
        &other,
        &env.config.network,
        &other_host,
        &[
            (MANAGED_LABEL, "true"),
            (TEST_LABEL, test_label),
            (INSTALLATION_LABEL, "another-installation"),
        ],
    );
    stand_in(&unlabelled, &env.config.network, &unlabelled_host, &[]);

    // The control: the same stand-in with this installation's labels is
    // routed, so the 404s below are the constraint's doing.
    traefik
        .wait_status(&ours_host, "/health", 200, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nTraefik:\n{}", traefik.logs()));
    // All three started before the control answered; give Traefik one more
    // provider refresh, then neither foreign one may be routed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for host in [&other_host, &unlabelled_host] {
        let (status, body) = get(&traefik, host, "/health").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{host} was routed: {body}");
        assert_eq!(body.trim(), TRAEFIK_404);
    }
}
