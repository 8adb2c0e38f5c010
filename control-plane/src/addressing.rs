//! How the control plane reaches an agent's gateway, following
//! `agent_address` ([`crate::config::AgentAddress`]): the reconciler (pairing,
//! health) and the HTTP layer (message and health proxy) both ask here.

use crate::config::{AgentAddress, Config};
use crate::model::Agent;
use crate::orchestrator::{Endpoint, Orchestrator, OrchestratorError, AGENT_PORT};

/// The base URL of an agent's gateway (pure). `host-port` mode:
/// `http://<agent_host>:<port>` with the row's claimed host port (`None`
/// before one is claimed, or for a stored port out of range). `network`
/// mode: `http://<ip>:42617` with the address the engine reports *now* for
/// the workload (`endpoint`) on `network`, the agent's own agents' network
/// ([`Agent::network_or`]) — never a name resolved through DNS, whose
/// cached answer could point at another container after a restart (`None`
/// without such a container or address).
pub fn gateway_base(
    config: &Config,
    port: Option<i64>,
    network: &str,
    endpoint: Option<&Endpoint>,
) -> Option<String> {
    match config.agent_address {
        AgentAddress::HostPort => {
            let port = u16::try_from(port?).ok()?;
            Some(format!("http://{}:{port}", config.agent_host))
        }
        AgentAddress::Network => {
            let ip = endpoint?.ip_addresses.get(network)?;
            Some(format!("http://{ip}:{AGENT_PORT}"))
        }
    }
}

/// The base URL of `agent`'s gateway given `endpoint`, what the engine
/// reports for its workload now (pure; see [`gateway_base`]). For callers
/// that observe many workloads at once (one listing per poll) instead of
/// inspecting each.
pub fn agent_gateway_base(
    config: &Config,
    agent: &Agent,
    endpoint: Option<&Endpoint>,
) -> Option<String> {
    gateway_base(
        config,
        agent.container_port,
        agent.network_or(&config.network),
        endpoint,
    )
}

/// The base URL the control plane reaches `agent`'s gateway on now
/// ([`gateway_base`]); in `network` mode the agent's container is inspected
/// (only one carrying this agent's id and owned by this installation
/// counts). `Ok(None)`: no gateway yet.
///
/// Errors: the engine failing (network mode only).
pub async fn agent_base_url(
    orchestrator: &dyn Orchestrator,
    config: &Config,
    agent: &Agent,
) -> Result<Option<String>, OrchestratorError> {
    let endpoint = match config.agent_address {
        AgentAddress::HostPort => None,
        AgentAddress::Network => orchestrator
            .inspect(&agent.container_name())
            .await?
            .filter(|c| {
                c.agent_id.as_deref() == Some(agent.id.as_str()) && orchestrator.is_owned(&c.labels)
            })
            .map(|c| c.endpoint()),
    };
    Ok(agent_gateway_base(config, agent, endpoint.as_ref()))
}
