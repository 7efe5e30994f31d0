//! `sphinx`: privacy-preserving online deep learning (Sphinx, IEEE S&P 2022).
//!
//! One binary, one subcommand per job; each subcommand lives in `commands/` and
//! only parses, validates and calls into the library crates below it.

use clap::{Parser, Subcommand};

mod commands;

/// Privacy-preserving online deep learning: train and query a network on an
/// untrusted server without revealing data, labels, activations or biases.
#[derive(Debug, Parser)]
#[command(name = "sphinx", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Homomorphic-encryption parameter sets: suggest a secure set, check one.
    #[command(subcommand)]
    Params(commands::params::ParamsCommand),
    /// Differential-privacy calculator: ε for a noise level, σ for a target ε.
    #[command(subcommand)]
    Privacy(commands::privacy::PrivacyCommand),
    /// Benchmarks that reproduce the paper's tables and our own.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
    /// Plaintext reference training (no encryption): plaintext and DP-SGD.
    #[command(subcommand)]
    Baseline(commands::baseline::BaselineCommand),
    /// The cloud service: TLS, accounts, persistent resumable training.
    Server(commands::server::ServerCommand),
    /// The data owner's side: init, train, export, budget.
    #[command(subcommand)]
    Client(commands::client::ClientCommand),
    /// The whole story on one machine: a TLS server on loopback, private DP training on
    /// the bundled MNIST sample, private inference, a report.
    Demo(Box<commands::demo::DemoArgs>),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Params(cmd) => commands::params::run(cmd),
        Command::Privacy(cmd) => commands::privacy::run(cmd),
        Command::Bench(cmd) => commands::bench::run(cmd),
        Command::Baseline(cmd) => commands::baseline::run(cmd),
        Command::Server(cmd) => commands::server::run(cmd),
        Command::Client(cmd) => commands::client::run(cmd),
        Command::Demo(args) => commands::demo::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
