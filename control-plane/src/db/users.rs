//! `users`: accounts, roles and plans. Emails are stored lower-cased; the
//! caller normalises them (`validation::email`).

use chrono::Utc;

use crate::db::{is_unique_violation, Db};
use crate::model::{Plan, Role, User};

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    /// Another account has this email (UNIQUE constraint).
    #[error("email already registered")]
    EmailTaken,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A user to create; `password_hash` is an argon2id PHC string.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub email: &'a str,
    pub password_hash: &'a str,
    pub role: Role,
    pub plan: Plan,
}

/// Inserts a user with a fresh UUID v4 id.
pub async fn create(db: &Db, new: &NewUser<'_>) -> Result<User, CreateUserError> {
    let res = sqlx::query_as(
        "INSERT INTO users (id, email, password_hash, role, plan, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING *",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(new.email)
    .bind(new.password_hash)
    .bind(new.role)
    .bind(new.plan)
    .bind(Utc::now())
    .fetch_one(db)
    .await;
    match res {
        Ok(user) => Ok(user),
        Err(e) if is_unique_violation(&e) => Err(CreateUserError::EmailTaken),
        Err(e) => Err(e.into()),
    }
}

/// The user with this (lower-cased) email.
pub async fn get_by_email(db: &Db, email: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM users WHERE email = ?1")
        .bind(email)
        .fetch_optional(db)
        .await
}

/// The user with this id.
pub async fn get_by_id(db: &Db, id: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM users WHERE id = ?1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// How many admins exist (bootstrap creates one when there is none).
pub async fn count_admins(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'")
        .fetch_one(db)
        .await
}

/// Every user, oldest first.
pub async fn list(db: &Db) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM users ORDER BY created_at, id")
        .fetch_all(db)
        .await
}

/// Deletes a user (their agents' rows go with them: ON DELETE CASCADE).
/// Returns whether a row was deleted.
pub async fn delete(db: &Db, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM users WHERE id = ?1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}
