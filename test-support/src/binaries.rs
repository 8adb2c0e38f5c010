//! Where the workspace's binaries are: the static release agent-runtime the
//! agent image is built from, and the binaries cargo built next to the
//! running test or example (`provider-stub`, `hostile-agent`, `zcaas-e2e`,
//! `zcaas`). A missing binary is an error that says how to build it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

/// `<target>/x86_64-unknown-linux-gnu` (every build targets it, see
/// `.cargo/config.toml`), honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("x86_64-unknown-linux-gnu")
}

/// The static agent-runtime binary of the `agent` profile, the one that
/// ships (`scripts/test.sh` builds it first), or `ZCAAS_AGENT_BINARY`.
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("ZCAAS_AGENT_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("agent/agent-runtime"));
    if !path.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --profile agent -p agent-runtime` (scripts/test.sh does)",
            path.display()
        );
    }
    Ok(path)
}

/// The profile directory of the running executable (`…/debug` or
/// `…/release`): test binaries live in its `deps/`, examples in its
/// `examples/`, and the workspace's binaries in it.
pub fn profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .and_then(Path::parent)
        .context("the running executable has no profile directory")?
        .to_path_buf())
}

/// The binary `name` of the running executable's profile; `build` says how
/// to build it when it is missing (e.g. `cargo build -p zcaas-tests --bins`).
pub fn built_binary(name: &str, build: &str) -> anyhow::Result<PathBuf> {
    let path = profile_dir()?.join(name);
    if !path.is_file() {
        bail!("{} is missing: {build}", path.display());
    }
    Ok(path)
}

/// The `provider-stub` binary of this profile (the end-to-end crate builds
/// it; control-plane's Docker tests need it built first).
pub fn provider_stub_binary() -> anyhow::Result<PathBuf> {
    built_binary(
        "provider-stub",
        "run `cargo build -p zcaas-tests --bin provider-stub` (with `--release` for a release build) first",
    )
}
