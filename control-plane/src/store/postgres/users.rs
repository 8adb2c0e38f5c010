//! [`UserStore`] on PostgreSQL.

use super::{has_nul, now, violates, PgStore};
use crate::model::{Plan, Role, User};
use crate::store::users::{CreateUserError, NewUser, UserStore};

#[async_trait::async_trait]
impl UserStore for PgStore {
    async fn create(&self, new: &NewUser<'_>) -> Result<User, CreateUserError> {
        let res = sqlx::query_as(
            "INSERT INTO users (id, email, password_hash, role, plan, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(new.email)
        .bind(new.password_hash)
        .bind(new.role)
        .bind(new.plan)
        .bind(now())
        .fetch_one(&self.pool)
        .await;
        match res {
            Ok(user) => Ok(user),
            Err(e) if violates(&e, "users_email_key") => Err(CreateUserError::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_by_email(&self, email: &str) -> Result<Option<User>, sqlx::Error> {
        if has_nul(email) {
            return Ok(None);
        }
        sqlx::query_as("SELECT * FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await
    }

    async fn get_by_id(&self, id: &str) -> Result<Option<User>, sqlx::Error> {
        if has_nul(id) {
            return Ok(None);
        }
        sqlx::query_as("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    async fn count_admins(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'")
            .fetch_one(&self.pool)
            .await
    }

    async fn list(&self) -> Result<Vec<User>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM users ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
    }

    async fn delete(&self, id: &str) -> Result<bool, sqlx::Error> {
        if has_nul(id) {
            return Ok(false);
        }
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_plan_and_role(
        &self,
        id: &str,
        plan: Plan,
        role: Role,
    ) -> Result<bool, sqlx::Error> {
        if has_nul(id) {
            return Ok(false);
        }
        let done = sqlx::query("UPDATE users SET plan = $1, role = $2 WHERE id = $3")
            .bind(plan)
            .bind(role)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
