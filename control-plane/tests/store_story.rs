//! The store's guarantees, one story per trait, on the backend the run
//! selects (`ZCAAS_TEST_STORE`: SQLite by default, PostgreSQL in the second
//! run of scripts/test.sh). Every guarantee a trait documents is shown under
//! real concurrency (many tasks on a multi-threaded runtime, racing through
//! the store's own pool), never arranged with sleeps; every wait is bounded.
//! Each test has its own database, dropped when it ends.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use zcaas::status::{DesiredState, Status};
use zcaas::store::agents::{AgentChanges, InsertError};
use zcaas::store::history::Scope;
use zcaas::store::{Backend, Store};
use zcaas_test_support::store::{agent_row, fresh_store, user_row, FreshStore};

/// A fresh store of the run's backend and its handle; the first value keeps
/// the database alive.
async fn fresh() -> (FreshStore, Store) {
    let fx = fresh_store().await;
    let db = fx.db.clone();
    (fx, db)
}

/// Polls `check` every 20 ms until it holds or `timeout` passes; panics
/// with `what` on timeout.
async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens the pool's connections ahead of a race (pools open them lazily, and
/// a race run on one connection proves nothing): many concurrent reads.
async fn warm_up(db: &Store) {
    let reads: Vec<_> = (0..32)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    db.admin().now().await.unwrap();
                }
            })
        })
        .collect();
    for r in reads {
        r.await.unwrap();
    }
}

/// Runs `n` tasks that start together (a barrier) and returns their
/// results in task order. Call [`warm_up`] first.
async fn race<T, F, Fut>(n: usize, task: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let start = Arc::new(tokio::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (start, fut) = (start.clone(), task(i));
            tokio::spawn(async move {
                start.wait().await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.expect("a racing task panicked"));
    }
    out
}

/// The next status of the deploy/stop cycle the transition story drives.
fn next(s: Status) -> Status {
    match s {
        Status::Pending => Status::Starting,
        Status::Starting => Status::Running,
        Status::Running => Status::Stopping,
        Status::Stopping => Status::Stopped,
        Status::Stopped => Status::Starting,
        Status::Error => Status::Pending,
    }
}

/// AgentStore::insert_pending: the quota holds under 50 concurrent creates
/// for one owner; every create that passed wrote exactly its one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_holds_under_fifty_concurrent_creates() {
    let (_fx, db) = fresh().await;
    warm_up(&db).await;
    let owner = Arc::new(user_row(&db, "owner@x.io").await);
    let results = race(50, |i| {
        let (db, owner) = (db.clone(), owner.clone());
        async move {
            db.agents()
                .insert_pending(&agent_row(&owner, &format!("q-{i}")), Some(3))
                .await
        }
    })
    .await;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok((agent, event)) => {
                assert_eq!(
                    (event.agent_id.as_str(), event.to),
                    (agent.id.as_str(), Status::Pending)
                );
                created.push(agent.id);
            }
            Err(InsertError::QuotaExceeded { max: 3 }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(created.len(), 3, "exactly the quota was created");
    assert_eq!(db.agents().count_for_user(&owner).await.unwrap(), 3);
    let events = db
        .history()
        .after(&Scope::User(owner.to_string()), 0, 1000)
        .await
        .unwrap();
    let mut with_events: Vec<_> = events.iter().map(|e| e.agent_id.clone()).collect();
    with_events.sort();
    created.sort();
    assert_eq!(with_events, created, "one creation event per created agent");
}

/// LifecycleStore::transition and HistoryStore::after: 20 agents driven
/// through their cycle by 3 racing tasks each, while a reader follows the
/// history with `after(All, last_seen)`. The reader sees every event the
/// final history holds, in strictly increasing id order: no id committed
/// below one it had already seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_readers_never_skip_an_event_under_concurrent_transitions() {
    const AGENTS: usize = 20;
    const TRANSITIONS: usize = 12;
    const RACERS: usize = 3;
    let (_fx, db) = fresh().await;
    warm_up(&db).await;
    let owner = user_row(&db, "busy@x.io").await;
    let mut ids = Vec::new();
    for i in 0..AGENTS {
        let (agent, _) = db
            .agents()
            .insert_pending(&agent_row(&owner, &format!("h-{i}")), None)
            .await
            .unwrap();
        ids.push(agent.id);
    }

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (db, done) = (db.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut last = 0;
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                // Read the flag before reading: after it is set, one more
                // read that returns nothing means everything was seen.
                let finished = done.load(Ordering::SeqCst);
                let batch = db.history().after(&Scope::All, last, 50).await.unwrap();
                for e in &batch {
                    assert!(e.id > last, "ids go up: {} after {last}", e.id);
                    last = e.id;
                    seen.push(e.id);
                }
                if finished && batch.is_empty() {
                    return seen;
                }
                assert!(Instant::now() < deadline, "the reader never finished");
                if batch.is_empty() {
                    tokio::task::yield_now().await;
                }
            }
        })
    };

    let mut writers = Vec::new();
    for id in &ids {
        for _ in 0..RACERS {
            let (db, id) = (db.clone(), id.clone());
            writers.push(tokio::spawn(async move {
                let mut applied = 0;
                loop {
                    let agent = db.lifecycle().get(&id).await.unwrap().unwrap();
                    let history = db
                        .history()
                        .after(&Scope::Agent(id.clone()), 0, 1000)
                        .await
                        .unwrap();
                    if history.len() > TRANSITIONS {
                        return applied;
                    }
                    let to = next(agent.status);
                    if db
                        .lifecycle()
                        .transition(&id, agent.status, to, "story", None)
                        .await
                        .unwrap()
                        .is_some()
                    {
                        applied += 1;
                    }
                }
            }));
        }
    }
    let mut applied = 0;
    for w in writers {
        applied += w.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();

    let all: Vec<i64> = db
        .history()
        .after(&Scope::All, 0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        all.len(),
        AGENTS + applied,
        "one event per creation and per applied transition"
    );
    assert_eq!(seen, all, "the live reader saw exactly the final history");
    assert_eq!(db.history().last_id().await.unwrap(), *all.last().unwrap());

    // Each agent's history is a valid walk of the state machine, and its
    // stored status is where the walk ends.
    for id in &ids {
        let events = db
            .history()
            .after(&Scope::Agent(id.clone()), 0, 1000)
            .await
            .unwrap();
        let mut at = None;
        for e in &events {
            assert_eq!(
                e.from, at,
                "{id}: event {} starts where the last ended",
                e.id
            );
            at = Some(e.to);
        }
        let agent = db.lifecycle().get(id).await.unwrap().unwrap();
        assert_eq!(Some(agent.status), at);
    }
    // `newest` gives the tail of the same history, oldest first.
    let (tail, more) = db.history().newest(&Scope::All, None, 5).await.unwrap();
    assert!(more);
    let tail: Vec<i64> = tail.iter().map(|e| e.id).collect();
    assert_eq!(tail, all[all.len() - 5..]);
}

/// LifecycleStore::transition is a compare-and-set: of two concurrent
/// transitions from the same status, exactly one applies (20 rounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_two_concurrent_transitions_exactly_one_applies() {
    let (_fx, db) = fresh().await;
    warm_up(&db).await;
    let owner = user_row(&db, "race@x.io").await;
    for round in 0..20 {
        let (agent, _) = db
            .agents()
            .insert_pending(&agent_row(&owner, &format!("r-{round}")), None)
            .await
            .unwrap();
        let mut both = race(2, |i| {
            let (db, id) = (db.clone(), agent.id.clone());
            let (to, desired) = if i == 0 {
                (Status::Starting, None)
            } else {
                (Status::Error, Some(DesiredState::Stopped))
            };
            async move {
                db.lifecycle()
                    .transition(&id, Status::Pending, to, "race", desired)
                    .await
                    .unwrap()
            }
        })
        .await;
        let (b, a) = (both.pop().unwrap(), both.pop().unwrap());
        assert!(
            a.is_some() != b.is_some(),
            "round {round}: exactly one applies"
        );
        let stored = db.lifecycle().get(&agent.id).await.unwrap().unwrap();
        let events = db
            .history()
            .after(&Scope::Agent(agent.id.clone()), 0, 10)
            .await
            .unwrap();
        assert_eq!(events.len(), 2, "creation and the one applied transition");
        if let Some(e) = a {
            assert_eq!(
                (stored.status, stored.desired_state),
                (Status::Starting, DesiredState::Running)
            );
            assert_eq!(events[1].id, e.id);
        } else {
            let e = b.unwrap();
            assert_eq!(
                (stored.status, stored.desired_state),
                (Status::Error, DesiredState::Stopped)
            );
            assert_eq!(events[1].id, e.id);
        }
    }
}

/// LifecycleStore::transition_to_running reaches RUNNING only with the
/// configuration generation the deploy rendered, records it, clears the
/// last error and marks the agent as having run.
#[tokio::test]
async fn transition_to_running_is_guarded_by_the_config_generation() {
    let (_fx, db) = fresh().await;
    let owner = user_row(&db, "gen@x.io").await;
    let (agent, _) = db
        .agents()
        .insert_pending(&agent_row(&owner, "gen"), None)
        .await
        .unwrap();
    assert!(!agent.ever_running);
    assert_eq!(
        (agent.config_generation, agent.deployed_generation),
        (0, None)
    );
    db.lifecycle()
        .transition(&agent.id, Status::Pending, Status::Starting, "deploy", None)
        .await
        .unwrap()
        .unwrap();
    db.lifecycle()
        .set_error(&agent.id, "earlier trouble", 1, None)
        .await
        .unwrap();
    // The deploy reads the row, then a PATCH changes the configuration.
    let rendered = db.lifecycle().get(&agent.id).await.unwrap().unwrap();
    let patch = AgentChanges {
        model: Some("gpt-4o".into()),
        ..Default::default()
    };
    let patched = db
        .agents()
        .update_config(&owner, &agent.id, &patch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(patched.config_generation, 1);
    // A name-only change does not reach the container: no new generation.
    let rename = AgentChanges {
        name: Some("Renamed".into()),
        ..Default::default()
    };
    let renamed = db
        .agents()
        .update_config(&owner, &agent.id, &rename)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.config_generation, 1);

    assert!(db
        .lifecycle()
        .transition_to_running(&rendered, "stale deploy")
        .await
        .unwrap()
        .is_none());
    let still = db.lifecycle().get(&agent.id).await.unwrap().unwrap();
    assert_eq!(still.status, Status::Starting);

    let event = db
        .lifecycle()
        .transition_to_running(&still, "deployed")
        .await
        .unwrap()
        .expect("the current generation reaches RUNNING");
    assert_eq!(
        (event.from, event.to),
        (Some(Status::Starting), Status::Running)
    );
    let running = db.lifecycle().get(&agent.id).await.unwrap().unwrap();
    assert_eq!(running.status, Status::Running);
    assert_eq!(running.deployed_generation, Some(1));
    assert_eq!(running.last_error, None);
    assert!(running.ever_running);
    assert_eq!(running.model, "gpt-4o");
    // Only from STARTING.
    assert!(db
        .lifecycle()
        .transition_to_running(&running, "again")
        .await
        .unwrap()
        .is_none());
}

/// LifecycleStore::try_claim_port: of ten agents claiming one port at once,
/// one wins; an agent holds at most one port; a released port is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_port_one_agent() {
    const PORT: u16 = 45_000;
    let (_fx, db) = fresh().await;
    warm_up(&db).await;
    let owner = user_row(&db, "ports@x.io").await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let (agent, _) = db
            .agents()
            .insert_pending(&agent_row(&owner, &format!("p-{i}")), None)
            .await
            .unwrap();
        ids.push(agent.id);
    }
    let claims = race(ids.len(), |i| {
        let (db, id) = (db.clone(), ids[i].clone());
        async move { (db.lifecycle().try_claim_port(&id, PORT).await.unwrap(), id) }
    })
    .await;
    let mut winners: Vec<String> = claims
        .into_iter()
        .filter_map(|(won, id)| won.then_some(id))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one claim of the port succeeds");
    let winner = winners.remove(0);
    assert_eq!(
        db.lifecycle().claimed_ports().await.unwrap(),
        vec![i64::from(PORT)]
    );
    let holder = db.lifecycle().get(&winner).await.unwrap().unwrap();
    assert_eq!(holder.container_port, Some(i64::from(PORT)));
    // One port per agent.
    assert!(!db
        .lifecycle()
        .try_claim_port(&winner, PORT + 1)
        .await
        .unwrap());

    db.lifecycle()
        .set_container(&winner, "c1", "h1")
        .await
        .unwrap();
    db.lifecycle()
        .release_port_and_container(&winner)
        .await
        .unwrap();
    let released = db.lifecycle().get(&winner).await.unwrap().unwrap();
    assert_eq!(
        (released.container_port, released.container_id),
        (None, None)
    );
    assert!(db.lifecycle().claimed_ports().await.unwrap().is_empty());
    let other = ids.iter().find(|id| **id != winner).unwrap();
    assert!(db.lifecycle().try_claim_port(other, PORT).await.unwrap());
}

/// LeaseStore: one holder at a time by the database's clock; renewal,
/// expiry, release and `holder`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_have_one_holder_at_a_time() {
    let (_fx, db) = fresh().await;
    warm_up(&db).await;
    let ttl = Duration::from_secs(1);

    // Ten candidates at once on a fresh lease: one wins.
    let won: Vec<String> = race(10, |i| {
        let db = db.clone();
        async move {
            let me = format!("racer-{i}");
            (db.leases().try_acquire("race", &me, ttl).await.unwrap(), me)
        }
    })
    .await
    .into_iter()
    .filter_map(|(ok, me)| ok.then_some(me))
    .collect();
    assert_eq!(won.len(), 1, "one holder of a fresh lease: {won:?}");
    assert_eq!(db.leases().holder("race").await.unwrap().unwrap().0, won[0]);

    // A takes it; B cannot; A renews.
    assert!(db
        .leases()
        .try_acquire("reconciler", "A", ttl)
        .await
        .unwrap());
    assert!(!db
        .leases()
        .try_acquire("reconciler", "B", ttl)
        .await
        .unwrap());
    assert!(db
        .leases()
        .try_acquire("reconciler", "A", ttl)
        .await
        .unwrap());
    let (holder, left) = db.leases().holder("reconciler").await.unwrap().unwrap();
    assert_eq!(holder, "A");
    assert!(left > 0.0 && left <= 1.0, "seconds left: {left}");
    // A release by someone else changes nothing.
    db.leases().release("reconciler", "B").await.unwrap();
    assert_eq!(
        db.leases().holder("reconciler").await.unwrap().unwrap().0,
        "A"
    );

    // B gets it once A's lease has expired, not before.
    let asked = Instant::now();
    let db2 = db.clone();
    eventually(
        Duration::from_secs(5),
        "B acquires after A's lease expired",
        || {
            let db = db2.clone();
            async move {
                db.leases()
                    .try_acquire("reconciler", "B", ttl)
                    .await
                    .unwrap()
            }
        },
    )
    .await;
    assert!(
        asked.elapsed() >= Duration::from_millis(500),
        "B waited for the expiry: {:?}",
        asked.elapsed()
    );
    assert_eq!(
        db.leases().holder("reconciler").await.unwrap().unwrap().0,
        "B"
    );
    assert!(!db
        .leases()
        .try_acquire("reconciler", "A", ttl)
        .await
        .unwrap());

    // A release lets the other in at once.
    db.leases().release("reconciler", "B").await.unwrap();
    assert_eq!(db.leases().holder("reconciler").await.unwrap(), None);
    assert!(db
        .leases()
        .try_acquire("reconciler", "A", ttl)
        .await
        .unwrap());
    assert_eq!(
        db.leases().holder("reconciler").await.unwrap().unwrap().0,
        "A"
    );
}

/// TicketStore: a per-user cap under concurrent issues, one redemption
/// under concurrent redeems, expired tickets refused and not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tickets_are_capped_spent_once_and_expire() {
    let (_fx, db) = fresh().await;
    warm_up(&db).await;
    let ttl = Duration::from_secs(60);
    let digest = |user: u8, i: u8| {
        let mut d = [0u8; 32];
        d[0] = user;
        d[1] = i;
        d
    };

    // Ten issues at once for one user, cap 3: three stored.
    let issued: Vec<u8> = race(10, |i| {
        let (db, i) = (db.clone(), i as u8);
        async move {
            db.tickets()
                .issue(&digest(1, i), "u1", ttl, 3)
                .await
                .unwrap()
                .then_some(i)
        }
    })
    .await
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(issued.len(), 3, "the cap holds: {issued:?}");
    // Another user's cap is their own.
    assert!(db
        .tickets()
        .issue(&digest(2, 0), "u2", ttl, 3)
        .await
        .unwrap());

    // Eight redeems of one ticket at once: one gets the user.
    let ticket = digest(1, issued[0]);
    let spent: Vec<String> = race(8, |_| {
        let db = db.clone();
        async move { db.tickets().redeem(&ticket).await.unwrap() }
    })
    .await
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(spent, vec!["u1".to_owned()], "a ticket is spent once");
    // Spending one frees a place under the cap.
    assert!(db
        .tickets()
        .issue(&digest(1, 100), "u1", ttl, 3)
        .await
        .unwrap());
    assert!(!db
        .tickets()
        .issue(&digest(1, 101), "u1", ttl, 3)
        .await
        .unwrap());
    assert_eq!(
        db.tickets().redeem(&digest(9, 9)).await.unwrap(),
        None,
        "unknown ticket"
    );

    // An expired ticket is refused (and gone), and no longer counts.
    let short = Duration::from_millis(300);
    let issued_at = db.admin().now().await.unwrap();
    assert!(db
        .tickets()
        .issue(&digest(3, 0), "u3", short, 1)
        .await
        .unwrap());
    assert!(!db
        .tickets()
        .issue(&digest(3, 1), "u3", short, 1)
        .await
        .unwrap());
    let db2 = db.clone();
    let expiry = issued_at + chrono::Duration::from_std(short).unwrap();
    eventually(Duration::from_secs(5), "the database clock passes the expiry", || {
        let db = db2.clone();
        async move { db.admin().now().await.unwrap() > expiry + chrono::Duration::milliseconds(50) }
    })
    .await;
    assert_eq!(
        db.tickets().redeem(&digest(3, 0)).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        db.tickets().redeem(&digest(3, 0)).await.unwrap(),
        None,
        "and gone"
    );
    assert!(db
        .tickets()
        .issue(&digest(3, 2), "u3", ttl, 1)
        .await
        .unwrap());
    assert_eq!(
        db.tickets().redeem(&digest(3, 2)).await.unwrap().as_deref(),
        Some("u3")
    );
}

/// LimitStore: concurrent hits are all counted; a window ends and a new one
/// starts; clear forgets; sweep deletes ended windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_windows_count_every_hit() {
    let (_fx, db) = fresh().await;
    warm_up(&db).await;
    let minute = Duration::from_secs(60);
    let counts: BTreeSet<u32> = race(50, |_| {
        let db = db.clone();
        async move { db.limits().hit("login:a@x.io", minute).await.unwrap() }
    })
    .await
    .into_iter()
    .collect();
    assert_eq!(counts, (1..=50).collect(), "each hit saw its own count");
    let (count, secs) = db.limits().count("login:a@x.io").await.unwrap();
    assert_eq!(count, 50);
    assert!((1..=60).contains(&secs), "seconds left: {secs}");
    assert_eq!(db.limits().count("login:nobody").await.unwrap(), (0, 0));

    db.limits().clear("login:a@x.io").await.unwrap();
    assert_eq!(db.limits().count("login:a@x.io").await.unwrap(), (0, 0));
    assert_eq!(db.limits().hit("login:a@x.io", minute).await.unwrap(), 1);

    // A short window ends; the next hit starts a fresh one.
    let short = Duration::from_millis(300);
    assert_eq!(db.limits().hit("register:1.2.3.4", short).await.unwrap(), 1);
    assert_eq!(db.limits().hit("register:1.2.3.4", short).await.unwrap(), 2);
    let db2 = db.clone();
    eventually(Duration::from_secs(5), "the short window ends", || {
        let db = db2.clone();
        async move { db.limits().count("register:1.2.3.4").await.unwrap() == (0, 0) }
    })
    .await;
    assert_eq!(
        db.limits().sweep().await.unwrap(),
        1,
        "the ended window only"
    );
    assert_eq!(db.limits().hit("register:1.2.3.4", short).await.unwrap(), 1);
    assert_eq!(db.limits().count("login:a@x.io").await.unwrap().0, 1);
}

/// AdminStore: one installation id however many ask at once; the
/// database's clock; readiness.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn installation_id_is_stable_and_the_clock_is_the_databases() {
    let (_fx, db) = fresh().await;
    warm_up(&db).await;
    let ids: BTreeSet<String> = race(10, |_| {
        let db = db.clone();
        async move { db.admin().installation_id().await.unwrap() }
    })
    .await
    .into_iter()
    .collect();
    assert_eq!(ids.len(), 1, "one id: {ids:?}");
    let id = ids.into_iter().next().unwrap();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    assert_eq!(db.admin().installation_id().await.unwrap(), id);

    db.ping().await.unwrap();
    let now = db.admin().now().await.unwrap();
    let drift = (chrono::Utc::now() - now).num_milliseconds().abs();
    assert!(drift < 5_000, "the database clock is {drift} ms off ours");
    let later = db.admin().now().await.unwrap();
    assert!(later >= now);
}

/// AdminStore::notify / listen: on PostgreSQL a notification reaches every
/// listener (this replica's included), in order; SQLite has one replica and
/// no channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_listeners_on_postgres_only() {
    let (_fx, db) = fresh().await;
    let listen = db
        .admin()
        .listen(&["zcaas_story", "zcaas_other"])
        .await
        .unwrap();
    match db.backend() {
        Backend::Sqlite => {
            assert!(listen.is_none(), "SQLite has no notification channel");
            db.admin().notify("zcaas_story", "ignored").await.unwrap();
        }
        Backend::Postgres => {
            let mut stream = listen.expect("PostgreSQL listens");
            let mut other = db
                .admin()
                .listen(&["zcaas_story"])
                .await
                .unwrap()
                .expect("PostgreSQL listens");
            for i in 0..3 {
                db.admin()
                    .notify("zcaas_story", &format!("payload {i}"))
                    .await
                    .unwrap();
            }
            db.admin().notify("zcaas_unheard", "nobody").await.unwrap();
            db.admin()
                .notify("zcaas_other", "second channel")
                .await
                .unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), async {
                let mut got = Vec::new();
                while got.len() < 4 {
                    let n = stream.next().await.expect("the stream goes on").unwrap();
                    got.push((n.channel, n.payload));
                }
                got
            })
            .await
            .expect("four notifications within 5 s");
            let expected: Vec<(String, String)> = (0..3)
                .map(|i| ("zcaas_story".to_owned(), format!("payload {i}")))
                .chain([("zcaas_other".to_owned(), "second channel".to_owned())])
                .collect();
            assert_eq!(got, expected);
            let first = tokio::time::timeout(Duration::from_secs(5), other.next())
                .await
                .expect("the second listener hears it too within 5 s")
                .expect("the stream goes on")
                .unwrap();
            assert_eq!(first.payload, "payload 0");
        }
    }
}

/// The users and agents the stories leave behave as rows: deleting a user
/// removes their agents (ON DELETE CASCADE) but keeps the history.
#[tokio::test]
async fn deleting_a_user_takes_their_agents_and_keeps_history() {
    let (_fx, db) = fresh().await;
    let owner = user_row(&db, "gone@x.io").await;
    let (agent, _) = db
        .agents()
        .insert_pending(&agent_row(&owner, "gone"), None)
        .await
        .unwrap();
    // Docker's instants have nanoseconds; a stored pairing start is never
    // earlier than the start it was recorded for (PostgreSQL keeps
    // microseconds and rounds up), or the reconciler would re-pair forever.
    let started = chrono::DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
    db.lifecycle()
        .set_pairing(&agent.id, "v1:k:token", started)
        .await
        .unwrap();
    let paired = db.lifecycle().get(&agent.id).await.unwrap().unwrap();
    let paired_at = paired.paired_started_at.unwrap();
    assert!(
        paired_at >= started && paired_at - started < chrono::Duration::microseconds(1),
        "{paired_at:?} for a start at {started:?}"
    );
    assert_eq!(paired.encrypted_token.as_deref(), Some("v1:k:token"));
    db.lifecycle()
        .set_stats(&agent.id, 12.5, 3.25)
        .await
        .unwrap();
    db.lifecycle()
        .set_healthy(&agent.id, chrono::Utc::now())
        .await
        .unwrap();
    let stored = db.lifecycle().get(&agent.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.memory_mb, stored.cpu_percent),
        (Some(12.5), Some(3.25))
    );
    assert!(stored.last_health_at.is_some());
    let by_status: BTreeMap<_, _> = db
        .agents()
        .count_by_status()
        .await
        .unwrap()
        .into_iter()
        .map(|(s, n)| (s.as_str(), n))
        .collect();
    assert_eq!(by_status, BTreeMap::from([("PENDING", 1)]));

    assert!(db.users().delete(&owner).await.unwrap());
    assert!(db.lifecycle().get(&agent.id).await.unwrap().is_none());
    assert!(db.lifecycle().list_all().await.unwrap().is_empty());
    let history = db
        .history()
        .after(&Scope::Agent(agent.id.clone()), 0, 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 1, "the history outlives the agent");
}

/// Keys from requests reach the store unvalidated (an agent id in a path,
/// an email at the login form): one with a NUL character, which
/// PostgreSQL's TEXT cannot hold, names nothing on either backend and is
/// never an error; free text the control plane writes may hold one.
#[tokio::test]
async fn keys_with_nul_characters_name_nothing() {
    let (_fx, db) = fresh().await;
    let owner = user_row(&db, "nul@x.io").await;
    let (agent, _) = db
        .agents()
        .insert_pending(&agent_row(&owner, "nul"), None)
        .await
        .unwrap();
    let bad = "\0";
    assert!(db.lifecycle().get(bad).await.unwrap().is_none());
    assert!(db
        .agents()
        .get_for_user(&owner, bad)
        .await
        .unwrap()
        .is_none());
    assert!(db.agents().list_for_user(bad).await.unwrap().is_empty());
    assert!(db
        .agents()
        .update_config(
            &owner,
            bad,
            &AgentChanges {
                name: Some("x".into()),
                ..Default::default()
            }
        )
        .await
        .unwrap()
        .is_none());
    assert!(db
        .lifecycle()
        .transition(bad, Status::Pending, Status::Starting, "x", None)
        .await
        .unwrap()
        .is_none());
    db.lifecycle()
        .set_desired(bad, DesiredState::Deleted)
        .await
        .unwrap();
    db.lifecycle().delete(bad).await.unwrap();
    assert!(db
        .users()
        .get_by_email("nul\0@x.io")
        .await
        .unwrap()
        .is_none());
    assert!(db.users().get_by_id(bad).await.unwrap().is_none());
    assert!(!db.users().delete(bad).await.unwrap());
    let scoped = db
        .history()
        .after(&Scope::Agent(bad.into()), 0, 10)
        .await
        .unwrap();
    assert!(scoped.is_empty());
    // Rate-limit keys are counted apart from their look-alikes.
    let minute = Duration::from_secs(60);
    assert_eq!(db.limits().hit("login:a\0@x.io", minute).await.unwrap(), 1);
    assert_eq!(db.limits().hit("login:a%00@x.io", minute).await.unwrap(), 1);
    assert_eq!(db.limits().count("login:a\0@x.io").await.unwrap().0, 1);
    db.limits().clear("login:a\0@x.io").await.unwrap();
    assert_eq!(db.limits().count("login:a\0@x.io").await.unwrap().0, 0);
    assert_eq!(db.limits().count("login:a%00@x.io").await.unwrap().0, 1);
    // An error text from outside (an agent's answer) is stored.
    db.lifecycle()
        .set_error(&agent.id, "agent said \0 nothing", 1, None)
        .await
        .unwrap();
    let stored = db.lifecycle().get(&agent.id).await.unwrap().unwrap();
    assert!(stored.last_error.unwrap().starts_with("agent said "));
    assert_eq!(
        db.lifecycle().get(&agent.id).await.unwrap().unwrap().status,
        Status::Pending
    );
}
