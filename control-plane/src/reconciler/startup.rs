//! What the reconciler does once at start-up, before the API serves: adopt
//! the labelled containers that match rows (nothing to do: the first pass
//! finds them by name), remove orphans — containers and volumes that carry an
//! agent id with no row — and let the first resync resume rows left
//! mid-transition (STARTING, STOPPING) by a previous process.

use std::collections::HashSet;

use super::Context;
use crate::db::lifecycle;
use crate::docker::AGENT_ID_LABEL;

/// Removes orphaned agent containers and volumes. Only objects carrying our
/// labels (and the runtime's extra labels) are ever looked at.
pub async fn remove_orphans(ctx: &Context) -> anyhow::Result<()> {
    let known: HashSet<String> = lifecycle::list_all(&ctx.db)
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect();
    for c in ctx.docker.list_managed().await? {
        if let Some(agent_id) = c.agent_id.as_deref() {
            if !known.contains(agent_id) {
                tracing::info!(container = %c.name, agent_id, "removing orphaned container");
                ctx.docker.remove_container(&c.id).await?;
            }
        }
    }
    for (name, labels) in ctx.docker.list_managed_volumes().await? {
        if let Some(agent_id) = labels.get(AGENT_ID_LABEL) {
            if !known.contains(agent_id) {
                tracing::info!(volume = %name, agent_id, "removing orphaned volume");
                ctx.docker.remove_volume(&name).await?;
            }
        }
    }
    Ok(())
}
