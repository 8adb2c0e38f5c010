//! `users`: accounts, roles and plans. Emails are stored lower-cased; the
//! caller normalises them (`validation::email`).

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

/// Accounts.
#[async_trait::async_trait]
pub trait UserStore: Send + Sync {
    /// Inserts a user with a fresh UUID v4 id.
    /// Errors: [`CreateUserError::EmailTaken`].
    async fn create(&self, new: &NewUser<'_>) -> Result<User, CreateUserError>;

    /// The user with this (lower-cased) email.
    async fn get_by_email(&self, email: &str) -> Result<Option<User>, sqlx::Error>;

    /// The user with this id.
    async fn get_by_id(&self, id: &str) -> Result<Option<User>, sqlx::Error>;

    /// How many admins exist (bootstrap creates one when there is none).
    async fn count_admins(&self) -> Result<i64, sqlx::Error>;

    /// Every user, oldest first.
    async fn list(&self) -> Result<Vec<User>, sqlx::Error>;

    /// Deletes a user (their agents' rows go with them: ON DELETE CASCADE).
    /// Returns whether a row was deleted.
    async fn delete(&self, id: &str) -> Result<bool, sqlx::Error>;

    /// Sets a user's plan and role (admin tooling and tests). Returns
    /// whether the user exists.
    async fn set_plan_and_role(
        &self,
        id: &str,
        plan: Plan,
        role: Role,
    ) -> Result<bool, sqlx::Error>;
}
