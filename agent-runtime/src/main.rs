//! `agent-runtime gateway` (or `daemon`) / `agent-runtime status`: see the library docs.

#![warn(clippy::unwrap_used)]

use std::process::ExitCode;

use agent_runtime::cli::{self, Cli, Command};
use clap::Parser;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Gateway(args) | Command::Daemon(args) => cli::gateway(&args),
        Command::Status(args) => cli::status(&args),
    }
}
