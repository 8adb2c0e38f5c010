//! [`SwarmRuntime`] as an [`Orchestrator`]. Images, networks to attach
//! and volumes are the manager's own engine's (the Docker handle); logs
//! come through the manager from whichever node runs the task; stats only
//! for tasks on the manager ([`OrchestratorError::NotVisible`] otherwise).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bollard::query_parameters::LogsOptions;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};

use super::tasks::{current_task, observe, RawTask};
use super::SwarmRuntime;
use crate::docker::observe::{follow_options, into_lines, since_options, tail_options};
use crate::docker::DockerError;
use crate::orchestrator::{
    ContainerEvent, ContainerSpec, ContainerStats, FileEntry, ImageInfo, Incarnation, Labels,
    ListedWorkload, LogLine, ObservedContainer, Orchestrator, OrchestratorError, Ownership,
    PolledStats, Result,
};

/// How often a followed task's state is checked: the follow ends when the
/// task stops running (a task's logs are of one start only).
const FOLLOW_CHECK: Duration = Duration::from_secs(1);

fn neutral<T: 'static>(
    s: BoxStream<'static, Result<T, DockerError>>,
) -> BoxStream<'static, Result<T>> {
    s.map(|item| item.map_err(OrchestratorError::from)).boxed()
}

impl SwarmRuntime {
    /// The container of service `id`'s running `task` when it runs on the
    /// manager's node (the only engine zcaas reads stats from); otherwise
    /// why not: no running task, or [`OrchestratorError::NotVisible`].
    fn local_container(&self, id: &str, task: Option<&RawTask>) -> Result<String> {
        let task = task
            .filter(|t| t.is_running())
            .ok_or_else(|| OrchestratorError::Other(format!("service {id} has no running task")))?;
        let node = task.node_id.clone().unwrap_or_default();
        match task.container_id() {
            Some(container) if node == self.node_id() => Ok(container.to_owned()),
            _ => Err(OrchestratorError::NotVisible(format!(
                "the agent runs on swarm node {node}; its CPU and memory are read on that node \
                 (docker stats there), not from the manager zcaas talks to"
            ))),
        }
    }

    /// The task that stands for service `id` now, if any.
    async fn current(&self, id: &str) -> Result<Option<RawTask>, DockerError> {
        let tasks = self.tasks_of(id).await?;
        Ok(current_task(&tasks).cloned())
    }

    /// Follows the logs of service `id`'s current task with `options`
    /// (through the manager, whichever node runs it); ends when that task
    /// stops running.
    fn follow_task(
        &self,
        id: &str,
        options: LogsOptions,
    ) -> BoxStream<'static, Result<LogLine, DockerError>> {
        let this = self.clone();
        let id = id.to_owned();
        stream::once(async move {
            let task = match this.current(&id).await {
                Ok(Some(t)) if t.is_running() => t,
                Ok(_) => return stream::empty().boxed(),
                Err(e) => return stream::once(async { Err(e) }).boxed(),
            };
            let lines = into_lines(this.docker().client().task_logs(&task.id, Some(options)));
            let watcher = this.clone();
            let task_id = task.id.clone();
            let ended = async move {
                loop {
                    tokio::time::sleep(FOLLOW_CHECK).await;
                    match watcher.current(&id).await {
                        Ok(Some(t)) if t.id == task_id && t.is_running() => {}
                        Ok(_) => return,
                        Err(_) => {}
                    }
                }
            };
            lines.take_until(Box::pin(ended)).boxed()
        })
        .flatten()
        .boxed()
    }
}

#[async_trait]
impl Orchestrator for SwarmRuntime {
    fn installation(&self) -> Option<&str> {
        self.docker().installation()
    }

    fn ownership_labels(&self) -> Labels {
        self.docker().ownership_labels()
    }

    fn ownership(&self, labels: &Labels) -> Ownership {
        self.docker().ownership(labels)
    }

    async fn ping(&self) -> Result<()> {
        Ok(self.docker().ping().await?)
    }

    async fn ensure_network(&self, name: &str) -> Result<()> {
        Ok(SwarmRuntime::ensure_network(self, name).await?)
    }

    /// Standalone containers on the manager only: a service's task
    /// (zcaas or Traefik deployed as a stack) cannot be connected to a
    /// network by hand — its stack file lists the agents' networks.
    async fn attach_to_networks(
        &self,
        container: &str,
        networks: &[String],
    ) -> Result<Vec<String>> {
        Ok(self
            .docker()
            .attach_to_networks(container, networks)
            .await?)
    }

    async fn image_exists(&self, image: &str) -> Result<bool> {
        Ok(self.docker().image_exists(image).await?)
    }

    async fn image_labels(&self, image: &str) -> Result<Option<ImageInfo>> {
        Ok(self.docker().image_labels(image).await?)
    }

    async fn build_agent_image(&self, tag: &str, binary: &Path) -> Result<()> {
        Ok(self.docker().build_agent_image(tag, binary).await?)
    }

    async fn inspect(&self, id_or_name: &str) -> Result<Option<ObservedContainer>> {
        Ok(SwarmRuntime::inspect(self, id_or_name).await?)
    }

    async fn create(&self, spec: &ContainerSpec, files: &[FileEntry]) -> Result<String> {
        Ok(SwarmRuntime::create(self, spec, files).await?)
    }

    async fn write_files(&self, id: &str, files: &[FileEntry]) -> Result<()> {
        Ok(SwarmRuntime::write_files(self, id, files).await?)
    }

    async fn start(&self, id: &str) -> Result<Incarnation> {
        Ok(SwarmRuntime::start(self, id).await?)
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        Ok(SwarmRuntime::stop(self, id, timeout).await?)
    }

    async fn restart(&self, id: &str, _timeout: Duration) -> Result<Incarnation> {
        Ok(SwarmRuntime::restart(self, id).await?)
    }

    async fn remove(&self, id_or_name: &str) -> Result<()> {
        Ok(SwarmRuntime::remove(self, id_or_name).await?)
    }

    /// The volume lives on the node the agent's data was pinned to: removed
    /// by the manager's engine when that is the manager, else by a one-shot
    /// job on that node ([`super::janitor`]). Should the job fail (no
    /// janitor image there, node down), the volume is left with a warning
    /// naming node and volume, and its pin record stays as the trace of it.
    async fn remove_agent_volume(&self, name: &str, agent_id: &str) -> Result<()> {
        let pinned = self.pinned_node(agent_id).await?;
        match pinned.as_deref() {
            Some(node) if node != self.node_id() => {
                if let Err(e) = self.remove_volume_on(node, name, agent_id).await {
                    tracing::warn!(agent_id, volume = name, node, error = %e,
                        "the agent's data volume could not be removed on its node and stays there \
                         (docker volume rm on that node)");
                    return Ok(());
                }
            }
            _ => self.docker().remove_agent_volume(name, agent_id).await?,
        }
        self.forget_pin(agent_id).await?;
        Ok(())
    }

    /// The last `lines` lines of every task of the service (the current
    /// and earlier ones the manager keeps), through the manager.
    async fn logs_tail(&self, id: &str, lines: usize) -> Result<Vec<LogLine>> {
        let options = tail_options(lines);
        let mut out = Vec::new();
        let mut stream = into_lines(self.docker().client().service_logs(id, Some(options)));
        while let Some(line) = stream.next().await {
            out.push(line.map_err(OrchestratorError::from)?);
        }
        out.sort_by_key(|l| l.at);
        if out.len() > lines {
            out.drain(..out.len() - lines);
        }
        Ok(out)
    }

    fn logs_follow(&self, id: &str, tail: usize) -> BoxStream<'static, Result<LogLine>> {
        neutral(self.follow_task(id, follow_options(tail)))
    }

    fn logs_since(&self, id: &str, since: DateTime<Utc>) -> BoxStream<'static, Result<LogLine>> {
        neutral(self.follow_task(id, since_options(since)))
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats> {
        let task = self.current(id).await?;
        let container = self.local_container(id, task.as_ref())?;
        Ok(self.docker().stats(&container).await?)
    }

    /// One task listing for all of `ids`; the tasks on the manager's node
    /// read in one batch as the Docker backend polls its containers
    /// (cgroup files, CPU since the previous poll), the others
    /// [`OrchestratorError::NotVisible`].
    async fn poll_stats(&self, ids: &[String]) -> Vec<Result<PolledStats>> {
        let tasks = match self.all_tasks().await {
            Ok(tasks) => tasks,
            Err(e) => {
                let why = e.to_string();
                return ids
                    .iter()
                    .map(|_| Err(OrchestratorError::Other(format!("listing tasks: {why}"))))
                    .collect();
            }
        };
        let mut by_service: HashMap<&str, Vec<RawTask>> = HashMap::new();
        for t in &tasks {
            by_service
                .entry(t.service_id.as_str())
                .or_default()
                .push(t.clone());
        }
        let mut out: Vec<Option<Result<PolledStats>>> = Vec::with_capacity(ids.len());
        let mut local: Vec<(usize, String)> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let of_service = by_service.get(id.as_str()).map_or(&[][..], Vec::as_slice);
            match self.local_container(id, current_task(of_service)) {
                Ok(container) => {
                    local.push((i, container));
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        let containers: Vec<String> = local.iter().map(|(_, c)| c.clone()).collect();
        let read = self.docker().poll_stats(&containers).await;
        for ((i, _), stats) in local.into_iter().zip(read) {
            out[i] = Some(stats.map_err(OrchestratorError::from));
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(OrchestratorError::Other("stats not read".into()))))
            .collect()
    }

    fn events(&self) -> BoxStream<'static, Result<ContainerEvent>> {
        neutral(SwarmRuntime::events(self))
    }

    /// One service list and one task list for all of `ids` (instead of an
    /// inspect and a task list per agent).
    async fn running_endpoints(&self, ids: &[String]) -> Result<Vec<ListedWorkload>> {
        Ok(self
            .services_with_tasks()
            .await?
            .iter()
            .filter(|(v, _)| ids.contains(&v.id))
            .map(|(v, tasks)| observe(v, tasks))
            .filter(|c| c.running && self.is_owned(&c.labels))
            .map(|c| ListedWorkload::from(&c))
            .collect())
    }

    async fn list_managed(&self) -> Result<Vec<ObservedContainer>> {
        Ok(SwarmRuntime::list_managed(self).await?)
    }

    /// The manager's own volumes only (others are on their nodes).
    async fn list_managed_volumes(&self) -> Result<Vec<(String, Labels)>> {
        Ok(self.docker().list_managed_volumes().await?)
    }

    async fn list_managed_networks(&self) -> Result<Vec<(String, Labels)>> {
        Ok(self.docker().list_managed_networks().await?)
    }
}
