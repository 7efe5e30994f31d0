//! `sphinx server`: the cloud side (DESIGN.md §1): TLS, accounts, persistence.
//!
//! `sphinx server --listen ADDR --data-dir DIR` serves until ctrl-c / SIGTERM. Accounts are
//! created by the operator (`sphinx server add-account NAME --data-dir DIR` prints the
//! token once); `--open-registration` lets clients register themselves instead (demos,
//! private networks). See docs/operations.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use sphinx_protocol::wire::AccountName;
use sphinx_server::store::Store;
use sphinx_server::{Limits, Registration, ServerConfig};

/// `sphinx server`: run the service (default) or manage its accounts.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerCommand {
    /// Account management; without one, the server runs.
    #[command(subcommand)]
    pub action: Option<ServerAction>,
    /// Options of the running server.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Account management.
#[derive(Debug, Subcommand)]
pub enum ServerAction {
    /// Create an account and print its token (shown once; only a hash is stored).
    AddAccount(AccountArgs),
    /// Replace an account's token (the old one stops working) and print the new one.
    RotateToken(AccountArgs),
    /// Delete an account and all its models.
    RemoveAccount(AccountArgs),
    /// List accounts with their model count and stored bytes.
    Accounts {
        /// The server's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// An account in a data directory.
#[derive(Debug, Args)]
pub struct AccountArgs {
    /// Account name: 1–64 characters of A-Z a-z 0-9 . _ -
    pub name: String,
    /// The server's data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
}

/// Options of the running server.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address to listen on (port 0: any free port; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: SocketAddr,
    /// Directory of the database and the TLS identity (created, mode 0700).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Largest frame accepted after authentication, e.g. 128MiB, 64M, 1048576.
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    pub max_frame: u64,
    /// Connections served at once.
    #[arg(long, default_value_t = 64)]
    pub max_connections: usize,
    /// Seconds a connection may stay without a request.
    #[arg(long, default_value_t = 600)]
    pub idle_timeout: u64,
    /// Bytes each account may store, e.g. 4GiB.
    #[arg(long, default_value = "4GiB", value_parser = parse_size)]
    pub quota: u64,
    /// Let clients create their own accounts (`Register`).
    #[arg(long)]
    pub open_registration: bool,
}

/// `123`, `64K`, `64KiB`, `128M`, `128MiB`, `4G`, `4GiB` (binary multiples).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 128MiB"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        _ => return Err(format!("unknown size unit {unit:?} (use K, M or G)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn account(name: &str) -> anyhow::Result<AccountName> {
    AccountName::new(name).with_context(|| format!("invalid account name {name:?}"))
}

fn open(data_dir: &std::path::Path) -> anyhow::Result<Store> {
    sphinx_server::prepare_data_dir(data_dir)?;
    Store::open(data_dir).with_context(|| format!("opening {}", data_dir.display()))
}

/// Runs `sphinx server`.
///
/// # Errors
/// Bad options, an unusable data directory, a port in use, storage failures.
pub fn run(cmd: ServerCommand) -> anyhow::Result<ExitCode> {
    match cmd.action {
        Some(ServerAction::AddAccount(a)) => {
            let name = account(&a.name)?;
            let token = open(&a.data_dir)?.add_account(&name)?;
            println!("account {name} created; its token (shown once, keep it secret):");
            println!("{}", token.to_hex());
        }
        Some(ServerAction::RotateToken(a)) => {
            let name = account(&a.name)?;
            let token = open(&a.data_dir)?.rotate_token(&name)?;
            println!("account {name} has a new token (the old one no longer works):");
            println!("{}", token.to_hex());
        }
        Some(ServerAction::RemoveAccount(a)) => {
            let name = account(&a.name)?;
            open(&a.data_dir)?.remove_account(&name)?;
            println!("account {name} and its models removed");
        }
        Some(ServerAction::Accounts { data_dir }) => {
            println!("| account | models | stored bytes |\n|---|---|---|");
            for (name, models, bytes) in open(&data_dir)?.accounts()? {
                println!("| {name} | {models} | {bytes} |");
            }
        }
        None => serve(cmd.run)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(args: RunArgs) -> anyhow::Result<()> {
    let Some(data_dir) = args.data_dir else {
        bail!("--data-dir is required to run the server");
    };
    let max_frame = usize::try_from(args.max_frame).context("--max-frame")?;
    if max_frame > u32::MAX as usize {
        bail!("--max-frame must be below 4GiB (the frame length is a u32)");
    }
    if args.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    let config = ServerConfig {
        listen: args.listen,
        data_dir: data_dir.clone(),
        limits: Limits {
            max_frame,
            max_connections: args.max_connections,
            idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
            account_quota: args.quota,
            ..Limits::default()
        },
        registration: if args.open_registration {
            Registration::Open
        } else {
            Registration::Closed
        },
    };
    sphinx_server::run_until_signal(config, |bound| {
        println!("sphinx server listening on {}", bound.local_addr());
        println!("data directory: {}", data_dir.display());
        if bound.certificate_created() {
            println!("generated a new self-signed TLS certificate");
        }
        println!("certificate fingerprint (sha256): {}", bound.fingerprint());
        println!("press ctrl-c to stop");
        // Scripts and tests read these lines as soon as they appear.
        use std::io::Write;
        let _ = std::io::stdout().flush();
    })
    .with_context(|| format!("serving from {}", data_dir.display()))?;
    println!("sphinx server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("128MiB").unwrap(), 128 << 20);
        assert_eq!(parse_size("4gib").unwrap(), 4 << 30);
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
