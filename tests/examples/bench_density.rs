//! Density (issue 16): how many agents one host runs and what each one
//! really costs, against the real engine and a separate release `zcaas
//! serve` process. Not a test: it prints the figures recorded in
//! BENCHMARKS.md. Run (builds everything in release first):
//!
//! ```sh
//! scripts/bench-density.sh [--agents 2000] [--checkpoints 100,1000,2000] [--concurrency 8]
//!                          [--per-user 100] [--idle-secs 60] [--settle-secs 15] [--wrk-secs 20]
//!                          [--address auto|network|host-port] [--min-available-mib 1536]
//!                          [--probe 5] [--deploy-timeout-secs 180]
//! ```
//!
//! What it does, in order:
//! 1. A world labelled `io.zcaas.test=<prefix>` (network, provider
//!    stand-in), then `zcaas serve` with `agent_address = network` when the
//!    build supports agents on several networks without published ports
//!    (`--agents-per-network` in its help; else host ports, said in the
//!    output), the stand-in attached to every agents' network
//!    (`network_attach`), `127.0.0.1` a trusted proxy (so the benchmark can
//!    register one user per `X-Forwarded-For` address: registrations are
//!    limited per client) and every user on the enterprise plan (no agent
//!    cap). `agents_per_network` and `max_concurrent_deploys` keep their
//!    defaults.
//! 2. Agents created through `POST /api/agents` in waves up to each
//!    checkpoint, `--concurrency` of them in flight at a time (POSTed, not
//!    yet RUNNING); the first 10 owned by one user (the `GET /api/agents`
//!    of 10), the rest `--per-user` per user. POST → RUNNING is the time
//!    from the 202 to the `transition` event to RUNNING on the owner's
//!    `/api/events` stream (opened before the wave, so no polling delay).
//!    Creating stops, clearly reported, when `MemAvailable` falls below
//!    `--min-available-mib`. Before the first wave and at each checkpoint,
//!    `--probe` agents (5) are also created one at a time, each deleted
//!    before the next: POST → RUNNING alone, on an empty host and with the
//!    fleet running (the issue's "within 1.5× of an empty host").
//! 3. At each checkpoint, after `--settle-secs` of quiet: each container's
//!    processes (`State.Pid` from `docker inspect`, its parent the
//!    `containerd-shim-runc-v2`, and every process below the shim), its
//!    `fuse-overlayfs` helper (matched by the mount point) and the
//!    `docker-proxy` of each published port, each process's PSS from
//!    `/proc/<pid>/smaps_rollup` summed and divided by the agents; the drop
//!    in `MemAvailable` since before the first agent, per agent (what PSS
//!    does not see: page tables, slab, the kernel's side of each network
//!    namespace and veth); `zcaas` VmRSS and PSS, `dockerd` and
//!    `containerd` VmRSS; then `--idle-secs` with no API traffic: the CPU
//!    (utime + stime from `/proc/<pid>/stat`) of `zcaas`, `dockerd`,
//!    `containerd`, all shims, all agent processes, and the whole machine.
//! 4. With the whole fleet: one message to every agent through
//!    `POST /api/agents/{id}/message` (16 at a time), `GET /api/agents` under
//!    `wrk -t2 -c32` for the user of 10 agents and for one of `--per-user`;
//!    then `zcaas` is stopped (SIGTERM; its exit timed), the control plane is
//!    built in this process on the same data directory and database for a
//!    full reconcile pass (`reconcile_all(32)`, 5 runs, as
//!    `scripts/bench.sh reconcile` measures it), and `zcaas serve` is started
//!    again and timed until every agent is *confirmed*: the new process
//!    answers `/healthz`, its reconciler has started a pass for every agent
//!    (`zcaas_reconcile_passes_total` ≥ agents: the first resync's pass
//!    re-reads each row, inspects its container and finds it running with
//!    the token of its current start) and `zcaas_agents{status="RUNNING"}`
//!    is the whole fleet; and, separately, until every agent's
//!    `lastHealthAt` is later than the restart (the new process reached each
//!    agent's `/health`).
//! 5. Every agent deleted through the API (16 DELETEs at a time; each
//!    answers once the container and volume are gone) and timed; the label
//!    cleanup removes anything left, on error and Ctrl-C too, and the
//!    benchmark says what is left (it must be nothing).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use futures::StreamExt as _;
use serde_json::{json, Value};
use zcaas::config::{ConfigArgs, FileConfig};
use zcaas::docker::AGENT_ID_LABEL;
use zcaas_test_support::api::phase_means;
use zcaas_test_support::host;
use zcaas_test_support::process::{zcaas_command_with, ServerProcess};
use zcaas_test_support::store::TestDatabase;
use zcaas_test_support::{
    agent_binary, built_binary, docker_cli, Api, Cleanup, World, AGENT_IMAGE, PASSWORD, TEST_LABEL,
};

/// Agents of the user whose `GET /api/agents` is measured first.
const LIST_AGENTS: usize = 10;
/// Messages in flight at once when every agent answers one.
const MESSAGE_CONCURRENCY: usize = 16;
/// DELETEs in flight at once at teardown.
const DELETE_CONCURRENCY: usize = 16;
/// `docker inspect` takes this many containers per call.
const INSPECT_BATCH: usize = 200;
/// How long the restarted control plane may take to confirm the fleet.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(600);
/// How long `zcaas serve` may take to answer `/healthz` (a start-up with
/// thousands of agents).
const START_TIMEOUT: Duration = Duration::from_secs(600);
/// Set once the world exists, so `main` can clean up by label again after
/// the runtime is gone (Ctrl-C included).
static PREFIX: OnceLock<String> = OnceLock::new();

const USAGE: &str = "bench_density [--agents N] [--checkpoints A,B,C] [--concurrency N] \
[--per-user N] [--idle-secs S] [--settle-secs S] [--wrk-secs S] \
[--address auto|network|host-port] [--min-available-mib M] [--deploy-timeout-secs S] [--probe N] [--agents-per-network N]";

/// How the control plane is asked to reach agents.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Address {
    /// `network` when the build supports it without published ports.
    Auto,
    Network,
    HostPort,
}

#[derive(Debug, Clone)]
struct Options {
    agents: usize,
    checkpoints: Vec<usize>,
    concurrency: usize,
    per_user: usize,
    idle_secs: u64,
    settle_secs: u64,
    wrk_secs: u32,
    address: Address,
    min_available_mib: u64,
    deploy_timeout: Duration,
    /// Agents created one at a time (and deleted) before the first wave and
    /// at each checkpoint: POST → RUNNING alone, with the fleet running.
    probe: usize,
    /// `agents_per_network` for the server; `None` keeps the product's
    /// default (small values check the spread over several networks).
    agents_per_network: Option<u32>,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
        let mut o = Options {
            agents: 2000,
            checkpoints: Vec::new(),
            concurrency: 8,
            per_user: 100,
            idle_secs: 60,
            settle_secs: 15,
            wrk_secs: 20,
            address: Address::Auto,
            min_available_mib: 1536,
            deploy_timeout: Duration::from_secs(180),
            probe: 5,
            agents_per_network: None,
        };
        let mut checkpoints = None;
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let (key, inline) = match arg.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (arg.clone(), None),
            };
            if key == "--help" || key == "-h" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let value = match inline {
                Some(v) => v,
                None => args
                    .next()
                    .with_context(|| format!("{key} needs a value\n{USAGE}"))?,
            };
            let num = |v: &str| -> anyhow::Result<u64> {
                v.parse()
                    .with_context(|| format!("{key}: not a number: {v}"))
            };
            match key.as_str() {
                "--agents" => o.agents = num(&value)? as usize,
                "--checkpoints" => {
                    checkpoints = Some(
                        value
                            .split(',')
                            .map(|v| num(v.trim()).map(|n| n as usize))
                            .collect::<anyhow::Result<Vec<_>>>()?,
                    )
                }
                "--concurrency" => o.concurrency = num(&value)?.max(1) as usize,
                "--per-user" => o.per_user = num(&value)?.max(1) as usize,
                "--idle-secs" => o.idle_secs = num(&value)?,
                "--settle-secs" => o.settle_secs = num(&value)?,
                "--wrk-secs" => o.wrk_secs = num(&value)?.max(1) as u32,
                "--min-available-mib" => o.min_available_mib = num(&value)?,
                "--probe" => o.probe = num(&value)? as usize,
                "--agents-per-network" => o.agents_per_network = Some(num(&value)? as u32),
                "--deploy-timeout-secs" => o.deploy_timeout = Duration::from_secs(num(&value)?),
                "--address" => {
                    o.address = match value.as_str() {
                        "auto" => Address::Auto,
                        "network" => Address::Network,
                        "host-port" => Address::HostPort,
                        other => bail!("--address: auto, network or host-port, not {other}"),
                    }
                }
                other => bail!("unknown option {other}\n{USAGE}"),
            }
        }
        if o.agents == 0 {
            bail!("--agents must be at least 1");
        }
        let mut cps = checkpoints.unwrap_or_else(|| vec![100, 1000, 2000]);
        cps.retain(|&c| c > 0 && c <= o.agents);
        cps.push(o.agents);
        cps.sort_unstable();
        cps.dedup();
        o.checkpoints = cps;
        Ok(o)
    }
}

fn main() -> anyhow::Result<()> {
    let opts = Options::parse(std::env::args().skip(1))?;
    host_limits(opts.agents)?;
    // The in-process control plane of the reconcile measurement logs into
    // this output: warnings only, unless asked otherwise. (Still one thread.)
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(&opts) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted; cleaning up by label")),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    if let Some(prefix) = PREFIX.get() {
        // Again, now that nothing of ours runs any more (the world's own
        // cleanup ran when `run` ended or was dropped).
        Cleanup::new(prefix.clone()).run();
        println!("{}", leftovers(prefix));
    }
    result
}

/// Refuses, before anything is created, a fleet the host's kernel limits
/// would stop part-way (each limit's reason: deploy/OPERATIONS.md,
/// "Capacity"): the IPv4 neighbour table's hard size (`gc_thresh3`; each
/// running agent holds two entries) and `kernel.pid_max` (about 15 threads
/// per agent with its shim).
fn host_limits(agents: usize) -> anyhow::Result<()> {
    let read =
        |path: &str| -> Option<usize> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let mut short = Vec::new();
    let neigh = "/proc/sys/net/ipv4/neigh/default/gc_thresh3";
    if let Some(have) = read(neigh) {
        let need = 2 * agents + 256;
        if have < need {
            short.push(format!(
                "net.ipv4.neigh.default.gc_thresh3 = {have} < {need} (two neighbour entries per agent): \
                 sysctl -w net.ipv4.neigh.default.gc_thresh1=8192 net.ipv4.neigh.default.gc_thresh2=32768 \
                 net.ipv4.neigh.default.gc_thresh3=65536"
            ));
        }
    }
    if let Some(have) = read("/proc/sys/kernel/pid_max") {
        let need = 16 * agents + 8192;
        if have < need {
            short.push(format!(
                "kernel.pid_max = {have} < {need} (about 15 threads per agent): sysctl -w kernel.pid_max=4194304"
            ));
        }
    }
    if short.is_empty() {
        return Ok(());
    }
    bail!(
        "this host cannot hold {agents} agents; raise, for the run (and restore after):\n  {}",
        short.join("\n  ")
    )
}

/// What is left on the engine with our label (it must be nothing).
fn leftovers(prefix: &str) -> String {
    let filter = format!("label={TEST_LABEL}={prefix}");
    let count = |args: &[&str]| -> String {
        let mut all = args.to_vec();
        all.extend(["--filter", &filter]);
        docker_cli(&all).map_or_else(
            |e| format!("? ({e})"),
            |s| s.lines().filter(|l| !l.is_empty()).count().to_string(),
        )
    };
    format!(
        "left on the engine with {TEST_LABEL}={prefix}: {} containers, {} volumes, {} networks",
        count(&["ps", "-aq"]),
        count(&["volume", "ls", "-q"]),
        count(&["network", "ls", "-q"])
    )
}

/// A built binary of this profile, or a hint to build it.
fn built(name: &str) -> anyhow::Result<PathBuf> {
    built_binary(
        name,
        "run scripts/bench-density.sh (it builds everything first)",
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `zcaas serve` as its own process (release binary) on a data directory
/// and database that outlive it, so it can be stopped and started again.
struct Server {
    process: Option<ServerProcess>,
    database: TestDatabase,
    /// The data directory; also holds `zcaas.log` and `bench.toml`.
    dir: tempfile::TempDir,
    binary: PathBuf,
}

impl Server {
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("bench.toml")
    }

    fn api(&self) -> &Api {
        &self.process.as_ref().expect("zcaas is running").api
    }

    fn pid(&self) -> u32 {
        self.process.as_ref().expect("zcaas is running").pid()
    }

    /// Starts `zcaas serve` and waits for `/healthz`; returns how long that
    /// took from the spawn.
    async fn start(&mut self, world: &World) -> anyhow::Result<Duration> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("zcaas.log"))?;
        let mut cmd = zcaas_command_with(&self.binary, world, self.dir.path());
        cmd.env("RUST_LOG", "info")
            .env("ZCAAS_DATABASE_URL", &self.database.url)
            .env("ZCAAS_CONFIG", self.config_path())
            .stderr(log);
        let t = Instant::now();
        let started =
            ServerProcess::start_command_within(cmd, &world.prefix, &world.provider, START_TIMEOUT);
        match started.await {
            Ok(process) => self.process = Some(process),
            Err(e) => bail!("{e:#}\n{}", self.log_tail()),
        }
        Ok(t.elapsed())
    }

    /// SIGTERM, then waits for the exit (up to 60 s); returns how long the
    /// clean shutdown took.
    async fn stop(&mut self) -> anyhow::Result<(Duration, String)> {
        let mut process = self.process.take().context("zcaas is not running")?;
        let t = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &process.pid().to_string()])
            .status()?;
        if !sent.success() {
            bail!("kill -TERM {} failed", process.pid());
        }
        let status = process.wait_exit(Duration::from_secs(60)).await;
        Ok((t.elapsed(), status.to_string()))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("zcaas.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// Whether the `zcaas` build spreads agents over several networks and
/// reaches them without published ports (issue 16): its help names
/// `--agents-per-network` and `--network-attach`.
fn supports_network_fleet(binary: &PathBuf) -> bool {
    Command::new(binary)
        .args(["serve", "--help"])
        .output()
        .map(|o| {
            let help = String::from_utf8_lossy(&o.stdout);
            help.contains("--agents-per-network") && help.contains("--network-attach")
        })
        .unwrap_or(false)
}

/// The configuration file both the `zcaas serve` process and the
/// in-process control plane of the reconcile measurement read.
fn write_config(
    server: &Server,
    world: &World,
    network_mode: bool,
    attach: bool,
    agents_per_network: Option<u32>,
) -> anyhow::Result<()> {
    let mut t = toml::Table::new();
    let s = |v: &str| toml::Value::String(v.to_owned());
    let path = |p: &std::path::Path| toml::Value::String(p.display().to_string());
    t.insert("data_dir".into(), path(server.dir.path()));
    t.insert("database_url".into(), s(&server.database.url));
    t.insert("network".into(), s(&world.network));
    t.insert("runtime_image".into(), s(AGENT_IMAGE));
    t.insert("agent_binary".into(), path(&agent_binary()?));
    t.insert(
        "allow_private_provider_urls".into(),
        toml::Value::Boolean(true),
    );
    t.insert("domain".into(), s("agents.test"));
    t.insert(
        "agent_address".into(),
        s(if network_mode { "network" } else { "host-port" }),
    );
    t.insert(
        "trusted_proxies".into(),
        toml::Value::Array(vec![s("127.0.0.1/32")]),
    );
    if let Some(n) = agents_per_network.filter(|_| attach) {
        t.insert("agents_per_network".into(), toml::Value::Integer(n.into()));
    }
    if attach {
        // Agents on `<network>-2`… reach the provider stand-in too.
        t.insert(
            "network_attach".into(),
            toml::Value::Array(vec![s(&format!("{}-provider", world.prefix))]),
        );
    }
    let mut labels = toml::Table::new();
    labels.insert(TEST_LABEL.into(), s(&world.prefix));
    t.insert("extra_labels".into(), toml::Value::Table(labels));
    std::fs::write(server.config_path(), toml::to_string(&t)?)?;
    Ok(())
}

/// One user of the fleet.
struct User {
    jwt: String,
    /// Agents it owns (RUNNING or not).
    agents: AtomicUsize,
}

/// One agent the benchmark created (its POST answered 202).
#[derive(Clone)]
struct Created {
    id: String,
    user: usize,
    running: bool,
}

/// RUNNING (or ERROR) transitions seen on the users' event streams, by
/// agent id, with the instant each arrived.
#[derive(Default)]
struct Settled {
    seen: Mutex<HashMap<String, (Instant, bool)>>,
    notify: tokio::sync::Notify,
}

impl Settled {
    /// Waits until the agent's RUNNING (true) or ERROR (false) transition
    /// was seen; `None` after `timeout`.
    async fn wait(&self, id: &str, timeout: Duration) -> Option<(Instant, bool)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = self.seen.lock().expect("lock").get(id) {
                return Some(*v);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

/// Reads one user's `/api/events` stream into `settled` until it ends.
async fn read_events(resp: reqwest::Response, settled: Arc<Settled>) {
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut event = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = if v.trim() == "transition" {
                        "transition"
                    } else {
                        "other"
                    };
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if event != "transition" {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            let (Some(id), Some(to)) = (v["agentId"].as_str(), v["to"].as_str()) else {
                continue;
            };
            let running = match to {
                "RUNNING" => true,
                "ERROR" => false,
                _ => continue,
            };
            let mut seen = settled.seen.lock().expect("lock");
            // The first RUNNING counts; an ERROR only until then.
            if seen.get(id).is_none_or(|(_, r)| !r) {
                seen.insert(id.to_owned(), (Instant::now(), running));
            }
            drop(seen);
            settled.notify.notify_waiters();
        }
    }
}

/// Everything the phases share.
struct Fleet<'a> {
    opts: &'a Options,
    users: Vec<User>,
    created: Mutex<Vec<Created>>,
    settled: Arc<Settled>,
    streams: Vec<tokio::task::JoinHandle<()>>,
    low_memory: AtomicBool,
    failures: AtomicUsize,
    prefix: String,
}

impl Fleet<'_> {
    /// The owner of the `i`th agent: the first [`LIST_AGENTS`] belong to
    /// user 0, then `per_user` to each next user.
    fn user_of(&self, i: usize) -> usize {
        if i < LIST_AGENTS {
            0
        } else {
            1 + (i - LIST_AGENTS) / self.opts.per_user
        }
    }

    fn running(&self) -> Vec<Created> {
        let created = self.created.lock().expect("lock");
        created.iter().filter(|c| c.running).cloned().collect()
    }
}

/// Users needed for `agents` agents.
fn users_needed(opts: &Options) -> usize {
    1 + opts
        .agents
        .saturating_sub(LIST_AGENTS)
        .div_ceil(opts.per_user)
}

/// `POST path` with a JSON body and the bearer JWT → (status, body); an
/// error when the request cannot be sent or the answer is not JSON.
async fn post_json(api: &Api, path: &str, jwt: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let res = api
        .http
        .post(api.url(path))
        .bearer_auth(jwt)
        .json(body)
        .send()
        .await?;
    let status = res.status().as_u16();
    let text = res.text().await?;
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("{status}: {text}"))?
    };
    Ok((status, value))
}

/// Registers user `n` from its own `X-Forwarded-For` address (127.0.0.1 is
/// a trusted proxy for this run; registrations are limited per client).
async fn register(api: &Api, n: usize) -> anyhow::Result<String> {
    let email = format!("density{n}-{}@example.test", api.prefix);
    let res = api
        .http
        .post(api.url("/api/auth/register"))
        .header(
            "x-forwarded-for",
            format!("10.77.{}.{}", n / 250, 1 + n % 250),
        )
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await?;
    if status != 201 {
        bail!("register {email}: {status} {body}");
    }
    Ok(body["token"].as_str().context("a token")?.to_owned())
}

async fn run(opts: &Options) -> anyhow::Result<()> {
    let world = World::start().await;
    let _ = PREFIX.set(world.prefix.clone());
    println!("# density benchmark (issue 16), prefix {}", world.prefix);
    for line in host::describe_machine() {
        println!("{line}");
    }
    println!("options: {opts:?}");
    let binary = match std::env::var_os("BENCH_ZCAAS_BINARY") {
        Some(path) => PathBuf::from(path),
        None => built("zcaas")?,
    };
    let supported = supports_network_fleet(&binary);
    let network_mode = match opts.address {
        Address::Auto => supported,
        Address::Network => true,
        Address::HostPort => false,
    };
    if opts.address == Address::Auto && !supported {
        println!(
            "NOTE: this zcaas build has no --agents-per-network/--network-attach: agents run in \
             host-port mode (one published port and one docker-proxy each), all on one network"
        );
    }
    println!(
        "agent_address = {} | agents_per_network: {} | network_attach: {}",
        if network_mode { "network" } else { "host-port" },
        opts.agents_per_network
            .filter(|_| supported)
            .map_or("default".to_owned(), |n| n.to_string()),
        if supported {
            "the provider stand-in"
        } else {
            "(not supported)"
        }
    );
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}", dir.path().join("zcaas.db").display());
    let database = TestDatabase::create(&sqlite).await;
    let mut server = Server {
        process: None,
        database,
        dir,
        binary,
    };
    write_config(
        &server,
        &world,
        network_mode,
        supported,
        opts.agents_per_network,
    )?;
    server.start(&world).await?;
    let result = phases(opts, &world, &mut server).await;
    if result.is_err() {
        eprintln!("--- zcaas log tail ---\n{}", server.log_tail());
    }
    drop(server);
    result
    // `world` drops last: its Cleanup removes everything labelled with the prefix.
}

/// The figures of one checkpoint.
struct Checkpoint {
    running: usize,
    /// POST → RUNNING of agents created one at a time with this fleet
    /// running, ms, sorted.
    probe_ms: Vec<f64>,
    wave: Wave,
    memory: FleetMemory,
    available_drop_kib: f64,
    zcaas_rss_kib: u64,
    zcaas_pss_kib: u64,
    dockerd_rss_kib: u64,
    containerd_rss_kib: u64,
    cpu: CpuWindow,
}

/// One wave of creates.
#[derive(Default)]
struct Wave {
    created: usize,
    secs: f64,
    /// POST's 202 → RUNNING event, ms, sorted.
    deploy_ms: Vec<f64>,
    /// The POST itself, ms, sorted.
    post_ms: Vec<f64>,
    failures: Vec<String>,
}

async fn phases(opts: &Options, world: &World, server: &mut Server) -> anyhow::Result<()> {
    let api = server.api();
    let baseline_available = host::meminfo_kib("MemAvailable").unwrap_or(0);
    let mut users = Vec::new();
    for n in 0..users_needed(opts) {
        users.push(User {
            jwt: register(api, n).await?,
            agents: AtomicUsize::new(0),
        });
    }
    let db = zcaas_test_support::store::raw_pool(&server.database.url).await;
    sqlx::query("UPDATE users SET plan = 'enterprise'")
        .execute(&db)
        .await?;
    db.close().await;
    println!(
        "{} users registered (enterprise plan); MemAvailable before the fleet {:.0} MiB",
        users.len(),
        mib(baseline_available)
    );
    let settled = Arc::new(Settled::default());
    let sse = reqwest::Client::new();
    let mut streams = Vec::new();
    for user in &users {
        let resp = sse
            .get(api.url("/api/events"))
            .bearer_auth(&user.jwt)
            .send()
            .await?;
        if resp.status() != 200 {
            bail!("GET /api/events: {}", resp.status());
        }
        streams.push(tokio::spawn(read_events(resp, settled.clone())));
    }
    let fleet = Fleet {
        opts,
        users,
        created: Mutex::new(Vec::new()),
        settled,
        streams,
        low_memory: AtomicBool::new(false),
        failures: AtomicUsize::new(0),
        prefix: world.prefix.clone(),
    };
    let outcome = measure(&fleet, world, server, baseline_available).await;
    for s in &fleet.streams {
        s.abort();
    }
    let teardown = match &server.process {
        Some(_) => Some(delete_all(&fleet, server.api()).await),
        None => None,
    };
    let checkpoints = outcome?;
    print_report(&fleet, &checkpoints.0, &checkpoints.1, teardown);
    Ok(())
}

/// Figures of the whole fleet (after the last checkpoint).
#[derive(Default)]
struct FleetFigures {
    lines: Vec<String>,
}

impl FleetFigures {
    fn say(&mut self, line: String) {
        println!("{line}");
        self.lines.push(line);
    }
}

async fn measure(
    fleet: &Fleet<'_>,
    world: &World,
    server: &mut Server,
    baseline_available: u64,
) -> anyhow::Result<(Vec<Checkpoint>, FleetFigures)> {
    let opts = fleet.opts;
    let mut checkpoints = Vec::new();
    let mut from = 0;
    let empty = probe(fleet, server.api(), 0).await?;
    let mut figures = FleetFigures::default();
    figures.say(format!(
        "POST → RUNNING one at a time on an empty host ({} agents, created and deleted): p50 {:.0} ms, p95 {:.0} ms",
        empty.len(),
        percentile(&empty, 0.5),
        percentile(&empty, 0.95)
    ));
    for &target in &opts.checkpoints {
        println!(
            "\n## wave {from} → {target} ({} in flight) | MemAvailable {:.0} MiB | loadavg {}",
            opts.concurrency,
            mib(host::meminfo_kib("MemAvailable").unwrap_or(0)),
            host::loadavg()
        );
        let wave = create_wave(fleet, server.api(), from, target).await;
        from = target;
        print_wave(&wave);
        let running = fleet.running().len();
        if running == 0 {
            bail!("no agent reached RUNNING: {:?}", wave.failures);
        }
        let probe_ms = probe(fleet, server.api(), running).await?;
        println!(
            "one at a time with {running} RUNNING ({} agents, created and deleted): POST → RUNNING p50 {:.0} ms, p95 {:.0} ms",
            probe_ms.len(),
            percentile(&probe_ms, 0.5),
            percentile(&probe_ms, 0.95)
        );
        let mut cp = checkpoint(fleet, server, running, wave, baseline_available).await?;
        cp.probe_ms = probe_ms;
        checkpoints.push(cp);
        if fleet.low_memory.load(Ordering::SeqCst) {
            println!(
                "STOPPED creating: MemAvailable fell below {} MiB with {running} agents RUNNING",
                opts.min_available_mib
            );
            break;
        }
        if running < target {
            println!("only {running} of {target} agents RUNNING: no further waves");
            break;
        }
    }
    let running = fleet.running();
    figures.say(format!(
        "\n## the whole fleet: {} agents RUNNING",
        running.len()
    ));
    messages(fleet, server, checkpoints.last(), &running, &mut figures).await?;
    lists(fleet, server, &mut figures).await?;
    for s in &fleet.streams {
        s.abort();
    }
    restart(fleet, world, server, running.len(), &mut figures).await?;
    Ok((checkpoints, figures))
}

/// Creates `--probe` agents of user 0 one at a time, each waited for
/// (RUNNING) and deleted before the next: POST's 202 → RUNNING, ms, sorted.
async fn probe(fleet: &Fleet<'_>, api: &Api, running: usize) -> anyhow::Result<Vec<f64>> {
    let jwt = &fleet.users[0].jwt;
    let mut ms = Vec::new();
    let phases_before = api.deploy_phases().await;
    for k in 0..fleet.opts.probe {
        let body = api.agent_body(&format!("{} p{running}-{k}", fleet.prefix));
        let (status, agent) = post_json(api, "/api/agents", jwt, &body).await?;
        let accepted = Instant::now();
        if status != 202 {
            bail!("probe: POST: {status} {agent}");
        }
        let id = agent["id"].as_str().context("an id")?.to_owned();
        let settled = fleet.settled.wait(&id, fleet.opts.deploy_timeout).await;
        let res = api
            .http
            .delete(api.url(&format!("/api/agents/{id}")))
            .bearer_auth(jwt)
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("probe: DELETE {id}: {}", res.status());
        }
        match settled {
            Some((at, true)) => {
                ms.push(at.saturating_duration_since(accepted).as_secs_f64() * 1000.0)
            }
            other => bail!("probe agent {id} did not reach RUNNING: {other:?}"),
        }
    }
    ms.sort_by(f64::total_cmp);
    let phases_after = api.deploy_phases().await;
    let means = phase_means(&phases_before, &phases_after);
    println!(
        "  where one start's time goes with {running} RUNNING (zcaas_deploy_phase_duration_seconds, mean ms): {}",
        means
    );
    Ok(ms)
}

/// Creates agents `from..to`, `concurrency` in flight at a time.
async fn create_wave(fleet: &Fleet<'_>, api: &Api, from: usize, to: usize) -> Wave {
    let t = Instant::now();
    let max_failures = 10 + (to - from) / 100;
    let results: Vec<Result<(f64, f64), String>> = futures::stream::iter(from..to)
        .map(|i| create_one(fleet, api, i, max_failures))
        .buffer_unordered(fleet.opts.concurrency)
        .collect()
        .await;
    let mut wave = Wave {
        secs: t.elapsed().as_secs_f64(),
        ..Wave::default()
    };
    for r in results {
        match r {
            Ok((post, deploy)) => {
                wave.created += 1;
                wave.post_ms.push(post);
                wave.deploy_ms.push(deploy);
            }
            Err(e) if e.is_empty() => {}
            Err(e) => wave.failures.push(e),
        }
    }
    wave.post_ms.sort_by(f64::total_cmp);
    wave.deploy_ms.sort_by(f64::total_cmp);
    wave
}

/// Creates agent `i` and waits for its RUNNING event: (POST ms, 202 →
/// RUNNING ms); `Err("")` when skipped (low memory, too many failures).
async fn create_one(
    fleet: &Fleet<'_>,
    api: &Api,
    i: usize,
    max_failures: usize,
) -> Result<(f64, f64), String> {
    if fleet.low_memory.load(Ordering::SeqCst)
        || fleet.failures.load(Ordering::SeqCst) >= max_failures
    {
        return Err(String::new());
    }
    let available = host::meminfo_kib("MemAvailable").unwrap_or(u64::MAX);
    if available < fleet.opts.min_available_mib * 1024 {
        if !fleet.low_memory.swap(true, Ordering::SeqCst) {
            println!(
                "MemAvailable {:.0} MiB < {} MiB: creating no more agents",
                mib(available),
                fleet.opts.min_available_mib
            );
        }
        return Err(String::new());
    }
    let fail = |e: String| {
        fleet.failures.fetch_add(1, Ordering::SeqCst);
        Err(e)
    };
    let user = fleet.user_of(i);
    let jwt = &fleet.users[user].jwt;
    let body = api.agent_body(&format!("{} d{i:04}", fleet.prefix));
    let t = Instant::now();
    let (status, agent) = match post_json(api, "/api/agents", jwt, &body).await {
        Ok(v) => v,
        Err(e) => return fail(format!("agent {i}: POST: {e:#}")),
    };
    let accepted = Instant::now();
    if status != 202 {
        return fail(format!("agent {i}: POST: {status} {agent}"));
    }
    let Some(id) = agent["id"].as_str().map(str::to_owned) else {
        return fail(format!("agent {i}: no id in {agent}"));
    };
    fleet.users[user].agents.fetch_add(1, Ordering::SeqCst);
    let index = {
        let mut created = fleet.created.lock().expect("lock");
        created.push(Created {
            id: id.clone(),
            user,
            running: false,
        });
        created.len() - 1
    };
    match fleet.settled.wait(&id, fleet.opts.deploy_timeout).await {
        Some((at, true)) => {
            fleet.created.lock().expect("lock")[index].running = true;
            let post = (accepted - t).as_secs_f64() * 1000.0;
            Ok((
                post,
                at.saturating_duration_since(accepted).as_secs_f64() * 1000.0,
            ))
        }
        Some((_, false)) => {
            let (_, record) = api.get_agent(jwt, &id).await;
            fail(format!("agent {i} ({id}): ERROR: {}", record["lastError"]))
        }
        None => fail(format!(
            "agent {i} ({id}): not RUNNING within {:?}",
            fleet.opts.deploy_timeout
        )),
    }
}

fn print_wave(wave: &Wave) {
    let d = &wave.deploy_ms;
    println!(
        "wave: {} agents RUNNING in {:.1} s = {:.2} agents/s | POST → RUNNING p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms | POST itself p50 {:.1} ms, p95 {:.1} ms | {} failures",
        wave.created,
        wave.secs,
        wave.created as f64 / wave.secs.max(0.001),
        percentile(d, 0.5),
        percentile(d, 0.95),
        d.last().copied().unwrap_or(f64::NAN),
        percentile(&wave.post_ms, 0.5),
        percentile(&wave.post_ms, 0.95),
        wave.failures.len()
    );
    for f in wave.failures.iter().take(10) {
        println!("  failure: {f}");
    }
}

/// Host memory of the fleet's containers, PSS in KiB.
#[derive(Default, Debug)]
struct FleetMemory {
    containers: usize,
    /// Every process below each container's shim (docker-init, the agent,
    /// any `runc exec` of a health check in flight).
    agent_kib: u64,
    /// The file-backed part of `agent_kib` (the binaries' pages: shared
    /// between containers only when they map the same inode — kernel
    /// overlayfs over one image layer, not a FUSE mount per container).
    agent_pss_file_kib: u64,
    /// The agent processes' RSS, for the share PSS divides away.
    agent_rss_kib: u64,
    agent_procs: usize,
    shim_kib: u64,
    shims: usize,
    /// `fuse-overlayfs` mount helpers (storage driver fuse-overlayfs).
    overlay_kib: u64,
    overlays: usize,
    proxy_kib: u64,
    proxies: usize,
    /// Containers with at least one published host port.
    published: usize,
    /// Containers whose init's parent was not a containerd shim.
    no_shim: usize,
    /// Threads (kernel tasks: each takes a pid) of the shims and of the
    /// agent processes.
    shim_threads: usize,
    agent_threads: usize,
    /// Agents per Docker network (a container on several counts on each).
    networks: std::collections::BTreeMap<String, usize>,
    /// Pids of the shims and of the agent processes, for the CPU readings.
    shim_pids: Vec<u32>,
    agent_pids: Vec<u32>,
}

impl FleetMemory {
    fn total_kib(&self) -> u64 {
        self.agent_kib + self.shim_kib + self.overlay_kib + self.proxy_kib
    }

    fn per_agent_mib(&self, kib: u64) -> f64 {
        mib(kib) / self.containers.max(1) as f64
    }
}

/// Reads the PSS of every running agent container of this world.
fn fleet_memory(prefix: &str) -> anyhow::Result<FleetMemory> {
    let ids: Vec<String> = docker_cli(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={TEST_LABEL}={prefix}"),
        "--filter",
        &format!("label={AGENT_ID_LABEL}"),
        "--filter",
        "status=running",
    ])?
    .lines()
    .map(str::to_owned)
    .filter(|l| !l.is_empty())
    .collect();
    let mut inspected = Vec::new();
    for chunk in ids.chunks(INSPECT_BATCH) {
        let mut args = vec!["inspect"];
        args.extend(chunk.iter().map(String::as_str));
        let v: Value = serde_json::from_str(&docker_cli(&args)?)?;
        inspected.extend(v.as_array().cloned().unwrap_or_default());
    }
    let table = host::processes();
    let by_arg = |comm: &str, pick: &dyn Fn(&[String]) -> Option<String>| {
        table
            .values()
            .filter(|p| p.comm == comm)
            .filter_map(|p| Some((pick(&p.cmdline)?, p.pid)))
            .collect::<HashMap<String, u32>>()
    };
    // fuse-overlayfs … <mount point>: the last argument.
    let overlays = by_arg("fuse-overlayfs", &|args| args.last().cloned());
    // docker-proxy … -host-port <port> …
    let proxies = by_arg("docker-proxy", &|args| {
        let i = args.iter().position(|a| a == "-host-port")?;
        args.get(i + 1).cloned()
    });
    let pss = |pid: u32| host::pss_kib(pid).unwrap_or(0);
    let mut m = FleetMemory::default();
    for c in &inspected {
        let Some(init) = c["State"]["Pid"].as_u64().map(|p| p as u32) else {
            continue;
        };
        if init == 0 {
            continue;
        }
        m.containers += 1;
        let shim = table.get(&init).map(|p| p.ppid).filter(|pp| {
            table
                .get(pp)
                .is_some_and(|p| p.comm.starts_with("containerd-shim"))
        });
        let tree = match shim {
            Some(shim) => {
                m.shims += 1;
                m.shim_kib += pss(shim);
                m.shim_pids.push(shim);
                m.shim_threads += threads(shim);
                let mut tree = host::subtree(&table, shim);
                tree.retain(|p| *p != shim);
                tree
            }
            None => {
                m.no_shim += 1;
                host::subtree(&table, init)
            }
        };
        m.agent_procs += tree.len();
        m.agent_threads += tree.iter().map(|&p| threads(p)).sum::<usize>();
        m.agent_kib += tree.iter().map(|&p| pss(p)).sum::<u64>();
        let rollup = |p: u32, key: &str| host::smaps_rollup(p, key).unwrap_or(0);
        m.agent_pss_file_kib += tree.iter().map(|&p| rollup(p, "Pss_File")).sum::<u64>();
        m.agent_rss_kib += tree.iter().map(|&p| rollup(p, "Rss")).sum::<u64>();
        m.agent_pids.extend(tree);
        if let Some(pid) = c["GraphDriver"]["Data"]["MergedDir"]
            .as_str()
            .and_then(|dir| overlays.get(dir))
        {
            m.overlays += 1;
            m.overlay_kib += pss(*pid);
        }
        if let Some(nets) = c["NetworkSettings"]["Networks"].as_object() {
            for name in nets.keys() {
                *m.networks.entry(name.clone()).or_default() += 1;
            }
        }
        let mut published = false;
        if let Some(ports) = c["NetworkSettings"]["Ports"].as_object() {
            for binding in ports.values().filter_map(Value::as_array).flatten() {
                if let Some(port) = binding["HostPort"].as_str().filter(|p| !p.is_empty()) {
                    published = true;
                    if let Some(pid) = proxies.get(port) {
                        m.proxies += 1;
                        m.proxy_kib += pss(*pid);
                    }
                }
            }
        }
        m.published += usize::from(published);
    }
    Ok(m)
}

/// Threads of the process (entries of `/proc/<pid>/task`).
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Threads on the whole host (`/proc/loadavg`'s `running/total`) and the
/// kernel's `pid_max`: every thread takes a pid.
fn host_threads() -> String {
    let total = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(3)?
                .split_once('/')
                .map(|(_, t)| t.to_owned())
        })
        .unwrap_or_else(|| "?".to_owned());
    let max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned());
    format!("{total} threads on the host (pid_max {max})")
}

/// A warning when `agents` agents would need more threads (each one a pid)
/// than `kernel.pid_max` allows, projected from the threads per agent now.
fn pid_projection(memory: &FleetMemory, agents: usize) -> Option<String> {
    let read =
        |path: &str| -> Option<f64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let pid_max = read("/proc/sys/kernel/pid_max")?;
    let total: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()?;
    let per_agent =
        (memory.shim_threads + memory.agent_threads) as f64 / memory.containers.max(1) as f64;
    let projected = total + agents.saturating_sub(memory.containers) as f64 * per_agent;
    (projected > 0.9 * pid_max).then(|| {
        format!(
            "WARNING: {agents} agents would take about {projected:.0} threads ({per_agent:.1} per agent with its shim) \
             against kernel.pid_max {pid_max:.0}: forks and thread spawns fail near it; raise it \
             (sysctl -w kernel.pid_max=4194304) before a run that size"
        )
    })
}

/// CPU over a window (idle, or the message phase), in cores.
#[derive(Default, Debug)]
struct CpuWindow {
    secs: f64,
    zcaas: f64,
    dockerd: f64,
    containerd: f64,
    shims: f64,
    agents: f64,
    /// This benchmark: the HTTP clients and the provider stand-in.
    bench: f64,
    machine: f64,
}

/// CPU counters of the control plane, the engine, the fleet, this process
/// and the whole machine at one instant; two of them make a [`CpuWindow`].
struct CpuMark {
    named: Vec<u32>,
    named_secs: HashMap<u32, f64>,
    shims: HashMap<u32, f64>,
    agents: HashMap<u32, f64>,
    bench_secs: f64,
    machine: (f64, f64),
    at: Instant,
}

impl CpuMark {
    fn now(server_pid: u32, memory: &FleetMemory) -> CpuMark {
        let named: Vec<u32> = [
            Some(server_pid),
            host::pid_of("dockerd"),
            host::pid_of("containerd"),
        ]
        .into_iter()
        .map(|p| p.unwrap_or(0))
        .collect();
        CpuMark {
            named_secs: host::cpu_seconds_of(&named),
            named,
            shims: host::cpu_seconds_of(&memory.shim_pids),
            agents: host::cpu_seconds_of(&memory.agent_pids),
            bench_secs: host::cpu_seconds(std::process::id()).unwrap_or(0.0),
            machine: host::machine_jiffies(),
            at: Instant::now(),
        }
    }

    /// Cores used on average since `self` (CPU seconds per second).
    fn since(&self, server_pid: u32, memory: &FleetMemory) -> CpuWindow {
        let after = CpuMark::now(server_pid, memory);
        let window = (after.at - self.at).as_secs_f64();
        let one = |pid: u32| match (self.named_secs.get(&pid), after.named_secs.get(&pid)) {
            (Some(b), Some(a)) => (a - b) / window,
            _ => f64::NAN,
        };
        CpuWindow {
            secs: window,
            zcaas: one(self.named[0]),
            dockerd: one(self.named[1]),
            containerd: one(self.named[2]),
            shims: host::cpu_delta(&self.shims, &after.shims) / window,
            agents: host::cpu_delta(&self.agents, &after.agents) / window,
            bench: (after.bench_secs - self.bench_secs) / window,
            machine: host::busy_cores(self.machine, after.machine),
        }
    }
}

async fn idle_cpu(server_pid: u32, secs: u64, memory: &FleetMemory) -> CpuWindow {
    let before = CpuMark::now(server_pid, memory);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    before.since(server_pid, memory)
}

async fn checkpoint(
    fleet: &Fleet<'_>,
    server: &Server,
    running: usize,
    wave: Wave,
    baseline_available: u64,
) -> anyhow::Result<Checkpoint> {
    let opts = fleet.opts;
    tokio::time::sleep(Duration::from_secs(opts.settle_secs)).await;
    let t = Instant::now();
    let memory = tokio::task::block_in_place(|| fleet_memory(&fleet.prefix))?;
    let read_secs = t.elapsed().as_secs_f64();
    let available = host::meminfo_kib("MemAvailable").unwrap_or(0);
    let pid = server.pid();
    let rss = |p: Option<u32>| p.and_then(|p| host::status_kib(p, "VmRSS")).unwrap_or(0);
    let cp_zcaas_rss = rss(Some(pid));
    let cp_zcaas_pss = host::pss_kib(pid).unwrap_or(0);
    let dockerd_rss = rss(host::pid_of("dockerd"));
    let containerd_rss = rss(host::pid_of("containerd"));
    let n = memory.containers.max(1) as f64;
    let drop_kib = baseline_available.saturating_sub(available) as f64 / n;
    println!(
        "checkpoint {running} RUNNING ({} agent containers running; read in {read_secs:.1} s) | loadavg {}",
        memory.containers,
        host::loadavg()
    );
    println!(
        "  per-agent host memory (PSS): {:.2} MiB = agent processes {:.2} ({} procs) + shim {:.2} ({}) + fuse-overlayfs {:.2} ({}) + docker-proxy {:.2} ({}); fleet total {:.0} MiB",
        memory.per_agent_mib(memory.total_kib()),
        memory.per_agent_mib(memory.agent_kib),
        memory.agent_procs,
        memory.per_agent_mib(memory.shim_kib),
        memory.shims,
        memory.per_agent_mib(memory.overlay_kib),
        memory.overlays,
        memory.per_agent_mib(memory.proxy_kib),
        memory.proxies,
        mib(memory.total_kib())
    );
    println!(
        "  agent processes: RSS {:.2} MiB per agent, PSS {:.2} of which file-backed {:.2} (the binaries' pages; shared across containers only on a storage driver that shares the image layer's inodes)",
        memory.per_agent_mib(memory.agent_rss_kib),
        memory.per_agent_mib(memory.agent_kib),
        memory.per_agent_mib(memory.agent_pss_file_kib)
    );
    println!(
        "  published host ports: {} of {} containers{} | MemAvailable {:.0} MiB, {:.2} MiB less per agent than before the fleet (machine-wide: anything else running counts)",
        memory.published,
        memory.containers,
        if memory.no_shim > 0 {
            format!(" | {} containers without a containerd shim parent", memory.no_shim)
        } else {
            String::new()
        },
        mib(available),
        drop_kib / 1024.0
    );
    println!(
        "  threads: shims {} ({:.1} each), agent processes {} ({:.1} per agent); {}",
        memory.shim_threads,
        memory.shim_threads as f64 / memory.shims.max(1) as f64,
        memory.agent_threads,
        memory.agent_threads as f64 / memory.containers.max(1) as f64,
        host_threads()
    );
    if let Some(warning) = pid_projection(&memory, opts.agents) {
        println!("  {warning}");
    }
    println!(
        "  agents per network: {}",
        memory
            .networks
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let period = server_metric(server.api(), "zcaas_stats_poll_period_seconds").await;
    println!(
        "  zcaas VmRSS {:.1} MiB (PSS {:.1} MiB) | dockerd VmRSS {:.1} MiB | containerd VmRSS {:.1} MiB | stats poll period {}",
        mib(cp_zcaas_rss),
        mib(cp_zcaas_pss),
        mib(dockerd_rss),
        mib(containerd_rss),
        period.map_or("(no such metric)".to_owned(), |p| format!("{p} s"))
    );
    let cpu = idle_cpu(pid, opts.idle_secs, &memory).await;
    println!(
        "  idle {:.0} s, CPU in cores: zcaas {:.3}, dockerd {:.3}, containerd {:.3} (zcaas + dockerd {:.3}) | shims {:.3}, agent processes {:.3} | whole machine {:.2}",
        cpu.secs,
        cpu.zcaas,
        cpu.dockerd,
        cpu.containerd,
        cpu.zcaas + cpu.dockerd,
        cpu.shims,
        cpu.agents,
        cpu.machine
    );
    Ok(Checkpoint {
        running,
        probe_ms: Vec::new(),
        wave,
        memory,
        available_drop_kib: drop_kib,
        zcaas_rss_kib: cp_zcaas_rss,
        zcaas_pss_kib: cp_zcaas_pss,
        dockerd_rss_kib: dockerd_rss,
        containerd_rss_kib: containerd_rss,
        cpu,
    })
}

/// One message to every RUNNING agent through the control plane, and what
/// answering costs: CPU per message above the idle rate of the last
/// checkpoint (the fleet's processes as counted there, `zcaas`, the engine,
/// and the whole machine less this benchmark's own clients and provider
/// stand-in) and the fleet's PSS per agent once every agent has answered (a
/// busy agent's memory: its conversation in memory, the provider client's
/// connection and buffers). An agent whose first message failed is sent a
/// second one after the others; both counts are reported.
async fn messages(
    fleet: &Fleet<'_>,
    server: &Server,
    idle: Option<&Checkpoint>,
    running: &[Created],
    figures: &mut FleetFigures,
) -> anyhow::Result<()> {
    let api = server.api();
    let empty = FleetMemory::default();
    let pids = idle.map_or(&empty, |cp| &cp.memory);
    let mark = CpuMark::now(server.pid(), pids);
    let t = Instant::now();
    let send = |agent: &'_ Created| {
        let jwt = fleet.users[agent.user].jwt.clone();
        let path = format!("/api/agents/{}/message", agent.id);
        let id = agent.id.clone();
        async move {
            let body = json!({"message": "hello from the density benchmark"});
            let t = Instant::now();
            match post_json(api, &path, &jwt, &body).await {
                Ok((200, v)) if v["response"].is_string() => Ok(t.elapsed().as_secs_f64() * 1000.0),
                Ok((status, v)) => Err(format!("{id}: {status} {v}")),
                Err(e) => Err(format!("{id}: {e:#}")),
            }
        }
    };
    let results: Vec<Result<f64, String>> = futures::stream::iter(running)
        .map(send)
        .buffer_unordered(MESSAGE_CONCURRENCY)
        .collect()
        .await;
    let secs = t.elapsed().as_secs_f64();
    let retry: Vec<&Created> = running
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_err())
        .map(|(agent, _)| agent)
        .collect();
    let mut ms: Vec<f64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    ms.sort_by(f64::total_cmp);
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    figures.say(format!(
        "messages: {} of {} agents answered (POST /api/agents/{{id}}/message, {MESSAGE_CONCURRENCY} at a time) in {secs:.1} s | p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms | {} failed",
        ms.len(),
        running.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.95),
        ms.last().copied().unwrap_or(f64::NAN),
        failed.len()
    ));
    for f in failed.iter().take(10) {
        figures.say(format!("  failure: {f}"));
    }
    let cpu = mark.since(server.pid(), pids);
    let answered = ms.len().max(1) as f64;
    let base = idle.map(|cp| &cp.cpu);
    // Core-seconds per message above the idle rate: (cores − idle cores) ×
    // window ÷ messages, in ms.
    let per = |cores: f64, idle: Option<f64>| {
        (cores - idle.unwrap_or(0.0)).max(0.0) * cpu.secs / answered * 1000.0
    };
    figures.say(format!(
        "  CPU per message above the idle rate (ms of one core; machine {:.2} cores busy in the window): agent processes {:.2} + shims {:.2}, zcaas {:.2}, dockerd {:.2}, containerd {:.2} | whole machine less this benchmark {:.2} (this benchmark {:.2})",
        cpu.machine,
        per(cpu.agents, base.map(|b| b.agents)),
        per(cpu.shims, base.map(|b| b.shims)),
        per(cpu.zcaas, base.map(|b| b.zcaas)),
        per(cpu.dockerd, base.map(|b| b.dockerd)),
        per(cpu.containerd, base.map(|b| b.containerd)),
        per(cpu.machine - cpu.bench, base.map(|b| b.machine - b.bench)),
        per(cpu.bench, None)
    ));
    if !retry.is_empty() {
        let again: Vec<Result<f64, String>> = futures::stream::iter(retry.iter().copied())
            .map(send)
            .buffer_unordered(MESSAGE_CONCURRENCY)
            .collect()
            .await;
        let ok = again.iter().filter(|r| r.is_ok()).count();
        figures.say(format!(
            "  second message to the {} agents whose first failed: {ok} answered",
            retry.len()
        ));
        for f in again.iter().filter_map(|r| r.as_ref().err()).take(10) {
            figures.say(format!("  failure again: {f}"));
        }
    }
    if let Some(idle) = idle.map(|cp| &cp.memory) {
        let busy = tokio::task::block_in_place(|| fleet_memory(&fleet.prefix))?;
        figures.say(format!(
            "  per-agent host memory (PSS) after one message each: {:.2} MiB (agent processes {:.2}) | idle at the last checkpoint: {:.2} MiB (agent processes {:.2})",
            busy.per_agent_mib(busy.total_kib()),
            busy.per_agent_mib(busy.agent_kib),
            idle.per_agent_mib(idle.total_kib()),
            idle.per_agent_mib(idle.agent_kib)
        ));
    }
    Ok(())
}

/// `GET /api/agents` under wrk for the user of [`LIST_AGENTS`] and for the
/// first user owning the most agents.
async fn lists(
    fleet: &Fleet<'_>,
    server: &Server,
    figures: &mut FleetFigures,
) -> anyhow::Result<()> {
    let big = (1..fleet.users.len())
        .max_by_key(|&u| (fleet.users[u].agents.load(Ordering::SeqCst), usize::MAX - u));
    let mut who = vec![0];
    who.extend(big);
    for u in who {
        let user = &fleet.users[u];
        let owned = user.agents.load(Ordering::SeqCst);
        let url = server.api().url("/api/agents");
        tokio::task::block_in_place(|| host::wrk(server.pid(), &url, &user.jwt, 3))?;
        let load = host::loadavg();
        let secs = fleet.opts.wrk_secs;
        let run = tokio::task::block_in_place(|| host::wrk(server.pid(), &url, &user.jwt, secs))?;
        figures.say(format!(
            "GET /api/agents ({owned} agents of the user, {} running on the host), wrk -t2 -c32 -d{secs}s: {} req/s, p50 {}, p99 {} | CPU: zcaas {:.2} cores, wrk {:.2}, everything else {:.2} | loadavg before {load}",
            fleet.running().len(),
            run.rps,
            run.p50,
            run.p99,
            run.server_cpu / run.seconds,
            run.wrk_cpu / run.seconds,
            ((run.machine_cpu - run.server_cpu - run.wrk_cpu) / run.seconds).max(0.0)
        ));
    }
    Ok(())
}

/// Stops `zcaas` (SIGTERM), measures a full reconcile pass with the control
/// plane in this process on the same data directory and database, then
/// starts `zcaas serve` again and times it until the fleet is confirmed.
async fn restart(
    fleet: &Fleet<'_>,
    world: &World,
    server: &mut Server,
    running: usize,
    figures: &mut FleetFigures,
) -> anyhow::Result<()> {
    let (stop, status) = server.stop().await?;
    figures.say(format!(
        "control-plane stop: SIGTERM → exit in {:.2} s ({status})",
        stop.as_secs_f64()
    ));
    let passes = reconcile_in_process(server, running).await?;
    figures.say(format!(
        "full reconcile pass over {running} RUNNING agents (reconcile_all(32), in-process, {} runs): p50 {:.0} ms, p95 {:.0} ms, min {:.0}, max {:.0} ms",
        passes.len(),
        percentile(&passes, 0.5),
        percentile(&passes, 0.95),
        passes.first().copied().unwrap_or(f64::NAN),
        passes.last().copied().unwrap_or(f64::NAN)
    ));
    let wall = chrono::Utc::now();
    let healthy = server.start(world).await?;
    let t0 = Instant::now() - healthy;
    let api = server.api();
    let mut confirmed = None;
    let mut health_all = None;
    let mut last = String::new();
    let deadline = Instant::now() + CONFIRM_TIMEOUT;
    let mut next_list = Instant::now();
    while (confirmed.is_none() || health_all.is_none()) && Instant::now() < deadline {
        if confirmed.is_none() {
            let text = api.http.get(api.url("/metrics")).send().await;
            let text = match text {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let passes = metric(&text, "zcaas_reconcile_passes_total");
            let gauge = metric(&text, "zcaas_agents{status=\"RUNNING\"}");
            last = format!("passes {passes:?}, RUNNING gauge {gauge:?}");
            // At least: an agent counted failed in its wave (ERROR at its
            // first attempt) may have come back RUNNING on the product's
            // retry since.
            if passes.is_some_and(|p| p >= running as f64)
                && gauge.is_some_and(|g| g >= running as f64)
            {
                confirmed = Some(t0.elapsed());
            }
        }
        if health_all.is_none() && Instant::now() >= next_list {
            next_list = Instant::now() + Duration::from_secs(1);
            if all_health_after(fleet, api, wall).await >= running {
                health_all = Some(t0.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = |d: Option<Duration>| {
        d.map_or("not within the timeout".to_owned(), |d| {
            format!("{:.2} s", d.as_secs_f64())
        })
    };
    figures.say(format!(
        "control-plane restart with {running} agents (from the spawn of zcaas serve): /healthz {:.2} s | every agent confirmed RUNNING (zcaas_reconcile_passes_total ≥ {running}: a pass started for each; counted at its start, each takes milliseconds) {} | every agent's /health reached again (lastHealthAt after the restart) {}",
        healthy.as_secs_f64(),
        secs(confirmed),
        secs(health_all)
    ));
    if confirmed.is_none() {
        println!("  last /metrics reading: {last}");
    }
    // Reached through the new process: a message to a sample of agents.
    let sample: Vec<Created> = fleet
        .running()
        .into_iter()
        .step_by((running / 20).max(1))
        .collect();
    let mut failed = Vec::new();
    for agent in &sample {
        let jwt = &fleet.users[agent.user].jwt;
        let path = format!("/api/agents/{}/message", agent.id);
        let body = json!({"message": "hello again after the restart"});
        match post_json(api, &path, jwt, &body).await {
            Ok((200, v)) if v["response"].is_string() => {}
            Ok((status, v)) => failed.push(format!("{}: {status} {v}", agent.id)),
            Err(e) => failed.push(format!("{}: {e:#}", agent.id)),
        }
    }
    figures.say(format!(
        "after the restart: {} of {} sampled agents answered a message through the new process; stats poll period {}",
        sample.len() - failed.len(),
        sample.len(),
        server_metric(api, "zcaas_stats_poll_period_seconds")
            .await
            .map_or("(no such metric)".to_owned(), |p| format!("{p} s"))
    ));
    for f in failed.iter().take(5) {
        println!("  failure: {f}");
    }
    Ok(())
}

/// The value of the series `name` on the server's `/metrics` now.
async fn server_metric(api: &Api, name: &str) -> Option<f64> {
    let res = api.http.get(api.url("/metrics")).send().await.ok()?;
    metric(&res.text().await.ok()?, name)
}

/// The value of the series `name` (exact, labels included) in a
/// Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// How many of the fleet's agents are RUNNING with a `lastHealthAt` after
/// `since`, read from every user's list.
async fn all_health_after(
    fleet: &Fleet<'_>,
    api: &Api,
    since: chrono::DateTime<chrono::Utc>,
) -> usize {
    let mut n = 0;
    for user in &fleet.users {
        let (status, list) = match api
            .http
            .get(api.url("/api/agents"))
            .bearer_auth(&user.jwt)
            .send()
            .await
        {
            Ok(r) => (r.status(), r.json::<Value>().await.unwrap_or_default()),
            Err(_) => return 0,
        };
        if status != 200 {
            return 0;
        }
        n += list
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["status"] == "RUNNING")
                    .filter(|x| {
                        x["lastHealthAt"]
                            .as_str()
                            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                            .is_some_and(|at| at > since)
                    })
                    .count()
            })
            .unwrap_or(0);
    }
    n
}

/// The control plane in this process on the server's configuration file
/// (same data directory, database, labels): waits for it to lead, lets its
/// start-up resync finish, then times `reconcile_all(32)` 5 times.
async fn reconcile_in_process(server: &Server, running: usize) -> anyhow::Result<Vec<f64>> {
    let config = ConfigArgs::default().resolve(FileConfig::read(&server.config_path())?)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app = zcaas::app::App::build(config, listener).await?;
    let result = async {
        let reconciler = &app.state().reconciler;
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = reconciler.reconcile_all(32).await {
            if Instant::now() > deadline {
                bail!("the in-process control plane did not lead within 60 s: {e:#}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut ms = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let n = reconciler.reconcile_all(32).await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            if n < running {
                bail!("reconcile_all saw {n} agents, want {running}");
            }
        }
        ms.sort_by(f64::total_cmp);
        Ok(ms)
    }
    .await;
    app.shutdown().await;
    result
}

/// Deletes every agent the benchmark created, [`DELETE_CONCURRENCY`] at a
/// time, and waits until their containers are gone: (agents, seconds,
/// failures).
async fn delete_all(fleet: &Fleet<'_>, api: &Api) -> (usize, f64, usize) {
    let created = fleet.created.lock().expect("lock").clone();
    println!("\n## teardown: deleting {} agents", created.len());
    let t = Instant::now();
    let failures: usize = futures::stream::iter(&created)
        .map(|agent| async move {
            let jwt = &fleet.users[agent.user].jwt;
            let res = api
                .http
                .delete(api.url(&format!("/api/agents/{}", agent.id)))
                .bearer_auth(jwt)
                .send()
                .await;
            usize::from(!res.is_ok_and(|r| r.status().is_success()))
        })
        .buffer_unordered(DELETE_CONCURRENCY)
        .collect::<Vec<usize>>()
        .await
        .into_iter()
        .sum();
    let filter = format!("label={TEST_LABEL}={}", fleet.prefix);
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let left = docker_cli(&[
            "ps",
            "-aq",
            "--filter",
            &filter,
            "--filter",
            &format!("label={AGENT_ID_LABEL}"),
        ])
        .map(|s| s.lines().count())
        .unwrap_or(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "deleted {} agents in {secs:.1} s = {:.2} agents/s ({DELETE_CONCURRENCY} DELETEs at a time); {failures} DELETEs failed",
        created.len(),
        created.len() as f64 / secs.max(0.001)
    );
    (created.len(), secs, failures)
}

fn print_report(
    fleet: &Fleet<'_>,
    checkpoints: &[Checkpoint],
    figures: &FleetFigures,
    teardown: Option<(usize, f64, usize)>,
) {
    println!("\n# report (paste into BENCHMARKS.md)\n");
    println!("```");
    for line in host::describe_machine() {
        println!("{line}");
    }
    println!("options: {:?}", fleet.opts);
    println!("```\n");
    println!("| agents RUNNING | wave: created, agents/s | POST → RUNNING p50 / p95 (wave) | alone p50 | per-agent PSS: total = agent + shim + fuse-overlayfs + docker-proxy | MemAvailable drop per agent | zcaas VmRSS (PSS) | dockerd / containerd VmRSS | idle CPU (cores): zcaas / dockerd / containerd / shims / agents / machine |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for c in checkpoints {
        let m = &c.memory;
        println!(
            "| {} | {}, {:.2}/s | {:.0} / {:.0} ms | {:.0} ms | **{:.2} MiB** = {:.2} + {:.2} + {:.2} + {:.2} | {:.2} MiB | {:.1} MiB ({:.1}) | {:.1} / {:.1} MiB | {:.3} / {:.3} / {:.3} / {:.3} / {:.3} / {:.2} over {:.0} s |",
            c.running,
            c.wave.created,
            c.wave.created as f64 / c.wave.secs.max(0.001),
            percentile(&c.wave.deploy_ms, 0.5),
            percentile(&c.wave.deploy_ms, 0.95),
            percentile(&c.probe_ms, 0.5),
            m.per_agent_mib(m.total_kib()),
            m.per_agent_mib(m.agent_kib),
            m.per_agent_mib(m.shim_kib),
            m.per_agent_mib(m.overlay_kib),
            m.per_agent_mib(m.proxy_kib),
            c.available_drop_kib / 1024.0,
            mib(c.zcaas_rss_kib),
            mib(c.zcaas_pss_kib),
            mib(c.dockerd_rss_kib),
            mib(c.containerd_rss_kib),
            c.cpu.zcaas,
            c.cpu.dockerd,
            c.cpu.containerd,
            c.cpu.shims,
            c.cpu.agents,
            c.cpu.machine,
            c.cpu.secs
        );
    }
    println!();
    for line in &figures.lines {
        println!("{}", line.trim_start_matches('\n'));
    }
    if let Some((n, secs, failures)) = teardown {
        println!(
            "teardown: {n} agents deleted through the API in {secs:.1} s = {:.2} agents/s; {failures} DELETEs failed",
            n as f64 / secs.max(0.001)
        );
    }
}
