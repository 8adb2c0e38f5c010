//! Lifecycle requests from the API: each checks the state machine, writes the
//! transition (and desired state) in one conditional update, and wakes the
//! reconciler (on whichever replica leads), which does the Docker work in
//! the background.
//!
//! Every function takes this replica's [`Reconciler`] and an agent already
//! scoped to its owner by the caller (the HTTP layer); none knows about HTTP.

use super::{Reconciler, RequestError};
use crate::model::Agent;
use crate::status::{DesiredState, Status};

/// Applies `from → to` or reports a conflict with the status the agent is in now.
async fn apply(
    reconciler: &Reconciler,
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
    match reconciler
        .context()
        .store
        .lifecycle()
        .transition(&agent.id, from, to, reason, Some(desired))
        .await?
    {
        Some(event) => {
            reconciler.context().events.publish(event);
            reconciler.wake(&agent.id).await;
            reconciler
                .context()
                .store
                .lifecycle()
                .get(&agent.id)
                .await?
                .ok_or(RequestError::NotFound)
        }
        None => {
            // Someone moved it first: report what it is now.
            let now = reconciler
                .context()
                .store
                .lifecycle()
                .get(&agent.id)
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
pub async fn start(reconciler: &Reconciler, agent: &Agent) -> Result<Agent, RequestError> {
    match agent.status {
        Status::Error => retry(reconciler, agent).await,
        _ => {
            apply(
                reconciler,
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
pub async fn retry(reconciler: &Reconciler, agent: &Agent) -> Result<Agent, RequestError> {
    if agent.status == Status::Error {
        reconciler
            .context()
            .store
            .lifecycle()
            .reset_backoff(&agent.id)
            .await?;
    }
    apply(
        reconciler,
        agent,
        Status::Pending,
        "retry",
        "retry requested",
        DesiredState::Running,
    )
    .await
}

/// `POST …/stop`: RUNNING → STOPPING, desired stopped.
pub async fn stop(reconciler: &Reconciler, agent: &Agent) -> Result<Agent, RequestError> {
    apply(
        reconciler,
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
pub async fn restart(reconciler: &Reconciler, agent: &Agent) -> Result<Agent, RequestError> {
    apply(
        reconciler,
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
pub async fn reconfigure(reconciler: &Reconciler, agent: &Agent) -> Result<Agent, RequestError> {
    if agent.status != Status::Running {
        // Not running: the new config is injected at its next start.
        return Ok(agent.clone());
    }
    apply(
        reconciler,
        agent,
        Status::Stopping,
        "reconfigure",
        "configuration changed",
        DesiredState::Running,
    )
    .await
}

/// `DELETE`: desired deleted, then waits for the reconciler (on whichever
/// replica leads) to remove the container, volume, port and row.
pub async fn delete(reconciler: &Reconciler, agent: &Agent) -> Result<(), RequestError> {
    reconciler
        .context()
        .store
        .lifecycle()
        .set_desired(&agent.id, DesiredState::Deleted)
        .await?;
    reconciler.await_deletion(&agent.id).await;
    Ok(())
}
