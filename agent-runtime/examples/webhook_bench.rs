//! `/webhook` overhead with an instant local provider.
//!
//! Starts an in-process provider stub (OpenAI wire format, answers at once) and the real
//! gateway on `127.0.0.1:0`, pairs, then sends N sequential webhook requests over one
//! keep-alive connection, and the same number of requests straight to the stub as a baseline.
//! Prints p50/p90/p99 of both and the p50 difference (the gateway's own cost: auth, persona
//! files, memory recall + save, JSON, one extra HTTP hop).
//!
//! `cargo run --release -p agent-runtime --example webhook_bench -- [N] [sqlite|markdown|none]`
//! (defaults: 2000, sqlite).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use agent_runtime::config::{Config, Paths};
use agent_runtime::memory::MemoryBackend;
use agent_runtime::providers::ProviderSpec;
use agent_runtime::App;
use serde_json::json;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e3
}

async fn time_requests(n: usize, mut send: impl AsyncFnMut() -> u16) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        assert_eq!(send().await, 200);
        out.push(t.elapsed());
    }
    out.sort();
    out
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(2000, |s| s.parse().unwrap());
    let backend: MemoryBackend = args
        .next()
        .map_or(MemoryBackend::Sqlite, |s| s.parse().unwrap());

    let reply = json!({"choices": [{"message": {"role": "assistant", "content": "ok"}}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1}});
    let stub = axum::Router::new().fallback(move || {
        let r = reply.clone();
        async move { axum::Json(r) }
    });
    let stub_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stub_addr = stub_listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(stub_listener, stub).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("workspace");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("IDENTITY.md"), "Name: Bench\n".repeat(20)).unwrap();
    std::fs::write(ws.join("SOUL.md"), "Style: brief\n".repeat(20)).unwrap();
    std::fs::write(ws.join("USER.md"), "User: Ada, UTC\n".repeat(20)).unwrap();
    let mut cfg = Config::defaults(Paths::under(dir.path()));
    cfg.provider.spec = ProviderSpec::parse(&format!("custom:http://{stub_addr}/v1")).unwrap();
    cfg.provider.model = "bench".into();
    cfg.memory.backend = backend;
    cfg.gateway.webhook_rate_limit_per_minute = 0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = App::build(&cfg, listener).await.unwrap();
    app.warm_up();
    let base = format!("http://{}", app.addr());
    let http = reqwest::Client::new();
    let code = app.pairing_code().unwrap();
    let pair: serde_json::Value = http
        .post(format!("{base}/pair"))
        .header("X-Pairing-Code", code)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = pair["token"].as_str().unwrap().to_owned();
    let body = json!({"message": "ping"}).to_string();

    let webhook = || {
        let req = http
            .post(format!("{base}/webhook"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.clone());
        async move {
            let r = req.send().await.unwrap();
            let s = r.status().as_u16();
            let _ = r.bytes().await.unwrap();
            s
        }
    };
    let direct_body =
        json!({"model": "bench", "messages": [{"role": "user", "content": "ping"}]}).to_string();
    let direct = || {
        let req = http
            .post(format!("http://{stub_addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(direct_body.clone());
        async move {
            let r = req.send().await.unwrap();
            let s = r.status().as_u16();
            let _ = r.bytes().await.unwrap();
            s
        }
    };
    // Warm-up: connections, page cache, SQLite.
    time_requests(200, webhook).await;
    time_requests(200, direct).await;

    let w = time_requests(n, webhook).await;
    let d = time_requests(n, direct).await;
    println!("backend={} n={n}", backend.as_str());
    println!(
        "webhook  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms",
        pct(&w, 0.5),
        pct(&w, 0.9),
        pct(&w, 0.99)
    );
    println!(
        "provider p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  (direct to the stub)",
        pct(&d, 0.5),
        pct(&d, 0.9),
        pct(&d, 0.99)
    );
    println!("overhead p50 {:.3} ms", pct(&w, 0.5) - pct(&d, 0.5));
    app.shutdown(Duration::from_secs(2)).await;
}
