//! The agent status state machine of seed 003 (DESIGN.md §2).
//!
//! ```text
//! PENDING ──► STARTING ──► RUNNING ──► STOPPING ──► STOPPED ──► STARTING (re-pair)
//!                └──────► ERROR ──► PENDING (retry)
//! ```
//!
//! Besides the seed's edges, a failure may move any non-terminal state to
//! `ERROR` (a deploy that cannot start, a stop that fails, a crash loop that
//! exhausts its retry budget). Every other transition is refused: the API
//! answers 409, and inside the control plane it is a bug.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An agent's observed lifecycle status, as stored in `agents.status` and
/// returned by the API (upper-case, as in seed 003).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "UPPERCASE")]
#[sqlx(type_name = "TEXT", rename_all = "UPPERCASE")]
pub enum Status {
    Pending,
    Starting,
    Running,
    Stopping,
    Stopped,
    Error,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Starting,
        Status::Running,
        Status::Stopping,
        Status::Stopped,
        Status::Error,
    ];

    /// The stored and wire form: `PENDING`, `STARTING`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Starting => "STARTING",
            Status::Running => "RUNNING",
            Status::Stopping => "STOPPING",
            Status::Stopped => "STOPPED",
            Status::Error => "ERROR",
        }
    }

    /// Whether the state machine allows `self → to`.
    pub fn can_transition_to(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            (Pending, Starting)
                | (Starting, Running)
                | (Running, Stopping)
                | (Stopping, Stopped)
                | (Stopped, Starting)
                | (Error, Pending)
                // failure edges
                | (Pending, Error)
                | (Starting, Error)
                | (Running, Error)
                | (Stopping, Error)
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a stored status string that is not one of [`Status::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown agent status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// What the owner wants the agent to be; the reconciler closes the gap between
/// this (stored in `agents.desired_state`) and what Docker shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum DesiredState {
    Running,
    Stopped,
    Deleted,
}

impl DesiredState {
    /// The stored form: `running`, `stopped`, `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
            DesiredState::Deleted => "deleted",
        }
    }
}

impl FromStr for DesiredState {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "running" => Ok(DesiredState::Running),
            "stopped" => Ok(DesiredState::Stopped),
            "deleted" => Ok(DesiredState::Deleted),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_edges_are_allowed() {
        use Status::*;
        for (from, to) in [
            (Pending, Starting),
            (Starting, Running),
            (Running, Stopping),
            (Stopping, Stopped),
            (Stopped, Starting),
            (Starting, Error),
            (Error, Pending),
        ] {
            assert!(from.can_transition_to(to), "{from} -> {to}");
        }
    }

    #[test]
    fn other_edges_are_refused() {
        use Status::*;
        for (from, to) in [
            (Pending, Running),
            (Running, Starting),
            (Stopped, Running),
            (Error, Running),
            (Error, Starting),
            (Stopped, Stopping),
            (Running, Running),
            (Stopped, Error),
        ] {
            assert!(!from.can_transition_to(to), "{from} -> {to}");
        }
    }

    #[test]
    fn string_forms_round_trip() {
        for st in Status::ALL {
            assert_eq!(st.as_str().parse::<Status>().unwrap(), st);
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
        }
        assert!("running".parse::<Status>().is_err());
    }
}
