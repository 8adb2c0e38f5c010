//! Command line: `zcaas serve | migrate | image build | keys rotate | user
//! create | healthcheck`. Configuration flags (shared by every command) and their loading
//! live in [`crate::config`]; this module runs the commands.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::{Config, ConfigArgs};
use crate::model::{Plan, Role};
use crate::secrets::{KeyringLock, SecretBox, SecretField, KEYRING_LOCK_WAIT};
use crate::store::Store;

/// Threads of tokio's blocking pool (its default is 512). Argon2 takes at
/// most one per hashing slot (see [`crate::auth::HashingPool`]), file I/O the
/// rest; past the bound, blocking work waits in tokio's queue instead of each
/// burst adding threads (and their stacks and allocator arenas).
pub const MAX_BLOCKING_THREADS: usize = 64;

/// The `zcaas` program: parses the command line, loads the configuration,
/// sets up logging and runs the command on a multi-threaded runtime. Exit
/// codes: 0 success, 1 failure, 2 bad configuration.
pub fn main() -> std::process::ExitCode {
    use std::process::ExitCode;
    let cli = Cli::parse();
    let config = match cli.config.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("zcaas: configuration: {e:#}");
            return ExitCode::from(2);
        }
    };
    let json_logs = config.log_json;
    init_tracing(json_logs);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zcaas: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if json_logs => {
            tracing::error!(error = %format!("{e:#}"), "zcaas failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("zcaas: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// zcaas: hosts one ZeroClaw-compatible agent container per agent.
#[derive(Parser)]
#[command(name = "zcaas", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Subcommand)]
pub enum Command {
    /// Runs the service until SIGTERM or Ctrl-C (a second signal forces exit).
    Serve,
    /// Applies the database migrations and exits.
    Migrate,
    /// The agent runtime image.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// The master keys that encrypt agents' secrets.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Lists this installation's orphans (agent containers and data volumes
    /// whose agent has no row, networks it created besides the configured
    /// one); nothing is removed without --apply.
    Gc {
        /// Removes the orphan containers and networks.
        #[arg(long)]
        apply: bool,
        /// With --apply, removes the orphan data volumes too (the agents'
        /// memory in them is lost).
        #[arg(long, requires = "apply")]
        volumes: bool,
    },
    /// Removes agent `--agent-id`'s data volume NAME from this engine (the
    /// Swarm backend runs it as a one-shot job on the node holding the
    /// volume): only a volume carrying our labels, this agent's id and, when
    /// given, installation `--installation`. Gone is success.
    RemoveVolume {
        name: String,
        #[arg(long)]
        agent_id: String,
        #[arg(long)]
        installation: Option<String>,
    },
    /// Exits 0 if the service of this configuration answers `GET /healthz`
    /// with 200 (the image's HEALTHCHECK: a scratch image has no curl).
    Healthcheck,
}

/// `zcaas image …`.
#[derive(Subcommand)]
pub enum ImageCommand {
    /// Builds `runtime_image` into the local engine from `agent_binary` (no registry).
    Build,
}

/// `zcaas keys …`.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Adds a new current master key and re-encrypts every agent secret with
    /// it; older keys stay in the keyring so nothing becomes unreadable.
    Rotate,
}

/// `zcaas user …`.
#[derive(Subcommand)]
pub enum UserCommand {
    /// Creates an account.
    Create {
        /// Email address (stored lower-cased).
        #[arg(long)]
        email: String,
        /// Password, 8 to 128 characters (or set ZCAAS_USER_PASSWORD).
        #[arg(long, env = "ZCAAS_USER_PASSWORD", hide_env_values = true)]
        password: String,
        /// Makes the account an admin.
        #[arg(long)]
        admin: bool,
        /// Plan: free, pro or enterprise.
        #[arg(long, default_value = "free", value_parser = parse_plan)]
        plan: Plan,
    },
}

fn parse_plan(s: &str) -> Result<Plan, String> {
    match s {
        "free" => Ok(Plan::Free),
        "pro" => Ok(Plan::Pro),
        "enterprise" => Ok(Plan::Enterprise),
        _ => Err("expected free, pro or enterprise".into()),
    }
}

/// Sets up `tracing`: JSON lines when `json`, text otherwise; the filter
/// comes from `RUST_LOG` (default `info`).
pub fn init_tracing(json: bool) {
    use tracing_subscriber::util::SubscriberInitExt as _;
    let spec = std::env::var("RUST_LOG").ok();
    log_subscriber(spec.as_deref(), json, std::io::stderr).init();
}

/// The service's subscriber: `spec` in `RUST_LOG` syntax (`None` or invalid:
/// `info`), JSON lines or text, to `writer`. Whatever `spec` says, bollard's
/// TRACE events are dropped: at TRACE it prints request bodies, and the
/// archive injected into an agent's volume holds its `config.toml` with the
/// LLM key and bot tokens.
pub fn log_subscriber<W>(
    spec: Option<&str>,
    json: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::EnvFilter;
    let filter = spec
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let no_bodies = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.target().starts_with("bollard") && *meta.level() == tracing::Level::TRACE)
    });
    let registry = tracing_subscriber::registry().with(filter).with(no_bodies);
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    if json {
        Box::new(registry.with(fmt.json().flatten_event(true)))
    } else {
        Box::new(registry.with(fmt))
    }
}

/// Runs `command` with the resolved configuration.
pub async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(config).await,
        Command::Gc { apply, volumes } => {
            let db = open_db(&config).await?;
            let report =
                crate::gc::run(&config, &db, crate::gc::GcOptions { apply, volumes }).await;
            db.close().await;
            print!("{}", report?);
            Ok(())
        }
        Command::Migrate => {
            let db = open_db(&config).await?;
            db.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Image {
            command: ImageCommand::Build,
        } => {
            let docker = crate::docker::DockerRuntime::connect(config.extra_labels.clone())
                .await
                .context("connecting to Docker")?;
            docker
                .build_agent_image(&config.runtime_image, &config.agent_binary)
                .await
                .with_context(|| format!("building {}", config.runtime_image))?;
            println!("built {}", config.runtime_image);
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Rotate,
        } => {
            let r = rotate_keys(&config).await?;
            println!(
                "new key {}: {} secrets re-encrypted, {} changed meanwhile, {} unreadable",
                r.new_key_id, r.reencrypted, r.changed_meanwhile, r.unreadable
            );
            if r.unreadable > 0 {
                anyhow::bail!("{} secrets could not be decrypted", r.unreadable);
            }
            Ok(())
        }
        Command::User {
            command:
                UserCommand::Create {
                    email,
                    password,
                    admin,
                    plan,
                },
        } => create_user(&config, &email, password, admin, plan).await,
        Command::Healthcheck => healthcheck(&config).await,
        Command::RemoveVolume {
            name,
            agent_id,
            installation,
        } => {
            let mut docker = crate::docker::DockerRuntime::connect_to(
                config.docker_host.as_deref(),
                config.extra_labels.clone(),
            )
            .await
            .context("connecting to Docker")?;
            if let Some(id) = installation {
                docker = docker.with_installation(id);
            }
            docker
                .remove_agent_volume(&name, &agent_id)
                .await
                .with_context(|| format!("removing volume {name}"))?;
            println!("volume {name}: removed (or gone)");
            Ok(())
        }
    }
}

/// `zcaas healthcheck`: `GET /healthz` on the configured listen address (a
/// wildcard address is reached on loopback), within 5 s.
async fn healthcheck(config: &Config) -> anyhow::Result<()> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        });
    }
    let url = format!("http://{addr}/healthz");
    let res = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = res.status();
    if !status.is_success() {
        let body = res.text().await.unwrap_or_default();
        anyhow::bail!("GET {url}: {status} {body}");
    }
    println!("ok");
    Ok(())
}

async fn open_db(config: &Config) -> anyhow::Result<Store> {
    crate::app::prepare_data_dir(&config.data_dir)?;
    Store::open(&config.database_url)
        .await
        .with_context(|| format!("opening {}", crate::app::redact_url(&config.database_url)))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let app = App::build(config, listener).await?;
    tracing::info!(addr = %app.addr(), "zcaas listening");
    shutdown_signal().await;
    tracing::info!("shutting down; send the signal again to force exit");
    let force = tokio::spawn(async {
        shutdown_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    app.shutdown().await;
    force.abort();
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// What `zcaas keys rotate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// The new current key.
    pub new_key_id: String,
    /// Secrets now encrypted with the new key.
    pub reencrypted: usize,
    /// Secrets a running server replaced while we worked (left as written).
    pub changed_meanwhile: usize,
    /// Secrets no key in the keyring decrypts (left as they are).
    pub unreadable: usize,
}

/// `zcaas keys rotate`: a new current key in `<data_dir>/master.key`, then
/// every agent secret re-encrypted with it.
///
/// The whole run holds the key file's [`KeyringLock`]: a second rotation
/// waits for it (up to [`KEYRING_LOCK_WAIT`], then fails with
/// [`crate::secrets::SecretError::Locked`]) and starts from the keyring this
/// one wrote, so no rotation's key is lost and no secret is left under a key
/// that is not in the file.
///
/// A running server is not stopped: it read the keyring at start and never
/// rewrites it (it writes the file only when creating it, under the same
/// lock). Until it meets a ciphertext under a key id it does not know (and
/// then re-reads the file), it encrypts new secrets with the old key; a
/// secret it changes meanwhile is left as the server wrote it — both stay
/// readable, because old keys stay in the keyring, and the next rotation
/// moves them.
pub async fn rotate_keys(config: &Config) -> anyhow::Result<RotationReport> {
    let db = open_db(config).await?;
    let key_path = config.master_key_path();
    let lock =
        tokio::task::spawn_blocking(move || KeyringLock::acquire(&key_path, KEYRING_LOCK_WAIT))
            .await
            .context("waiting for the key file lock")?
            .context("locking the master keyring")?;
    let secrets = SecretBox::load_or_create_locked(&lock).context("loading the master keyring")?;
    let new_key_id = secrets.rotate_locked(&lock).context("rotating")?;
    let mut report = RotationReport {
        new_key_id,
        reencrypted: 0,
        changed_meanwhile: 0,
        unreadable: 0,
    };
    for row in db.agents().list_secrets().await? {
        for (field, stored) in [
            (SecretField::Token, &row.encrypted_token),
            (SecretField::ApiKey, &row.encrypted_api_key),
            (SecretField::Channels, &row.encrypted_channels),
        ] {
            let Some(stored) = stored else { continue };
            if !secrets.needs_rotation(stored) {
                continue;
            }
            let fresh = match secrets.decrypt(&row.id, field, stored) {
                Ok(plain) => secrets.encrypt(&row.id, field, &plain)?,
                Err(e) => {
                    tracing::error!(agent_id = %row.id, field = field.as_str(), error = %e, "cannot decrypt; left as is");
                    report.unreadable += 1;
                    continue;
                }
            };
            if db
                .agents()
                .replace_secret(&row.id, field, stored, &fresh)
                .await?
            {
                report.reencrypted += 1;
            } else {
                report.changed_meanwhile += 1;
            }
        }
    }
    db.close().await;
    drop(lock);
    Ok(report)
}

async fn create_user(
    config: &Config,
    email: &str,
    password: String,
    admin: bool,
    plan: Plan,
) -> anyhow::Result<()> {
    let email = crate::validation::email(email)?;
    crate::validation::password(&password)?;
    let db = open_db(config).await?;
    let hash = crate::auth::hash_password(password).await?;
    let role = if admin { Role::Admin } else { Role::User };
    let user = db
        .users()
        .create(&crate::store::users::NewUser {
            email: &email,
            password_hash: &hash,
            role,
            plan,
        })
        .await
        .with_context(|| format!("creating {email}"))?;
    // Give the pool a moment to flush WAL before the process exits.
    tokio::time::timeout(Duration::from_secs(5), db.close())
        .await
        .ok();
    println!(
        "created user {} ({email}, {:?}, {:?})",
        user.id, user.role, user.plan
    );
    Ok(())
}
