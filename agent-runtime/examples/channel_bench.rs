//! Channel footprint and latency of one real `agent-runtime` process.
//!
//! ```text
//! cargo build --profile agent -p agent-runtime && cargo build --release -p agent-runtime --examples
//! target/x86_64-unknown-linux-gnu/release/examples/channel_bench [N] [BINARY]   # default: the agent-profile binary
//! ```
//!
//! (`channel_bench [BINARY] [N]` also works; defaults: the `agent`-profile binary next to this
//! example's workspace, N = 500.)
//!
//! In this one tokio process run, all on `127.0.0.1`: an instant OpenAI-compatible provider
//! stub, a fake Telegram Bot API (its `getUpdates` long poll answers *at once* when an update is
//! queued, woken by a `Notify`, and it timestamps each `sendMessage` on arrival; the very first
//! `getUpdates` is answered empty at once, since the runtime reports `channel:telegram` ok only
//! after a `getUpdates` returned, which real Telegram holds up to 30 s), a fake Discord
//! (REST `GET /gateway/bot` + a gateway WebSocket: Hello, READY on Identify, heartbeat ACKs) and
//! a fake Slack (`auth.test`, `apps.connections.open` + a Socket Mode WebSocket sending
//! `hello`). The runtime is spawned as `agent-runtime gateway --port 0` with `HOME` a temporary
//! directory holding `.zeroclaw/config.toml` (all three channels, sqlite memory, the stub as
//! `custom:` provider).
//!
//! Measured:
//! 1. once `/health` shows `channel:telegram`, `channel:discord` and `channel:slack` all `ok`
//!    and the process was idle for 5 s: `VmRSS`, `RssAnon`, `RssFile` (and `VmHWM`, threads)
//!    from `/proc/<pid>/status`, and `Pss`/private/shared from `/proc/<pid>/smaps_rollup`;
//! 2. inbound Telegram message → reply: 50 warm-up messages, then N, one at a time, each queued
//!    only once the runtime's `getUpdates` is parked in the fake (the steady state of a bot
//!    waiting for messages). `t0` = just before queuing the update, `t1` = when the fake
//!    receives the `sendMessage` answering it. Each message comes from its own chat, since the
//!    runtime limits a chat to 20 messages a minute. p50/p90/p99, and the provider stub's direct
//!    round trip from this process for comparison;
//! 3. the same `/proc` figures again after that traffic and 5 s idle.
//!
//! Every wait is bounded; the child is killed at the end, also on a panic (drop guard).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tokio_tungstenite::tungstenite::Message;

const TELEGRAM_TOKEN: &str = "123456:AAH-bench-token";
const DISCORD_TOKEN: &str = "MTIzNDU2.bench.token";
const SLACK_BOT_TOKEN: &str = "xoxb-1-2-bench";
const SLACK_APP_TOKEN: &str = "xapp-1-A1-3-bench";
/// The Telegram user id on `allowed_users`.
const TELEGRAM_USER: i64 = 4242;
/// The bound on the start (`/health` all ok) and on each single wait of the traffic.
const START_WAIT: Duration = Duration::from_secs(30);
const STEP_WAIT: Duration = Duration::from_secs(10);
/// Idle time before each RSS reading.
const IDLE: Duration = Duration::from_secs(5);
const WARM_UP: usize = 50;
/// What the provider stub answers (and so what every `sendMessage` must carry).
const REPLY: &str = "ok";

// ---------------------------------------------------------------------------------------------
// The child process.

/// Kills the runtime when dropped (also while unwinding from a panic).
struct Runtime {
    child: Child,
    /// The last lines of its stderr, for diagnostics.
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Runtime {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Spawns `bin gateway --port 0` with `HOME` = `home`; returns it and its HTTP port.
    fn spawn(bin: &str, home: &std::path::Path) -> (Self, u16) {
        let mut child = Command::new(bin)
            .args(["gateway", "--port", "0"])
            .env_clear()
            .env("HOME", home)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let t2 = tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut t = t2.lock().unwrap();
                if t.len() == 40 {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let marker = "listening on http://127.0.0.1:";
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split(marker).nth(1) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(port) = digits.parse::<u16>() {
                        let _ = port_tx.send(port);
                    }
                }
                // Keep draining, so the child never blocks on a full pipe.
            }
        });
        let rt = Self {
            child,
            stderr: tail,
        };
        let port = port_rx.recv_timeout(START_WAIT).unwrap_or_else(|_| {
            panic!(
                "no `listening on` line within {START_WAIT:?}; stderr:\n{}",
                rt.stderr_tail()
            )
        });
        (rt, port)
    }
}

/// Field `name` (in kB) of a `/proc` file's text.
fn kb_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[allow(clippy::cast_precision_loss)]
fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// What the benchmark reports of `/proc/<pid>/status` (and `smaps_rollup`): two lines.
fn proc_memory(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        kb_field(&status, name).unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    let rss = field("VmRSS");
    let anon = field("RssAnon");
    let file = field("RssFile");
    let mut out = format!(
        "  VmRSS {:.2} MiB ({rss} kB) | RssAnon {:.2} MiB ({anon} kB) | RssFile {:.2} MiB ({file} kB) | RssShmem {} kB | VmHWM {:.2} MiB | threads {} | VmRSS <= 8 MiB: {}",
        mib(rss),
        mib(anon),
        mib(file),
        field("RssShmem"),
        mib(field("VmHWM")),
        field("Threads"),
        if rss <= 8 * 1024 { "yes" } else { "NO" }
    );
    // Proportional and private figures, where the kernel has them.
    if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        let f = |name: &str| kb_field(&rollup, name).unwrap_or_default();
        out.push_str(&format!(
            "\n  smaps_rollup: Pss {:.2} MiB (Pss_Anon {:.2}, Pss_File {:.2}) | Private {:.2} MiB | Shared {:.2} MiB",
            mib(f("Pss")),
            mib(f("Pss_Anon")),
            mib(f("Pss_File")),
            mib(f("Private_Clean") + f("Private_Dirty")),
            mib(f("Shared_Clean") + f("Shared_Dirty")),
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The fakes.

async fn serve(router: axum::Router) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    port
}

/// The fake Telegram Bot API.
struct Telegram {
    /// Updates not yet confirmed by an `offset` past them.
    updates: Mutex<Vec<Value>>,
    /// Wakes the parked `getUpdates` (one poller: `notify_one` keeps a permit, so no wake-up is
    /// lost between its check of `updates` and its wait).
    queued: Notify,
    /// `Some(offset)` while a `getUpdates` with that offset (0 when absent) is parked.
    parked: watch::Sender<Option<i64>>,
    /// Whether a `getUpdates` was answered already.
    first_poll_done: AtomicBool,
    /// `(chat_id, text, arrival)` of every `sendMessage`.
    sent: mpsc::UnboundedSender<(i64, String, Instant)>,
}

fn tg_ok(result: Value) -> Response {
    axum::Json(json!({"ok": true, "result": result})).into_response()
}

async fn telegram_api(State(tg): State<Arc<Telegram>>, uri: Uri, body: Bytes) -> Response {
    let arrived = Instant::now();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some((token, method)) = uri
        .path()
        .strip_prefix("/bot")
        .and_then(|rest| rest.rsplit_once('/'))
    else {
        return axum::Json(json!({"ok": false, "error_code": 404, "description": "Not Found"}))
            .into_response();
    };
    if token != TELEGRAM_TOKEN {
        return axum::Json(json!({"ok": false, "error_code": 401, "description": "Unauthorized"}))
            .into_response();
    }
    match method {
        "getMe" => tg_ok(
            json!({"id": 123_456, "is_bot": true, "first_name": "Bench", "username": "bench_bot"}),
        ),
        "getUpdates" => {
            let offset = body["offset"].as_i64().unwrap_or(0);
            // The runtime reports `channel:telegram` ok only once a `getUpdates` returned: the
            // first one answers at once (empty), the later ones are held.
            if !tg.first_poll_done.swap(true, Ordering::SeqCst) {
                return tg_ok(json!([]));
            }
            // Shorter than the client's `timeout` (30 s), so the client never gives up first.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
            loop {
                let pending: Vec<Value> = {
                    let mut updates = tg.updates.lock().unwrap();
                    updates.retain(|u| u["update_id"].as_i64().unwrap() >= offset);
                    updates.clone()
                };
                if !pending.is_empty() {
                    tg.parked.send_replace(None);
                    return tg_ok(Value::Array(pending));
                }
                tg.parked.send_replace(Some(offset));
                tokio::select! {
                    () = tg.queued.notified() => {}
                    () = tokio::time::sleep_until(deadline) => {
                        tg.parked.send_replace(None);
                        return tg_ok(json!([]));
                    }
                }
            }
        }
        "sendMessage" => {
            let chat = body["chat_id"].as_i64().unwrap_or_default();
            let text = body["text"].as_str().unwrap_or_default().to_owned();
            let _ = tg.sent.send((chat, text.clone(), arrived));
            tg_ok(json!({"message_id": 1, "date": 0,
                         "chat": {"id": chat, "type": "private"}, "text": text}))
        }
        _ => tg_ok(json!(true)),
    }
}

/// A WebSocket server on `127.0.0.1:0` running `conn` for each connection; its `ws://` URL.
async fn ws_server<F, Fut>(conn: F) -> String
where
    F: Fn(tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let conn = Arc::new(conn);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let conn = conn.clone();
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    conn(ws).await;
                }
            });
        }
    });
    url
}

/// The fake Discord: REST base URL (`…/api/v10`).
async fn fake_discord() -> String {
    let ws_url = ws_server(|mut ws| async move {
        let hello = json!({"op": 10, "d": {"heartbeat_interval": 41_250}, "s": null, "t": null});
        if ws.send(Message::text(hello.to_string())).await.is_err() {
            return;
        }
        let mut seq = 0_u64;
        while let Some(Ok(frame)) = ws.next().await {
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
            let answer = match v["op"].as_u64() {
                Some(1) => json!({"op": 11}),
                Some(2) => {
                    seq += 1;
                    json!({"op": 0, "t": "READY", "s": seq, "d": {
                        "v": 10, "session_id": "bench-session", "resume_gateway_url": "",
                        "user": {"id": "900", "username": "bench", "bot": true},
                        "guilds": [], "application": {"id": "900"}}})
                }
                Some(6) => {
                    seq += 1;
                    json!({"op": 0, "t": "RESUMED", "s": seq, "d": {}})
                }
                _ => continue,
            };
            if ws.send(Message::text(answer.to_string())).await.is_err() {
                return;
            }
        }
    })
    .await;
    let router = axum::Router::new()
        .route(
            "/api/v10/gateway/bot",
            axum::routing::get(move || {
                let url = ws_url.clone();
                async move {
                    axum::Json(json!({"url": url, "shards": 1, "session_start_limit":
                        {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}))
                }
            }),
        )
        .fallback(|| async { axum::Json(json!({"id": "1"})) });
    let port = serve(router).await;
    format!("http://127.0.0.1:{port}/api/v10")
}

/// The fake Slack: Web API base URL (`…/api`).
async fn fake_slack() -> String {
    let ws_url = ws_server(|mut ws| async move {
        let hello = json!({"type": "hello", "num_connections": 1,
            "debug_info": {"host": "bench", "approximate_connection_time": 18_060},
            "connection_info": {"app_id": "A1"}});
        if ws.send(Message::text(hello.to_string())).await.is_err() {
            return;
        }
        // Reading answers pings; nothing else is needed.
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    let router = axum::Router::new().fallback(move |uri: Uri| {
        let ws_url = ws_url.clone();
        async move {
            let body = match uri.path().trim_start_matches("/api/") {
                "auth.test" => json!({"ok": true, "url": "https://bench.slack.com/",
                    "team": "Bench", "user": "bench", "team_id": "T1", "user_id": "UBOT",
                    "bot_id": "B1"}),
                "apps.connections.open" => {
                    json!({"ok": true, "url": format!("{ws_url}/link/?ticket=1")})
                }
                _ => json!({"ok": true}),
            };
            axum::Json(body)
        }
    });
    let port = serve(router).await;
    format!("http://127.0.0.1:{port}/api")
}

// ---------------------------------------------------------------------------------------------

fn pct(sorted: &[Duration], p: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e3
}

fn summary(sorted: &[Duration]) -> String {
    format!(
        "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  (min {:.3}, max {:.3})",
        pct(sorted, 0.5),
        pct(sorted, 0.9),
        pct(sorted, 0.99),
        pct(sorted, 0.0),
        pct(sorted, 1.0)
    )
}

/// Waits (bounded) until all three channels are `ok` in `/health`.
async fn wait_channels_ok(http: &reqwest::Client, rt: &Runtime, port: u16) -> Duration {
    let started = Instant::now();
    let mut last = Value::Null;
    while started.elapsed() < START_WAIT {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            if let Ok(v) = r.json::<Value>().await {
                let all_ok = ["telegram", "discord", "slack"]
                    .iter()
                    .all(|c| v["runtime"]["components"][format!("channel:{c}")]["status"] == "ok");
                if all_ok {
                    return started.elapsed();
                }
                last = v;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "channels not all ok within {START_WAIT:?}; last /health: {last}\nstderr:\n{}",
        rt.stderr_tail()
    );
}

/// Sends `count` Telegram messages one at a time; the latency of each (sorted).
async fn telegram_round_trips(
    tg: &Telegram,
    sent: &mut mpsc::UnboundedReceiver<(i64, String, Instant)>,
    next_update: &mut i64,
    count: usize,
    rt: &Runtime,
) -> Vec<Duration> {
    let mut parked = tg.parked.subscribe();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let id = *next_update;
        *next_update += 1;
        // The runtime's poll for this update (its offset is past every earlier one) is parked.
        // (`wait_for`'s guard holds the watch's lock: dropped within this statement.)
        let waited = matches!(
            tokio::time::timeout(
                STEP_WAIT,
                parked.wait_for(|p| p.is_some_and(|offset| offset == id || id == 1)),
            )
            .await,
            Ok(Ok(_))
        );
        assert!(
            waited,
            "no getUpdates parked for update {id}; stderr:\n{}",
            rt.stderr_tail()
        );
        let chat = 1_000_000 + id;
        let update = json!({"update_id": id, "message": {
            "message_id": id, "date": 1_700_000_000,
            "from": {"id": TELEGRAM_USER, "is_bot": false, "first_name": "Ada", "username": "ada"},
            "chat": {"id": chat, "type": "private"},
            "text": "ping"}});
        let t0 = Instant::now();
        tg.updates.lock().unwrap().push(update);
        tg.queued.notify_one();
        let got = tokio::time::timeout(STEP_WAIT, sent.recv()).await;
        let Ok(Some((to, text, t1))) = got else {
            panic!(
                "no sendMessage for update {id} within {STEP_WAIT:?}; stderr:\n{}",
                rt.stderr_tail()
            );
        };
        assert_eq!(to, chat, "reply to the wrong chat");
        assert_eq!(text, REPLY, "unexpected reply (rate limit or failed turn?)");
        out.push(t1 - t0);
    }
    out.sort();
    out
}

#[tokio::main]
async fn main() {
    let mut bin = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/x86_64-unknown-linux-gnu/agent/agent-runtime"
    )
    .to_owned();
    let mut n = 500_usize;
    for arg in std::env::args().skip(1) {
        match arg.parse() {
            Ok(v) => n = v,
            Err(_) => bin = arg,
        }
    }
    assert!(n > 0, "N must be at least 1");
    assert!(
        std::path::Path::new(&bin).is_file(),
        "no runtime binary at {bin}: build it with `cargo build --profile agent -p agent-runtime`"
    );

    // The instant provider.
    let completion = json!({"choices": [{"message": {"role": "assistant", "content": REPLY}}],
                            "usage": {"prompt_tokens": 1, "completion_tokens": 1}});
    let provider_port = serve(axum::Router::new().fallback(move || {
        let c = completion.clone();
        async move { axum::Json(c) }
    }))
    .await;

    // The fakes.
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
    let tg = Arc::new(Telegram {
        updates: Mutex::new(Vec::new()),
        queued: Notify::new(),
        parked: watch::Sender::new(None),
        first_poll_done: AtomicBool::new(false),
        sent: sent_tx,
    });
    let tg_port = serve(
        axum::Router::new()
            .fallback(telegram_api)
            .with_state(tg.clone()),
    )
    .await;
    let discord_api = fake_discord().await;
    let slack_api = fake_slack().await;

    // HOME with the config and persona files (as webhook_bench's).
    let home = tempfile::tempdir().unwrap();
    let cfg_dir = home.path().join(".zeroclaw");
    let ws = cfg_dir.join("workspace");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("IDENTITY.md"), "Name: Bench\n".repeat(20)).unwrap();
    std::fs::write(ws.join("SOUL.md"), "Style: brief\n".repeat(20)).unwrap();
    std::fs::write(ws.join("USER.md"), "User: Ada, UTC\n".repeat(20)).unwrap();
    let config = format!(
        r#"default_provider = "custom:http://127.0.0.1:{provider_port}/v1"
api_key = "sk-bench"
default_model = "bench"

[memory]
backend = "sqlite"

[channels_config.telegram]
bot_token = "{TELEGRAM_TOKEN}"
allowed_users = ["{TELEGRAM_USER}"]
api_base_url = "http://127.0.0.1:{tg_port}"

[channels_config.discord]
bot_token = "{DISCORD_TOKEN}"
allowed_users = ["111"]
api_base_url = "{discord_api}"

[channels_config.slack]
bot_token = "{SLACK_BOT_TOKEN}"
app_token = "{SLACK_APP_TOKEN}"
allowed_users = ["UALICE"]
api_base_url = "{slack_api}"
"#
    );
    std::fs::write(cfg_dir.join("config.toml"), config).unwrap();

    let http = reqwest::Client::new();
    let spawned = Instant::now();
    let (rt, port) = Runtime::spawn(&bin, home.path());
    let ready = wait_channels_ok(&http, &rt, port).await;
    let ready_total = spawned.elapsed();
    println!("binary: {bin}");
    println!(
        "pid {} on 127.0.0.1:{port}; telegram+discord+slack ok {:.1} ms after spawn ({:.1} ms of /health polling)",
        rt.pid(),
        ready_total.as_secs_f64() * 1e3,
        ready.as_secs_f64() * 1e3
    );

    tokio::time::sleep(IDLE).await;
    println!(
        "idle, 3 channels connected ({}s idle):\n{}",
        IDLE.as_secs(),
        proc_memory(rt.pid())
    );

    let mut next_update = 1_i64;
    telegram_round_trips(&tg, &mut sent_rx, &mut next_update, WARM_UP, &rt).await;
    let tg_lat = telegram_round_trips(&tg, &mut sent_rx, &mut next_update, n, &rt).await;

    // The provider stub's own round trip from here (one keep-alive connection), for comparison.
    let direct_body =
        json!({"model": "bench", "messages": [{"role": "user", "content": "ping"}]}).to_string();
    let mut direct = Vec::with_capacity(n);
    for i in 0..WARM_UP + n {
        let t = Instant::now();
        let r = http
            .post(format!(
                "http://127.0.0.1:{provider_port}/v1/chat/completions"
            ))
            .header("content-type", "application/json")
            .body(direct_body.clone())
            .timeout(STEP_WAIT)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
        if i >= WARM_UP {
            direct.push(t.elapsed());
        }
    }
    direct.sort();

    println!("telegram message -> reply, n={n} (after {WARM_UP} warm-up), memory sqlite:");
    println!("  telegram  {}", summary(&tg_lat));
    println!("  provider  {}  (direct to the stub)", summary(&direct));
    println!(
        "  p50 <= 5 ms: {}",
        if pct(&tg_lat, 0.5) <= 5.0 {
            "yes"
        } else {
            "NO"
        }
    );

    tokio::time::sleep(IDLE).await;
    println!(
        "after {} telegram messages ({}s idle):\n{}",
        WARM_UP + n,
        IDLE.as_secs(),
        proc_memory(rt.pid())
    );
    drop(rt);
}
