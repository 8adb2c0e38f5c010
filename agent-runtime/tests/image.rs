//! The image in the real Docker engine: built by `scripts/build-agent-image.sh` (or taken from
//! `ZCAAS_AGENT_IMAGE`), run with published ports, paired from `docker logs`, and a webhook
//! round trip to a provider stub on this machine (reached through
//! `--add-host=host.docker.internal:host-gateway`). Also: metadata, HEALTHCHECK, a read-only
//! root filesystem with a fresh named volume at /zeroclaw-data, restart → new code, and a
//! SIGTERM stop. Every container carries `io.zcaas.managed=true` and a per-run label, and is
//! removed by a drop guard even when an assertion fails.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{openai_reply, Stub};
use regex::Regex;
use serde_json::{json, Value};

const TEST_TAG: &str = "zcaas/agent-runtime:itest";
const SECRET: &str = "sk-image-test-SECRET-42";

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn docker_available() -> Result<(), String> {
    if !Path::new("/var/run/docker.sock").exists() && std::env::var_os("DOCKER_HOST").is_none() {
        return Err("no /var/run/docker.sock and no DOCKER_HOST".into());
    }
    match Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "docker engine unreachable: {}",
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Err(format!("docker CLI missing: {e}")),
    }
}

/// Removes this run's containers and volume on drop (also on panic).
struct Cleanup {
    run: String,
    volumes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=io.zcaas.test-run={}", self.run);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
            }
        }
        for v in &self.volumes {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", v])
                .output();
        }
    }
}

fn image() -> String {
    if let Ok(img) = std::env::var("ZCAAS_AGENT_IMAGE") {
        return img;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-agent-image.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(TEST_TAG)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "image build failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    TEST_TAG.to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// All pairing codes printed so far by container `id`, oldest first.
fn codes_in_logs(id: &str) -> Vec<String> {
    let out = Command::new("docker").args(["logs", id]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let header = Regex::new(r"X-Pairing-Code:\s*(\d{6})").unwrap();
    let boxed = Regex::new(r"│\s+(\d{6})\s+│").unwrap();
    let codes: Vec<String> = text
        .lines()
        .filter_map(|l| header.captures(l))
        .map(|c| c[1].to_owned())
        .collect();
    let boxes: Vec<String> = text
        .lines()
        .filter_map(|l| boxed.captures(l))
        .map(|c| c[1].to_owned())
        .collect();
    assert_eq!(codes, boxes, "both forms of every code on stdout:\n{text}");
    codes
}

fn wait_for_codes(id: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let codes = codes_in_logs(id);
        if codes.len() >= n {
            return codes;
        }
        assert!(
            Instant::now() < deadline,
            "no pairing code in logs: {}",
            docker(&["logs", id])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Agent {
    id: String,
    base: String,
}

fn run_agent(image: &str, run: &str, stub_port: u16, extra: &[&str]) -> Agent {
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:42617");
    let run_label = format!("io.zcaas.test-run={run}");
    let provider = format!("ZEROCLAW_PROVIDER=custom:http://host.docker.internal:{stub_port}/v1");
    let key = format!("API_KEY={SECRET}");
    let mut args = vec![
        "run",
        "-d",
        "--label",
        "io.zcaas.managed=true",
        "--label",
        &run_label,
        "--add-host=host.docker.internal:host-gateway",
        "-p",
        &publish,
        "--health-interval=1s",
        "--health-start-period=1s",
        "-e",
        &provider,
        "-e",
        &key,
        "-e",
        "ZEROCLAW_MODEL=stub-model",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[image, "gateway"]);
    let id = docker(&args);
    Agent {
        id,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn pair(http: &reqwest::Client, agent: &Agent, code: &str) -> String {
    // Wait for the published port to answer, then pair.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match http
            .post(format!("{}/pair", agent.base))
            .header("X-Pairing-Code", code)
            .send()
            .await
        {
            Ok(resp) => {
                let status = resp.status();
                let body: Value = resp.json().await.unwrap();
                assert_eq!(status, 200, "{body}");
                return body["token"].as_str().unwrap().to_owned();
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "gateway not reachable: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn webhook(http: &reqwest::Client, agent: &Agent, token: &str, msg: &str) -> (u16, Value) {
    let resp = http
        .post(format!("{}/webhook", agent.base))
        .bearer_auth(token)
        .json(&json!({"message": msg}))
        .send()
        .await
        .unwrap();
    common::into_parts(resp).await
}

/// Pairs from the logs, sends two messages (the second must see the first through sqlite
/// memory), and checks brain.db exists in the container's /zeroclaw-data.
async fn round_trip(http: &reqwest::Client, agent: &Agent) -> String {
    let code = wait_for_codes(&agent.id, 1)[0].clone();
    let token = pair(http, agent, &code).await;
    let (status, body) = webhook(http, agent, &token, "hello from the test").await;
    assert_eq!(
        status,
        200,
        "{body}; logs: {}",
        docker(&["logs", &agent.id])
    );
    assert_eq!(
        body,
        json!({"response": "stub saw 2 messages", "model": "stub-model"})
    );
    let (_, body) = webhook(http, agent, &token, "again").await;
    assert_eq!(
        body["response"], "stub saw 4 messages",
        "memory recalled the first exchange"
    );
    let out = Command::new("docker")
        .args([
            "cp",
            &format!("{}:/zeroclaw-data/workspace/memory/brain.db", agent.id),
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.len() > 1024,
        "brain.db missing"
    );
    let (status, _) = common::into_parts(
        http.get(format!("{}/pair/code", agent.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        status, 403,
        "/pair/code is not answered through the published port"
    );
    token
}

fn wait_healthy(id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = docker(&["inspect", "-f", "{{.State.Health.Status}}", id]);
        if s == "healthy" {
            return;
        }
        assert!(Instant::now() < deadline, "health status {s}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test]
async fn image_runs_pairs_and_answers() {
    if let Err(reason) = docker_available() {
        println!("skipping image test: {reason}");
        return;
    }
    let run = format!("{:x}", rand::random::<u64>());
    let volume = format!("zcaas-itest-{run}");
    let _cleanup = Cleanup {
        run: run.clone(),
        volumes: vec![volume.clone()],
    };
    let image = image();

    // Metadata.
    let cfg: Value = serde_json::from_str(&docker(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config}}",
        &image,
    ]))
    .unwrap();
    assert_eq!(cfg["User"], "65534:65534");
    assert_eq!(cfg["WorkingDir"], "/zeroclaw-data");
    assert_eq!(cfg["Entrypoint"], json!(["/usr/local/bin/agent-runtime"]));
    assert_eq!(cfg["Cmd"], json!(["gateway"]));
    assert!(cfg["ExposedPorts"].get("42617/tcp").is_some());
    assert_eq!(
        cfg["Healthcheck"]["Test"],
        json!([
            "CMD",
            "/usr/local/bin/agent-runtime",
            "status",
            "--format=exit-code"
        ])
    );
    assert_eq!(cfg["Labels"]["io.zcaas.managed"], "true");
    assert_eq!(
        cfg["Labels"]["io.zcaas.runtime-profile"], "zcaas",
        "the control plane's runtime profile of this image"
    );
    let env: Vec<String> = serde_json::from_value(cfg["Env"].clone()).unwrap();
    for e in [
        "HOME=/zeroclaw-data",
        "ZEROCLAW_WORKSPACE=/zeroclaw-data/workspace",
        "ZEROCLAW_GATEWAY_HOST=0.0.0.0",
        "ZEROCLAW_ALLOW_PUBLIC_BIND=true",
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
    ] {
        assert!(env.iter().any(|x| x == e), "{e} missing in {env:?}");
    }

    let stub = Stub::start("0.0.0.0:0", Duration::ZERO, |call| {
        let n = call.body["messages"].as_array().map_or(0, Vec::len);
        (200, openai_reply(&format!("stub saw {n} messages")))
    })
    .await;
    let http = reqwest::Client::new();

    // 1. Plain run: /zeroclaw-data from the image layer.
    let a = run_agent(&image, &run, stub.addr.port(), &[]);
    round_trip(&http, &a).await;
    assert_eq!(
        stub.calls()[0].header("authorization").unwrap(),
        format!("Bearer {SECRET}")
    );
    wait_healthy(&a.id);
    let logs = docker(&["logs", &a.id]);
    assert!(!logs.contains(SECRET), "API key in logs");

    // 2. Production shape: read-only root, tmpfs /tmp, fresh named volume at /zeroclaw-data.
    let mount = format!("{volume}:/zeroclaw-data");
    let b = run_agent(
        &image,
        &run,
        stub.addr.port(),
        &["--read-only", "--tmpfs", "/tmp", "-v", &mount],
    );
    let token = round_trip(&http, &b).await;

    // Restart: a new code is printed, the old token is refused, the new code pairs.
    docker(&["restart", "-t", "5", &b.id]);
    let codes = wait_for_codes(&b.id, 2);
    let (first, last) = (codes[0].clone(), codes.last().unwrap().clone());
    assert_ne!(
        first, last,
        "a fresh code after restart (1e-6 chance of a false failure)"
    );
    let token2 = pair(&http, &b, &last).await;
    let (status, _) = common::into_parts(
        http.get(format!("{}/api/status", b.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "tokens do not survive a restart by default");
    let (status, body) = webhook(&http, &b, &token2, "after restart").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["response"], "stub saw 6 messages",
        "memory on the volume survived the restart"
    );

    // SIGTERM as PID 1: a clean, quick exit.
    let started = Instant::now();
    docker(&["stop", "-t", "10", &b.id]);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stop took {:?}",
        started.elapsed()
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.ExitCode}}", &b.id]),
        "0"
    );
}
