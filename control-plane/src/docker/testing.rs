//! Helpers for tests that run against the real engine (this crate's
//! `tests/docker_*.rs` and the end-to-end crate): a labelled scope that
//! cleans up even on panic, the workspace's binaries, the provider-stub
//! image, free host ports. Not part of the product.

use super::cleanup::CleanupOnDrop;
use super::{ContainerSpec, DockerError, DockerRuntime, AGENT_ID_LABEL};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The label key tests put on everything they create.
pub const TEST_LABEL: &str = "io.zcaas.test";
/// Tag of the provider-stub image built by [`ensure_stub_image`].
pub const STUB_IMAGE: &str = "zcaas/provider-stub:test";

/// The stub image's Dockerfile: the static binary, a data directory the
/// agent user owns (so it can be the image side of an agent's volume), no
/// shell, no CA bundle.
pub const STUB_DOCKERFILE: &str = "FROM scratch\n\
COPY provider-stub /provider-stub\n\
COPY --chown=65534:65534 zeroclaw-data /zeroclaw-data\n\
USER 65534:65534\n\
EXPOSE 8080\n\
ENTRYPOINT [\"/provider-stub\"]\n";

/// One test's world: a random prefix, a runtime that labels everything
/// `io.zcaas.test=<prefix>`, and a guard that removes all of it on drop
/// (keep the scope alive for the whole test).
pub struct TestScope {
    pub prefix: String,
    pub docker: DockerRuntime,
    _cleanup: CleanupOnDrop,
}

impl TestScope {
    /// Connects with a fresh random prefix (`t` + 10 hex digits).
    pub async fn new() -> Result<Self, DockerError> {
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let cleanup = CleanupOnDrop::new(TEST_LABEL, prefix.clone());
        let labels = BTreeMap::from([(TEST_LABEL.to_owned(), prefix.clone())]);
        let docker = DockerRuntime::connect(labels).await?;
        Ok(TestScope {
            prefix,
            docker,
            _cleanup: cleanup,
        })
    }

    /// A spec named after the prefix and `suffix`, on `network`, publishing
    /// `host_port`, with 64 MiB and half a CPU.
    pub fn spec(&self, suffix: &str, image: &str, network: &str, host_port: u16) -> ContainerSpec {
        let slug = format!("{}-{suffix}", self.prefix);
        let agent_id = format!("agent-{slug}");
        let mut labels = self.docker.ownership_labels();
        labels.insert(AGENT_ID_LABEL.to_owned(), agent_id.clone());
        ContainerSpec {
            agent_id,
            name: format!("zeroclaw-{slug}"),
            image: image.to_owned(),
            network: network.to_owned(),
            host_port,
            memory_bytes: 64 * 1024 * 1024,
            nano_cpus: 500_000_000,
            env: Vec::new(),
            volume: format!("zeroclaw-{slug}-data"),
            host: format!("{slug}.agents.test"),
            traefik_entrypoint: "websecure".to_owned(),
            traefik_cert_resolver: "letsencrypt".to_owned(),
            spec_hash: "test".to_owned(),
            labels,
            slug,
        }
    }
}

/// `<target>/x86_64-unknown-linux-gnu`, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("x86_64-unknown-linux-gnu")
}

/// The static provider-stub binary (debug build), or an error saying how to
/// build it.
pub fn provider_stub_binary() -> Result<PathBuf, DockerError> {
    let path = target_dir().join("debug/provider-stub");
    if path.is_file() {
        Ok(path)
    } else {
        Err(DockerError::Other(format!(
            "{} is missing: run `cargo build -p zcaas-tests --bin provider-stub` first",
            path.display()
        )))
    }
}

/// The static release agent-runtime binary, or an error saying how to build it.
pub fn agent_runtime_binary() -> Result<PathBuf, DockerError> {
    let path = std::env::var_os("ZCAAS_AGENT_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release/agent-runtime"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(DockerError::Other(format!(
            "{} is missing: run `cargo build --release -p agent-runtime` first",
            path.display()
        )))
    }
}

/// Builds [`STUB_IMAGE`] from [`provider_stub_binary`], once per process
/// (so a stale image is never tested, and parallel tests build it once).
pub async fn ensure_stub_image(docker: &DockerRuntime) -> Result<(), DockerError> {
    static BUILT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_try_init(|| build_stub_image(docker))
        .await
        .map(|_| ())
}

async fn build_stub_image(docker: &DockerRuntime) -> Result<(), DockerError> {
    let binary = provider_stub_binary()?;
    let contents = std::fs::read(&binary)
        .map_err(|e| DockerError::Other(format!("reading {}: {e}", binary.display())))?;
    let files = [
        ("provider-stub".to_owned(), contents, 0o755),
        ("zeroclaw-data/".to_owned(), Vec::new(), 0o755),
    ];
    docker
        .build_image_from_context(STUB_IMAGE, STUB_DOCKERFILE, &files)
        .await
}

/// A TCP port free on 127.0.0.1 right now (bind to 0, read, release).
pub fn free_port() -> Result<u16, DockerError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| DockerError::Other(format!("binding a probe port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| DockerError::Other(format!("reading the probe port: {e}")))
}
