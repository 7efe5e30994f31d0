//! One module per top-level subcommand. Each exposes a clap `…Command` enum and
//! `run(cmd) -> anyhow::Result<ExitCode>`.

pub mod baseline;
pub mod bench;
pub mod bench_infer;
pub mod bench_train;
pub mod client;
pub mod demo;
pub mod params;
pub mod privacy;
pub mod private_train;
pub mod server;
