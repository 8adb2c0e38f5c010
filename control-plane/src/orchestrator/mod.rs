//! The orchestrator seam: what the reconciler and the HTTP layer ask of the
//! engine that runs agent workloads, in neutral types (STYLE.md "Seams";
//! Plane's `drone/runtime` `Runtime` trait). One implementation per engine:
//! [`crate::docker::DockerRuntime`] today; [`fake::FakeOrchestrator`] keeps
//! everything in memory so the reconciler's pass is tested without an engine.
//!
//! A *workload* is one agent's container; an *incarnation* is one start of
//! it ([`Incarnation`]): the instant after which its log lines (and so its
//! pairing code) belong to it.
//!
//! Architecture invariant: everything an orchestrator creates carries
//! [`MANAGED_LABEL`]`=true` (plus the extra labels and the installation id),
//! and nothing without them is ever started, stopped, removed or modified.

pub mod fake;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

/// Ownership label on every container, volume, network and image we create.
pub const MANAGED_LABEL: &str = "io.zcaas.managed";
/// The agent id a container or volume belongs to.
pub const AGENT_ID_LABEL: &str = "io.zcaas.agent-id";
/// Hash of the spec the container was created from.
pub const SPEC_HASH_LABEL: &str = "io.zcaas.spec-hash";
/// The installation (one zcaas store) an object belongs to: several
/// installations may share one engine, and each only ever stops, removes or
/// changes its own objects (and unlabelled ones its rows name).
pub const INSTALLATION_LABEL: &str = "io.zcaas.installation";
/// The network Traefik reaches an agent's workload on (Traefik's own
/// label): the agent's agents' network, so also how the reconciler tells
/// that a workload was made for the network its agent holds.
pub const TRAEFIK_NETWORK_LABEL: &str = "traefik.docker.network";
/// [`TRAEFIK_NETWORK_LABEL`] as Traefik's `swarm` provider spells it: on
/// a Swarm service instead.
pub const TRAEFIK_SWARM_NETWORK_LABEL: &str = "traefik.swarm.network";
/// The port the agent gateway listens on inside its container.
pub const AGENT_PORT: u16 = 42617;
/// Where the agent's data volume is mounted; injected files are relative to it.
pub const DATA_DIR: &str = "/zeroclaw-data";

/// Labels of an object, sorted.
pub type Labels = BTreeMap<String, String>;

/// Whose an object is, seen from one installation ([`Orchestrator::ownership`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Carries our labels and this installation's id (or the handle is not
    /// scoped to an installation).
    Ours,
    /// Carries our labels but no installation id: created before
    /// installation ids existed. Adopted by the installation whose rows name
    /// it; never removed by a sweep.
    Legacy,
    /// Carries another installation's id: never stopped, removed or changed.
    Foreign,
    /// Lacks our ownership labels: never touched.
    NotManaged,
}

impl Ownership {
    /// Whether this installation may act on the object when one of its rows
    /// names it (ours, or a legacy object).
    pub fn may_act(self) -> bool {
        matches!(self, Ownership::Ours | Ownership::Legacy)
    }
}

/// Classifies an object's `labels` for an installation whose objects all
/// carry `base` (our label and the extra labels) and, when scoped,
/// [`INSTALLATION_LABEL`]`=installation` (pure).
pub fn ownership_of(base: &Labels, installation: Option<&str>, labels: &Labels) -> Ownership {
    if !base.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return Ownership::NotManaged;
    }
    match (installation, labels.get(INSTALLATION_LABEL)) {
        (None, _) => Ownership::Ours,
        (Some(mine), Some(theirs)) if mine == theirs => Ownership::Ours,
        (Some(_), Some(_)) => Ownership::Foreign,
        (Some(_), None) => Ownership::Legacy,
    }
}

/// What the engine says about one workload right now (observed state).
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedContainer {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub labels: Labels,
    /// Value of [`AGENT_ID_LABEL`], if any.
    pub agent_id: Option<String>,
    /// Value of [`SPEC_HASH_LABEL`], if any.
    pub spec_hash: Option<String>,
    /// Value of [`INSTALLATION_LABEL`], if any.
    pub installation: Option<String>,
    /// When the workload was created; `None` if the engine did not say.
    pub created_at: Option<DateTime<Utc>>,
    /// The engine's state word: created, running, restarting, exited, dead, …
    pub state: String,
    pub running: bool,
    /// When the current (or last) incarnation started, with nanoseconds;
    /// `None` if never started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the last incarnation finished; `None` if it never finished.
    pub finished_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub restart_count: i64,
    /// The host port bound to [`AGENT_PORT`], if published.
    pub host_port: Option<u16>,
    /// The workload's IPv4 address on each network it is attached to
    /// (network name → address), as the engine reports it now.
    pub ip_addresses: BTreeMap<String, String>,
    /// The node the current incarnation is placed on (Swarm: the task's
    /// node id); `None` on a single engine.
    pub node: Option<String>,
    /// Why a workload that should run does not, in the engine's words
    /// (Swarm: a task's `Status.Err`, e.g. "no suitable node …"); `None`
    /// when it runs or the engine says nothing.
    pub status_message: Option<String>,
}

impl ObservedContainer {
    /// How the workload's gateway can be reached, as observed now.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            host_port: self.host_port,
            ip_addresses: self.ip_addresses.clone(),
        }
    }
}

/// What [`crate::addressing`] needs to reach a workload's gateway.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// The host port published for [`AGENT_PORT`], if any.
    pub host_port: Option<u16>,
    /// Network name → the workload's address on it, as reported now.
    pub ip_addresses: BTreeMap<String, String>,
}

/// One start of a workload: its pairing code and token belong to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incarnation {
    /// The engine's start instant (`State.StartedAt` for Docker).
    pub started_at: DateTime<Utc>,
}

/// One log line of a workload, with the engine's timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub at: Option<DateTime<Utc>>,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    pub text: String,
}

/// Live resource use of one workload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContainerStats {
    /// Percent of one CPU (100.0 = one full core), as `docker stats` computes it.
    pub cpu_percent: f64,
    /// Memory in MiB (usage minus page cache).
    pub memory_mb: f64,
}

/// Resource use of one workload as a periodic poll reads it
/// ([`Orchestrator::poll_stats`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolledStats {
    /// Memory in MiB (usage minus page cache).
    pub memory_mb: f64,
    /// Percent of one CPU since the previous poll of this workload; `None`
    /// without one to compare with (its first poll, or a new start).
    pub cpu_percent: Option<f64>,
}

/// A workload as one listing of many reports it
/// ([`Orchestrator::list_workloads`], [`Orchestrator::running_endpoints`]):
/// what the engine keeps in memory, without the per-workload details of an
/// inspect (no start or finish time, exit code, restart count).
#[derive(Debug, Clone, PartialEq)]
pub struct ListedWorkload {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    /// Value of [`AGENT_ID_LABEL`].
    pub agent_id: Option<String>,
    pub labels: Labels,
    /// The engine's state word, as [`ObservedContainer::state`].
    pub state: String,
    /// When the workload was created; `None` if the engine did not say.
    pub created_at: Option<DateTime<Utc>>,
    pub endpoint: Endpoint,
}

impl From<&ObservedContainer> for ListedWorkload {
    fn from(c: &ObservedContainer) -> Self {
        ListedWorkload {
            id: c.id.clone(),
            name: c.name.clone(),
            agent_id: c.agent_id.clone(),
            labels: c.labels.clone(),
            state: c.state.clone(),
            created_at: c.created_at,
            endpoint: c.endpoint(),
        }
    }
}

/// An engine event about one of our workloads.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerEvent {
    pub container_id: String,
    /// `start`, `die`, `oom`, `destroy`, `restart`, …
    pub action: String,
    pub agent_id: Option<String>,
    /// Value of [`INSTALLATION_LABEL`] on the workload, if any.
    pub installation: Option<String>,
    pub exit_code: Option<i64>,
    pub at: Option<DateTime<Utc>>,
}

/// The Traefik router rule of an agent: its host, and only the public
/// `paths` — `Path` for an exact path, `PathPrefix` for one ending in `*`
/// (Traefik v3 rule syntax,
/// <https://doc.traefik.io/traefik/routing/routers/#rule>):
/// ``Host(`ada.example.com`) && (Path(`/webhook`) || Path(`/health`))``.
/// `host` is `<slug>.<domain>` (both validated) and every path was checked
/// by [`crate::config::parse_public_path`], so nothing here can close a
/// backtick.
pub fn router_rule(host: &str, paths: &[String]) -> String {
    let matchers: Vec<String> = paths
        .iter()
        .map(|p| match p.strip_suffix('*') {
            Some(prefix) => format!("PathPrefix(`{prefix}`)"),
            None => format!("Path(`{p}`)"),
        })
        .collect();
    format!("Host(`{host}`) && ({})", matchers.join(" || "))
}

/// Everything that shapes one agent's workload.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub agent_id: String,
    /// Workload name, `zeroclaw-<slug>`.
    pub name: String,
    /// The slug (a DNS label), used for the Traefik router name and host.
    pub slug: String,
    pub image: String,
    /// The agents' network the workload joins (the agent's own,
    /// [`crate::model::Agent::network_or`]); Traefik reaches it there.
    pub network: String,
    /// Host port bound on 127.0.0.1 to the agent's 42617; `None` publishes
    /// nothing (`network` address mode: no `docker-proxy` per agent).
    pub host_port: Option<u16>,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    /// The container command (the image's entrypoint is kept), e.g.
    /// `["daemon"]`: the runtime profile's.
    pub command: Vec<String>,
    /// Extra `KEY=value` environment (never a secret): the runtime
    /// profile's gateway overrides.
    pub env: Vec<String>,
    /// Named volume mounted at `/zeroclaw-data`.
    pub volume: String,
    /// `<slug>.<domain>`.
    pub host: String,
    pub traefik_entrypoint: String,
    /// Certificate resolver named in the router's labels; empty: none.
    pub traefik_cert_resolver: String,
    /// The paths routed from the public URL ([`crate::config::Config::public_paths`]:
    /// exact, or a prefix ending in `*`), already checked.
    pub public_paths: Vec<String>,
    pub spec_hash: String,
    /// Ownership labels (ours plus the runtime's extra labels).
    pub labels: Labels,
}

/// What the engine says about one image ([`Orchestrator::image_labels`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The image id (`sha256:…` for Docker): a digest of its content, so
    /// whatever is read from it never changes for that id.
    pub id: String,
    /// The image's labels (`LABEL` lines of its Dockerfile, build labels).
    pub labels: Labels,
}

/// One file to inject, relative to the data volume (`/zeroclaw-data`).
#[derive(Debug, Clone, PartialEq)]
pub struct FileEntry {
    /// Relative path, e.g. `.zeroclaw/config.toml` or `workspace/IDENTITY.md`.
    pub path: String,
    pub contents: Vec<u8>,
    /// Unix mode, e.g. `0o600`.
    pub mode: u32,
}

/// A boxed error of an engine.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of an orchestrator. Engine errors keep their own message (and
/// cause chain): the variants only say what the callers decide on.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// The engine says the object does not exist.
    #[error(transparent)]
    NotFound(BoxError),
    /// A name is held by an object that is not ours (or not this agent's).
    #[error("name {0} is taken by an object that is not ours")]
    NameConflict(String),
    /// Any other engine failure.
    #[error(transparent)]
    Engine(BoxError),
    /// The engine cannot show this from where the control plane asks
    /// (Swarm: stats of a task on another node); the text says why.
    #[error("{0}")]
    NotVisible(String),
    #[error("{0}")]
    Other(String),
}

impl OrchestratorError {
    /// Whether the engine said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, OrchestratorError::NotFound(_))
    }
}

/// Result of an orchestrator call.
pub type Result<T, E = OrchestratorError> = std::result::Result<T, E>;

/// The engine that runs agent workloads, as the reconciler and the HTTP layer
/// see it. Object-safe: held as `Arc<dyn Orchestrator>`.
///
/// Guarantees every implementation keeps: creating adopts what exists (a
/// workload of that name carrying this agent's id is returned, not an
/// error); removing what is gone is success; nothing whose labels are not
/// ours ([`Orchestrator::ownership`]) is started, stopped, removed or
/// changed; lists and events cover only objects carrying our labels.
#[async_trait]
pub trait Orchestrator: Send + Sync + 'static {
    /// This handle's installation id, if scoped.
    fn installation(&self) -> Option<&str>;
    /// The labels put on everything it creates.
    fn ownership_labels(&self) -> Labels;
    /// Whose an object with `labels` is, from this installation's view.
    fn ownership(&self, labels: &Labels) -> Ownership;
    /// Whether this installation may act on an object with `labels` that
    /// one of its rows names: [`Ownership::may_act`].
    fn is_owned(&self, labels: &Labels) -> bool {
        self.ownership(labels).may_act()
    }

    /// Whether the engine answers.
    async fn ping(&self) -> Result<()>;
    /// Creates the agents' network `name` if it does not exist.
    async fn ensure_network(&self, name: &str) -> Result<()>;
    /// Connects the container `container` (a name or id: Traefik, zcaas's
    /// own container — not ours, named by the operator in
    /// `network_attach`) to each of `networks` it is not attached to yet,
    /// and returns those it connected (idempotent: already attached is no
    /// change). The one change zcaas makes to a container it does not own,
    /// and only the one the operator asked for.
    ///
    /// Errors: [`OrchestratorError::NotFound`] when there is no such
    /// container (or no such network).
    async fn attach_to_networks(&self, container: &str, networks: &[String])
        -> Result<Vec<String>>;
    /// Whether `image` is present.
    async fn image_exists(&self, image: &str) -> Result<bool>;
    /// The id and labels of `image` (a tag or id); `None` if it is not
    /// present. Read to choose the runtime profile
    /// ([`crate::runtime_profile`]).
    async fn image_labels(&self, image: &str) -> Result<Option<ImageInfo>>;
    /// Builds the agent runtime image `tag` from the binary at `binary`.
    async fn build_agent_image(&self, tag: &str, binary: &Path) -> Result<()>;

    /// The workload with that id or name; `None` if it does not exist.
    async fn inspect(&self, id_or_name: &str) -> Result<Option<ObservedContainer>>;
    /// Creates the workload (not started) with its data volume and `files`
    /// in it, and returns its id; adopts an existing workload of that name
    /// carrying this agent's id (its files are written again).
    async fn create(&self, spec: &ContainerSpec, files: &[FileEntry]) -> Result<String>;
    /// Writes `files` into the existing workload's data volume again (as
    /// [`Orchestrator::create`] does), replacing what the runtime saved
    /// there; a running workload reads them at its next start.
    async fn write_files(&self, id: &str, files: &[FileEntry]) -> Result<()>;
    /// Starts the workload (already running is success) and returns the
    /// incarnation it runs as.
    async fn start(&self, id: &str) -> Result<Incarnation>;
    /// Stops the workload (SIGTERM, then SIGKILL after `timeout`); stopped
    /// or gone is success.
    async fn stop(&self, id: &str, timeout: Duration) -> Result<()>;
    /// Stops (with `timeout`) and starts the workload; returns the new
    /// incarnation. A workload that is gone is an error.
    async fn restart(&self, id: &str, timeout: Duration) -> Result<Incarnation>;
    /// Removes the workload (forced); gone is success.
    async fn remove(&self, id_or_name: &str) -> Result<()>;
    /// Removes the agent's data volume `name` if it is ours and carries
    /// [`AGENT_ID_LABEL`]`=agent_id`; gone is success.
    async fn remove_agent_volume(&self, name: &str, agent_id: &str) -> Result<()>;

    /// The last `lines` log lines, oldest first.
    async fn logs_tail(&self, id: &str, lines: usize) -> Result<Vec<LogLine>>;
    /// Follows the logs from the last `tail` lines on; ends when the
    /// incarnation ends.
    fn logs_follow(&self, id: &str, tail: usize) -> BoxStream<'static, Result<LogLine>>;
    /// Follows the logs from `since` on (the engine may hand back lines of
    /// the same second before it: filter on [`LogLine::at`]); ends when the
    /// incarnation ends.
    fn logs_since(&self, id: &str, since: DateTime<Utc>) -> BoxStream<'static, Result<LogLine>>;
    /// One sample of CPU and memory use.
    async fn stats(&self, id: &str) -> Result<ContainerStats>;
    /// Resource use of each of the workloads `ids` (same order), for a poll
    /// that comes back on an interval: cheap per workload and without a
    /// wait, the CPU share being over the time since the previous poll.
    /// Default: [`Self::stats`] of each.
    async fn poll_stats(&self, ids: &[String]) -> Vec<Result<PolledStats>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.stats(id).await.map(|s| PolledStats {
                memory_mb: s.memory_mb,
                cpu_percent: Some(s.cpu_percent),
            }));
        }
        out
    }
    /// Events about our workloads from the moment of this call on. The
    /// stream may end (engine restart): reconnect and resync.
    fn events(&self) -> BoxStream<'static, Result<ContainerEvent>>;

    /// Every workload carrying our labels, sorted by name, each inspected.
    async fn list_managed(&self) -> Result<Vec<ObservedContainer>>;
    /// Every workload carrying our labels, sorted by name, as one listing
    /// reports them: for the periodic resync and the orphan sweep, which
    /// look at every workload every few seconds (Docker: one call, no
    /// inspect per workload). Default: [`Self::list_managed`].
    async fn list_workloads(&self) -> Result<Vec<ListedWorkload>> {
        Ok(self
            .list_managed()
            .await?
            .iter()
            .map(ListedWorkload::from)
            .collect())
    }
    /// Every volume carrying our labels, `(name, labels)` sorted by name.
    async fn list_managed_volumes(&self) -> Result<Vec<(String, Labels)>>;
    /// Every network carrying our labels, `(name, labels)` sorted by name.
    async fn list_managed_networks(&self) -> Result<Vec<(String, Labels)>>;

    /// How the workload's gateway is reached now; `None` if it is gone.
    async fn endpoint(&self, id_or_name: &str) -> Result<Option<Endpoint>> {
        Ok(self.inspect(id_or_name).await?.map(|c| c.endpoint()))
    }
    /// The workloads among `ids` that run now and that this installation
    /// may act on ([`Self::is_owned`]), with how each is reached: for
    /// callers that reach many workloads at once (Docker: one listing, no
    /// inspect per workload). Default: [`Self::inspect`] of each.
    async fn running_endpoints(&self, ids: &[String]) -> Result<Vec<ListedWorkload>> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(c) = self.inspect(id).await? {
                if c.running && self.is_owned(&c.labels) {
                    out.push(ListedWorkload::from(&c));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn ownership_is_scoped_to_the_installation() {
        let base = labels(&[(MANAGED_LABEL, "true"), ("io.zcaas.test", "t1")]);
        let mine = Some("inst-a");
        let classify = |l: &[(&str, &str)]| ownership_of(&base, mine, &labels(l));
        let managed = [(MANAGED_LABEL, "true"), ("io.zcaas.test", "t1")];
        let with = |inst: &'static str| {
            let mut l = managed.to_vec();
            l.push((INSTALLATION_LABEL, inst));
            l
        };
        assert_eq!(classify(&with("inst-a")), Ownership::Ours);
        assert_eq!(classify(&with("inst-b")), Ownership::Foreign);
        assert_eq!(classify(&managed), Ownership::Legacy);
        assert_eq!(classify(&[(MANAGED_LABEL, "true")]), Ownership::NotManaged);
        assert_eq!(classify(&[]), Ownership::NotManaged);
        assert!(Ownership::Ours.may_act() && Ownership::Legacy.may_act());
        assert!(!Ownership::Foreign.may_act() && !Ownership::NotManaged.may_act());
        // An unscoped handle (test cleanup) sees every managed object as its own.
        assert_eq!(
            ownership_of(&base, None, &labels(&with("inst-b"))),
            Ownership::Ours
        );
    }
}
