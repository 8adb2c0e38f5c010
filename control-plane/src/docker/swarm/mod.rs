//! The Swarm backend (`orchestrator = swarm`): one replicated service per
//! agent on a Docker Swarm, zcaas talking to a manager through the same
//! Engine API and bollard client as the Docker backend.
//!
//! | orchestrator notion | Swarm object |
//! |---|---|
//! | workload | service `zeroclaw-<slug>`, replicas 0 (created, stopped) or 1 (running) |
//! | incarnation | one task: every task Swarm starts (crash, update, drain, node loss) is a new start, re-paired |
//! | files (config, persona) | Swarm secrets mounted read-only at their paths in the data volume ([`spec::file_secret`]) |
//! | address | the task's address on the agents' overlay network (`GET /tasks`, [`raw`]) |
//! | logs, pairing code | service and task logs through the manager (json-file driver on every task) |
//! | events | a task poll every [`EVENT_POLL`] diffed per service ([`events`]) — Swarm has no task events |
//! | data | a node-local volume; the service is pinned (`node.id==…`) to the node of its first start |
//!
//! Why secrets carry the files (ARCHITECTURE.md "Swarm backend"): they reach
//! the task's node before its first start with no access to that node's
//! engine, are kept encrypted in the Raft log and on tmpfs on the node, and
//! are immutable — a changed file is a new secret and a service update,
//! which *is* the restart that makes the agent read it.

pub mod events;
pub mod janitor;
pub mod orchestrator;
pub mod raw;
pub mod spec;
pub mod tasks;

pub use janitor::DOCKER_SOCKET_LABEL;

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{NetworkCreateRequest, Service, ServiceSpec};
use bollard::query_parameters::{ListNetworksOptions, ListSecretsOptions, ListServicesOptions};
use tokio::time::Instant;

use self::raw::RawEngine;
use self::tasks::{current_task, observe, RawTask, ServiceView};
use super::{status_of, DockerError, DockerRuntime};
use crate::config::VolumeDriver;
use crate::orchestrator::{
    ContainerSpec, FileEntry, Incarnation, Labels, ObservedContainer, AGENT_ID_LABEL,
};

/// How often a wait re-reads a service's tasks.
const TASK_POLL: Duration = Duration::from_millis(250);
/// How long a start may take until its task runs (placement, volume,
/// secrets, container start on a node).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a task may stay unplaceable ("no suitable node") during a
/// start before the start fails with the engine's reason.
pub const UNPLACEABLE_GRACE: Duration = Duration::from_secs(5);
/// How long a service whose version moved under an update is re-read and
/// the update retried ("update out of sequence").
const UPDATE_ATTEMPTS: usize = 5;
/// How often the event stream lists tasks.
pub const EVENT_POLL: Duration = Duration::from_secs(2);

/// Handle on a swarm manager. Cheap to clone.
#[derive(Clone)]
pub struct SwarmRuntime {
    docker: DockerRuntime,
    raw: RawEngine,
    /// The manager's own node id: stats are read only for tasks on it.
    node_id: String,
    /// A volume driver every node shares: no pinning ([`Self::pin`]).
    volume_driver: Option<VolumeDriver>,
    /// The image of the volume janitor jobs ([`janitor`]).
    janitor_image: String,
}

impl SwarmRuntime {
    /// The swarm behind `docker` (connected to `host`, the same endpoint).
    ///
    /// Errors: the engine is not a swarm manager (a worker, or no swarm),
    /// or `host` is not a supported endpoint.
    pub async fn connect(
        docker: DockerRuntime,
        host: Option<&str>,
        volume_driver: Option<VolumeDriver>,
        janitor_image: String,
    ) -> Result<Self, DockerError> {
        let info = docker.client().info().await?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.control_available != Some(true) {
            return Err(DockerError::Other(format!(
                "orchestrator = swarm needs a swarm manager's engine; this one is {} \
                 (`docker swarm init`, or point docker_host at a manager)",
                swarm
                    .local_node_state
                    .map_or_else(|| "not in a swarm".to_owned(), |s| format!("{s:?}"))
            )));
        }
        Ok(SwarmRuntime {
            raw: RawEngine::new(host)?,
            node_id: swarm.node_id.unwrap_or_default(),
            volume_driver,
            janitor_image,
            docker,
        })
    }

    /// The Docker handle underneath (labels, manager-local images and
    /// volumes, stats of tasks on the manager).
    pub fn docker(&self) -> &DockerRuntime {
        &self.docker
    }

    /// The manager's node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The service `id_or_name`; `None` if there is none.
    pub(crate) async fn service(&self, id_or_name: &str) -> Result<Option<Service>, DockerError> {
        match self.docker.client().inspect_service(id_or_name, None).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Service `id` and its view; gone (or without a spec) is an error.
    async fn existing(&self, id: &str) -> Result<(Service, ServiceView), DockerError> {
        let service = self
            .service(id)
            .await?
            .ok_or_else(|| DockerError::Other(format!("service {id} is gone")))?;
        let view = ServiceView::of(&service)
            .ok_or_else(|| DockerError::Other(format!("service {id} has no spec")))?;
        Ok((service, view))
    }

    /// Every task of service `service_id` the manager still keeps.
    pub(crate) async fn tasks_of(&self, service_id: &str) -> Result<Vec<RawTask>, DockerError> {
        let tasks = self
            .raw
            .tasks(&serde_json::json!({ "service": [service_id] }))
            .await?;
        Ok(tasks
            .into_iter()
            .filter(|t| t.service_id == service_id)
            .collect())
    }

    /// Every task of every service.
    pub(crate) async fn all_tasks(&self) -> Result<Vec<RawTask>, DockerError> {
        self.raw.tasks(&serde_json::json!({})).await
    }

    /// Our services (label-filtered, not yet scoped to the installation).
    pub(crate) async fn our_services(&self) -> Result<Vec<Service>, DockerError> {
        let options = ListServicesOptions {
            filters: Some(HashMap::from([(
                "label".to_owned(),
                self.docker.label_filters(),
            )])),
            status: None,
        };
        Ok(self.docker.client().list_services(Some(options)).await?)
    }

    /// The observation of service `id_or_name`; `None` if there is none.
    pub async fn inspect(
        &self,
        id_or_name: &str,
    ) -> Result<Option<ObservedContainer>, DockerError> {
        let Some(service) = self.service(id_or_name).await? else {
            return Ok(None);
        };
        let Some(view) = ServiceView::of(&service) else {
            return Ok(None);
        };
        let tasks = self.tasks_of(&view.id).await?;
        Ok(Some(observe(&view, &tasks)))
    }

    /// Our services, each with its tasks: one service list and one task
    /// list, whatever the number of services.
    pub(crate) async fn services_with_tasks(
        &self,
    ) -> Result<Vec<(ServiceView, Vec<RawTask>)>, DockerError> {
        let services = self.our_services().await?;
        let mut by_service: HashMap<String, Vec<RawTask>> = HashMap::new();
        for t in self.all_tasks().await? {
            by_service.entry(t.service_id.clone()).or_default().push(t);
        }
        Ok(services
            .iter()
            .filter_map(ServiceView::of)
            .map(|v| {
                let tasks = by_service.remove(&v.id).unwrap_or_default();
                (v, tasks)
            })
            .collect())
    }

    /// Every service of ours, observed, sorted by name
    /// ([`Self::services_with_tasks`]).
    pub async fn list_managed(&self) -> Result<Vec<ObservedContainer>, DockerError> {
        let mut out: Vec<ObservedContainer> = self
            .services_with_tasks()
            .await?
            .iter()
            .map(|(v, tasks)| observe(v, tasks))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Creates the attachable overlay network `name` with our labels if no
    /// network of that name exists (an existing one is used as it is).
    pub async fn ensure_network(&self, name: &str) -> Result<(), DockerError> {
        let exists = |networks: &[bollard::models::Network]| {
            networks.iter().any(|n| n.name.as_deref() == Some(name))
        };
        let list = || {
            self.docker
                .client()
                .list_networks(Some(ListNetworksOptions {
                    filters: Some(HashMap::from([("name".to_owned(), vec![name.to_owned()])])),
                }))
        };
        if exists(&list().await?) {
            return Ok(());
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("overlay".to_owned()),
            attachable: Some(true),
            labels: Some(self.docker.ownership_labels().into_iter().collect()),
            ..Default::default()
        };
        match self.docker.client().create_network(request).await {
            Ok(_) => Ok(()),
            // Swarm-scoped names are unique: a concurrent create won.
            Err(e) if status_of(&e) == Some(409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The secrets for `files`, created where missing; returns their
    /// references for the service spec.
    async fn ensure_secrets(
        &self,
        agent_id: &str,
        files: &[FileEntry],
    ) -> Result<Vec<bollard::models::TaskSpecContainerSpecSecrets>, DockerError> {
        let labels = self.docker.ownership_labels();
        let mut refs = Vec::with_capacity(files.len());
        for file in files {
            let secret = spec::file_secret(agent_id, file, &labels);
            let id = match self
                .docker
                .client()
                .create_secret(secret.spec.clone())
                .await
            {
                Ok(created) => created.id,
                Err(e) if status_of(&e) == Some(409) => {
                    let existing = self.docker.client().inspect_secret(&secret.name).await?;
                    let theirs: Labels = existing
                        .spec
                        .as_ref()
                        .and_then(|s| s.labels.clone())
                        .unwrap_or_default()
                        .into_iter()
                        .collect();
                    if theirs.get(AGENT_ID_LABEL).map(String::as_str) != Some(agent_id) {
                        return Err(DockerError::NameConflict(secret.name));
                    }
                    existing.id.unwrap_or_default()
                }
                Err(e) => return Err(e.into()),
            };
            refs.push(spec::secret_reference(&secret, &id));
        }
        Ok(refs)
    }

    /// Removes agent `agent_id`'s secrets that no service references any
    /// more (`keep`: names still in use). Refusals (in use) are left to a
    /// later call.
    async fn remove_unused_secrets(&self, agent_id: &str, keep: &[String]) {
        let options = ListSecretsOptions {
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![format!("{AGENT_ID_LABEL}={agent_id}")],
            )])),
        };
        let Ok(secrets) = self.docker.client().list_secrets(Some(options)).await else {
            return;
        };
        for s in secrets {
            let name = s
                .spec
                .as_ref()
                .and_then(|sp| sp.name.clone())
                .unwrap_or_default();
            let ours = s
                .spec
                .as_ref()
                .and_then(|sp| sp.labels.as_ref())
                .map(|l| self.docker.is_owned(&l.clone().into_iter().collect()))
                .unwrap_or(false);
            if !ours || keep.contains(&name) {
                continue;
            }
            if let Some(id) = s.id {
                if let Err(e) = self.docker.client().delete_secret(&id).await {
                    tracing::debug!(secret = %name, error = %e, "secret not removed (yet)");
                }
            }
        }
    }

    /// Creates the service for `spec` with `files` as secrets (replicas 0),
    /// or adopts the service of that name carrying this agent's id: its
    /// spec is brought to `spec` (keeping its replicas and the node its
    /// data is pinned to). Returns the service id.
    pub async fn create(
        &self,
        spec: &ContainerSpec,
        files: &[FileEntry],
    ) -> Result<String, DockerError> {
        let refs = self.ensure_secrets(&spec.agent_id, files).await?;
        let keep: Vec<String> = refs.iter().filter_map(|r| r.secret_name.clone()).collect();
        let mut labelled = spec.clone();
        labelled.labels = self.docker.ownership_labels();
        labelled.labels.extend(spec.labels.clone());
        if let Some(existing) = self.service(&spec.name).await? {
            let view = ServiceView::of(&existing)
                .ok_or_else(|| DockerError::Other(format!("service {} has no spec", spec.name)))?;
            if view.agent_id() != Some(spec.agent_id.as_str())
                || !self.docker.is_owned(&view.labels)
            {
                return Err(DockerError::NameConflict(spec.name.clone()));
            }
            let pinned = view.labels.get(spec::NODE_LABEL).cloned();
            let body = spec::service_spec(
                &labelled,
                refs,
                pinned.as_deref(),
                view.replicas,
                self.volume_driver.as_ref(),
            );
            self.replace_spec(&view.id, &body).await?;
            self.remove_unused_secrets(&spec.agent_id, &keep).await;
            return Ok(view.id);
        }
        let pinned = match self.volume_driver {
            Some(_) => None,
            None => self.pinned_node(&spec.agent_id).await?,
        };
        let body = spec::service_spec(
            &labelled,
            refs,
            pinned.as_deref(),
            0,
            self.volume_driver.as_ref(),
        );
        let created = match self.docker.client().create_service(body, None).await {
            Ok(c) => c,
            Err(e) if status_of(&e) == Some(409) => {
                return Err(DockerError::NameConflict(spec.name.clone()))
            }
            Err(e) => return Err(e.into()),
        };
        self.remove_unused_secrets(&spec.agent_id, &keep).await;
        created
            .id
            .ok_or_else(|| DockerError::Other("the engine returned no service id".into()))
    }

    /// Replaces the files of service `id` (new secrets, one update: Swarm
    /// replaces the task, so a running agent restarts with them).
    pub async fn write_files(&self, id: &str, files: &[FileEntry]) -> Result<(), DockerError> {
        let (_, view) = self.existing(id).await?;
        let agent_id = view
            .agent_id()
            .ok_or_else(|| DockerError::Other(format!("service {id} carries no agent id")))?
            .to_owned();
        let refs = self.ensure_secrets(&agent_id, files).await?;
        let keep: Vec<String> = refs.iter().filter_map(|r| r.secret_name.clone()).collect();
        let refs = serde_json::to_value(&refs)
            .map_err(|e| DockerError::Other(format!("encoding secret references: {e}")))?;
        self.update(id, |spec| {
            spec["TaskTemplate"]["ContainerSpec"]["Secrets"] = refs.clone();
        })
        .await?;
        self.remove_unused_secrets(&agent_id, &keep).await;
        Ok(())
    }

    /// Applies `change` to service `id`'s current spec (the engine's JSON,
    /// [`RawEngine::service`]) and updates it, re-reading and retrying
    /// when its version moved meanwhile.
    pub(crate) async fn update(
        &self,
        id: &str,
        change: impl Fn(&mut serde_json::Value),
    ) -> Result<(), DockerError> {
        let mut last = None;
        for _ in 0..UPDATE_ATTEMPTS {
            let service = self.raw.service(id).await?;
            let version = service["Version"]["Index"]
                .as_u64()
                .ok_or_else(|| DockerError::Other(format!("service {id} has no version")))?;
            let mut spec = service["Spec"].clone();
            change(&mut spec);
            match self.raw.update_service(id, version, &spec).await {
                Ok(()) => return Ok(()),
                Err(e) if e.to_string().contains("out of sequence") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| DockerError::Other(format!("updating service {id}"))))
    }

    /// Replaces service `id`'s spec with `body` (bollard's model, as at
    /// create), keeping its version check.
    async fn replace_spec(&self, id: &str, body: &ServiceSpec) -> Result<(), DockerError> {
        let json = serde_json::to_value(body)
            .map_err(|e| DockerError::Other(format!("encoding a service spec: {e}")))?;
        self.update(id, |spec| *spec = json.clone()).await
    }

    /// Sets service `id`'s replicas to `n` (and, with `force`, asks Swarm
    /// to replace its task even though nothing else changed).
    async fn scale(&self, id: &str, n: i64, force: bool) -> Result<(), DockerError> {
        self.update(id, |spec| {
            spec["Mode"] = serde_json::json!({ "Replicated": { "Replicas": n } });
            if force {
                let next = spec["TaskTemplate"]["ForceUpdate"].as_u64().unwrap_or(0) + 1;
                spec["TaskTemplate"]["ForceUpdate"] = next.into();
            }
        })
        .await
    }

    /// Waits until service `id` has a running task other than those in
    /// `not`, and returns it. Fails at once when the task is rejected or
    /// failed with a reason, after [`UNPLACEABLE_GRACE`] when no node can
    /// take it (with the engine's reason), and after [`START_TIMEOUT`].
    async fn wait_running(&self, id: &str, not: &[String]) -> Result<RawTask, DockerError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut unplaceable_since: Option<Instant> = None;
        loop {
            let tasks = self.tasks_of(id).await?;
            let fresh: Vec<RawTask> = tasks
                .iter()
                .filter(|t| !not.contains(&t.id))
                .cloned()
                .collect();
            if let Some(t) = current_task(&fresh) {
                if t.is_running() && t.desired_state == "running" {
                    return Ok(t.clone());
                }
                match (t.status.state.as_str(), t.problem()) {
                    ("pending", Some(why)) => {
                        let since = *unplaceable_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= UNPLACEABLE_GRACE {
                            return Err(DockerError::Other(format!(
                                "the task cannot start: {why}"
                            )));
                        }
                    }
                    ("rejected" | "failed", Some(why)) => {
                        return Err(DockerError::Other(format!(
                            "the task failed to start: {why}"
                        )))
                    }
                    _ => unplaceable_since = None,
                }
            }
            if Instant::now() >= deadline {
                let state = current_task(&fresh)
                    .map(|t| {
                        format!(
                            "{} ({})",
                            t.status.state,
                            t.status.message.clone().unwrap_or_default()
                        )
                    })
                    .unwrap_or_else(|| "no task".to_owned());
                return Err(DockerError::Other(format!(
                    "service {id} has no running task after {START_TIMEOUT:?}: {state}"
                )));
            }
            tokio::time::sleep(TASK_POLL).await;
        }
    }

    /// Waits (up to `timeout`) until service `id` has no running task.
    async fn wait_stopped(&self, id: &str, timeout: Duration) -> Result<(), DockerError> {
        let deadline = Instant::now() + timeout;
        loop {
            let tasks = self.tasks_of(id).await?;
            if !tasks.iter().any(RawTask::is_running) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DockerError::Other(format!(
                    "service {id} still has a running task after {timeout:?}"
                )));
            }
            tokio::time::sleep(TASK_POLL).await;
        }
    }

    /// Starts service `id` (already running is success): replicas 1, then
    /// its task running; pins its data to that task's node at the first
    /// start. Returns the incarnation (the task's start).
    pub async fn start(&self, id: &str) -> Result<Incarnation, DockerError> {
        let tasks = self.tasks_of(id).await?;
        let running =
            current_task(&tasks).filter(|t| t.is_running() && t.desired_state == "running");
        let task = match running {
            Some(t) => t.clone(),
            None => {
                self.scale(id, 1, false).await?;
                self.wait_running(id, &[]).await?
            }
        };
        let task = self.pin(id, task).await?;
        incarnation(&task)
    }

    /// Stops (replicas 0) service `id` and waits until its task ended
    /// (Swarm sends SIGTERM, then SIGKILL after the spec's grace period).
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<(), DockerError> {
        match self.service(id).await? {
            None => Ok(()),
            Some(_) => {
                self.scale(id, 0, false).await?;
                self.wait_stopped(id, timeout + Duration::from_secs(5))
                    .await
            }
        }
    }

    /// Replaces service `id`'s task with a new one (a forced update:
    /// stop-first, so the two never run together) and returns its start.
    /// The old task's grace period is the service's own
    /// ([`spec::STOP_GRACE_NS`]), not a per-call timeout.
    pub async fn restart(&self, id: &str) -> Result<Incarnation, DockerError> {
        let old: Vec<String> = self.tasks_of(id).await?.into_iter().map(|t| t.id).collect();
        self.scale(id, 1, true).await?;
        let task = self.wait_running(id, &old).await?;
        let task = self.pin(id, task).await?;
        incarnation(&task)
    }

    /// At a service's first start (no [`spec::NODE_LABEL`] yet), pins it to
    /// the node its task landed on: its data volume is created there, and
    /// is local to that node. A placement-only update does not replace a
    /// task whose node still satisfies it; should Swarm replace it anyway,
    /// the new task is waited for and returned.
    async fn pin(&self, id: &str, task: RawTask) -> Result<RawTask, DockerError> {
        let (service, view) = self.existing(id).await?;
        if view.labels.contains_key(spec::NODE_LABEL) || self.volume_driver.is_some() {
            return Ok(task);
        }
        let Some(node) = task.node_id.clone().filter(|n| !n.is_empty()) else {
            return Ok(task);
        };
        self.update(id, |spec| {
            spec["Labels"][spec::NODE_LABEL] = node.clone().into();
            spec["TaskTemplate"]["Placement"]["Constraints"] =
                serde_json::json!([format!("node.id=={node}")]);
        })
        .await?;
        if let Some(agent_id) = view.agent_id() {
            self.record_pin(agent_id, &volume_of(&service), &node)
                .await?;
        }
        // Swarm decides on the update asynchronously: give it a moment,
        // then take whatever task runs now.
        tokio::time::sleep(TASK_POLL).await;
        let now = self.tasks_of(id).await?;
        match current_task(&now) {
            Some(t) if t.id == task.id && t.is_running() => Ok(t.clone()),
            _ => self.wait_running(id, &[]).await,
        }
    }

    /// The node agent `agent_id`'s data volume is pinned to, if recorded:
    /// our Swarm config `zcaas-pin-<agent id>` (the volume's record, made at
    /// its first start by [`Self::record_pin`]: it outlives a service
    /// replaced because its spec changed, and goes with the volume).
    pub(crate) async fn pinned_node(&self, agent_id: &str) -> Result<Option<String>, DockerError> {
        let config = match self
            .docker
            .client()
            .inspect_config(&pin_name(agent_id))
            .await
        {
            Ok(c) => c,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let labels: Labels = config
            .spec
            .and_then(|s| s.labels)
            .unwrap_or_default()
            .into_iter()
            .collect();
        if !self.docker.is_owned(&labels) {
            return Ok(None);
        }
        Ok(labels.get(spec::NODE_LABEL).cloned())
    }

    /// Records that agent `agent_id`'s volume `volume` lives on `node` (a
    /// Swarm config, see [`Self::pinned_node`]); already recorded is success.
    pub(crate) async fn record_pin(
        &self,
        agent_id: &str,
        volume: &str,
        node: &str,
    ) -> Result<(), DockerError> {
        let mut labels: HashMap<String, String> =
            self.docker.ownership_labels().into_iter().collect();
        labels.insert(AGENT_ID_LABEL.to_owned(), agent_id.to_owned());
        labels.insert(spec::NODE_LABEL.to_owned(), node.to_owned());
        labels.insert(spec::VOLUME_LABEL.to_owned(), volume.to_owned());
        let body = bollard::models::ConfigSpec {
            name: Some(pin_name(agent_id)),
            labels: Some(labels),
            data: Some(base64_of(node)),
            ..Default::default()
        };
        match self.docker.client().create_config(body).await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes agent `agent_id`'s pin record; gone is success.
    pub(crate) async fn forget_pin(&self, agent_id: &str) -> Result<(), DockerError> {
        match self
            .docker
            .client()
            .delete_config(&pin_name(agent_id))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes service `id_or_name` (gone is success), waits (bounded) for
    /// its task to end, and removes its agent's secrets.
    pub async fn remove(&self, id_or_name: &str) -> Result<(), DockerError> {
        let Some(service) = self.service(id_or_name).await? else {
            return Ok(());
        };
        let Some(view) = ServiceView::of(&service) else {
            return Ok(());
        };
        match self.docker.client().delete_service(&view.id).await {
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
        // A replacement created right after (a changed spec) must not run
        // beside this one's task (one bot token, one poller).
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let tasks = self.tasks_of(&view.id).await.unwrap_or_default();
            if tasks.iter().all(RawTask::is_terminal) {
                break;
            }
            tokio::time::sleep(TASK_POLL).await;
        }
        if let Some(agent_id) = view.agent_id() {
            self.remove_unused_secrets(agent_id, &[]).await;
        }
        Ok(())
    }
}

impl ServiceView {
    /// Value of [`AGENT_ID_LABEL`].
    pub fn agent_id(&self) -> Option<&str> {
        self.labels.get(AGENT_ID_LABEL).map(String::as_str)
    }
}

/// The data volume a service mounts (its first volume mount).
fn volume_of(service: &Service) -> String {
    service
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.mounts.as_ref())
        .and_then(|m| {
            m.iter()
                .find(|m| m.typ == Some(bollard::models::MountType::VOLUME))
                .and_then(|m| m.source.clone())
        })
        .unwrap_or_default()
}

/// `zcaas-pin-<agent id>`.
fn pin_name(agent_id: &str) -> String {
    format!("zcaas-pin-{agent_id}")
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// The incarnation a running task is.
fn incarnation(task: &RawTask) -> Result<Incarnation, DockerError> {
    let started_at = task.status_at().ok_or_else(|| {
        DockerError::Other(format!("task {} runs but has no status time", task.id))
    })?;
    Ok(Incarnation { started_at })
}
