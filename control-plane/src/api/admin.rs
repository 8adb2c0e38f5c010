//! Admin API (role admin; 403 for anyone else): `GET /api/admin/agents`,
//! every agent with its owner, status, last error, attempts, resource use
//! and channels in error (`?channelError=true`: only agents with one). The admins' live feed of transitions, `GET /api/admin/events`, is
//! served with the other event streams by [`super::events`].

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::api::AdminUser;
use crate::api::AppState;
use crate::channel_health;
use crate::error::ApiError;
use crate::status::{DesiredState, Status};

/// Admin routes bounded by the normal request timeout.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/admin/agents", get(list_agents))
}

/// One agent in the admin list.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminAgentView {
    pub id: String,
    pub user_id: String,
    pub owner_email: String,
    pub name: String,
    pub slug: String,
    pub status: Status,
    pub desired_state: DesiredState,
    pub last_error: Option<String>,
    pub attempts: i64,
    pub container_id: Option<String>,
    /// The host port published for the agent; `null` in `network` address
    /// mode (nothing is published) and before the first deploy.
    pub container_port: Option<i64>,
    /// The agents' network the agent's container joins (`zeroone-net`,
    /// `zeroone-net-2`, …); `null` before its first deploy.
    pub network: Option<String>,
    /// MiB, last polled.
    pub memory_mb: Option<f64>,
    /// Percent of one core, last polled.
    pub cpu_percent: Option<f64>,
    pub last_health_at: Option<DateTime<Utc>>,
    /// The channels of a RUNNING agent whose last health report says
    /// `error` (empty otherwise); `?channelError=true` lists only agents
    /// with one.
    pub channel_errors: Vec<String>,
    pub image: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Query of `GET /api/admin/agents`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentsQuery {
    /// Only agents with a channel in `error`.
    #[serde(default)]
    pub channel_error: bool,
}

/// `GET /api/admin/agents` → 200 with every agent (those being deleted
/// too), oldest first, or with `?channelError=true` only the RUNNING agents
/// with a channel in `error`; 401 unauthenticated, 403 for a non-admin.
async fn list_agents(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(query): Query<AgentsQuery>,
) -> Result<axum::Json<Vec<AdminAgentView>>, ApiError> {
    let rows = state.store.agents().list_all_with_owner().await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|r| {
                let a = r.agent;
                // Agents deployed before networks were recorded are on the
                // first one.
                let network = a.network.clone().or_else(|| {
                    a.container_id
                        .as_ref()
                        .map(|_| state.config.network.clone())
                });
                let channel_errors = if a.status == Status::Running {
                    channel_health::in_error(a.channel_health.as_deref())
                } else {
                    Vec::new()
                };
                AdminAgentView {
                    channel_errors,
                    id: a.id,
                    user_id: a.user_id,
                    owner_email: r.owner_email,
                    name: a.name,
                    slug: a.slug,
                    status: a.status,
                    desired_state: a.desired_state,
                    last_error: a.last_error,
                    attempts: a.attempts,
                    container_id: a.container_id,
                    container_port: a.container_port,
                    network,
                    memory_mb: a.memory_mb,
                    cpu_percent: a.cpu_percent,
                    last_health_at: a.last_health_at,
                    image: a.image,
                    created_at: a.created_at,
                    updated_at: a.updated_at,
                }
            })
            .filter(|v| !query.channel_error || !v.channel_errors.is_empty())
            .collect(),
    ))
}
