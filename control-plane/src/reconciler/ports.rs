//! Host port claims for agents: unique in the database (a UNIQUE column
//! claimed with one conditional UPDATE, so two deploys can never take the same
//! port) and checked free on the host before the claim.

use rand::Rng;
use std::collections::HashSet;

use super::Context;

/// Errors claiming a port.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("no free host port in {0}-{1}")]
    Exhausted(u16, u16),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Claims a free host port for agent `id` and returns it. Starts at a random
/// point of the range so concurrent deploys rarely contend for one port.
pub async fn claim(ctx: &Context, id: &str) -> Result<u16, PortError> {
    let (lo, hi) = ctx.config.port_range;
    let span = u32::from(hi - lo) + 1;
    let offset = rand::thread_rng().gen_range(0..span);
    let mut taken: HashSet<i64> = ctx
        .store
        .lifecycle()
        .claimed_ports()
        .await?
        .into_iter()
        .collect();
    for i in 0..span {
        let port = lo + ((offset + i) % span) as u16;
        if taken.contains(&i64::from(port)) || !free_on_host(&ctx.config.agent_host, port) {
            continue;
        }
        if ctx.store.lifecycle().try_claim_port(id, port).await? {
            return Ok(port);
        }
        // Lost a race, or the agent already holds one: re-read and go on.
        if let Some(agent) = ctx.store.lifecycle().get(id).await? {
            if let Some(held) = agent.container_port {
                return u16::try_from(held).map_err(|_| PortError::Exhausted(lo, hi));
            }
        }
        taken = ctx
            .store
            .lifecycle()
            .claimed_ports()
            .await?
            .into_iter()
            .collect();
    }
    Err(PortError::Exhausted(lo, hi))
}

/// Whether nothing on the host listens on `host:port` right now.
fn free_on_host(host: &str, port: u16) -> bool {
    std::net::TcpListener::bind((host, port)).is_ok()
}
