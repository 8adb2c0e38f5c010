//! `LifecycleStore::claim_network` (issue 16: agents spread over several
//! agents' networks, at most `agents_per_network` on each) on the backend
//! the run selects (`ZCAAS_TEST_STORE`: SQLite by default, PostgreSQL in the
//! second run of scripts/test.sh): claims fill the first network up to the
//! cap, then the second; concurrent claims never pass the cap; a held
//! network never changes; a deleted agent's place is free again; agents
//! deployed before networks were recorded count on the first. Every wait is
//! bounded; each test has its own database.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use zcaas::status::DesiredState;
use zcaas::store::Store;
use zcaas_test_support::store::{agent_row, fresh_store, user_row};

const FIRST: &str = "zcaas-net";
const BOUND: Duration = Duration::from_secs(60);

/// Inserts `n` PENDING agents of one owner and returns their ids.
async fn agents(db: &Store, owner: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (agent, _) = db
            .agents()
            .insert_pending(&agent_row(owner, &format!("{prefix}-{i}")), None)
            .await
            .unwrap();
        ids.push(agent.id);
    }
    ids
}

async fn claim(db: &Store, id: &str, cap: u32) -> String {
    db.lifecycle()
        .claim_network(id, FIRST, cap)
        .await
        .unwrap()
        .expect("the agent exists")
}

/// How many agents hold each network (rows read back).
async fn census(db: &Store) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for a in db.lifecycle().list_all().await.unwrap() {
        if let Some(n) = a.network {
            *out.entry(n).or_default() += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_fill_each_network_up_to_the_cap_then_the_next() {
    let fx = fresh_store().await;
    let db = fx.db.clone();
    let owner = user_row(&db, "nets@x.io").await;
    let ids = agents(&db, &owner, "n", 5).await;

    assert_eq!(claim(&db, &ids[0], 2).await, FIRST);
    assert_eq!(claim(&db, &ids[1], 2).await, FIRST);
    assert_eq!(claim(&db, &ids[2], 2).await, format!("{FIRST}-2"));
    // A held network never changes, whatever the counts say now.
    assert_eq!(claim(&db, &ids[2], 2).await, format!("{FIRST}-2"));
    assert_eq!(claim(&db, &ids[0], 1).await, FIRST);
    let got = db.lifecycle().get(&ids[2]).await.unwrap().unwrap();
    assert_eq!(got.network.as_deref(), Some(&*format!("{FIRST}-2")));

    // A deleted agent frees its place: as soon as its desired state says
    // so, and with its row.
    db.lifecycle()
        .set_desired(&ids[1], DesiredState::Deleted)
        .await
        .unwrap();
    assert_eq!(claim(&db, &ids[3], 2).await, FIRST);
    db.lifecycle().delete(&ids[0]).await.unwrap();
    db.lifecycle().delete(&ids[1]).await.unwrap();
    assert_eq!(claim(&db, &ids[4], 2).await, FIRST);
    assert_eq!(
        census(&db).await,
        BTreeMap::from([(FIRST.to_owned(), 2), (format!("{FIRST}-2"), 1)])
    );
    assert_eq!(
        db.lifecycle().networks_in_use(FIRST).await.unwrap(),
        [FIRST.to_owned(), format!("{FIRST}-2")]
    );
    // No such agent: nothing claimed.
    assert_eq!(
        db.lifecycle()
            .claim_network("no-such-agent", FIRST, 2)
            .await
            .unwrap(),
        None
    );
}

/// Agents deployed before networks were recorded (no network, but a
/// container) are on the first network and count there; an agent never
/// deployed does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_from_before_count_on_the_first_network() {
    let fx = fresh_store().await;
    let db = fx.db.clone();
    let owner = user_row(&db, "legacy@x.io").await;
    let ids = agents(&db, &owner, "l", 4).await;
    assert!(db
        .lifecycle()
        .networks_in_use(FIRST)
        .await
        .unwrap()
        .is_empty());
    db.lifecycle()
        .set_container(&ids[0], "legacy-container", "h")
        .await
        .unwrap();
    assert_eq!(
        db.lifecycle().networks_in_use(FIRST).await.unwrap(),
        [FIRST.to_owned()]
    );
    // ids[1] is PENDING without a container: not counted.
    assert_eq!(claim(&db, &ids[2], 2).await, FIRST);
    assert_eq!(claim(&db, &ids[3], 2).await, format!("{FIRST}-2"));
    // The legacy agent itself, claiming at its next deploy, keeps the first.
    assert_eq!(claim(&db, &ids[0], 2).await, FIRST);
}

/// Many agents claiming at once: no network ever holds more than the cap,
/// and the networks are filled in order (only the last one partly).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_never_pass_the_cap() {
    const CAP: u32 = 3;
    const AGENTS: usize = 20;
    let fx = fresh_store().await;
    let db = fx.db.clone();
    let owner = user_row(&db, "race@x.io").await;
    let ids = agents(&db, &owner, "r", AGENTS).await;
    // Open the pool's connections first: a race on one connection proves
    // nothing.
    let warm: Vec<_> = (0..16)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.admin().now().await.unwrap() })
        })
        .collect();
    for w in warm {
        w.await.unwrap();
    }
    let start = Arc::new(tokio::sync::Barrier::new(AGENTS));
    let tasks: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| {
            let (db, start) = (db.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                claim(&db, &id, CAP).await
            })
        })
        .collect();
    let mut claimed: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        let network = tokio::time::timeout(BOUND, t)
            .await
            .expect("a claim finished in time")
            .expect("a claim task panicked");
        *claimed.entry(network).or_default() += 1;
    }
    assert_eq!(claimed, census(&db).await, "what the claims said is stored");
    // 20 agents, 3 per network: 6 full networks and 2 on the 7th.
    let expected: BTreeMap<String, usize> = (1..=7)
        .map(|i| {
            let name = if i == 1 {
                FIRST.to_owned()
            } else {
                format!("{FIRST}-{i}")
            };
            (name, if i == 7 { 2 } else { 3 })
        })
        .collect();
    assert_eq!(claimed, expected);
}
