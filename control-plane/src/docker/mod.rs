//! The container runtime: everything zcaas asks of the Docker Engine, through
//! bollard. The engine here may be old (API 1.41), so the client negotiates
//! its API version on connect.
//!
//! Architecture invariant: everything created here carries
//! [`MANAGED_LABEL`]`=true` (plus the runtime's extra labels), and nothing
//! without those labels is ever started, stopped, removed or modified.
//!
//! The neutral types (observed state, spec, log lines, ownership) are
//! [`crate::orchestrator`]'s, re-exported here; [`orchestrator`] implements
//! [`crate::orchestrator::Orchestrator`] for [`DockerRuntime`].
//!
//! Map: this file holds the handle and the container lifecycle; [`observe`]
//! reads state (inspect, list, logs, stats, events); [`cleanup`] removes
//! volumes and everything carrying a label; [`image`] builds images from
//! in-memory contexts; [`spec`], [`archive`] and [`logs`] are the pure parts.

pub mod archive;
pub mod cgroup;
pub mod cleanup;
pub mod image;
pub mod logs;
pub mod observe;
pub mod orchestrator;
pub mod spec;
pub mod swarm;

use bollard::models::{
    EndpointSettings, Ipam, NetworkConnectRequest, NetworkCreateRequest, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListNetworksOptions, RestartContainerOptions, StopContainerOptions,
    UploadToContainerOptions,
};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

pub use archive::FileEntry;
pub use spec::ContainerSpec;

pub use crate::orchestrator::{
    ownership_of, router_rule, ContainerEvent, ContainerStats, ImageInfo, LogLine,
    ObservedContainer, Ownership, AGENT_ID_LABEL, AGENT_PORT, DATA_DIR, INSTALLATION_LABEL,
    MANAGED_LABEL, SPEC_HASH_LABEL,
};

/// Errors from the container runtime.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("docker: {0}")]
    Api(#[from] bollard::errors::Error),
    #[error("container name {0} is taken by a container that is not ours")]
    NameConflict(String),
    #[error("image build failed: {0}")]
    Build(String),
    #[error("{0}")]
    Other(String),
}

impl DockerError {
    /// The engine's HTTP status, when the engine answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            DockerError::Api(e) => status_of(e),
            _ => None,
        }
    }

    /// Whether the engine said the object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// The HTTP status of an engine error response, if it is one.
pub(crate) fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Handle on the Docker Engine. Cheap to clone.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: bollard::Docker,
    /// Added to every object we create, on top of `MANAGED_LABEL=true`
    /// (tests add `io.zcaas.test=<prefix>` to clean up by label).
    extra_labels: BTreeMap<String, String>,
    /// This installation's id ([`INSTALLATION_LABEL`]); `None` for a handle
    /// not scoped to an installation (test cleanup, image builds).
    installation: Option<String>,
    /// Containers' cgroup readings (stats without asking the engine), shared
    /// by every clone.
    cgroup: std::sync::Arc<cgroup::CgroupStats>,
}

/// Serializes network creation in this process: the engine does not enforce
/// unique network names, so two concurrent creates could both succeed.
static NETWORK_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl DockerRuntime {
    /// Connects to the local engine (`DOCKER_HOST` or the unix socket) and
    /// negotiates the API version.
    pub async fn connect(extra_labels: BTreeMap<String, String>) -> Result<Self, DockerError> {
        Self::connect_to(None, extra_labels).await
    }

    /// Connects to the engine at `host` (`unix:///path`, `tcp://host:port`
    /// or `http://host:port`; `None`: as [`Self::connect`]) and negotiates
    /// the API version.
    ///
    /// Errors: a scheme other than those, or the engine does not answer.
    pub async fn connect_to(
        host: Option<&str>,
        extra_labels: BTreeMap<String, String>,
    ) -> Result<Self, DockerError> {
        const TIMEOUT_SECS: u64 = 120;
        let docker = match host {
            None => bollard::Docker::connect_with_local_defaults()?,
            Some(h) if h.starts_with("unix://") => {
                bollard::Docker::connect_with_unix(h, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)?
            }
            Some(h) if h.starts_with("tcp://") || h.starts_with("http://") => {
                bollard::Docker::connect_with_http(h, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)?
            }
            Some(h) => {
                return Err(DockerError::Other(format!(
                    "docker_host {h:?}: only unix://, tcp:// and http:// endpoints are supported"
                )))
            }
        };
        let docker = docker.negotiate_version().await?;
        Ok(DockerRuntime {
            docker,
            extra_labels,
            installation: None,
            cgroup: std::sync::Arc::new(cgroup::CgroupStats::new(cgroup::CGROUP_ROOT)),
        })
    }

    /// The same handle scoped to installation `id`: everything it creates
    /// carries [`INSTALLATION_LABEL`]`=id`, and it acts only on objects of
    /// that installation and on legacy (unlabelled) ones ([`Ownership`]).
    pub fn with_installation(mut self, id: impl Into<String>) -> Self {
        self.installation = Some(id.into());
        self
    }

    /// This handle's installation id, if scoped.
    pub fn installation(&self) -> Option<&str> {
        self.installation.as_deref()
    }

    /// The labels put on everything we create: ours, the extra ones and the
    /// installation id.
    pub fn ownership_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.base_labels();
        if let Some(id) = &self.installation {
            labels.insert(INSTALLATION_LABEL.to_owned(), id.clone());
        }
        labels
    }

    /// `io.zcaas.managed=true` plus the extra labels: what every object of
    /// any installation of ours carries.
    fn base_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.extra_labels.clone();
        labels.insert(MANAGED_LABEL.to_owned(), "true".to_owned());
        labels
    }

    /// Whose an object with `labels` is, from this installation's view.
    pub fn ownership(&self, labels: &BTreeMap<String, String>) -> Ownership {
        ownership_of(&self.base_labels(), self.installation.as_deref(), labels)
    }

    /// Whether this installation may act on an object with `labels` that
    /// one of its rows names: [`Ownership::may_act`].
    pub fn is_owned(&self, labels: &BTreeMap<String, String>) -> bool {
        self.ownership(labels).may_act()
    }

    /// `["io.zcaas.managed=true", …]`, the engine's `label` filter values:
    /// our label and the extra labels, not the installation (the engine ANDs
    /// label filters, and legacy objects carry no installation id), so lists
    /// and events are scoped with [`Self::ownership`] afterwards.
    pub(crate) fn label_filters(&self) -> Vec<String> {
        self.base_labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    fn labels_map(&self) -> HashMap<String, String> {
        self.ownership_labels().into_iter().collect()
    }

    /// The underlying bollard client, for callers that need an API not wrapped here.
    pub fn client(&self) -> &bollard::Docker {
        &self.docker
    }

    /// `GET /_ping`.
    pub async fn ping(&self) -> Result<(), DockerError> {
        self.docker.ping().await?;
        Ok(())
    }

    /// Creates the bridge network `name` with our labels if it does not exist.
    /// An existing network of that name is used as it is (not modified).
    ///
    /// Looked up with a filtered `GET /networks`, not an inspect: a
    /// network's inspect carries every endpoint on it (≈ 300 KB for 1 000
    /// agents), and this runs at every deploy.
    ///
    /// One network per name: the create body has no `CheckDuplicate` any
    /// more (deprecated in API 1.44, from which the engine always refuses a
    /// taken name, and gone from bollard's models), so an older engine
    /// (20.10, API 1.41) creates a second network of a taken name.
    /// `NETWORK_LOCK` covers this process. For processes racing past the
    /// lookup (HA replicas starting together), the same-named networks are
    /// listed again after a create, and ours is removed unless it is the
    /// oldest (`network_to_keep`), which every racer that sees both keeps.
    /// Two creates the engine runs at the same instant may still each see
    /// only their own.
    pub async fn ensure_network(&self, name: &str) -> Result<(), DockerError> {
        let _guard = NETWORK_LOCK.lock().await;
        if !self.networks_named(name).await?.is_empty() {
            return Ok(());
        }
        // The body 0.18 sent, `CheckDuplicate` aside.
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            internal: Some(false),
            attachable: Some(false),
            ingress: Some(false),
            ipam: Some(Ipam::default()),
            enable_ipv6: Some(false),
            options: Some(HashMap::new()),
            labels: Some(self.labels_map()),
            ..Default::default()
        };
        let created = match self.docker.create_network(request).await {
            Ok(created) => created.id,
            // An engine that checks names (API 1.44 on) refuses a taken one.
            Err(e) if status_of(&e) == Some(409) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let same_name = self.networks_named(name).await?;
        match network_to_keep(&same_name) {
            Some(keep) if keep != created => {
                tracing::info!(network = name, duplicate = %created, kept = keep,
                    "removing the network just created: another of that name was made first");
                match self.docker.remove_network(&created).await {
                    Err(e) if status_of(&e) != Some(404) => Err(e.into()),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// The networks named exactly `name` (the engine's `name` filter also
    /// matches substrings), as `(id, created)`.
    async fn networks_named(&self, name: &str) -> Result<Vec<NetworkAge>, DockerError> {
        let filters = HashMap::from([("name".to_owned(), vec![name.to_owned()])]);
        let found = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(filters),
            }))
            .await?;
        Ok(found
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| {
                let created = n.created.as_deref().and_then(observe::parse_docker_time);
                Some((n.id?, created))
            })
            .collect())
    }

    /// Connects the container `container` (name or id; not necessarily
    /// ours: Traefik, zcaas's own) to each of `networks` it is not attached
    /// to yet, and returns those it connected. One inspect of the
    /// container, then one connect per missing network; a connect the
    /// engine refuses because the endpoint exists already (a concurrent
    /// attach) counts as attached. A 404 (no such container or network)
    /// is returned as the error.
    pub async fn attach_to_networks(
        &self,
        container: &str,
        networks: &[String],
    ) -> Result<Vec<String>, DockerError> {
        let inspect = self.docker.inspect_container(container, None).await?;
        let attached: std::collections::HashSet<String> = inspect
            .network_settings
            .and_then(|n| n.networks)
            .map(|n| n.into_keys().collect())
            .unwrap_or_default();
        let mut connected = Vec::new();
        for network in networks.iter().filter(|n| !attached.contains(*n)) {
            let request = NetworkConnectRequest {
                container: container.to_owned(),
                endpoint_config: Some(EndpointSettings::default()),
            };
            match self.docker.connect_network(network, request).await {
                Ok(()) => connected.push(network.clone()),
                Err(e) if matches!(status_of(&e), Some(403) | Some(409)) => {
                    tracing::debug!(container, network = %network, error = %e,
                        "already attached to the network");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(connected)
    }

    /// Whether `image` (a tag or id) is present in the local engine.
    pub async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The id and labels of `image` (a tag or id); `None` if absent.
    pub async fn image_labels(&self, image: &str) -> Result<Option<ImageInfo>, DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(inspect) => Ok(Some(ImageInfo {
                id: inspect.id.unwrap_or_else(|| image.to_owned()),
                labels: inspect
                    .config
                    .and_then(|c| c.labels)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            })),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the container (not started) and returns its id. If a container
    /// with that name already exists and carries this agent's id label, it is
    /// adopted (its id returned); a name held by anything else is
    /// [`DockerError::NameConflict`].
    ///
    /// First creates (or adopts) the named volume `spec.volume` with our
    /// labels and the agent id; a volume of that name belonging to anything
    /// else is a [`DockerError::NameConflict`] too.
    pub async fn create_container(&self, spec: &ContainerSpec) -> Result<String, DockerError> {
        self.ensure_volume(&spec.volume, &spec.agent_id).await?;
        match self
            .docker
            .create_container(Some(create_options(spec)), spec::container_config(spec))
            .await
        {
            Ok(created) => Ok(created.id),
            Err(e) if status_of(&e) == Some(409) => {
                let existing = self.inspect(&spec.name).await?;
                match existing {
                    Some(c)
                        if self.is_owned(&c.labels)
                            && c.agent_id.as_deref() == Some(spec.agent_id.as_str()) =>
                    {
                        tracing::info!(container = %c.id, agent_id = %spec.agent_id,
                            "adopting existing container");
                        Ok(c.id)
                    }
                    // Removed between the conflict and the inspect: one more try.
                    None => Ok(self
                        .docker
                        .create_container(Some(create_options(spec)), spec::container_config(spec))
                        .await?
                        .id),
                    Some(_) => Err(DockerError::NameConflict(spec.name.clone())),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the named volume (idempotent) and checks it is this agent's.
    async fn ensure_volume(&self, name: &str, agent_id: &str) -> Result<(), DockerError> {
        let mut labels = self.labels_map();
        labels.insert(AGENT_ID_LABEL.to_owned(), agent_id.to_owned());
        let volume = self
            .docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_owned()),
                driver: Some("local".to_owned()),
                driver_opts: Some(HashMap::new()),
                labels: Some(labels),
                ..Default::default()
            })
            .await?;
        let labels: BTreeMap<String, String> = volume.labels.into_iter().collect();
        if self.is_owned(&labels)
            && labels.get(AGENT_ID_LABEL).map(String::as_str) == Some(agent_id)
        {
            Ok(())
        } else {
            Err(DockerError::NameConflict(name.to_owned()))
        }
    }

    /// Inspects `id` and checks it carries our labels. `Ok(None)` if gone;
    /// an error if it exists but is not ours.
    async fn owned(&self, id: &str) -> Result<Option<ObservedContainer>, DockerError> {
        match self.inspect(id).await? {
            Some(c) if self.is_owned(&c.labels) => Ok(Some(c)),
            Some(_) => Err(DockerError::Other(format!(
                "container {id} is not managed by zcaas"
            ))),
            None => Ok(None),
        }
    }

    /// Uploads `files` into [`DATA_DIR`] of container `id` with the archive API
    /// (works on a created, not yet started container). Files and their
    /// parent directories are owned by the agent user (65534:65534) with the
    /// entries' modes.
    pub async fn upload_files(&self, id: &str, files: &[FileEntry]) -> Result<(), DockerError> {
        if self.owned(id).await?.is_none() {
            return Err(DockerError::Other(format!("container {id} does not exist")));
        }
        let tar = archive::build_tar(files, spec::AGENT_UID, spec::AGENT_GID)
            .map_err(|e| DockerError::Other(e.to_string()))?;
        let options = UploadToContainerOptions {
            path: DATA_DIR.to_owned(),
            no_overwrite_dir_non_dir: Some("true".to_owned()),
            ..Default::default()
        };
        self.docker
            .upload_to_container(id, Some(options), bollard::body_full(tar.into()))
            .await?;
        Ok(())
    }

    /// Starts the container; already running is success.
    pub async fn start(&self, id: &str) -> Result<(), DockerError> {
        if self.owned(id).await?.is_none() {
            return Err(DockerError::Other(format!("container {id} does not exist")));
        }
        match self.docker.start_container(id, None).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(304) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Stops the container (SIGTERM, then SIGKILL after `timeout`); already
    /// stopped or gone is success.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<(), DockerError> {
        if self.owned(id).await?.is_none() {
            return Ok(());
        }
        let options = StopContainerOptions {
            t: Some(timeout_secs(timeout)),
            ..Default::default()
        };
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(304) | Some(404)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Restarts the container (stop with `timeout`, then start). A container
    /// that is gone is an error (404).
    pub async fn restart(&self, id: &str, timeout: Duration) -> Result<(), DockerError> {
        if self.owned(id).await?.is_none() {
            return Err(DockerError::Other(format!("container {id} does not exist")));
        }
        let options = RestartContainerOptions {
            t: Some(timeout_secs(timeout)),
            ..Default::default()
        };
        self.docker.restart_container(id, Some(options)).await?;
        Ok(())
    }
}

/// A network's id and creation time, as [`network_to_keep`] compares them.
type NetworkAge = (String, Option<chrono::DateTime<chrono::Utc>>);

/// Of several networks of one name, the one to keep: the oldest (one
/// without a creation time counts as newest), ties broken by id.
fn network_to_keep(networks: &[NetworkAge]) -> Option<&str> {
    networks
        .iter()
        .min_by(|(a_id, a_at), (b_id, b_at)| {
            (a_at.is_none(), a_at, a_id).cmp(&(b_at.is_none(), b_at, b_id))
        })
        .map(|(id, _)| id.as_str())
}

/// The query of a container create: the container's name (no platform:
/// bollard sends an empty `platform`, which the engine ignores).
fn create_options(spec: &ContainerSpec) -> CreateContainerOptions {
    CreateContainerOptions {
        name: Some(spec.name.clone()),
        ..Default::default()
    }
}

/// A stop timeout in whole seconds, as the engine's `t` (an `i32`);
/// longer ones are capped.
fn timeout_secs(timeout: Duration) -> i32 {
    i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_oldest_network_of_a_name_is_kept() {
        let at = |s: i64| chrono::Utc.timestamp_opt(s, 0).single();
        let networks: Vec<NetworkAge> = vec![
            ("b2".into(), at(20)),
            ("a1".into(), None),
            ("c3".into(), at(10)),
            ("a0".into(), at(10)),
        ];
        assert_eq!(network_to_keep(&networks), Some("a0"));
        assert_eq!(network_to_keep(&networks[..2]), Some("b2"));
        assert_eq!(network_to_keep(&networks[1..2]), Some("a1"));
        assert_eq!(network_to_keep(&[]), None);
    }

    #[test]
    fn stop_timeouts_fit_the_engine_field() {
        assert_eq!(timeout_secs(Duration::from_secs(10)), 10);
        assert_eq!(timeout_secs(Duration::from_millis(1500)), 1);
        assert_eq!(timeout_secs(Duration::from_secs(u64::MAX)), i32::MAX);
    }
}
