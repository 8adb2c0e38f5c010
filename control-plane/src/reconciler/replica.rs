//! This replica's door to the reconciler, for the HTTP layer: [`Reconciler`].
//!
//! Every replica serves the API, but only the leader ([`super::leader`])
//! reconciles. A lifecycle request writes its change to the database on
//! whichever replica it lands, then:
//!
//! - [`Reconciler::wake`]: on the leader, wakes its reconciler; on a
//!   standby, forwards the wake to the leader
//!   (`NOTIFY zcaas_wake, '<agent id>'`), whose term listens on that
//!   channel. A wake sent while no replica leads is not lost: every term
//!   begins with a full resync, and resyncs every
//!   [`RESYNC_INTERVAL`](super::RESYNC_INTERVAL).
//! - [`Reconciler::await_deletion`]: on the leader, runs the deletion's pass
//!   and waits for it (as on one replica); on a standby, forwards the wake
//!   (the leader cancels a deploy under way for a deleted agent, as for a
//!   local DELETE) and waits, bounded, until the row is gone.
//!
//! Per-agent serialisation therefore holds across replicas: only the
//! leader's reconciler acts, one pass per agent at a time.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::leader::{Candidate, LeaseTiming, Work, LEASE};
use super::{Context, ReconcilerHandle};
use crate::store::{Backend, Notification, Store};

/// The channel wakes are forwarded to the leader on (payload: an agent id).
pub const WAKE_CHANNEL: &str = "zcaas_wake";
/// Longest wait of a DELETE on a standby for the leader to remove the agent
/// (under the API's 30 s request timeout). Past it the answer is given
/// anyway: the desired state is recorded, and the leader finishes.
pub const DELETE_WAIT: Duration = Duration::from_secs(25);
/// How often a standby's DELETE looks whether the row is gone.
const DELETE_POLL: Duration = Duration::from_millis(100);
/// How often a leader deletes ended rate-limit windows.
const LIMITS_SWEEP: Duration = Duration::from_secs(300);
/// Wait before listening for forwarded wakes again after a failure.
const RELISTEN: Duration = Duration::from_secs(1);
/// Longest wait for `LISTEN` (a term's start must not hold up renewals).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(2);

/// The reconciler as the HTTP layer sees it on any replica. Cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    shared: Arc<Shared>,
}

struct Shared {
    ctx: Context,
    /// This replica's holder id in the lease (random per process).
    replica: String,
    /// The term under way, while this replica leads.
    term: StdMutex<Option<ReconcilerHandle>>,
    /// The orphan sweep that began the latest term (start-up awaits it).
    sweep: StdMutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Reconciler {
    /// Joins the competition for the reconciler's lease: tries once before
    /// returning (a lone replica leads at once, its first resync and orphan
    /// sweep done or under way), then keeps trying or renewing on `tracker`
    /// until `shutdown` fires, when it ends its term and gives the lease up.
    ///
    /// On SQLite the database has one replica by definition: a starting
    /// process takes the lease over from whichever process held it (a
    /// crashed predecessor), instead of waiting for it to expire.
    pub async fn start(ctx: Context, shutdown: CancellationToken, tracker: &TaskTracker) -> Self {
        let replica = replica_id();
        tracing::info!(replica = %replica, pid = std::process::id(), host = %hostname(),
            "replica id (holder of the reconciler lease when leading)");
        let timing = LeaseTiming::for_ttl(ctx.config.lease_ttl);
        let store = ctx.store.clone();
        let shared = Arc::new(Shared {
            ctx,
            replica: replica.clone(),
            term: StdMutex::new(None),
            sweep: StdMutex::new(None),
        });
        if store.backend() == Backend::Sqlite {
            take_over(&store, &replica).await;
        }
        let mut candidate =
            Candidate::new(store, replica, timing, shared.clone(), shutdown.clone());
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = candidate.attempt() => {}
        }
        let sweep = shared
            .sweep
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        tracker.spawn(candidate.run());
        // Leading from the start: serve once the orphan sweep is done (the
        // lease is renewed meanwhile).
        if let Some(sweep) = sweep {
            let _ = sweep.await;
        }
        Reconciler { shared }
    }

    /// What the reconciler works with (the store, the event bus…).
    pub fn context(&self) -> &Context {
        &self.shared.ctx
    }

    /// This replica's id (random per process; logged with host and pid).
    pub fn replica_id(&self) -> &str {
        &self.shared.replica
    }

    /// Whether this replica reconciles now.
    pub fn is_leader(&self) -> bool {
        self.term().is_some()
    }

    /// The leader's holder id and the seconds its lease has left, as the
    /// database says.
    pub async fn leader(&self) -> Result<Option<(String, f64)>, sqlx::Error> {
        self.shared.ctx.store.leases().holder(LEASE).await
    }

    /// The reconciler of the term under way, while this replica leads.
    pub fn term(&self) -> Option<ReconcilerHandle> {
        self.shared
            .term
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks for a reconcile of `agent_id` soon, on whichever replica leads.
    /// Never fails: a forwarded wake that cannot be sent is picked up by the
    /// leader's next resync.
    pub async fn wake(&self, agent_id: &str) {
        match self.term() {
            Some(term) => term.wake(agent_id),
            None => self.forward(agent_id).await,
        }
    }

    /// Waits for the reconciler to act on the agent's deletion (its desired
    /// state is already `deleted`): on the leader, runs the pass and waits
    /// for it; on a standby, forwards the wake and waits until the row is
    /// gone, at most [`DELETE_WAIT`].
    pub async fn await_deletion(&self, agent_id: &str) {
        if let Some(term) = self.term() {
            term.reconcile_now(agent_id).await;
            return;
        }
        self.forward(agent_id).await;
        let deadline = tokio::time::Instant::now() + DELETE_WAIT;
        loop {
            match self.shared.ctx.store.lifecycle().get(agent_id).await {
                Ok(None) => return,
                Ok(Some(_)) => {}
                Err(e) => {
                    tracing::warn!(agent_id, error = %e, "waiting for a deletion: reading the row failed")
                }
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    agent_id,
                    "the leader has not removed the agent within {DELETE_WAIT:?}; it goes on in the background"
                );
                return;
            }
            tokio::time::sleep(DELETE_POLL).await;
        }
    }

    /// One pass for every agent, on this replica's term ([`ReconcilerHandle::reconcile_all`]);
    /// an error on a standby.
    pub async fn reconcile_all(&self, concurrency: usize) -> anyhow::Result<usize> {
        let term = self
            .term()
            .ok_or_else(|| anyhow::anyhow!("this replica does not lead the reconciler"))?;
        Ok(term.reconcile_all(concurrency).await?)
    }

    async fn forward(&self, agent_id: &str) {
        if let Err(e) = self
            .shared
            .ctx
            .store
            .admin()
            .notify(WAKE_CHANNEL, agent_id)
            .await
        {
            tracing::warn!(agent_id, error = %e,
                "forwarding a wake to the leader failed; its next resync picks the agent up");
        }
    }
}

#[async_trait::async_trait]
impl Work for Shared {
    async fn begin(&self, cancel: CancellationToken, tracker: &TaskTracker) {
        let store = &self.ctx.store;
        // Listening before the first resync: no wake forwarded from now on
        // is missed.
        let wakes = listen_wakes(store).await;
        let handle = super::spawn(self.ctx.clone(), cancel.clone(), tracker);
        tracker.spawn(forward_wakes(handle.clone(), wakes, cancel.clone()));
        tracker.spawn(sweep_limits(store.clone(), cancel));
        *self.term.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle.clone());
        self.ctx.metrics.reconciler_leader.set(1);
        // This installation's orphan containers (agents with no row) are
        // removed — never a volume, never another installation's object;
        // the first resync (under way) adopts the rest and resumes rows left
        // mid-transition by the previous leader. A task of the term, so the
        // lease is renewed meanwhile.
        let sweep = tracker.spawn(async move { handle.sweep_orphans().await });
        *self.sweep.lock().unwrap_or_else(|e| e.into_inner()) = Some(sweep);
    }

    fn end(&self) {
        *self.term.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.ctx.metrics.reconciler_leader.set(0);
    }
}

type Wakes = Option<BoxStream<'static, Result<Notification, sqlx::Error>>>;

/// `LISTEN zcaas_wake`: `None` on SQLite (no other replica); on failure
/// (logged) an empty stream, so [`forward_wakes`] tries again.
async fn listen_wakes(store: &Store) -> Wakes {
    match tokio::time::timeout(LISTEN_TIMEOUT, store.admin().listen(&[WAKE_CHANNEL])).await {
        Ok(Ok(wakes)) => wakes,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "listening for forwarded wakes failed; retrying");
            Some(futures::stream::empty().boxed())
        }
        Err(_) => {
            tracing::warn!("listening for forwarded wakes timed out; retrying");
            Some(futures::stream::empty().boxed())
        }
    }
}

/// Wakes the agents other replicas forward (a term's task). After a lost
/// connection it listens again and resyncs every agent (wakes may have
/// been missed meanwhile).
async fn forward_wakes(handle: ReconcilerHandle, mut wakes: Wakes, cancel: CancellationToken) {
    loop {
        let Some(mut stream) = wakes.take() else {
            // SQLite: nothing is ever forwarded.
            return;
        };
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                next = stream.next() => next,
            };
            match next {
                Some(Ok(note)) => handle.request(note.payload.trim()).await,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "forwarded wakes: connection failed; listening again");
                    break;
                }
                None => break,
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RELISTEN) => {}
        }
        wakes = listen_wakes(&handle.inner.ctx.store).await;
        handle.resync_all().await;
    }
}

/// Deletes ended rate-limit windows now and then (a term's task).
async fn sweep_limits(store: Store, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(LIMITS_SWEEP) => {}
        }
        match store.limits().sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(windows = n, "ended rate-limit windows deleted"),
            Err(e) => tracing::warn!(error = %e, "sweeping rate-limit windows failed"),
        }
    }
}

/// SQLite (one replica): takes the lease over from any other holder.
async fn take_over(store: &Store, replica: &str) {
    match store.leases().holder(LEASE).await {
        Ok(Some((other, _))) if other != replica => {
            tracing::info!(previous = %other, "taking the reconciler lease over (SQLite: one replica)");
            if let Err(e) = store.leases().release(LEASE, &other).await {
                tracing::warn!(error = %e, "taking the reconciler lease over failed");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "reading the reconciler lease failed"),
    }
}

/// A random id for this process: 16 hex digits.
fn replica_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// This machine's host name, for the log line naming the replica.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}
