//! Removing a data volume that lives on another node: the manager's engine
//! cannot reach it, so a one-shot Swarm job (`ReplicatedJob`, one
//! completion) is pinned to that node and runs `zcaas remove-volume` from
//! the control-plane image ([`crate::config::Config::janitor_image`]) with
//! that node's engine socket bind-mounted — the socket path from the node's
//! label [`DOCKER_SOCKET_LABEL`], default `/var/run/docker.sock`. The
//! command removes the volume only if it carries our labels, this
//! installation's id and the agent's id. The job's service carries our
//! labels and the agent id, and is removed once its task ended.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    Mount, MountType, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicatedJob, TaskSpec,
    TaskSpecContainerSpec, TaskSpecLogDriver, TaskSpecPlacement, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};
use tokio::time::Instant;

use super::tasks::current_task;
use super::SwarmRuntime;
use crate::docker::spec::LOG_DRIVER;
use crate::docker::{status_of, DockerError};
use crate::orchestrator::{AGENT_ID_LABEL, MANAGED_LABEL};

/// Node label naming where that node's engine socket is (default
/// [`DEFAULT_DOCKER_SOCKET`]).
pub const DOCKER_SOCKET_LABEL: &str = "io.zcaas.docker-socket";
/// Where a node's engine socket is unless its label says otherwise.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// How long a janitor job may take (placement, start, the removal).
pub const JANITOR_TIMEOUT: Duration = Duration::from_secs(60);

/// One janitor job: what to remove where.
#[derive(Debug, Clone, PartialEq)]
pub struct Job<'a> {
    /// The job service's name.
    pub name: &'a str,
    /// The control-plane image (on the node).
    pub image: &'a str,
    /// The node id.
    pub node: &'a str,
    /// The node's engine socket path.
    pub socket: &'a str,
    pub volume: &'a str,
    pub agent_id: &'a str,
    pub installation: Option<&'a str>,
    /// The service's labels (ours and the agent id).
    pub labels: HashMap<String, String>,
    /// The control plane's extra labels, `key=value`.
    pub extra_labels: &'a [String],
}

/// The job's service spec (pure): on `node`, `image` runs `zcaas
/// remove-volume <volume> --agent-id <agent_id> [--installation <id>]`
/// with `socket` mounted at the default socket path, as root (only to
/// reach the socket), with the control plane's extra labels in its
/// environment so that ownership is judged as the control plane judges it.
pub fn job_spec(job: &Job<'_>) -> ServiceSpec {
    let Job {
        name,
        image,
        node,
        socket,
        volume,
        agent_id,
        installation,
        ref labels,
        extra_labels,
    } = *job;
    let labels = labels.clone();
    let mut args = vec![
        "remove-volume".to_owned(),
        volume.to_owned(),
        "--agent-id".to_owned(),
        agent_id.to_owned(),
    ];
    if let Some(id) = installation {
        args.extend(["--installation".to_owned(), id.to_owned()]);
    }
    let mut env = vec!["ZCAAS_LOG_JSON=false".to_owned()];
    if !extra_labels.is_empty() {
        env.push(format!("ZCAAS_EXTRA_LABELS={}", extra_labels.join(",")));
    }
    ServiceSpec {
        name: Some(name.to_owned()),
        labels: Some(labels),
        mode: Some(ServiceSpecMode {
            replicated_job: Some(ServiceSpecModeReplicatedJob {
                max_concurrent: Some(1),
                total_completions: Some(1),
            }),
            ..Default::default()
        }),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.to_owned()),
                args: Some(args),
                env: Some(env),
                user: Some("0:0".to_owned()),
                read_only: Some(true),
                capability_drop: Some(vec!["ALL".to_owned()]),
                mounts: Some(vec![Mount {
                    typ: Some(MountType::BIND),
                    source: Some(socket.to_owned()),
                    target: Some(DEFAULT_DOCKER_SOCKET.to_owned()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(vec![format!("node.id=={node}")]),
                ..Default::default()
            }),
            log_driver: Some(TaskSpecLogDriver {
                name: Some(LOG_DRIVER.to_owned()),
                options: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl SwarmRuntime {
    /// Removes agent `agent_id`'s volume `volume` on node `node` with a
    /// janitor job, waiting (≤ [`JANITOR_TIMEOUT`]) for it to complete.
    ///
    /// Errors: the job failed or was rejected (its reason, e.g. "No such
    /// image" when the node lacks the janitor image), or did not finish in
    /// time.
    pub(crate) async fn remove_volume_on(
        &self,
        node: &str,
        volume: &str,
        agent_id: &str,
    ) -> Result<(), DockerError> {
        let node_json = self.raw.node(node).await?;
        let socket = node_json["Spec"]["Labels"][DOCKER_SOCKET_LABEL]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_DOCKER_SOCKET)
            .to_owned();
        let short: String = agent_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        let name = format!("zcaas-janitor-{short}-{}", uuid::Uuid::new_v4().simple());
        let mut labels: HashMap<String, String> =
            self.docker.ownership_labels().into_iter().collect();
        labels.insert(AGENT_ID_LABEL.to_owned(), agent_id.to_owned());
        let extra: Vec<String> = self
            .docker
            .label_filters()
            .into_iter()
            .filter(|l| !l.starts_with(&format!("{MANAGED_LABEL}=")))
            .collect();
        let spec = job_spec(&Job {
            name: &name,
            image: &self.janitor_image,
            node,
            socket: &socket,
            volume,
            agent_id,
            installation: self.docker.installation(),
            labels,
            extra_labels: &extra,
        });
        let created = self.docker.client().create_service(spec, None).await?;
        let id = created.id.unwrap_or(name);
        let outcome = self.wait_job(&id).await;
        match self.docker.client().delete_service(&id).await {
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => tracing::warn!(service = %id, error = %e, "janitor job not removed"),
        }
        outcome
    }

    /// Waits for job `id`'s task to complete.
    async fn wait_job(&self, id: &str) -> Result<(), DockerError> {
        let deadline = Instant::now() + JANITOR_TIMEOUT;
        loop {
            let tasks = self.tasks_of(id).await?;
            if let Some(t) = current_task(&tasks) {
                match t.status.state.as_str() {
                    "complete" => return Ok(()),
                    "failed" | "rejected" | "shutdown" | "orphaned" => {
                        return Err(DockerError::Other(format!(
                            "janitor job {}: {}",
                            t.status.state,
                            t.problem()
                                .or_else(|| t.status.message.clone())
                                .unwrap_or_default()
                        )))
                    }
                    _ => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(DockerError::Other(format!(
                    "janitor job {id} did not finish within {JANITOR_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_runs_once_on_the_node_with_its_socket() {
        let extra = ["io.zcaas.test=t1".to_owned()];
        let s = job_spec(&Job {
            name: "j",
            image: "zcaas/control-plane:latest",
            node: "node-x",
            socket: "/run/other.sock",
            volume: "zeroclaw-ada-data",
            agent_id: "a1",
            installation: Some("i1"),
            labels: HashMap::new(),
            extra_labels: &extra,
        });
        let job = s.mode.unwrap().replicated_job.unwrap();
        assert_eq!(
            (job.max_concurrent, job.total_completions),
            (Some(1), Some(1))
        );
        let t = s.task_template.unwrap();
        assert_eq!(
            t.placement.unwrap().constraints,
            Some(vec!["node.id==node-x".to_owned()])
        );
        let c = t.container_spec.unwrap();
        assert_eq!(
            c.args.unwrap(),
            [
                "remove-volume",
                "zeroclaw-ada-data",
                "--agent-id",
                "a1",
                "--installation",
                "i1"
            ]
        );
        let m = &c.mounts.unwrap()[0];
        assert_eq!(m.source.as_deref(), Some("/run/other.sock"));
        assert_eq!(m.target.as_deref(), Some(DEFAULT_DOCKER_SOCKET));
        assert!(c
            .env
            .unwrap()
            .contains(&"ZCAAS_EXTRA_LABELS=io.zcaas.test=t1".to_owned()));
    }
}
