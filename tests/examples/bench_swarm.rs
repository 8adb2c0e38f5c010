//! The Swarm backend's deploy figures (issue 15) beside the Docker
//! backend's, measured in one run on this machine. Not a test: it prints
//! figures for BENCHMARKS.md. Root only (the swarm harness creates network
//! namespaces). Run (builds everything in release first):
//!
//! ```sh
//! scripts/bench-swarm.sh      # or: cargo run --release -p zcaas-tests --example bench_swarm -- [--runs N]
//! ```
//!
//! - POST /api/agents → RUNNING, one agent at a time, `--runs N` (default
//!   10) each, interleaved round-robin: (a) the Docker backend on the
//!   machine's engine, (b) the swarm backend on a one-node swarm, (c) the
//!   swarm backend on a three-node swarm; each agent deleted (and gone)
//!   before the next backend's turn. With the mean of each deploy phase
//!   (`zcaas_deploy_phase_duration_seconds`).
//! - 50 concurrent creates on the three-node swarm (all POSTed at once):
//!   time until each is RUNNING, how many did, their spread over the
//!   nodes; then the same 50 on the Docker backend (skip with
//!   `--no-docker-concurrent`). `--max-deploys N` sets
//!   `max_concurrent_deploys` on every app (default: the config's).
//!
//! Everything is removed at the end, also after a failed step: agents
//! deleted, apps shut down, both swarms torn down and
//! `swarm::leftovers(tag)` checked empty.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;
use zcaas_test_support::api::phase_means;
use zcaas_test_support::swarm::{self, SwarmCluster};
use zcaas_test_support::swarm_world::SwarmWorld;
use zcaas_test_support::{docker_cli, Api, TestApp};

/// Until one agent settles (RUNNING or ERROR).
const TIMEOUT: Duration = Duration::from_secs(300);
/// Until a deleted agent's record is gone.
const DELETE_TIMEOUT: Duration = Duration::from_secs(120);

struct Options {
    runs: usize,
    docker_concurrent: bool,
    max_deploys: Option<usize>,
}

fn options() -> anyhow::Result<Options> {
    let mut opts = Options {
        runs: 10,
        docker_concurrent: true,
        max_deploys: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => opts.runs = args.next().context("--runs N")?.parse()?,
            "--max-deploys" => {
                opts.max_deploys = Some(args.next().context("--max-deploys N")?.parse()?)
            }
            "--no-docker-concurrent" => opts.docker_concurrent = false,
            other => bail!(
                "unknown argument {other:?} (--runs N, --max-deploys N, --no-docker-concurrent)"
            ),
        }
    }
    anyhow::ensure!(opts.runs > 0, "--runs must be at least 1");
    Ok(opts)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Prints n, p50, p95, min, max and the values in run order; returns p50.
fn summary(name: &str, ms: &[f64]) -> f64 {
    let mut sorted = ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let p50 = percentile(&sorted, 0.5);
    println!(
        "{name}: n={} p50 {p50:.0} ms  p95 {:.0} ms  min {:.0} ms  max {:.0} ms",
        ms.len(),
        percentile(&sorted, 0.95),
        sorted[0],
        sorted[sorted.len() - 1]
    );
    let runs: Vec<String> = ms.iter().map(|m| format!("{m:.0}")).collect();
    println!("  in run order: {}", runs.join(" "));
    p50
}

async fn enterprise_user(app: &TestApp, name: &str) -> anyhow::Result<String> {
    let jwt = app.register(name).await;
    sqlx::query("UPDATE users SET plan = 'enterprise'")
        .execute(app.sql())
        .await?;
    Ok(jwt)
}

async fn create(api: &Api, jwt: &str, name: &str) -> anyhow::Result<String> {
    let (code, body) = api.create_agent(jwt, api.agent_body(name)).await;
    if code != 202 {
        bail!("create {name}: {code} {body}");
    }
    Ok(body["id"].as_str().context("id")?.to_owned())
}

/// Deletes every agent of `ids`, ten at a time, and waits until their
/// records are gone (404); returns those still there at the deadline.
async fn delete_all(api: &Api, jwt: &str, ids: &[String]) -> Vec<String> {
    for chunk in ids.chunks(10) {
        futures::future::join_all(chunk.iter().map(|id| api.delete_agent(jwt, id))).await;
    }
    let deadline = Instant::now() + DELETE_TIMEOUT;
    let mut left: Vec<String> = ids.to_vec();
    while !left.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in left {
            let url = api.url(&format!("/api/agents/{id}"));
            match api.http.get(url).bearer_auth(jwt).send().await {
                Ok(res) if res.status() == reqwest::StatusCode::NOT_FOUND => {}
                _ => still.push(id),
            }
        }
        left = still;
        if !left.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    left
}

/// One backend under test: its app, user, and (for a swarm) its cluster.
struct Backend<'a> {
    name: &'static str,
    app: &'a TestApp,
    jwt: String,
    cluster: Option<&'a SwarmCluster>,
}

/// One POST → RUNNING; the agent is deleted and gone before returning.
async fn one_deploy(b: &Backend<'_>, name: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let id = create(b.app, &b.jwt, name).await?;
    let agent = b
        .app
        .wait_status(&b.jwt, &id, &["RUNNING", "ERROR"], TIMEOUT)
        .await;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let left = delete_all(b.app, &b.jwt, std::slice::from_ref(&id)).await;
    if agent["status"] != "RUNNING" {
        bail!(
            "{}: {name} ended {}: {}",
            b.name,
            agent["status"],
            agent["lastError"]
        );
    }
    if !left.is_empty() {
        bail!(
            "{}: {name} not gone {DELETE_TIMEOUT:?} after DELETE",
            b.name
        );
    }
    Ok(ms)
}

async fn sequential(backends: &[Backend<'_>], runs: usize) -> anyhow::Result<()> {
    println!("== POST /api/agents -> RUNNING, one at a time, {runs} runs each, round-robin");
    let mut before = Vec::new();
    for b in backends {
        before.push(b.app.deploy_phases().await);
    }
    let mut ms: Vec<Vec<f64>> = vec![Vec::new(); backends.len()];
    for i in 0..runs {
        for (k, b) in backends.iter().enumerate() {
            ms[k].push(one_deploy(b, &format!("seq {i}")).await?);
        }
    }
    let mut p50s = Vec::new();
    for (k, b) in backends.iter().enumerate() {
        p50s.push(summary(&format!("POST -> RUNNING, {}", b.name), &ms[k]));
        let after = b.app.deploy_phases().await;
        println!(
            "  deploy phases, mean ms: {}",
            phase_means(&before[k], &after)
        );
    }
    for (k, b) in backends.iter().enumerate().skip(1) {
        println!(
            "ratio {} / {} at p50: {:.2}x",
            b.name,
            backends[0].name,
            p50s[k] / p50s[0]
        );
    }
    Ok(())
}

/// Node index → how many of `services`' running tasks are on it.
fn spread(cluster: &SwarmCluster, services: &[String]) -> anyhow::Result<BTreeMap<usize, usize>> {
    let names: Vec<&str> = services.iter().map(String::as_str).collect();
    let mut per_node = BTreeMap::new();
    for t in cluster
        .tasks(&names, None)?
        .iter()
        .filter(|t| t.state == "running")
    {
        let node = t.node.context("a task on a node outside the cluster")?;
        *per_node.entry(node).or_default() += 1;
    }
    Ok(per_node)
}

/// 50 creates POSTed at once; each timed from the common start to RUNNING.
async fn concurrent(b: &Backend<'_>) -> anyhow::Result<()> {
    const N: usize = 50;
    println!("== {N} concurrent creates, {}", b.name);
    let before = b.app.deploy_phases().await;
    let t0 = Instant::now();
    let creates = (0..N).map(|i| async move {
        let id = create(b.app, &b.jwt, &format!("bulk {i}")).await?;
        let agent = b
            .app
            .wait_status(&b.jwt, &id, &["RUNNING", "ERROR"], TIMEOUT)
            .await;
        anyhow::Ok((id, agent, t0.elapsed().as_secs_f64() * 1000.0))
    });
    let results: Vec<anyhow::Result<(String, Value, f64)>> =
        futures::future::join_all(creates).await;
    let wall = t0.elapsed().as_secs_f64();
    let mut ids = Vec::new();
    let mut done = Vec::new();
    let mut errors = Vec::new();
    let mut slugs = Vec::new();
    for r in results {
        match r {
            Ok((id, agent, ms)) => {
                ids.push(id);
                if agent["status"] == "RUNNING" {
                    done.push(ms);
                    slugs.push(format!("zeroclaw-{}", agent["slug"].as_str().unwrap_or("")));
                } else {
                    errors.push(format!("{}: {}", agent["status"], agent["lastError"]));
                }
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    println!(
        "{N} concurrent creates, {}: {}/{N} RUNNING, all settled in {wall:.1} s",
        b.name,
        done.len()
    );
    for e in &errors {
        println!("  not RUNNING: {e}");
    }
    if !done.is_empty() {
        let mut sorted = done.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "  POST -> RUNNING: p50 {:.0} ms  p95 {:.0} ms  max {:.0} ms  (min {:.0} ms)",
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.95),
            sorted[sorted.len() - 1],
            sorted[0]
        );
    }
    let after = b.app.deploy_phases().await;
    println!("  deploy phases, mean ms: {}", phase_means(&before, &after));
    if let Some(cluster) = b.cluster {
        match spread(cluster, &slugs) {
            Ok(per_node) => {
                let text: Vec<String> = per_node
                    .iter()
                    .map(|(node, n)| format!("n{} {n}", node + 1))
                    .collect();
                println!("  running tasks per node: {}", text.join(", "));
            }
            Err(e) => println!("  running tasks per node: unknown ({e:#})"),
        }
    }
    let t = Instant::now();
    let left = delete_all(b.app, &b.jwt, &ids).await;
    println!(
        "  {} deleted in {:.1} s{}",
        ids.len(),
        t.elapsed().as_secs_f64(),
        if left.is_empty() {
            String::new()
        } else {
            format!(", {} not gone", left.len())
        }
    );
    if !errors.is_empty() {
        bail!("{}: {} of {N} not RUNNING", b.name, errors.len());
    }
    Ok(())
}

async fn measure(
    opts: &Options,
    docker: &TestApp,
    one: (&TestApp, &SwarmWorld),
    three: (&TestApp, &SwarmWorld),
) -> anyhow::Result<()> {
    let backends = [
        Backend {
            name: "docker backend (machine's engine)",
            app: docker,
            jwt: enterprise_user(docker, "bench-docker").await?,
            cluster: None,
        },
        Backend {
            name: "swarm backend, 1 node",
            app: one.0,
            jwt: enterprise_user(one.0, "bench-swarm1").await?,
            cluster: Some(&one.1.cluster),
        },
        Backend {
            name: "swarm backend, 3 nodes",
            app: three.0,
            jwt: enterprise_user(three.0, "bench-swarm3").await?,
            cluster: Some(&three.1.cluster),
        },
    ];
    let t = Instant::now();
    sequential(&backends, opts.runs).await?;
    println!("(sequential part: {:.0} s)", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let swarm = concurrent(&backends[2]).await;
    println!(
        "(swarm concurrent part: {:.0} s)",
        t.elapsed().as_secs_f64()
    );
    if opts.docker_concurrent {
        let t = Instant::now();
        concurrent(&backends[0]).await?;
        println!(
            "(docker concurrent part: {:.0} s)",
            t.elapsed().as_secs_f64()
        );
    }
    swarm
}

/// Tears a swarm world down and checks nothing of it is left.
fn teardown(world: SwarmWorld) -> anyhow::Result<()> {
    let tag = world.tag().to_owned();
    let t = Instant::now();
    world.shutdown()?;
    let left = swarm::leftovers(&tag);
    println!(
        "swarm {tag} torn down in {:.1} s, leftovers {left:?}",
        t.elapsed().as_secs_f64()
    );
    anyhow::ensure!(left.is_empty(), "{tag} left: {left:?}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = options()?;
    if let Some(why) = swarm::unsupported() {
        bail!("the swarm harness cannot run here: {why}");
    }
    let started = Instant::now();
    println!(
        "machine: {} cores; date {}; engine {}; runs {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        docker_cli(&["version", "-f", "{{.Server.Version}}"]).unwrap_or_default(),
        opts.runs
    );
    let max = opts.max_deploys;
    let tweak = move |c: &mut zcaas::config::Config| {
        if let Some(n) = max {
            c.max_concurrent_deploys = n;
        }
    };
    let mut docker = TestApp::in_world_with(tweak).await;
    println!(
        "max_concurrent_deploys: {}",
        docker.config.max_concurrent_deploys
    );
    let t = Instant::now();
    let one = SwarmWorld::start(1).await.context("the one-node swarm")?;
    println!(
        "one-node swarm {} up in {:.1} s",
        one.tag(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let three = match SwarmWorld::start(3).await {
        Ok(w) => w,
        Err(e) => {
            let _ = teardown(one);
            return Err(e.context("the three-node swarm"));
        }
    };
    println!(
        "three-node swarm {} up in {:.1} s",
        three.tag(),
        t.elapsed().as_secs_f64()
    );
    let mut app1 = TestApp::in_swarm(&one, tweak).await;
    let mut app3 = TestApp::in_swarm(&three, tweak).await;

    let result = measure(&opts, &docker, (&app1, &one), (&app3, &three)).await;
    if let Err(e) = &result {
        println!("measurement failed: {e:#}");
    }

    app1.shutdown().await;
    app3.shutdown().await;
    docker.shutdown().await;
    drop((app1, app3, docker));
    let down = [teardown(one), teardown(three)];
    println!("total run time {:.0} s", started.elapsed().as_secs_f64());
    result?;
    for d in down {
        d?;
    }
    Ok(())
}
