//! Wiring: [`App::build`] turns a [`Config`] and a bound listener into the
//! running service (store, keys, Docker, reconciler, router), so tests start
//! the real thing on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rand::distributions::{Alphanumeric, DistString};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::auth::{LoginLimiter, RegistrationLimiter};
use crate::api::AppState;
use crate::auth::JwtKeys;
use crate::config::Config;
use crate::config::OrchestratorKind;
use crate::docker::swarm::SwarmRuntime;
use crate::docker::DockerRuntime;
use crate::events::EventBus;
use crate::gateway::GatewayClient;
use crate::model::{Plan, Role};
use crate::orchestrator::Orchestrator;
use crate::reconciler::{self, Reconciler};
use crate::secrets::SecretBox;
use crate::store::{Backend, Store};

/// How long [`App::shutdown`] waits for background tasks and open requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The running service.
pub struct App {
    addr: SocketAddr,
    state: AppState,
    cancel: CancellationToken,
    tracker: TaskTracker,
    server: JoinHandle<std::io::Result<()>>,
}

impl App {
    /// Builds and starts the service on `listener`:
    /// 1. creates `data_dir` (mode 0700), loads or creates the master keyring
    ///    and the JWT secret in it (mode 0600);
    /// 2. opens the database and applies the embedded migrations;
    /// 3. connects to Docker, builds the runtime image if it is missing (a
    ///    failed build is logged, not fatal: deploys then fail with that
    ///    reason until it is fixed), and ensures every agents' network in
    ///    use with the `network_attach` containers connected to each (and
    ///    again every few seconds, on every replica);
    /// 4. creates the first admin account if there is none and prints its
    ///    credentials once to stdout;
    /// 5. joins the competition for the reconciler's lease (a lone replica
    ///    leads at once: its orphan sweep is done and its first resync under
    ///    way), starts the event relay between replicas (PostgreSQL), and
    ///    serves the API.
    ///
    /// Errors: any of steps 1–4 failing (with context).
    pub async fn build(config: Config, listener: tokio::net::TcpListener) -> anyhow::Result<App> {
        let config = Arc::new(config);
        prepare_data_dir(&config.data_dir)?;
        let secrets = Arc::new(
            SecretBox::load_or_create(&config.master_key_path()).context("master keyring")?,
        );
        let jwt =
            Arc::new(JwtKeys::load_or_create(&config.jwt_secret_path()).context("JWT secret")?);

        let db = Store::open(&config.database_url)
            .await
            .with_context(|| format!("opening {}", redact_url(&config.database_url)))?;
        let installation = db
            .admin()
            .installation_id()
            .await
            .context("reading the installation id")?;
        tracing::info!(installation = %installation, "installation");

        let docker =
            DockerRuntime::connect_to(config.docker_host.as_deref(), config.extra_labels.clone())
                .await
                .context("connecting to Docker")?
                .with_installation(installation);
        docker.ping().await.context("pinging Docker")?;
        ensure_image(&docker, &config).await;
        let orchestrator: Arc<dyn Orchestrator> = match config.orchestrator {
            OrchestratorKind::Docker => Arc::new(docker),
            OrchestratorKind::Swarm => Arc::new(
                SwarmRuntime::connect(
                    docker,
                    config.docker_host.as_deref(),
                    config.volume_driver.clone(),
                    config.janitor_image.clone(),
                )
                .await
                .context("connecting to the swarm")?,
            ),
        };
        // Every agents' network in use (the first always), with the
        // `network_attach` containers (Traefik, zcaas's own) on each.
        reconciler::networks::attach_in_use(&db, orchestrator.as_ref(), &config).await?;

        bootstrap_admin(&db, &config).await?;

        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let gateway = match &config.agent_proxy {
            Some(proxy) => GatewayClient::with_proxy(proxy).context("agent_proxy")?,
            None => GatewayClient::new(),
        };
        // One replica (SQLite): the bus broadcasts what is published. Several
        // (PostgreSQL): every replica's bus is fed, in id order, from the
        // database by the relay.
        let events = match db.backend() {
            Backend::Sqlite => EventBus::new(),
            Backend::Postgres => {
                let (events, committed) = EventBus::relayed();
                tracker.spawn(crate::feed::run(
                    db.clone(),
                    events.clone(),
                    committed,
                    cancel.clone(),
                ));
                events
            }
        };
        tracker.spawn(reconciler::networks::keep_attached(
            db.clone(),
            orchestrator.clone(),
            config.clone(),
            cancel.clone(),
        ));
        let metrics = crate::metrics::Metrics::new();
        let ctx = reconciler::Context {
            store: db.clone(),
            orchestrator: orchestrator.clone(),
            gateway: gateway.clone(),
            secrets: secrets.clone(),
            config: config.clone(),
            events: events.clone(),
            metrics: metrics.clone(),
        };
        let reconciler = Reconciler::start(ctx, cancel.clone(), &tracker).await;
        let state = AppState {
            store: db,
            orchestrator,
            gateway,
            secrets,
            config,
            reconciler,
            events,
            jwt,
            metrics,
            login_limiter: Arc::new(LoginLimiter::default()),
            registration_limiter: Arc::new(RegistrationLimiter::default()),
            shutdown: cancel.clone(),
            streams: crate::api::streams::StreamHub::new(),
        };

        let addr = listener.local_addr().context("listener address")?;
        let router = crate::api::router(state.clone());
        let stop = cancel.clone();
        let server = tokio::spawn(async move {
            // With the peer's address: registrations are limited per client.
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, service)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Ok(App {
            addr,
            state,
            cancel,
            tracker,
            server,
        })
    }

    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (tests use its store and clients).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting requests, cancels background tasks, and waits up to
    /// [`SHUTDOWN_GRACE`] for each of open requests and the tasks to finish.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks still running after the grace period");
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "server error"),
            Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
            Err(_) => tracing::warn!("requests still open after the grace period"),
        }
        self.state.store.close().await;
    }
}

/// `url` with its password, if any, replaced by `***` (for messages and
/// logs: a PostgreSQL URL may carry one).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split_once(':').map_or(user_info, |(u, _)| u);
            let hidden = if user_info.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Creates `dir` if needed and restricts it to its owner (0700): it holds
/// the master key, the JWT secret and the database.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 700 {}", dir.display()))
}

async fn ensure_image(docker: &DockerRuntime, config: &Config) {
    match docker.image_exists(&config.runtime_image).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(image = %config.runtime_image, binary = %config.agent_binary.display(), "building the agent image");
            match docker
                .build_agent_image(&config.runtime_image, &config.agent_binary)
                .await
            {
                Ok(()) => tracing::info!(image = %config.runtime_image, "agent image built"),
                Err(e) => tracing::error!(image = %config.runtime_image, error = %e,
                    "building the agent image failed; deploys will fail until it exists (zcaas image build)"),
            }
        }
        Err(e) => {
            tracing::error!(image = %config.runtime_image, error = %e, "checking the agent image failed")
        }
    }
}

/// Creates `admin@<domain>` with a random password when no admin exists, and
/// prints both once to stdout (never to the logs).
async fn bootstrap_admin(db: &Store, config: &Config) -> anyhow::Result<()> {
    if db.users().count_admins().await? > 0 {
        return Ok(());
    }
    let email = crate::validation::email(&format!("admin@{}", config.domain))
        .unwrap_or_else(|_| "admin@localhost".to_owned());
    let password = Alphanumeric.sample_string(&mut rand::rngs::OsRng, 24);
    let hash = crate::auth::hash_password(password.clone()).await?;
    let new = crate::store::users::NewUser {
        email: &email,
        password_hash: &hash,
        role: Role::Admin,
        plan: Plan::Enterprise,
    };
    match db.users().create(&new).await {
        Ok(_) => {
            println!("zcaas: created the first admin account (shown once, keep it):");
            println!("  email:    {email}");
            println!("  password: {password}");
            tracing::info!(email = %email, "first admin account created; credentials printed to stdout");
            Ok(())
        }
        // Another replica starting at the same time created it first.
        Err(crate::store::users::CreateUserError::EmailTaken)
            if db.users().count_admins().await? > 0 =>
        {
            Ok(())
        }
        Err(crate::store::users::CreateUserError::EmailTaken) => {
            tracing::warn!(email = %email, "no admin exists and {email} is a user account; create one with zcaas user create --admin");
            Ok(())
        }
        Err(e) => Err(e).context("creating the first admin"),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_database_urls_password_never_shows() {
        assert_eq!(
            redact_url("postgres://zcaas:s3cret@db.internal:5432/zcaas"),
            "postgres://zcaas:***@db.internal:5432/zcaas"
        );
        // A password holding '@' or ':' is hidden whole (the last '@' ends it).
        assert_eq!(
            redact_url("postgres://u:p@ss:w@host/db?sslmode=require"),
            "postgres://u:***@host/db?sslmode=require"
        );
        assert_eq!(redact_url("postgres://u@host/db"), "postgres://u@host/db");
        assert_eq!(
            redact_url("sqlite:///srv/zcaas/zcaas.db"),
            "sqlite:///srv/zcaas/zcaas.db"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
