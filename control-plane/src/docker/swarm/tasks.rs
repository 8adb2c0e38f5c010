//! Swarm tasks as the engine reports them, and the pure mapping from a
//! service and its tasks to the neutral [`ObservedContainer`].
//!
//! Tasks are read with our own decoder ([`RawTask`]) rather than bollard's
//! `Task`: bollard's model has no `NetworksAttachments` (a task's address
//! on each network, which is how agents are reached), and its state enum
//! has no catch-all (an unknown state from a newer engine would fail a
//! whole listing). States stay strings here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::docker::observe::parse_docker_time;
use crate::orchestrator::{
    Labels, ObservedContainer, AGENT_ID_LABEL, INSTALLATION_LABEL, SPEC_HASH_LABEL,
};

/// One task of `GET /tasks` (Engine API, PascalCase fields).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RawTask {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    #[serde(rename = "NodeID", default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub desired_state: String,
    #[serde(default)]
    pub status: RawTaskStatus,
    #[serde(default)]
    pub networks_attachments: Option<Vec<RawAttachment>>,
}

/// A task's `Status`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RawTaskStatus {
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub err: Option<String>,
    #[serde(default)]
    pub container_status: Option<RawContainerStatus>,
}

/// A task's `Status.ContainerStatus`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct RawContainerStatus {
    #[serde(rename = "ContainerID", default)]
    pub container_id: Option<String>,
    #[serde(rename = "ExitCode", default)]
    pub exit_code: Option<i64>,
}

/// One of a task's `NetworksAttachments`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RawAttachment {
    #[serde(default)]
    pub network: RawNetwork,
    /// CIDR form, `10.0.1.5/24`.
    #[serde(default)]
    pub addresses: Option<Vec<String>>,
}

/// The network of an attachment.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RawNetwork {
    #[serde(default)]
    pub spec: RawNetworkSpec,
}

/// The network's spec (its name).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RawNetworkSpec {
    #[serde(default)]
    pub name: String,
}

/// Task states after which the task never runs again (swarmkit's
/// `TaskStateCompleted` and later).
pub const TERMINAL_STATES: [&str; 6] = [
    "complete", "shutdown", "failed", "rejected", "remove", "orphaned",
];

impl RawTask {
    /// Whether the task reached a state it never leaves.
    pub fn is_terminal(&self) -> bool {
        TERMINAL_STATES.contains(&self.status.state.as_str())
    }

    /// Whether its process runs now.
    pub fn is_running(&self) -> bool {
        self.status.state == "running"
    }

    /// When the manager created it.
    pub fn created(&self) -> Option<DateTime<Utc>> {
        self.created_at.as_deref().and_then(parse_docker_time)
    }

    /// When its status last changed (stable while it runs: swarmkit
    /// reports a status only when it changes).
    pub fn status_at(&self) -> Option<DateTime<Utc>> {
        self.status.timestamp.as_deref().and_then(parse_docker_time)
    }

    /// Its container's id on its node, once it has one.
    pub fn container_id(&self) -> Option<&str> {
        self.status
            .container_status
            .as_ref()
            .and_then(|c| c.container_id.as_deref())
            .filter(|id| !id.is_empty())
    }

    /// Network name → its address there (without the prefix length).
    pub fn addresses(&self) -> BTreeMap<String, String> {
        self.networks_attachments
            .iter()
            .flatten()
            .filter_map(|a| {
                let addr = a.addresses.as_ref()?.first()?;
                let ip = addr.split('/').next().unwrap_or(addr);
                Some((a.network.spec.name.clone(), ip.to_owned()))
            })
            .collect()
    }

    /// What the engine says went wrong, if anything: `Status.Err`, else the
    /// message of a task that is not progressing normally.
    pub fn problem(&self) -> Option<String> {
        self.status
            .err
            .clone()
            .filter(|e| !e.is_empty())
            .or_else(|| {
                (self.status.state == "pending" || self.status.state == "rejected")
                    .then(|| self.status.message.clone())
                    .flatten()
                    .filter(|m| !m.is_empty())
            })
    }
}

/// A service as the observation needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    pub id: String,
    pub name: String,
    pub labels: Labels,
    pub created_at: Option<DateTime<Utc>>,
    /// Desired replicas: 0 (created or stopped) or 1 (running).
    pub replicas: i64,
}

impl ServiceView {
    /// From bollard's `Service`; `None` without an id or spec.
    pub fn of(s: &bollard::models::Service) -> Option<ServiceView> {
        let spec = s.spec.as_ref()?;
        Some(ServiceView {
            id: s.id.clone()?,
            name: spec.name.clone().unwrap_or_default(),
            labels: spec
                .labels
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            created_at: s.created_at.as_deref().and_then(parse_docker_time),
            replicas: spec
                .mode
                .as_ref()
                .and_then(|m| m.replicated.as_ref())
                .and_then(|r| r.replicas)
                .unwrap_or(0),
        })
    }
}

/// The task that stands for the service now: the newest one (by creation)
/// whose desired state is `running` (Swarm keeps one per slot), else the
/// newest of all. `None` for a service that never had a task.
pub fn current_task<'a>(tasks: &'a [RawTask]) -> Option<&'a RawTask> {
    let newest = |ts: &mut dyn Iterator<Item = &'a RawTask>| {
        ts.max_by(|a, b| {
            (a.created(), a.created_at.as_deref()).cmp(&(b.created(), b.created_at.as_deref()))
        })
    };
    newest(&mut tasks.iter().filter(|t| t.desired_state == "running"))
        .or_else(|| newest(&mut tasks.iter()))
}

/// The neutral observation of `service` from its `tasks` (any order, any
/// of them terminal). Pure.
///
/// - `running`: the current task's process runs; `started_at` is then its
///   status time (every new task is a new start, so a task replaced by
///   Swarm — crash, update, drain, node loss — shows as a restart).
/// - `state`: `running`; `created` (no task yet, replicas 0); `exited`
///   (replicas 0, or the current task is terminal and replicas 0);
///   `restarting` (replicas 1 and the task is on its way: Swarm brings it
///   up); `pending` (replicas 1 and the task cannot be placed or was
///   rejected: [`ObservedContainer::status_message`] says why, e.g. "no
///   suitable node").
/// - `finished_at`: when the last task that ran ended (`None` while the
///   current one runs or never ran).
pub fn observe(service: &ServiceView, tasks: &[RawTask]) -> ObservedContainer {
    let current = current_task(tasks);
    let running = current.is_some_and(RawTask::is_running);
    let ended = tasks
        .iter()
        .filter(|t| t.is_terminal() && t.container_id().is_some())
        .max_by_key(|t| t.status_at());
    let state = match current {
        _ if running => "running",
        None if service.replicas == 0 => "created",
        None => "restarting",
        Some(_) if service.replicas == 0 => "exited",
        Some(t) if t.problem().is_some() && !t.is_terminal() => "pending",
        Some(t) if t.status.state == "rejected" => "pending",
        Some(_) => "restarting",
    };
    let status_message = match current {
        Some(t) if !running => t.problem(),
        _ => None,
    };
    ObservedContainer {
        id: service.id.clone(),
        name: service.name.clone(),
        agent_id: service.labels.get(AGENT_ID_LABEL).cloned(),
        spec_hash: service.labels.get(SPEC_HASH_LABEL).cloned(),
        installation: service.labels.get(INSTALLATION_LABEL).cloned(),
        labels: service.labels.clone(),
        created_at: service.created_at,
        state: state.to_owned(),
        running,
        started_at: current
            .filter(|t| t.is_running())
            .and_then(RawTask::status_at),
        finished_at: if running {
            None
        } else {
            ended.and_then(RawTask::status_at)
        },
        exit_code: if running {
            None
        } else {
            ended
                .and_then(|t| t.status.container_status.as_ref())
                .and_then(|c| c.exit_code)
        },
        oom_killed: false,
        restart_count: i64::try_from(tasks.iter().filter(|t| t.container_id().is_some()).count())
            .unwrap_or(i64::MAX)
            .saturating_sub(1)
            .max(0),
        host_port: None,
        ip_addresses: current
            .filter(|t| !t.is_terminal())
            .map(RawTask::addresses)
            .unwrap_or_default(),
        node: current
            .and_then(|t| t.node_id.clone())
            .filter(|n| !n.is_empty()),
        status_message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, created: &str, desired: &str, state: &str) -> RawTask {
        serde_json::from_value(serde_json::json!({
            "ID": id,
            "ServiceID": "s1",
            "NodeID": "n1",
            "CreatedAt": created,
            "DesiredState": desired,
            "Status": {
                "Timestamp": created.replace(":00.", ":05."),
                "State": state,
                "Message": state,
                "ContainerStatus": {"ContainerID": format!("c-{id}"), "ExitCode": 0}
            },
            "NetworksAttachments": [
                {"Network": {"Spec": {"Name": "zeroone-net"}}, "Addresses": ["10.0.1.5/24"]}
            ]
        }))
        .expect("a task fixture")
    }

    fn service(replicas: i64) -> ServiceView {
        ServiceView {
            id: "s1".into(),
            name: "zeroclaw-ada".into(),
            labels: Labels::from([(AGENT_ID_LABEL.to_owned(), "a1".to_owned())]),
            created_at: None,
            replicas,
        }
    }

    #[test]
    fn a_running_task_is_a_running_workload_with_its_address() {
        let t = task("t1", "2026-11-30T10:00:00.000000001Z", "running", "running");
        let o = observe(&service(1), &[t]);
        assert!(o.running);
        assert_eq!(o.state, "running");
        assert_eq!(o.agent_id.as_deref(), Some("a1"));
        assert_eq!(o.ip_addresses["zeroone-net"], "10.0.1.5");
        assert_eq!(
            o.started_at.map(|t| t.to_rfc3339()),
            Some("2026-11-30T10:00:05.000000001+00:00".to_owned())
        );
        assert_eq!(o.node.as_deref(), Some("n1"));
        assert_eq!(o.finished_at, None);
    }

    #[test]
    fn a_replacement_task_is_a_new_start() {
        let old = task("t1", "2026-11-30T10:00:00.0Z", "shutdown", "shutdown");
        let new = task("t2", "2026-11-30T10:01:00.0Z", "running", "running");
        let o = observe(&service(1), &[new.clone(), old]);
        assert!(o.running);
        assert_eq!(o.started_at, new.status_at());
        assert_eq!(o.restart_count, 1);
    }

    #[test]
    fn an_unplaceable_task_is_pending_with_the_engine_reason() {
        let old = task("t1", "2026-11-30T10:00:00.0Z", "shutdown", "shutdown");
        let mut stuck = task("t2", "2026-11-30T10:01:00.0Z", "running", "pending");
        stuck.status.err = Some("no suitable node (1 node not available for new tasks)".into());
        stuck.status.container_status = None;
        let o = observe(&service(1), &[old.clone(), stuck]);
        assert!(!o.running);
        assert_eq!(o.state, "pending");
        assert!(o.status_message.unwrap().contains("no suitable node"));
        assert_eq!(o.finished_at, old.status_at());
    }

    #[test]
    fn a_starting_task_is_restarting_and_a_stopped_service_exited() {
        let mut starting = task("t2", "2026-11-30T10:01:00.0Z", "running", "starting");
        starting.status.err = None;
        assert_eq!(observe(&service(1), &[starting]).state, "restarting");
        let mut done = task("t1", "2026-11-30T10:00:00.0Z", "shutdown", "shutdown");
        done.status.container_status = Some(RawContainerStatus {
            container_id: Some("c".into()),
            exit_code: Some(137),
        });
        let o = observe(&service(0), &[done]);
        assert_eq!((o.state.as_str(), o.exit_code), ("exited", Some(137)));
        assert_eq!(observe(&service(0), &[]).state, "created");
    }

    #[test]
    fn unknown_states_and_missing_fields_decode() {
        let t: RawTask = serde_json::from_value(serde_json::json!({
            "ID": "t9", "Status": {"State": "some-future-state"}
        }))
        .unwrap();
        assert!(!t.is_running() && !t.is_terminal());
        assert!(t.addresses().is_empty());
    }
}
