//! The control plane as a separate `zcaas serve` process, for tests that kill
//! it (SIGKILL, or an abort at a crash point) and start it again on the same
//! data directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::{agent_binary, Api, World, AGENT_IMAGE, TEST_LABEL};

/// The control plane binary of this build: `zcaas-e2e` of this package, which
/// cargo builds (fresh) with the package's tests, next to the test binaries'
/// `deps/` directory.
pub fn zcaas_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary has no profile directory")?;
    let path = profile_dir.join("zcaas-e2e");
    if !path.exists() {
        bail!(
            "{} is missing: run `cargo build -p zcaas-tests --bins`",
            path.display()
        );
    }
    Ok(path)
}

/// A `zcaas` command (no subcommand yet) configured for `world` and
/// `data_dir` as the tests run it: the world's network and labels, the e2e
/// agent image, private provider URLs allowed, `agents.test` domain.
pub fn zcaas_command(world: &World, data_dir: &std::path::Path) -> anyhow::Result<Command> {
    let mut cmd = Command::new(zcaas_binary()?);
    cmd.env("ZCAAS_DATA_DIR", data_dir)
        .env("ZCAAS_NETWORK", &world.network)
        .env("ZCAAS_RUNTIME_IMAGE", AGENT_IMAGE)
        .env("ZCAAS_AGENT_BINARY", agent_binary()?)
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
    Ok(cmd)
}

/// Runs `zcaas <args>` for `world` and `data_dir` to its end and returns its
/// stdout; fails on a non-zero exit.
pub fn zcaas_run(
    world: &World,
    data_dir: &std::path::Path,
    args: &[&str],
) -> anyhow::Result<String> {
    let out = zcaas_command(world, data_dir)?
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running zcaas")?;
    if !out.status.success() {
        bail!("zcaas {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A running `zcaas serve` child process. Killed on drop.
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
    pub async fn start(
        world: &World,
        data_dir: &std::path::Path,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut cmd = zcaas_command(world, data_dir)?;
        cmd.arg("serve")
            .env("ZCAAS_LISTEN", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("spawning zcaas")?;
        let mut server = ServerProcess {
            child,
            api: world.api(format!("http://127.0.0.1:{port}"))?,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(res) = server
                .api
                .http
                .get(format!("{}/healthz", server.api.base))
                .send()
                .await
            {
                if res.status().is_success() {
                    return Ok(server);
                }
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("zcaas exited during start-up: {status}");
            }
            if Instant::now() > deadline {
                bail!("zcaas did not become healthy within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the process to exit by itself (a crash point), up to `timeout`.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("zcaas did not exit within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id (for reading `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
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

/// A port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
