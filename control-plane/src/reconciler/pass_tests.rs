//! The reconciler's pass against the in-memory orchestrator
//! ([`crate::orchestrator::fake`]), a real SQLite store in a tempdir and an
//! in-process gateway on 127.0.0.1:0 (host-port addressing: the agent's
//! claimed port is the test gateway's port). No engine; every wait bounded.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::model::{Agent, Plan, Role};
use crate::orchestrator::fake::{FakeOrchestrator, OnStart};
use crate::orchestrator::{ContainerSpec, Orchestrator as _};
use crate::store::{agents, users};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Mutex as StdMutex2;

const IMAGE: &str = "zcaas/agent-runtime:latest";
/// How long [`Harness::drive`] waits for a state: far above what a pass
/// takes (≈ 0.1 s, or a pairing timeout), so that a loaded machine (the CI
/// runs these beside compilers) cannot make a test fail.
const BOUND: Duration = Duration::from_secs(30);

/// The test gateway: one current code, the tokens it accepts, and the
/// knobs of the pairing-state tests.
#[derive(Default)]
struct Gateway {
    code: Option<String>,
    tokens: Vec<String>,
    /// Tokens handed out so far (names them).
    issued: usize,
    /// Pairing not enforced: `/api/status` lets everyone in (upstream with
    /// `require_pairing = false`).
    open: bool,
    /// Answers `GET /pair/code` (upstream 0.6+); 404 otherwise.
    serves_pair_code: bool,
}
type SharedGateway = Arc<StdMutex2<Gateway>>;

async fn pair(State(g): State<SharedGateway>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let mut g = g.lock().unwrap();
    let sent = headers.get("x-pairing-code").and_then(|v| v.to_str().ok());
    if sent.is_some() && sent == g.code.as_deref() {
        g.code = None;
        g.issued += 1;
        let token = format!("zc_token_{}", g.issued);
        g.tokens.push(token.clone());
        return (
            StatusCode::OK,
            Json(json!({"paired": true, "persisted": false, "token": token})),
        );
    }
    (
        StatusCode::FORBIDDEN,
        Json(json!({"error": "Invalid pairing code"})),
    )
}

async fn status(State(g): State<SharedGateway>, headers: HeaderMap) -> StatusCode {
    let sent = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let g = g.lock().unwrap();
    if g.open || sent.is_some_and(|t| g.tokens.contains(&t)) {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// `GET /pair/code` as upstream 0.6.9 answers it: the code while unpaired.
async fn pair_code(State(g): State<SharedGateway>) -> (StatusCode, Json<Value>) {
    let g = g.lock().unwrap();
    if !g.serves_pair_code {
        return (StatusCode::NOT_FOUND, Json(json!({})));
    }
    let code = if g.open || !g.tokens.is_empty() {
        None
    } else {
        g.code.clone()
    };
    (
        StatusCode::OK,
        Json(json!({"success": true, "pairing_required": !g.open, "pairing_code": code})),
    )
}

/// A listener on a free port of the store's port range (40000–50000: the
/// agents table checks it), so an agent's claimed port can be its gateway's.
async fn bind_in_port_range() -> tokio::net::TcpListener {
    use rand::Rng as _;
    let offset: u16 = rand::thread_rng().gen_range(0..10_000);
    for i in 0..10_000u16 {
        let port = 40_000 + (offset + i) % 10_000;
        if let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            return listener;
        }
    }
    panic!("no free port in 40000-50000");
}

struct Harness {
    handle: ReconcilerHandle,
    fake: FakeOrchestrator,
    store: Store,
    secrets: Arc<SecretBox>,
    gateway: SharedGateway,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Harness {
        Self::with(|_| {}).await
    }

    /// [`Harness::new`] with `tweak` applied to the configuration.
    async fn with(tweak: impl FnOnce(&mut Config)) -> Harness {
        let gateway: SharedGateway = Arc::default();
        let router = Router::new()
            .route("/pair", post(pair))
            .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
            .route("/api/status", get(status))
            .route("/pair/code", get(pair_code))
            .with_state(gateway.clone());
        let listener = bind_in_port_range().await;
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, router).await });

        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::with_data_dir(dir.path().to_owned());
        config.agent_host = "127.0.0.1".into();
        // Short (a silent runtime costs one whole pairing timeout), but with
        // room for a starved scheduler: a probe or a log read that misses
        // it fails the attempt, and two failed attempts give up.
        config.pairing_timeout = Duration::from_secs(4);
        config.health_timeout = Duration::from_secs(4);
        config.retry_budget = 2;
        config.retry_backoff_base = Duration::from_millis(10);
        config.retry_backoff_max = Duration::from_millis(20);
        config.runtime_image = IMAGE.into();
        tweak(&mut config);
        let url = format!("sqlite://{}", dir.path().join("zcaas.db").display());
        let db = Store::open(&url).await.unwrap();
        let secrets = Arc::new(SecretBox::load_or_create(&dir.path().join("master.key")).unwrap());

        // Every start prints a fresh code, which the gateway then accepts.
        let fake = FakeOrchestrator::new("inst-test", &[IMAGE]);
        let codes = gateway.clone();
        fake.on_start(move |_, n| {
            let code = format!("{:06}", 100_000 + n);
            codes.lock().unwrap().code = Some(code.clone());
            OnStart::PrintCode(code)
        });
        let ctx = Context {
            store: db.clone(),
            orchestrator: Arc::new(fake.clone()),
            gateway: GatewayClient::new(),
            secrets: secrets.clone(),
            config: Arc::new(config),
            events: EventBus::new(),
            metrics: crate::metrics::Metrics::new(),
        };
        // No background tasks: the test drives every pass itself.
        let handle = ReconcilerHandle {
            inner: Arc::new(Inner {
                ctx,
                slots: StdMutex::new(HashMap::new()),
                cancel: CancellationToken::new(),
                tracker: TaskTracker::new(),
                deploy_permits: Semaphore::new(4),
                image_build: Mutex::new(()),
                reported: sweep::Reported::default(),
                attached: super::networks::Attached::default(),
            }),
        };
        Harness {
            handle,
            fake,
            store: db,
            secrets,
            gateway,
            port,
            _dir: dir,
        }
    }

    /// A PENDING agent whose host port is the test gateway's.
    async fn agent(&self, slug: &str) -> Agent {
        let agent = self.unported(slug).await;
        assert!(self
            .store
            .lifecycle()
            .try_claim_port(&agent.id, self.port)
            .await
            .unwrap());
        self.get(&agent.id).await.unwrap()
    }

    /// A PENDING agent without a host port.
    async fn unported(&self, slug: &str) -> Agent {
        let user = self
            .store
            .users()
            .create(&users::NewUser {
                email: &format!("{slug}@example.test"),
                password_hash: "x",
                role: Role::User,
                plan: Plan::Enterprise,
            })
            .await
            .unwrap();
        let new = agents::NewAgent {
            id: format!("id-{slug}"),
            user_id: user.id,
            name: slug.into(),
            slug: slug.into(),
            agent_name: "Agent".into(),
            user_name: None,
            timezone: "UTC".into(),
            communication_style: None,
            provider: "openai".into(),
            provider_url: None,
            model: "gpt-4o-mini".into(),
            temperature: 0.7,
            memory_backend: "sqlite".into(),
            auto_save: true,
            encrypted_api_key: None,
            encrypted_channels: None,
            subdomain: format!("{slug}.agents.test"),
            image: IMAGE.into(),
            memory_limit_mb: 256,
            nano_cpus: 500_000_000,
            channel_tokens: Vec::new(),
        };
        let (agent, _) = self
            .store
            .agents()
            .insert_pending(&new, None)
            .await
            .unwrap();
        agent
    }

    async fn get(&self, id: &str) -> Option<Agent> {
        self.store.lifecycle().get(id).await.unwrap()
    }

    /// Runs passes (as the reconciler's wakes would) until `done` holds for
    /// the row (`None`: deleted); panics after [`BOUND`].
    async fn drive(&self, id: &str, done: impl Fn(Option<&Agent>) -> bool) -> Option<Agent> {
        tokio::time::timeout(BOUND, async {
            loop {
                let outcome = self.handle.pass(id, &CancellationToken::new()).await;
                let agent = self.get(id).await;
                if done(agent.as_ref()) {
                    return agent;
                }
                let pause = match outcome {
                    Outcome::RequeueAfter(d) => d.min(Duration::from_millis(50)),
                    Outcome::Settled => Duration::from_millis(10),
                };
                tokio::time::sleep(pause).await;
            }
        })
        .await
        .expect("the agent did not reach the expected state in time")
    }

    async fn running(&self, id: &str) -> Agent {
        self.drive(id, |a| a.is_some_and(|a| a.status == Status::Running))
            .await
            .unwrap()
    }

    fn token_of(&self, agent: &Agent) -> String {
        let c = agent.encrypted_token.as_deref().expect("a stored token");
        self.secrets
            .decrypt(&agent.id, crate::secrets::SecretField::Token, c)
            .unwrap()
    }
}

#[tokio::test]
async fn a_pending_agent_is_deployed_started_and_paired() {
    let h = Harness::new().await;
    let agent = h.agent("deploy").await;
    let done = h.running(&agent.id).await;
    let w = h
        .fake
        .workload(&agent.container_name())
        .expect("a workload");
    assert!(w.running);
    assert_eq!(h.fake.starts(&w.id), 1);
    assert_eq!(done.container_id.as_deref(), Some(w.id.as_str()));
    assert_eq!(done.paired_started_at, w.started_at);
    assert_eq!(h.token_of(&done), "zc_token_1");
    assert!(h
        .fake
        .files(&w.id)
        .iter()
        .any(|f| f.path == ".zeroclaw/config.toml"));
    assert!(h.fake.volume_exists(&agent.volume_name()));
}

/// The profile the harness's image (no labels) is driven as.
fn unlabelled_image_profile() -> crate::runtime_profile::RuntimeProfile {
    crate::runtime_profile::detect(&Default::default())
}

/// The image's profile label chooses the command and the config dialect:
/// a `zeroclaw-v3` image gets `daemon`, a V3 file and the path-form env.
#[tokio::test]
async fn the_image_label_chooses_the_runtime_profile() {
    use crate::runtime_profile::PROFILE_LABEL;
    let h = Harness::new().await;
    h.fake.set_image_labels(
        IMAGE,
        [(PROFILE_LABEL.to_owned(), "zeroclaw-v3".to_owned())].into(),
    );
    let agent = h.agent("vthree").await;
    h.running(&agent.id).await;
    let name = agent.container_name();
    let spec = h.fake.spec(&name).expect("workload");
    assert_eq!(spec.command, vec!["daemon"]);
    assert!(
        spec.env
            .contains(&"ZEROCLAW_gateway__port=42617".to_owned()),
        "{:?}",
        spec.env
    );
    let config = h
        .fake
        .files(&name)
        .into_iter()
        .find(|f| f.path == ".zeroclaw/config.toml")
        .expect("config");
    let table: toml::Table = String::from_utf8(config.contents).unwrap().parse().unwrap();
    assert_eq!(table["schema_version"].as_integer(), Some(3));
}

/// An unlabelled image is driven as upstream V1: `daemon`, a V1 file.
#[tokio::test]
async fn an_unlabelled_image_gets_v1() {
    let h = Harness::new().await;
    let agent = h.agent("vone").await;
    h.running(&agent.id).await;
    let name = agent.container_name();
    let spec = h.fake.spec(&name).expect("workload");
    assert_eq!(spec.command, vec!["daemon"]);
    assert!(spec.env.contains(&"ZEROCLAW_GATEWAY_PORT=42617".to_owned()));
    let config = h
        .fake
        .files(&name)
        .into_iter()
        .find(|f| f.path == ".zeroclaw/config.toml")
        .expect("config");
    let table: toml::Table = String::from_utf8(config.contents).unwrap().parse().unwrap();
    assert!(table.get("schema_version").is_none());
    assert!(table.contains_key("default_provider"));
}

/// A workload left by a previous process (created from this spec, never
/// started) is adopted: no second workload, started once.
#[tokio::test]
async fn an_existing_workload_is_adopted() {
    let h = Harness::new().await;
    let agent = h.agent("adopt").await;
    let profile = unlabelled_image_profile();
    let files =
        crate::agent_files::render(&agent, None, &Default::default(), profile.dialect()).unwrap();
    let hash = ops::spec_hash(
        &h.handle.inner.ctx,
        &agent,
        profile,
        &files,
        &crate::agent_files::SeededTokens::none(),
    );
    let spec: ContainerSpec =
        ops::container_spec(&h.handle.inner.ctx, &agent, profile, Some(h.port), &hash);
    let id = h.fake.preexisting(&spec, &[]);
    h.running(&agent.id).await;
    let all = h.fake.list_managed().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, id);
    assert_eq!(h.fake.starts(&id), 1);
    // Its files were written on adoption.
    assert!(!h.fake.files(&id).is_empty());
}

/// A crash mid-deploy leaves a STARTING row and a created workload: the next
/// pass resumes from there.
#[tokio::test]
async fn a_deploy_cut_short_after_the_create_is_resumed() {
    let h = Harness::new().await;
    let agent = h.agent("resume").await;
    // Up to STARTING only, as a process killed after the row would leave it.
    h.store
        .lifecycle()
        .transition(
            &agent.id,
            Status::Pending,
            Status::Starting,
            "deploy started",
            None,
        )
        .await
        .unwrap()
        .expect("PENDING → STARTING");
    let agent = h.get(&agent.id).await.unwrap();
    let profile = unlabelled_image_profile();
    let files =
        crate::agent_files::render(&agent, None, &Default::default(), profile.dialect()).unwrap();
    let hash = ops::spec_hash(
        &h.handle.inner.ctx,
        &agent,
        profile,
        &files,
        &crate::agent_files::SeededTokens::none(),
    );
    let spec = ops::container_spec(&h.handle.inner.ctx, &agent, profile, Some(h.port), &hash);
    let id = h.fake.preexisting(&spec, &files);
    let done = h.running(&agent.id).await;
    assert_eq!(done.container_id.as_deref(), Some(id.as_str()));
    assert_eq!(h.fake.starts(&id), 1);
}

/// A restart behind our back is a new incarnation: a new start instant, a
/// new code, a new token.
#[tokio::test]
async fn a_restart_behind_our_back_is_re_paired() {
    let h = Harness::new().await;
    let agent = h.agent("repair").await;
    let first = h.running(&agent.id).await;
    let name = agent.container_name();
    h.fake.restart_behind_our_back(&name);
    let restarted = h.fake.workload(&name).unwrap();
    assert!(restarted.started_at > first.paired_started_at);
    let again = h
        .drive(&agent.id, |a| {
            a.is_some_and(|a| a.paired_started_at == restarted.started_at)
        })
        .await
        .unwrap();
    assert_eq!(again.status, Status::Running);
    assert_eq!(h.token_of(&first), "zc_token_1");
    assert_eq!(h.token_of(&again), "zc_token_2");
    assert_eq!(h.fake.starts(&name), 2);
}

/// A workload that exits at every start uses up the retry budget: ERROR
/// "giving up", the workload removed, the volume kept (the agent had run).
#[tokio::test]
async fn a_crash_loop_gives_up_after_the_retry_budget() {
    let h = Harness::new().await;
    let agent = h.agent("crashloop").await;
    h.running(&agent.id).await;
    // From now on every start crashes; a crash of the running one starts it.
    h.fake.on_start(|_, _| OnStart::Crash(3));
    h.fake.crash(&agent.container_name(), 3);
    let done = h
        .drive(&agent.id, |a| {
            a.is_some_and(|a| {
                a.status == Status::Error
                    && a.next_attempt_at.is_none()
                    && a.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("giving up"))
            })
        })
        .await
        .unwrap();
    assert_eq!(done.attempts, 2, "{:?}", done.last_error);
    assert!(h.fake.workload(&agent.container_name()).is_none());
    assert!(h.fake.volume_exists(&agent.volume_name()));
    assert!(done.container_port.is_none());
}

#[tokio::test]
async fn delete_removes_the_workload_and_the_volume() {
    let h = Harness::new().await;
    let agent = h.agent("delete").await;
    h.running(&agent.id).await;
    h.store
        .lifecycle()
        .set_desired(&agent.id, crate::status::DesiredState::Deleted)
        .await
        .unwrap();
    h.drive(&agent.id, |a| a.is_none()).await;
    assert!(h.fake.workload(&agent.container_name()).is_none());
    assert!(!h.fake.volume_exists(&agent.volume_name()));
    assert!(h.gateway.lock().unwrap().code.is_none());
}

/// The logs missed the code (nothing printed), but `/pair/code` has it: the
/// deploy pairs with it, sending it once.
#[tokio::test]
async fn a_code_the_logs_missed_is_taken_from_pair_code() {
    let h = Harness::new().await;
    h.gateway.lock().unwrap().serves_pair_code = true;
    let codes = h.gateway.clone();
    h.fake.on_start(move |_, n| {
        codes.lock().unwrap().code = Some(format!("{:06}", 200_000 + n));
        OnStart::Silent
    });
    let agent = h.agent("paircode").await;
    let done = h.running(&agent.id).await;
    assert_eq!(h.token_of(&done), "zc_token_1");
    assert_eq!(h.fake.starts(&agent.container_name()), 1);
}

/// A runtime that kept tokens zcaas does not hold (ours rejected) prints no
/// code: the configuration is written again with an empty token store and
/// the container restarted once; that start prints a code and is paired.
/// Known from `/pair/code` where the runtime answers it…
#[tokio::test]
async fn a_runtime_paired_with_foreign_tokens_is_reset_once() {
    foreign_tokens_reset(true).await;
}

/// …and from its silence until the pairing timeout where it does not.
#[tokio::test]
async fn a_silent_runtime_rejecting_the_stored_token_is_reset_once() {
    foreign_tokens_reset(false).await;
}

async fn foreign_tokens_reset(serves_pair_code: bool) {
    let h = Harness::new().await;
    h.gateway.lock().unwrap().serves_pair_code = serves_pair_code;
    let agent = h.agent("foreign").await;
    h.running(&agent.id).await;
    let name = agent.container_name();
    h.restart_into_a_state_then_reset(&agent, |g| {
        // Came back with someone else's token only, no code.
        g.tokens = vec!["zc_foreign".into()];
    })
    .await;
    let files = h.fake.files(&name);
    assert!(files.iter().any(|f| f.path == ".zeroclaw/config.toml"));
    assert!(files
        .iter()
        .any(|f| f.path == ".zeroclaw/paired_tokens.txt" && f.mode == 0o600));
}

/// Pairing disabled by the runtime's own configuration is never accepted:
/// one reset (files written again, one restart) per attempt, then ERROR
/// with the reason in `lastError`; a runtime that honours the rewritten
/// configuration is paired after that one restart.
#[tokio::test]
async fn pairing_disabled_by_the_runtime_is_reset_once_then_reported() {
    // A backoff no pass outlives: the pass that records the ERROR must stop
    // there, not run the automatic retry in the same pass (with 10 ms, a
    // slow machine did, and the retry's different error hid the reported
    // one).
    let h = Harness::with(|c| {
        c.retry_backoff_base = Duration::from_secs(60);
        c.retry_backoff_max = Duration::from_secs(60);
    })
    .await;
    h.gateway.lock().unwrap().open = true;
    h.fake.on_start(|_, _| OnStart::Silent);
    let agent = h.agent("open").await;
    let done = h
        .drive(&agent.id, |a| {
            a.is_some_and(|a| {
                a.status == Status::Error
                    && a.last_error.as_deref().is_some_and(|e| {
                        e.contains("does not require pairing")
                            && e.contains("restarted the agent once")
                    })
            })
        })
        .await
        .unwrap();
    assert!(
        done.encrypted_token.is_none(),
        "an open runtime's 'token' is never stored"
    );

    // A runtime that reads the rewritten configuration.
    let h = Harness::new().await;
    h.gateway.lock().unwrap().serves_pair_code = true;
    let agent = h.agent("reopen").await;
    h.running(&agent.id).await;
    h.restart_into_a_state_then_reset(&agent, |g| g.open = true)
        .await;
}

impl Harness {
    /// The RUNNING `agent` is restarted behind our back into the state
    /// `at_restart` sets (printing nothing); the next start — the control
    /// plane's one reset — reads the rewritten files: pairing enforced, no
    /// tokens, a fresh code printed. Drives until that start is paired and
    /// checks it took exactly that one reset.
    async fn restart_into_a_state_then_reset(
        &self,
        agent: &Agent,
        at_restart: impl Fn(&mut Gateway) + Send + Sync + 'static,
    ) {
        let name = agent.container_name();
        let first = self.fake.workload(&name).unwrap().started_at;
        let g = self.gateway.clone();
        self.fake.on_start(move |_, n| {
            let mut g = g.lock().unwrap();
            g.code = None;
            if n == 2 {
                at_restart(&mut g);
                OnStart::Silent
            } else {
                g.open = false;
                g.tokens.clear();
                let code = format!("{:06}", 300_000 + n);
                g.code = Some(code.clone());
                OnStart::PrintCode(code)
            }
        });
        self.fake.restart_behind_our_back(&name);
        let again = self
            .drive(&agent.id, |a| {
                a.is_some_and(|a| a.paired_started_at > first)
            })
            .await
            .unwrap();
        assert_eq!(again.status, Status::Running);
        assert_eq!(self.token_of(&again), "zc_token_2");
        assert_eq!(self.fake.starts(&name), 3, "one reset restart, no more");
        assert_eq!(
            again.paired_started_at,
            self.fake.workload(&name).unwrap().started_at
        );
    }
}

/// Agents spread over networks: with one agent per network, an agent whose
/// first network is taken deploys on `<network>-2`, which is created and
/// which the `network_attach` containers join (a missing one is no
/// failure); the network is recorded and kept across a redeploy.
#[tokio::test]
async fn a_full_network_sends_the_next_agent_to_the_next() {
    let h = Harness::with(|c| {
        c.agents_per_network = 1;
        c.network_attach = vec!["edge".into(), "missing-edge".into()];
    })
    .await;
    h.fake.add_edge("edge");
    let other = h.unported("other").await;
    assert_eq!(
        h.store
            .lifecycle()
            .claim_network(&other.id, "zeroone-net", 1)
            .await
            .unwrap()
            .as_deref(),
        Some("zeroone-net")
    );
    let agent = h.agent("second").await;
    let done = h.running(&agent.id).await;
    assert_eq!(done.network.as_deref(), Some("zeroone-net-2"));
    let spec = h.fake.spec(&agent.container_name()).expect("a workload");
    assert_eq!(spec.network, "zeroone-net-2");
    assert_eq!(spec.host_port, Some(h.port), "host-port mode publishes");
    assert!(h.fake.networks().contains(&"zeroone-net-2".to_owned()));
    assert_eq!(h.fake.edge_networks("edge"), ["zeroone-net-2"]);

    // A redeploy keeps the network, even with room on the first again.
    h.store.lifecycle().delete(&other.id).await.unwrap();
    h.store
        .lifecycle()
        .transition(
            &agent.id,
            Status::Running,
            Status::Stopping,
            "restart",
            None,
        )
        .await
        .unwrap();
    let again = h
        .drive(&agent.id, |a| {
            a.is_some_and(|a| a.status == Status::Running)
        })
        .await
        .unwrap();
    assert_eq!(again.network.as_deref(), Some("zeroone-net-2"));
}

#[tokio::test]
async fn the_stats_poll_records_a_running_agents_figures() {
    let h = Harness::new().await;
    let agent = h.agent("polled").await;
    let agent = h.running(&agent.id).await;
    let before = agent
        .last_health_at
        .expect("stamped by the move to RUNNING");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(super::stats::poll_once(&h.handle).await, 1);
    let polled = h.get(&agent.id).await.unwrap();
    // The fake's figures, and the gateway's `/health` answered.
    assert_eq!(
        (polled.memory_mb, polled.cpu_percent),
        (Some(10.0), Some(1.0))
    );
    assert!(polled.last_health_at.expect("health time") > before);
    assert_eq!(polled.channel_health, None);
}

/// The periodic resync compares one listing with what each agent's last
/// settled pass saw: a settled agent costs no pass; its workload dying
/// wakes it; a write to its row wakes it.
#[tokio::test]
async fn the_periodic_resync_wakes_only_what_changed() {
    let h = Harness::new().await;
    let agent = h.agent("quiet").await;
    let agent = h.running(&agent.id).await;
    let woken = || h.handle.inner.ctx.metrics.resync_woken.get();
    // Settled through a scheduled pass (one that remembers).
    h.handle.reconcile_now(&agent.id).await;
    let passes = h.handle.inner.ctx.metrics.reconcile_passes.get();
    h.handle.resync_changed().await;
    h.handle.resync_changed().await;
    assert_eq!(woken(), 0, "a settled agent is not woken");
    assert_eq!(h.handle.inner.ctx.metrics.reconcile_passes.get(), passes);

    // A write to its row (here: desired state set again, same value).
    h.store
        .lifecycle()
        .set_desired(&agent.id, crate::status::DesiredState::Running)
        .await
        .unwrap();
    h.handle.resync_changed().await;
    assert_eq!(woken(), 1, "its row was written");
    // The woken pass finishes (and remembers what it saw).
    tokio::time::timeout(BOUND, async {
        loop {
            let idle = {
                let slots = h.handle.inner.slots.lock().unwrap();
                slots
                    .get(&agent.id)
                    .is_some_and(|s| !s.queued && s.current.is_none() && s.settled.is_some())
            };
            if idle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the woken pass settles");
    h.handle.resync_changed().await;
    assert_eq!(woken(), 1, "settled again");

    h.fake.crash(&agent.container_name(), 1);
    h.handle.resync_changed().await;
    assert_eq!(woken(), 2, "its workload exited");
}
