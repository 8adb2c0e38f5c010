//! The docker CLI as tests use it to look behind the control plane's back:
//! inspect, list an agent's containers, check a volume, run any command.

use std::process::Command;

use anyhow::bail;
use serde_json::Value;
use zcaas::docker::AGENT_ID_LABEL;

/// Runs a docker CLI command and returns its trimmed stdout; fails on a
/// non-zero exit (which a test may expect).
pub fn docker_cli(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker").args(args).output()?;
    if !out.status.success() {
        bail!("docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Ids of every container (running or not) labelled with agent `agent_id`.
pub fn agent_containers(agent_id: &str) -> Vec<String> {
    docker_cli(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label={AGENT_ID_LABEL}={agent_id}"),
    ])
    .map(|s| s.lines().map(str::to_owned).collect())
    .unwrap_or_default()
}

/// `docker inspect` of one object (container, image, network, volume) as
/// JSON; `None` when it does not exist.
pub fn docker_inspect(what: &str) -> Option<Value> {
    let out = Command::new("docker")
        .args(["inspect", what])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get(0).cloned()
}

/// Whether a volume named `name` exists.
pub fn volume_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
