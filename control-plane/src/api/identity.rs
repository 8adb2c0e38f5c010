//! Who is calling: the [`AuthUser`] and [`AdminUser`] extractors, which
//! verify the `Authorization: Bearer <JWT>` header ([`crate::auth::JwtKeys`])
//! and re-read the user from the store on every request (a deleted user's
//! token is refused at once; a role claim in a token grants nothing).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use crate::error::ApiError;
use crate::model::{Plan, Role, User};

/// The authenticated caller, loaded from the database on every request.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub plan: Plan,
}

impl From<User> for AuthUser {
    fn from(u: User) -> Self {
        AuthUser {
            id: u.id,
            email: u.email,
            role: u.role,
            plan: u.plan,
        }
    }
}

impl AuthUser {
    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    /// 401 without a valid bearer token or when its user no longer exists.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let BearerSubject(id) = BearerSubject::from_request_parts(parts, state).await?;
        let user = state
            .store
            .users()
            .get_by_id(&id)
            .await?
            .ok_or(ApiError::Unauthorized("invalid or expired token"))?;
        Ok(user.into())
    }
}

/// The subject (user id) of a valid bearer token, without reading the
/// user: for a handler whose own store query proves the user still exists
/// (`GET /api/agents`: [`crate::store::AgentStore::list_owned`]), so the
/// request costs one query, not two. 401 without a valid token.
#[derive(Debug, Clone)]
pub struct BearerSubject(pub String);

impl FromRequestParts<AppState> for BearerSubject {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized("missing bearer token"))?;
        let claims = state
            .jwt
            .verify(token)
            .map_err(|_| ApiError::Unauthorized("invalid or expired token"))?;
        Ok(BearerSubject(claims.sub))
    }
}

/// An authenticated admin; 403 for any other authenticated user.
#[derive(Debug, Clone)]
pub struct AdminUser(pub AuthUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if !user.is_admin() {
            return Err(ApiError::Forbidden("admin role required"));
        }
        Ok(AdminUser(user))
    }
}
