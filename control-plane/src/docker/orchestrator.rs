//! [`DockerRuntime`] as an [`Orchestrator`]: each method delegates to the
//! inherent one of the same job, and engine errors become
//! [`OrchestratorError`]s (a 404 is [`OrchestratorError::NotFound`]).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};

use super::{DockerError, DockerRuntime};
use crate::orchestrator::{
    ContainerEvent, ContainerSpec, ContainerStats, FileEntry, ImageInfo, Incarnation, Labels,
    ListedWorkload, LogLine, ObservedContainer, Orchestrator, OrchestratorError, Ownership,
    PolledStats, Result,
};

impl From<DockerError> for OrchestratorError {
    fn from(e: DockerError) -> Self {
        if e.is_not_found() {
            OrchestratorError::NotFound(Box::new(e))
        } else {
            OrchestratorError::Engine(Box::new(e))
        }
    }
}

impl DockerRuntime {
    /// The incarnation container `id` runs as now (`State.StartedAt`).
    async fn incarnation(&self, id: &str) -> Result<Incarnation> {
        let c = DockerRuntime::inspect(self, id).await?.ok_or_else(|| {
            OrchestratorError::Other(format!("container {id} vanished after start"))
        })?;
        let started_at = c.started_at.ok_or_else(|| {
            OrchestratorError::Other(format!("container {id} has no start time after start"))
        })?;
        Ok(Incarnation { started_at })
    }
}

fn neutral<T: 'static>(
    s: BoxStream<'static, Result<T, DockerError>>,
) -> BoxStream<'static, Result<T>> {
    s.map(|item| item.map_err(OrchestratorError::from)).boxed()
}

#[async_trait]
impl Orchestrator for DockerRuntime {
    fn installation(&self) -> Option<&str> {
        DockerRuntime::installation(self)
    }

    fn ownership_labels(&self) -> Labels {
        DockerRuntime::ownership_labels(self)
    }

    fn ownership(&self, labels: &Labels) -> Ownership {
        DockerRuntime::ownership(self, labels)
    }

    async fn ping(&self) -> Result<()> {
        Ok(DockerRuntime::ping(self).await?)
    }

    async fn ensure_network(&self, name: &str) -> Result<()> {
        Ok(DockerRuntime::ensure_network(self, name).await?)
    }

    async fn attach_to_networks(
        &self,
        container: &str,
        networks: &[String],
    ) -> Result<Vec<String>> {
        Ok(DockerRuntime::attach_to_networks(self, container, networks).await?)
    }

    async fn image_exists(&self, image: &str) -> Result<bool> {
        Ok(DockerRuntime::image_exists(self, image).await?)
    }

    async fn image_labels(&self, image: &str) -> Result<Option<ImageInfo>> {
        Ok(DockerRuntime::image_labels(self, image).await?)
    }

    async fn build_agent_image(&self, tag: &str, binary: &Path) -> Result<()> {
        Ok(DockerRuntime::build_agent_image(self, tag, binary).await?)
    }

    async fn inspect(&self, id_or_name: &str) -> Result<Option<ObservedContainer>> {
        Ok(DockerRuntime::inspect(self, id_or_name).await?)
    }

    async fn create(&self, spec: &ContainerSpec, files: &[FileEntry]) -> Result<String> {
        let id = DockerRuntime::create_container(self, spec).await?;
        DockerRuntime::upload_files(self, &id, files).await?;
        Ok(id)
    }

    async fn write_files(&self, id: &str, files: &[FileEntry]) -> Result<()> {
        Ok(DockerRuntime::upload_files(self, id, files).await?)
    }

    async fn start(&self, id: &str) -> Result<Incarnation> {
        DockerRuntime::start(self, id).await?;
        self.incarnation(id).await
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        Ok(DockerRuntime::stop(self, id, timeout).await?)
    }

    async fn restart(&self, id: &str, timeout: Duration) -> Result<Incarnation> {
        DockerRuntime::restart(self, id, timeout).await?;
        self.incarnation(id).await
    }

    async fn remove(&self, id_or_name: &str) -> Result<()> {
        Ok(DockerRuntime::remove_container(self, id_or_name).await?)
    }

    async fn remove_agent_volume(&self, name: &str, agent_id: &str) -> Result<()> {
        Ok(DockerRuntime::remove_agent_volume(self, name, agent_id).await?)
    }

    async fn logs_tail(&self, id: &str, lines: usize) -> Result<Vec<LogLine>> {
        Ok(DockerRuntime::logs_tail(self, id, lines).await?)
    }

    fn logs_follow(&self, id: &str, tail: usize) -> BoxStream<'static, Result<LogLine>> {
        neutral(DockerRuntime::logs_follow(self, id, tail))
    }

    fn logs_since(&self, id: &str, since: DateTime<Utc>) -> BoxStream<'static, Result<LogLine>> {
        neutral(DockerRuntime::logs_since(self, id, since))
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats> {
        Ok(DockerRuntime::stats(self, id).await?)
    }

    async fn poll_stats(&self, ids: &[String]) -> Vec<Result<PolledStats>> {
        DockerRuntime::poll_stats(self, ids)
            .await
            .into_iter()
            .map(|r| r.map_err(OrchestratorError::from))
            .collect()
    }

    async fn running_endpoints(&self, ids: &[String]) -> Result<Vec<ListedWorkload>> {
        Ok(DockerRuntime::running_endpoints(self, ids).await?)
    }

    fn events(&self) -> BoxStream<'static, Result<ContainerEvent>> {
        neutral(DockerRuntime::events(self))
    }

    async fn list_managed(&self) -> Result<Vec<ObservedContainer>> {
        Ok(DockerRuntime::list_managed(self).await?)
    }

    async fn list_workloads(&self) -> Result<Vec<ListedWorkload>> {
        Ok(DockerRuntime::list_workloads(self).await?)
    }

    async fn list_managed_volumes(&self) -> Result<Vec<(String, Labels)>> {
        Ok(DockerRuntime::list_managed_volumes(self).await?)
    }

    async fn list_managed_networks(&self) -> Result<Vec<(String, Labels)>> {
        Ok(DockerRuntime::list_managed_networks(self).await?)
    }
}
