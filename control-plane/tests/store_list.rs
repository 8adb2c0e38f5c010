//! `list_owned`, the query behind `GET /api/agents`, reads rows by position
//! from its own select list (and on SQLite from its own reader connections):
//! the agents it returns must be exactly what the by-name decoding of
//! `SELECT *` (`list_for_user`) returns, every column set and unset, on the
//! run's backend (`ZCAAS_TEST_STORE`).

use zcaas::status::DesiredState;
use zcaas::store::agents::NewAgent;
use zcaas_test_support::store::{agent_row, fresh_store, user_row};

#[tokio::test]
async fn list_owned_reads_every_column_as_list_for_user_does() {
    let fx = fresh_store().await;
    let db = fx.db.clone();
    let u = user_row(&db, "owner@x.io").await;
    assert_eq!(
        db.agents().list_owned(&u).await.unwrap().map(|v| v.len()),
        Some(0)
    );
    // One agent with every optional column NULL, two with every one set.
    let bare = agent_row(&u, "bare");
    let full = |slug: &str| NewAgent {
        user_name: Some("Ada".into()),
        communication_style: Some("terse".into()),
        provider_url: Some("https://llm.example/v1".into()),
        temperature: 0.123_456_789_012_345_67,
        auto_save: false,
        encrypted_api_key: Some(format!("v1:k1:key-of-{slug}")),
        encrypted_channels: Some(format!("v1:k1:channels-of-{slug}")),
        ..agent_row(&u, slug)
    };
    let mut ids = Vec::new();
    for new in [bare, full("full-a"), full("full-b")] {
        ids.push(db.agents().insert_pending(&new, None).await.unwrap().0.id);
    }
    for (k, id) in ids.iter().enumerate().skip(1) {
        sqlx::query(
            "UPDATE agents SET container_id = $1, container_port = $2, status = 'RUNNING',
                 encrypted_token = $3, memory_mb = $4, cpu_percent = $5,
                 last_health_at = created_at, attempts = $6, next_attempt_at = updated_at,
                 last_error = $7, spec_hash = $8, ever_running = TRUE,
                 paired_started_at = created_at, config_generation = $6,
                 deployed_generation = $6, channel_health = $9, network = $10
             WHERE id = $11",
        )
        .bind(format!("container-{k}"))
        .bind(40_000 + k as i64)
        .bind(format!("v1:k1:token-{k}"))
        .bind(12.345_678_901_234_567 * k as f64)
        .bind(0.1 + 0.2 * k as f64)
        .bind(k as i64 + 2)
        .bind("an error, \"quoted\" — with ünïcode")
        .bind(format!("hash-{k}"))
        .bind(r#"{"telegram":{"status":"ok"}}"#)
        .bind(format!("zeroone-net-{}", k + 1))
        .bind(id)
        .execute(&fx.sql)
        .await
        .unwrap();
    }
    // Another owner's agent and a deleted one are not listed.
    let other = user_row(&db, "other@x.io").await;
    db.agents()
        .insert_pending(&agent_row(&other, "theirs"), None)
        .await
        .unwrap();
    let gone = db
        .agents()
        .insert_pending(&agent_row(&u, "gone"), None)
        .await
        .unwrap()
        .0
        .id;
    db.lifecycle()
        .set_desired(&gone, DesiredState::Deleted)
        .await
        .unwrap();

    let by_name = db.agents().list_for_user(&u).await.unwrap();
    assert_eq!(by_name.len(), 3);
    // Several times: each of the SQLite readers answers in turn.
    for _ in 0..4 {
        let owned = db
            .agents()
            .list_owned(&u)
            .await
            .unwrap()
            .expect("the user exists");
        assert_eq!(format!("{owned:#?}"), format!("{by_name:#?}"));
    }
    let full = &by_name[1];
    assert!(full.last_health_at.is_some() && full.deployed_generation == Some(3));
    assert_eq!(full.memory_mb, Some(12.345_678_901_234_567));
    assert_eq!(full.network.as_deref(), Some("zeroone-net-2"));
    assert_eq!(by_name[0].network, None);

    // A write is seen by the next list (the readers read the latest commit).
    db.lifecycle()
        .set_desired(&ids[0], DesiredState::Deleted)
        .await
        .unwrap();
    assert_eq!(db.agents().list_owned(&u).await.unwrap().unwrap().len(), 2);
    assert!(db.users().delete(&u).await.unwrap());
    assert!(db.agents().list_owned(&u).await.unwrap().is_none());

    // Closed with the store: no reader outlives it.
    db.close().await;
    assert!(db.agents().list_owned(&other).await.is_err());
}

/// Cost of one `GET /api/agents` query, 10 agents: the store's `list_owned`
/// against what it did before (the pool, `SELECT u.id AS owner_id, a.*`,
/// `FromRow` by name), alternating, in process CPU (every thread, sqlx's
/// SQLite workers included) per call. A measurement, not a check:
/// `cargo test --release -p control-plane --test store_list -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn list_owned_cost() {
    use sqlx::{FromRow, Row};
    fn cpu_seconds() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
    }
    let fx = fresh_store().await;
    if !fx.config.database_url.starts_with("sqlite:") {
        eprintln!("list_owned_cost measures the SQLite path only");
        return;
    }
    let db = fx.db.clone();
    let u = user_row(&db, "cost@x.io").await;
    for k in 0..10 {
        let new = NewAgent {
            encrypted_api_key: Some(format!("v1:k1:key-{k}")),
            ..agent_row(&u, &format!("cost-{k}"))
        };
        db.agents().insert_pending(&new, Some(100)).await.unwrap();
    }
    // The old query, on a pool like the store's.
    let options: sqlx::sqlite::SqliteConnectOptions = fx.config.database_url.parse().unwrap();
    let old_pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap();
    let old = |u: String, pool: sqlx::SqlitePool| async move {
        let rows = sqlx::query(
            "SELECT u.id AS owner_id, a.* FROM users u
             LEFT JOIN agents a ON a.user_id = u.id AND a.desired_state != 'deleted'
             WHERE u.id = ?1 ORDER BY a.created_at, a.id",
        )
        .bind(&u)
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut agents = Vec::new();
        for row in &rows {
            if row.try_get::<Option<String>, _>("id").unwrap().is_some() {
                agents.push(zcaas::model::Agent::from_row(row).unwrap());
            }
        }
        agents
    };
    const CALLS: usize = 20_000;
    const TASKS: usize = 16;
    for round in 0..4 {
        for which in ["old", "new"] {
            let t0 = cpu_seconds();
            let w0 = std::time::Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..TASKS {
                let (db, u, pool) = (db.clone(), u.clone(), old_pool.clone());
                tasks.push(tokio::spawn(async move {
                    for _ in 0..CALLS / TASKS {
                        let n = if which == "old" {
                            old(u.clone(), pool.clone()).await.len()
                        } else {
                            db.agents().list_owned(&u).await.unwrap().unwrap().len()
                        };
                        assert_eq!(n, 10);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let cpu = cpu_seconds() - t0;
            let wall = w0.elapsed().as_secs_f64();
            println!(
                "round {round} {which}: {:.1} µs CPU per list, {:.0} lists/s ({TASKS} tasks, {CALLS} lists)",
                cpu * 1e6 / CALLS as f64,
                CALLS as f64 / wall
            );
        }
    }
}
