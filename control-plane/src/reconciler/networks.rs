//! The agents' networks. One Linux bridge takes at most 1 024 ports, so a
//! fleet is spread over several networks of at most `agents_per_network`
//! agents each: the configured `network`, then `<network>-2`, `<network>-3`,
//! … ([`crate::model::agent_network_name`]). An agent's network is claimed
//! in the store at its first deploy ([`claim`]) and never changes.
//!
//! Whatever must reach agents over their network — Traefik, and zcaas
//! itself when it runs in a container in `network` mode — is named in
//! `network_attach` and connected to every agents' network zcaas ensures:
//! at start-up for every network in use ([`attach_in_use`]), when a
//! network is first used by this process ([`claim`]), and again every
//! [`ATTACH_INTERVAL`] ([`keep_attached`]: a recreated Traefik comes back
//! on its compose networks only). A listed container that does not exist
//! is a warning, never a failed deploy.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::config::Config;
use crate::model::Agent;
use crate::orchestrator::Orchestrator;
use crate::store::Store;

/// How often every replica checks that the `network_attach` containers are
/// on every agents' network in use (one store query and one inspect per
/// listed container).
pub const ATTACH_INTERVAL: Duration = Duration::from_secs(10);

/// Networks this process already ensured and attached the edge containers
/// to, so a deploy on a known network costs no more engine calls than
/// before (the periodic [`keep_attached`] catches containers recreated
/// since).
#[derive(Debug, Default)]
pub struct Attached(Mutex<HashSet<String>>);

impl Attached {
    fn contains(&self, network: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(network)
    }

    fn insert(&self, network: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(network.to_owned());
    }
}

/// The agents' network of `agent`: the one it holds, or one claimed now
/// (the lowest-numbered with room, [`crate::store::LifecycleStore::claim_network`]).
/// The network is ensured on the engine; the first time this process uses
/// it, the `network_attach` containers are connected to it. Returns the
/// agent with its network recorded.
///
/// Errors: the store or the engine failing, or the agent's row gone.
pub async fn claim(ctx: &Context, attached: &Attached, agent: &Agent) -> anyhow::Result<Agent> {
    let config = &ctx.config;
    let network = match &agent.network {
        Some(network) => network.clone(),
        None => ctx
            .store
            .lifecycle()
            .claim_network(&agent.id, &config.network, config.agents_per_network)
            .await
            .context("claiming an agents' network")?
            .ok_or_else(|| anyhow::anyhow!("the agent's row is gone"))?,
    };
    ctx.orchestrator
        .ensure_network(&network)
        .await
        .with_context(|| format!("ensuring the agents' network {network}"))?;
    if !attached.contains(&network) {
        if agent.network.is_none() {
            tracing::info!(agent_id = %agent.id, slug = %agent.slug, network = %network,
                "agents' network claimed");
        }
        attach(
            ctx.orchestrator.as_ref(),
            config,
            std::slice::from_ref(&network),
            true,
        )
        .await;
        attached.insert(&network);
    }
    Ok(Agent {
        network: Some(network),
        ..agent.clone()
    })
}

/// Connects every `network_attach` container to each of `networks` it is
/// not on yet. Failures are logged (as warnings when `loud`, else at debug
/// level: the periodic check repeats them every few seconds), never
/// returned: a missing Traefik must not stop agents from deploying.
pub async fn attach(
    orchestrator: &dyn Orchestrator,
    config: &Config,
    networks: &[String],
    loud: bool,
) {
    if networks.is_empty() {
        return;
    }
    for container in &config.network_attach {
        match orchestrator.attach_to_networks(container, networks).await {
            Ok(connected) => {
                for network in connected {
                    tracing::info!(container = %container, network = %network,
                        "attached to the agents' network");
                }
            }
            Err(e) if loud => tracing::warn!(container = %container, networks = ?networks,
                error = %e, "could not attach a network_attach container to the agents' networks"),
            Err(e) => tracing::debug!(container = %container, networks = ?networks,
                error = %e, "could not attach a network_attach container to the agents' networks"),
        }
    }
}

/// Every agents' network in use (the first always included), ensured and
/// with the `network_attach` containers connected: the start-up step,
/// before the reconciler runs. Returns the networks.
///
/// Errors: the store or the engine failing to ensure a network.
pub async fn attach_in_use(
    store: &Store,
    orchestrator: &dyn Orchestrator,
    config: &Config,
) -> anyhow::Result<Vec<String>> {
    let networks = in_use(store, config).await?;
    for network in &networks {
        orchestrator
            .ensure_network(network)
            .await
            .with_context(|| format!("network {network}"))?;
    }
    attach(orchestrator, config, &networks, true).await;
    Ok(networks)
}

/// The agents' networks in use, the first one always included (sorted,
/// distinct).
async fn in_use(store: &Store, config: &Config) -> anyhow::Result<Vec<String>> {
    let mut networks = store
        .lifecycle()
        .networks_in_use(&config.network)
        .await
        .context("listing the agents' networks in use")?;
    if !networks.contains(&config.network) {
        networks.push(config.network.clone());
        networks.sort();
    }
    Ok(networks)
}

/// Every [`ATTACH_INTERVAL`] until `cancel` fires: the `network_attach`
/// containers connected to every agents' network in use (nothing to do
/// without any listed). Runs on every replica: each may list its own
/// container.
pub async fn keep_attached(
    store: Store,
    orchestrator: std::sync::Arc<dyn Orchestrator>,
    config: std::sync::Arc<Config>,
    cancel: CancellationToken,
) {
    if config.network_attach.is_empty() {
        return;
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(ATTACH_INTERVAL) => {}
        }
        match in_use(&store, &config).await {
            Ok(networks) => attach(orchestrator.as_ref(), &config, &networks, false).await,
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "network attach check"),
        }
    }
}
