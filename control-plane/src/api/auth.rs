//! Accounts: `POST /api/auth/register`, `POST /api/auth/login`, `GET /api/me`.
//!
//! Login failures are counted per email: after [`MAX_FAILURES`] within
//! [`FAILURE_WINDOW`] the email is refused with 429 until the window ends,
//! whatever the password (a guessing limit, not an account lock-out: it
//! expires on its own).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use super::extract::Json;
use crate::app::AppState;
use crate::auth::{hash_password, verify_password, AuthUser};
use crate::db::users::{self, CreateUserError, NewUser};
use crate::error::ApiError;
use crate::model::{Plan, Role};
use crate::secrets::Redacted;
use crate::validation;

/// Failed logins per email allowed within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The window failed logins are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

/// Failed-login counters, per lower-cased email.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    /// `Err(seconds to wait)` if `email` is over the limit.
    pub fn check(&self, email: &str) -> Result<(), u64> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(email) {
            Some((n, since)) if *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW => {
                Err((FAILURE_WINDOW - since.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failure for `email`.
    pub fn failed(&self, email: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= SWEEP_AT {
            map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = map.entry(email.to_owned()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// Forgets `email`'s failures (after a success).
    pub fn succeeded(&self, email: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(email);
    }
}

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/me", get(me))
}

/// `{"email","password"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub email: String,
    pub password: Redacted<String>,
}

/// `{"token"}`: a JWT for `Authorization: Bearer`.
#[derive(Serialize)]
pub struct TokenReply {
    pub token: String,
}

/// `POST /api/auth/register` → 201 `{"token"}`; 422 on a bad email or
/// password, 409 (field `email`) if the email is registered.
async fn register(
    State(state): State<AppState>,
    Json(body): Json<Credentials>,
) -> Result<(StatusCode, axum::Json<TokenReply>), ApiError> {
    let email = validation::email(&body.email)?;
    validation::password(body.password.expose())?;
    let hash = hash_password(body.password.0)
        .await
        .map_err(ApiError::internal)?;
    let new = NewUser {
        email: &email,
        password_hash: &hash,
        role: Role::User,
        plan: Plan::Free,
    };
    let user = match users::create(&state.db, &new).await {
        Ok(u) => u,
        Err(CreateUserError::EmailTaken) => {
            return Err(ApiError::Conflict {
                message: "email: already registered".into(),
                field: Some("email".into()),
            })
        }
        Err(CreateUserError::Db(e)) => return Err(e.into()),
    };
    tracing::info!(user_id = %user.id, "user registered");
    let token = state
        .jwt
        .issue(&user.id, user.role)
        .map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, axum::Json(TokenReply { token })))
}

/// `POST /api/auth/login` → 200 `{"token"}`; 401 with one generic message
/// for an unknown email or a wrong password; 429 after too many failures.
async fn login(
    State(state): State<AppState>,
    Json(body): Json<Credentials>,
) -> Result<axum::Json<TokenReply>, ApiError> {
    const BAD: ApiError = ApiError::Unauthorized("invalid email or password");
    let email = body.email.trim().to_lowercase();
    if email.len() > 254 || body.password.expose().len() > 1024 {
        return Err(BAD);
    }
    state
        .login_limiter
        .check(&email)
        .map_err(|retry_after| ApiError::TooManyRequests { retry_after })?;
    let user = users::get_by_email(&state.db, &email).await?;
    let ok = verify_password(
        body.password.0,
        user.as_ref().map(|u| u.password_hash.clone()),
    )
    .await;
    match user {
        Some(user) if ok => {
            state.login_limiter.succeeded(&email);
            let token = state
                .jwt
                .issue(&user.id, user.role)
                .map_err(ApiError::internal)?;
            Ok(axum::Json(TokenReply { token }))
        }
        _ => {
            state.login_limiter.failed(&email);
            Err(BAD)
        }
    }
}

/// The plan limits shown by `/api/me`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitsView {
    /// Null: unlimited.
    pub max_agents: Option<u32>,
    /// CPUs per agent.
    pub cpus: f64,
    /// Memory per agent, MiB.
    pub memory_mb: i64,
}

/// `GET /api/me`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeView {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub plan: Plan,
    pub limits: LimitsView,
    /// Agents the user has now.
    pub agents: i64,
}

/// `GET /api/me` → 200 with the caller's account, plan limits and agent count.
async fn me(State(state): State<AppState>, user: AuthUser) -> Result<axum::Json<MeView>, ApiError> {
    let limits = state.config.limits(user.plan);
    let agents = crate::db::agents::count_for_user(&state.db, &user.id).await?;
    Ok(axum::Json(MeView {
        id: user.id,
        email: user.email,
        role: user.role,
        plan: user.plan,
        limits: LimitsView {
            max_agents: limits.max_agents,
            cpus: limits.cpus,
            memory_mb: limits.memory_mb,
        },
        agents,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_and_forgets() {
        let l = LoginLimiter::default();
        for _ in 0..MAX_FAILURES {
            assert!(l.check("a@b").is_ok());
            l.failed("a@b");
        }
        assert!(l.check("a@b").is_err());
        assert!(l.check("c@d").is_ok());
        l.succeeded("a@b");
        assert!(l.check("a@b").is_ok());
    }
}
