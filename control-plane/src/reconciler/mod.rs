//! The reconciler: level-triggered, at most one reconcile per agent at a
//! time. It reads desired state from the database and observed state from
//! Docker (never trusted from memory) and closes the gap: deploy, pair,
//! re-pair, stop, delete (STYLE.md items 9–13; the kube-rs controller model).
//!
//! Woken by API writes ([`Reconciler::wake`]), by the engine's events
//! ([`watch`]) and by a periodic resync that wakes the agents whose row or
//! workload changed since their last settled pass ([`resync`]; every agent
//! on each event-stream (re)connect and every 5 minutes); each pass
//! re-plans after every step until the agent is settled, so a pass
//! interrupted anywhere is finished by the next.
//!
//! Of several replicas on one database only the leader reconciles
//! ([`leader`]: a lease with a TTL); a [`ReconcilerHandle`] is the
//! reconciler of one leadership term, and [`Reconciler`] (`replica.rs`) is
//! what the HTTP layer holds on every replica.

pub mod leader;
pub mod networks;
pub mod ops;
pub mod pairing;
#[cfg(test)]
#[path = "pass_tests.rs"]
mod pass_tests;
pub mod plan;
pub mod ports;
pub mod replica;
pub mod requests;
pub mod resync;
pub mod stats;
pub mod sweep;
#[cfg(test)]
pub(crate) mod testing;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::events::EventBus;
use crate::gateway::GatewayClient;
use crate::orchestrator::{Orchestrator, OrchestratorError};
use crate::secrets::SecretBox;
use crate::status::Status;
use crate::store::Store;
use plan::Step;
pub use replica::Reconciler;

/// How often the fleet is compared with the engine even without a wake
/// ([`resync`]).
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(10);
/// Delay before retrying a pass that failed on an infrastructure error.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);
/// Steps one pass may take before it yields (a settled agent needs one).
const MAX_STEPS_PER_PASS: usize = 8;

/// Why a lifecycle request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The agent does not exist (or is not the caller's: same answer).
    #[error("agent not found")]
    NotFound,
    /// The state machine forbids `action` from `status`.
    #[error("cannot {action} an agent that is {status}")]
    Conflict {
        status: Status,
        action: &'static str,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What the reconciler works with.
#[derive(Clone)]
pub struct Context {
    pub store: Store,
    /// The engine agents run on (Docker in production, a fake in tests).
    pub orchestrator: Arc<dyn Orchestrator>,
    pub gateway: GatewayClient,
    pub secrets: Arc<SecretBox>,
    pub config: Arc<Config>,
    pub events: EventBus,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Per-agent scheduling state.
#[derive(Default)]
struct Slot {
    /// Held for the whole of a pass: one reconcile per agent at a time.
    lock: Arc<Mutex<()>>,
    /// A pass is queued and has not started yet (wakes coalesce into it).
    queued: bool,
    /// Cancels the pass under way (used when the agent is being deleted).
    current: Option<CancellationToken>,
    /// Docker reported an `oom` event for this agent's container since its
    /// last successful start (`State.OOMKilled` alone is unreliable).
    oom_seen: bool,
    /// What the last pass saw when it left the agent settled; cleared when
    /// a pass begins ([`resync`]).
    settled: Option<resync::Fingerprint>,
}

pub(crate) struct Inner {
    ctx: Context,
    slots: StdMutex<HashMap<String, Slot>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// Bounds Docker-heavy deploys at once (moby #42096).
    deploy_permits: Semaphore,
    /// One image build at a time.
    image_build: Mutex<()>,
    /// What the orphan sweep already reported.
    reported: sweep::Reported,
    /// The agents' networks this term ensured and attached the edge
    /// containers to.
    attached: networks::Attached,
}

/// Handle to the reconciler of one leadership term (its tasks stop with the
/// term). Cheap to clone.
#[derive(Clone)]
pub struct ReconcilerHandle {
    inner: Arc<Inner>,
}

/// Starts the reconciler's tasks on `tracker`; they stop when `cancel` fires.
/// The first resync runs at once, so rows left mid-transition by a previous
/// process (STARTING, STOPPING) are resumed.
pub fn spawn(ctx: Context, cancel: CancellationToken, tracker: &TaskTracker) -> ReconcilerHandle {
    let permits = ctx.config.max_concurrent_deploys.max(1);
    let handle = ReconcilerHandle {
        inner: Arc::new(Inner {
            ctx,
            slots: StdMutex::new(HashMap::new()),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
            deploy_permits: Semaphore::new(permits),
            image_build: Mutex::new(()),
            reported: sweep::Reported::default(),
            attached: networks::Attached::default(),
        }),
    };
    // The watcher resyncs on every (re)connect, the first one included, so
    // rows left mid-transition by a previous process are resumed at once.
    tracker.spawn(watch::run(handle.clone(), cancel.clone()));
    tracker.spawn(stats::run(handle.clone(), cancel.clone()));
    let resync = handle.clone();
    tracker.spawn(async move {
        for round in 1u32.. {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(RESYNC_INTERVAL) => {
                    if round % resync::FULL_RESYNC_EVERY == 0 {
                        resync.resync_all().await;
                    } else {
                        resync.resync_changed().await;
                    }
                    resync.sweep_orphans().await;
                }
            }
        }
    });
    handle
}

/// The result of one pass.
enum Outcome {
    Settled,
    RequeueAfter(Duration),
}

impl ReconcilerHandle {
    /// Asks for a reconcile of `agent_id` soon (coalesced; never blocks).
    pub fn wake(&self, agent_id: &str) {
        let lock = {
            let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            let slot = slots.entry(agent_id.to_owned()).or_default();
            if slot.queued {
                return;
            }
            slot.queued = true;
            slot.lock.clone()
        };
        let this = self.clone();
        let id = agent_id.to_owned();
        self.inner.tracker.spawn(async move {
            let guard = tokio::select! {
                g = lock.lock_owned() => g,
                _ = this.inner.cancel.cancelled() => return,
            };
            let token = this.begin_pass(&id);
            let outcome = this.pass(&id, &token).await;
            this.end_pass(&id);
            drop(guard);
            if let Outcome::RequeueAfter(delay) = outcome {
                this.wake_after(id, delay);
            }
        });
    }

    /// Runs a reconcile of `agent_id` and waits for it to finish. A pass
    /// already under way is cancelled first when the agent is being deleted,
    /// so a long deploy does not delay its own deletion: it stops at its next
    /// cancellation point (a wait), never inside a Docker call that creates
    /// something, so nothing it started can complete after the deletion.
    pub async fn reconcile_now(&self, agent_id: &str) {
        let lock = self.cancel_if_deleting(agent_id).await;
        let _guard = lock.lock().await;
        let token = self.begin_pass(agent_id);
        if let Outcome::RequeueAfter(delay) = self.pass(agent_id, &token).await {
            self.wake_after(agent_id.to_owned(), delay);
        }
        self.end_pass(agent_id);
    }

    /// A lifecycle request for `agent_id` was written on another replica
    /// (a forwarded wake): cancels the pass under way if the agent is being
    /// deleted, as [`ReconcilerHandle::reconcile_now`] does, then wakes it.
    pub async fn request(&self, agent_id: &str) {
        self.cancel_if_deleting(agent_id).await;
        self.wake(agent_id);
    }

    /// Cancels the agent's pass under way if its desired state is
    /// `deleted`; returns the agent's pass lock.
    async fn cancel_if_deleting(&self, agent_id: &str) -> Arc<Mutex<()>> {
        let deleting = matches!(
            self.inner.ctx.store.lifecycle().get(agent_id).await,
            Ok(Some(a)) if a.desired_state == crate::status::DesiredState::Deleted
        );
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry(agent_id.to_owned()).or_default();
        if let (true, Some(current)) = (deleting, &slot.current) {
            current.cancel();
        }
        slot.lock.clone()
    }

    /// Runs one reconcile pass for every agent in the store, `concurrency` at
    /// a time, and waits for all of them: a full reconcile pass. Returns the
    /// number of agents reconciled.
    pub async fn reconcile_all(&self, concurrency: usize) -> Result<usize, sqlx::Error> {
        use futures::StreamExt;
        let agents = self.inner.ctx.store.lifecycle().list_all().await?;
        let n = agents.len();
        futures::stream::iter(agents)
            .for_each_concurrent(concurrency.max(1), |agent| async move {
                self.reconcile_now(&agent.id).await;
            })
            .await;
        Ok(n)
    }

    /// Wakes every agent in the store (startup and periodic resync).
    pub async fn resync_all(&self) {
        match self.inner.ctx.store.lifecycle().list_all().await {
            Ok(agents) => {
                for agent in agents {
                    self.wake(&agent.id);
                }
            }
            Err(e) => tracing::error!(error = %e, "resync: listing agents failed"),
        }
    }

    /// Wakes the agents whose row or workload changed since their last
    /// settled pass, or that never settled ([`resync::to_wake`]), from one
    /// listing of the engine; wakes every agent when the listing fails.
    pub async fn resync_changed(&self) {
        let ctx = &self.inner.ctx;
        let began = std::time::Instant::now();
        let rows = match ctx.store.lifecycle().list_all().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "resync: listing agents failed");
                return;
            }
        };
        let listed = match ctx.orchestrator.list_workloads().await {
            Ok(listed) => listed,
            Err(e) => {
                ctx.metrics.docker_error("list");
                tracing::warn!(error = %e, "resync: listing workloads failed; waking every agent");
                for agent in &rows {
                    self.wake(&agent.id);
                }
                return;
            }
        };
        let woken = {
            let slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            let settled: HashMap<String, resync::Fingerprint> = slots
                .iter()
                .filter_map(|(id, slot)| Some((id.clone(), slot.settled.clone()?)))
                .collect();
            resync::to_wake(&rows, &listed, &settled)
        };
        for id in &woken {
            self.wake(id);
        }
        ctx.metrics
            .resync_seconds
            .observe(began.elapsed().as_secs_f64());
        ctx.metrics.resync_woken.inc_by(woken.len() as u64);
        tracing::debug!(agents = rows.len(), woken = woken.len(), "resync");
    }

    /// Remembers what a pass that left `agent` settled saw of it.
    fn remember_settled(
        &self,
        agent: &crate::model::Agent,
        observed: Option<&crate::orchestrator::ObservedContainer>,
    ) {
        if !resync::Fingerprint::rememberable(agent) {
            return;
        }
        let fingerprint =
            resync::Fingerprint::of(agent, observed.map(|c| (c.id.as_str(), c.state.as_str())));
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get_mut(&agent.id) {
            slot.settled = Some(fingerprint);
        }
    }

    /// One orphan sweep ([`sweep::sweep`]) with the configured grace;
    /// failures are logged (the next resync sweeps again).
    pub async fn sweep_orphans(&self) {
        let ctx = &self.inner.ctx;
        match sweep::sweep(
            &ctx.store,
            ctx.orchestrator.as_ref(),
            &ctx.config.network,
            ctx.config.orphan_grace,
            &self.inner.reported,
        )
        .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "orphan sweep"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "orphan sweep failed"),
        }
    }

    fn wake_after(&self, id: String, delay: Duration) {
        let this = self.clone();
        self.inner.tracker.spawn(async move {
            tokio::select! {
                _ = this.inner.cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => this.wake(&id),
            }
        });
    }

    fn begin_pass(&self, id: &str) -> CancellationToken {
        let token = self.inner.cancel.child_token();
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry(id.to_owned()).or_default();
        slot.queued = false;
        slot.current = Some(token.clone());
        slot.settled = None;
        token
    }

    fn end_pass(&self, id: &str) {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get_mut(id) {
            slot.current = None;
        }
    }

    /// One level-triggered pass: re-read the row and the container, plan,
    /// act, and repeat until the agent is settled. `cancel` stops it between
    /// steps and at the waits inside a step (`ops::until_cancelled`); a
    /// cancelled step records no failure.
    async fn pass(&self, id: &str, cancel: &CancellationToken) -> Outcome {
        let inner = &*self.inner;
        let ctx = &inner.ctx;
        ctx.metrics.reconcile_passes.inc();
        for _ in 0..MAX_STEPS_PER_PASS {
            if cancel.is_cancelled() {
                return Outcome::Settled;
            }
            let agent = match ctx.store.lifecycle().get(id).await {
                Ok(Some(agent)) => agent,
                Ok(None) => {
                    self.forget(id);
                    return Outcome::Settled;
                }
                Err(e) => {
                    tracing::error!(agent_id = id, error = %e, "reading agent failed");
                    return Outcome::RequeueAfter(ERROR_REQUEUE);
                }
            };
            let observed = match ctx.orchestrator.inspect(&agent.container_name()).await {
                // A container by that name that is not this agent's (or not
                // this installation's) is not its container (the deploy
                // reports the name conflict).
                Ok(c) => c.filter(|c| {
                    c.agent_id.as_deref() == Some(agent.id.as_str())
                        && ctx.orchestrator.is_owned(&c.labels)
                }),
                Err(e) => {
                    ctx.metrics.docker_error("inspect");
                    tracing::warn!(agent_id = id, error = %e, "inspecting container failed");
                    return Outcome::RequeueAfter(ERROR_REQUEUE);
                }
            };
            let mut observed = observed;
            if let Some(c) = observed.as_mut() {
                // An `oom` event plus exit 137 is an OOM kill even when
                // `State.OOMKilled` says otherwise.
                if !c.running && c.exit_code == Some(137) && self.take_oom(id) {
                    c.oom_killed = true;
                }
            }
            let step = plan::plan(&agent, observed.as_ref(), Utc::now());
            let step_name = step.name();
            // For steps whose failure is handled by `fail`, the step's own
            // outcome differs from the outcome of the handling.
            let mut step_ok = None;
            tracing::debug!(agent_id = id, slug = %agent.slug, ?step, "reconcile step");
            let result = match step {
                Step::Idle => {
                    self.remember_settled(&agent, observed.as_ref());
                    return Outcome::Settled;
                }
                Step::WaitUntil(at) => {
                    let delay = (at - Utc::now()).to_std().unwrap_or_default();
                    return Outcome::RequeueAfter(delay);
                }
                Step::Delete => {
                    let done = ops::delete(inner, &agent).await;
                    if done.is_ok() {
                        self.forget(id);
                        return Outcome::Settled;
                    }
                    done
                }
                Step::BeginDeploy => {
                    ops::crash_point("after-row");
                    ops::transition(
                        ctx,
                        &agent,
                        Status::Pending,
                        Status::Starting,
                        "deploy started",
                    )
                    .await
                    .map(|_| ())
                }
                Step::Start => {
                    let began = std::time::Instant::now();
                    match ops::start(inner, &agent, cancel).await {
                        Ok(()) => {
                            ctx.metrics
                                .deploy_seconds
                                .observe(began.elapsed().as_secs_f64());
                            Ok(())
                        }
                        // Cancelled (deletion, shutdown): not a failure.
                        Err(_) if cancel.is_cancelled() => return Outcome::Settled,
                        Err(e) => {
                            step_ok = Some(false);
                            if e.downcast_ref::<OrchestratorError>().is_some() {
                                ctx.metrics.docker_error(step_name);
                            }
                            ops::fail(inner, &agent, &format!("{e:#}")).await
                        }
                    }
                }
                Step::Stop => ops::stop(inner, &agent).await,
                Step::EnforceStopped => ops::enforce_stopped(inner, &agent).await,
                Step::Repair { reason } => {
                    match ops::repair(inner, &agent, &reason, cancel).await {
                        Ok(()) => {
                            ctx.metrics.repairs.inc();
                            Ok(())
                        }
                        Err(_) if cancel.is_cancelled() => return Outcome::Settled,
                        Err(e) => {
                            step_ok = Some(false);
                            ops::fail(inner, &agent, &format!("re-pairing failed: {e:#}")).await
                        }
                    }
                }
                Step::Fail { reason } => ops::fail(inner, &agent, &reason).await,
                Step::ResetBackoff => ctx
                    .store
                    .lifecycle()
                    .reset_backoff(id)
                    .await
                    .map_err(Into::into),
                Step::Retry => {
                    let reason = format!(
                        "automatic retry after: {}",
                        agent.last_error.as_deref().unwrap_or("a failure")
                    );
                    ops::transition(ctx, &agent, Status::Error, Status::Pending, &reason)
                        .await
                        .map(|_| ())
                }
            };
            ctx.metrics
                .step(step_name, step_ok.unwrap_or(result.is_ok()));
            if let Err(e) = result {
                if e.downcast_ref::<OrchestratorError>().is_some() {
                    ctx.metrics.docker_error(step_name);
                }
                tracing::warn!(agent_id = id, slug = %agent.slug, error = %format!("{e:#}"), "reconcile step failed");
                return Outcome::RequeueAfter(ERROR_REQUEUE);
            }
        }
        Outcome::RequeueAfter(Duration::ZERO)
    }

    /// Remembers an `oom` event for the agent's container.
    fn note_oom(&self, id: &str) {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(id.to_owned()).or_default().oom_seen = true;
    }

    /// Takes (and clears) the OOM note of an agent.
    fn take_oom(&self, id: &str) -> bool {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .get_mut(id)
            .is_some_and(|s| std::mem::take(&mut s.oom_seen))
    }

    fn forget(&self, id: &str) {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.get(id).is_some_and(|s| !s.queued) {
            slots.remove(id);
        }
    }
}
