//! Lifecycle requests from the API: each checks the state machine, writes the
//! transition (and desired state) in one conditional update, and wakes the
//! reconciler, which does the Docker work in the background.
//!
//! Every function takes an agent already scoped to its owner by the caller.

use super::RequestError;
use crate::app::AppState;
use crate::db::lifecycle;
use crate::model::Agent;
use crate::status::{DesiredState, Status};

/// Applies `from → to` or reports a conflict with the status the agent is in now.
async fn apply(
    state: &AppState,
    agent: &Agent,
    to: Status,
    action: &'static str,
    reason: &str,
    desired: DesiredState,
) -> Result<Agent, RequestError> {
    let from = agent.status;
    if !from.can_transition_to(to) {
        return Err(RequestError::Conflict {
            status: from,
            action,
        });
    }
    match lifecycle::transition(&state.db, &agent.id, from, to, reason, Some(desired)).await? {
        Some(event) => {
            state.events.publish(event);
            state.reconciler.wake(&agent.id);
            lifecycle::get(&state.db, &agent.id)
                .await?
                .ok_or(RequestError::NotFound)
        }
        None => {
            // Someone moved it first: report what it is now.
            let now = lifecycle::get(&state.db, &agent.id)
                .await?
                .ok_or(RequestError::NotFound)?;
            Err(RequestError::Conflict {
                status: now.status,
                action,
            })
        }
    }
}

/// `POST …/start`: STOPPED → STARTING (re-pair), or ERROR → PENDING (retry).
pub async fn start(state: &AppState, agent: &Agent) -> Result<Agent, RequestError> {
    match agent.status {
        Status::Error => retry(state, agent).await,
        _ => {
            apply(
                state,
                agent,
                Status::Starting,
                "start",
                "start requested",
                DesiredState::Running,
            )
            .await
        }
    }
}

/// `POST …/retry`: ERROR → PENDING, with a fresh retry budget.
pub async fn retry(state: &AppState, agent: &Agent) -> Result<Agent, RequestError> {
    if agent.status == Status::Error {
        lifecycle::reset_backoff(&state.db, &agent.id).await?;
    }
    apply(
        state,
        agent,
        Status::Pending,
        "retry",
        "retry requested",
        DesiredState::Running,
    )
    .await
}

/// `POST …/stop`: RUNNING → STOPPING, desired stopped.
pub async fn stop(state: &AppState, agent: &Agent) -> Result<Agent, RequestError> {
    apply(
        state,
        agent,
        Status::Stopping,
        "stop",
        "stop requested",
        DesiredState::Stopped,
    )
    .await
}

/// `POST …/restart`: RUNNING → STOPPING with desired running, so the
/// reconciler stops, starts and re-pairs it.
pub async fn restart(state: &AppState, agent: &Agent) -> Result<Agent, RequestError> {
    apply(
        state,
        agent,
        Status::Stopping,
        "restart",
        "restart requested",
        DesiredState::Running,
    )
    .await
}

/// After a PATCH that changed injected config of a RUNNING agent: the same
/// path as a restart (config and persona are re-injected before every start).
pub async fn reconfigure(state: &AppState, agent: &Agent) -> Result<Agent, RequestError> {
    if agent.status != Status::Running {
        // Not running: the new config is injected at its next start.
        return Ok(agent.clone());
    }
    apply(
        state,
        agent,
        Status::Stopping,
        "reconfigure",
        "configuration changed",
        DesiredState::Running,
    )
    .await
}

/// `DELETE`: desired deleted, then waits for the reconciler to remove the
/// container, volume, port and row.
pub async fn delete(state: &AppState, agent: &Agent) -> Result<(), RequestError> {
    lifecycle::set_desired(&state.db, &agent.id, DesiredState::Deleted).await?;
    state.reconciler.reconcile_now(&agent.id).await;
    Ok(())
}
