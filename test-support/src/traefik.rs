//! A real Traefik for the tests: zcaas's own image ([`ensure_traefik_image`])
//! run with the repository's `traefik/` configuration, adapted only where a
//! test must differ ([`test_static_config`]): no certificate resolver (so
//! nothing ever asks an ACME server; routers get Traefik's default
//! self-signed certificate), the test's network, and optionally a
//! constraint. Entrypoints, redirects, middlewares and the file provider are
//! the repository's.
//!
//! On a swarm ([`SwarmTraefik`]): the same image with
//! `traefik/traefik-swarm.yml` ([`test_swarm_static_config`]: the swarm
//! provider instead of the Docker one), as a plain container on one node of
//! a [`SwarmWorld`], reached from the host through [`TcpRelay`]s into its
//! network namespace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_yaml::Value as Yaml;

use crate::images::{ensure_traefik_image, TRAEFIK_IMAGE};
use crate::netns::TcpRelay;
use crate::scope::TEST_LABEL;
use crate::swarm_world::SwarmWorld;
use zcaas::docker::MANAGED_LABEL;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The repository's `traefik/traefik.yml`, parsed.
pub fn repo_static_config() -> Yaml {
    read_repo_yaml("traefik/traefik.yml")
}

/// The repository's `traefik/traefik-swarm.yml` (the swarm provider),
/// parsed.
pub fn repo_swarm_static_config() -> Yaml {
    read_repo_yaml("traefik/traefik-swarm.yml")
}

/// A YAML file of the repository (`path` relative to its root), parsed.
pub fn read_repo_yaml(path: &str) -> Yaml {
    let path = repo_root().join(path);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The repository's static configuration (YAML text) adapted for a test:
/// `certificatesResolvers` removed (no ACME, nothing leaves the machine),
/// `providers.docker.network` set to `network`, and
/// `providers.docker.constraints` set to `constraint` when given (else the
/// repository's). Everything else — entrypoints `:80`/`:443` inside the
/// container, the HTTP → HTTPS redirect, the middlewares, the file provider
/// at `/etc/traefik/dynamic` — is as in the repository.
pub fn test_static_config(network: &str, constraint: Option<&str>) -> String {
    adapt(repo_static_config(), "docker", network, constraint)
}

/// [`test_static_config`] for `traefik/traefik-swarm.yml`: its
/// `providers.swarm` gets the network and constraint; everything else (the
/// swarm provider's `refreshSeconds` included) is the repository's.
pub fn test_swarm_static_config(network: &str, constraint: Option<&str>) -> String {
    adapt(repo_swarm_static_config(), "swarm", network, constraint)
}

/// `config` without its certificate resolvers, `providers.<provider>` with
/// `network` and, when given, `constraint`; as YAML text.
fn adapt(mut config: Yaml, provider: &str, network: &str, constraint: Option<&str>) -> String {
    let root = config
        .as_mapping_mut()
        .expect("the static file is a mapping");
    root.remove("certificatesResolvers");
    let section = root
        .get_mut("providers")
        .and_then(|p| p.get_mut(provider))
        .and_then(Yaml::as_mapping_mut)
        .unwrap_or_else(|| panic!("the static file has no providers.{provider}"));
    section.insert("network".into(), network.into());
    if let Some(c) = constraint {
        section.insert("constraints".into(), c.into());
    }
    serde_yaml::to_string(&config).expect("serialising YAML")
}

/// A Traefik container of one test, started from [`TRAEFIK_IMAGE`] with
/// [`test_static_config`], the repository's `traefik/dynamic/` and the
/// Docker socket, on `network`, its `:80` and `:443` published on loopback.
/// Labelled with the test's prefix, so [`crate::Cleanup`] removes it; also
/// removed when dropped.
///
/// [`TRAEFIK_IMAGE`]: crate::images::TRAEFIK_IMAGE
pub struct TraefikContainer {
    /// Container name (`<prefix>-traefik`).
    pub name: String,
    /// Host port of the `web` entrypoint (plain HTTP).
    pub http_port: u16,
    /// Host port of the `websecure` entrypoint (HTTPS).
    pub https_port: u16,
    config_file: PathBuf,
}

impl TraefikContainer {
    /// Starts Traefik and waits (bounded, 30 s) until it answers on both
    /// entrypoints.
    pub async fn start(prefix: &str, network: &str, constraint: Option<&str>) -> TraefikContainer {
        let image = ensure_traefik_image().await;
        let name = format!("{prefix}-traefik");
        let config_file = std::env::temp_dir().join(format!("zcaas-{prefix}-traefik.yml"));
        std::fs::write(&config_file, test_static_config(network, constraint))
            .expect("writing the Traefik configuration");
        let dynamic = repo_root().join("traefik/dynamic");
        let dynamic = dynamic.canonicalize().unwrap_or(dynamic);
        let socket = docker_socket();
        let out = Command::new("docker")
            .args(["run", "-d", "--name", &name])
            .args(["--label", &format!("{MANAGED_LABEL}=true")])
            .args(["--label", &format!("{TEST_LABEL}={prefix}")])
            .args(["--network", network])
            .args(["-p", "127.0.0.1::80", "-p", "127.0.0.1::443"])
            .args([
                "-v",
                &format!("{}:/etc/traefik/traefik.yml:ro", config_file.display()),
            ])
            .args([
                "-v",
                &format!("{}:/etc/traefik/dynamic:ro", dynamic.display()),
            ])
            .args(["-v", &format!("{socket}:/var/run/docker.sock:ro")])
            .arg(image)
            .arg("--configFile=/etc/traefik/traefik.yml")
            .output()
            .expect("running docker");
        assert!(
            out.status.success(),
            "docker run traefik: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut traefik = TraefikContainer {
            http_port: 0,
            https_port: 0,
            name,
            config_file,
        };
        traefik.http_port = published_port(&traefik.name, 80);
        traefik.https_port = published_port(&traefik.name, 443);
        traefik.wait_listening().await;
        traefik
    }

    async fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = tokio::net::TcpStream::connect(("127.0.0.1", self.https_port))
                .await
                .is_ok()
                && tokio::net::TcpStream::connect(("127.0.0.1", self.http_port))
                    .await
                    .is_ok();
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Traefik did not listen within 30 s; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client that sends `host`'s requests to this Traefik: HTTPS to the
    /// `websecure` port, plain HTTP to the `web` port (accepts Traefik's
    /// default self-signed certificate; never follows redirects).
    pub fn client(&self, host: &str) -> reqwest::Client {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.https_port));
        https_client(&[host], addr, Duration::from_secs(30))
    }

    /// `https://<host>:<websecure port><path>` for [`Self::client`].
    pub fn https_url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.https_port)
    }

    /// `http://<host>:<web port><path>` (to see the redirect).
    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// Waits (bounded by `timeout`) until `GET https://<host><path>` answers
    /// `want`, polling every 100 ms with 2 s per try (Traefik applies Docker
    /// events within about a second). Returns the last answer seen on
    /// timeout as an error.
    pub async fn wait_status(
        &self,
        host: &str,
        path: &str,
        want: u16,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let client = self.client(host);
        wait_for_status(
            &client,
            &self.https_url(host, path),
            host,
            path,
            want,
            timeout,
        )
        .await
    }

    /// Traefik's log (stdout and stderr), for failure messages.
    pub fn logs(&self) -> String {
        Command::new("docker")
            .args(["logs", "--tail", "200", &self.name])
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default()
    }
}

impl Drop for TraefikContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
        let _ = std::fs::remove_file(&self.config_file);
    }
}

/// Waits (bounded by `timeout`) until `GET url` with `client` answers
/// `want`, polling every 100 ms with 2 s per try; on timeout, the last
/// answer seen as an error (`host` and `path` name the request there).
async fn wait_for_status(
    client: &reqwest::Client,
    url: &str,
    host: &str,
    path: &str,
    want: u16,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        // A short timeout per try: right after a backend goes away,
        // Traefik may still dial its old address until the Docker event
        // (or the next swarm poll) reaches it, and that dial only gives up
        // after 30 s.
        let request = client.get(url).timeout(Duration::from_secs(2));
        let last = match request.send().await {
            Ok(r) if r.status().as_u16() == want => return Ok(()),
            Ok(r) => r.status().to_string(),
            Err(e) => error_chain(&e),
        };
        if Instant::now() >= deadline {
            bail!("GET https://{host}{path}: wanted {want}, last {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Traefik on a swarm: [`TRAEFIK_IMAGE`] run as a plain container on node
/// `node` of a [`SwarmWorld`] with [`test_swarm_static_config`] (no
/// resolver; the world's overlay network; the given constraint), the
/// repository's `traefik/dynamic/`, and that node's socket at
/// `/var/run/docker.sock` (a manager's, for node 0: the swarm provider
/// lists services and tasks there). Attached to the world's network and
/// labelled `io.zcaas.managed=true` and with the world's test label. The
/// host reaches its `:443` and `:80` through [`TcpRelay`]s opened in its
/// network namespace.
///
/// Drop it before the world shuts down (its relays hold the container's
/// namespace); dropping removes the container (best effort: the world's
/// teardown removes everything of its nodes anyway).
pub struct SwarmTraefik {
    /// Container name (`<tag>-traefik`).
    pub name: String,
    /// The node it runs on.
    pub node: usize,
    /// `docker -H` endpoint of that node.
    node_host: String,
    /// The relays to `:443` and `:80`; taken (stopped) before the
    /// container is removed.
    relays: Option<(TcpRelay, TcpRelay)>,
    https_addr: std::net::SocketAddr,
    http_addr: std::net::SocketAddr,
    config_file: PathBuf,
}

impl SwarmTraefik {
    /// Starts Traefik on `node` of `world` (the image must be loaded there:
    /// [`SwarmWorld::start_with_images`] with [`TRAEFIK_IMAGE`]) and waits
    /// (bounded, 30 s) until it answers HTTPS through the relay.
    pub async fn start(world: &SwarmWorld, node: usize, constraint: &str) -> SwarmTraefik {
        let name = format!("{}-traefik", world.tag());
        let config_file = std::env::temp_dir().join(format!("zcaas-{name}.yml"));
        std::fs::write(
            &config_file,
            test_swarm_static_config(&world.network, Some(constraint)),
        )
        .expect("writing the Traefik configuration");
        let dynamic = repo_root().join("traefik/dynamic");
        let dynamic = dynamic.canonicalize().unwrap_or(dynamic);
        let socket = world.cluster.node_socket(node).display().to_string();
        let (managed, test) = (
            format!("{MANAGED_LABEL}=true"),
            format!("{TEST_LABEL}={}", world.prefix),
        );
        let config_mount = format!("{}:/etc/traefik/traefik.yml:ro", config_file.display());
        let dynamic_mount = format!("{}:/etc/traefik/dynamic:ro", dynamic.display());
        let socket_mount = format!("{socket}:/var/run/docker.sock:ro");
        let args = [
            "run",
            "--detach",
            "--name",
            &name,
            "--network",
            &world.network,
            "--label",
            &managed,
            "--label",
            &test,
            "--volume",
            &config_mount,
            "--volume",
            &dynamic_mount,
            "--volume",
            &socket_mount,
            TRAEFIK_IMAGE,
            "--configFile=/etc/traefik/traefik.yml",
        ];
        if let Err(e) = world.cluster.docker(node, &args) {
            let _ = std::fs::remove_file(&config_file);
            panic!("starting Traefik on node {node}: {e:#}");
        }
        let node_host = world.cluster.node_host(node);
        let relay = |port| {
            world
                .relay_to(node, &name, port)
                .unwrap_or_else(|e| panic!("a relay to {name}:{port}: {e:#}"))
        };
        let (https, http) = (relay(443), relay(80));
        let traefik = SwarmTraefik {
            https_addr: https.addr(),
            http_addr: http.addr(),
            relays: Some((https, http)),
            name: name.clone(),
            node,
            node_host,
            config_file,
        };
        traefik.wait_answering().await;
        traefik
    }

    /// Until Traefik answers any HTTPS request (its 404 for an unknown
    /// host): the relay itself accepts before Traefik listens.
    async fn wait_answering(&self) {
        let client = self.client("traefik.invalid");
        let url = self.https_url("traefik.invalid", "/");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = match client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                Ok(_) => return,
                Err(e) => error_chain(&e),
            };
            assert!(
                Instant::now() < deadline,
                "Traefik on node {} did not answer within 30 s (last: {last}); logs:\n{}",
                self.node,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The host's end of the relay to Traefik's `:443`.
    pub fn https_addr(&self) -> std::net::SocketAddr {
        self.https_addr
    }

    /// The host's end of the relay to Traefik's `:80`.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.http_addr
    }

    /// A client that sends `host`'s requests to this Traefik's `:443`
    /// (accepts its default self-signed certificate; never follows
    /// redirects).
    pub fn client(&self, host: &str) -> reqwest::Client {
        https_client(&[host], self.https_addr, Duration::from_secs(30))
    }

    /// `https://<host>:<relay port><path>` for [`Self::client`].
    pub fn https_url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.https_addr.port())
    }

    /// `http://127.0.0.1:<relay port to :80><path>` (send a `Host` header).
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    /// Waits (bounded by `timeout`) until `GET https://<host><path>` answers
    /// `want` (as [`TraefikContainer::wait_status`]; the swarm provider
    /// polls every `refreshSeconds`, so allow a few rounds).
    pub async fn wait_status(
        &self,
        host: &str,
        path: &str,
        want: u16,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let client = self.client(host);
        wait_for_status(
            &client,
            &self.https_url(host, path),
            host,
            path,
            want,
            timeout,
        )
        .await
    }

    /// Traefik's log (the last 400 lines), for failure messages and its
    /// access log.
    pub fn logs(&self) -> String {
        Command::new("docker")
            .args(["-H", &self.node_host, "logs", "--tail", "400", &self.name])
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default()
    }
}

impl Drop for SwarmTraefik {
    fn drop(&mut self) {
        drop(self.relays.take());
        let _ = Command::new("docker")
            .args(["-H", &self.node_host, "rm", "-f", &self.name])
            .output();
        let _ = std::fs::remove_file(&self.config_file);
    }
}

/// The engine's socket on this host (`DOCKER_HOST=unix://…`, else
/// `/var/run/docker.sock`).
pub fn docker_socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned())
}

/// The host port `container`'s `port`/tcp is published on.
fn published_port(container: &str, port: u16) -> u16 {
    let out = Command::new("docker")
        .args(["port", container, &format!("{port}/tcp")])
        .output()
        .context("docker port")
        .and_then(|o| String::from_utf8(o.stdout).context("utf-8"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    out.lines()
        .find_map(|l| l.rsplit_once(':').and_then(|(_, p)| p.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{container} publishes no {port}/tcp: {out:?}"))
}

/// `e` and its sources, `: `-separated (reqwest's own message hides the
/// cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A client that sends every request for `hosts` to `addr` (a Traefik's
/// HTTPS port, however the test reaches it), accepts Traefik's default
/// self-signed certificate, never follows redirects and gives up on a
/// request after `timeout`.
pub fn https_client(
    hosts: &[&str],
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout);
    for host in hosts {
        builder = builder.resolve(host, addr);
    }
    builder.build().expect("an HTTP client")
}

/// Asserts that plain `GET url` (Traefik's `web` entrypoint, however the
/// test reaches it) with `Host: host` is redirected to
/// `https://<host>…<path>`, the path kept.
pub async fn assert_https_redirect(url: &str, host: &str, path: &str) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let r = http
        .get(url)
        .header(reqwest::header::HOST, host)
        .send()
        .await
        .expect("plain HTTP");
    assert!(r.status().is_redirection(), "{}", r.status());
    let location = r.headers()[reqwest::header::LOCATION].to_str().unwrap();
    assert!(
        location.starts_with(&format!("https://{host}")) && location.ends_with(path),
        "{location}"
    );
}
