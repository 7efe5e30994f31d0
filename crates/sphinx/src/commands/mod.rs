//! One module per top-level subcommand. Each exposes a clap `…Command` enum and
//! `run(cmd) -> anyhow::Result<ExitCode>`.

pub mod baseline;
pub mod bench;
pub mod params;
pub mod privacy;
