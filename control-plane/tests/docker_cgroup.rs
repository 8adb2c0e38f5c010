//! Resource use read from the cgroup files (`zcaas::docker::cgroup`) against
//! the real engine and the real agent-runtime image: the memory figure is the
//! engine's one-shot figure (same cgroup, same formula), the CPU figure comes
//! from the second poll on, and the addresses of running workloads come from
//! one listing. On a host whose cgroups cannot be read here the engine
//! answers instead, and the test says so.
//!
//! Needs `cargo build --profile agent -p agent-runtime` first.

use std::time::{Duration, Instant};

use zcaas::agent_files::{
    ChannelsConfig, ConfigFile, GatewayConfig, MemoryConfig, CONFIG_MODE, CONFIG_PATH,
};
use zcaas::docker::cgroup::{self, Layout};
use zcaas::docker::FileEntry;
use zcaas::gateway::GatewayClient;
use zcaas_test_support::{ensure_agent_image, free_port, TestScope, AGENT_IMAGE};

fn config() -> FileEntry {
    let config = ConfigFile {
        api_key: Some("sk-test-not-a-real-key".into()),
        api_url: None,
        default_provider: "openai".into(),
        default_model: "stub-model".into(),
        default_temperature: 0.2,
        memory: MemoryConfig {
            backend: "sqlite".into(),
            auto_save: true,
        },
        gateway: GatewayConfig {
            port: 42617,
            host: "0.0.0.0".into(),
            allow_public_bind: true,
            require_pairing: true,
        },
        channels_config: ChannelsConfig {
            cli: true,
            telegram: None,
            discord: None,
            slack: None,
        },
    };
    FileEntry {
        path: CONFIG_PATH.into(),
        contents: toml::to_string(&config).expect("config").into_bytes(),
        mode: CONFIG_MODE,
    }
}

#[tokio::test]
async fn cgroup_figures_match_the_engine_and_listing_gives_addresses() {
    let scope = TestScope::new().await;
    let docker = &scope.docker;
    ensure_agent_image(docker).await;
    let network = scope.network().await;
    let port = free_port().expect("port");
    let spec = scope.spec("agent", AGENT_IMAGE, &network, port);
    let id = docker.create_container(&spec).await.expect("create");
    docker.upload_files(&id, &[config()]).await.expect("inject");
    docker.start(&id).await.expect("start");
    let client = GatewayClient::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.health(&base).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the agent never answered /health"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let ids = vec![id.clone()];
    let first = docker.poll_stats(&ids).await.remove(0).expect("first poll");
    let engine = docker.engine_stats(&id).await.expect("engine stats");
    let after = docker
        .poll_stats(&ids)
        .await
        .remove(0)
        .expect("second poll");
    println!("cgroup: {first:?} then {after:?}; engine: {engine:?}");
    if docker.reads_cgroups() {
        // Read from the files: no CPU figure without an earlier reading,
        // one after it (the engine call took about a second in between).
        assert_eq!(first.cpu_percent, None, "{first:?}");
        let cpu = after.cpu_percent.expect("a CPU figure on the second poll");
        assert!((0.0..50.0).contains(&cpu), "idle agent at {cpu} %");
    } else {
        println!("cgroup files not readable here: the engine answered");
    }
    // An idle agent: a few MiB, the same figure both ways (the engine read
    // the same counters within a second or two).
    assert!(first.memory_mb > 0.5 && first.memory_mb < 64.0, "{first:?}");
    let close = |a: f64, b: f64| (a - b).abs() <= (0.2 * b).max(1.0);
    assert!(
        close(first.memory_mb, engine.memory_mb) && close(after.memory_mb, engine.memory_mb),
        "cgroup {first:?} / {after:?} vs engine {engine:?}"
    );
    let live = docker.stats(&id).await.expect("stats");
    assert!(
        close(live.memory_mb, engine.memory_mb),
        "{live:?} vs {engine:?}"
    );
    assert!(
        live.cpu_percent >= 0.0 && live.cpu_percent.is_finite(),
        "{live:?}"
    );

    // Reading one container's files: microseconds (print the figure).
    if let Some(layout) = Layout::detect(std::path::Path::new(cgroup::CGROUP_ROOT)) {
        let root = std::path::Path::new(cgroup::CGROUP_ROOT);
        let rounds = 1_000;
        let t0 = Instant::now();
        for _ in 0..rounds {
            assert!(cgroup::read(layout, root, &id).is_some());
        }
        println!(
            "one cgroup reading ({layout:?}): {:?}",
            t0.elapsed() / rounds
        );
    }

    // Addresses from one listing: only running workloads of ours, by id.
    let gone = "f".repeat(64);
    let listed = docker
        .running_endpoints(&[id.clone(), gone])
        .await
        .expect("listing");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].agent_id.as_deref(), Some(spec.agent_id.as_str()));
    assert_eq!(listed[0].endpoint.host_port, Some(port));
    let inspected = docker.inspect(&id).await.expect("inspect").expect("exists");
    assert_eq!(listed[0].endpoint, inspected.endpoint());
    assert!(listed[0].endpoint.ip_addresses.contains_key(&network));

    docker
        .stop(&id, Duration::from_secs(5))
        .await
        .expect("stop");
    assert!(docker
        .running_endpoints(&ids)
        .await
        .expect("listing")
        .is_empty());
}
