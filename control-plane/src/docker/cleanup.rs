//! Removing what we created: one container, one volume, or everything
//! carrying a label.
//! Nothing without our ownership label is ever removed.

use super::{status_of, DockerError, DockerRuntime, MANAGED_LABEL};
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveVolumeOptions,
};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How long a volume still "in use" (its container being removed) is retried.
const VOLUME_BUSY_RETRY: Duration = Duration::from_secs(10);

impl DockerRuntime {
    /// Force-removes the container (by id or name) with its anonymous
    /// volumes; gone is success. Refuses (Ok, does nothing, logs a warning)
    /// for a container without our labels.
    pub async fn remove_container(&self, id_or_name: &str) -> Result<(), DockerError> {
        let Some(c) = self.inspect(id_or_name).await? else {
            return Ok(());
        };
        if !self.is_owned(&c.labels) {
            tracing::warn!(container = %id_or_name, "not removing a container that is not ours");
            return Ok(());
        }
        remove_container_by_id(&self.docker, &c.id).await
    }

    /// Removes the named volume; gone is success. Only volumes with our
    /// labels (others: Ok, nothing done, a warning). A volume still in use by
    /// a container being removed is retried for a few seconds.
    pub async fn remove_volume(&self, name: &str) -> Result<(), DockerError> {
        let volume = match self.docker.inspect_volume(name).await {
            Ok(v) => v,
            Err(e) if status_of(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let labels: BTreeMap<String, String> = volume.labels.into_iter().collect();
        if !self.is_owned(&labels) {
            tracing::warn!(volume = %name, "not removing a volume that is not ours");
            return Ok(());
        }
        remove_volume_by_name(&self.docker, name).await
    }

    /// Removes the agent's named volume: like [`Self::remove_volume`], and
    /// only when the volume carries [`super::AGENT_ID_LABEL`]`=agent_id`
    /// (a volume of that name holding another agent's data is left alone,
    /// with a warning).
    pub async fn remove_agent_volume(&self, name: &str, agent_id: &str) -> Result<(), DockerError> {
        let volume = match self.docker.inspect_volume(name).await {
            Ok(v) => v,
            Err(e) if status_of(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if volume.labels.get(super::AGENT_ID_LABEL).map(String::as_str) != Some(agent_id) {
            tracing::warn!(volume = %name, agent_id, "not removing a volume that is not this agent's");
            return Ok(());
        }
        self.remove_volume(name).await
    }

    /// Every named volume carrying our labels (and the extra labels), as
    /// `(name, labels)` sorted by name: for orphan cleanup against the agents
    /// table (the agent id is the [`super::AGENT_ID_LABEL`] label).
    pub async fn list_managed_volumes(
        &self,
    ) -> Result<Vec<(String, BTreeMap<String, String>)>, DockerError> {
        let options = ListVolumesOptions {
            filters: Some(HashMap::from([("label".to_owned(), self.label_filters())])),
        };
        let listed = self.docker.list_volumes(Some(options)).await?;
        let mut out: Vec<(String, BTreeMap<String, String>)> = listed
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| (v.name, v.labels.into_iter().collect()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Every network carrying our labels (and the extra labels), as
    /// `(name, labels)` sorted by name.
    pub async fn list_managed_networks(
        &self,
    ) -> Result<Vec<(String, BTreeMap<String, String>)>, DockerError> {
        let options = ListNetworksOptions {
            filters: Some(HashMap::from([("label".to_owned(), self.label_filters())])),
        };
        let mut out: Vec<(String, BTreeMap<String, String>)> = self
            .docker
            .list_networks(Some(options))
            .await?
            .into_iter()
            .filter_map(|n| Some((n.name?, n.labels.unwrap_or_default().into_iter().collect())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Removes the named network if it is this installation's own
    /// ([`super::Ownership::Ours`]); gone is success. A network with
    /// containers attached is refused by the engine (an error).
    pub async fn remove_network(&self, name: &str) -> Result<(), DockerError> {
        let network = match self.docker.inspect_network(name, None).await {
            Ok(n) => n,
            Err(e) if status_of(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let labels: BTreeMap<String, String> =
            network.labels.unwrap_or_default().into_iter().collect();
        if self.ownership(&labels) != super::Ownership::Ours {
            tracing::warn!(network = %name, "not removing a network that is not this installation's");
            return Ok(());
        }
        match self.docker.remove_network(name).await {
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            other => other.map_err(DockerError::from),
        }
    }

    /// Removes every container (forced), then every volume, then every
    /// network carrying both `key=value` and `io.zcaas.managed=true`.
    /// Best effort: goes on past failures and returns the first one.
    pub async fn remove_all_with_label(&self, key: &str, value: &str) -> Result<(), DockerError> {
        let filters = || {
            Some(HashMap::from([(
                "label".to_owned(),
                vec![format!("{MANAGED_LABEL}=true"), format!("{key}={value}")],
            )]))
        };
        let mut first_error: Option<DockerError> = None;
        let mut keep = |r: Result<(), DockerError>| {
            if let Err(e) = r {
                tracing::warn!(error = %e, "cleanup by label");
                first_error.get_or_insert(e);
            }
        };

        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: filters(),
                ..Default::default()
            }))
            .await;
        match containers {
            Ok(list) => {
                for id in list.into_iter().filter_map(|c| c.id) {
                    keep(remove_container_by_id(&self.docker, &id).await);
                }
            }
            Err(e) => keep(Err(e.into())),
        }

        match self
            .docker
            .list_volumes(Some(ListVolumesOptions { filters: filters() }))
            .await
        {
            Ok(list) => {
                for volume in list.volumes.unwrap_or_default() {
                    keep(remove_volume_by_name(&self.docker, &volume.name).await);
                }
            }
            Err(e) => keep(Err(e.into())),
        }

        match self
            .docker
            .list_networks(Some(ListNetworksOptions { filters: filters() }))
            .await
        {
            Ok(list) => {
                for id in list.into_iter().filter_map(|n| n.id) {
                    let removed = match self.docker.remove_network(&id).await {
                        Err(e) if status_of(&e) == Some(404) => Ok(()),
                        other => other.map_err(DockerError::from),
                    };
                    keep(removed);
                }
            }
            Err(e) => keep(Err(e.into())),
        }
        first_error.map_or(Ok(()), Err)
    }
}

async fn remove_container_by_id(docker: &bollard::Docker, id: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => Ok(()),
        // "removal of container … is already in progress"
        Err(e) if status_of(&e) == Some(409) && e.to_string().contains("already in progress") => {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn remove_volume_by_name(docker: &bollard::Docker, name: &str) -> Result<(), DockerError> {
    let deadline = tokio::time::Instant::now() + VOLUME_BUSY_RETRY;
    loop {
        match docker
            .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => return Ok(()),
            Err(e) if status_of(&e) == Some(409) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
