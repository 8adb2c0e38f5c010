//! The control plane as a separate `zcaas` process: `zcaas serve` for tests
//! that kill it (SIGKILL, or an abort at a crash point) and start it again on
//! the same data directory, and for the benchmarks that measure it; other
//! subcommands (`zcaas gc`) run to their end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::api::Api;
use crate::binaries::{agent_binary, built_binary};
use crate::free_port;
use crate::images::AGENT_IMAGE;
use crate::scope::TEST_LABEL;
use crate::world::World;

/// How long `zcaas serve` may take to answer `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The control plane binary of the end-to-end crate: `zcaas-e2e`, which
/// cargo builds (fresh) with that crate's tests, so the tests that kill and
/// restart `zcaas serve` always run the current code.
pub fn zcaas_binary() -> anyhow::Result<PathBuf> {
    built_binary("zcaas-e2e", "run `cargo build -p zcaas-tests --bins`")
}

/// A [`zcaas_binary`] command (no subcommand yet) for `world` and
/// `data_dir`, as the tests run it ([`zcaas_command_with`]).
pub fn zcaas_command(world: &World, data_dir: &Path) -> Command {
    let binary = zcaas_binary().unwrap_or_else(|e| panic!("{e:#}"));
    zcaas_command_with(&binary, world, data_dir)
}

/// A `binary` command (no subcommand yet) configured for `world` and
/// `data_dir`: the world's network and labels, the test agent image,
/// private provider URLs allowed, the `agents.test` domain, `RUST_LOG` or
/// `zcaas=info`, and no crash or pause point.
pub fn zcaas_command_with(binary: &Path, world: &World, data_dir: &Path) -> Command {
    let agent_binary = agent_binary().unwrap_or_else(|e| panic!("{e:#}"));
    let mut cmd = Command::new(binary);
    cmd.env("ZCAAS_DATA_DIR", data_dir)
        .env("ZCAAS_NETWORK", &world.network)
        .env("ZCAAS_RUNTIME_IMAGE", AGENT_IMAGE)
        .env("ZCAAS_AGENT_BINARY", agent_binary)
        .env("ZCAAS_ALLOW_PRIVATE_PROVIDER_URLS", "true")
        .env(
            "ZCAAS_EXTRA_LABELS",
            format!("{TEST_LABEL}={}", world.prefix),
        )
        .env("ZCAAS_DOMAIN", "agents.test")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "zcaas=info".into()),
        )
        .env_remove("ZCAAS_CRASH_AT")
        .env_remove("ZCAAS_PAUSE_AT");
    cmd
}

/// Runs `zcaas <args>` for `world` and `data_dir` to its end and returns its
/// stdout; fails on a non-zero exit (which a test may expect).
pub fn zcaas_run(world: &World, data_dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = zcaas_command(world, data_dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running zcaas")?;
    if !out.status.success() {
        bail!("zcaas {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A running `zcaas serve` child process, reached through its [`Api`]
/// (`Deref`). Killed on drop.
pub struct ServerProcess {
    child: Child,
    pub api: Api,
}

impl std::ops::Deref for ServerProcess {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl ServerProcess {
    /// Starts `zcaas serve` for `world` on `data_dir`, with extra environment
    /// (e.g. `ZCAAS_CRASH_AT`), and waits until `/healthz` answers.
    pub async fn start(world: &World, data_dir: &Path, extra_env: &[(&str, &str)]) -> Self {
        let mut cmd = zcaas_command(world, data_dir);
        cmd.envs(extra_env.iter().copied());
        Self::start_command(cmd, &world.prefix, &world.provider)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts `cmd serve` (`cmd`: a configured `zcaas` command, see
    /// [`zcaas_command_with`]) on a free port of 127.0.0.1 and waits up to
    /// 60 s until `/healthz` answers; its [`Api`] has the test's `prefix`
    /// and `provider`. Stdin and stdout are closed; stderr is `cmd`'s.
    pub async fn start_command(cmd: Command, prefix: &str, provider: &str) -> anyhow::Result<Self> {
        Self::start_command_within(cmd, prefix, provider, START_TIMEOUT).await
    }

    /// [`ServerProcess::start_command`], waiting up to `timeout` for
    /// `/healthz` (a control plane with thousands of agents to survey at
    /// start-up may need more than the tests' 60 s).
    pub async fn start_command_within(
        mut cmd: Command,
        prefix: &str,
        provider: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        cmd.arg("serve")
            .env("ZCAAS_LISTEN", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = cmd.spawn().context("spawning zcaas")?;
        let mut server = ServerProcess {
            child,
            api: Api::new(format!("http://127.0.0.1:{port}"), prefix, provider),
        };
        let deadline = Instant::now() + timeout;
        loop {
            let health = server.api.http.get(server.api.url("/healthz")).send();
            if let Ok(res) = health.await {
                if res.status().is_success() {
                    return Ok(server);
                }
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("zcaas exited during start-up: {status}");
            }
            if Instant::now() > deadline {
                bail!("zcaas did not become healthy within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the process to exit by itself (a crash point); panics
    /// after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for zcaas") {
                return status;
            }
            assert!(
                Instant::now() <= deadline,
                "zcaas did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of the process's `/proc/<pid>/status` in its unit (KiB for
    /// memory: `VmRSS`, `VmHWM`, `RssAnon`…; a count for `Threads`).
    pub fn proc_status(&self, field: &str) -> anyhow::Result<u64> {
        proc_status(self.pid(), field)
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, `Threads`…): its
/// first number, in the file's unit (KiB for memory).
pub fn proc_status(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{field} not in /proc/{pid}/status"))
}
