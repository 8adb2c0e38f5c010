//! Command line and the commands' bodies: `daemon` / `gateway` and `status`.
//!
//! Exit codes: 0 success; 1 runtime failure (bind error, unhealthy); 2 bad configuration
//! (the message names the key or variable).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::app::App;
use crate::config::{CliOverrides, Config};
use crate::healthcheck::{self, Format};

/// How long shutdown waits for in-flight requests after SIGTERM/SIGINT (the process must be
/// gone within 2 s).
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1200);

/// agent-runtime: a ZeroClaw-compatible agent gateway.
#[derive(Debug, Parser)]
#[command(name = "agent-runtime", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP gateway (the image's default command).
    Gateway(GatewayArgs),
    /// Run the gateway and the configured channels: upstream's `daemon`
    /// (gateway + channels + scheduler), the command the control plane
    /// starts every runtime with. Here the same process as `gateway`, whose
    /// channels are reported in `/health`.
    Daemon(GatewayArgs),
    /// Check the local gateway's /health (the image's HEALTHCHECK).
    Status(StatusArgs),
}

/// `gateway` options.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Listen host; overrides [gateway] host and ZEROCLAW_GATEWAY_HOST.
    #[arg(long)]
    pub host: Option<String>,
    /// Listen port (0 = any free port); overrides [gateway] port and ZEROCLAW_GATEWAY_PORT.
    #[arg(long)]
    pub port: Option<u16>,
}

/// `status` options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output: `exit-code` (silent), `text` or `json`.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Port to probe; defaults to the configured gateway port.
    #[arg(long)]
    pub port: Option<u16>,
}

fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

fn load_config(cli: &CliOverrides) -> Result<Config, ExitCode> {
    Config::load(&process_env, cli).map_err(|e| {
        eprintln!("agent-runtime: configuration error: {e}");
        ExitCode::from(2)
    })
}

/// `agent-runtime status`.
pub fn status(args: &StatusArgs) -> ExitCode {
    let overrides = CliOverrides {
        host: None,
        port: args.port,
    };
    match load_config(&overrides) {
        Ok(config) => ExitCode::from(healthcheck::run(&config, args.format)),
        Err(code) => code,
    }
}

fn init_tracing() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    let json = std::env::var("ZEROCLAW_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(fmt.json()).init();
    } else {
        registry.with(fmt).init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    init_tracing();
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let addr = config.bind_address();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot bind {addr}"))?;
    let app = App::build(&config, listener)
        .await
        .context("cannot start the gateway")?;
    {
        // The banner first, flushed at once: the control plane is waiting for the code.
        let mut out = std::io::stdout().lock();
        out.write_all(app.startup_lines().as_bytes())
            .and_then(|()| out.flush())
            .context("cannot write to stdout")?;
    }
    tracing::info!(
        addr = %app.addr(),
        provider = app.state().provider.name(),
        model = app.state().provider.model(),
        workspace = %config.paths.workspace.display(),
        config = %config.paths.config_file.display(),
        "gateway started"
    );
    app.warm_up();
    shutdown_signal().await;
    if !app.shutdown(SHUTDOWN_GRACE).await {
        tracing::warn!("in-flight requests cut off after the shutdown grace period");
    }
    Ok(())
}

fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1)
        .clamp(1, 4)
}

/// `agent-runtime gateway` and `agent-runtime daemon`.
pub fn gateway(args: &GatewayArgs) -> ExitCode {
    let overrides = CliOverrides {
        host: args.host.clone(),
        port: args.port,
    };
    let config = match load_config(&overrides) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = config.check_bind() {
        eprintln!("agent-runtime: {e}");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .max_blocking_threads(16)
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => {
            let r = rt.block_on(serve(config));
            // Blocking tasks (a slow provider-client warm-up) must not hold the exit.
            rt.shutdown_timeout(Duration::from_millis(200));
            r
        }
        Err(e) => Err(anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent-runtime: {e:#}");
            ExitCode::from(1)
        }
    }
}
