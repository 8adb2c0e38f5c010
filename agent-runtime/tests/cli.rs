//! The real binary: banner on stdout, config errors and exit codes, SIGTERM, `status`,
//! restarts with and without `persist_tokens`, and no secret in any output.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{openai_reply, Stub, TEST_KEY};
use regex::Regex;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_agent-runtime");
const HEADER_RE: &str = r"X-Pairing-Code:\s*(\d{6})";
const BOX_RE: &str = r"│\s+(\d{6})\s+│";

fn command(home: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear().env("HOME", home).env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A running `agent-runtime gateway --port 0`, its output collected line by line.
struct Gateway {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    port: u16,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(reader: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Gateway {
    fn start(home: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_as("gateway", home, env)
    }

    /// `agent-runtime <subcommand> --port 0` (`gateway` or `daemon`).
    fn start_as(subcommand: &str, home: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = command(home, env)
            .args([subcommand, "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let mut gw = Self {
            child,
            stdout,
            stderr,
            port: 0,
        };
        let re = Regex::new(r"listening on http://127\.0\.0\.1:(\d+)").unwrap();
        let line = gw.wait_stdout(&re);
        gw.port = re.captures(&line).unwrap()[1].parse().unwrap();
        gw
    }

    /// The first stdout line matching `re`, waiting up to 5 s.
    fn wait_stdout(&self, re: &Regex) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(l) = self.stdout.lock().unwrap().iter().find(|l| re.is_match(l)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line matching {re}; stdout: {:?}; stderr: {:?}",
                self.stdout.lock().unwrap(),
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn code(&self) -> String {
        let re = Regex::new(HEADER_RE).unwrap();
        re.captures(&self.wait_stdout(&re)).unwrap()[1].to_owned()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn sigterm(&mut self) -> Duration {
        let started = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit status after SIGTERM: {status}");
        started.elapsed()
    }

    fn all_output(&self) -> String {
        let mut s = self.stdout.lock().unwrap().join("\n");
        s.push('\n');
        s.push_str(&self.stderr.lock().unwrap().join("\n"));
        s
    }
}

async fn pair(http: &reqwest::Client, gw: &Gateway) -> String {
    let resp = http
        .post(gw.url("/pair"))
        .header("X-Pairing-Code", gw.code())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

#[test]
fn banner_prints_the_code_in_both_forms() {
    let home = tempfile::tempdir().unwrap();
    let gw = Gateway::start(home.path(), &[]);
    let header = gw.code();
    let boxed = Regex::new(BOX_RE).unwrap();
    let line = gw.wait_stdout(&boxed);
    assert_eq!(boxed.captures(&line).unwrap()[1], header);
    let out = gw.stdout.lock().unwrap().clone();
    assert_eq!(
        out.iter()
            .filter(|l| Regex::new(HEADER_RE).unwrap().is_match(l))
            .count(),
        1
    );
    assert_eq!(out.iter().filter(|l| boxed.is_match(l)).count(), 1);
    // Logs go to stderr, not stdout.
    assert!(out.iter().all(|l| !l.contains("INFO")), "{out:?}");
}

/// `daemon` (the command zcaas starts every runtime with) is the gateway
/// with its channels: same banner, same pairing, channels in `/health`.
#[tokio::test]
async fn daemon_runs_the_gateway_and_its_channels() {
    let home = tempfile::tempdir().unwrap();
    let cfg_dir = home.path().join(".zeroclaw");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::write(
        cfg_dir.join("config.toml"),
        "[channels_config.telegram]\nenabled = true\nbot_token = \"1:x\"\nallowed_users = [\"*\"]\n",
    )
    .unwrap();
    let mut gw = Gateway::start_as("daemon", home.path(), &[]);
    let http = reqwest::Client::new();
    let token = pair(&http, &gw).await;
    assert!(token.starts_with("zc_"));
    let health: serde_json::Value = http
        .get(gw.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        health["runtime"]["components"]["channel:telegram"].is_object(),
        "{health}"
    );
    assert!(
        !gw.all_output().contains("unknown config key"),
        "{}",
        gw.all_output()
    );
    assert!(gw.sigterm() < Duration::from_secs(2));
}

#[test]
fn bad_config_exits_non_zero_naming_the_key() {
    let home = tempfile::tempdir().unwrap();
    let cfg_dir = home.path().join(".zeroclaw");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::write(cfg_dir.join("config.toml"), "[gateway]\nport = \"high\"\n").unwrap();
    let out = command(home.path(), &[]).arg("gateway").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`gateway.port`"), "{stderr}");

    std::fs::write(cfg_dir.join("config.toml"), "default_temperature = 0.5\n").unwrap();
    let out = command(home.path(), &[("ZEROCLAW_TEMPERATURE", "9")])
        .arg("gateway")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`ZEROCLAW_TEMPERATURE`"));

    let out = command(home.path(), &[("ZEROCLAW_GATEWAY_HOST", "0.0.0.0")])
        .arg("gateway")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_public_bind"));
    assert!(out.stdout.is_empty(), "no banner when refusing to start");
}

#[test]
fn config_dir_and_workspace_rules_reach_the_binary() {
    let root = tempfile::tempdir().unwrap();
    let ws = root.path().join("data/workspace");
    std::fs::create_dir_all(root.path().join("data/.zeroclaw")).unwrap();
    std::fs::write(
        root.path().join("data/.zeroclaw/config.toml"),
        "bogus_key = 1\n[memory]\nbackend = \"markdown\"\nauto_save = true\n",
    )
    .unwrap();
    let gw = Gateway::start(root.path(), &[("ZEROCLAW_WORKSPACE", ws.to_str().unwrap())]);
    gw.wait_stdout(&Regex::new("memory: markdown").unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw
        .stderr
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("unknown config key `bogus_key`"))
    {
        assert!(Instant::now() < deadline, "no warning: {}", gw.all_output());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn sigterm_stops_within_two_seconds_mid_request() {
    let slow = Stub::start("127.0.0.1:0", Duration::from_secs(20), |_| {
        (200, openai_reply("late"))
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(
        home.path(),
        &[("ZEROCLAW_PROVIDER", &format!("custom:{}", slow.url()))],
    );
    let http = reqwest::Client::new();
    let token = pair(&http, &gw).await;
    let url = gw.url("/webhook");
    let inflight = tokio::spawn({
        let http = http.clone();
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({"message": "hi"}))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let took = tokio::task::spawn_blocking(move || {
        let took = gw.sigterm();
        drop(gw);
        took
    })
    .await
    .unwrap();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // The in-flight request ends (cut off) instead of hanging for the provider's 20 s.
    let ended = tokio::time::timeout(Duration::from_secs(3), inflight).await;
    assert!(ended.expect("in-flight request ended").unwrap().is_err());
}

#[tokio::test]
async fn status_command_reports_health_by_exit_code() {
    let home = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(home.path(), &[]);
    let port = gw.port.to_string();
    let status = |fmt: &str| {
        command(home.path(), &[])
            .args(["status", &format!("--format={fmt}"), "--port", &port])
            .output()
            .unwrap()
    };
    let out = status("exit-code");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let out = status("json");
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["status"], "ok");
    let took = gw.sigterm();
    assert!(took < Duration::from_secs(2));
    assert_eq!(status("exit-code").status.code(), Some(1));
}

#[tokio::test]
async fn restarts_need_a_new_pairing_unless_tokens_persist() {
    let stub = Stub::fixed(200, openai_reply("hi")).await;
    let provider = format!("custom:{}", stub.url());
    let env = [("ZEROCLAW_PROVIDER", provider.as_str())];
    let http = reqwest::Client::new();
    let home = tempfile::tempdir().unwrap();

    let mut gw = Gateway::start(home.path(), &env);
    let first_code = gw.code();
    let token = pair(&http, &gw).await;
    gw.sigterm();
    let gw = Gateway::start(home.path(), &env);
    let second_code = gw.code();
    assert_ne!(
        first_code, second_code,
        "a fresh code per start (1e-6 chance of a false failure)"
    );
    let resp = http
        .get(gw.url("/api/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    drop(gw);

    let cfg_dir = home.path().join(".zeroclaw");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::write(
        cfg_dir.join("config.toml"),
        "[gateway]\npersist_tokens = true\n",
    )
    .unwrap();
    let mut gw = Gateway::start(home.path(), &env);
    let token = pair(&http, &gw).await;
    gw.sigterm();
    let gw = Gateway::start(home.path(), &env);
    gw.wait_stdout(&Regex::new("Already paired").unwrap());
    assert!(!gw.all_output().contains("X-Pairing-Code"));
    let resp = http
        .get(gw.url("/api/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn no_secret_reaches_stdout_or_stderr() {
    let failing = Stub::fixed(401, json!({"error": format!("bad key {TEST_KEY}")})).await;
    let home = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(
        home.path(),
        &[
            ("API_KEY", TEST_KEY),
            ("PROVIDER", "openai"),
            ("ZEROCLAW_PROVIDER_URL", &failing.url()),
            ("RUST_LOG", "debug"),
        ],
    );
    let http = reqwest::Client::new();
    let token = pair(&http, &gw).await;
    let resp = http
        .post(gw.url("/webhook"))
        .bearer_auth(&token)
        .json(&json!({"message": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(
        failing.calls()[0].header("authorization").unwrap(),
        format!("Bearer {TEST_KEY}")
    );
    gw.sigterm();
    std::thread::sleep(Duration::from_millis(50));
    let out = gw.all_output();
    assert!(out.contains("LLM request failed"), "{out}");
    assert!(!out.contains(TEST_KEY), "{out}");
    assert!(!out.contains(&token), "{out}");
}

#[tokio::test]
async fn a_lockout_is_one_log_line_not_one_per_attempt() {
    let home = tempfile::tempdir().unwrap();
    let gw = Gateway::start(home.path(), &[]);
    let code = gw.code();
    let wrong = if code == "999999" { "999998" } else { "999999" };
    let http = reqwest::Client::new();
    let _ = http.get(gw.url("/health")).send().await.unwrap();
    let before = gw.stderr.lock().unwrap().len();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let resp = http
            .post(gw.url("/pair"))
            .header("X-Pairing-Code", wrong)
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses[..5], [403; 5]);
    assert_eq!(statuses[5..], [429; 15]);
    // Give the log line time to arrive, and any extra one time to show up.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.stderr.lock().unwrap()[before..]
        .iter()
        .any(|l| l.contains("locked out"))
    {
        assert!(Instant::now() < deadline, "{}", gw.all_output());
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    let new_lines = gw.stderr.lock().unwrap()[before..].to_vec();
    assert_eq!(new_lines.len(), 1, "{new_lines:#?}");
    let line = &new_lines[0];
    assert!(
        line.contains("WARN") && line.contains("pairing locked out") && line.contains("127.0.0.1"),
        "{line}"
    );
    assert!(!line.contains(wrong) && !line.contains(&code), "{line}");
}
