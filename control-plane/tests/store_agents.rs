//! Store tests on a fresh database of the run's backend (no Docker): users, agent creation with
//! its quota and event, slug uniqueness, owner scoping, partial updates and
//! the conditional secret replacement used by key rotation.

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
