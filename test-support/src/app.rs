//! The control plane in-process: the real service built by `App::build` on
//! `127.0.0.1:0` with a fresh data directory (SQLite file, keys), in one of
//! two surroundings:
//!
//! - [`TestApp::spawn`]: no engine objects of its own. The runtime image
//!   configured does not exist and cannot be built, so an agent created
//!   here never starts a container: its deploy fails fast to ERROR (the
//!   HTTP tests of `control-plane/tests/`).
//! - [`TestApp::in_world`]: a [`World`] (network, images, provider
//!   stand-in), where agents deploy, pair and answer for real (the
//!   end-to-end tests).
//! - [`TestApp::in_swarm`]: a [`SwarmWorld`] the test holds (a swarm of
//!   namespaced dockerds, overlay network, provider stand-in, a proxy into
//!   the overlay): zcaas in `swarm` mode against the manager's socket.
//!
//! Either way everything the app creates in Docker carries
//! `io.zcaas.test=<prefix>`; on the machine's daemon it is removed by label
//! when the [`TestApp`] drops, even if the test panics, and in a swarm the
//! world's teardown removes everything.

use std::time::{Duration, Instant};

use zcaas::app::App;
use zcaas::config::{AgentAddress, Config, OrchestratorKind};
use zcaas::secrets::SecretField;

use crate::api::{Api, PASSWORD};
use crate::binaries::agent_binary;
use crate::images::AGENT_IMAGE;
use crate::scope::{random_prefix, Cleanup, TEST_LABEL};
use crate::swarm_world::SwarmWorld;
use crate::world::World;

/// One test's control plane, running in-process; its [`Api`] is reached
/// through `Deref` (`app.register(..)`, `app.create_agent(..)`).
pub struct TestApp {
    app: Option<App>,
    pub api: Api,
    /// The configuration the app was built with.
    pub config: Config,
    /// The test's prefix (the value of its `io.zcaas.test` label).
    pub prefix: String,
    /// Raw SQL on the app's database (placeholders `$1`, `$2`…).
    sql: sqlx::AnyPool,
    _database: crate::store::TestDatabase,
    _data_dir: tempfile::TempDir,
    // Last: dropped after the app, so the cleanup sees no new containers.
    world: Option<World>,
    _cleanup: Option<Cleanup>,
}

/// A test that panics drops its `TestApp` with the control plane still
/// running: stop the reconciler first, so it cannot create anything after
/// the cleanup (dropped last) has removed by label.
impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(app) = &self.app {
            app.state().shutdown.cancel();
            // Let passes already past their last await point finish.
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestApp {
    /// Starts the service with the HTTP tests' configuration: agents never
    /// start (see the module documentation).
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// [`TestApp::spawn`] with `tweak` applied to the configuration.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        let prefix = random_prefix();
        let cleanup = Cleanup::new(prefix.clone());
        let dir = tempfile::tempdir().expect("a data directory");
        let mut config = Config::with_data_dir(dir.path().join("data"));
        config.runtime_image = format!("zcaas-test/missing:{prefix}");
        config.agent_binary = dir.path().join("no-such-agent-runtime");
        config.network = format!("zcaas-test-{prefix}");
        config.domain = "test.local".into();
        config
            .extra_labels
            .insert(TEST_LABEL.into(), prefix.clone());
        tweak(&mut config);
        // No agent ever reaches a provider: any provider name will do.
        Self::build(config, prefix, "openai", dir, None, Some(cleanup)).await
    }

    /// Starts the service in a fresh [`World`], deploying the real agent
    /// image with the world's provider stand-in allowed.
    pub async fn in_world() -> TestApp {
        Self::in_world_with(|_| {}).await
    }

    /// [`TestApp::in_world`] with `tweak` applied to the configuration
    /// (runtime image, retry budget, backoff, agent addressing…).
    pub async fn in_world_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        let world = World::start().await;
        let dir = tempfile::tempdir().expect("a data directory");
        let mut config = Config::with_data_dir(dir.path().to_path_buf());
        config.listen = "127.0.0.1:0".parse().expect("an address");
        config.network = world.network.clone();
        config.runtime_image = AGENT_IMAGE.to_string();
        config.agent_binary = agent_binary().unwrap_or_else(|e| panic!("{e:#}"));
        config.allow_private_provider_urls = true;
        config.extra_labels = world.labels.clone();
        config.domain = "agents.test".into();
        tweak(&mut config);
        let (prefix, provider) = (world.prefix.clone(), world.provider.clone());
        Self::build(config, prefix, &provider, dir, Some(world), None).await
    }

    /// Starts the service in `swarm` mode against `world`'s manager, with
    /// `tweak` applied to the configuration: agents are services on the
    /// world's overlay network, reached through its proxy, with the world's
    /// provider stand-in allowed. The test keeps `world` and drops it after
    /// the app (declare the world first). No cleanup by label: the world's
    /// teardown removes everything in the swarm.
    pub async fn in_swarm(world: &SwarmWorld, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("a data directory");
        let mut config = Config::with_data_dir(dir.path().to_path_buf());
        config.listen = "127.0.0.1:0".parse().expect("an address");
        config.orchestrator = OrchestratorKind::Swarm;
        config.docker_host = Some(world.manager_host());
        config.agent_proxy = Some(world.proxy_url());
        config.network = world.network.clone();
        config.runtime_image = AGENT_IMAGE.to_string();
        config.agent_binary = agent_binary().unwrap_or_else(|e| panic!("{e:#}"));
        config.agent_address = AgentAddress::Network;
        config.allow_private_provider_urls = true;
        config.extra_labels = world.labels.clone();
        config.domain = "agents.test".into();
        tweak(&mut config);
        let (prefix, provider) = (world.prefix.clone(), world.provider.clone());
        Self::build(config, prefix, &provider, dir, None, None).await
    }

    async fn build(
        mut config: Config,
        prefix: String,
        provider: &str,
        data_dir: tempfile::TempDir,
        world: Option<World>,
        cleanup: Option<Cleanup>,
    ) -> TestApp {
        let database = crate::store::TestDatabase::create(&config.database_url).await;
        config.database_url = database.url.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port on 127.0.0.1");
        let app = App::build(config.clone(), listener)
            .await
            .unwrap_or_else(|e| panic!("App::build: {e:#}"));
        let api = Api::new(format!("http://{}", app.addr()), &prefix, provider);
        let sql = crate::store::raw_pool(&config.database_url).await;
        TestApp {
            app: Some(app),
            api,
            config,
            prefix,
            sql,
            _database: database,
            _data_dir: data_dir,
            world,
            _cleanup: cleanup,
        }
    }

    /// The running app (panics after [`TestApp::shutdown`]).
    pub fn app(&self) -> &App {
        self.app.as_ref().expect("the app is running")
    }

    /// The app's shared state: its store, secrets, reconciler, config.
    pub fn state(&self) -> &zcaas::api::AppState {
        self.app().state()
    }

    /// Raw SQL on the app's database, for assertions the API does not
    /// offer (placeholders `$1`, `$2`…, which both backends accept).
    pub fn sql(&self) -> &sqlx::AnyPool {
        &self.sql
    }

    /// The world of an app started with [`TestApp::in_world`].
    pub fn world(&self) -> &World {
        self.world
            .as_ref()
            .expect("a TestApp started with in_world")
    }

    /// Stops the control plane (its Docker objects are removed on drop).
    pub async fn shutdown(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }

    /// Creates an admin `email` directly in the store (registration never
    /// makes admins) and returns their JWT.
    pub async fn admin(&self, email: &str) -> String {
        let hash = zcaas::auth::hash_password(PASSWORD.into())
            .await
            .expect("hashing the password");
        let new = zcaas::store::users::NewUser {
            email,
            password_hash: &hash,
            role: zcaas::model::Role::Admin,
            plan: zcaas::model::Plan::Enterprise,
        };
        self.state()
            .store
            .users()
            .create(&new)
            .await
            .expect("creating the admin");
        self.login(email).await
    }

    /// The plaintext bearer token the control plane holds for agent `id`.
    pub async fn stored_token(&self, id: &str) -> String {
        self.stored_pairing(id).await.0
    }

    /// The stored bearer token of agent `id` and the container start
    /// (`State.StartedAt`) it was obtained or confirmed for.
    pub async fn stored_pairing(&self, id: &str) -> (String, chrono::DateTime<chrono::Utc>) {
        let state = self.state();
        let agent = state
            .store
            .lifecycle()
            .get(id)
            .await
            .expect("reading the agent row")
            .expect("the agent's row");
        let enc = agent.encrypted_token.expect("a token is stored");
        let token = state
            .secrets
            .decrypt(id, SecretField::Token, &enc)
            .expect("decrypting the token");
        let started = agent.paired_started_at.expect("a pairing start is stored");
        (token, started)
    }

    /// Waits until agent `id` is RUNNING with a stored token other than
    /// `old` (re-paired), within `timeout`; returns the new token. A detour
    /// through ERROR with a retry scheduled is fine; giving up is not.
    pub async fn wait_repaired(&self, jwt: &str, id: &str, old: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let agent = self
                .wait_for(jwt, id, timeout, |a| {
                    a["status"] == "RUNNING" || a["status"] == "ERROR"
                })
                .await;
            let gave_up = agent["status"] == "ERROR"
                && agent["lastError"]
                    .as_str()
                    .is_some_and(|e| e.contains("giving up"));
            assert!(!gave_up, "{agent}");
            if agent["status"] == "RUNNING" {
                let token = self.stored_token(id).await;
                if token != old {
                    return token;
                }
            }
            assert!(
                Instant::now() < deadline,
                "agent {id} was not re-paired: {agent}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
