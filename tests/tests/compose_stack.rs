//! Issue 13: the production stack really comes up. `deploy/docker-compose.yml`
//! is started with `docker-compose up -d` — our Traefik image, the control
//! plane's image built by `scripts/build-control-plane-image.sh`, the
//! repository's Traefik configuration adapted only where a test must differ
//! (no ACME resolver, the test's network) — and everything is done through
//! Traefik, as a user on the Internet would: HTTP → HTTPS redirect, register,
//! create an agent, reach it at `https://<slug>.<domain>`, call its
//! `/webhook` with a token the control plane issues, and see the provider
//! stand-in's answer. Both services' Docker health checks reach `healthy`;
//! `docker-compose down -v` then leaves nothing of the test behind.
//!
//! What the test varies is what the compose file exposes as variables (host
//! ports, networks, subnet, domain, static file, certificate resolver); the
//! override file it generates only adds the test's labels (so cleanup by
//! label removes the stack even if the test panics; the control plane's
//! sweeps never touch them: they carry no agent id and no installation id),
//! the control plane's extra label for the agents it creates, provider URLs
//! on a private network allowed (the stand-in's), and short health-check
//! intervals (the commands are the production ones). The control plane's
//! image is built by the production script and Dockerfile from the static
//! `zcaas` binary of this test run's profile (`ZCAAS_BINARY`) and the
//! shipping agent binary, so the suite needs no second, release build of
//! the tree; the stack's own part takes about 20 s.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use zcaas::docker::MANAGED_LABEL;
use zcaas_test_support::images::ensure_control_plane_image;
use zcaas_test_support::traefik::{docker_socket, test_static_config};
use zcaas_test_support::{
    docker_inspect, ensure_traefik_image, free_port, labelled, Api, World, AGENT_IMAGE, TEST_LABEL,
};

/// Longest wait for the stack to answer through Traefik after `up -d`.
const STACK_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest wait, after the redeploy an issued token causes, for the agent's
/// `/webhook` to take that token through Traefik.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for both Docker health checks to report `healthy`.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(90);

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Seconds since `t`, for the timings printed.
fn secs(t: Instant) -> String {
    format!("{:.1} s", t.elapsed().as_secs_f64())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One `docker-compose` project of the repository's compose file plus the
/// test's override, with its environment. Dropping it runs `down -v` (and
/// prints the services' logs first when the test is panicking).
struct Stack {
    project: String,
    env: Vec<(String, String)>,
    /// Holds the override and the Traefik static file.
    dir: tempfile::TempDir,
    down_done: bool,
}

impl Stack {
    fn compose(&self) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.current_dir(repo())
            .args(["-p", &self.project])
            .args(["-f", "deploy/docker-compose.yml"])
            .arg("-f")
            .arg(self.dir.path().join("override.yml"))
            // Never an operator's deploy/.env (compose reads the project
            // directory's by default): an empty one.
            .arg("--env-file")
            .arg(self.dir.path().join("empty.env"));
        // What this test sets, over the process environment minus the
        // variables that would change the stack under test.
        for var in [
            "TRAEFIK_IMAGE",
            "TRAEFIK_CONFIG",
            "COMPOSE_FILE",
            "COMPOSE_PROJECT_NAME",
            "ZCAAS_DATABASE_URL",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs `docker-compose <args>`; panics with its output on failure.
    fn run(&self, args: &[&str]) -> String {
        let out = self.compose().args(args).output().expect("docker-compose");
        assert!(
            out.status.success(),
            "docker-compose {args:?} failed: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The id of `service`'s container.
    fn container(&self, service: &str) -> String {
        let id = self.run(&["ps", "-q", service]).trim().to_owned();
        assert!(!id.is_empty(), "no container for {service}");
        id
    }

    fn logs(&self) -> String {
        self.compose()
            .args(["logs", "--no-color", "--tail", "60"])
            .output()
            .map(|o| text(&o))
            .unwrap_or_default()
    }

    fn down(&mut self) -> Output {
        self.down_done = true;
        self.compose()
            .args(["down", "-v", "--remove-orphans", "--timeout", "10"])
            .output()
            .expect("docker-compose down")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- compose logs ---\n{}", self.logs());
        }
        if !self.down_done {
            let out = self.down();
            if !out.status.success() {
                eprintln!("docker-compose down -v: {}", text(&out));
            }
        }
    }
}

/// A /24 no Docker network on this engine uses (10.<200..=254>.<x>.0/24,
/// chosen at random), for the edge network.
fn free_subnet() -> String {
    let out = Command::new("sh")
        .args([
            "-c",
            "docker network inspect $(docker network ls -q) -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}'",
        ])
        .output()
        .expect("docker network inspect");
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    for _ in 0..100 {
        let b = uuid::Uuid::new_v4().into_bytes();
        let subnet = format!("10.{}.{}.0/24", 200 + b[0] % 55, b[1]);
        let net = subnet.trim_end_matches("0/24");
        if !used.contains(net) {
            return subnet;
        }
    }
    panic!("no free 10.x.y.0/24 subnet: {used}");
}

/// The override: the test's labels on every container, volume and network
/// compose creates; the test's label on the agents the control plane
/// creates; provider URLs on a private network allowed (the stand-in is a
/// container on the agents' network); health checks every 2 s instead of
/// 30 s (same commands: the control plane's is inherited from its image).
/// Traefik routes no container before its health check passes, so this
/// also shortens the wait for the API's route.
///
/// docker-compose 1.29 replaces (does not merge) a top-level network that
/// an override names, so the edge network is repeated whole: its name and
/// subnet are the values the test passes as ZCAAS_EDGE_NETWORK and
/// ZCAAS_EDGE_SUBNET (checked on the running containers).
fn override_file(prefix: &str, edge_network: &str, edge_subnet: &str) -> String {
    let l = format!("      {MANAGED_LABEL}: \"true\"\n      {TEST_LABEL}: \"{prefix}\"\n");
    format!(
        "# Generated by tests/tests/compose_stack.rs.\n\
         services:\n  \
           traefik:\n    \
             labels:\n{l}    \
             healthcheck:\n      interval: 2s\n  \
           control-plane:\n    \
             labels:\n{l}    \
             environment:\n      \
               ZCAAS_EXTRA_LABELS: \"{TEST_LABEL}={prefix}\"\n      \
               ZCAAS_ALLOW_PRIVATE_PROVIDER_URLS: \"true\"\n    \
             healthcheck:\n      interval: 2s\n\
         networks:\n  \
           edge:\n    \
             name: {edge_network}\n    \
             ipam:\n      config:\n        - subnet: {edge_subnet}\n    \
             labels:\n{l}\
         volumes:\n  zcaas-data:\n    labels:\n{l}  letsencrypt:\n    labels:\n{l}"
    )
}

/// A client that sends every request for `hosts` to Traefik's HTTPS port on
/// loopback, accepts Traefik's default self-signed certificate and never
/// follows redirects.
fn traefik_client(hosts: &[&str], https_port: u16) -> reqwest::Client {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], https_port));
    zcaas_test_support::traefik::https_client(hosts, addr, Duration::from_secs(30))
}

/// Polls `GET url` until it answers `want`; panics after `timeout` with the
/// last answer and `context()` (logs).
async fn wait_get(
    client: &reqwest::Client,
    url: &str,
    want: StatusCode,
    timeout: Duration,
    context: impl Fn() -> String,
) -> reqwest::Response {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.get(url).send().await {
            Ok(r) if r.status() == want => return r,
            Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            Instant::now() < deadline,
            "GET {url}: no {want} within {timeout:?}; last: {last}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `docker inspect`'s health status of `container` (`starting`, `healthy`,
/// `unhealthy`; empty without a health check).
fn health_status(container: &str) -> String {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
            container,
        ])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_compose_stack_serves_agents_through_traefik() {
    let started = Instant::now();
    // Deferred failures: steps whose failure must not stop the rest of the
    // checks (cleanup above all) from running; asserted at the end.
    let mut failures: Vec<String> = Vec::new();

    // The agents' network (labelled: the test's Cleanup removes it) and the
    // provider stand-in on it, as every end-to-end test has them.
    let world = World::start().await;
    let prefix = world.prefix.clone();
    let network = world.network.clone();

    let t = Instant::now();
    let control_plane_image = ensure_control_plane_image().await;
    let traefik_image = ensure_traefik_image().await;
    eprintln!(
        "[{prefix}] images: {control_plane_image}, {traefik_image}, {AGENT_IMAGE} in {}",
        secs(t)
    );

    let domain = format!("{prefix}.compose.test");
    let api_host = format!("app.{domain}");
    let http_port = free_port().expect("a free port");
    let https_port = free_port().expect("a free port");
    let host_port = free_port().expect("a free port");
    let socket = docker_socket();
    let docker_gid = std::fs::metadata(&socket)
        .unwrap_or_else(|e| panic!("{socket}: {e}"))
        .gid();

    let dir = tempfile::tempdir().expect("a temporary directory");
    let traefik_config = dir.path().join("traefik.yml");
    std::fs::write(&traefik_config, test_static_config(&network, None))
        .expect("writing the Traefik configuration");
    let edge_network = format!("{prefix}-edge");
    let edge_subnet = free_subnet();
    std::fs::write(
        dir.path().join("override.yml"),
        override_file(&prefix, &edge_network, &edge_subnet),
    )
    .expect("writing the override");
    std::fs::write(dir.path().join("empty.env"), "").expect("writing an empty env file");
    let env: Vec<(String, String)> = [
        ("ZCAAS_IMAGE", control_plane_image.to_owned()),
        ("ZCAAS_RUNTIME_IMAGE", AGENT_IMAGE.to_owned()),
        ("ZCAAS_NETWORK", network.clone()),
        ("ZCAAS_EDGE_NETWORK", edge_network.clone()),
        ("ZCAAS_EDGE_SUBNET", edge_subnet.clone()),
        ("ZCAAS_TRAEFIK_CONTAINER", format!("{prefix}-traefik")),
        (
            "ZCAAS_CONTROL_PLANE_CONTAINER",
            format!("{prefix}-control-plane"),
        ),
        ("ZCAAS_HTTP_PORT", http_port.to_string()),
        ("ZCAAS_HTTPS_PORT", https_port.to_string()),
        ("ZCAAS_HOST_PORT", host_port.to_string()),
        ("ZCAAS_DOMAIN", domain.clone()),
        ("ZCAAS_API_HOST", api_host.clone()),
        ("DOCKER_GID", docker_gid.to_string()),
        // No ACME in a test: routers get Traefik's default certificate.
        ("ZCAAS_TRAEFIK_CERT_RESOLVER", String::new()),
        ("TRAEFIK_CONFIG", traefik_config.display().to_string()),
        ("RUST_LOG", "info".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut stack = Stack {
        project: format!("{prefix}stack"),
        env,
        dir,
        down_done: false,
    };

    // The images under test are the compose file's own defaults.
    let config = stack.run(&["config"]);
    assert!(
        config.contains(&format!("image: {traefik_image}")),
        "the compose file's Traefik default is not {traefik_image}:\n{config}"
    );

    let t = Instant::now();
    stack.run(&["up", "-d"]);
    eprintln!("[{prefix}] docker-compose up -d: {}", secs(t));
    let traefik_id = stack.container("traefik");
    let cp_id = stack.container("control-plane");

    // The API, through Traefik only.
    let t = Instant::now();
    let client = traefik_client(&[api_host.as_str()], https_port);
    let api_base = format!("https://{api_host}:{https_port}");
    let healthz = wait_get(
        &client,
        &format!("{api_base}/healthz"),
        StatusCode::OK,
        STACK_TIMEOUT,
        || stack.logs(),
    )
    .await;
    let healthz: Value = healthz.json().await.expect("healthz JSON");
    assert_eq!(healthz["status"], "ok", "{healthz}");
    eprintln!("[{prefix}] API answers through Traefik: {}", secs(t));
    // Traefik reaches the API over the edge network (whose subnet the
    // control plane trusts for X-Forwarded-For), not the agents' network.
    let cp = docker_inspect(&cp_id).expect("the control plane's container");
    let edge_ip = cp["NetworkSettings"]["Networks"][&edge_network]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let subnet_start = edge_subnet.trim_end_matches("0/24");
    assert!(
        edge_ip.starts_with(subnet_start),
        "the control plane is not on {edge_network} ({edge_subnet}): {}",
        cp["NetworkSettings"]["Networks"]
    );
    let traefik_logs = stack.run(&["logs", "--no-color", "traefik"]);
    assert!(
        !traefik_logs.contains("Could not find network"),
        "Traefik does not find the edge network:\n{traefik_logs}"
    );
    assert!(
        traefik_logs.contains(&format!("\"ServiceAddr\":\"{edge_ip}:8080\"")),
        "Traefik did not reach the API at {edge_ip}:8080 (edge network):\n{traefik_logs}"
    );
    // /metrics stays off the public route.
    let metrics = client
        .get(format!("{api_base}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(
        metrics.status(),
        StatusCode::NOT_FOUND,
        "/metrics is public"
    );

    // Plain HTTP is redirected to HTTPS.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let res = plain
        .get(format!("http://127.0.0.1:{http_port}/api/me"))
        .header("host", &api_host)
        .send()
        .await
        .expect("GET on the http port");
    assert!(
        res.status().is_redirection(),
        "plain HTTP answered {}",
        res.status()
    );
    let location = res
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        location.starts_with(&format!("https://{api_host}")),
        "redirect to {location:?}"
    );

    // Register and create an agent through Traefik; it runs.
    let t = Instant::now();
    let mut api = Api::new(api_base.clone(), &prefix, &world.provider);
    api.http = client.clone();
    let agent = api.running_agent(&format!("{prefix} compose")).await;
    eprintln!("[{prefix}] agent {} RUNNING: {}", agent.slug, secs(t));
    let container = docker_inspect(&agent.container()).expect("the agent's container");
    assert_eq!(
        container["Config"]["Labels"][TEST_LABEL], prefix,
        "the agent carries the test's label (ZCAAS_EXTRA_LABELS)"
    );

    // The agent's public host, through Traefik.
    let t = Instant::now();
    let agent_host = format!("{}.{domain}", agent.slug);
    let agent_client = traefik_client(&[agent_host.as_str()], https_port);
    let agent_base = format!("https://{agent_host}:{https_port}");
    let health = wait_get(
        &agent_client,
        &format!("{agent_base}/health"),
        StatusCode::OK,
        Duration::from_secs(30),
        || stack.logs(),
    )
    .await;
    let health: Value = health.json().await.expect("health JSON");
    assert_eq!(health["status"], "ok", "{health}");
    eprintln!("[{prefix}] https://{agent_host}/health 200: {}", secs(t));

    // A token for the agent's webhook, then a message through Traefik to
    // the agent and on to the provider stand-in.
    let t = Instant::now();
    // (Sent by hand, not with `Api::call`: a route that does not exist yet
    // may answer without a JSON body, and this step's failure is deferred.)
    let res = client
        .post(format!("{api_base}/api/agents/{}/tokens", agent.id))
        .bearer_auth(&agent.jwt)
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .expect("POST /api/agents/{id}/tokens");
    let code = res.status();
    let issued: Value = res.json().await.unwrap_or(Value::Null);
    match issued["token"].as_str() {
        Some(token) if code == StatusCode::CREATED => {
            // Issuing a token redeploys the agent with it (its configuration
            // generation is bumped): wait until it runs again, then until
            // Traefik routes to the new container and the agent takes the
            // token.
            if issued["restartPending"] == true {
                api.wait_running(&agent.jwt, &agent.id).await;
            }
            eprintln!("[{prefix}] token issued, agent redeployed: {}", secs(t));
            let message = format!("hello through traefik {prefix}");
            let deadline = Instant::now() + WEBHOOK_TIMEOUT;
            let (status, reply) = loop {
                let res = agent_client
                    .post(format!("{agent_base}/webhook"))
                    .bearer_auth(token)
                    .json(&json!({ "message": message }))
                    .send()
                    .await;
                let (status, reply) = match res {
                    Ok(r) => (Some(r.status()), r.json().await.unwrap_or(Value::Null)),
                    Err(e) => (None, Value::String(format!("{e:#}"))),
                };
                if status == Some(StatusCode::OK) || Instant::now() >= deadline {
                    break (status, reply);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            if status != Some(StatusCode::OK)
                || !reply["response"]
                    .as_str()
                    .is_some_and(|r| r.contains(&message))
            {
                failures.push(format!(
                    "POST https://{agent_host}/webhook with the issued token: {status:?} {reply} \
                     (still not 200 {WEBHOOK_TIMEOUT:?} after the redeploy)"
                ));
            }
            // Without the token: refused.
            let res = agent_client
                .post(format!("{agent_base}/webhook"))
                .json(&json!({ "message": "no token" }))
                .send()
                .await
                .expect("POST /webhook");
            if res.status() != StatusCode::UNAUTHORIZED {
                failures.push(format!("/webhook without a token: {}", res.status()));
            }
            eprintln!("[{prefix}] token + webhook through Traefik: {}", secs(t));
        }
        _ => failures.push(format!(
            "POST /api/agents/{}/tokens: expected 201 with a token, got {code} {issued}",
            agent.id
        )),
    }

    // Both services' Docker health checks (traefik healthcheck --ping,
    // zcaas healthcheck) report healthy.
    let t = Instant::now();
    let deadline = Instant::now() + HEALTHY_TIMEOUT;
    loop {
        let states = [health_status(&traefik_id), health_status(&cp_id)];
        if states.iter().all(|s| s == "healthy") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health checks not healthy within {HEALTHY_TIMEOUT:?}: traefik {}, control-plane {}\n{}",
            states[0],
            states[1],
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("[{prefix}] both health checks healthy: {}", secs(t));

    // Agents are not compose services: delete it through the API first.
    let (code, body) = api.delete_agent(&agent.jwt, &agent.id).await;
    assert_eq!(code, StatusCode::NO_CONTENT, "delete: {body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while docker_inspect(&agent.container()).is_some() {
        assert!(
            Instant::now() < deadline,
            "the agent's container is still there 30 s after its DELETE"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let t = Instant::now();
    let out = stack.down();
    assert!(
        out.status.success(),
        "docker-compose down -v: {}",
        text(&out)
    );
    eprintln!("[{prefix}] docker-compose down -v: {}", secs(t));
    let project_label = format!("label=com.docker.compose.project={}", stack.project);
    for kind in [
        &["ps", "-aq"][..],
        &["volume", "ls", "-q"],
        &["network", "ls", "-q"],
    ] {
        let out = Command::new("docker")
            .args(kind)
            .args(["--filter", &project_label])
            .output()
            .expect("docker CLI");
        let left = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(left.is_empty(), "left by compose ({kind:?}): {left}");
    }
    // What the test itself made (the agents' network, the stand-in) goes
    // with the test's cleanup; then nothing with the test's label remains.
    world.scope.cleanup.run();
    for kind in [
        &["ps", "-aq"][..],
        &["volume", "ls", "-q"],
        &["network", "ls", "-q"],
    ] {
        let left = labelled(kind, &prefix);
        assert!(
            left.is_empty(),
            "left with {TEST_LABEL}={prefix} ({kind:?}): {left:?}"
        );
    }
    eprintln!("[{prefix}] total: {}", secs(started));
    assert!(failures.is_empty(), "failed steps: {failures:#?}");
}
