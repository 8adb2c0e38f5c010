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
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::db::agents::{self, InsertError};
use crate::error::ApiError;
use crate::model::Agent;
use crate::reconciler::{requests, RequestError};

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/agents", get(list).post(create))
        .route("/api/agents/{id}", get(show).patch(update).delete(remove))
}

/// The caller's agent `id`, or 404.
pub async fn owned(state: &AppState, user: &AuthUser, id: &str) -> Result<Agent, ApiError> {
    agents::get_for_user(&state.db, &user.id, id)
        .await?
        .ok_or(ApiError::NotFound("agent"))
}

/// The view of `agent`.
pub fn view(state: &AppState, agent: Agent) -> axum::Json<AgentView> {
    axum::Json(AgentView::new(agent, &state.secrets))
}

/// `POST /api/agents` → 202 with the PENDING record; the deploy runs in the
/// background. 422 naming the field on bad input, 409 (field `slug`) if the
/// slug is taken, 403 `quota_exceeded` over the plan's agent count.
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
    let (agent, event) = match agents::insert_pending(&state.db, &new, limits.max_agents).await {
        Ok(done) => done,
        Err(InsertError::QuotaExceeded { max }) => return Err(ApiError::QuotaExceeded { max }),
        Err(InsertError::SlugTaken) => {
            return Err(ApiError::Conflict {
                message: format!("slug: \"{}\" is already taken", new.slug),
                field: Some("slug".into()),
            })
        }
        Err(InsertError::Db(e)) => return Err(e.into()),
    };
    state.events.publish(event);
    state.reconciler.wake(&agent.id);
    tracing::info!(agent_id = %agent.id, slug = %agent.slug, user_id = %user.id, "agent created");
    Ok((StatusCode::ACCEPTED, view(&state, agent)))
}

/// `GET /api/agents` → 200 with the caller's agents, oldest first.
async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<axum::Json<Vec<AgentView>>, ApiError> {
    let rows = agents::list_for_user(&state.db, &user.id).await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|a| AgentView::new(a, &state.secrets))
            .collect(),
    ))
}

/// `GET /api/agents/{id}` → 200, or 404.
async fn show(
    State(state): State<AppState>,
    user: AuthUser,
    AgentId(id): AgentId,
) -> Result<axum::Json<AgentView>, ApiError> {
    Ok(view(&state, owned(&state, &user, &id).await?))
}

/// `PATCH /api/agents/{id}` → 200 with the updated record. A change to
/// anything the agent's config or persona files carry, on a RUNNING agent,
/// restarts it through the reconciler (re-injected and re-paired); on any
/// other status it applies at the next start.
async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    AgentId(id): AgentId,
    Json(body): Json<PatchAgent>,
) -> Result<axum::Json<AgentView>, ApiError> {
    let agent = owned(&state, &user, &id).await?;
    let changes = body
        .into_changes(&agent.id, &state.config, &state.secrets)
        .await?;
    let updated = agents::update_config(&state.db, &user.id, &agent.id, &changes)
        .await?
        .ok_or(ApiError::NotFound("agent"))?;
    if !changes.changes_runtime() {
        return Ok(view(&state, updated));
    }
    tracing::info!(agent_id = %updated.id, slug = %updated.slug, "agent configuration changed");
    match requests::reconfigure(&state, &updated).await {
        Ok(agent) => Ok(view(&state, agent)),
        // Moved meanwhile: the stored config is injected at its next start.
        Err(RequestError::Conflict { .. }) => Ok(view(&state, owned(&state, &user, &id).await?)),
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
    requests::delete(&state, &agent).await?;
    tracing::info!(agent_id = %agent.id, slug = %agent.slug, "agent deleted");
    Ok(StatusCode::NO_CONTENT)
}
