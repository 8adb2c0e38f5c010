//! Safety: a hostile agent cannot reach anything through the control plane.
//!
//! The tenant controls the code behind an agent's gateway. Here that code is
//! `hostile-agent` (tests/src/bin/hostile-agent.rs), packaged per test into a
//! FROM-scratch image that the real `zcaas serve` process deploys as its
//! runtime image. It pairs like a ZeroClaw gateway but answers one route
//! with a redirect to a canary or with a 100 MiB body. Each test asserts:
//! the canary sees no connection at all, the agent ends in ERROR with a
//! reason that names the problem (or, for `/webhook`, the message proxy
//! answers 502 with a short JSON error and nothing of the agent's answer),
//! and the control plane's peak memory grows by far less than the flood.
//!
//! The canary listens on the test network's gateway address: reachable from
//! the control plane on the host and from the agent's container, and
//! nowhere else.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use zcaas_test_support::process::ServerProcess;
use zcaas_test_support::{build_binary_image, docker_inspect, Cleanup, World, TEST_LABEL};

const HOSTILE: &str = env!("CARGO_BIN_EXE_hostile-agent");
const TIMEOUT: Duration = Duration::from_secs(90);
/// Most the control plane's peak RSS may grow while it deals with the
/// hostile agent: a bound, far below the 100 MiB flood it would take to
/// buffer one answer.
const MEMORY_GROWTH_BOUND_KIB: u64 = 40 * 1024;

/// A TCP server on the test network's gateway address that counts the
/// connections it accepts — a followed redirect would be one — and answers
/// each with a 200 carrying a token, so that following would look like
/// success. Stops when dropped.
struct Canary {
    url: String,
    hits: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Canary {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Canary {
    async fn start(network: &str) -> Canary {
        let net = docker_inspect(network).expect("the test network exists");
        let gateway = net["IPAM"]["Config"][0]["Gateway"]
            .as_str()
            .unwrap_or_else(|| panic!("no gateway address on {network}: {net}"))
            .to_owned();
        let listener = tokio::net::TcpListener::bind((gateway.as_str(), 0))
            .await
            .expect("bind on the network's gateway address");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let hits = Arc::new(AtomicU32::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, peer)) = listener.accept().await {
                counter.fetch_add(1, SeqCst);
                eprintln!("canary: connection from {peer}");
                tokio::spawn(async move {
                    let body = r#"{"paired":true,"token":"zc_canary","response":"canary"}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        let canary = Canary { url, hits, task };
        canary.probe().await;
        canary
    }

    /// Proves the canary counts a connection from the host (where the
    /// control plane runs), so that zero later means "never contacted",
    /// then resets the count.
    async fn probe(&self) {
        let res = reqwest::Client::new()
            .get(format!("{}/probe", self.url))
            .send()
            .await
            .expect("the canary answers the host");
        assert!(res.status().is_success());
        assert_eq!(self.hits(), 1);
        self.hits.store(0, SeqCst);
    }

    fn hits(&self) -> u32 {
        self.hits.load(SeqCst)
    }
}

/// Removes the test's hostile image when dropped — after removing, by label,
/// every container of the test that could still use it (the world's
/// [`Cleanup`] again, which is idempotent), so the order of drops does not
/// matter, panics included.
struct ImageCleanup {
    cleanup: Cleanup,
    tag: String,
}

impl Drop for ImageCleanup {
    fn drop(&mut self) {
        self.cleanup.run();
        let _ = std::process::Command::new("docker")
            .args(["image", "rm", &self.tag])
            .output();
    }
}

/// One hostile deployment: the world, the canary, the hostile image, and a
/// `zcaas serve` process running that image as its runtime image. Fields
/// drop in order: the control plane first, then everything it created.
struct Hostile {
    /// The `zcaas serve` process (its memory is measured).
    server: ServerProcess,
    canary: Canary,
    jwt: String,
    /// `HOSTILE_MODE`, also the agent's name: container names are global
    /// to the engine, so each test's agent needs its own slug.
    mode: String,
    _data: tempfile::TempDir,
    _image: ImageCleanup,
    _world: World,
}

impl Hostile {
    /// Builds the image running `hostile-agent` with `HOSTILE_MODE=mode`
    /// (redirecting to the canary) and starts a control plane deploying it,
    /// with a retry budget of 1 so a failure is final.
    async fn start(mode: &str) -> Hostile {
        let world = World::start().await;
        let tag = format!("zcaas/hostile-agent:{}", world.prefix);
        let image = ImageCleanup {
            cleanup: Cleanup::new(world.prefix.clone()),
            tag: tag.clone(),
        };
        let canary = Canary::start(&world.network).await;
        let extra = format!(
            "ENV HOSTILE_MODE={mode} HOSTILE_LOCATION={}/stolen\nLABEL {TEST_LABEL}={} io.zcaas.managed=true\nEXPOSE 42617\n",
            canary.url, world.prefix
        );
        build_binary_image(&world.docker, &tag, Path::new(HOSTILE), &extra)
            .await
            .expect("hostile image");
        let data = tempfile::tempdir().expect("data dir");
        let server = ServerProcess::start(
            &world,
            data.path(),
            &[
                ("ZCAAS_RUNTIME_IMAGE", &tag),
                ("ZCAAS_RETRY_BUDGET", "1"),
                ("ZCAAS_HEALTH_TIMEOUT_SECS", "5"),
            ],
        )
        .await;
        let jwt = server.register("hostile").await;
        Hostile {
            server,
            canary,
            jwt,
            mode: mode.to_owned(),
            _data: data,
            _image: image,
            _world: world,
        }
    }

    /// Creates an agent; returns its id.
    async fn create_agent(&self) -> String {
        let body = self.server.agent_body(&format!("hostile {}", self.mode));
        let created = self.server.create_pending_agent(&self.jwt, body).await;
        created["id"].as_str().expect("id").to_owned()
    }

    /// Waits until agent `id` is RUNNING or ERROR; returns its record.
    async fn settle(&self, id: &str) -> Value {
        self.server
            .wait_status(&self.jwt, id, &["RUNNING", "ERROR"], TIMEOUT)
            .await
    }

    /// The control plane's peak resident memory so far (`VmHWM`), in KiB.
    fn peak_kib(&self) -> u64 {
        self.server
            .proc_status("VmHWM")
            .unwrap_or_else(|e| panic!("{e:#}"))
    }
}

fn assert_bounded(h: &Hostile, before_kib: u64) {
    let after = h.peak_kib();
    let growth = after.saturating_sub(before_kib);
    assert!(
        growth < MEMORY_GROWTH_BOUND_KIB,
        "the control plane's peak RSS grew by {growth} KiB ({before_kib} → {after} KiB)"
    );
}

/// `/pair` answers a redirect to the canary: the deploy fails with the
/// redirect as its reason, no token is kept, the canary is never contacted.
async fn pair_redirect(status: u16) {
    let h = Hostile::start(&format!("pair-{status}")).await;
    let before = h.peak_kib();
    let id = h.create_agent().await;
    let agent = h.settle(&id).await;
    assert_eq!(agent["status"], "ERROR", "{agent}");
    let reason = agent["lastError"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("redirect (HTTP {status})")) && reason.contains("never followed"),
        "{agent}"
    );
    assert_eq!(agent["paired"], false, "{agent}");
    assert_eq!(h.canary.hits(), 0, "the canary was reached");
    assert_bounded(&h, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_answering_307_is_an_error_and_not_followed() {
    pair_redirect(307).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_answering_302_is_an_error_and_not_followed() {
    pair_redirect(302).await;
}

/// `/health` streams 100 MiB to every poll: the agent never becomes
/// healthy, ends in ERROR, and no poll reads more than its cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_flood_ends_in_error_with_bounded_memory() {
    let h = Hostile::start("health-flood").await;
    let before = h.peak_kib();
    let id = h.create_agent().await;
    let agent = h.settle(&id).await;
    assert_eq!(agent["status"], "ERROR", "{agent}");
    let reason = agent["lastError"].as_str().unwrap_or_default();
    assert!(
        reason.contains("/health") && reason.contains("larger than"),
        "the reason names the oversize answer: {agent}"
    );
    assert_eq!(h.canary.hits(), 0, "the canary was reached");
    assert_bounded(&h, before);
}

/// Deploys an agent whose `/webhook` misbehaves per `mode`, sends it
/// messages through the control plane, and checks each answer is a 502
/// with the API's own short JSON error.
async fn webhook_refused(mode: &str) {
    let h = Hostile::start(mode).await;
    let before = h.peak_kib();
    let id = h.create_agent().await;
    let agent = h.settle(&id).await;
    assert_eq!(agent["status"], "RUNNING", "{agent}");
    for _ in 0..3 {
        let res = h
            .server
            .http
            .post(h.server.url(&format!("/api/agents/{id}/message")))
            .bearer_auth(&h.jwt)
            .json(&serde_json::json!({"message": "hello"}))
            .send()
            .await
            .expect("message");
        let status = res.status().as_u16();
        let location = res.headers().get("location").cloned();
        let text = res.text().await.expect("body");
        assert_eq!(status, 502, "{text}");
        assert!(location.is_none(), "a Location was passed through");
        assert!(text.len() < 1024, "{} bytes passed through", text.len());
        let body: Value = serde_json::from_str(&text).expect("a JSON error");
        // Whatever the API calls it, it is about the agent's answer, not
        // a timeout or an unreachable agent.
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(
            code.starts_with("agent_") && !["agent_timeout", "agent_unreachable"].contains(&code),
            "{body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    assert_eq!(h.canary.hits(), 0, "the canary was reached");
    assert_bounded(&h, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_redirect_is_refused_not_passed_through() {
    webhook_refused("webhook-302").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_flood_is_refused_with_bounded_memory() {
    webhook_refused("webhook-flood").await;
}
