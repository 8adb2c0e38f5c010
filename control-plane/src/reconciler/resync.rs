//! The periodic resync, made cheap for large fleets: instead of a reconcile
//! pass (a row read and an inspect) for every agent every
//! [`super::RESYNC_INTERVAL`], one listing of the engine's workloads is
//! compared with what each agent's last settled pass saw, and only agents
//! whose row or workload changed since — or that never settled — are woken.
//! This is the informer pattern of Kubernetes controllers (client-go's
//! shared informer: list once, resync from the cache, act on differences);
//! a full resync of every agent still runs when the event stream
//! (re)connects and every [`FULL_RESYNC_EVERY`] periodic resyncs.
//!
//! What the comparison sees: the row's `updated_at` (every write that
//! changes an agent's state or configuration sets it; the stats poll's
//! figures do not) and the workload's id and state word. What it cannot see
//! is a restart between two listings that leaves the same container
//! running: the event stream reports that one (`start`, `die`), and the
//! full resync is the backstop.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::model::Agent;
use crate::orchestrator::ListedWorkload;

/// Every how many periodic resyncs all agents are woken regardless of the
/// comparison (30 × 10 s: every 5 minutes).
pub const FULL_RESYNC_EVERY: u32 = 30;

/// What a settled pass saw of one agent: its row's last write, and its
/// workload's id and state word (`None`: no workload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub updated_at: DateTime<Utc>,
    pub workload: Option<(String, String)>,
}

impl Fingerprint {
    /// The fingerprint of `agent` with its workload `(id, state)`.
    pub fn of(agent: &Agent, workload: Option<(&str, &str)>) -> Self {
        Fingerprint {
            updated_at: agent.updated_at,
            workload: workload.map(|(id, state)| (id.to_owned(), state.to_owned())),
        }
    }

    /// Whether a pass that found `agent` settled may be remembered as
    /// such: not while a time-dependent step may still come without any
    /// change to see (a retry budget waiting to be reset after a stable
    /// run, an ERROR agent's next attempt).
    pub fn rememberable(agent: &Agent) -> bool {
        agent.attempts == 0 && agent.next_attempt_at.is_none()
    }
}

/// The agents of `rows` to wake (pure): those with no remembered settled
/// pass in `settled`, or whose row or workload differs from it. An agent's
/// workload is the listed one named after it and carrying its id.
pub fn to_wake(
    rows: &[Agent],
    listed: &[ListedWorkload],
    settled: &HashMap<String, Fingerprint>,
) -> Vec<String> {
    let by_name: HashMap<&str, &ListedWorkload> =
        listed.iter().map(|w| (w.name.as_str(), w)).collect();
    rows.iter()
        .filter(|agent| {
            let name = agent.container_name();
            let workload = by_name
                .get(name.as_str())
                .filter(|w| w.agent_id.as_deref() == Some(agent.id.as_str()))
                .map(|w| (w.id.as_str(), w.state.as_str()));
            settled.get(&agent.id) != Some(&Fingerprint::of(agent, workload))
        })
        .map(|agent| agent.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::Endpoint;
    use crate::reconciler::testing::agent;
    use crate::status::Status;

    fn listed(a: &Agent, id: &str, state: &str) -> ListedWorkload {
        ListedWorkload {
            id: id.into(),
            name: a.container_name(),
            agent_id: Some(a.id.clone()),
            labels: Default::default(),
            state: state.into(),
            created_at: None,
            endpoint: Endpoint::default(),
        }
    }

    #[test]
    fn only_changed_or_unsettled_agents_are_woken() {
        let mut a = agent(Status::Running);
        a.id = "a".into();
        a.slug = "ada".into();
        let mut b = agent(Status::Stopped);
        b.id = "b".into();
        b.slug = "bob".into();
        let rows = vec![a.clone(), b.clone()];
        let listing = vec![listed(&a, "c1", "running"), listed(&b, "c2", "exited")];
        // Nothing remembered: everyone.
        assert_eq!(to_wake(&rows, &listing, &HashMap::new()), ["a", "b"]);

        let settled = HashMap::from([
            ("a".to_owned(), Fingerprint::of(&a, Some(("c1", "running")))),
            ("b".to_owned(), Fingerprint::of(&b, Some(("c2", "exited")))),
        ]);
        assert!(to_wake(&rows, &listing, &settled).is_empty());

        // A's container died; B's row was written (e.g. a start request).
        let listing2 = vec![listed(&a, "c1", "exited"), listed(&b, "c2", "exited")];
        let mut b2 = b.clone();
        b2.updated_at += chrono::Duration::milliseconds(1);
        assert_eq!(to_wake(&[a.clone(), b2], &listing2, &settled), ["a", "b"]);

        // A's container replaced, or gone, or one named after it that is
        // another agent's: all changes.
        assert_eq!(
            to_wake(&[a.clone()], &[listed(&a, "c9", "running")], &settled),
            ["a"]
        );
        assert_eq!(to_wake(&[a.clone()], &[], &settled), ["a"]);
        let mut foreign = listed(&a, "c1", "running");
        foreign.agent_id = Some("someone-else".into());
        assert_eq!(to_wake(&[a.clone()], &[foreign], &settled), ["a"]);
    }

    #[test]
    fn pending_backoff_is_not_remembered() {
        let mut a = agent(Status::Running);
        assert!(Fingerprint::rememberable(&a));
        a.attempts = 2;
        assert!(!Fingerprint::rememberable(&a));
        a.attempts = 0;
        a.next_attempt_at = Some(Utc::now());
        assert!(!Fingerprint::rememberable(&a));
    }
}
