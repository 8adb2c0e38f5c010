//! One test's corner of the Docker engine: a random prefix, the label that
//! marks everything the test creates with it, and the guard that removes all
//! of it by that label when the test ends — even when it panics.

use std::collections::BTreeMap;
use std::process::Command;

use zcaas::docker::{ContainerSpec, DockerRuntime, AGENT_ID_LABEL, MANAGED_LABEL};
use zcaas::runtime_profile::RuntimeProfile;

/// The label key tests put on everything they create (with
/// `io.zcaas.managed=true`); its value is the test's prefix.
pub const TEST_LABEL: &str = "io.zcaas.test";

/// A short random prefix that names one test's objects: `t` + 10 hex digits,
/// a valid start of a slug, a container name and a network name.
pub fn random_prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// `io.zcaas.test=<prefix>`: the extra label a runtime or a control plane of
/// the test puts on everything it creates.
pub fn test_labels(prefix: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(TEST_LABEL.to_owned(), prefix.to_owned())])
}

/// Removes every container, volume and network labelled
/// `io.zcaas.test=<prefix>` and `io.zcaas.managed=true` when dropped, and
/// nothing else. Uses the docker CLI synchronously, so it works inside or
/// outside a Tokio runtime and during a panic's unwinding.
pub struct Cleanup {
    pub prefix: String,
}

impl Cleanup {
    /// A guard for `io.zcaas.test=<prefix>`.
    pub fn new(prefix: impl Into<String>) -> Cleanup {
        Cleanup {
            prefix: prefix.into(),
        }
    }

    /// Removes everything now (idempotent: dropping removes again).
    pub fn run(&self) {
        let list = |what: &[&str]| -> Vec<String> {
            let out = Command::new("docker")
                .args(what)
                .args(label_filters(&self.prefix))
                .output();
            match out {
                Ok(o) => lines(&o.stdout),
                Err(_) => Vec::new(),
            }
        };
        let containers = list(&["ps", "-aq"]);
        if !containers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&containers)
                .output();
        }
        let volumes = list(&["volume", "ls", "-q"]);
        if !volumes.is_empty() {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f"])
                .args(&volumes)
                .output();
        }
        let networks = list(&["network", "ls", "-q"]);
        if !networks.is_empty() {
            let _ = Command::new("docker")
                .args(["network", "rm"])
                .args(&networks)
                .output();
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run();
    }
}

/// Ids of the Docker objects of one kind (`["ps", "-aq"]`, `["volume",
/// "ls", "-q"]`…) labelled `io.zcaas.test=<prefix>`. Panics when the docker
/// CLI fails.
pub fn labelled(kind: &[&str], prefix: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(kind)
        .args(["--filter", &format!("label={TEST_LABEL}={prefix}")])
        .output()
        .expect("docker CLI");
    assert!(out.status.success(), "docker {kind:?}: {out:?}");
    lines(&out.stdout)
}

fn label_filters(prefix: &str) -> [String; 4] {
    [
        "--filter".to_owned(),
        format!("label={TEST_LABEL}={prefix}"),
        "--filter".to_owned(),
        format!("label={MANAGED_LABEL}=true"),
    ]
}

fn lines(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

/// One test's world for the Docker layer alone: a random prefix, a runtime
/// that labels everything `io.zcaas.test=<prefix>`, and a [`Cleanup`] that
/// removes all of it on drop (keep the scope alive for the whole test).
pub struct TestScope {
    pub prefix: String,
    pub docker: DockerRuntime,
    /// `io.zcaas.test=<prefix>`, the runtime's extra labels.
    pub labels: BTreeMap<String, String>,
    pub cleanup: Cleanup,
}

impl TestScope {
    /// Connects to the engine with a fresh [`random_prefix`].
    pub async fn new() -> TestScope {
        let prefix = random_prefix();
        let cleanup = Cleanup::new(prefix.clone());
        let labels = test_labels(&prefix);
        let docker = DockerRuntime::connect(labels.clone())
            .await
            .expect("connecting to the Docker engine");
        TestScope {
            prefix,
            docker,
            labels,
            cleanup,
        }
    }

    /// Ensures the scope's network `<prefix>-net` (labelled, so the cleanup
    /// removes it) and returns its name.
    pub async fn network(&self) -> String {
        let network = format!("{}-net", self.prefix);
        self.docker
            .ensure_network(&network)
            .await
            .expect("the test network");
        network
    }

    /// A container spec named after the prefix and `suffix`, on `network`,
    /// publishing `host_port`, with 64 MiB and half a CPU.
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
            host_port: Some(host_port),
            memory_bytes: 64 * 1024 * 1024,
            nano_cpus: 500_000_000,
            // Our agent-runtime image's profile.
            command: RuntimeProfile::Zcaas.command(),
            env: RuntimeProfile::Zcaas.env(),
            volume: format!("zeroclaw-{slug}-data"),
            host: format!("{slug}.agents.test"),
            traefik_entrypoint: "websecure".to_owned(),
            traefik_cert_resolver: "letsencrypt".to_owned(),
            public_paths: vec!["/webhook".to_owned(), "/health".to_owned()],
            spec_hash: "test".to_owned(),
            labels,
            slug,
        }
    }
}
