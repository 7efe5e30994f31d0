//! `sphinx privacy`.

use std::process::ExitCode;

use clap::Subcommand;

/// `sphinx privacy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {}

/// Runs `sphinx privacy`.
pub fn run(cmd: PrivacyCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
