//! The real agent-runtime image driven by the Docker layer and the gateway
//! client: image built from the shipped binary through the API, config and
//! persona injected into the created container, start, pairing code from the
//! logs since that start, `POST /pair`, `/health`, a message answered by the
//! provider stand-in on the same network, then a restart that needs a new
//! code and yields a new token.
//!
//! Needs `cargo build --profile agent -p agent-runtime` and
//! `cargo build -p zcaas-tests --bin provider-stub` first.

use std::time::{Duration, Instant};
use zcaas::agent_files::{
    ChannelsConfig, ConfigFile, GatewayConfig, MemoryConfig, CONFIG_MODE, CONFIG_PATH, PERSONA_MODE,
};
use zcaas::docker::{FileEntry, DATA_DIR};
use zcaas::gateway::{GatewayClient, GatewayError};
use zcaas::reconciler::pairing::wait_for_code;
use zcaas_test_support::{
    ensure_agent_image, ensure_stub_image, free_port, TestScope, AGENT_IMAGE, STUB_IMAGE,
};

fn files(provider: &str) -> Vec<FileEntry> {
    let config = ConfigFile {
        api_key: Some("sk-test-not-a-real-key".into()),
        api_url: None,
        default_provider: provider.into(),
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
    let config = toml::to_string(&config).expect("config renders");
    vec![
        FileEntry {
            path: CONFIG_PATH.into(),
            contents: config.into_bytes(),
            mode: CONFIG_MODE,
        },
        FileEntry {
            path: "workspace/IDENTITY.md".into(),
            contents: b"# Identity\n\nYour name is Ada.\n".to_vec(),
            mode: PERSONA_MODE,
        },
    ]
}

/// `/pair` once; only "unreachable" (docker-proxy accepts before the
/// gateway listens) is retried, as the reconciler does.
async fn pair(client: &GatewayClient, base: &str, code: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.pair(base, code).await {
            Ok(token) => return token,
            Err(GatewayError::Unreachable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("pairing with {code}: {e}"),
        }
    }
}

#[tokio::test]
async fn agent_runtime_pairs_answers_and_re_pairs_after_restart() {
    let scope = TestScope::new().await;
    let docker = &scope.docker;
    ensure_agent_image(docker).await;
    ensure_stub_image(docker).await;
    let network = scope.network().await;

    // The provider stand-in, reachable by name on the agents' network.
    let stub = scope.spec("provider", STUB_IMAGE, &network, free_port().expect("port"));
    let stub_id = docker.create_container(&stub).await.expect("create stub");
    docker.start(&stub_id).await.expect("start stub");
    let provider = format!("custom:http://{}:8080/v1", stub.name);

    let port = free_port().expect("port");
    let spec = scope.spec("agent", AGENT_IMAGE, &network, port);
    let t0 = Instant::now();
    let id = docker.create_container(&spec).await.expect("create agent");
    let created = t0.elapsed();
    docker
        .upload_files(&id, &files(&provider))
        .await
        .expect("inject");
    let injected = t0.elapsed() - created;
    let mut config = docker.client().download_from_container(
        &id,
        Some(bollard::query_parameters::DownloadFromContainerOptions {
            path: format!("{DATA_DIR}/{CONFIG_PATH}"),
        }),
    );
    let mut bytes = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut config).await {
        bytes.extend_from_slice(&chunk.expect("chunk"));
    }
    let mut archive = tar::Archive::new(bytes.as_slice());
    let entry = archive
        .entries()
        .expect("entries")
        .next()
        .expect("one entry")
        .expect("entry");
    let header = entry.header();
    assert_eq!(
        (
            header.uid().expect("uid"),
            header.gid().expect("gid"),
            header.mode().expect("mode") & 0o777
        ),
        (65534, 65534, 0o600)
    );

    let client = GatewayClient::new();
    let base = format!("http://127.0.0.1:{port}");
    let began = Instant::now();
    docker.start(&id).await.expect("start agent");
    let start_call = began.elapsed();
    let start = docker
        .inspect(&id)
        .await
        .expect("inspect")
        .expect("exists")
        .started_at
        .expect("started");
    let code = match wait_for_code(docker, &id, start, Duration::from_secs(20)).await {
        Ok(Some(code)) => code,
        other => panic!("no code ({other:?}); logs: {:?}", logs(&scope, &id).await),
    };
    let code_seen = began.elapsed();
    let token = pair(&client, &base, &code).await;
    println!(
        "create {created:?}, inject {injected:?}, start {start_call:?}, \
         code {code_seen:?}, paired {:?} after start",
        began.elapsed()
    );
    assert!(token.starts_with("zc_") && token.len() == 67, "token shape");
    assert!(
        matches!(
            client.pair(&base, &code).await,
            Err(GatewayError::CodeRejected)
        ),
        "one-time"
    );

    let health = client.health(&base).await.expect("health");
    assert_eq!(health["status"], "ok", "{health}");
    assert!(client.token_valid(&base, &token).await.expect("status"));
    assert!(!client
        .token_valid(&base, "zc_not-a-token")
        .await
        .expect("status"));

    let reply = client
        .webhook(&base, &token, "hello from the docker test", None)
        .await
        .expect("webhook");
    if reply.status != 200 {
        panic!(
            "webhook: {} {}; logs: {:?}",
            reply.status,
            reply.body,
            logs(&scope, &id).await
        );
    }
    let answer = reply.body["response"].as_str().expect("response text");
    assert!(
        answer.contains("echo: hello from the docker test"),
        "{answer}"
    );
    let denied = client
        .webhook(&base, "zc_wrong", "x", None)
        .await
        .expect("webhook");
    assert_eq!(denied.status, 401);

    // Restart: a new code since the new start, a new token; the old one is gone.
    docker
        .restart(&id, Duration::from_secs(5))
        .await
        .expect("restart");
    let restart = docker
        .inspect(&id)
        .await
        .expect("inspect")
        .expect("exists")
        .started_at
        .expect("started");
    assert!(restart > start);
    let code2 = wait_for_code(docker, &id, restart, Duration::from_secs(20))
        .await
        .expect("wait")
        .expect("a code after the restart");
    let token2 = pair(&client, &base, &code2).await;
    assert_ne!(token2, token);
    assert!(client.token_valid(&base, &token2).await.expect("status"));
    assert!(
        !client.token_valid(&base, &token).await.expect("status"),
        "tokens do not survive a restart"
    );

    let stats = docker.stats(&id).await.expect("stats");
    println!("agent stats: {stats:?}");
    assert!(stats.memory_mb > 0.0 && stats.memory_mb < 64.0);
}

async fn logs(scope: &TestScope, id: &str) -> Vec<String> {
    let lines = scope.docker.logs_tail(id, 50).await.unwrap_or_default();
    lines
        .into_iter()
        .map(|l| format!("{}: {}", l.stream, l.text))
        .collect()
}
