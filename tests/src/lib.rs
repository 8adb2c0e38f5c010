//! Harness for the end-to-end tests: the real control plane on `127.0.0.1:0`
//! with a fresh SQLite file, the real Docker engine, the real agent-runtime
//! image, and a provider stand-in container on the test's own network.
//!
//! Every object a test creates carries `io.zcaas.managed=true` and
//! `io.zcaas.test=<prefix>`; [`Cleanup`] removes them by that label when the
//! test ends, even when it panics, and touches nothing else.

pub mod browser;
pub mod process;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use zcaas::app::App;
use zcaas::config::Config;
use zcaas::docker::DockerRuntime;

/// The label key tests put on everything they create.
pub const TEST_LABEL: &str = "io.zcaas.test";
/// Tag of the agent-runtime image the tests deploy (rebuilt once per test
/// process from the current binary, so a stale image is never tested).
pub const AGENT_IMAGE: &str = "zcaas/agent-runtime:e2e";
/// Tag of the provider stand-in image.
pub const STUB_IMAGE: &str = "zcaas/provider-stub:e2e";
/// Port the provider stand-in listens on inside its container.
pub const STUB_PORT: u16 = 8080;

/// A short random prefix that names this test's objects.
pub fn random_prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// The workspace's target directory for this build.
pub fn target_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target"))
        .join("x86_64-unknown-linux-gnu")
}

/// The static release agent-runtime binary (`scripts/test.sh` builds it first).
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("ZCAAS_AGENT_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release/agent-runtime"));
    if !path.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p agent-runtime` (scripts/test.sh does)",
            path.display()
        );
    }
    Ok(path)
}

/// Removes every container, volume and network labelled
/// `io.zcaas.test=<prefix>` (and `io.zcaas.managed=true`) when dropped. Uses
/// the docker CLI synchronously, so it works during a panic's unwinding.
pub struct Cleanup {
    pub prefix: String,
}

impl Cleanup {
    pub fn run(&self) {
        let filters = [
            "--filter".to_string(),
            format!("label={TEST_LABEL}={}", self.prefix),
            "--filter".to_string(),
            "label=io.zcaas.managed=true".to_string(),
        ];
        let list = |what: &[&str]| -> Vec<String> {
            let out = Command::new("docker").args(what).args(&filters).output();
            match out {
                Ok(o) => String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_owned)
                    .filter(|l| !l.is_empty())
                    .collect(),
                Err(_) => Vec::new(),
            }
        };
        let containers = list(&["ps", "-aq"]);
        if !containers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&containers)
                .output();
        }
        let volumes = list(&["volume", "ls", "-q"]);
        if !volumes.is_empty() {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f"])
                .args(&volumes)
                .output();
        }
        let networks = list(&["network", "ls", "-q"]);
        if !networks.is_empty() {
            let _ = Command::new("docker")
                .args(["network", "rm"])
                .args(&networks)
                .output();
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run();
    }
}

static AGENT_IMAGE_BUILT: OnceCell<()> = OnceCell::const_new();
static STUB_IMAGE_BUILT: OnceCell<()> = OnceCell::const_new();

/// Builds [`AGENT_IMAGE`] from the current release binary, once per process.
pub async fn ensure_agent_image(docker: &DockerRuntime) -> anyhow::Result<()> {
    AGENT_IMAGE_BUILT
        .get_or_try_init(|| async {
            let binary = agent_binary()?;
            docker
                .build_agent_image(AGENT_IMAGE, &binary)
                .await
                .context("building the agent-runtime image")
        })
        .await
        .map(|_| ())
}

/// Builds [`STUB_IMAGE`] from the provider-stub binary, once per process.
pub async fn ensure_stub_image(docker: &DockerRuntime, stub_binary: &Path) -> anyhow::Result<()> {
    STUB_IMAGE_BUILT
        .get_or_try_init(|| build_binary_image(docker, STUB_IMAGE, stub_binary, "EXPOSE 8080\n"))
        .await
        .map(|_| ())
}

/// Builds `tag`: a FROM-scratch image whose entrypoint is the static
/// `binary` (a test binary of this package), run as 65534:65534, with
/// `extra` Dockerfile lines (`EXPOSE`, `ENV`, `LABEL`…) before the entrypoint.
pub async fn build_binary_image(
    docker: &DockerRuntime,
    tag: &str,
    binary: &Path,
    extra: &str,
) -> anyhow::Result<()> {
    let name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no file name", binary.display()))?;
    let contents =
        std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let dockerfile = format!(
        "FROM scratch\nCOPY {name} /{name}\nUSER 65534:65534\n{extra}ENTRYPOINT [\"/{name}\"]\n"
    );
    docker
        .build_image_from_context(tag, &dockerfile, &[(name.to_string(), contents, 0o755)])
        .await
        .with_context(|| format!("building the {name} image {tag}"))
}

/// Options for [`TestEnv::start`].
#[derive(Clone, Default)]
pub struct EnvOptions {
    /// Runtime image agents run (default [`AGENT_IMAGE`]).
    pub runtime_image: Option<String>,
    /// Override of the retry budget (default: the product default).
    pub retry_budget: Option<u32>,
    /// Override of the first retry's backoff.
    pub retry_backoff_base: Option<Duration>,
    /// How the control plane reaches agents (default: host ports).
    pub agent_address: Option<zcaas::config::AgentAddress>,
}

/// What every end-to-end test needs besides the control plane: a prefix that
/// labels everything, the images, a network, and the provider stand-in on it.
pub struct World {
    pub prefix: String,
    pub docker: DockerRuntime,
    pub network: String,
    /// `custom:<url>` provider value that reaches the stand-in from agents.
    pub provider: String,
    pub labels: BTreeMap<String, String>,
    pub cleanup: Cleanup,
}

impl World {
    /// Builds the images (once per process), creates the test network and
    /// starts the provider stand-in. `stub_binary` is
    /// `env!("CARGO_BIN_EXE_provider-stub")` of the calling test.
    pub async fn start(stub_binary: &str) -> anyhow::Result<World> {
        init_tracing();
        let prefix = random_prefix();
        let cleanup = Cleanup {
            prefix: prefix.clone(),
        };
        let labels = BTreeMap::from([(TEST_LABEL.to_string(), prefix.clone())]);
        let docker = DockerRuntime::connect(labels.clone()).await?;
        ensure_agent_image(&docker).await?;
        ensure_stub_image(&docker, Path::new(stub_binary)).await?;
        let network = format!("{prefix}-net");
        docker.ensure_network(&network).await?;
        let stub = format!("{prefix}-provider");
        run_stub(&prefix, &stub, &network)?;
        Ok(World {
            provider: format!("custom:http://{stub}:{STUB_PORT}/v1"),
            prefix,
            docker,
            network,
            labels,
            cleanup,
        })
    }

    /// A client for a control plane listening at `base`.
    pub fn api(&self, base: String) -> anyhow::Result<Api> {
        Ok(Api {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            prefix: self.prefix.clone(),
            provider: self.provider.clone(),
        })
    }
}

/// An HTTP client of one control plane, with the calls tests make.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub prefix: String,
    /// `custom:<url>` provider value that reaches the stand-in from agents.
    pub provider: String,
}

/// One test's world plus the control plane running in-process.
pub struct TestEnv {
    pub app: Option<App>,
    pub api: Api,
    pub config: Config,
    pub data_dir: tempfile::TempDir,
    pub docker: DockerRuntime,
    pub prefix: String,
    // Last: dropped after the app, so cleanup sees no new containers.
    pub world: World,
}

/// A test that panics drops its `TestEnv` with the control plane still
/// running: stop the reconciler first, so it cannot create anything after
/// [`Cleanup`] (the `world` field, dropped last) has removed by label.
impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(app) = &self.app {
            app.state().shutdown.cancel();
            // Let passes already past their last await point finish.
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl std::ops::Deref for TestEnv {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestEnv {
    /// Starts a control plane with a fresh data directory in a fresh [`World`].
    pub async fn start(stub_binary: &str, opts: EnvOptions) -> anyhow::Result<TestEnv> {
        let world = World::start(stub_binary).await?;
        let data_dir = tempfile::tempdir()?;
        let mut config = Config::with_data_dir(data_dir.path().to_path_buf());
        config.listen = "127.0.0.1:0".parse()?;
        config.network = world.network.clone();
        config.runtime_image = opts
            .runtime_image
            .unwrap_or_else(|| AGENT_IMAGE.to_string());
        config.agent_binary = agent_binary()?;
        config.allow_private_provider_urls = true;
        config.extra_labels = world.labels.clone();
        config.domain = "agents.test".into();
        if let Some(budget) = opts.retry_budget {
            config.retry_budget = budget;
        }
        if let Some(base) = opts.retry_backoff_base {
            config.retry_backoff_base = base;
        }
        if let Some(address) = opts.agent_address {
            config.agent_address = address;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let app = App::build(config.clone(), listener).await?;
        let api = world.api(format!("http://{}", app.addr()))?;
        Ok(TestEnv {
            app: Some(app),
            api,
            config,
            data_dir,
            docker: world.docker.clone(),
            prefix: world.prefix.clone(),
            world,
        })
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().expect("app is running")
    }

    /// The plaintext bearer token the control plane holds for agent `id`.
    pub async fn stored_token(&self, id: &str) -> anyhow::Result<String> {
        let (token, _) = self.stored_pairing(id).await?;
        Ok(token)
    }

    /// The stored bearer token of agent `id` and the container start
    /// (`State.StartedAt`) it was obtained or confirmed for.
    pub async fn stored_pairing(
        &self,
        id: &str,
    ) -> anyhow::Result<(String, chrono::DateTime<chrono::Utc>)> {
        let state = self.app().state();
        let agent = zcaas::db::lifecycle::get(&state.db, id)
            .await?
            .context("no such agent")?;
        let enc = agent.encrypted_token.context("no token stored")?;
        let token = state
            .secrets
            .decrypt(id, zcaas::secrets::SecretField::Token, &enc)?;
        Ok((
            token,
            agent.paired_started_at.context("no pairing start stored")?,
        ))
    }

    /// Stops the control plane (the test's containers are removed on drop).
    pub async fn shutdown(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }
}

impl Api {
    /// Registers a user and returns their bearer JWT.
    pub async fn register(&self, email_local: &str) -> anyhow::Result<String> {
        let email = format!("{email_local}-{}@example.test", self.prefix);
        let res = self
            .http
            .post(format!("{}/api/auth/register", self.base))
            .json(&json!({"email": email, "password": "correct horse battery"}))
            .send()
            .await?;
        let status = res.status();
        let body: Value = res.json().await?;
        if !status.is_success() {
            bail!("register: {status} {body}");
        }
        Ok(body["token"].as_str().context("no token")?.to_owned())
    }

    /// Sends a request with the bearer JWT and returns status and JSON body
    /// (`Value::Null` for an empty body).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        jwt: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(jwt);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, json))
    }

    /// A create body for an agent named `name` using the provider stand-in.
    pub fn agent_body(&self, name: &str) -> Value {
        json!({
            "name": name,
            "agentName": "Test Agent",
            "userName": "Tester",
            "timezone": "Europe/Paris",
            "communicationStyle": "brief",
            "provider": self.provider,
            "model": "stub-model",
            "temperature": 0.2,
            "memoryBackend": "sqlite",
            "autoSave": true,
            "apiKey": "sk-test-not-a-real-key-1234"
        })
    }

    /// Sends `text` to agent `id` through the control plane.
    pub async fn message(&self, jwt: &str, id: &str, text: &str) -> anyhow::Result<(u16, Value)> {
        self.call(
            reqwest::Method::POST,
            &format!("/api/agents/{id}/message"),
            jwt,
            Some(json!({ "message": text })),
        )
        .await
    }

    /// Polls `GET /api/agents/:id` until `status` is one of `wanted`, or fails
    /// after `timeout` with the last record seen.
    pub async fn wait_status(
        &self,
        jwt: &str,
        id: &str,
        wanted: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        self.wait_for(jwt, id, timeout, |a| {
            wanted.iter().any(|w| a["status"] == *w)
        })
        .await
    }

    /// Polls `GET /api/agents/:id` until `done(record)`, or fails after `timeout`.
    pub async fn wait_for(
        &self,
        jwt: &str,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let res = self
                .call(
                    reqwest::Method::GET,
                    &format!("/api/agents/{id}"),
                    jwt,
                    None,
                )
                .await;
            if let Ok((200, agent)) = &res {
                if done(agent) {
                    return Ok(agent.clone());
                }
            }
            if Instant::now() > deadline {
                bail!("agent {id}: condition not met within {timeout:?}; last answer {res:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs the provider stand-in container `name` on `network`.
fn run_stub(prefix: &str, name: &str, network: &str) -> anyhow::Result<()> {
    let out = Command::new("docker")
        .args([
            "run",
            "-d",
            "--restart",
            "unless-stopped",
            "--name",
            name,
            "--network",
            network,
        ])
        .args([
            "--label",
            "io.zcaas.managed=true",
            "--label",
            &format!("{TEST_LABEL}={prefix}"),
        ])
        .args(["-e", &format!("PORT={STUB_PORT}"), STUB_IMAGE])
        .output()?;
    if !out.status.success() {
        bail!(
            "docker run provider stub: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Runs a docker CLI command and returns its trimmed stdout; fails on a non-zero exit.
pub fn docker_cli(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker").args(args).output()?;
    if !out.status.success() {
        bail!("docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Ids of every container (running or not) labelled with agent `agent_id`.
pub fn agent_containers(agent_id: &str) -> Vec<String> {
    docker_cli(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.zcaas.agent-id={agent_id}"),
    ])
    .map(|s| s.lines().map(str::to_owned).collect())
    .unwrap_or_default()
}

/// `docker inspect` of one object as JSON.
pub fn docker_inspect(what: &str) -> Option<Value> {
    let out = Command::new("docker")
        .args(["inspect", what])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get(0).cloned()
}

/// Whether a volume named `name` exists.
pub fn volume_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("zcaas=info")),
        )
        .with_test_writer()
        .try_init();
}

/// Resolves at the first SIGTERM or SIGINT: the graceful shutdown of the
/// test servers packaged into images (`docker stop` sends SIGTERM).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
