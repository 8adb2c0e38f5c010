//! `zcaas`: parse the command line, set up logging, run the command (all of
//! it lives in the library; see `zcaas::cli`).

use std::process::ExitCode;

use clap::Parser;
use zcaas::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.config.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("zcaas: configuration: {e:#}");
            return ExitCode::from(2);
        }
    };
    cli::init_tracing(config.log_json);
    match cli::run(cli.command, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "zcaas failed");
            eprintln!("zcaas: {e:#}");
            ExitCode::FAILURE
        }
    }
}
