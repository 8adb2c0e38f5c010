//! A real Traefik for the tests: zcaas's own image ([`ensure_traefik_image`])
//! run with the repository's `traefik/` configuration, adapted only where a
//! test must differ ([`test_static_config`]): no certificate resolver (so
//! nothing ever asks an ACME server; routers get Traefik's default
//! self-signed certificate), the test's network, and optionally a
//! constraint. Entrypoints, redirects, middlewares and the file provider are
//! the repository's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_yaml::Value as Yaml;

use crate::images::ensure_traefik_image;
use crate::scope::TEST_LABEL;
use zcaas::docker::MANAGED_LABEL;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The repository's `traefik/traefik.yml`, parsed.
pub fn repo_static_config() -> Yaml {
    let path = repo_root().join("traefik/traefik.yml");
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
    let mut config = repo_static_config();
    let root = config.as_mapping_mut().expect("traefik.yml is a mapping");
    root.remove("certificatesResolvers");
    let docker = root
        .get_mut("providers")
        .and_then(|p| p.get_mut("docker"))
        .and_then(Yaml::as_mapping_mut)
        .expect("traefik.yml has providers.docker");
    docker.insert("network".into(), network.into());
    if let Some(c) = constraint {
        docker.insert("constraints".into(), c.into());
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
        reqwest::Client::builder()
            .resolve(host, addr)
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client")
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
        let deadline = Instant::now() + timeout;
        loop {
            // A short timeout per try: right after a backend goes away,
            // Traefik may still dial its old address until the Docker event
            // reaches it, and that dial only gives up after 30 s.
            let request = client
                .get(self.https_url(host, path))
                .timeout(Duration::from_secs(2));
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
