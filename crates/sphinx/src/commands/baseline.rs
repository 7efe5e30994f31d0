//! `sphinx baseline`.

use std::process::ExitCode;

use clap::Subcommand;

/// `sphinx baseline` subcommands.
#[derive(Debug, Subcommand)]
pub enum BaselineCommand {}

/// Runs `sphinx baseline`.
pub fn run(cmd: BaselineCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
