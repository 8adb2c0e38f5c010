//! Login floods against a separate release `zcaas serve` process, and the
//! server's peak memory under them. Not a test: it prints figures. Run:
//!
//! ```sh
//! cargo build --release -p control-plane --bin zcaas --example bench_logins
//! target/x86_64-unknown-linux-gnu/release/examples/bench_logins
//! ```
//!
//! Two floods, one after the other, each [`FLOOD`] requests sent at once:
//! 1. wrong passwords for one email: the login limit lets at most
//!    `MAX_FAILURES` reach a password check, the rest get 429;
//! 2. right passwords for [`FLOOD`] distinct existing users: every request
//!    needs a check, the hashing slots (one per core) run them a few at a
//!    time, and a request that waits longer than the hashing queue wait gets
//!    503 with `Retry-After`.
//!
//! For each: the answers by status, the checks run (the server's
//! `zcaas_password_verifications_total`), the time, and the server's peak
//! RSS (`VmHWM` of `/proc/<pid>/status`). The users are written into the
//! database before the server starts (registration is limited per address).
//! Needs the local Docker engine (`zcaas serve` pings it and creates its
//! network); the network carries `io.zcaas.test=<prefix>` and is removed at
//! the end. `BENCH_ZCAAS_BINARY=<path>` runs another `zcaas` build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::future::join_all;
use serde_json::json;
use zcaas::model::{Plan, Role};
use zcaas_test_support::process::ServerProcess;
use zcaas_test_support::{built_binary, random_prefix, Cleanup, TEST_LABEL};

/// Requests per flood.
const FLOOD: usize = 200;
/// The password of every benchmark user.
const PASSWORD: &str = "bench-password-1";

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let prefix = random_prefix();
    let _cleanup = Cleanup::new(prefix.clone());
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    zcaas::app::prepare_data_dir(&data_dir)?;
    seed_users(&data_dir).await?;

    let server = Server::start(&dir, &data_dir, &prefix).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(FLOOD)
        .build()?;
    let before = server.memory()?;
    println!(
        "zcaas started: VmRSS {} KiB, VmHWM {} KiB, {} threads, {} cores",
        before.rss,
        before.hwm,
        before.threads,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let wrong = (0..FLOOD)
        .map(|_| json!({"email": "victim@bench.test", "password": "wrong-password"}))
        .collect();
    flood(&server, &http, "wrong passwords, one email", wrong).await?;
    let right = (0..FLOOD)
        .map(|i| json!({"email": format!("user{i}@bench.test"), "password": PASSWORD}))
        .collect();
    flood(&server, &http, "right passwords, distinct users", right).await?;
    Ok(())
}

/// `user0..user{FLOOD}@bench.test` and `victim@bench.test`, all with one
/// argon2 hash of [`PASSWORD`] (a check costs the same whatever the salt).
async fn seed_users(data_dir: &Path) -> anyhow::Result<()> {
    let db =
        zcaas::store::Store::open(&format!("sqlite://{}", data_dir.join("zcaas.db").display()))
            .await?;
    let hash = zcaas::auth::hash_password(PASSWORD.into()).await?;
    let emails = (0..FLOOD)
        .map(|i| format!("user{i}@bench.test"))
        .chain(["victim@bench.test".to_owned()]);
    for email in emails {
        let new = zcaas::store::users::NewUser {
            email: &email,
            password_hash: &hash,
            role: Role::User,
            plan: Plan::Free,
        };
        db.users()
            .create(&new)
            .await
            .with_context(|| format!("creating {email}"))?;
    }
    db.close().await;
    Ok(())
}

/// Sends `bodies` to `/api/auth/login` all at once and prints the outcome.
async fn flood(
    server: &Server,
    http: &reqwest::Client,
    name: &str,
    bodies: Vec<serde_json::Value>,
) -> anyhow::Result<()> {
    let checks_before = server.verifications(http).await?;
    let started = Instant::now();
    let url = format!("{}/api/auth/login", server.base);
    let statuses = join_all(bodies.into_iter().map(|body| {
        let request = http.post(&url).json(&body);
        async move { request.send().await.map(|r| r.status().as_u16()) }
    }))
    .await;
    let elapsed = started.elapsed();
    let mut by_status = BTreeMap::<String, usize>::new();
    for status in statuses {
        let key = match status {
            Ok(code) => code.to_string(),
            Err(e) => format!("error ({e})"),
        };
        *by_status.entry(key).or_default() += 1;
    }
    let checks = server.verifications(http).await? - checks_before;
    let memory = server.memory()?;
    println!(
        "{name}: {FLOOD} logins in {:.2} s → {by_status:?}; {checks} password checks; \
         peak RSS (VmHWM) {} KiB = {:.1} MiB, VmRSS now {} KiB, {} threads",
        elapsed.as_secs_f64(),
        memory.hwm,
        memory.hwm as f64 / 1024.0,
        memory.rss,
        memory.threads,
    );
    Ok(())
}

/// The release `zcaas` next to this example (or `BENCH_ZCAAS_BINARY`), or
/// a hint to build it.
fn zcaas_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("BENCH_ZCAAS_BINARY") {
        return Ok(PathBuf::from(path));
    }
    built_binary(
        "zcaas",
        "cargo build --release -p control-plane --bin zcaas --example bench_logins",
    )
}

/// `zcaas serve` as its own process, killed on drop.
struct Server {
    process: ServerProcess,
    base: String,
}

/// Figures of `/proc/<pid>/status`, KiB and count.
struct Memory {
    rss: u64,
    hwm: u64,
    threads: u64,
}

impl Server {
    async fn start(
        dir: &tempfile::TempDir,
        data_dir: &Path,
        prefix: &str,
    ) -> anyhow::Result<Server> {
        let log_path = dir.path().join("zcaas.log");
        let mut cmd = Command::new(zcaas_binary()?);
        cmd.env("ZCAAS_DATA_DIR", data_dir)
            .env("ZCAAS_NETWORK", format!("zcaas-bench-{prefix}"))
            .env(
                "ZCAAS_RUNTIME_IMAGE",
                format!("zcaas-bench/missing:{prefix}"),
            )
            .env("ZCAAS_AGENT_BINARY", dir.path().join("no-agent-runtime"))
            .env("ZCAAS_EXTRA_LABELS", format!("{TEST_LABEL}={prefix}"))
            .env("ZCAAS_DOMAIN", "bench.test")
            .env("RUST_LOG", "warn")
            .stderr(std::fs::File::create(&log_path)?);
        match ServerProcess::start_command(cmd, prefix, "openai").await {
            Ok(process) => Ok(Server {
                base: process.base.clone(),
                process,
            }),
            Err(e) => {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("{e:#}\n{log}");
            }
        }
    }

    fn memory(&self) -> anyhow::Result<Memory> {
        Ok(Memory {
            rss: self.process.proc_status("VmRSS")?,
            hwm: self.process.proc_status("VmHWM")?,
            threads: self.process.proc_status("Threads")?,
        })
    }

    /// The server's `zcaas_password_verifications_total`.
    async fn verifications(&self, http: &reqwest::Client) -> anyhow::Result<u64> {
        let text = http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|l| l.strip_prefix("zcaas_password_verifications_total "))
            .context("no zcaas_password_verifications_total in /metrics")?
            .trim()
            .parse()
            .context("zcaas_password_verifications_total")
    }
}
