//! The pure half of the reconciler: from an agent's stored row (desired state
//! and status) and what Docker shows, decide the next step. No I/O here, so
//! every decision is unit-tested without Docker.

use chrono::{DateTime, Utc};

use crate::model::Agent;
use crate::orchestrator::ObservedContainer;
use crate::status::{DesiredState, Status};

/// The next thing the reconciler does for one agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Remove container, volume and port, then the row.
    Delete,
    /// Retry later: the row's backoff has not elapsed.
    WaitUntil(DateTime<Utc>),
    /// PENDING → STARTING, then [`Step::Start`].
    BeginDeploy,
    /// Bring the container up: create or adopt, inject, start, pair, health → RUNNING.
    Start,
    /// Stop the container, STOPPING → STOPPED (then start again if desired running).
    Stop,
    /// A RUNNING agent whose container lost its process or its pairing:
    /// re-pair against the container's current start.
    Repair { reason: String },
    /// A RUNNING agent whose container is gone or dead for good.
    Fail { reason: String },
    /// STOPPED but the container runs (started behind our back): stop it.
    EnforceStopped,
    /// ERROR with retry budget left and its backoff elapsed: ERROR → PENDING.
    Retry,
    /// RUNNING and up for [`STABLE_AFTER`] since its last start: the crash
    /// loop, if any, is over; give the agent a fresh retry budget.
    ResetBackoff,
    /// Nothing to do; look again at the next resync.
    Idle,
}

impl Step {
    /// A short name for logs and the `step` label of the reconcile metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Delete => "delete",
            Step::WaitUntil(_) => "wait",
            Step::BeginDeploy => "begin_deploy",
            Step::Start => "start",
            Step::Stop => "stop",
            Step::Repair { .. } => "repair",
            Step::Fail { .. } => "fail",
            Step::EnforceStopped => "enforce_stopped",
            Step::Retry => "retry",
            Step::ResetBackoff => "reset_backoff",
            Step::Idle => "idle",
        }
    }
}

/// Decides the next step for `agent` given its container as observed now
/// (`None`: no container by that name) at time `now`.
pub fn plan(agent: &Agent, observed: Option<&ObservedContainer>, now: DateTime<Utc>) -> Step {
    if agent.desired_state == DesiredState::Deleted {
        return Step::Delete;
    }
    match agent.status {
        Status::Pending => Step::BeginDeploy,
        Status::Starting => Step::Start,
        Status::Stopping => Step::Stop,
        Status::Stopped => match observed {
            Some(c) if c.running => Step::EnforceStopped,
            _ => Step::Idle,
        },
        // `next_attempt_at` is set only while the retry budget lasts.
        Status::Error => match (agent.desired_state, agent.next_attempt_at) {
            (DesiredState::Running, Some(at)) if at <= now => Step::Retry,
            (DesiredState::Running, Some(at)) => Step::WaitUntil(at),
            _ => Step::Idle,
        },
        Status::Running => match observed {
            None => Step::Fail {
                reason: "container removed outside zcaas".into(),
            },
            Some(c) if c.running => match (c.started_at, agent.paired_started_at) {
                (Some(started), Some(paired)) if started > paired => Step::Repair {
                    reason: "container restarted".into(),
                },
                (Some(_), None) => Step::Repair {
                    reason: "no pairing recorded for this start".into(),
                },
                (Some(started), Some(_))
                    if agent.attempts > 0 && started + stable_after() <= now =>
                {
                    Step::ResetBackoff
                }
                _ => Step::Idle,
            },
            // Docker's restart policy brings it back; the next event or resync
            // re-pairs it.
            Some(c) if c.state == "restarting" => Step::Idle,
            // `docker restart` passes through "exited" between its stop and
            // its start: give a fresh exit a moment before calling it dead.
            Some(c) if c.finished_at.is_some_and(|f| f + exit_grace() > now) => {
                Step::WaitUntil(c.finished_at.map_or(now, |f| f + exit_grace()))
            }
            Some(c) => Step::Fail {
                reason: exit_reason(c),
            },
        },
    }
}

/// How long a container of a RUNNING agent may stay exited before the
/// reconciler treats it as dead (Docker may be restarting it).
pub const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a container must stay up before its agent's retry budget is reset.
pub const STABLE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

fn stable_after() -> chrono::Duration {
    chrono::Duration::from_std(STABLE_AFTER).unwrap_or_default()
}

fn exit_grace() -> chrono::Duration {
    chrono::Duration::from_std(EXIT_GRACE).unwrap_or_default()
}

/// A human reason for a container that stopped: exit code, OOM kill.
/// `State.OOMKilled` has been unreliable, so a bare exit 137 says both causes.
pub fn exit_reason(c: &ObservedContainer) -> String {
    if c.oom_killed {
        return "container was OOM-killed (exit 137)".into();
    }
    match (c.exit_code, &c.status_message) {
        // A workload that cannot even be placed (Swarm: "no suitable
        // node") says so, whatever its last incarnation's exit was.
        (_, Some(why)) if c.state == "pending" => format!("workload cannot start: {why}"),
        (Some(137), _) => "container was killed (exit 137: SIGKILL or out of memory)".into(),
        (Some(code), _) => format!("container exited with code {code}"),
        (None, Some(why)) => format!("container is {}: {why}", c.state),
        (None, None) => format!("container is {}", c.state),
    }
}

/// Exponential backoff before retry number `attempt` (1-based): `base`,
/// `2·base`, `4·base`, … capped at `max`.
pub fn backoff(
    attempt: i64,
    base: std::time::Duration,
    max: std::time::Duration,
) -> std::time::Duration {
    let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    base.saturating_mul(1 << exp).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconciler::testing::{agent, container};
    use chrono::Duration;

    #[test]
    fn deleted_wins_over_everything() {
        for st in Status::ALL {
            let mut a = agent(st);
            a.desired_state = DesiredState::Deleted;
            assert_eq!(plan(&a, None, Utc::now()), Step::Delete);
        }
    }

    #[test]
    fn pending_begins_deploy() {
        assert_eq!(
            plan(&agent(Status::Pending), None, Utc::now()),
            Step::BeginDeploy
        );
    }

    #[test]
    fn error_retries_after_backoff_while_budget_lasts() {
        let now = Utc::now();
        let mut a = agent(Status::Error);
        a.next_attempt_at = Some(now + Duration::seconds(5));
        assert_eq!(
            plan(&a, None, now),
            Step::WaitUntil(now + Duration::seconds(5))
        );
        a.next_attempt_at = Some(now - Duration::seconds(1));
        assert_eq!(plan(&a, None, now), Step::Retry);
        // Budget spent: no next attempt, the agent stays in ERROR.
        a.next_attempt_at = None;
        assert_eq!(plan(&a, None, now), Step::Idle);
        // The owner stopped wanting it running: no retry either.
        a.next_attempt_at = Some(now - Duration::seconds(1));
        a.desired_state = DesiredState::Stopped;
        assert_eq!(plan(&a, None, now), Step::Idle);
    }

    #[test]
    fn transitional_states_resume() {
        let now = Utc::now();
        assert_eq!(plan(&agent(Status::Starting), None, now), Step::Start);
        assert_eq!(plan(&agent(Status::Stopping), None, now), Step::Stop);
    }

    #[test]
    fn running_agent_whose_container_restarted_is_repaired() {
        let now = Utc::now();
        let mut a = agent(Status::Running);
        let mut c = container(true);
        c.started_at = Some(now);
        a.paired_started_at = Some(now - Duration::seconds(10));
        assert!(matches!(plan(&a, Some(&c), now), Step::Repair { .. }));
        a.paired_started_at = Some(now);
        assert_eq!(plan(&a, Some(&c), now), Step::Idle);
        a.paired_started_at = None;
        assert!(matches!(plan(&a, Some(&c), now), Step::Repair { .. }));
    }

    #[test]
    fn retry_budget_resets_only_after_a_stable_run() {
        let now = Utc::now();
        let mut a = agent(Status::Running);
        a.attempts = 3;
        let mut c = container(true);
        c.started_at = Some(now - Duration::seconds(5));
        a.paired_started_at = c.started_at;
        assert_eq!(plan(&a, Some(&c), now), Step::Idle);
        c.started_at = Some(now - Duration::seconds(120));
        a.paired_started_at = c.started_at;
        assert_eq!(plan(&a, Some(&c), now), Step::ResetBackoff);
        a.attempts = 0;
        assert_eq!(plan(&a, Some(&c), now), Step::Idle);
    }

    #[test]
    fn running_agent_without_container_fails() {
        let a = agent(Status::Running);
        assert!(matches!(plan(&a, None, Utc::now()), Step::Fail { .. }));
    }

    #[test]
    fn dead_container_reports_oom() {
        let a = agent(Status::Running);
        let mut c = container(false);
        c.state = "exited".into();
        c.exit_code = Some(137);
        c.oom_killed = true;
        // A fresh exit may be `docker restart` at work: wait out the grace.
        let now = Utc::now();
        c.finished_at = Some(now);
        assert!(matches!(plan(&a, Some(&c), now), Step::WaitUntil(_)));
        c.finished_at = Some(now - chrono::Duration::seconds(10));
        match plan(&a, Some(&c), now) {
            Step::Fail { reason } => assert!(reason.contains("OOM"), "{reason}"),
            other => panic!("{other:?}"),
        }
        c.state = "restarting".into();
        assert_eq!(plan(&a, Some(&c), Utc::now()), Step::Idle);
    }

    #[test]
    fn stopped_agent_with_running_container_is_stopped_again() {
        let a = agent(Status::Stopped);
        assert_eq!(
            plan(&a, Some(&container(true)), Utc::now()),
            Step::EnforceStopped
        );
        assert_eq!(plan(&a, Some(&container(false)), Utc::now()), Step::Idle);
        assert_eq!(plan(&a, None, Utc::now()), Step::Idle);
    }

    #[test]
    fn error_without_retry_is_left_alone() {
        assert_eq!(plan(&agent(Status::Error), None, Utc::now()), Step::Idle);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = std::time::Duration::from_secs(2);
        let max = std::time::Duration::from_secs(60);
        assert_eq!(backoff(1, base, max), base);
        assert_eq!(backoff(2, base, max), base * 2);
        assert_eq!(backoff(4, base, max), base * 8);
        assert_eq!(backoff(30, base, max), max);
    }
}
