//! Leadership: exactly one replica reconciles at a time, by a lease in the
//! database (`leases`, row `reconciler`) with a TTL, timed by the
//! database's clock (the lease pattern of Gray & Cheriton; Kubernetes'
//! leader election is the same idea).
//!
//! Every replica runs one [`Candidate`]: it tries to take or renew the
//! lease every [`LeaseTiming::renew_every`] while it leads and every
//! [`LeaseTiming::retry_every`] while it stands by. Gaining the lease
//! begins a *term* ([`Work::begin`]: the reconciler's tasks, with a
//! cancellation token and a task tracker of their own); losing it ends the
//! term: cancelled, and drained before the lease is tried for again, so two
//! terms never overlap in one process.
//!
//! A leader that cannot renew (the database is unreachable, or answers too
//! slowly) must stop acting before its lease can expire and another replica
//! take over. The lease it holds expires no earlier than `ttl` after the
//! start of its last successful renewal (the database stamped it after that
//! instant), measured here on the local monotonic clock; the term ends
//! [`LeaseTiming::margin`] before that ([`Elector::stop_by`]), leaving the
//! margin for its tasks to stop at their next wait.
//!
//! [`Elector`] is the pure state machine (instants in, decisions out);
//! [`Candidate`] drives it against the store.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::Store;

/// The name of the reconciler's lease.
pub const LEASE: &str = "reconciler";
/// How long a clean shutdown tries to give the lease up.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// Interval of the warnings while a term's tasks take long to stop.
const DRAIN_WARNING: Duration = Duration::from_secs(10);

/// The timing of the lease, all derived from its TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a taken or renewed lease lasts (database clock).
    pub ttl: Duration,
    /// A leader renews this often: `ttl / 3`.
    pub renew_every: Duration,
    /// A standby (or a leader whose renewal failed) tries this often:
    /// `min(1 s, ttl / 3)`.
    pub retry_every: Duration,
    /// A leader that could not renew stops acting this long before its
    /// lease can expire: `ttl / 3`.
    pub margin: Duration,
}

impl LeaseTiming {
    /// The timing for a lease of `ttl` (6 s by default: a renewal every
    /// 2 s, a takeover within 7 s of the leader's death).
    pub fn for_ttl(ttl: Duration) -> LeaseTiming {
        let third = ttl / 3;
        LeaseTiming {
            ttl,
            renew_every: third,
            retry_every: third.min(Duration::from_secs(1)),
            margin: third,
        }
    }
}

/// How one attempt to take or renew the lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// This replica holds the lease (taken or renewed).
    Held,
    /// Another replica holds an unexpired lease.
    Refused,
    /// The database failed or did not answer in time.
    Failed,
}

/// What an event changed in this replica's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Same,
    /// A term begins.
    Gained,
    /// The term ends.
    Lost,
}

/// The leadership state machine of one replica, pure: it is told when
/// attempts began and how they ended, and what time it is.
#[derive(Debug, Clone)]
pub struct Elector {
    timing: LeaseTiming,
    /// While leading: the start of the last successful attempt (the lease
    /// lasts at least `ttl` from there).
    renewed: Option<Instant>,
}

impl Elector {
    /// A standby.
    pub fn new(timing: LeaseTiming) -> Elector {
        Elector {
            timing,
            renewed: None,
        }
    }

    /// Whether a term is under way.
    pub fn is_leader(&self) -> bool {
        self.renewed.is_some()
    }

    /// While leading: when the term must have ended unless renewed before.
    pub fn stop_by(&self) -> Option<Instant> {
        self.renewed.map(|at| self.stop_at(at))
    }

    fn stop_at(&self, renewed: Instant) -> Instant {
        renewed + self.timing.ttl.saturating_sub(self.timing.margin)
    }

    /// Records an attempt that began at `began` and ended with `answer` at
    /// `now`. A lease held by an answer that came too late to leave the
    /// margin (the database was slow) is not acted on.
    pub fn record(&mut self, began: Instant, now: Instant, answer: Answer) -> Change {
        match answer {
            Answer::Held if now < self.stop_at(began) => {
                let gained = self.renewed.is_none();
                self.renewed = Some(self.renewed.map_or(began, |r| r.max(began)));
                if gained {
                    Change::Gained
                } else {
                    Change::Same
                }
            }
            Answer::Refused if self.renewed.is_some() => {
                self.renewed = None;
                Change::Lost
            }
            Answer::Refused => Change::Same,
            Answer::Held | Answer::Failed => self.check(now),
        }
    }

    /// Ends the term if it is `now` past [`Elector::stop_by`].
    pub fn check(&mut self, now: Instant) -> Change {
        match self.stop_by() {
            Some(at) if now >= at => {
                self.renewed = None;
                Change::Lost
            }
            _ => Change::Same,
        }
    }

    /// When to try next, after an attempt that began at `began` and ended
    /// with `answer`: a renewal after `renew_every`, anything else (a
    /// standby, a failed renewal) after `retry_every`.
    pub fn next_attempt(&self, began: Instant, answer: Answer) -> Instant {
        if self.is_leader() && answer == Answer::Held {
            began + self.timing.renew_every
        } else {
            began + self.timing.retry_every
        }
    }

    /// How long an attempt beginning `now` may take: a leader's, until it
    /// must stop anyway; a standby's, as long as an answer is still useful.
    pub fn attempt_timeout(&self, now: Instant) -> Duration {
        match self.stop_by() {
            Some(at) => at.saturating_duration_since(now),
            None => self.timing.ttl.saturating_sub(self.timing.margin),
        }
    }
}

/// What a leader does during a term.
#[async_trait::async_trait]
pub trait Work: Send + Sync + 'static {
    /// A term begins: start its tasks on `tracker`; they must stop when
    /// `cancel` fires.
    async fn begin(&self, cancel: CancellationToken, tracker: &TaskTracker);

    /// The term ends (called before its tasks are cancelled and drained):
    /// stop handing work to it.
    fn end(&self);
}

/// One replica competing for the lease and running terms of `W`.
pub struct Candidate<W: Work> {
    store: Store,
    holder: String,
    timing: LeaseTiming,
    elector: Elector,
    work: Arc<W>,
    /// This process's shutdown: ends the candidacy.
    shutdown: CancellationToken,
    /// The term under way: its token and tracker.
    term: Option<(CancellationToken, TaskTracker)>,
    next: Instant,
}

impl<W: Work> Candidate<W> {
    /// A standby named `holder` (unique per process) competing for
    /// [`LEASE`] on `store`, until `shutdown` fires.
    pub fn new(
        store: Store,
        holder: String,
        timing: LeaseTiming,
        work: Arc<W>,
        shutdown: CancellationToken,
    ) -> Self {
        Candidate {
            store,
            holder,
            timing,
            elector: Elector::new(timing),
            work,
            shutdown,
            term: None,
            next: Instant::now(),
        }
    }

    /// Whether a term is under way.
    pub fn is_leader(&self) -> bool {
        self.elector.is_leader()
    }

    /// One attempt to take or renew the lease, now; begins or ends a term
    /// as its answer says.
    pub async fn attempt(&mut self) {
        let began = Instant::now();
        let limit = self.elector.attempt_timeout(began);
        let was_leader = self.elector.is_leader();
        let tried = self
            .store
            .leases()
            .try_acquire(LEASE, &self.holder, self.timing.ttl);
        let answer = match tokio::time::timeout(limit, tried).await {
            Ok(Ok(true)) => Answer::Held,
            Ok(Ok(false)) => Answer::Refused,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, leader = was_leader, "reconciler lease: the database failed");
                Answer::Failed
            }
            Err(_) => {
                tracing::warn!(
                    leader = was_leader,
                    "reconciler lease: the database did not answer within {limit:?}"
                );
                Answer::Failed
            }
        };
        match self.elector.record(began, Instant::now(), answer) {
            Change::Gained => {
                tracing::info!(replica = %self.holder, "this replica leads the reconciler");
                self.begin_term().await;
            }
            Change::Lost => {
                tracing::warn!(replica = %self.holder, ?answer, "this replica lost the reconciler lease; standing by");
                self.end_term().await;
            }
            Change::Same => {}
        }
        self.next = self.elector.next_attempt(began, answer);
    }

    /// Competes until shutdown, then ends the term and gives the lease up
    /// so a standby takes over at once.
    pub async fn run(mut self) {
        loop {
            let wake = self
                .elector
                .stop_by()
                .map_or(self.next, |at| at.min(self.next));
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
            if self.elector.check(Instant::now()) == Change::Lost {
                tracing::warn!(replica = %self.holder,
                    "could not renew the reconciler lease in time; stopping before it can expire");
                self.end_term().await;
            }
            if Instant::now() >= self.next {
                let shutdown = self.shutdown.clone();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.attempt() => {}
                }
            }
        }
        self.end_term().await;
        let release = self.store.leases().release(LEASE, &self.holder);
        match tokio::time::timeout(RELEASE_TIMEOUT, release).await {
            Ok(Ok(())) => tracing::info!(replica = %self.holder, "reconciler lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the reconciler lease failed"),
            Err(_) => tracing::warn!("releasing the reconciler lease timed out"),
        }
    }

    async fn begin_term(&mut self) {
        let cancel = self.shutdown.child_token();
        let tracker = TaskTracker::new();
        self.term = Some((cancel.clone(), tracker.clone()));
        self.work.begin(cancel, &tracker).await;
    }

    /// Cancels the term under way and waits until its tasks have stopped
    /// (the term is forgotten only then: a wait cut short by shutdown is
    /// waited for again).
    async fn end_term(&mut self) {
        let Some((cancel, tracker)) = self.term.clone() else {
            return;
        };
        self.work.end();
        cancel.cancel();
        tracker.close();
        loop {
            tokio::select! {
                _ = tracker.wait() => break,
                _ = tokio::time::sleep(DRAIN_WARNING) => {
                    tracing::warn!(tasks = tracker.len(), "waiting for the reconciler's tasks to stop");
                }
            }
        }
        self.term = None;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn timing() -> LeaseTiming {
        LeaseTiming::for_ttl(Duration::from_secs(6))
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_timing_follows_the_ttl() {
        let t = timing();
        assert_eq!(t.renew_every, Duration::from_secs(2));
        assert_eq!(t.retry_every, Duration::from_secs(1));
        assert_eq!(t.margin, Duration::from_secs(2));
        let short = LeaseTiming::for_ttl(Duration::from_millis(900));
        assert_eq!(short.retry_every, Duration::from_millis(300));
    }

    #[test]
    fn a_standby_leads_once_it_holds_the_lease_and_renews_on_schedule() {
        let t0 = Instant::now();
        let mut e = Elector::new(timing());
        assert_eq!(e.record(t0, at(t0, 5), Answer::Refused), Change::Same);
        assert_eq!(e.next_attempt(t0, Answer::Refused), at(t0, 1000));
        assert_eq!(
            e.record(at(t0, 1000), at(t0, 1010), Answer::Held),
            Change::Gained
        );
        assert!(e.is_leader());
        assert_eq!(e.stop_by(), Some(at(t0, 5000)));
        assert_eq!(e.next_attempt(at(t0, 1000), Answer::Held), at(t0, 3000));
        assert_eq!(
            e.record(at(t0, 3000), at(t0, 3010), Answer::Held),
            Change::Same
        );
        assert_eq!(e.stop_by(), Some(at(t0, 7000)), "renewed from 3 s");
    }

    #[test]
    fn a_leader_that_cannot_renew_stops_before_its_lease_can_expire() {
        let t0 = Instant::now();
        let mut e = Elector::new(timing());
        assert_eq!(e.record(t0, at(t0, 10), Answer::Held), Change::Gained);
        // Renewals fail; retries come sooner, the term goes on meanwhile.
        assert_eq!(
            e.record(at(t0, 2000), at(t0, 2050), Answer::Failed),
            Change::Same
        );
        assert_eq!(e.next_attempt(at(t0, 2000), Answer::Failed), at(t0, 3000));
        assert_eq!(e.attempt_timeout(at(t0, 3000)), Duration::from_secs(1));
        assert_eq!(
            e.record(at(t0, 3000), at(t0, 3999), Answer::Failed),
            Change::Same
        );
        // Past stop_by (ttl − margin after the last renewal's start) the term
        // ends, whatever else happens: the lease (which lasts at least ttl
        // from there) has `margin` left for the tasks to stop.
        assert_eq!(e.check(at(t0, 3999)), Change::Same);
        assert_eq!(e.check(at(t0, 4000)), Change::Lost);
        assert!(!e.is_leader());
        assert_eq!(e.stop_by(), None);
    }

    #[test]
    fn a_renewal_answered_too_late_does_not_count() {
        let t0 = Instant::now();
        let mut e = Elector::new(timing());
        assert_eq!(e.record(t0, at(t0, 10), Answer::Held), Change::Gained);
        // Began at 2 s, answered at 6.5 s: the lease it renewed may have
        // as little as 1.5 s left, and the old one is past stop_by.
        assert_eq!(
            e.record(at(t0, 2000), at(t0, 6500), Answer::Held),
            Change::Lost
        );
        // A standby whose take-over came back too late does not lead
        // either (it holds the lease; its next quick renewal leads).
        assert_eq!(
            e.record(at(t0, 7000), at(t0, 11_000), Answer::Held),
            Change::Same
        );
        assert!(!e.is_leader());
        assert_eq!(
            e.record(at(t0, 11_000), at(t0, 11_020), Answer::Held),
            Change::Gained
        );
    }

    #[test]
    fn another_holder_ends_the_term_at_once() {
        let t0 = Instant::now();
        let mut e = Elector::new(timing());
        e.record(t0, at(t0, 10), Answer::Held);
        assert_eq!(
            e.record(at(t0, 2000), at(t0, 2010), Answer::Refused),
            Change::Lost
        );
        assert_eq!(e.next_attempt(at(t0, 2000), Answer::Refused), at(t0, 3000));
    }

    /// Two electors on one simulated lease (expiry by the "database" clock,
    /// here the same instants): replica 0 leads, is cut off from the
    /// database from 10 s to 20 s (replica 1 takes over), and at 30 s the
    /// leader dies. Their terms never overlap; each leader stops while its
    /// lease is still its own; after the death the other leads within
    /// ttl + retry_every.
    #[test]
    fn terms_of_two_replicas_never_overlap() {
        let t = timing();
        let t0 = Instant::now();
        let step = Duration::from_millis(50);
        // The lease row: holder and expiry.
        let mut lease: Option<(usize, Instant)> = None;
        let mut electors = [Elector::new(t), Elector::new(t)];
        let mut next = [t0, at(t0, 300)];
        let mut since: [Option<Instant>; 2] = [None, None];
        let mut terms: Vec<(usize, Instant, Instant)> = Vec::new();
        let mut dead: Option<(usize, Instant)> = None;
        let mut now = t0;
        while now < at(t0, 45_000) {
            if dead.is_none() && now >= at(t0, 30_000) {
                let who = (0..2).find(|w| since[*w].is_some()).expect("a leader");
                terms.push((who, since[who].take().unwrap(), now));
                dead = Some((who, now));
            }
            for who in 0..2 {
                if dead.is_some_and(|(d, _)| d == who) {
                    continue;
                }
                let e = &mut electors[who];
                let mut change = e.check(now);
                if now >= next[who] {
                    let cut_off = who == 0 && now >= at(t0, 10_000) && now < at(t0, 20_000);
                    let answer = match lease {
                        _ if cut_off => Answer::Failed,
                        Some((h, exp)) if h != who && exp > now => Answer::Refused,
                        _ => {
                            lease = Some((who, now + t.ttl));
                            Answer::Held
                        }
                    };
                    let c = e.record(now, now + Duration::from_millis(10), answer);
                    if c != Change::Same {
                        change = c;
                    }
                    next[who] = e.next_attempt(now, answer);
                }
                match change {
                    Change::Gained => since[who] = Some(now),
                    Change::Lost => {
                        terms.push((who, since[who].take().unwrap(), now));
                        let (h, exp) = lease.unwrap();
                        assert!(h != who || exp >= now + t.margin, "stopped late");
                    }
                    Change::Same => {}
                }
            }
            now += step;
        }
        for (who, s) in since.iter().enumerate() {
            if let Some(s) = s {
                terms.push((who, *s, now));
            }
        }
        terms.sort_by_key(|(_, s, _)| *s);
        for pair in terms.windows(2) {
            assert!(pair[0].2 <= pair[1].1, "overlapping terms: {pair:?}");
        }
        let leaders: Vec<usize> = terms.iter().map(|(w, _, _)| *w).collect();
        assert_eq!(leaders, [0, 1, 0], "{terms:?}");
        // The takeover during the partition waited for the lease to expire.
        assert!(terms[1].1 >= at(t0, 10_000), "{terms:?}");
        let (_, died) = dead.unwrap();
        assert!(
            terms[2].1 <= died + t.ttl + t.retry_every + step,
            "{terms:?}"
        );
    }

    /// A term recorder: whether a term is under way.
    #[derive(Default)]
    struct Flag(std::sync::atomic::AtomicBool);

    #[async_trait::async_trait]
    impl Work for Flag {
        async fn begin(&self, _cancel: CancellationToken, _tracker: &TaskTracker) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        fn end(&self) {
            self.0.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Flag {
        fn get(&self) -> bool {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }

        /// Waits (bounded) until a term is under way; returns when.
        async fn leads_within(&self, limit: Duration) -> Instant {
            let deadline = Instant::now() + limit;
            while !self.get() {
                assert!(Instant::now() < deadline, "no term within {limit:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Instant::now()
        }
    }

    /// Three replicas on one SQLite lease with a 900 ms TTL: the first
    /// leads and keeps leading by renewing; when it dies (no release) the
    /// second takes over within ttl + retry_every; when the second shuts
    /// down cleanly (release) the third takes over within one retry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_standby_takes_over_when_the_leader_dies_or_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("zcaas.db").display());
        let store = Store::open(&url).await.unwrap();
        let t = LeaseTiming::for_ttl(Duration::from_millis(900));
        let candidate = |name: &str, flag: &Arc<Flag>, stop: &CancellationToken| {
            Candidate::new(store.clone(), name.into(), t, flag.clone(), stop.clone())
        };
        let (fa, fb, fc) = (
            Arc::<Flag>::default(),
            Arc::<Flag>::default(),
            Arc::<Flag>::default(),
        );
        let (sa, sb, sc) = (
            CancellationToken::new(),
            CancellationToken::new(),
            CancellationToken::new(),
        );
        let mut a = candidate("a", &fa, &sa);
        a.attempt().await;
        assert!(a.is_leader() && fa.get(), "the first replica leads at once");
        let mut b = candidate("b", &fb, &sb);
        b.attempt().await;
        assert!(!b.is_leader());
        let a_task = tokio::spawn(a.run());
        let b_task = tokio::spawn(b.run());
        tokio::time::sleep(t.ttl * 2).await;
        assert!(fa.get() && !fb.get(), "renewals keep the leader leading");

        a_task.abort();
        let died = Instant::now();
        let took_over = fb.leads_within(Duration::from_secs(5)).await;
        let slack = Duration::from_millis(250);
        assert!(
            took_over - died <= t.ttl + t.retry_every + slack,
            "took {:?}",
            took_over - died
        );

        let mut c = candidate("c", &fc, &sc);
        c.attempt().await;
        assert!(!c.is_leader());
        let c_task = tokio::spawn(c.run());
        sb.cancel();
        b_task.await.unwrap();
        assert!(!fb.get(), "a clean shutdown ends the term");
        let left = Instant::now();
        let took_over = fc.leads_within(Duration::from_secs(5)).await;
        assert!(
            took_over - left <= t.retry_every + slack,
            "took {:?}",
            took_over - left
        );
        sc.cancel();
        c_task.await.unwrap();
        assert_eq!(store.leases().holder(LEASE).await.unwrap(), None);
    }
}
