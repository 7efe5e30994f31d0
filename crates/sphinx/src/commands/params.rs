//! `sphinx params`.

use std::process::ExitCode;

use clap::Subcommand;

/// `sphinx params` subcommands.
#[derive(Debug, Subcommand)]
pub enum ParamsCommand {}

/// Runs `sphinx params`.
pub fn run(cmd: ParamsCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
