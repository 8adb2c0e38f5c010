//! The HA takeover time (issue 14): two `zcaas serve` replicas on one fresh
//! PostgreSQL database; the leader is SIGKILLed, and the time until the
//! standby's `/healthz` says `"reconciler": "leader"` is measured (polled
//! every 20 ms). The killed replica is started again as the new standby,
//! and this repeats. A second figure: an agent created through the standby
//! while the leader is killed right after, from the kill to the agent's
//! RUNNING (the new leader finishes the deploy). Not a test: it prints the
//! figures recorded in BENCHMARKS.md. Run (builds everything in release
//! first; scripts/postgres.sh starts the server):
//!
//! ```sh
//! scripts/bench-ha.sh            # or: target/…/release/examples/bench_ha [ROUNDS]
//! ```
//!
//! Everything it creates carries `io.zcaas.test=<prefix>` and is removed by
//! label at the end (the [`World`]'s cleanup); the database is dropped.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;
use zcaas_test_support::postgres::TestDatabase;
use zcaas_test_support::process::{zcaas_command_with, ServerProcess};
use zcaas_test_support::{built_binary, Api, World};

/// Kill/takeover rounds by default.
const ROUNDS: usize = 10;
/// Longest wait for a takeover before the run fails (the target is 10 s).
const GIVE_UP: Duration = Duration::from_secs(30);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(name: &str, mut s: Vec<f64>) {
    s.sort_by(f64::total_cmp);
    println!(
        "{name}: n={} min {:.2} s  p50 {:.2} s  max {:.2} s",
        s.len(),
        s[0],
        percentile(&s, 0.5),
        s[s.len() - 1]
    );
}

/// A replica of the release `zcaas` on `db` and the shared `data` directory.
async fn replica(
    world: &World,
    db: &TestDatabase,
    data: &std::path::Path,
) -> anyhow::Result<ServerProcess> {
    let binary = built_binary(
        "zcaas",
        "run scripts/bench-ha.sh (it builds everything first)",
    )?;
    let mut cmd = zcaas_command_with(&binary, world, data);
    cmd.env("ZCAAS_DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null());
    ServerProcess::start_command(cmd, &world.prefix, &world.provider).await
}

async fn role(api: &Api) -> Option<String> {
    let res = api.http.get(api.url("/healthz")).send().await.ok()?;
    let h: Value = res.json().await.ok()?;
    h["reconciler"].as_str().map(str::to_owned)
}

/// Polls until `api` leads; the time it took.
async fn wait_leader(api: &Api) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if role(api).await.as_deref() == Some("leader") {
            return Ok(start.elapsed());
        }
        if start.elapsed() > GIVE_UP {
            bail!("no takeover within {GIVE_UP:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rounds = match std::env::args().nth(1) {
        Some(n) => n.parse().context("ROUNDS: a number")?,
        None => ROUNDS,
    };
    let world = World::start().await;
    let db = TestDatabase::create_postgres().await;
    let data = tempfile::tempdir()?;
    println!(
        "machine: {} cores; date {}; lease_ttl_secs 6 (default); rounds {rounds}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        chrono::Utc::now().format("%Y-%m-%d")
    );
    // The first replica makes the keys in the shared data directory.
    let mut replicas = vec![replica(&world, &db, data.path()).await?];
    replicas.push(replica(&world, &db, data.path()).await?);

    let mut takeovers = Vec::new();
    for _ in 0..rounds {
        let leader = if role(&replicas[0]).await.as_deref() == Some("leader") {
            0
        } else {
            1
        };
        let standby = 1 - leader;
        if role(&replicas[standby]).await.as_deref() != Some("standby") {
            bail!("expected one leader and one standby");
        }
        replicas[leader].kill();
        let took = wait_leader(&replicas[standby]).await?;
        takeovers.push(took.as_secs_f64());
        replicas[leader] = replica(&world, &db, data.path()).await?;
    }
    summary(
        "takeover after SIGKILL of the leader (standby's /healthz says leader)",
        takeovers,
    );

    // A deploy in flight: created through the standby, leader killed at once.
    let mut finished = Vec::new();
    let jwt = replicas[0].register("ha-bench").await;
    for i in 0..3 {
        let leader = if role(&replicas[0]).await.as_deref() == Some("leader") {
            0
        } else {
            1
        };
        let standby = 1 - leader;
        let (code, body) = replicas[standby]
            .create_agent(&jwt, replicas[standby].agent_body(&format!("ha bench {i}")))
            .await;
        if code != 202 {
            bail!("create: {code} {body}");
        }
        let id = body["id"].as_str().context("id")?.to_owned();
        let killed = Instant::now();
        replicas[leader].kill();
        replicas[standby]
            .wait_status(&jwt, &id, &["RUNNING"], Duration::from_secs(120))
            .await;
        finished.push(killed.elapsed().as_secs_f64());
        let (code, _) = replicas[standby].delete_agent(&jwt, &id).await;
        if code != 204 {
            bail!("delete: {code}");
        }
        replicas[leader] = replica(&world, &db, data.path()).await?;
    }
    summary(
        "leader SIGKILLed right after a create on the standby → RUNNING",
        finished,
    );
    drop(replicas);
    Ok(())
}
