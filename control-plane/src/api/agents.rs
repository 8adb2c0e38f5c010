//! Agents, seed 003's first table: `POST/GET /api/agents`,
//! `GET/PATCH/DELETE /api/agents/{id}`. Every route is scoped to the
//! caller in SQL: another user's agent is a 404, never a 403.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::agent_input::{CreateAgent, PatchAgent};
use super::extract::{AgentId, Json};
use super::view::AgentView;
use crate::api::AppState;
use crate::api::{AuthUser, BearerSubject};
use crate::error::ApiError;
use crate::model::Agent;
use crate::reconciler::{requests, RequestError};
use crate::status::Status;
use crate::store::agents::{InsertError, UpdateError};

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/agents", get(list).post(create))
        .route("/api/agents/{id}", get(show).patch(update).delete(remove))
}

/// The caller's agent `id`, or 404.
pub async fn owned(state: &AppState, user: &AuthUser, id: &str) -> Result<Agent, ApiError> {
    state
        .store
        .agents()
        .get_for_user(&user.id, id)
        .await?
        .ok_or(ApiError::NotFound("agent"))
}

/// The view of `agent`.
pub fn view(state: &AppState, agent: Agent) -> axum::Json<AgentView> {
    axum::Json(AgentView::new(agent, &state.secrets))
}

/// `POST /api/agents` → 202 with the PENDING record; the deploy runs in the
/// background. 422 naming the field on bad input, 409 (field `slug`) if the
/// slug is taken, 409 naming the field (`channels.telegram.botToken`) if
/// another agent uses one of its channel tokens, 403 `quota_exceeded` over
/// the plan's agent count.
async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<CreateAgent>,
) -> Result<(StatusCode, axum::Json<AgentView>), ApiError> {
    let id = uuid::Uuid::new_v4().to_string();
    let limits = state.config.limits(user.plan);
    let new = body
        .into_new_agent(id, user.id.clone(), limits, &state.config, &state.secrets)
        .await?;
    let (agent, event) = match state
        .store
        .agents()
        .insert_pending(&new, limits.max_agents)
        .await
    {
        Ok(done) => done,
        Err(InsertError::QuotaExceeded { max }) => return Err(ApiError::QuotaExceeded { max }),
        Err(InsertError::SlugTaken) => {
            return Err(ApiError::Conflict {
                message: format!("slug: \"{}\" is already taken", new.slug),
                field: Some("slug".into()),
            })
        }
        Err(InsertError::TokenTaken { field }) => return Err(token_taken(field)),
        Err(InsertError::Db(e)) => return Err(e.into()),
    };
    state.events.publish(event);
    state.reconciler.wake(&agent.id).await;
    tracing::info!(agent_id = %agent.id, slug = %agent.slug, user_id = %user.id, "agent created");
    Ok((StatusCode::ACCEPTED, view(&state, agent)))
}

/// 409 naming the channel token field (`channels.telegram.botToken`) that
/// another agent of the installation already uses; the token itself is
/// never echoed.
fn token_taken(field: String) -> ApiError {
    ApiError::Conflict {
        message: format!("{field}: already used by another agent"),
        field: Some(field),
    }
}

/// `GET /api/agents` → 200 with the caller's agents, oldest first; 401 when
/// the token's user no longer exists. One store query: it lists and proves
/// the user exists at once. The answer is the JSON array of the agents'
/// [`AgentView`]s, byte for byte what `Json(Vec<AgentView>)` writes, each
/// view serialised as it is made into one buffer sized for the list (no
/// vector of views, no growing the buffer from 128 bytes).
async fn list(
    State(state): State<AppState>,
    BearerSubject(user_id): BearerSubject,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::{header, HeaderValue};
    use axum::response::IntoResponse;
    let rows = state
        .store
        .agents()
        .list_owned(&user_id)
        .await?
        .ok_or(ApiError::Unauthorized("invalid or expired token"))?;
    let body = views_json(rows, &state.secrets).map_err(|e| ApiError::Internal(e.into()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// The JSON array of the views of `rows`: the bytes of
/// `serde_json::to_vec(&Vec<AgentView>)`, written view by view.
fn views_json(
    rows: Vec<Agent>,
    secrets: &crate::secrets::SecretBox,
) -> serde_json::Result<Vec<u8>> {
    // An agent's view is about 1 KB of JSON.
    let mut body = Vec::with_capacity(2 + 1280 * rows.len());
    body.push(b'[');
    for (i, agent) in rows.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, &AgentView::new(agent, secrets))?;
    }
    body.push(b']');
    Ok(body)
}

/// `GET /api/agents/{id}` → 200, or 404.
async fn show(
    State(state): State<AppState>,
    user: AuthUser,
    AgentId(id): AgentId,
) -> Result<axum::Json<AgentView>, ApiError> {
    Ok(view(&state, owned(&state, &user, &id).await?))
}

/// The answer to a PATCH: the updated record plus whether the change makes
/// the agent restart (or redeploy) to take effect.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PatchedAgent {
    #[serde(flatten)]
    pub agent: AgentView,
    /// `true` when the change reaches the agent's injected files and the
    /// agent is being (re)deployed to apply it: a RUNNING agent is restarted
    /// (now STOPPING), and a deploy under way (STARTING) finishes with the new
    /// configuration instead of the one it began with. `false` when nothing
    /// injected changed, or the agent is not running (PENDING, STOPPED,
    /// ERROR): the change applies at its next start.
    pub restart_pending: bool,
}

/// `PATCH /api/agents/{id}` → 200 with the updated record and
/// `restartPending`; 409 naming the field when a new channel token is
/// another agent's (nothing is changed then). A change to anything the
/// agent's config or persona files carry bumps its configuration
/// generation: on a RUNNING agent it
/// restarts it through the reconciler (re-injected and re-paired); a deploy
/// under way sees the new generation before it reaches RUNNING and deploys
/// the new configuration; on any other status it applies at the next start.
async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    AgentId(id): AgentId,
    Json(body): Json<PatchAgent>,
) -> Result<axum::Json<PatchedAgent>, ApiError> {
    let agent = owned(&state, &user, &id).await?;
    let changes = body
        .into_changes(&agent.id, &state.config, &state.secrets)
        .await?;
    let updated = state
        .store
        .agents()
        .update_config(&user.id, &agent.id, &changes)
        .await
        .map_err(|e| match e {
            UpdateError::TokenTaken { field } => token_taken(field),
            UpdateError::Db(e) => e.into(),
        })?
        .ok_or(ApiError::NotFound("agent"))?;
    let answer = |agent: Agent, runtime: bool| {
        let restart_pending =
            runtime && matches!(agent.status, Status::Starting | Status::Stopping);
        axum::Json(PatchedAgent {
            agent: AgentView::new(agent, &state.secrets),
            restart_pending,
        })
    };
    if !changes.changes_runtime() {
        return Ok(answer(updated, false));
    }
    tracing::info!(agent_id = %updated.id, slug = %updated.slug, "agent configuration changed");
    match requests::reconfigure(&state.reconciler, &updated).await {
        Ok(agent) => Ok(answer(agent, true)),
        // Moved meanwhile: the stored config is injected at its next start.
        Err(RequestError::Conflict { .. }) => Ok(answer(owned(&state, &user, &id).await?, true)),
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /api/agents/{id}` → 204 once the container, volume and port are
/// gone (or 404).
async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    AgentId(id): AgentId,
) -> Result<StatusCode, ApiError> {
    let agent = owned(&state, &user, &id).await?;
    requests::delete(&state.reconciler, &agent).await?;
    tracing::info!(agent_id = %agent.id, slug = %agent.slug, "agent deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::reconciler::testing;
    use crate::secrets::{SecretBox, SecretField};

    /// The list's JSON is byte for byte what `Json(Vec<AgentView>)` wrote:
    /// for none, one and several agents, secrets and all.
    #[test]
    fn views_json_is_the_json_of_the_vector_of_views() {
        let secrets = SecretBox::ephemeral();
        let mut rows = Vec::new();
        for (k, status) in [Status::Running, Status::Error, Status::Pending]
            .into_iter()
            .enumerate()
        {
            let mut a = testing::agent(status);
            a.id = format!("agent-{k}");
            a.slug = format!("slug-{k}");
            if k > 0 {
                a.encrypted_api_key = Some(
                    secrets
                        .encrypt(&a.id, SecretField::ApiKey, "sk-0123456789abcdefghij")
                        .unwrap(),
                );
                a.last_error = Some("quoted \"error\" — ünïcode".into());
                a.memory_mb = Some(12.345_678_901_234_567);
            }
            rows.push(a);
        }
        for n in 0..=rows.len() {
            let part = rows[..n].to_vec();
            let old: Vec<AgentView> = part
                .iter()
                .cloned()
                .map(|a| AgentView::new(a, &secrets))
                .collect();
            assert_eq!(
                String::from_utf8(views_json(part, &secrets).unwrap()).unwrap(),
                String::from_utf8(serde_json::to_vec(&old).unwrap()).unwrap()
            );
        }
    }
}
