//! The stats poll's batched write (`LifecycleStore::record_polls`) on the
//! backend the run selects (`ZCAAS_TEST_STORE`: SQLite by default,
//! PostgreSQL in the second run of scripts/test.sh): one call writes many
//! agents, a `None` leaves its column alone, and only RUNNING agents change.

use chrono::{DateTime, SubsecRound, Utc};
use zcaas::status::Status;
use zcaas::store::lifecycle::PollRecord;
use zcaas::store::Store;
use zcaas_test_support::store::{agent_row, fresh_store, user_row};

/// A new agent of `owner` moved to `status` (through the transitions the
/// reconciler makes).
async fn agent_in(db: &Store, owner: &str, slug: &str, status: Status) -> String {
    let (agent, _) = db
        .agents()
        .insert_pending(&agent_row(owner, slug), None)
        .await
        .expect("insert");
    let path: &[Status] = match status {
        Status::Pending => &[],
        Status::Running => &[Status::Starting, Status::Running],
        Status::Stopped => &[
            Status::Starting,
            Status::Running,
            Status::Stopping,
            Status::Stopped,
        ],
        other => panic!("no path to {other:?} here"),
    };
    let mut from = Status::Pending;
    for to in path {
        db.lifecycle()
            .transition(&agent.id, from, *to, "test", None)
            .await
            .expect("transition")
            .unwrap_or_else(|| panic!("{from:?} -> {to:?}"));
        from = *to;
    }
    agent.id
}

#[tokio::test]
async fn one_call_records_a_round_of_polls_on_running_agents_only() {
    let fx = fresh_store().await;
    let db = fx.db.clone();
    let owner = user_row(&db, "polls@x.io").await;
    let mut running = Vec::new();
    for i in 0..50 {
        running.push(agent_in(&db, &owner, &format!("run{i}"), Status::Running).await);
    }
    let stopped = agent_in(&db, &owner, "stopped", Status::Stopped).await;
    let pending = agent_in(&db, &owner, "pending", Status::Pending).await;
    let at: DateTime<Utc> = Utc::now().trunc_subsecs(6);

    // A round: every agent with memory, CPU and a health time; the first one
    // also with a channel report.
    let mut records: Vec<PollRecord> = running
        .iter()
        .enumerate()
        .map(|(i, id)| PollRecord {
            id: id.clone(),
            memory_mb: Some(10.0 + i as f64),
            cpu_percent: Some(i as f64 / 4.0),
            healthy_at: Some(at),
            channel_health: None,
        })
        .collect();
    records[0].channel_health = Some(Some(r#"{"telegram":"ok"}"#.to_owned()));
    for id in [&stopped, &pending, &"no-such-agent".to_owned()] {
        records.push(PollRecord {
            id: id.clone(),
            memory_mb: Some(99.0),
            cpu_percent: Some(99.0),
            healthy_at: Some(at),
            channel_health: Some(Some("{}".to_owned())),
        });
    }
    let written = db.lifecycle().record_polls(&records).await.expect("record");
    assert_eq!(written, 50, "only the RUNNING agents");
    for (i, id) in running.iter().enumerate() {
        let a = db.lifecycle().get(id).await.unwrap().unwrap();
        assert_eq!(a.memory_mb, Some(10.0 + i as f64));
        assert_eq!(a.cpu_percent, Some(i as f64 / 4.0));
        // Stamped by the move to RUNNING, then by the poll.
        assert_eq!(a.last_health_at, Some(at));
        let expected = (i == 0).then(|| r#"{"telegram":"ok"}"#.to_owned());
        assert_eq!(a.channel_health, expected);
    }
    for id in [&stopped, &pending] {
        let a = db.lifecycle().get(id).await.unwrap().unwrap();
        assert_eq!(
            (a.memory_mb, a.cpu_percent, a.channel_health),
            (None, None, None)
        );
    }

    // The next round: no CPU figure (a first poll), no health answer for
    // the second agent, the first agent's channels cleared; `None` keeps.
    let later = at + chrono::Duration::seconds(10);
    let next = vec![
        PollRecord {
            id: running[0].clone(),
            memory_mb: Some(1.5),
            cpu_percent: None,
            healthy_at: Some(later),
            channel_health: Some(None),
        },
        PollRecord {
            id: running[1].clone(),
            memory_mb: Some(2.5),
            cpu_percent: Some(7.0),
            healthy_at: None,
            channel_health: None,
        },
    ];
    assert_eq!(db.lifecycle().record_polls(&next).await.unwrap(), 2);
    let a0 = db.lifecycle().get(&running[0]).await.unwrap().unwrap();
    assert_eq!((a0.memory_mb, a0.cpu_percent), (Some(1.5), Some(0.0)));
    assert_eq!((a0.last_health_at, a0.channel_health), (Some(later), None));
    let a1 = db.lifecycle().get(&running[1]).await.unwrap().unwrap();
    assert_eq!((a1.memory_mb, a1.cpu_percent), (Some(2.5), Some(7.0)));
    assert_eq!(a1.last_health_at, Some(at));

    assert_eq!(db.lifecycle().record_polls(&[]).await.unwrap(), 0);
    // An id PostgreSQL's TEXT cannot hold matches nothing, as on SQLite.
    let odd = PollRecord {
        id: "nul\0id".to_owned(),
        memory_mb: Some(1.0),
        ..PollRecord::default()
    };
    assert_eq!(db.lifecycle().record_polls(&[odd]).await.unwrap(), 0);
}
