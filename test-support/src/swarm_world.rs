//! What a swarm end-to-end test needs (issue 15): a [`SwarmCluster`] with
//! the agent and provider stand-in images loaded, an attachable overlay
//! network for the agents, the provider stand-in on it, and a way in from
//! the host — which is in none of the nodes' namespaces and cannot reach an
//! overlay address itself.
//!
//! | object | name / place |
//! |---|---|
//! | agents' network | `<tag>-agents`: overlay, attachable, labelled `io.zcaas.managed=true` and `io.zcaas.test=<prefix>`; zcaas's `ensure_network` finds it by name |
//! | provider stand-in | container `<tag>-provider` on node 0 ([`STUB_IMAGE`], `PORT=8080`), on `<tag>-agents`; agents reach it at `custom:http://<its overlay IP>:8080/v1` (agents resolve no names here) |
//! | way in | an [`HttpProxy`] whose upstream connections are opened in the provider container's network namespace: any overlay address of any node, through `http://127.0.0.1:<port>` |
//!
//! `<tag>` is the cluster's run tag (`zcsw-R`): the cluster's teardown
//! removes everything, and [`crate::swarm::leftovers`] checks it.
//! `<prefix>` is a fresh [`random_prefix`], the test label's value (and the
//! prefix of the test's slugs and accounts).
//!
//! The nodes share the host's PID namespace, so `/proc/<State.Pid>/ns/net`
//! of any container of any node is its network namespace as seen from the
//! host ([`SwarmWorld::netns_of`]); [`SwarmWorld::relay_to`] opens a
//! [`TcpRelay`] into one.
//!
//! The docker CLI calls here are synchronous (bounded by
//! [`SwarmCluster::docker`]'s 60 s).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context as _;
use zcaas::docker::{DockerRuntime, MANAGED_LABEL};

use crate::images::{ensure_agent_image, ensure_stub_image, AGENT_IMAGE, STUB_IMAGE, STUB_PORT};
use crate::netns::{HttpProxy, TcpRelay};
use crate::scope::{random_prefix, test_labels, TEST_LABEL};
use crate::swarm::SwarmCluster;

/// A swarm with the test's images, network, provider stand-in and proxy.
/// Dropping it stops the proxy, then tears the cluster down (fields drop
/// in declaration order); [`SwarmWorld::shutdown`] does the same and
/// reports what is left.
pub struct SwarmWorld {
    /// First: it holds the provider container's namespace; gone before the
    /// cluster.
    proxy: HttpProxy,
    /// The nodes (node 0 the manager).
    pub cluster: SwarmCluster,
    /// The test label's value (`io.zcaas.test=<prefix>`).
    pub prefix: String,
    /// `io.zcaas.test=<prefix>`: the extra labels of a control plane of
    /// this world.
    pub labels: BTreeMap<String, String>,
    /// The agents' overlay network, `<tag>-agents`.
    pub network: String,
    /// `custom:http://<stand-in's overlay IP>:8080/v1`.
    pub provider: String,
    /// The provider stand-in's container name, `<tag>-provider`, on node 0.
    pub provider_container: String,
    /// The provider stand-in's address on [`Self::network`].
    pub provider_ip: IpAddr,
    /// `/proc/<pid>/ns/net` of the provider stand-in.
    provider_netns: PathBuf,
}

impl SwarmWorld {
    /// Builds the agent and stand-in images on the machine's daemon (once
    /// per process), starts a swarm of `nodes` with both loaded, creates
    /// the network, runs the stand-in and starts the proxy.
    ///
    /// # Errors
    /// The step that failed; the cluster is torn down first.
    pub async fn start(nodes: usize) -> anyhow::Result<SwarmWorld> {
        Self::start_with_images(nodes, &[]).await
    }

    /// [`Self::start`], with `extra` images (tags on the machine's daemon,
    /// built beforehand, e.g. [`crate::ensure_traefik_image`]) also loaded
    /// into every node.
    ///
    /// # Errors
    /// As [`Self::start`].
    pub async fn start_with_images(nodes: usize, extra: &[&str]) -> anyhow::Result<SwarmWorld> {
        crate::world::init_tracing();
        let docker = DockerRuntime::connect(Default::default())
            .await
            .context("connecting to the machine's Docker daemon")?;
        ensure_agent_image(&docker).await;
        ensure_stub_image(&docker).await;
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        tokio::task::spawn_blocking(move || Self::start_blocking_with_images(nodes, &extra))
            .await
            .context("the swarm world's start panicked")?
    }

    /// [`Self::start`] for images already built ([`ensure_agent_image`],
    /// [`ensure_stub_image`]), blocking.
    ///
    /// # Errors
    /// As [`Self::start`].
    pub fn start_blocking(nodes: usize) -> anyhow::Result<SwarmWorld> {
        Self::start_blocking_with_images(nodes, &[])
    }

    /// [`Self::start_blocking`] with `extra` images loaded too.
    fn start_blocking_with_images(nodes: usize, extra: &[String]) -> anyhow::Result<SwarmWorld> {
        let mut images = vec![AGENT_IMAGE, STUB_IMAGE];
        images.extend(extra.iter().map(String::as_str));
        let cluster = SwarmCluster::start(nodes, &images)?;
        let tag = cluster.tag().to_owned();
        let prefix = random_prefix();
        let network = format!("{tag}-agents");
        let provider_container = format!("{tag}-provider");
        let managed = format!("{MANAGED_LABEL}=true");
        let test = format!("{TEST_LABEL}={prefix}");
        cluster
            .docker(
                0,
                &[
                    "network",
                    "create",
                    "--driver",
                    "overlay",
                    "--attachable",
                    "--label",
                    &managed,
                    "--label",
                    &test,
                    &network,
                ],
            )
            .with_context(|| format!("[{tag}] creating the overlay network {network}"))?;
        cluster
            .docker(
                0,
                &[
                    "run",
                    "--detach",
                    "--name",
                    &provider_container,
                    "--network",
                    &network,
                    "--label",
                    &managed,
                    "--label",
                    &test,
                    "--env",
                    &format!("PORT={STUB_PORT}"),
                    STUB_IMAGE,
                ],
            )
            .with_context(|| format!("[{tag}] starting the provider stand-in"))?;
        let provider_ip = container_ip(&cluster, 0, &provider_container, &network)?;
        let provider_netns = container_netns(&cluster, 0, &provider_container)?;
        let proxy = HttpProxy::start(&provider_netns)
            .with_context(|| format!("[{tag}] the proxy into {provider_container}"))?;
        Ok(SwarmWorld {
            proxy,
            cluster,
            labels: test_labels(&prefix),
            prefix,
            provider: format!("custom:http://{provider_ip}:{STUB_PORT}/v1"),
            network,
            provider_container,
            provider_ip,
            provider_netns,
        })
    }

    /// The cluster's run tag (`zcsw-R`).
    pub fn tag(&self) -> &str {
        self.cluster.tag()
    }

    /// The proxy into the overlay (`http://127.0.0.1:<port>`), for
    /// `reqwest::Proxy::http` or zcaas's `agent_proxy`.
    pub fn proxy_url(&self) -> String {
        self.proxy.url()
    }

    /// The proxy itself.
    pub fn proxy(&self) -> &HttpProxy {
        &self.proxy
    }

    /// The manager's endpoint, `unix:///tmp/<tag>/n1.sock` (zcaas's
    /// `docker_host`).
    pub fn manager_host(&self) -> String {
        format!("unix://{}", self.cluster.manager_socket().display())
    }

    /// The provider stand-in's network namespace (`/proc/<pid>/ns/net`).
    pub fn provider_netns(&self) -> &std::path::Path {
        &self.provider_netns
    }

    /// `/proc/<pid>/ns/net` of `container` (a name or id) on node `node`:
    /// its network namespace as seen from the host. Valid while the
    /// container's process runs.
    ///
    /// # Errors
    /// The container is unknown on that node or not running.
    pub fn netns_of(&self, node: usize, container: &str) -> anyhow::Result<PathBuf> {
        container_netns(&self.cluster, node, container)
    }

    /// `container`'s address on `network`, from node `node`'s daemon.
    ///
    /// # Errors
    /// The container is unknown there or not on that network.
    pub fn ip_of(&self, node: usize, container: &str, network: &str) -> anyhow::Result<IpAddr> {
        container_ip(&self.cluster, node, container, network)
    }

    /// A [`TcpRelay`] from `127.0.0.1:<port>` on the host to
    /// `127.0.0.1:port` inside `container`'s network namespace (a port it
    /// listens on on all its addresses, as Traefik's 443 or a gateway's
    /// 42617).
    ///
    /// # Errors
    /// As [`Self::netns_of`], or the relay cannot start.
    pub fn relay_to(&self, node: usize, container: &str, port: u16) -> anyhow::Result<TcpRelay> {
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        self.relay_into(node, container, target)
    }

    /// A [`TcpRelay`] to `target` opened from inside `container`'s network
    /// namespace (e.g. another task's overlay address).
    ///
    /// # Errors
    /// As [`Self::relay_to`].
    pub fn relay_into(
        &self,
        node: usize,
        container: &str,
        target: SocketAddr,
    ) -> anyhow::Result<TcpRelay> {
        let netns = self.netns_of(node, container)?;
        TcpRelay::start(&netns, target)
    }

    /// Stops the proxy, then tears the cluster down and checks that nothing
    /// of it is left ([`SwarmCluster::shutdown`]).
    ///
    /// # Errors
    /// As [`SwarmCluster::shutdown`].
    pub fn shutdown(self) -> anyhow::Result<()> {
        let SwarmWorld { proxy, cluster, .. } = self;
        drop(proxy);
        cluster.shutdown()
    }
}

fn container_netns(
    cluster: &SwarmCluster,
    node: usize,
    container: &str,
) -> anyhow::Result<PathBuf> {
    let pid = cluster
        .docker(node, &["inspect", "--format", "{{.State.Pid}}", container])
        .with_context(|| format!("the pid of {container} on node {node}"))?;
    let pid: u32 = pid
        .parse()
        .with_context(|| format!("the pid of {container} on node {node}: {pid:?}"))?;
    anyhow::ensure!(pid != 0, "{container} on node {node} is not running");
    Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
}

fn container_ip(
    cluster: &SwarmCluster,
    node: usize,
    container: &str,
    network: &str,
) -> anyhow::Result<IpAddr> {
    let format = format!(
        "{{{{with index .NetworkSettings.Networks {network:?}}}}}{{{{.IPAddress}}}}{{{{end}}}}"
    );
    let ip = cluster
        .docker(node, &["inspect", "--format", &format, container])
        .with_context(|| format!("the address of {container} on {network} (node {node})"))?;
    ip.parse()
        .with_context(|| format!("{container} has no address on {network} (node {node}): {ip:?}"))
}
