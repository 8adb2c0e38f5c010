//! `zcaas gc`: lists this installation's orphans — agent containers and
//! data volumes whose agent has no row, and networks it created other than
//! the configured one — and, with `--apply`, removes them (volumes only with
//! `--volumes`). It is the one way besides an owner's DELETE that a data
//! volume is ever removed. Legacy objects (from before installation ids)
//! that no row names, and other installations' objects, are listed and
//! never removed.

use anyhow::Context as _;
use chrono::Utc;
use std::fmt::Write as _;

use crate::config::Config;
use crate::docker::DockerRuntime;
use crate::reconciler::sweep;
use crate::store::Store;

/// What `zcaas gc` does besides listing.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcOptions {
    /// Remove orphan containers and networks.
    pub apply: bool,
    /// With `apply`: remove orphan data volumes too (their agents' memory is
    /// lost).
    pub volumes: bool,
}

/// Surveys the engine for `db`'s installation (containers younger than the
/// configured `orphan_grace` are not orphans yet), removes what `options`
/// ask for, and returns the report, one line per object.
///
/// Errors: the store or the engine failing. A network the engine refuses to
/// remove (containers still attached) is reported, not an error.
pub async fn run(config: &Config, db: &Store, options: GcOptions) -> anyhow::Result<String> {
    let installation = db.admin().installation_id().await?;
    let docker = DockerRuntime::connect(config.extra_labels.clone())
        .await
        .context("connecting to Docker")?
        .with_installation(installation.clone());
    let found = sweep::survey(
        db,
        &docker,
        &config.network,
        config.orphan_grace,
        Utc::now(),
    )
    .await?;
    let mut out = String::new();
    let _ = writeln!(out, "installation {installation}");
    let verb = |removing: bool| if removing { "removed" } else { "orphan" };
    for c in &found.orphan_containers {
        if options.apply {
            docker.remove_container(&c.id).await?;
        }
        let agent = c.agent_id.as_deref().unwrap_or("?");
        let _ = writeln!(
            out,
            "{} container {} (agent {agent})",
            verb(options.apply),
            c.name
        );
    }
    let remove_volumes = options.apply && options.volumes;
    for name in &found.orphan_volumes {
        if remove_volumes {
            docker.remove_volume(name).await?;
        }
        let _ = writeln!(out, "{} volume {name}", verb(remove_volumes));
    }
    for name in &found.orphan_networks {
        let line = match options.apply {
            true => match docker.remove_network(name).await {
                Ok(()) => format!("removed network {name}"),
                Err(e) => format!("orphan network {name} (not removed: {e})"),
            },
            false => format!("orphan network {name}"),
        };
        let _ = writeln!(out, "{line}");
    }
    for what in &found.unclaimed {
        let _ = writeln!(
            out,
            "unclaimed {what} (from before installation ids; no agent here names it; never removed by zcaas)"
        );
    }
    let _ = writeln!(
        out,
        "{} object(s) of other installations on this engine (left alone)",
        found.foreign
    );
    if !options.apply {
        let _ = writeln!(
            out,
            "nothing removed: `zcaas gc --apply` removes orphan containers and networks, `--apply --volumes` orphan volumes too"
        );
    } else if !options.volumes && !found.orphan_volumes.is_empty() {
        let _ = writeln!(out, "volumes kept: add --volumes to remove them");
    }
    Ok(out)
}
