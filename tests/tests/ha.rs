//! Issue 14, high availability: several `zcaas serve` replicas on one
//! PostgreSQL database, against the real engine and the real agent image.
//!
//! - exactly one replica leads the reconciler (`/healthz`), and when it is
//!   SIGKILLed another leads within 10 s; a standby forwards wakes and
//!   DELETEs to the leader (a DELETE cancels the leader's deploy under way);
//! - the leader aborted at each deploy crash point while a standby waits:
//!   the standby takes over and finishes the deploy, as a restarted single
//!   process does in `faults.rs` — RUNNING, one container, a token that
//!   works;
//! - an SSE client on replica B sees every transition made through replica
//!   A, in order, none missing (the database's history is the reference);
//! - a stream ticket issued by A is redeemed on B; login failures and
//!   registrations on A and B add up to one limit.
//!
//! These tests need PostgreSQL (`ZCAAS_TEST_POSTGRES_URL`, default
//! `postgres://zcaas:zcaas@127.0.0.1:5432/postgres`; `scripts/postgres.sh`
//! starts one): without it they fail, naming the server they could not reach.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use zcaas_test_support::postgres::TestDatabase;
use zcaas_test_support::process::ServerProcess;
use zcaas_test_support::store::raw_pool;
use zcaas_test_support::{agent_containers, docker_inspect, volume_exists, Api, World, PASSWORD};

/// Longest wait for a deploy (takeover included) to settle.
const TIMEOUT: Duration = Duration::from_secs(90);
/// The requirement: a standby leads within this of the leader's death.
const TAKEOVER: Duration = Duration::from_secs(10);

/// Replicas of one control plane: one fresh PostgreSQL database and one
/// data directory (the master key and the JWT secret every replica must
/// share), in a test's [`World`].
struct Cluster<'w> {
    world: &'w World,
    db: TestDatabase,
    data: tempfile::TempDir,
}

impl<'w> Cluster<'w> {
    async fn new(world: &'w World) -> Cluster<'w> {
        Cluster {
            world,
            db: TestDatabase::create_postgres().await,
            data: tempfile::tempdir().expect("a data directory"),
        }
    }

    /// Starts a replica (`zcaas serve` on the cluster's database) with
    /// `env` added, and waits until it answers `/healthz`.
    async fn replica(&self, env: &[(&str, &str)]) -> ServerProcess {
        let mut all = vec![("ZCAAS_DATABASE_URL", self.db.url.as_str())];
        all.extend_from_slice(env);
        ServerProcess::start(self.world, self.data.path(), &all).await
    }

    async fn sql(&self) -> sqlx::AnyPool {
        raw_pool(&self.db.url).await
    }
}

/// `/healthz` of a replica, asserting 200.
async fn health(api: &Api) -> Value {
    let (status, body) = api.healthz().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Asserts that `leader` leads and every one of `standbys` stands by, all
/// naming the same leader; returns the leader's replica id.
async fn assert_one_leader(leader: &Api, standbys: &[&Api]) -> String {
    let h = health(leader).await;
    assert_eq!(h["reconciler"], "leader", "{h}");
    let id = h["replica"].as_str().expect("a replica id").to_owned();
    assert_eq!(h["leader"], id.as_str(), "{h}");
    for s in standbys {
        let h = health(s).await;
        assert_eq!(h["reconciler"], "standby", "{h}");
        assert_ne!(h["replica"], id.as_str(), "{h}");
        assert_eq!(h["leader"], id.as_str(), "{h}");
    }
    id
}

/// Polls `/healthz` of `api` until it leads; returns how long that took.
/// Panics after [`TAKEOVER`].
async fn wait_leader(api: &Api) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(res) = api.http.get(api.url("/healthz")).send().await {
            if let Ok(h) = res.json::<Value>().await {
                if h["reconciler"] == "leader" {
                    return start.elapsed();
                }
            }
        }
        assert!(
            start.elapsed() <= TAKEOVER,
            "no takeover within {TAKEOVER:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a message through `api` and checks the agent's answer (the stored
/// token works).
async fn assert_answers(api: &Api, jwt: &str, id: &str) {
    let (code, reply) = api.message(jwt, id, "are you there").await;
    assert_eq!(code, 200, "{reply}");
    assert!(
        reply["response"]
            .as_str()
            .is_some_and(|r| r.contains("are you there")),
        "{reply}"
    );
}

/// The agent's one container matches its record (id, published port).
fn assert_one_container(agent: &Value, context: &str) {
    let id = agent["id"].as_str().unwrap();
    let containers = agent_containers(id);
    assert_eq!(containers.len(), 1, "{context}: {containers:?}");
    let c = docker_inspect(&containers[0]).unwrap();
    assert_eq!(c["Id"], agent["containerId"], "{context}");
    assert_eq!(
        c["HostConfig"]["PortBindings"]["42617/tcp"][0]["HostPort"],
        agent["containerPort"].as_u64().unwrap().to_string(),
        "{context}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_a_standby_takes_over_after_sigkill() {
    let world = World::start().await;
    let cluster = Cluster::new(&world).await;
    let mut a = cluster.replica(&[]).await;
    let b = cluster.replica(&[]).await;
    let a_id = assert_one_leader(&a, &[&b]).await;

    // Created through the standby: the wake is forwarded, the leader deploys.
    let jwt = b.register("ha-owner").await;
    let created = b
        .create_pending_agent(&jwt, b.agent_body("HA Survivor"))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let before = b.wait_running(&jwt, &id).await;
    assert_one_container(&before, "deployed through a standby");

    a.kill();
    let took = wait_leader(&b).await;
    eprintln!("takeover after SIGKILL of the leader: {took:?}");
    let b_id = health(&b).await["replica"].as_str().unwrap().to_owned();
    assert_ne!(a_id, b_id);

    // A third replica joins as a standby of the new leader.
    let c = cluster.replica(&[]).await;
    assert_one_leader(&b, &[&c]).await;
    // The running agent was adopted, not redeployed.
    let agent = c
        .wait_status(&jwt, &id, &["RUNNING"], Duration::from_secs(5))
        .await;
    assert_eq!(agent["containerId"], before["containerId"]);
    assert_one_container(&agent, "after the takeover");
    assert_answers(&c, &jwt, &id).await;

    // A restart through the standby: forwarded, the new leader re-pairs.
    let (status, body) = c.restart(&jwt, &id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let restarted = c.wait_running(&jwt, &id).await;
    assert_one_container(&restarted, "after a restart through a standby");
    assert_answers(&c, &jwt, &id).await;

    // A DELETE through the standby returns once the leader removed it all.
    let (status, body) = c.delete_agent(&jwt, &id).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = c.get_agent(&jwt, &id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(agent_containers(&id).is_empty());
    assert!(!volume_exists("zeroclaw-ha-survivor-data"));

    // A clean shutdown (SIGTERM) gives the lease up: no wait for its TTL.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &b.pid().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let took = wait_leader(&c).await;
    eprintln!("takeover after SIGTERM of the leader: {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_through_a_standby_cancels_the_leaders_deploy() {
    let world = World::start().await;
    let cluster = Cluster::new(&world).await;
    // The leader's deploys pause 60 s after injecting their files.
    let a = cluster
        .replica(&[("ZCAAS_PAUSE_AT", "after-upload:60000")])
        .await;
    let b = cluster.replica(&[]).await;
    assert_one_leader(&a, &[&b]).await;
    let jwt = b.register("ha-deleter").await;
    let created = b
        .create_pending_agent(&jwt, b.agent_body("HA Deleted"))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    // The container exists: the deploy is in its pause.
    b.wait_for(&jwt, &id, TIMEOUT, |a| a["containerId"].is_string())
        .await;
    let asked = Instant::now();
    let (status, body) = b.delete_agent(&jwt, &id).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "the DELETE waited for the deploy: {:?}",
        asked.elapsed()
    );
    let (status, _) = a.get_agent(&jwt, &id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(agent_containers(&id).is_empty());
    assert!(!volume_exists("zeroclaw-ha-deleted-data"));
}

/// The crash points of the deploy (`ZCAAS_CRASH_AT`), in deploy order.
const CRASH_POINTS: [&str; 6] = [
    "after-row",
    "after-create",
    "after-upload",
    "after-start",
    "after-code",
    "after-pair",
];

/// One crash point: leader A aborts there while deploying an agent created
/// through standby B; B takes over and finishes the deploy.
async fn leader_killed_at(cluster: &Cluster<'_>, point: &str) {
    let mut a = cluster.replica(&[("ZCAAS_CRASH_AT", point)]).await;
    let b = cluster.replica(&[]).await;
    assert_one_leader(&a, &[&b]).await;
    let jwt = b.register(&format!("ha-{point}")).await;
    let created = b
        .create_pending_agent(&jwt, b.agent_body(&format!("ha crash {point}")))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let status = a.wait_exit(TIMEOUT).await;
    assert!(!status.success(), "the leader should have died at {point}");
    let died = Instant::now();

    let agent = b
        .wait_status(&jwt, &id, &["RUNNING", "ERROR"], TIMEOUT)
        .await;
    eprintln!(
        "{point}: RUNNING on the new leader {:?} after the crash",
        died.elapsed()
    );
    assert_eq!(
        agent["status"], "RUNNING",
        "after a crash at {point}: {agent}"
    );
    assert_eq!(health(&b).await["reconciler"], "leader");
    assert_one_container(&agent, &format!("after a crash at {point}"));
    assert_answers(&b, &jwt, &id).await;
    // No deploy went wrong on the way: the path to RUNNING has no ERROR.
    let errors: Vec<String> = sqlx::query_scalar(
        "SELECT reason FROM agent_events WHERE agent_id = $1 AND to_status = 'ERROR'",
    )
    .bind(&id)
    .fetch_all(&cluster.sql().await)
    .await
    .unwrap();
    assert!(errors.is_empty(), "after a crash at {point}: {errors:?}");

    let (code, body) = b.delete_agent(&jwt, &id).await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    assert!(agent_containers(&id).is_empty(), "after a crash at {point}");
    assert!(!volume_exists(&format!("zeroclaw-ha-crash-{point}-data")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_at_each_deploy_crash_point() {
    let world = World::start().await;
    // One pair of replicas (and one database) per point, all at once. The
    // databases are created before and dropped after all of them: dropping
    // one waits for every connection being opened on the server, this
    // task's own included (PostgreSQL's ProcSignalBarrier).
    let mut clusters = Vec::new();
    for _ in CRASH_POINTS {
        clusters.push(Cluster::new(&world).await);
    }
    futures::future::join_all(
        clusters
            .iter()
            .zip(CRASH_POINTS)
            .map(|(cluster, point)| leader_killed_at(cluster, point)),
    )
    .await;
    drop(clusters);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_on_b_sees_every_transition_made_through_a_in_order() {
    let world = World::start().await;
    let cluster = Cluster::new(&world).await;
    let a = cluster.replica(&[]).await;
    let b = cluster.replica(&[]).await;
    assert_one_leader(&a, &[&b]).await;
    let jwt = a.register("ha-watcher").await;
    // Live only, opened before the agent exists: on B, and on A to compare.
    let mut on_b = b.events("/api/events", &jwt, &[]).await;
    let mut on_a = a.events("/api/events", &jwt, &[]).await;

    let created = a
        .create_pending_agent(&jwt, a.agent_body("HA Watched"))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    a.wait_running(&jwt, &id).await;
    let (status, body) = a.restart(&jwt, &id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    a.wait_running(&jwt, &id).await;
    let (status, body) = a.stop(&jwt, &id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    a.wait_status(&jwt, &id, &["STOPPED"], TIMEOUT).await;

    // The reference: the history in the database.
    let stored: Vec<(i64, Option<String>, String)> = sqlx::query_as(
        "SELECT id, from_status, to_status FROM agent_events WHERE agent_id = $1 ORDER BY id",
    )
    .bind(&id)
    .fetch_all(&cluster.sql().await)
    .await
    .unwrap();
    let path: Vec<&str> = stored.iter().map(|(_, _, to)| to.as_str()).collect();
    assert_eq!(
        path,
        [
            "PENDING", "STARTING", "RUNNING", "STOPPING", "STOPPED", "STARTING", "RUNNING",
            "STOPPING", "STOPPED"
        ]
    );
    let seen_b = on_b.transitions(stored.len()).await;
    let seen_a = on_a.transitions(stored.len()).await;
    for (seen, replica) in [(&seen_b, "B"), (&seen_a, "A")] {
        let got: Vec<(i64, Option<String>, String)> = seen
            .iter()
            .map(|e| {
                assert_eq!(e["agentId"], id.as_str(), "{e}");
                (
                    e["id"].as_i64().unwrap(),
                    e["from"].as_str().map(str::to_owned),
                    e["to"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(got, stored, "the stream on {replica}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_tickets_and_rate_limits_hold_across_replicas() {
    let world = World::start().await;
    let cluster = Cluster::new(&world).await;
    let a = cluster.replica(&[]).await;
    let b = cluster.replica(&[]).await;

    // A ticket issued by A opens a stream on B, once.
    let jwt = a.register("ha-ticket").await;
    let (status, body) = a.stream_ticket(&jwt).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ticket = body["ticket"].as_str().unwrap();
    let path = format!("/api/events?ticket={ticket}");
    let res = b.open_stream(&path, None, &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    drop(res);
    let res = a.open_stream(&path, None, &[]).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "spent on B");

    // Login failures on A and B add up to one limit.
    let email = format!("ha-ticket-{}@example.test", world.prefix);
    let max = zcaas::api::auth::MAX_FAILURES;
    let wrong = json!({"email": email, "password": "wrong-password"});
    for i in 0..max {
        let replica = if i % 2 == 0 { &a } else { &b };
        let (status, body) = replica
            .call(
                reqwest::Method::POST,
                "/api/auth/login",
                None,
                Some(wrong.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "failure {i}: {body}");
    }
    let right = json!({"email": email, "password": PASSWORD});
    for replica in [&a, &b] {
        let res = replica
            .http
            .post(replica.url("/api/auth/login"))
            .json(&right)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(res.headers().contains_key("retry-after"));
    }

    // Registrations from one address on A and B add up to one limit (the
    // first was `ha-ticket` above).
    let max = zcaas::api::auth::MAX_REGISTRATIONS;
    for i in 1..max {
        let replica = if i % 2 == 0 { &a } else { &b };
        replica
            .register_email(&format!("ha-reg-{i}-{}@example.test", world.prefix))
            .await;
    }
    for replica in [&a, &b] {
        let creds = json!({"email": format!("ha-reg-over-{}@example.test", world.prefix),
                           "password": PASSWORD});
        let (status, body) = replica
            .call(
                reqwest::Method::POST,
                "/api/auth/register",
                None,
                Some(creds),
            )
            .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    }
}
