//! What an end-to-end test needs besides the control plane: a labelled
//! [`TestScope`], the images, the test's own network, and the provider
//! stand-in running on it.

use std::process::Command;

use zcaas::docker::MANAGED_LABEL;

use crate::api::Api;
use crate::images::{ensure_agent_image, ensure_stub_image, STUB_IMAGE, STUB_PORT};
use crate::scope::{TestScope, TEST_LABEL};

/// A [`TestScope`] (prefix, runtime, cleanup by label; reached through
/// `Deref`) with the agent and stand-in images built, a network
/// `<prefix>-net`, and the provider stand-in `<prefix>-provider` on it.
pub struct World {
    pub scope: TestScope,
    /// The test's network: agents and the provider stand-in are on it.
    pub network: String,
    /// `custom:<url>` provider value that reaches the stand-in from agents.
    pub provider: String,
}

impl std::ops::Deref for World {
    type Target = TestScope;
    fn deref(&self) -> &TestScope {
        &self.scope
    }
}

impl World {
    /// Builds the images (once per process), creates the test network and
    /// starts the provider stand-in.
    pub async fn start() -> World {
        init_tracing();
        let scope = TestScope::new().await;
        ensure_agent_image(&scope.docker).await;
        ensure_stub_image(&scope.docker).await;
        let network = scope.network().await;
        let stub = format!("{}-provider", scope.prefix);
        run_stub(&scope.prefix, &stub, &network);
        World {
            provider: format!("custom:http://{stub}:{STUB_PORT}/v1"),
            scope,
            network,
        }
    }

    /// A client of a control plane of this world listening at `base`.
    pub fn api(&self, base: String) -> Api {
        Api::new(base, &self.prefix, &self.provider)
    }
}

/// Runs the provider stand-in container `name` on `network`, labelled as
/// the test's.
fn run_stub(prefix: &str, name: &str, network: &str) {
    let out = Command::new("docker")
        .args([
            "run",
            "-d",
            "--restart",
            "unless-stopped",
            "--name",
            name,
            "--network",
            network,
        ])
        .args([
            "--label",
            &format!("{MANAGED_LABEL}=true"),
            "--label",
            &format!("{TEST_LABEL}={prefix}"),
        ])
        .args(["-e", &format!("PORT={STUB_PORT}"), STUB_IMAGE])
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker run provider stub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The control plane's logs in the test's output (`RUST_LOG`, default
/// `zcaas=info`); a no-op when a subscriber is already installed.
pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("zcaas=info")),
        )
        .with_test_writer()
        .try_init();
}
