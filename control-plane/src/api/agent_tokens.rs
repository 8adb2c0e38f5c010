//! Agent URLs users can use (issue 13): bearer tokens an owner issues for
//! the agent's public URL (`https://<slug>.<domain>`, the view's
//! `publicUrl`).
//!
//! - `POST /api/agents/{id}/tokens` `{"name"}` → 201 with the token, shown
//!   only in this answer;
//! - `GET /api/agents/{id}/tokens` → 200, oldest first, never the token or
//!   its hash;
//! - `DELETE /api/agents/{id}/tokens/{tokenId}` → 204.
//!
//! Only the SHA-256 of a token is stored (`agent_tokens`); the reconciler
//! seeds those digests into the agent's `[gateway] paired_tokens`, with the
//! control plane's own token, which never leaves the server. Issuing or
//! revoking a token changes what is injected into the agent, exactly like a
//! PATCH: the agent's configuration generation is bumped in the same
//! transaction, and a RUNNING agent is redeployed with the new token set
//! ([`requests::reconfigure`]); a revoked token stops working once the
//! agent is RUNNING again.
//!
//! `lastUsedAt` is always null: the agent's traffic goes to it directly
//! (through Traefik), never through the control plane, which therefore does
//! not know when a token was last used.
//!
//! Every route is scoped to the caller like the other `/api/agents/{id}`
//! routes: another user's agent is a 404.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::Router;
use base64::Engine as _;
use chrono::{DateTime, SubsecRound, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::agents::owned;
use super::extract::{AgentId, Json};
use crate::api::{AppState, AuthUser};
use crate::error::ApiError;
use crate::model::Agent;
use crate::reconciler::{requests, RequestError};
use crate::status::Status;
use crate::store::agent_tokens::{AgentToken, IssueError, NewAgentToken, MAX_TOKENS_PER_AGENT};

/// Prefix of an issued token (the control plane's own tokens are `zc_`).
pub const TOKEN_PREFIX: &str = "zcp_";
/// Longest token name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/agents/{id}/tokens", get(list).post(issue))
        .route("/api/agents/{id}/tokens/{token_id}", delete(revoke))
}

/// The body of `POST /api/agents/{id}/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueToken {
    pub name: String,
}

/// A token as listed: never the token or its hash.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub id: String,
    pub name: String,
    /// The token's last four characters.
    pub last_four: String,
    pub created_at: DateTime<Utc>,
    /// Always null: the agent's traffic never passes the control plane.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<AgentToken> for TokenView {
    fn from(t: AgentToken) -> Self {
        TokenView {
            id: t.id,
            name: t.name,
            last_four: t.last_four,
            created_at: t.created_at,
            last_used_at: None,
        }
    }
}

/// The answer to an issue: the listed form, the token (shown only here),
/// and whether the agent is being redeployed to take it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    #[serde(flatten)]
    pub view: TokenView,
    /// The bearer token for the agent's public URL: shown only once.
    pub token: String,
    /// As in a PATCH's answer: `true` when the agent is being (re)deployed
    /// to take the new token set (a RUNNING agent is restarted, a deploy
    /// under way finishes with it); `false` when it is not running (the
    /// token set applies at its next start).
    pub restart_pending: bool,
}

/// A fresh token: [`TOKEN_PREFIX`] + 32 bytes of the OS CSPRNG, base64url
/// without padding.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// SHA-256 of `token`, lowercase hex: the form `paired_tokens` takes.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A token name: 1 to [`MAX_NAME_CHARS`] characters, not blank, no control
/// characters.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let chars = name.chars().count();
    if name.trim().is_empty() {
        return Err(ApiError::validation("name", "name: must not be empty"));
    }
    if chars > MAX_NAME_CHARS {
        return Err(ApiError::validation(
            "name",
            format!("name: at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "name",
            "name: must not contain control characters",
        ));
    }
    Ok(())
}

/// Whether the change makes the agent redeploy, as a PATCH answers it.
async fn reconfigure(state: &AppState, user: &AuthUser, updated: Agent) -> Result<bool, ApiError> {
    tracing::info!(agent_id = %updated.id, slug = %updated.slug, "agent token set changed");
    let agent = match requests::reconfigure(&state.reconciler, &updated).await {
        Ok(agent) => agent,
        // Moved meanwhile: the stored token set is injected at its next start.
        Err(RequestError::Conflict { .. }) => owned(state, user, &updated.id).await?,
        Err(e) => return Err(e.into()),
    };
    Ok(matches!(agent.status, Status::Starting | Status::Stopping))
}

/// `POST /api/agents/{id}/tokens` → 201 with the token; 422 (field `name`)
/// for a bad name, 409 (field `name`) when the agent already has a token of
/// that name, 422 (field `tokens`) over [`MAX_TOKENS_PER_AGENT`], 404 when
/// the agent is not the caller's.
async fn issue(
    State(state): State<AppState>,
    user: AuthUser,
    AgentId(id): AgentId,
    Json(body): Json<IssueToken>,
) -> Result<(StatusCode, axum::Json<IssuedToken>), ApiError> {
    let agent = owned(&state, &user, &id).await?;
    validate_name(&body.name)?;
    let token = generate_token();
    let last_four: String = {
        let chars: Vec<char> = token.chars().collect();
        chars[chars.len().saturating_sub(4)..].iter().collect()
    };
    let new = NewAgentToken {
        id: uuid::Uuid::new_v4().to_string(),
        name: body.name,
        token_hash: hash_token(&token),
        last_four,
        // What both backends keep exactly (PostgreSQL: microseconds).
        created_at: Utc::now().trunc_subsecs(6),
    };
    let updated = state
        .store
        .agent_tokens()
        .issue(&user.id, &agent.id, &new, MAX_TOKENS_PER_AGENT)
        .await
        .map_err(|e| match e {
            IssueError::NameTaken => ApiError::Conflict {
                message: format!("name: the agent already has a token named {:?}", new.name),
                field: Some("name".into()),
            },
            IssueError::TooMany { max } => ApiError::validation(
                "tokens",
                format!("tokens: an agent has at most {max} tokens; revoke one first"),
            ),
            IssueError::Db(e) => e.into(),
        })?
        .ok_or(ApiError::NotFound("agent"))?;
    tracing::info!(agent_id = %updated.id, token_id = %new.id, "agent token issued");
    let restart_pending = reconfigure(&state, &user, updated).await?;
    let view = TokenView {
        id: new.id,
        name: new.name,
        last_four: new.last_four,
        created_at: new.created_at,
        last_used_at: None,
    };
    Ok((
        StatusCode::CREATED,
        axum::Json(IssuedToken {
            view,
            token,
            restart_pending,
        }),
    ))
}

/// `GET /api/agents/{id}/tokens` → 200 with the agent's tokens, oldest
/// first (never a token or its hash); 404 when the agent is not the caller's.
async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    AgentId(id): AgentId,
) -> Result<axum::Json<Vec<TokenView>>, ApiError> {
    let agent = owned(&state, &user, &id).await?;
    let tokens = state.store.agent_tokens().list(&agent.id).await?;
    Ok(axum::Json(
        tokens.into_iter().map(TokenView::from).collect(),
    ))
}

/// `DELETE /api/agents/{id}/tokens/{tokenId}` → 204, the agent redeployed
/// without the token if it runs; 404 when the agent is not the caller's or
/// has no such token.
async fn revoke(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, token_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if id.len() > 64 || token_id.len() > 64 {
        return Err(ApiError::NotFound("token"));
    }
    let agent = owned(&state, &user, &id).await?;
    let updated = state
        .store
        .agent_tokens()
        .revoke(&user.id, &agent.id, &token_id)
        .await?
        .ok_or(ApiError::NotFound("token"))?;
    tracing::info!(agent_id = %updated.id, token_id = %token_id, "agent token revoked");
    reconfigure(&state, &user, updated).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_documented_shape() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        let body = a.strip_prefix(TOKEN_PREFIX).expect("prefix");
        assert_eq!(body.len(), 43, "{a}");
        assert!(body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        let h = hash_token(&a);
        assert_eq!(h.len(), 64);
        assert_eq!(h, h.to_ascii_lowercase());
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("laptop").is_ok());
        assert!(validate_name(&"é".repeat(64)).is_ok());
        for bad in ["", "   ", "a\nb", "tab\there", "nul\0"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"x".repeat(65)).is_err());
    }
}
