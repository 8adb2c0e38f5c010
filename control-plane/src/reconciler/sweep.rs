//! Orphans: objects of this installation that no row names any more — a
//! container whose agent was deleted while its create was still in flight in
//! the daemon, or one left by a crash. The reconciler sweeps orphan
//! *containers* (they hold no data) at start-up and after every resync, once
//! they are older than a grace period. It never removes a volume: an orphan
//! volume (its agent's row gone, perhaps restored from an older backup) is
//! kept and reported; only the owner's DELETE or `zcaas gc --apply
//! --volumes` removes one.
//!
//! Scope: only objects carrying this installation's id count as orphans.
//! Legacy objects (created before installation ids, no
//! [`crate::orchestrator::INSTALLATION_LABEL`]) are adopted by the installation
//! whose rows name them and otherwise reported as unclaimed, never removed;
//! other installations' objects are counted and left alone.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::orchestrator::{ListedWorkload, Orchestrator, Ownership, AGENT_ID_LABEL};
use crate::store::Store;

/// What this installation sees on the engine besides its agents' objects.
#[derive(Debug, Default)]
pub struct Survey {
    /// This installation's agent containers with no row, created before the
    /// grace period began.
    pub orphan_containers: Vec<ListedWorkload>,
    /// This installation's agent volumes with no row (names).
    pub orphan_volumes: Vec<String>,
    /// This installation's networks other than the agents' networks (the
    /// configured one and `<network>-<n>`) (names).
    pub orphan_networks: Vec<String>,
    /// Legacy objects (no installation id) of agents with no row here:
    /// `container <name>` / `volume <name>`. Never removed by zcaas.
    pub unclaimed: Vec<String>,
    /// How many containers, volumes and networks of other installations
    /// are on the engine (never touched).
    pub foreign: usize,
}

/// Looks at every object carrying our labels and sorts out the orphans.
/// Containers created after `now - grace` are never orphans yet. Objects are
/// listed before the rows are read, so an agent created meanwhile (row
/// first, then its container) is never taken for an orphan.
///
/// Errors: the engine or the store failing.
pub async fn survey(
    db: &Store,
    docker: &dyn Orchestrator,
    network: &str,
    grace: std::time::Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<Survey> {
    let containers = docker.list_workloads().await?;
    let volumes = docker.list_managed_volumes().await?;
    let networks = docker.list_managed_networks().await?;
    let known: HashSet<String> = db
        .lifecycle()
        .list_all()
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect();
    let cutoff = now - chrono::Duration::from_std(grace).unwrap_or_default();
    let mut out = Survey::default();
    for c in containers {
        let Some(agent_id) = c.agent_id.as_deref() else {
            continue;
        };
        match docker.ownership(&c.labels) {
            Ownership::Foreign => out.foreign += 1,
            Ownership::Legacy if !known.contains(agent_id) => {
                out.unclaimed.push(format!("container {}", c.name));
            }
            Ownership::Ours
                if !known.contains(agent_id) && c.created_at.is_none_or(|t| t <= cutoff) =>
            {
                out.orphan_containers.push(c);
            }
            _ => {}
        }
    }
    for (name, labels) in volumes {
        let Some(agent_id) = labels.get(AGENT_ID_LABEL) else {
            continue;
        };
        match docker.ownership(&labels) {
            Ownership::Foreign => out.foreign += 1,
            Ownership::Legacy if !known.contains(agent_id) => {
                out.unclaimed.push(format!("volume {name}"));
            }
            Ownership::Ours if !known.contains(agent_id) => out.orphan_volumes.push(name),
            _ => {}
        }
    }
    for (name, labels) in networks {
        match docker.ownership(&labels) {
            Ownership::Foreign => out.foreign += 1,
            Ownership::Ours
                if docker.installation().is_some()
                    && crate::model::agent_network_index(network, &name).is_none() =>
            {
                out.orphan_networks.push(name);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Memory of what a sweep already reported, so that each orphan volume,
/// unclaimed object and change in the count of other installations' objects
/// is logged once, not at every sweep.
#[derive(Debug, Default)]
pub struct Reported {
    seen: std::sync::Mutex<(HashSet<String>, Option<usize>)>,
}

/// One sweep: removes this installation's orphan containers older than
/// `grace` (forced, with their anonymous volumes; never a named volume) and
/// reports orphan volumes, unclaimed legacy objects and other installations'
/// objects. Returns how many containers were removed.
pub async fn sweep(
    db: &Store,
    docker: &dyn Orchestrator,
    network: &str,
    grace: std::time::Duration,
    reported: &Reported,
) -> anyhow::Result<usize> {
    let survey = survey(db, docker, network, grace, Utc::now()).await?;
    let mut removed = 0;
    for c in &survey.orphan_containers {
        tracing::info!(container = %c.name, agent_id = ?c.agent_id, "removing orphaned container (its agent has no row)");
        docker.remove(&c.id).await?;
        removed += 1;
    }
    let mut seen = reported.seen.lock().unwrap_or_else(|e| e.into_inner());
    for name in &survey.orphan_volumes {
        if seen.0.insert(format!("volume {name}")) {
            tracing::warn!(volume = %name, "orphaned data volume kept (its agent has no row); `zcaas gc --apply --volumes` removes it");
        }
    }
    for what in &survey.unclaimed {
        if seen.0.insert(what.clone()) {
            tracing::warn!(object = %what, "unclaimed object from before installation ids: no agent of this installation names it; left alone");
        }
    }
    if seen.1 != Some(survey.foreign) {
        seen.1 = Some(survey.foreign);
        if survey.foreign > 0 {
            tracing::info!(
                count = survey.foreign,
                "objects of other zcaas installations share this engine; leaving them alone"
            );
        }
    }
    Ok(removed)
}
