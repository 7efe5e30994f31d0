//! `sphinx bench`.

use std::process::ExitCode;

use clap::Subcommand;

/// `sphinx bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {}

/// Runs `sphinx bench`.
pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
