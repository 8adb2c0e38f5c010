//! The control plane's configuration: an optional `zcaas.toml`, overridden by
//! `ZCAAS_*` environment variables, overridden by flags (DESIGN.md §2).
//!
//! [`ConfigArgs`] is the flag/env layer (clap reads the environment, flags
//! win); [`FileConfig`] the file layer; [`ConfigArgs::load`] resolves them
//! over the defaults of [`Config::with_data_dir`] into the plain [`Config`].
//! Relative paths in the file are taken from the current directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::builder::BoolishValueParser;
use serde::Deserialize;

pub use crate::runtime_profile::ProfileSetting;

/// Resource limits for one plan (seed 003 for CPU and agent counts; memory ours).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    /// Max agents a user on this plan may own; `None` = unlimited.
    pub max_agents: Option<u32>,
    /// CPU quota per agent, in CPUs (0.5 = half a core).
    pub cpus: f64,
    /// Memory limit per agent, in MiB.
    pub memory_mb: i64,
}

/// How the control plane reaches an agent's gateway (`agent_address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AgentAddress {
    /// `http://<agent_host>:<published host port>`: zcaas runs on the host
    /// (the binary, systemd) and reaches agents on their loopback ports.
    #[default]
    HostPort,
    /// `http://<container IP>:42617` over the agent's network, the address
    /// the engine reports now (never a DNS name): zcaas runs in a container
    /// attached to the agents' networks (deploy/docker-compose.yml,
    /// `network_attach`), or on a Linux host, which reaches bridge
    /// addresses directly. No host port is published (no `docker-proxy`
    /// per agent) and none is claimed.
    Network,
}

/// The engine that runs agent workloads (`orchestrator`,
/// `ZCAAS_ORCHESTRATOR`): the seam of [`crate::orchestrator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OrchestratorKind {
    /// One Docker Engine: a container per agent ([`crate::docker::DockerRuntime`]).
    #[default]
    Docker,
    /// A Docker Swarm, zcaas talking to a manager: a service per agent,
    /// placed by Swarm on any node ([`crate::docker::swarm::SwarmRuntime`]).
    /// Needs `agent_address = network`.
    Swarm,
}

/// A volume driver whose volumes every swarm node sees (`[volume_driver]`
/// in the file): with it, agents' data is not pinned to a node and a task
/// may start anywhere. `{volume}` in an option value is replaced by the
/// volume's name (`zeroclaw-<slug>-data`), e.g. `local` with `type = "nfs"`,
/// `o = "addr=10.0.0.5,rw"`, `device = ":/exports/{volume}"` (the directory
/// must exist on the server).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeDriver {
    /// The driver's name (`local`, a plugin's).
    pub name: String,
    /// Its options (`DriverOpts`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl VolumeDriver {
    /// The options for volume `volume`, `{volume}` replaced.
    pub fn options_for(&self, volume: &str) -> BTreeMap<String, String> {
        self.options
            .iter()
            .map(|(k, v)| (k.clone(), v.replace("{volume}", volume)))
            .collect()
    }
}

/// Resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the API listens on (`127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// The engine agents run on: `docker` (default) or `swarm`.
    pub orchestrator: OrchestratorKind,
    /// The Docker Engine API endpoint (`unix:///var/run/docker.sock`,
    /// `tcp://host:2375`); `None`: `DOCKER_HOST`, else the local socket. In
    /// `swarm` mode it must be a manager's.
    pub docker_host: Option<String>,
    /// An HTTP proxy (`http://host:port`) through which the control plane
    /// reaches agents' gateways, for a control plane that is not attached
    /// to the agents' networks itself (the multi-node tests reach a swarm's
    /// overlay this way); `None`: direct. Only agents' traffic uses it.
    pub agent_proxy: Option<String>,
    /// With `swarm`: a volume driver every node shares, so agents' data is
    /// not pinned to the node of its first start; `None`: node-local
    /// volumes, pinned (deploy/OPERATIONS.md "Several hosts").
    pub volume_driver: Option<VolumeDriver>,
    /// With `swarm`: the image (on every node) of the one-shot job that
    /// removes a deleted agent's data volume on the node holding it: the
    /// control-plane image, whose `zcaas remove-volume` it runs.
    pub janitor_image: String,
    /// Holds the SQLite file, the master key file and the JWT secret file.
    pub data_dir: PathBuf,
    /// `sqlite://…`; defaults to `<data_dir>/zcaas.db`.
    pub database_url: String,
    /// Agents are routed at `<slug>.<domain>`.
    pub domain: String,
    /// The first Docker network agents join (`zeroone-net`); further ones
    /// are `<network>-2`, `<network>-3`, … ([`crate::model::agent_network_name`]).
    pub network: String,
    /// At most this many agents on one agents' network (default 1000,
    /// 1..=1000): a Linux bridge takes at most 1 024 ports, and every
    /// attached endpoint counts, Traefik's and zcaas's included.
    pub agents_per_network: u32,
    /// Containers (names or ids) connected to every agents' network zcaas
    /// ensures: Traefik, and zcaas itself when it runs in a container in
    /// `network` mode. A missing one is a warning, not a failure.
    pub network_attach: Vec<String>,
    /// The runtime image agents run (our agent-runtime image by default).
    pub runtime_image: String,
    /// Path of the static agent-runtime binary used to build `runtime_image`
    /// when it is missing (default: `agent-runtime` next to the zcaas binary).
    pub agent_binary: PathBuf,
    /// How agent images are driven: `auto` (read from each image's labels)
    /// or a forced runtime profile ([`crate::runtime_profile`]).
    pub runtime_profile: ProfileSetting,
    /// Allow provider base URLs that resolve to loopback/private/link-local
    /// addresses (tests use it for a local provider stand-in).
    pub allow_private_provider_urls: bool,
    /// Host ports claimed for agents (inclusive), 40000–50000.
    pub port_range: (u16, u16),
    /// Host IP agent ports are bound to, and the control plane reaches agents
    /// on in [`AgentAddress::HostPort`] mode.
    pub agent_host: String,
    /// How agents' gateways are addressed: host port (default; a host port
    /// is claimed and published per agent) or the container's address on
    /// its agents' network (no port published or claimed). Switching modes
    /// recreates each agent's container at its next start (the volume
    /// kept); until then a running agent keeps its container.
    pub agent_address: AgentAddress,
    /// Traefik entrypoint and certificate resolver put in the router labels.
    pub traefik_entrypoint: String,
    pub traefik_cert_resolver: String,
    /// The paths of an agent reachable from its public URL
    /// (`https://<slug>.<domain>`), carried in its Traefik router rule:
    /// exact paths, or prefixes when they end in `*` (`/_app/*`). Everything
    /// else (`/pair`, `/pair/code`, `/metrics`, `/api/*`) is not routed, so
    /// Traefik answers 404. Default [`DEFAULT_PUBLIC_PATHS`].
    pub public_paths: Vec<String>,
    pub free: PlanLimits,
    pub pro: PlanLimits,
    pub enterprise: PlanLimits,
    /// How long a deploy waits for the pairing code after a start.
    pub pairing_timeout: Duration,
    /// How long a deploy polls `/health` before giving up.
    pub health_timeout: Duration,
    /// How many Docker-heavy deploy steps run at once (moby #42096).
    pub max_concurrent_deploys: usize,
    /// Failed deploys/re-pairs retried automatically before an agent stays in
    /// ERROR (the retry budget); 1 means no automatic retry.
    pub retry_budget: u32,
    /// Backoff before the first automatic retry; doubles each time, capped at
    /// `retry_backoff_max`.
    pub retry_backoff_base: Duration,
    pub retry_backoff_max: Duration,
    /// How old an orphan container (this installation's, its agent's row
    /// gone) must be before the periodic sweep removes it.
    pub orphan_grace: Duration,
    /// Extra labels on everything created (tests: `io.zcaas.test=<prefix>`).
    pub extra_labels: std::collections::BTreeMap<String, String>,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For`
    /// names the client, for per-client limits; empty: the TCP peer is the
    /// client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Logs as JSON lines instead of human-readable text.
    pub log_json: bool,
    /// TTL of the reconciler's lease (several replicas on one PostgreSQL
    /// database: one reconciles). The leader renews every third of it; a
    /// standby takes over within about `lease_ttl` + 1 s of its death.
    pub lease_ttl: Duration,
}

impl Config {
    /// The defaults of DESIGN.md §2 for a given data directory.
    pub fn with_data_dir(data_dir: PathBuf) -> Self {
        let database_url = format!("sqlite://{}", data_dir.join("zcaas.db").display());
        let agent_binary = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("agent-runtime")))
            .unwrap_or_else(|| PathBuf::from("agent-runtime"));
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            orchestrator: OrchestratorKind::Docker,
            docker_host: None,
            agent_proxy: None,
            volume_driver: None,
            janitor_image: "zcaas/control-plane:latest".into(),
            data_dir,
            database_url,
            domain: "localhost".into(),
            network: "zeroone-net".into(),
            agents_per_network: DEFAULT_AGENTS_PER_NETWORK,
            network_attach: Vec::new(),
            runtime_image: "zcaas/agent-runtime:latest".into(),
            agent_binary,
            runtime_profile: ProfileSetting::Auto,
            allow_private_provider_urls: false,
            port_range: (40000, 50000),
            agent_host: "127.0.0.1".into(),
            agent_address: AgentAddress::HostPort,
            traefik_entrypoint: "websecure".into(),
            traefik_cert_resolver: "letsencrypt".into(),
            public_paths: DEFAULT_PUBLIC_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            free: PlanLimits {
                max_agents: Some(3),
                cpus: 0.5,
                memory_mb: 256,
            },
            pro: PlanLimits {
                max_agents: Some(20),
                cpus: 1.0,
                memory_mb: 512,
            },
            enterprise: PlanLimits {
                max_agents: None,
                cpus: 2.0,
                memory_mb: 1024,
            },
            pairing_timeout: Duration::from_secs(30),
            health_timeout: Duration::from_secs(30),
            max_concurrent_deploys: 8,
            retry_budget: 5,
            orphan_grace: Duration::from_secs(60),
            retry_backoff_base: Duration::from_secs(2),
            retry_backoff_max: Duration::from_secs(300),
            extra_labels: Default::default(),
            trusted_proxies: Vec::new(),
            log_json: false,
            lease_ttl: Duration::from_secs(6),
        }
    }

    /// The limits for `plan`.
    pub fn limits(&self, plan: crate::model::Plan) -> PlanLimits {
        match plan {
            crate::model::Plan::Free => self.free,
            crate::model::Plan::Pro => self.pro,
            crate::model::Plan::Enterprise => self.enterprise,
        }
    }
}

/// File names inside `data_dir`.
impl Config {
    /// The keyring file of `SecretBox` (`<data_dir>/master.key`, mode 0600).
    pub fn master_key_path(&self) -> PathBuf {
        self.data_dir.join("master.key")
    }

    /// The JWT signing secret (`<data_dir>/jwt.secret`, mode 0600).
    pub fn jwt_secret_path(&self) -> PathBuf {
        self.data_dir.join("jwt.secret")
    }

    /// Refuses values that cannot work.
    pub fn validate(&self) -> anyhow::Result<()> {
        let (lo, hi) = self.port_range;
        if lo == 0 || lo > hi {
            bail!("port_range {lo}-{hi} is empty or starts at 0");
        }
        for (name, p) in [
            ("free", self.free),
            ("pro", self.pro),
            ("enterprise", self.enterprise),
        ] {
            if !(p.cpus > 0.0 && p.cpus <= 1024.0) {
                bail!("plans.{name}.cpus must be in (0, 1024]");
            }
            if p.memory_mb < 16 {
                bail!("plans.{name}.memory_mb must be at least 16");
            }
        }
        if self.domain.is_empty()
            || self
                .domain
                .contains(|c: char| c.is_whitespace() || c == '`')
        {
            bail!("domain {:?} is not a host name", self.domain);
        }
        if self.public_paths.is_empty() {
            bail!("public_paths must name at least one path (default: /webhook, /health)");
        }
        for p in &self.public_paths {
            parse_public_path(p).map_err(|e| anyhow::anyhow!("public_paths: {e}"))?;
        }
        if self.max_concurrent_deploys == 0 {
            bail!("max_concurrent_deploys must be at least 1");
        }
        if self.lease_ttl < Duration::from_secs(2) {
            bail!("lease_ttl_secs must be at least 2");
        }
        if !(1..=MAX_AGENTS_PER_NETWORK).contains(&self.agents_per_network) {
            bail!(
                "agents_per_network must be between 1 and {MAX_AGENTS_PER_NETWORK}, got {} \
                 (a Linux bridge takes at most 1024 ports, Traefik's and zcaas's included)",
                self.agents_per_network
            );
        }
        if self.orchestrator == OrchestratorKind::Swarm
            && self.agent_address != AgentAddress::Network
        {
            bail!(
                "orchestrator = swarm needs agent_address = network: a swarm task publishes no \
                 loopback port (ZCAAS_AGENT_ADDRESS=network)"
            );
        }
        if let Some(proxy) = &self.agent_proxy {
            let ok = reqwest::Url::parse(proxy)
                .is_ok_and(|u| u.scheme() == "http" && u.host_str().is_some());
            if !ok {
                bail!("agent_proxy {proxy:?} is not an http://host:port URL");
            }
        }
        if self.network.is_empty() {
            bail!("network must name a Docker network");
        }
        if self.retry_budget == 0 {
            bail!("retry_budget must be at least 1 (1 means no automatic retry)");
        }
        Ok(())
    }
}

/// Per-plan limits in the file (`[plans.free]`, …); absent keys keep the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePlan {
    pub max_agents: Option<u32>,
    pub unlimited: Option<bool>,
    pub cpus: Option<f64>,
    pub memory_mb: Option<i64>,
}

/// `[plans]` of the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePlans {
    #[serde(default)]
    pub free: FilePlan,
    #[serde(default)]
    pub pro: FilePlan,
    #[serde(default)]
    pub enterprise: FilePlan,
}

/// `zcaas.toml`: every key optional, same names as [`Config`]'s fields;
/// unknown keys are refused (a typo must not silently keep a default).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub orchestrator: Option<OrchestratorKind>,
    pub docker_host: Option<String>,
    pub agent_proxy: Option<String>,
    pub volume_driver: Option<VolumeDriver>,
    pub janitor_image: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub domain: Option<String>,
    pub network: Option<String>,
    /// 1..=1000.
    pub agents_per_network: Option<u32>,
    /// Container names or ids.
    pub network_attach: Option<Vec<String>>,
    pub runtime_image: Option<String>,
    pub agent_binary: Option<PathBuf>,
    /// `auto`, `zcaas`, `zeroclaw-v1` or `zeroclaw-v3`.
    pub runtime_profile: Option<ProfileSetting>,
    pub allow_private_provider_urls: Option<bool>,
    pub port_range: Option<(u16, u16)>,
    pub agent_host: Option<String>,
    /// `host-port` or `network`.
    pub agent_address: Option<AgentAddress>,
    pub traefik_entrypoint: Option<String>,
    pub traefik_cert_resolver: Option<String>,
    /// Exact paths, or prefixes ending in `*`.
    pub public_paths: Option<Vec<String>>,
    /// Seconds.
    pub pairing_timeout_secs: Option<u64>,
    /// Seconds.
    pub health_timeout_secs: Option<u64>,
    pub max_concurrent_deploys: Option<usize>,
    pub retry_budget: Option<u32>,
    /// Milliseconds.
    pub retry_backoff_ms: Option<u64>,
    /// Seconds.
    pub orphan_grace_secs: Option<u64>,
    /// Seconds.
    pub lease_ttl_secs: Option<u64>,
    pub log_json: Option<bool>,
    #[serde(default)]
    pub extra_labels: BTreeMap<String, String>,
    /// Addresses or CIDR ranges.
    pub trusted_proxies: Option<Vec<String>>,
    #[serde(default)]
    pub plans: FilePlans,
}

impl FileConfig {
    /// Reads and parses a `zcaas.toml`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Configuration flags, each also read from its `ZCAAS_*` variable (flags
/// win over the environment, which wins over the file).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// Configuration file [default: ./zcaas.toml if it exists].
    #[arg(long, env = "ZCAAS_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address the API listens on [default: 127.0.0.1:8080].
    #[arg(long, env = "ZCAAS_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// The engine agents run on: docker (one Docker Engine) or swarm (a
    /// Docker Swarm; zcaas talks to a manager) [default: docker].
    #[arg(long, env = "ZCAAS_ORCHESTRATOR", global = true, value_enum)]
    pub orchestrator: Option<OrchestratorKind>,
    /// The Docker Engine API endpoint (unix:///path or tcp://host:port)
    /// [default: DOCKER_HOST, else the local socket].
    #[arg(long, env = "ZCAAS_DOCKER_HOST", global = true)]
    pub docker_host: Option<String>,
    /// HTTP proxy (http://host:port) through which agents' gateways are
    /// reached, when zcaas is not on the agents' networks itself
    /// [default: none, direct].
    #[arg(long, env = "ZCAAS_AGENT_PROXY", global = true)]
    pub agent_proxy: Option<String>,
    /// With swarm: the control-plane image every node has, run as a
    /// one-shot job to remove a deleted agent's volume on its node
    /// [default: zcaas/control-plane:latest].
    #[arg(long, env = "ZCAAS_JANITOR_IMAGE", global = true)]
    pub janitor_image: Option<String>,
    /// Directory of the SQLite file, the master key and the JWT secret [default: ./data].
    #[arg(long, env = "ZCAAS_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Database URL [default: sqlite://<data_dir>/zcaas.db].
    #[arg(long, env = "ZCAAS_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Agents are served at <slug>.<domain> [default: localhost].
    #[arg(long, env = "ZCAAS_DOMAIN", global = true)]
    pub domain: Option<String>,
    /// Docker network agents join [default: zeroone-net].
    #[arg(long, env = "ZCAAS_NETWORK", global = true)]
    pub network: Option<String>,
    /// At most this many agents per agents' network; further ones go to
    /// <network>-2, <network>-3, … (1..=1000) [default: 1000].
    #[arg(long, env = "ZCAAS_AGENTS_PER_NETWORK", global = true)]
    pub agents_per_network: Option<u32>,
    /// Container (name or id) connected to every agents' network: Traefik,
    /// and zcaas itself when it runs in a container in network mode;
    /// repeatable, or comma-separated in the variable [default: none].
    #[arg(
        long = "network-attach",
        env = "ZCAAS_NETWORK_ATTACH",
        global = true,
        value_delimiter = ','
    )]
    pub network_attach: Vec<String>,
    /// Image agents run [default: zcaas/agent-runtime:latest].
    #[arg(long, env = "ZCAAS_RUNTIME_IMAGE", global = true)]
    pub runtime_image: Option<String>,
    /// Static agent-runtime binary the image is built from [default: next to zcaas].
    #[arg(long, env = "ZCAAS_AGENT_BINARY", global = true)]
    pub agent_binary: Option<PathBuf>,
    /// Runtime profile of agent images: auto (from each image's labels),
    /// zcaas, zeroclaw-v1 or zeroclaw-v3 [default: auto].
    #[arg(long, env = "ZCAAS_RUNTIME_PROFILE", global = true, value_enum)]
    pub runtime_profile: Option<ProfileSetting>,
    /// Allow provider URLs on loopback/private/link-local addresses [default: false].
    #[arg(long, env = "ZCAAS_ALLOW_PRIVATE_PROVIDER_URLS", global = true, num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub allow_private_provider_urls: Option<bool>,
    /// Host IP agent ports are bound to and reached on [default: 127.0.0.1].
    #[arg(long, env = "ZCAAS_AGENT_HOST", global = true)]
    pub agent_host: Option<String>,
    /// How agents are reached: host-port (a published loopback port per
    /// agent) or network (the container's IP on its agents' network, no
    /// port published: zcaas in a container attached to the agents'
    /// networks, or on the Linux host) [default: host-port].
    #[arg(long, env = "ZCAAS_AGENT_ADDRESS", global = true, value_enum)]
    pub agent_address: Option<AgentAddress>,
    /// Traefik entrypoint in router labels [default: websecure].
    #[arg(long, env = "ZCAAS_TRAEFIK_ENTRYPOINT", global = true)]
    pub traefik_entrypoint: Option<String>,
    /// Traefik certificate resolver in router labels; empty: none (Traefik's
    /// default certificate, or the entrypoint's) [default: letsencrypt].
    #[arg(long, env = "ZCAAS_TRAEFIK_CERT_RESOLVER", global = true)]
    pub traefik_cert_resolver: Option<String>,
    /// A path of every agent routed from its public URL: exact, or a prefix
    /// ending in `*`; repeatable, or comma-separated in the variable
    /// [default: /webhook,/health].
    #[arg(long = "public-path", env = "ZCAAS_PUBLIC_PATHS", global = true,
          value_delimiter = ',', value_parser = parse_public_path)]
    pub public_paths: Vec<String>,
    /// Memory limit per agent on the free plan, MiB [default: 256].
    #[arg(long, env = "ZCAAS_FREE_MEMORY_MB", global = true)]
    pub free_memory_mb: Option<i64>,
    /// Memory limit per agent on the pro plan, MiB [default: 512].
    #[arg(long, env = "ZCAAS_PRO_MEMORY_MB", global = true)]
    pub pro_memory_mb: Option<i64>,
    /// Memory limit per agent on the enterprise plan, MiB [default: 1024].
    #[arg(long, env = "ZCAAS_ENTERPRISE_MEMORY_MB", global = true)]
    pub enterprise_memory_mb: Option<i64>,
    /// CPU quota per agent on the enterprise plan, CPUs [default: 2.0].
    #[arg(long, env = "ZCAAS_ENTERPRISE_CPUS", global = true)]
    pub enterprise_cpus: Option<f64>,
    /// Deploys running Docker-heavy steps at once [default: 8].
    #[arg(long, env = "ZCAAS_MAX_CONCURRENT_DEPLOYS", global = true)]
    pub max_concurrent_deploys: Option<usize>,
    /// Automatic attempts before a failing agent stays in ERROR [default: 5].
    #[arg(long, env = "ZCAAS_RETRY_BUDGET", global = true)]
    pub retry_budget: Option<u32>,
    /// Backoff before the first automatic retry, ms; doubles each time [default: 2000].
    #[arg(long, env = "ZCAAS_RETRY_BACKOFF_MS", global = true)]
    pub retry_backoff_ms: Option<u64>,
    /// Seconds an orphan container must exist before the periodic sweep
    /// removes it (volumes are never swept) [default: 60].
    #[arg(long, env = "ZCAAS_ORPHAN_GRACE_SECS", global = true)]
    pub orphan_grace_secs: Option<u64>,
    /// Seconds the reconciler's lease lasts; the leader renews it every
    /// third, a standby takes over within about this + 1 s of the leader's
    /// death [default: 6].
    #[arg(long, env = "ZCAAS_LEASE_TTL_SECS", global = true)]
    pub lease_ttl_secs: Option<u64>,
    /// Extra label put on everything created, KEY=VALUE; repeatable, or
    /// comma-separated in the variable (tests use it to clean up by label).
    #[arg(long = "extra-label", env = "ZCAAS_EXTRA_LABELS", global = true,
          value_delimiter = ',', value_parser = parse_label)]
    pub extra_labels: Vec<(String, String)>,
    /// Reverse proxy whose X-Forwarded-For names the client (for the
    /// registration limit): an address or CIDR range; repeatable, or
    /// comma-separated in the variable [default: none, the TCP peer is the
    /// client].
    #[arg(long = "trusted-proxy", env = "ZCAAS_TRUSTED_PROXIES", global = true,
          value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Seconds a deploy waits for the pairing code [default: 30].
    #[arg(long, env = "ZCAAS_PAIRING_TIMEOUT_SECS", global = true)]
    pub pairing_timeout_secs: Option<u64>,
    /// Seconds a deploy polls /health [default: 30].
    #[arg(long, env = "ZCAAS_HEALTH_TIMEOUT_SECS", global = true)]
    pub health_timeout_secs: Option<u64>,
    /// Log JSON lines instead of text [default: false].
    #[arg(long, env = "ZCAAS_LOG_JSON", global = true, num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub log_json: Option<bool>,
}

/// Parses `KEY=VALUE` for `--extra-label`; our own label keys are refused.
/// Parses a trusted proxy: an IP address (one host) or a CIDR range.
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    let key = k.trim();
    if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("bad label key {k:?}"));
    }
    if key == crate::orchestrator::MANAGED_LABEL
        || key == crate::orchestrator::AGENT_ID_LABEL
        || key == crate::orchestrator::SPEC_HASH_LABEL
        || key == crate::orchestrator::INSTALLATION_LABEL
    {
        return Err(format!("{key} is set by zcaas itself"));
    }
    Ok((key.to_owned(), v.to_owned()))
}

impl ConfigArgs {
    /// Resolves defaults ← file ← environment ← flags. The file is
    /// `--config`/`ZCAAS_CONFIG` (must exist) or `./zcaas.toml` if present.
    pub fn load(&self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => FileConfig::read(path)?,
            None if Path::new("zcaas.toml").is_file() => FileConfig::read(Path::new("zcaas.toml"))?,
            None => FileConfig::default(),
        };
        self.resolve(file)
    }

    /// Applies `file` then these flags over the defaults.
    pub fn resolve(&self, file: FileConfig) -> anyhow::Result<Config> {
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let mut c = Config::with_data_dir(data_dir);
        macro_rules! layer {
            ($($field:ident),*) => {$(
                if let Some(v) = file.$field { c.$field = v; }
                if let Some(v) = self.$field.clone() { c.$field = v; }
            )*};
        }
        layer!(
            listen,
            orchestrator,
            janitor_image,
            database_url,
            domain,
            network,
            agents_per_network,
            runtime_image,
            agent_binary,
            runtime_profile,
            allow_private_provider_urls,
            agent_host,
            agent_address,
            traefik_entrypoint,
            traefik_cert_resolver,
            max_concurrent_deploys,
            retry_budget,
            log_json
        );
        if let Some(h) = self.docker_host.clone().or(file.docker_host) {
            c.docker_host = Some(h).filter(|h| !h.trim().is_empty());
        }
        c.volume_driver = file.volume_driver.filter(|d| !d.name.trim().is_empty());
        if let Some(p) = self.agent_proxy.clone().or(file.agent_proxy) {
            c.agent_proxy = Some(p).filter(|p| !p.trim().is_empty());
        }
        if let Some(ms) = self.retry_backoff_ms.or(file.retry_backoff_ms) {
            c.retry_backoff_base = Duration::from_millis(ms);
        }
        if let Some(s) = self.orphan_grace_secs.or(file.orphan_grace_secs) {
            c.orphan_grace = Duration::from_secs(s);
        }
        if let Some(s) = self.lease_ttl_secs.or(file.lease_ttl_secs) {
            c.lease_ttl = Duration::from_secs(s);
        }
        if let Some(r) = file.port_range {
            c.port_range = r;
        }
        if !self.network_attach.is_empty() {
            c.network_attach = self.network_attach.clone();
        } else if let Some(listed) = file.network_attach {
            c.network_attach = listed;
        }
        c.network_attach = c
            .network_attach
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        c.extra_labels.extend(file.extra_labels);
        c.extra_labels.extend(self.extra_labels.iter().cloned());
        if !self.public_paths.is_empty() {
            c.public_paths = self.public_paths.clone();
        } else if let Some(paths) = file.public_paths {
            c.public_paths = paths;
        }
        c.trusted_proxies = match (&self.trusted_proxies, &file.trusted_proxies) {
            (flags, _) if !flags.is_empty() => flags.clone(),
            (_, Some(listed)) => listed
                .iter()
                .map(|s| parse_net(s).map_err(|e| anyhow::anyhow!("trusted_proxies: {e}")))
                .collect::<anyhow::Result<_>>()?,
            _ => Vec::new(),
        };
        for (limits, plan) in [
            (&mut c.free, &file.plans.free),
            (&mut c.pro, &file.plans.pro),
            (&mut c.enterprise, &file.plans.enterprise),
        ] {
            if plan.unlimited == Some(true) {
                limits.max_agents = None;
            } else if let Some(n) = plan.max_agents {
                limits.max_agents = Some(n);
            }
            limits.cpus = plan.cpus.unwrap_or(limits.cpus);
            limits.memory_mb = plan.memory_mb.unwrap_or(limits.memory_mb);
        }
        c.free.memory_mb = self.free_memory_mb.unwrap_or(c.free.memory_mb);
        c.pro.memory_mb = self.pro_memory_mb.unwrap_or(c.pro.memory_mb);
        c.enterprise.memory_mb = self.enterprise_memory_mb.unwrap_or(c.enterprise.memory_mb);
        c.enterprise.cpus = self.enterprise_cpus.unwrap_or(c.enterprise.cpus);
        if let Some(s) = self.pairing_timeout_secs.or(file.pairing_timeout_secs) {
            c.pairing_timeout = Duration::from_secs(s);
        }
        if let Some(s) = self.health_timeout_secs.or(file.health_timeout_secs) {
            c.health_timeout = Duration::from_secs(s);
        }
        c.validate()?;
        Ok(c)
    }
}

/// Agents per agents' network unless configured otherwise.
pub const DEFAULT_AGENTS_PER_NETWORK: u32 = 1000;
/// The most `agents_per_network` may be: below the 1 024 ports of one
/// Linux bridge, leaving room for Traefik, zcaas and agents being replaced.
pub const MAX_AGENTS_PER_NETWORK: u32 = 1000;

/// The paths every agent answers from its public URL unless configured
/// otherwise: the gateway's message endpoint and its health check.
pub const DEFAULT_PUBLIC_PATHS: [&str; 2] = ["/webhook", "/health"];

/// Checks one public path: starts with `/`, at most 128 bytes, only
/// `A–Z a–z 0–9 / - _ . ~`, and an optional final `*` (a prefix). So no
/// entry can break out of the backtick-quoted Traefik rule it lands in.
pub fn parse_public_path(s: &str) -> Result<String, String> {
    let path = s.trim();
    let body = path.strip_suffix('*').unwrap_or(path);
    if !body.starts_with('/') {
        return Err(format!("{path:?} must start with /"));
    }
    if path.len() > 128 {
        return Err(format!("{path:?} is longer than 128 bytes"));
    }
    if let Some(c) = body
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/-_.~".contains(*c)))
    {
        return Err(format!(
            "{path:?} contains {c:?} (allowed: letters, digits, / - _ . ~ and a final *)"
        ));
    }
    Ok(path.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct TestCli {
        #[command(flatten)]
        config: ConfigArgs,
    }

    #[test]
    fn extra_labels_and_retry_settings_from_flags() {
        let cli = TestCli::try_parse_from([
            "t",
            "--extra-label",
            "io.zcaas.test=abc,team=x",
            "--retry-budget",
            "2",
            "--retry-backoff-ms",
            "150",
            "--lease-ttl-secs",
            "9",
        ])
        .unwrap();
        let c = cli.config.resolve(FileConfig::default()).unwrap();
        assert_eq!(
            c.extra_labels.get("io.zcaas.test").map(String::as_str),
            Some("abc")
        );
        assert_eq!(c.extra_labels.get("team").map(String::as_str), Some("x"));
        assert_eq!(c.retry_budget, 2);
        assert_eq!(c.retry_backoff_base, Duration::from_millis(150));
        assert_eq!(c.lease_ttl, Duration::from_secs(9));
        assert!(TestCli::try_parse_from(["t", "--extra-label", "io.zcaas.managed=false"]).is_err());
        assert!(TestCli::try_parse_from(["t", "--extra-label", "novalue"]).is_err());
        assert!(TestCli::try_parse_from(["t", "--retry-budget", "0"])
            .unwrap()
            .config
            .resolve(FileConfig::default())
            .is_err());
    }

    #[test]
    fn public_paths_default_layer_and_are_checked() {
        let c = TestCli::try_parse_from(["t"])
            .unwrap()
            .config
            .resolve(FileConfig::default())
            .unwrap();
        assert_eq!(c.public_paths, ["/webhook", "/health"]);
        let file: FileConfig = toml::from_str(r#"public_paths = ["/webhook", "/_app/*"]"#).unwrap();
        let c = TestCli::try_parse_from(["t"])
            .unwrap()
            .config
            .resolve(file.clone())
            .unwrap();
        assert_eq!(c.public_paths, ["/webhook", "/_app/*"]);
        let c = TestCli::try_parse_from(["t", "--public-path", "/ws/chat,/health"])
            .unwrap()
            .config
            .resolve(file)
            .unwrap();
        assert_eq!(
            c.public_paths,
            ["/ws/chat", "/health"],
            "flags win over the file"
        );
        for bad in ["webhook", "/a`) || Host(`x", "/a b", "/*x", "/a?b"] {
            assert!(
                TestCli::try_parse_from(["t", "--public-path", bad]).is_err(),
                "{bad} accepted"
            );
        }
        let empty: FileConfig = toml::from_str("public_paths = []").unwrap();
        assert!(TestCli::try_parse_from(["t"])
            .unwrap()
            .config
            .resolve(empty)
            .is_err());
    }

    #[test]
    fn defaults_file_env_and_flags_layer_in_order() {
        let file: FileConfig = toml::from_str(
            r#"
            data_dir = "/srv/zcaas"
            domain = "file.example"
            network = "file-net"
            runtime_image = "file/image:1"
            [plans.pro]
            memory_mb = 2048
            [plans.free]
            unlimited = true
            "#,
        )
        .unwrap();
        // The only test touching these variables (tests run in parallel).
        std::env::set_var("ZCAAS_NETWORK", "env-net");
        std::env::set_var("ZCAAS_RUNTIME_IMAGE", "env/image:2");
        std::env::set_var("ZCAAS_ALLOW_PRIVATE_PROVIDER_URLS", "1");
        let cli = TestCli::try_parse_from(["t", "--runtime-image", "flag/image:3", "--log-json"])
            .unwrap();
        std::env::remove_var("ZCAAS_NETWORK");
        std::env::remove_var("ZCAAS_RUNTIME_IMAGE");
        std::env::remove_var("ZCAAS_ALLOW_PRIVATE_PROVIDER_URLS");
        let c = cli.config.resolve(file).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/zcaas"));
        assert_eq!(c.database_url, "sqlite:///srv/zcaas/zcaas.db");
        assert_eq!(c.domain, "file.example");
        assert_eq!(c.network, "env-net");
        assert_eq!(c.runtime_image, "flag/image:3");
        assert!(c.allow_private_provider_urls && c.log_json);
        assert_eq!(c.pro.memory_mb, 2048);
        assert_eq!(c.free.max_agents, None);
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
    }

    #[test]
    fn runtime_profile_layers_file_then_flag() {
        let file: FileConfig = toml::from_str("runtime_profile = \"zeroclaw-v3\"").unwrap();
        let none = TestCli::try_parse_from(["t"]).unwrap();
        assert_eq!(
            none.config
                .resolve(FileConfig::default())
                .unwrap()
                .runtime_profile,
            ProfileSetting::Auto
        );
        assert_eq!(
            none.config.resolve(file.clone()).unwrap().runtime_profile,
            ProfileSetting::ZeroclawV3
        );
        let flag = TestCli::try_parse_from(["t", "--runtime-profile", "zcaas"]).unwrap();
        assert_eq!(
            flag.config.resolve(file).unwrap().runtime_profile,
            ProfileSetting::Zcaas
        );
        assert!(TestCli::try_parse_from(["t", "--runtime-profile", "v9"]).is_err());
        assert!(toml::from_str::<FileConfig>("runtime_profile = \"v9\"").is_err());
    }

    #[test]
    fn agent_address_layers_and_addresses_gateways() {
        use crate::addressing::gateway_base;
        use crate::reconciler::testing::container;
        let mut running = container(true);
        running
            .ip_addresses
            .insert("zeroone-net".into(), "172.30.0.9".into());
        let c = ConfigArgs::default()
            .resolve(FileConfig::default())
            .unwrap();
        assert_eq!(c.agent_address, AgentAddress::HostPort);
        assert_eq!(
            gateway_base(&c, Some(40123), "zeroone-net", Some(&running.endpoint())).as_deref(),
            Some("http://127.0.0.1:40123")
        );
        assert_eq!(
            gateway_base(&c, None, "zeroone-net", Some(&running.endpoint())),
            None,
            "no port claimed yet"
        );
        assert_eq!(
            gateway_base(&c, Some(70000), "zeroone-net", None),
            None,
            "a corrupt port is no address"
        );

        let file: FileConfig =
            toml::from_str("agent_address = \"network\"\nagent_host = \"10.0.0.5\"").unwrap();
        let c = ConfigArgs::default().resolve(file.clone()).unwrap();
        assert_eq!(c.agent_address, AgentAddress::Network);
        // The address the engine reports now, never a name resolved by DNS.
        assert_eq!(
            gateway_base(&c, Some(40123), "zeroone-net", Some(&running.endpoint())).as_deref(),
            Some("http://172.30.0.9:42617")
        );
        assert_eq!(
            gateway_base(&c, Some(40123), "zeroone-net", None),
            None,
            "no container, no address"
        );
        let mut elsewhere = running.clone();
        elsewhere.ip_addresses = [("other-net".to_owned(), "10.1.0.2".to_owned())].into();
        assert_eq!(
            gateway_base(&c, Some(40123), "zeroone-net", Some(&elsewhere.endpoint())),
            None,
            "only the agents' network counts"
        );

        // An agent on a further network is reached there, and only there.
        let mut second = running.clone();
        second.ip_addresses = [("zeroone-net-2".to_owned(), "172.31.0.4".to_owned())].into();
        assert_eq!(
            gateway_base(&c, None, "zeroone-net-2", Some(&second.endpoint())).as_deref(),
            Some("http://172.31.0.4:42617")
        );
        assert_eq!(
            gateway_base(&c, None, "zeroone-net", Some(&second.endpoint())),
            None
        );
        let mut agent = crate::reconciler::testing::agent(crate::status::Status::Running);
        assert_eq!(
            crate::addressing::agent_gateway_base(&c, &agent, Some(&second.endpoint())),
            None,
            "no network recorded: the first"
        );
        agent.network = Some("zeroone-net-2".into());
        assert_eq!(
            crate::addressing::agent_gateway_base(&c, &agent, Some(&second.endpoint())).as_deref(),
            Some("http://172.31.0.4:42617")
        );

        // The flag wins over the file.
        let cli = TestCli::try_parse_from(["t", "--agent-address", "host-port"]).unwrap();
        let c = cli.config.resolve(file).unwrap();
        assert_eq!(c.agent_address, AgentAddress::HostPort);
        assert_eq!(
            gateway_base(&c, Some(40123), "zeroone-net", None).as_deref(),
            Some("http://10.0.0.5:40123")
        );

        assert!(TestCli::try_parse_from(["t", "--agent-address", "dns"]).is_err());
        assert!(toml::from_str::<FileConfig>("agent_address = \"host_port\"").is_err());
    }

    #[test]
    fn agents_per_network_and_network_attach_layer_and_are_checked() {
        let c = ConfigArgs::default()
            .resolve(FileConfig::default())
            .unwrap();
        assert_eq!(c.agents_per_network, 1000);
        assert!(c.network_attach.is_empty());
        let file: FileConfig = toml::from_str(
            "agents_per_network = 500\nnetwork_attach = [\"traefik\", \" \", \"zcaas\"]",
        )
        .unwrap();
        let c = ConfigArgs::default().resolve(file.clone()).unwrap();
        assert_eq!(c.agents_per_network, 500);
        assert_eq!(
            c.network_attach,
            ["traefik", "zcaas"],
            "blank names dropped"
        );
        let cli = TestCli::try_parse_from([
            "t",
            "--agents-per-network",
            "2",
            "--network-attach",
            "edge-a,edge-b",
        ])
        .unwrap();
        let c = cli.config.resolve(file).unwrap();
        assert_eq!(c.agents_per_network, 2, "the flag wins over the file");
        assert_eq!(c.network_attach, ["edge-a", "edge-b"]);
        for bad in ["0", "1001", "5000"] {
            let e = TestCli::try_parse_from(["t", "--agents-per-network", bad])
                .unwrap()
                .config
                .resolve(FileConfig::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("agents_per_network"), "{e}");
        }
        let e = ConfigArgs::default()
            .resolve(toml::from_str("agents_per_network = 1024").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("agents_per_network must be between 1 and 1000"),
            "{e}"
        );
        assert!(TestCli::try_parse_from(["t", "--agents-per-network", "-1"]).is_err());
    }

    #[test]
    fn agent_networks_are_named_after_the_first() {
        use crate::model::{agent_network_index, agent_network_name};
        assert_eq!(agent_network_name("zeroone-net", 1), "zeroone-net");
        assert_eq!(agent_network_name("zeroone-net", 2), "zeroone-net-2");
        assert_eq!(agent_network_name("zeroone-net", 13), "zeroone-net-13");
        for i in 1..30 {
            let name = agent_network_name("zeroone-net", i);
            assert_eq!(agent_network_index("zeroone-net", &name), Some(i));
        }
        for other in [
            "zeroone",
            "zeroone-net-",
            "zeroone-net-1",
            "zeroone-net-02",
            "zeroone-net-x",
            "zeroone-net2",
            "zeroone-net-2-3",
            "other-net-2",
        ] {
            assert_eq!(agent_network_index("zeroone-net", other), None, "{other}");
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(toml::from_str::<FileConfig>("typo_key = 1").is_err());
        let bad: FileConfig = toml::from_str("port_range = [50000, 40000]").unwrap();
        assert!(ConfigArgs::default().resolve(bad).is_err());
        let bad: FileConfig = toml::from_str("[plans.free]\ncpus = 0.0").unwrap();
        assert!(ConfigArgs::default().resolve(bad).is_err());
        let bad: FileConfig = toml::from_str("lease_ttl_secs = 1").unwrap();
        assert!(ConfigArgs::default().resolve(bad).is_err());
        let c = ConfigArgs::default()
            .resolve(FileConfig::default())
            .unwrap();
        assert_eq!(c.lease_ttl, Duration::from_secs(6));
    }
}
