//! HTTP benchmarks of the control plane (DESIGN.md §3, issue 7), against the
//! real engine and a separate release `zcaas serve` process. Not a test: it
//! prints the figures recorded in BENCHMARKS.md. Run (builds everything in
//! release first):
//!
//! ```sh
//! scripts/bench-http.sh            # or: target/x86_64-unknown-linux-gnu/release/examples/bench_http [PARTS…]
//! ```
//!
//! Parts (default: all):
//! - `rss` — VmRSS of the `zcaas` process, idle, with 200 RUNNING agents;
//! - `list` — `GET /api/agents` for a user owning 10 agents, under `wrk -t2
//!   -c32 -d20s` (throughput and p99);
//! - `proxy` — `POST /api/agents/{id}/message` vs the same message straight to
//!   the agent's `/webhook` with its token, 500 of each, interleaved, against
//!   the instant provider stand-in: the difference of the medians is the
//!   proxy's overhead.
//!
//! `ZCAAS_TEST_STORE=postgres` runs the server on a fresh PostgreSQL database
//! (`ZCAAS_TEST_POSTGRES_URL`'s server; `scripts/postgres.sh` starts one)
//! instead of SQLite; `scripts/bench-stores.sh` runs both side by side.
//!
//! `BENCH_ZCAAS_BINARY=<path>` runs another `zcaas` build (one with symbols,
//! to profile). The fleet is deployed once for the parts asked for: 10 agents of the
//! `list` user, plus 190 of an enterprise `fleet` user when `rss` is asked
//! (20 when only `proxy` is). Everything carries `io.zcaas.test=<prefix>`;
//! the agents are deleted through the API at the end, and the harness's
//! [`zcaas_test_support::Cleanup`] removes whatever is left by label, on
//! error and on Ctrl-C too.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use zcaas::secrets::{SecretBox, SecretField};
use zcaas_test_support::host::{self, loadavg, machine_jiffies, pid_of};
use zcaas_test_support::process::{zcaas_command_with, ServerProcess};
use zcaas_test_support::store::TestDatabase;
use zcaas_test_support::{built_binary, docker_cli, Api, World, TEST_LABEL};

/// Agents owned by the user whose list is benchmarked.
const LIST_AGENTS: usize = 10;
/// The whole fleet when `rss` is measured (DESIGN.md §3: 200 agents).
const FLEET: usize = 200;
/// Agents the proxy benchmark spreads its messages over: each agent allows
/// 60 webhooks a minute per client (its default rate limit, a burst of 60),
/// so 20 agents take 2 × (25 + 2 warm-up) messages each.
const PROXY_AGENTS: usize = 20;
/// Messages per path in the proxy benchmark.
const PROXY_N: usize = 500;
const PROXY_WARMUP_PER_AGENT: usize = 2;
/// How long the whole fleet may take to reach RUNNING.
const FLEET_TIMEOUT: Duration = Duration::from_secs(1200);

fn main() -> anyhow::Result<()> {
    let parts: Vec<String> = std::env::args().skip(1).collect();
    let want = |p: &str| parts.is_empty() || parts.iter().any(|a| a == p);
    let (rss, list, proxy) = (want("rss"), want("list"), want("proxy"));
    if !(rss || list || proxy) {
        bail!("unknown parts {parts:?}: expected rss, list and/or proxy");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::select! {
            r = run(rss, list, proxy) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted; cleaning up by label"),
        }
    })
}

/// A built binary of this profile, or a hint to build it.
fn built(name: &str) -> anyhow::Result<PathBuf> {
    built_binary(
        name,
        "run scripts/bench-http.sh (it builds everything first)",
    )
}

/// `zcaas serve` as its own process (release binary), its log in its data
/// directory; killed on drop.
struct Server {
    process: ServerProcess,
    /// The store: SQLite in the data directory, or a fresh PostgreSQL
    /// database with `ZCAAS_TEST_STORE=postgres` (dropped at the end).
    database: TestDatabase,
    data_dir: tempfile::TempDir,
}

impl Server {
    async fn start(world: &World) -> anyhow::Result<Server> {
        let data_dir = tempfile::tempdir()?;
        let log = std::fs::File::create(data_dir.path().join("zcaas.log"))?;
        // BENCH_ZCAAS_BINARY: another build of zcaas (e.g. one with symbols, to profile).
        let binary = match std::env::var_os("BENCH_ZCAAS_BINARY") {
            Some(path) => PathBuf::from(path),
            None => built("zcaas")?,
        };
        let sqlite = format!("sqlite://{}", data_dir.path().join("zcaas.db").display());
        let database = TestDatabase::create(&sqlite).await;
        let mut cmd = zcaas_command_with(&binary, world, data_dir.path());
        cmd.env("RUST_LOG", "info")
            .env("ZCAAS_DATABASE_URL", &database.url)
            .stderr(log);
        let process = match ServerProcess::start_command(cmd, &world.prefix, &world.provider).await
        {
            Ok(process) => process,
            Err(e) => bail!("{e:#}\n{}", log_tail(&data_dir)),
        };
        Ok(Server {
            process,
            database,
            data_dir,
        })
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `VmRSS`, `RssAnon`, `RssFile` (KiB) and `Threads` of the process.
    fn memory(&self) -> anyhow::Result<[u64; 4]> {
        Ok([
            self.process.proc_status("VmRSS")?,
            self.process.proc_status("RssAnon")?,
            self.process.proc_status("RssFile")?,
            self.process.proc_status("Threads")?,
        ])
    }

    fn log_tail(&self) -> String {
        log_tail(&self.data_dir)
    }
}

/// The last 20 lines of the server's log.
fn log_tail(data_dir: &tempfile::TempDir) -> String {
    let text = std::fs::read_to_string(data_dir.path().join("zcaas.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// One deployed agent.
struct Deployed {
    id: String,
    port: u16,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn run(rss: bool, list: bool, proxy: bool) -> anyhow::Result<()> {
    let world = World::start().await;
    println!(
        "prefix {} | store {} | cpus {} | loadavg at start {}",
        world.prefix,
        zcaas_test_support::postgres::test_backend().as_str(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    let server = Server::start(&world).await?;
    let result = benchmarks(&server, rss, list, proxy).await;
    if result.is_err() {
        eprintln!("--- zcaas log tail ---\n{}", server.log_tail());
    }
    drop(server);
    result
    // `world` drops last: its Cleanup removes everything labelled with the prefix.
}

async fn benchmarks(server: &Server, rss: bool, list: bool, proxy: bool) -> anyhow::Result<()> {
    let api = &server.process.api;
    let db = zcaas_test_support::store::raw_pool(&server.database.url).await;
    let lister = api.register("lister").await;
    let fleet_user = api.register("fleet").await;
    sqlx::query("UPDATE users SET plan = 'enterprise'")
        .execute(&db)
        .await?;

    let fleet_size = if rss {
        FLEET - LIST_AGENTS
    } else if proxy {
        PROXY_AGENTS
    } else {
        0
    };
    let list_size = if list || rss { LIST_AGENTS } else { 0 };
    let t = Instant::now();
    let mut ids = Vec::new();
    let mut listed = Vec::new();
    for i in 0..list_size {
        listed.push(create(api, &lister, &format!("{} l{i:02}", api.prefix)).await?);
    }
    let mut fleet = Vec::new();
    for i in 0..fleet_size {
        fleet.push(create(api, &fleet_user, &format!("{} f{i:03}", api.prefix)).await?);
    }
    ids.extend(listed.iter().map(|id| (lister.clone(), id.clone())));
    ids.extend(fleet.iter().map(|id| (fleet_user.clone(), id.clone())));
    let outcome = async {
        let mut deployed = wait_all_running(api, &lister, list_size).await?;
        deployed.extend(wait_all_running(api, &fleet_user, fleet_size).await?);
        println!(
            "fleet: {} agents RUNNING in {:.1} s",
            deployed.len(),
            t.elapsed().as_secs_f64()
        );
        let ports: Vec<u16> = deployed.iter().map(|d| d.port).collect();
        if rss {
            measure_rss(
                server,
                "idle, 200 RUNNING agents, no API traffic yet",
                &ports,
            )
            .await?;
        }
        if list {
            bench_list(server, &lister).await?;
        }
        if proxy {
            let agents: Vec<&Deployed> = deployed
                .iter()
                .filter(|d| fleet.contains(&d.id))
                .take(PROXY_AGENTS)
                .collect();
            bench_proxy(server, &db, &fleet_user, &agents).await?;
        }
        if rss && (list || proxy) {
            measure_rss(server, "idle again, after the list and proxy runs", &ports).await?;
        }
        anyhow::Ok(())
    }
    .await;
    delete_all(api, &ids).await;
    db.close().await;
    outcome
}

async fn create(api: &Api, jwt: &str, name: &str) -> anyhow::Result<String> {
    let (code, body) = api.create_agent(jwt, api.agent_body(name)).await;
    if code != 202 {
        bail!("create {name}: {code} {body}");
    }
    Ok(body["id"].as_str().context("id")?.to_owned())
}

/// Polls the user's list until all `n` agents are RUNNING.
async fn wait_all_running(api: &Api, jwt: &str, n: usize) -> anyhow::Result<Vec<Deployed>> {
    let deadline = Instant::now() + FLEET_TIMEOUT;
    let mut last_report = Instant::now();
    loop {
        let (code, body) = api.list_agents(jwt).await;
        if code != 200 {
            bail!("list: {code} {body}");
        }
        let agents = body.as_array().context("list is an array")?;
        let running: Vec<&Value> = agents.iter().filter(|a| a["status"] == "RUNNING").collect();
        if running.len() == n {
            return running
                .iter()
                .map(|a| {
                    Ok(Deployed {
                        id: a["id"].as_str().context("id")?.to_owned(),
                        port: a["containerPort"]
                            .as_u64()
                            .and_then(|p| u16::try_from(p).ok())
                            .context("containerPort")?,
                    })
                })
                .collect();
        }
        if Instant::now() > deadline {
            let errors: Vec<&Value> = agents
                .iter()
                .filter(|a| a["status"] == "ERROR")
                .map(|a| &a["lastError"])
                .collect();
            bail!(
                "{} of {n} RUNNING after {FLEET_TIMEOUT:?}; errors: {errors:?}",
                running.len()
            );
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            println!("  … {} of {n} RUNNING", running.len());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Count and total RSS (KiB) of the `docker-proxy` processes publishing
/// `ports` (one per published port unless the daemon's userland proxy is off).
fn docker_proxies(ports: &[u16]) -> (usize, u64) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    let mut found = (0, 0);
    for entry in dir.flatten() {
        let path = entry.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.first().is_some_and(|a| a.ends_with("docker-proxy")) {
            continue;
        }
        let port = args
            .iter()
            .position(|a| a == "-host-port")
            .and_then(|i| args.get(i + 1))
            .and_then(|p| p.parse::<u16>().ok());
        if !port.is_some_and(|p| ports.contains(&p)) {
            continue;
        }
        let rss = std::fs::read_to_string(path.join("status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .unwrap_or(0);
        found.0 += 1;
        found.1 += rss;
    }
    found
}

/// Samples the process's memory once a second for 20 s after 15 s of quiet
/// (the reconciler resyncs every 10 s, so a resync falls in the window).
async fn measure_rss(server: &Server, what: &str, ports: &[u16]) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(15)).await;
    let dockerd = pid_of("dockerd");
    let cpu_before = (
        cpu_seconds(server.pid())?,
        dockerd.map(cpu_seconds).transpose()?,
        machine_jiffies(),
    );
    let mut samples = Vec::new();
    for _ in 0..20 {
        samples.push(server.memory()?);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let window = 20.0;
    let zcaas_cpu = (cpu_seconds(server.pid())? - cpu_before.0) / window;
    let dockerd_cpu = match (dockerd, cpu_before.1) {
        (Some(pid), Some(before)) => Some((cpu_seconds(pid)? - before) / window),
        _ => None,
    };
    let busy = {
        let (b0, t0) = cpu_before.2;
        let (b1, t1) = machine_jiffies();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        (b1 - b0) / (t1 - t0).max(1.0) * cpus
    };
    let mut rss: Vec<u64> = samples.iter().map(|s| s[0]).collect();
    rss.sort_unstable();
    let last = samples.last().context("samples")?;
    println!(
        "control-plane RSS ({what}): VmRSS median {:.1} MiB, max {:.1} MiB over 20 s \
         (RssAnon {:.1} MiB, RssFile {:.1} MiB, {} threads) | loadavg {}",
        mib(rss[rss.len() / 2]),
        mib(rss[rss.len() - 1]),
        mib(last[1]),
        mib(last[2]),
        last[3],
        loadavg()
    );
    println!(
        "  CPU over the same 20 s: zcaas {zcaas_cpu:.2} cores, dockerd {}, whole machine {busy:.2} of 2 cores busy",
        dockerd_cpu.map_or("?".to_owned(), |c| format!("{c:.2} cores"))
    );
    let (proxies, proxy_kib) = docker_proxies(ports);
    if proxies > 0 {
        println!(
            "  docker-proxy for these agents' published ports: {proxies} processes, {:.1} MiB RSS in all ({:.2} MiB each)",
            mib(proxy_kib),
            mib(proxy_kib) / proxies as f64
        );
    }
    Ok(())
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    host::cpu_seconds(pid).with_context(|| format!("/proc/{pid}/stat"))
}

/// `wrk -t2 -c32 -d20s` on `GET /api/agents` (after a 3 s warm-up), then
/// the same on `GET /api/me` (authentication and one user lookup, no agent
/// rows): the difference is what listing 10 agents costs.
async fn bench_list(server: &Server, jwt: &str) -> anyhow::Result<()> {
    let api = &server.process.api;
    let (code, body) = api.list_agents(jwt).await;
    let n = body.as_array().map_or(0, Vec::len);
    if code != 200 || n != LIST_AGENTS {
        bail!("GET /api/agents: {code}, {n} agents (want {LIST_AGENTS})");
    }
    for (path, secs) in [("/api/agents", 20), ("/api/me", 20)] {
        let url = api.url(path);
        tokio::task::block_in_place(|| host::wrk(server.pid(), &url, jwt, 3))?;
        let load = loadavg();
        let run = tokio::task::block_in_place(|| host::wrk(server.pid(), &url, jwt, secs))?;
        println!(
            "wrk -t2 -c32 -d{secs}s --latency GET {path} ({LIST_AGENTS} agents) | loadavg before {load}"
        );
        for line in run.output.lines() {
            println!("  {line}");
        }
        println!(
            "GET {path}: {} req/s, p50 {}, p99 {} | CPU: zcaas {:.2} cores, wrk {:.2}, everything else {:.2} (of 2)",
            run.rps,
            run.p50,
            run.p99,
            run.server_cpu / run.seconds,
            run.wrk_cpu / run.seconds,
            ((run.machine_cpu - run.server_cpu - run.wrk_cpu) / run.seconds).max(0.0)
        );
    }
    Ok(())
}

/// The proxy's overhead: the same message through the control plane and
/// straight to the agent, interleaved, round-robin over `agents`.
async fn bench_proxy(
    server: &Server,
    db: &sqlx::AnyPool,
    jwt: &str,
    agents: &[&Deployed],
) -> anyhow::Result<()> {
    if agents.len() < PROXY_AGENTS {
        bail!(
            "{} agents for the proxy benchmark, want {PROXY_AGENTS}",
            agents.len()
        );
    }
    let keys = SecretBox::load(&server.data_dir.path().join("master.key"))?;
    let mut targets = Vec::new();
    for a in agents {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT encrypted_token FROM agents WHERE id = $1")
                .bind(&a.id)
                .fetch_one(db)
                .await?;
        let token = keys.decrypt(&a.id, SecretField::Token, &stored.context("no token")?)?;
        targets.push((
            a.id.clone(),
            format!("http://127.0.0.1:{}/webhook", a.port),
            token,
        ));
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let api = &server.process.api;
    let via_proxy = |id: &str, text: String| {
        let req = http
            .post(api.url(&format!("/api/agents/{id}/message")))
            .bearer_auth(jwt)
            .json(&json!({ "message": text }));
        timed(req)
    };
    let direct = |url: &str, token: &str, text: String| {
        let req = http
            .post(url)
            .bearer_auth(token)
            .json(&json!({ "message": text }));
        timed(req)
    };
    for (i, (id, url, token)) in targets
        .iter()
        .cycle()
        .take(PROXY_WARMUP_PER_AGENT * targets.len())
        .enumerate()
    {
        via_proxy(id, format!("warm-up {i}")).await?;
        direct(url, token, format!("warm-up {i}")).await?;
    }
    let load = loadavg();
    let (mut proxied, mut straight) = (Vec::new(), Vec::new());
    for (i, (id, url, token)) in targets.iter().cycle().take(PROXY_N).enumerate() {
        // Alternate which path goes first, so neither always meets a warm agent.
        if i % 2 == 0 {
            proxied.push(via_proxy(id, format!("message {i}")).await?);
            straight.push(direct(url, token, format!("message {i}")).await?);
        } else {
            straight.push(direct(url, token, format!("message {i}")).await?);
            proxied.push(via_proxy(id, format!("message {i}")).await?);
        }
    }
    proxied.sort_by(f64::total_cmp);
    straight.sort_by(f64::total_cmp);
    let line = |name: &str, v: &[f64]| {
        println!(
            "  {name:<28} p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms",
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 0.99)
        )
    };
    println!(
        "message proxy: n={PROXY_N} per path over {} agents, interleaved | loadavg before {load}",
        targets.len()
    );
    line("POST /api/agents/{id}/message", &proxied);
    line("POST <agent>/webhook", &straight);
    println!(
        "  overhead p50 {:.3} ms",
        percentile(&proxied, 0.5) - percentile(&straight, 0.5)
    );
    Ok(())
}

/// Sends `req`, checks for a 200 with a `response`, returns milliseconds.
async fn timed(req: reqwest::RequestBuilder) -> anyhow::Result<f64> {
    let t = Instant::now();
    let res = req.send().await?;
    let status = res.status();
    let body: Value = res.json().await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if status != 200 || !body["response"].is_string() {
        bail!("message: {status} {body}");
    }
    Ok(ms)
}

/// Deletes every agent through the API and waits until their containers
/// are gone (the harness's label cleanup is the safety net).
async fn delete_all(api: &Api, ids: &[(String, String)]) {
    for chunk in ids.chunks(20) {
        futures::future::join_all(
            chunk
                .iter()
                .map(|(jwt, id)| async move { api.delete_agent(jwt, id).await }),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let filter = format!("label={TEST_LABEL}={}", api.prefix);
    while Instant::now() < deadline {
        let left = docker_cli(&[
            "ps",
            "-aq",
            "--filter",
            &filter,
            "--filter",
            "label=io.zcaas.agent-id",
        ])
        .map(|s| s.lines().count())
        .unwrap_or(0);
        if left == 0 {
            println!("all agents deleted");
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("agents still present after 300 s; the label cleanup removes them");
}
