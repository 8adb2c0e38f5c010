//! `installation`: the one row naming this installation. Several
//! installations (a staging next to production, or zcaas started from two
//! working directories) may share one Docker engine; the id, generated at the
//! first start and kept in the store, is what tells their objects apart.

use chrono::Utc;

use crate::db::Db;

/// This installation's id: the stored one, or a fresh UUID v4 stored now
/// (first start). Two processes starting at once on one store get the same
/// id (the insert is conditional on the single row).
pub async fn load_or_create(db: &Db) -> Result<String, sqlx::Error> {
    sqlx::query(
        "INSERT INTO installation (singleton, id, created_at) VALUES (1, ?1, ?2)
         ON CONFLICT (singleton) DO NOTHING",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(Utc::now())
    .execute(db)
    .await?;
    sqlx::query_scalar("SELECT id FROM installation WHERE singleton = 1")
        .fetch_one(db)
        .await
}
