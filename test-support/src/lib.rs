//! The one support crate of zcaas's test suites (dev-only, never
//! published), after zero2prod's `tests/api/helpers.rs`: start the real
//! service, then talk to it in verbs.
//!
//! - **Scope and cleanup** ([`scope`]): a random prefix per test; everything
//!   a test creates in Docker carries `io.zcaas.managed=true` and
//!   `io.zcaas.test=<prefix>` ([`TEST_LABEL`]) and is removed by that label
//!   when the test ends, even when it panics ([`Cleanup`]).
//! - **Binaries and images** ([`binaries`], [`images`]): the release
//!   agent-runtime, the test binaries cargo built, and the images built from
//!   them once per process.
//! - **The control plane**: in-process on `127.0.0.1:0` ([`TestApp`], with or
//!   without a [`World`]: network, images, provider stand-in), or as a
//!   `zcaas serve` child process ([`process::ServerProcess`]).
//! - **A swarm** ([`swarm`], [`swarm_world`]): namespaced dockerds joined
//!   into one Docker Swarm, and a [`SwarmWorld`] on it (overlay network,
//!   provider stand-in, [`TestApp::in_swarm`]); the host reaches overlay
//!   addresses through [`netns`]' proxy and relays, which open their
//!   connections inside a container's network namespace.
//! - **A real Traefik** ([`traefik`]): zcaas's own image with the
//!   repository's configuration, adapted only where a test must differ.
//! - **Store fixtures** ([`store`]): a fresh migrated store, rows with
//!   defaults, for tests that write to the store directly.
//! - **Verbs** ([`Api`]): `register`, `create_agent`, `wait_running`,
//!   `restart`, `message`, `delete_agent`… so tests spell no API paths;
//!   [`SseReader`] for the event and log streams, [`LogBuffer`] for what
//!   the service logged.
//! - **The host** ([`host`]): `/proc` readings for the benchmarks (process
//!   tree, PSS, CPU time, available memory) and a description of the machine.
//!
//! Helpers panic with a message rather than return errors (a failed step is
//! a failed test), and every wait is bounded. What a test may expect to fail
//! (`docker_cli`, `zcaas_run`) returns a `Result`.
//!
//! Users: `control-plane`'s integration tests (a dev-dependency; the cycle
//! is fine for integration tests, but the crate's unit tests cannot use this
//! crate) and the end-to-end crate `zcaas-tests`, its benchmarks included.

pub mod api;
pub mod app;
pub mod binaries;
pub mod cli;
pub mod host;
pub mod images;
pub mod logs;
pub mod netns;
pub mod postgres;
pub mod process;
pub mod scope;
pub mod sse;
pub mod store;
pub mod swarm;
pub mod swarm_world;
pub mod traefik;
pub mod world;

pub use api::{assert_error, minimal_agent_body, Api, RunningAgent, DEPLOY_TIMEOUT, PASSWORD};
pub use app::TestApp;
pub use binaries::{agent_binary, built_binary, provider_stub_binary, target_dir};
pub use cli::{agent_containers, docker_cli, docker_inspect, volume_exists};
pub use images::{
    build_binary_image, ensure_agent_image, ensure_stock_image, ensure_stub_image,
    ensure_traefik_image, AGENT_IMAGE, STOCK_VERSION, STUB_IMAGE, STUB_PORT, TRAEFIK_IMAGE,
    TRAEFIK_VERSION,
};
pub use logs::LogBuffer;
pub use netns::{HttpProxy, TcpRelay};
pub use scope::{labelled, random_prefix, test_labels, Cleanup, TestScope, TEST_LABEL};
pub use sse::{Sse, SseReader};
pub use swarm_world::SwarmWorld;
pub use world::World;

/// A TCP port free on 127.0.0.1 right now (bound to 0, read, released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
