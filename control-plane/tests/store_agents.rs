//! Store tests on a fresh database of the run's backend (no Docker): users, agent creation with
//! its quota and event, slug uniqueness, owner scoping, partial updates and
//! the conditional secret replacement used by key rotation, channel tokens
//! held by one agent at a time and the stored channel health.

use std::sync::Arc;

use zcaas::model::{Plan, Role};
use zcaas::secrets::SecretField;
use zcaas::status::{DesiredState, Status};
use zcaas::store::{agents, users, Store};
use zcaas_test_support::store::{agent_row, fresh_store, user_row, FreshStore};

/// A fresh store of the run's backend (`ZCAAS_TEST_STORE`) and the store
/// handle itself; the first value holds the raw pool and keeps the
/// database alive.
async fn fresh() -> (FreshStore, Store) {
    let fx = fresh_store().await;
    let db = fx.db.clone();
    (fx, db)
}

#[tokio::test]
async fn users_are_unique_by_email() {
    let (_fx, db) = fresh().await;
    let id = user_row(&db, "a@x.io").await;
    let dup = users::NewUser {
        email: "a@x.io",
        password_hash: "y",
        role: Role::User,
        plan: Plan::Free,
    };
    assert!(matches!(
        db.users().create(&dup).await,
        Err(users::CreateUserError::EmailTaken)
    ));
    assert_eq!(
        db.users().get_by_email("a@x.io").await.unwrap().unwrap().id,
        id
    );
    assert_eq!(
        db.users().get_by_id(&id).await.unwrap().unwrap().email,
        "a@x.io"
    );
    assert_eq!(db.users().count_admins().await.unwrap(), 0);
    let admin = users::NewUser {
        email: "root@x.io",
        password_hash: "y",
        role: Role::Admin,
        plan: Plan::Pro,
    };
    db.users().create(&admin).await.unwrap();
    assert_eq!(db.users().count_admins().await.unwrap(), 1);
    assert_eq!(db.users().list().await.unwrap().len(), 2);
    assert!(db.users().delete(&id).await.unwrap());
    assert!(db.users().get_by_id(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn insert_writes_pending_row_and_creation_event() {
    let (_fx, db) = fresh().await;
    let u = user_row(&db, "a@x.io").await;
    let (agent, event) = db
        .agents()
        .insert_pending(&agent_row(&u, "alpha"), Some(3))
        .await
        .unwrap();
    assert_eq!(agent.status, Status::Pending);
    assert_eq!(agent.desired_state, DesiredState::Running);
    assert_eq!(agent.auto_save, "true");
    assert_eq!(
        (event.from, event.to, event.reason.as_str()),
        (None, Status::Pending, "created")
    );
    let stored: (Option<String>, String, String) = sqlx::query_as(
        "SELECT from_status, to_status, reason FROM agent_events WHERE agent_id = $1",
    )
    .bind(&agent.id)
    .fetch_one(&_fx.sql)
    .await
    .unwrap();
    assert_eq!(stored, (None, "PENDING".into(), "created".into()));
}

#[tokio::test]
async fn slug_is_unique_across_users() {
    let (_fx, db) = fresh().await;
    let a = user_row(&db, "a@x.io").await;
    let b = user_row(&db, "b@x.io").await;
    db.agents()
        .insert_pending(&agent_row(&a, "same"), None)
        .await
        .unwrap();
    let err = db
        .agents()
        .insert_pending(&agent_row(&b, "same"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, agents::InsertError::SlugTaken), "{err:?}");
    // Nothing half-created: no second row, no second event.
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agent_events")
        .fetch_one(&_fx.sql)
        .await
        .unwrap();
    assert_eq!(events, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_holds_under_concurrent_creates() {
    let (_fx, db) = fresh().await;
    let u = Arc::new(user_row(&db, "a@x.io").await);
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let (db, u) = (db.clone(), u.clone());
            tokio::spawn(async move {
                db.agents()
                    .insert_pending(&agent_row(&u, &format!("agent-{i}")), Some(3))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(agents::InsertError::QuotaExceeded { max: 3 }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(db.agents().count_for_user(&u).await.unwrap(), 3);
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agent_events")
        .fetch_one(&_fx.sql)
        .await
        .unwrap();
    assert_eq!(events, 3);
    // Unlimited plans are unlimited; another user's quota is their own.
    let other = user_row(&db, "b@x.io").await;
    for i in 0..5 {
        db.agents()
            .insert_pending(&agent_row(&other, &format!("b-{i}")), None)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn agents_being_deleted_leave_views_and_quota() {
    let (_fx, db) = fresh().await;
    let u = user_row(&db, "a@x.io").await;
    let (a, _) = db
        .agents()
        .insert_pending(&agent_row(&u, "one"), Some(1))
        .await
        .unwrap();
    assert!(db
        .agents()
        .insert_pending(&agent_row(&u, "two"), Some(1))
        .await
        .is_err());
    db.lifecycle()
        .set_desired(&a.id, DesiredState::Deleted)
        .await
        .unwrap();
    assert!(db.agents().get_for_user(&u, &a.id).await.unwrap().is_none());
    assert!(db.agents().list_for_user(&u).await.unwrap().is_empty());
    db.agents()
        .insert_pending(&agent_row(&u, "two"), Some(1))
        .await
        .unwrap();
    assert_eq!(db.agents().list_all_with_owner().await.unwrap().len(), 2);
}

#[tokio::test]
async fn reads_and_updates_are_owner_scoped() {
    let (_fx, db) = fresh().await;
    let a = user_row(&db, "a@x.io").await;
    let b = user_row(&db, "b@x.io").await;
    let (agent, _) = db
        .agents()
        .insert_pending(&agent_row(&a, "mine"), None)
        .await
        .unwrap();
    assert!(db
        .agents()
        .get_for_user(&a, &agent.id)
        .await
        .unwrap()
        .is_some());
    assert!(db
        .agents()
        .get_for_user(&b, &agent.id)
        .await
        .unwrap()
        .is_none());
    assert!(db.agents().list_for_user(&b).await.unwrap().is_empty());

    let changes = agents::AgentChanges {
        name: Some("Renamed".into()),
        user_name: Some(Some("Alice".into())),
        temperature: Some(1.5),
        auto_save: Some(false),
        ..Default::default()
    };
    assert!(db
        .agents()
        .update_config(&b, &agent.id, &changes)
        .await
        .unwrap()
        .is_none());
    let updated = db
        .agents()
        .update_config(&a, &agent.id, &changes)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            updated.name.as_str(),
            updated.user_name.as_deref(),
            updated.temperature,
            updated.auto_save.as_str()
        ),
        ("Renamed", Some("Alice"), 1.5, "false")
    );
    assert_eq!(updated.model, "gpt-4o-mini");
    assert!(!agents::AgentChanges {
        name: Some("x".into()),
        ..Default::default()
    }
    .changes_runtime());
    assert!(changes.changes_runtime());

    let clear = agents::AgentChanges {
        user_name: Some(None),
        ..Default::default()
    };
    let cleared = db
        .agents()
        .update_config(&a, &agent.id, &clear)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cleared.user_name, None);
    assert_eq!(cleared.name, "Renamed");

    let owners = db.agents().list_all_with_owner().await.unwrap();
    assert_eq!(owners[0].owner_email, "a@x.io");
}

#[tokio::test]
async fn secret_replacement_is_conditional() {
    let (_fx, db) = fresh().await;
    let u = user_row(&db, "a@x.io").await;
    let mut n = agent_row(&u, "sec");
    n.encrypted_api_key = Some("v1:k1:old".into());
    let (agent, _) = db.agents().insert_pending(&n, None).await.unwrap();
    assert!(!db
        .agents()
        .replace_secret(&agent.id, SecretField::ApiKey, "v1:k1:other", "v1:k2:new")
        .await
        .unwrap());
    assert!(db
        .agents()
        .replace_secret(&agent.id, SecretField::ApiKey, "v1:k1:old", "v1:k2:new")
        .await
        .unwrap());
    let rows = db.agents().list_secrets().await.unwrap();
    assert_eq!(rows[0].encrypted_api_key.as_deref(), Some("v1:k2:new"));
    assert_eq!(rows[0].encrypted_token, None);
}

/// `list_owned` lists what `list_for_user` lists, in one query that also
/// tells a user without agents (`Some([])`) from a user that does not exist
/// (`None`: a deleted account's token).
#[tokio::test]
async fn list_owned_proves_the_owner_exists() {
    let (_fx, db) = fresh().await;
    let u = user_row(&db, "owner@x.io").await;
    let other = user_row(&db, "other@x.io").await;
    assert_eq!(
        db.agents().list_owned(&u).await.unwrap().map(|v| v.len()),
        Some(0)
    );
    for slug in ["first", "second", "third"] {
        db.agents()
            .insert_pending(&agent_row(&u, slug), None)
            .await
            .unwrap();
    }
    db.agents()
        .insert_pending(&agent_row(&other, "theirs"), None)
        .await
        .unwrap();
    let gone = db.agents().list_for_user(&u).await.unwrap()[1].id.clone();
    db.lifecycle()
        .set_desired(&gone, DesiredState::Deleted)
        .await
        .unwrap();
    let ids = |v: Vec<zcaas::model::Agent>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
    let owned = db
        .agents()
        .list_owned(&u)
        .await
        .unwrap()
        .expect("the user exists");
    assert_eq!(
        ids(owned),
        ids(db.agents().list_for_user(&u).await.unwrap())
    );
    assert_eq!(db.agents().list_owned(&u).await.unwrap().unwrap().len(), 2);
    assert!(db.users().delete(&u).await.unwrap());
    assert!(db.agents().list_owned(&u).await.unwrap().is_none());
    assert!(db
        .agents()
        .list_owned("no-such-user")
        .await
        .unwrap()
        .is_none());
}

/// A move to RUNNING stamps `last_health_at` in the same statement: no
/// reader sees a RUNNING agent without a health time (the deploy e2e test
/// once caught the gap between the transition and a separate write).
#[tokio::test]
async fn running_carries_its_health_time() {
    let (_fx, db) = fresh().await;
    let u = user_row(&db, "h@x.io").await;
    let (a, _) = db
        .agents()
        .insert_pending(&agent_row(&u, "healthy"), None)
        .await
        .unwrap();
    assert!(a.last_health_at.is_none());
    db.lifecycle()
        .transition(&a.id, Status::Pending, Status::Starting, "deploy", None)
        .await
        .unwrap()
        .expect("PENDING → STARTING");
    let starting = db.lifecycle().get(&a.id).await.unwrap().unwrap();
    assert!(starting.last_health_at.is_none());
    db.lifecycle()
        .transition_to_running(&starting, "deployed")
        .await
        .unwrap()
        .expect("STARTING → RUNNING");
    let running = db.lifecycle().get(&a.id).await.unwrap().unwrap();
    assert_eq!(running.status, Status::Running);
    assert!(running.last_health_at.is_some());
}

fn token(hash: &str, field: &str) -> agents::ChannelToken {
    agents::ChannelToken {
        hash: hash.into(),
        field: field.into(),
    }
}

/// The hashes agent `id` holds in `channel_tokens`, sorted.
async fn held(fx: &FreshStore, id: &str) -> Vec<String> {
    use sqlx::Row;
    let rows = sqlx::query("SELECT token_hash FROM channel_tokens WHERE agent_id = $1")
        .bind(id)
        .fetch_all(&fx.sql)
        .await
        .unwrap();
    let mut out: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    out.sort();
    out
}

/// One channel token serves one agent: a second insert or a change claiming
/// a held hash fails naming the field and changes nothing; the holder may
/// keep or replace its own; a deleted agent's tokens are free again.
#[tokio::test]
async fn channel_tokens_serve_one_agent() {
    let (fx, db) = fresh().await;
    let u = user_row(&db, "t@x.io").await;
    let tg = "channels.telegram.botToken";
    let first = agents::NewAgent {
        channel_tokens: vec![token("h1", tg), token("h2", "channels.slack.botToken")],
        ..agent_row(&u, "first")
    };
    let (a, _) = db.agents().insert_pending(&first, None).await.unwrap();
    assert_eq!(held(&fx, &a.id).await, ["h1", "h2"]);

    // Same token on another agent: refused, nothing created.
    let second = agents::NewAgent {
        channel_tokens: vec![token("h9", "channels.discord.botToken"), token("h1", tg)],
        ..agent_row(&u, "second")
    };
    match db.agents().insert_pending(&second, None).await {
        Err(agents::InsertError::TokenTaken { field }) => assert_eq!(field, tg),
        other => panic!("expected TokenTaken, got {other:?}"),
    }
    assert_eq!(db.agents().count_for_user(&u).await.unwrap(), 1);
    assert!(held(&fx, &second.id).await.is_empty());
    let (b, _) = db
        .agents()
        .insert_pending(&agent_row(&u, "second"), None)
        .await
        .unwrap();

    // A change to the held token: refused, the row untouched.
    let steal = agents::AgentChanges {
        name: Some("Thief".into()),
        encrypted_channels: Some(Some("v1:k:x".into())),
        channel_tokens: Some(vec![token("h2", "channels.slack.botToken")]),
        ..Default::default()
    };
    match db.agents().update_config(&u, &b.id, &steal).await {
        Err(agents::UpdateError::TokenTaken { field }) => {
            assert_eq!(field, "channels.slack.botToken")
        }
        other => panic!("expected TokenTaken, got {other:?}"),
    }
    let b_now = db.lifecycle().get(&b.id).await.unwrap().unwrap();
    assert_eq!(
        (b_now.name.as_str(), b_now.encrypted_channels),
        ("second", None)
    );
    assert!(held(&fx, &b.id).await.is_empty());

    // The holder re-claims its own token and drops the other.
    let keep = agents::AgentChanges {
        encrypted_channels: Some(Some("v1:k:y".into())),
        channel_tokens: Some(vec![token("h1", tg), token("h3", tg)]),
        ..Default::default()
    };
    db.agents()
        .update_config(&u, &a.id, &keep)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held(&fx, &a.id).await, ["h1", "h3"]);
    // h2 is free now: b takes it.
    db.agents()
        .update_config(&u, &b.id, &steal)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held(&fx, &b.id).await, ["h2"]);
    // A change without channels leaves the tokens alone; clearing frees them.
    let rename = agents::AgentChanges {
        name: Some("Renamed".into()),
        ..Default::default()
    };
    db.agents().update_config(&u, &b.id, &rename).await.unwrap();
    assert_eq!(held(&fx, &b.id).await, ["h2"]);
    let clear = agents::AgentChanges {
        encrypted_channels: Some(None),
        channel_tokens: Some(Vec::new()),
        ..Default::default()
    };
    db.agents().update_config(&u, &b.id, &clear).await.unwrap();
    assert!(held(&fx, &b.id).await.is_empty());

    // Deleting the holder frees its tokens (ON DELETE CASCADE).
    db.lifecycle().delete(&a.id).await.unwrap();
    assert!(held(&fx, &a.id).await.is_empty());
    let third = agents::NewAgent {
        channel_tokens: vec![token("h1", tg)],
        ..agent_row(&u, "third")
    };
    db.agents().insert_pending(&third, None).await.unwrap();
}

/// Concurrent creates with one token: exactly one wins.
#[tokio::test]
async fn concurrent_claims_of_one_token_admit_one() {
    let (_fx, db) = fresh().await;
    let u = user_row(&db, "c@x.io").await;
    let db = Arc::new(db);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let db = db.clone();
            let u = u.clone();
            tokio::spawn(async move {
                let new = agents::NewAgent {
                    channel_tokens: vec![token("same", "channels.telegram.botToken")],
                    ..agent_row(&u, &format!("race-{i}"))
                };
                db.agents().insert_pending(&new, None).await
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(agents::InsertError::TokenTaken { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(db.agents().count_for_user(&u).await.unwrap(), 1);
}

/// `channel_health` round trip; only RUNNING agents' reports are counted.
#[tokio::test]
async fn channel_health_round_trip() {
    let (_fx, db) = fresh().await;
    let u = user_row(&db, "ch@x.io").await;
    let (a, _) = db
        .agents()
        .insert_pending(&agent_row(&u, "chan"), None)
        .await
        .unwrap();
    assert_eq!(a.channel_health, None);
    let report = r#"{"telegram":{"status":"ok","lastError":null,"restartCount":0}}"#;
    db.lifecycle()
        .set_channel_health(&a.id, Some(report))
        .await
        .unwrap();
    let read = db.lifecycle().get(&a.id).await.unwrap().unwrap();
    assert_eq!(read.channel_health.as_deref(), Some(report));
    let owned = db.agents().get_for_user(&u, &a.id).await.unwrap().unwrap();
    assert_eq!(owned.channel_health.as_deref(), Some(report));
    assert!(db
        .agents()
        .running_channel_health()
        .await
        .unwrap()
        .is_empty());

    db.lifecycle()
        .transition(&a.id, Status::Pending, Status::Starting, "deploy", None)
        .await
        .unwrap()
        .unwrap();
    let starting = db.lifecycle().get(&a.id).await.unwrap().unwrap();
    db.lifecycle()
        .transition_to_running(&starting, "deployed")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        db.agents().running_channel_health().await.unwrap(),
        [report.to_owned()]
    );
    db.lifecycle()
        .set_channel_health(&a.id, None)
        .await
        .unwrap();
    let cleared = db.lifecycle().get(&a.id).await.unwrap().unwrap();
    assert_eq!(cleared.channel_health, None);
}
