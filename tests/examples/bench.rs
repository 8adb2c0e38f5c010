//! Benchmarks of DESIGN.md §3 against the real engine. Not a test: it prints
//! figures for BENCHMARKS.md. Run (builds everything in release first):
//!
//! ```sh
//! scripts/bench.sh            # or: cargo run --release -p zcaas-tests --example bench -- [PARTS…]
//! ```
//!
//! Parts (default: all): `deploy` (POST → RUNNING, 20 runs), `pipeline` (our
//! inject-before-start deploy vs the seed's start-sleep-inject-restart, 20
//! runs each, interleaved, on the same engine), `concurrent` (50 creates at
//! once), `repair` (docker restart → new token stored, 10 runs), `reconcile`
//! (a full reconcile pass over 200 running agents), and — only when named —
//! `stock` (our runtime vs the stock upstream runtime, zeroclawlabs 0.6.9,
//! side by side: POST → RUNNING, restart, stop; 10 rounds interleaved; the
//! stock image is built by `scripts/build-stock-zeroclaw-image.sh`, once per
//! machine).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;
use zcaas::docker::{ContainerSpec, DockerRuntime};
use zcaas::gateway::GatewayClient;
use zcaas_test_support::{docker_cli, docker_inspect, free_port, TestApp, AGENT_IMAGE};

const TIMEOUT: Duration = Duration::from_secs(300);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(name: &str, mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let (p50, p95) = (percentile(&ms, 0.5), percentile(&ms, 0.95));
    println!(
        "{name}: n={} p50 {p50:.0} ms  p95 {p95:.0} ms  min {:.0} ms  max {:.0} ms",
        ms.len(),
        ms[0],
        ms[ms.len() - 1]
    );
    (p50, p95)
}

async fn enterprise_user(env: &TestApp, name: &str) -> anyhow::Result<String> {
    let jwt = env.register(name).await;
    sqlx::query("UPDATE users SET plan = 'enterprise'")
        .execute(env.sql())
        .await?;
    Ok(jwt)
}

async fn create(env: &TestApp, jwt: &str, name: &str) -> anyhow::Result<String> {
    let (code, body) = env.create_agent(jwt, env.agent_body(name)).await;
    if code != 202 {
        bail!("create {name}: {code} {body}");
    }
    Ok(body["id"].as_str().context("id")?.to_owned())
}

async fn delete_all(env: &TestApp, jwt: &str, ids: &[String]) {
    for chunk in ids.chunks(10) {
        futures::future::join_all(chunk.iter().map(|id| env.delete_agent(jwt, id))).await;
    }
}

/// POST /api/agents → RUNNING, one agent at a time.
async fn deploy(env: &TestApp) -> anyhow::Result<()> {
    let jwt = enterprise_user(env, "bench-deploy").await?;
    let mut ms = Vec::new();
    let mut ids = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let id = create(env, &jwt, &format!("deploy {i}")).await?;
        env.wait_status(&jwt, &id, &["RUNNING"], TIMEOUT).await;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        ids.push(id);
    }
    summary("POST /api/agents -> RUNNING (one at a time)", ms);
    delete_all(env, &jwt, &ids).await;
    Ok(())
}

/// One deploy straight on the runtime, our way or the seed's way; returns ms.
async fn pipeline_once(env: &TestApp, seed_way: bool, i: usize) -> anyhow::Result<f64> {
    let docker: &DockerRuntime = &env.world().docker;
    let gateway = GatewayClient::new();
    let name = format!(
        "{}-pipe-{}-{i}",
        env.prefix,
        if seed_way { "seed" } else { "ours" }
    );
    let port = free_port()?;
    let mut labels = docker.ownership_labels();
    labels.insert("io.zcaas.agent-id".into(), name.clone());
    let spec = ContainerSpec {
        agent_id: name.clone(),
        name: name.clone(),
        slug: name.clone(),
        image: AGENT_IMAGE.into(),
        network: env.config.network.clone(),
        host_port: Some(port),
        memory_bytes: 256 << 20,
        nano_cpus: 1_000_000_000,
        command: zcaas::runtime_profile::RuntimeProfile::Zcaas.command(),
        env: zcaas::runtime_profile::RuntimeProfile::Zcaas.env(),
        volume: format!("{name}-data"),
        host: format!("{name}.bench"),
        traefik_entrypoint: "websecure".into(),
        traefik_cert_resolver: "le".into(),
        public_paths: vec!["/webhook".into(), "/health".into()],
        spec_hash: "bench".into(),
        labels,
    };
    let files = vec![
        zcaas::docker::FileEntry {
            path: ".zeroclaw/config.toml".into(),
            contents: format!("default_provider = \"{}\"\ndefault_model = \"m\"\napi_key = \"k\"\n[memory]\nbackend = \"sqlite\"\nauto_save = true\n[gateway]\nport = 42617\nhost = \"0.0.0.0\"\nallow_public_bind = true\n", env.provider).into_bytes(),
            mode: 0o600,
        },
        zcaas::docker::FileEntry { path: "workspace/IDENTITY.md".into(), contents: b"# Bench\n".to_vec(), mode: 0o644 },
    ];
    let base = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    let id = docker.create_container(&spec).await?;
    let since = if seed_way {
        // Seed 003: start, sleep 500 ms, inject, restart, then scrape.
        docker.start(&id).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        docker.upload_files(&id, &files).await?;
        docker.restart(&id, Duration::from_secs(10)).await?;
        docker
            .inspect(&id)
            .await?
            .and_then(|c| c.started_at)
            .context("started_at")?
    } else {
        docker.upload_files(&id, &files).await?;
        docker.start(&id).await?;
        docker
            .inspect(&id)
            .await?
            .and_then(|c| c.started_at)
            .context("started_at")?
    };
    let code =
        zcaas::reconciler::pairing::wait_for_code(docker, &id, since, Duration::from_secs(30))
            .await?
            .context("no pairing code")?;
    let mut token = None;
    for _ in 0..100 {
        match gateway.pair(&base, &code).await {
            Ok(t) => {
                token = Some(t);
                break;
            }
            Err(zcaas::gateway::GatewayError::Unreachable(_)) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => bail!("pair: {e}"),
        }
    }
    token.context("never paired")?;
    while gateway.health(&base).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    docker.remove_container(&id).await?;
    docker.remove_volume(&spec.volume).await?;
    Ok(ms)
}

async fn pipeline(env: &TestApp) -> anyhow::Result<()> {
    let (mut ours, mut seed) = (Vec::new(), Vec::new());
    for i in 0..20 {
        ours.push(pipeline_once(env, false, i).await?);
        seed.push(pipeline_once(env, true, i).await?);
    }
    let (ours50, _) = summary("deploy pipeline, inject before the only start (ours)", ours);
    let (seed50, _) = summary(
        "deploy pipeline, start-sleep-inject-restart (seed 003)",
        seed,
    );
    println!("ratio seed/ours at p50: {:.2}x", seed50 / ours50);
    Ok(())
}

async fn concurrent(env: &TestApp) -> anyhow::Result<()> {
    let jwt = enterprise_user(env, "bench-bulk").await?;
    let t0 = Instant::now();
    let creates = (0..50).map(|i| {
        let jwt = jwt.clone();
        async move {
            let id = create(env, &jwt, &format!("bulk {i}")).await?;
            let agent = env
                .wait_status(&jwt, &id, &["RUNNING", "ERROR"], TIMEOUT)
                .await;
            anyhow::Ok((id, agent, t0.elapsed().as_secs_f64() * 1000.0))
        }
    });
    let results: Vec<(String, Value, f64)> = futures::future::join_all(creates)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let running = results
        .iter()
        .filter(|r| r.1["status"] == "RUNNING")
        .count();
    let ports: std::collections::HashSet<_> = results
        .iter()
        .map(|r| r.1["containerPort"].to_string())
        .collect();
    let names: std::collections::HashSet<_> =
        results.iter().map(|r| r.1["slug"].to_string()).collect();
    println!(
        "50 concurrent creates: {running}/50 RUNNING, port collisions {}, name collisions {}, all done in {:.1} s",
        50 - ports.len(),
        50 - names.len(),
        t0.elapsed().as_secs_f64()
    );
    summary(
        "50 concurrent creates, POST -> RUNNING",
        results.iter().map(|r| r.2).collect(),
    );
    let ids: Vec<String> = results.into_iter().map(|r| r.0).collect();
    delete_all(env, &jwt, &ids).await;
    Ok(())
}

async fn repair(env: &TestApp) -> anyhow::Result<()> {
    let jwt = enterprise_user(env, "bench-repair").await?;
    let id = create(env, &jwt, "repair bench").await?;
    env.wait_status(&jwt, &id, &["RUNNING"], TIMEOUT).await;
    let db = &env.app().state().store;
    let mut ms = Vec::new();
    for _ in 0..10 {
        docker_cli(&["restart", "-t", "1", "zeroclaw-repair-bench"])?;
        let c = docker_inspect("zeroclaw-repair-bench").context("inspect")?;
        let started: chrono::DateTime<chrono::Utc> = c["State"]["StartedAt"]
            .as_str()
            .context("StartedAt")?
            .parse()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let agent = db.lifecycle().get(&id).await?.context("row")?;
            if agent.paired_started_at.is_some_and(|p| p >= started) {
                let stored = chrono::Utc::now();
                ms.push((stored - started).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                break;
            }
            if Instant::now() > deadline {
                bail!("not re-paired within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    summary("container started -> new token stored (docker restart)", ms);
    delete_all(env, &jwt, &[id]).await;
    Ok(())
}

async fn reconcile(env: &TestApp) -> anyhow::Result<()> {
    let jwt = enterprise_user(env, "bench-reconcile").await?;
    let mut ids = Vec::new();
    let t = Instant::now();
    for batch in 0..10 {
        let creates = (0..20).map(|i| {
            let jwt = &jwt;
            async move { create(env, jwt, &format!("fleet {batch} {i}")).await }
        });
        for id in futures::future::join_all(creates).await {
            ids.push(id?);
        }
    }
    for id in &ids {
        env.wait_status(&jwt, id, &["RUNNING"], TIMEOUT).await;
    }
    println!(
        "200 agents RUNNING after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let reconciler = &env.app().state().reconciler;
    let mut ms = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let n = reconciler.reconcile_all(32).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(n, 200);
    }
    summary("full reconcile pass over 200 running agents", ms);
    delete_all(env, &jwt, &ids).await;
    Ok(())
}

/// One round on `env`'s runtime: POST → RUNNING, then `POST …/restart` →
/// RUNNING with a new token, then `POST …/stop` → STOPPED (exit code
/// checked: 0, not the SIGKILL of the stop timeout). Returns the three
/// durations in ms; the agent is deleted.
async fn lifecycle_round(env: &TestApp, jwt: &str, name: &str) -> anyhow::Result<[f64; 3]> {
    let t = Instant::now();
    let id = create(env, jwt, name).await?;
    env.wait_status(jwt, &id, &["RUNNING"], TIMEOUT).await;
    let deploy = t.elapsed().as_secs_f64() * 1000.0;
    let token = env.stored_token(&id).await;
    let t = Instant::now();
    env.restart(jwt, &id).await;
    env.wait_repaired(jwt, &id, &token, TIMEOUT).await;
    let restart = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    env.stop(jwt, &id).await;
    let agent = env.wait_status(jwt, &id, &["STOPPED"], TIMEOUT).await;
    let stop = t.elapsed().as_secs_f64() * 1000.0;
    let container = agent["containerId"].as_str().unwrap_or_default().to_owned();
    if let Some(c) = docker_inspect(&container) {
        if c["State"]["ExitCode"] != 0 {
            bail!("{name}: stopped with {}", c["State"]["ExitCode"]);
        }
    }
    env.delete_agent(jwt, &id).await;
    Ok([deploy, restart, stop])
}

/// Our runtime and the stock upstream one, interleaved round by round.
async fn stock(ours: &TestApp) -> anyhow::Result<()> {
    let image = zcaas_test_support::ensure_stock_image().await;
    let mut upstream = TestApp::in_world_with(|c| c.runtime_image = image.clone()).await;
    let (jwt_ours, jwt_stock) = (
        enterprise_user(ours, "bench-ours").await?,
        enterprise_user(&upstream, "bench-stock").await?,
    );
    let (mut a, mut b) = ([vec![], vec![], vec![]], [vec![], vec![], vec![]]);
    for i in 0..10 {
        for (k, ms) in lifecycle_round(ours, &jwt_ours, &format!("ours {i}"))
            .await?
            .into_iter()
            .enumerate()
        {
            a[k].push(ms);
        }
        for (k, ms) in lifecycle_round(&upstream, &jwt_stock, &format!("stock {i}"))
            .await?
            .into_iter()
            .enumerate()
        {
            b[k].push(ms);
        }
    }
    let labels = [
        "POST -> RUNNING",
        "restart -> RUNNING re-paired",
        "stop -> STOPPED",
    ];
    for (k, label) in labels.iter().enumerate() {
        let (ours50, _) = summary(&format!("{label}, our runtime"), a[k].clone());
        let (stock50, _) = summary(&format!("{label}, stock {image}"), b[k].clone());
        println!("  ratio stock/ours at p50: {:.2}x", stock50 / ours50);
    }
    upstream.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let parts: Vec<String> = std::env::args().skip(1).collect();
    let want = |p: &str| parts.is_empty() || parts.iter().any(|x| x == p);
    let mut env = TestApp::in_world().await;
    println!(
        "machine: {} cores; date {}; engine {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        chrono::Utc::now().format("%Y-%m-%d"),
        docker_cli(&["version", "-f", "{{.Server.Version}}"]).unwrap_or_default()
    );
    if want("deploy") {
        deploy(&env).await?;
    }
    if want("pipeline") {
        pipeline(&env).await?;
    }
    if want("concurrent") {
        concurrent(&env).await?;
    }
    if want("repair") {
        repair(&env).await?;
    }
    if want("reconcile") {
        reconcile(&env).await?;
    }
    if parts.iter().any(|p| p == "stock") {
        stock(&env).await?;
    }
    env.shutdown().await;
    Ok(())
}
