//! `sphinx params`: choose a secure CKKS parameter set, or check one.
//!
//! Both subcommands apply the HomomorphicEncryption.org bounds on `log2(QP)` that
//! `sphinx-he` enforces when it builds parameters, so a set this command calls
//! secure is one the library accepts.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use sphinx_he::params::{estimate_precision_bits, suggest, suggest_without_key_switching};
use sphinx_he::{HeError, ParametersLiteral, SecurityLevel};

/// `sphinx params` subcommands.
#[derive(Debug, Subcommand)]
pub enum ParamsCommand {
    /// The smallest secure CKKS set for a multiplicative depth, scale and slot count.
    Suggest(SuggestArgs),
    /// Check a set against the security table: exit 0 if secure, 1 (with the reason) if not.
    Check(CheckArgs),
}

/// Arguments of `sphinx params suggest`.
#[derive(Debug, Args)]
pub struct SuggestArgs {
    /// Rescaled multiplications the circuit needs.
    #[arg(long)]
    depth: usize,
    /// Bits of the CKKS scale (the fixed-point precision of each level).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=60))]
    scale_bits: u32,
    /// Minimum number of slots (values per ciphertext).
    #[arg(long, default_value_t = 1)]
    slots: usize,
    /// Classical security level in bits: 128, 192 or 256.
    #[arg(long, default_value_t = 128, value_parser = parse_security)]
    security: u32,
    /// No special prime: for workloads without relinearization or rotations (the
    /// client decrypts 3-part products itself), so smaller rings qualify.
    #[arg(long)]
    no_key_switching: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `sphinx params check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// log2 of the ring degree N.
    #[arg(long)]
    log_n: u32,
    /// Bit sizes of every prime, ciphertext primes first and the special
    /// (key-switching) primes last, SEAL-style: e.g. 60,40,40,60.
    #[arg(long, value_delimiter = ',', required = true)]
    moduli_bits: Vec<u32>,
    /// How many of the trailing primes are special primes.
    #[arg(long, default_value_t = 1)]
    special_primes: usize,
    /// Scale bits for the precision estimate (default: the second prime's size).
    #[arg(long)]
    scale_bits: Option<u32>,
    /// Classical security level in bits: 128, 192 or 256.
    #[arg(long, default_value_t = 128, value_parser = parse_security)]
    security: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_security(s: &str) -> Result<u32, String> {
    let bits: u32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    SecurityLevel::from_bits(bits)
        .map(|_| bits)
        .ok_or_else(|| "security must be 128, 192 or 256".to_string())
}

fn level(bits: u32) -> anyhow::Result<SecurityLevel> {
    SecurityLevel::from_bits(bits).context("security must be 128, 192 or 256")
}

/// What both subcommands print as JSON.
#[derive(Debug, Serialize)]
struct Report {
    log_n: u32,
    /// Every prime, ciphertext primes then special primes.
    moduli_bits: Vec<u32>,
    scale_bits: u32,
    security: u32,
    precision_bits: f64,
    slots: usize,
    depth: usize,
    q_bits: Vec<u32>,
    p_bits: Vec<u32>,
    total_bits: u32,
    max_total_bits: Option<u32>,
    secure: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl Report {
    fn new(literal: &ParametersLiteral, security: u32, precision_bits: f64) -> Self {
        Self {
            log_n: literal.log_n,
            moduli_bits: literal
                .q_bits
                .iter()
                .chain(&literal.p_bits)
                .copied()
                .collect(),
            scale_bits: literal.scale_bits,
            security,
            precision_bits: (precision_bits * 10.0).round() / 10.0,
            slots: 1usize
                .checked_shl(literal.log_n.saturating_sub(1))
                .unwrap_or(0),
            depth: literal.q_bits.len().saturating_sub(1),
            q_bits: literal.q_bits.clone(),
            p_bits: literal.p_bits.clone(),
            total_bits: literal.total_bits(),
            max_total_bits: literal.security.max_log_qp(literal.log_n),
            secure: true,
            reason: None,
        }
    }

    fn print_text(&self) {
        let join = |v: &[u32]| match v {
            [] => "none".to_string(),
            v => v.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        };
        println!(
            "log_n           {} (N = {}, {} slots)",
            self.log_n,
            1u64 << self.log_n,
            self.slots
        );
        println!(
            "moduli_bits     {} (ciphertext {}; special {})",
            join(&self.moduli_bits),
            join(&self.q_bits),
            join(&self.p_bits)
        );
        match self.max_total_bits {
            Some(max) => println!("log2(QP)        {} of at most {max} bits", self.total_bits),
            None => println!(
                "log2(QP)        {} bits (no bound for this degree)",
                self.total_bits
            ),
        }
        println!("scale_bits      {}", self.scale_bits);
        println!(
            "security        {}-bit classical (HomomorphicEncryption.org table)",
            self.security
        );
        println!(
            "precision_bits  ~{:.1} after depth {} (estimate)",
            self.precision_bits, self.depth
        );
    }
}

/// Runs `sphinx params`.
pub fn run(cmd: ParamsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ParamsCommand::Suggest(args) => run_suggest(&args),
        ParamsCommand::Check(args) => run_check(&args),
    }
}

fn run_suggest(args: &SuggestArgs) -> anyhow::Result<ExitCode> {
    let pick = if args.no_key_switching {
        suggest_without_key_switching
    } else {
        suggest
    };
    let s = pick(
        args.depth,
        args.scale_bits,
        args.slots,
        level(args.security)?,
    )?;
    let report = Report::new(&s.literal, args.security, s.precision_bits);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print_text();
    }
    Ok(ExitCode::SUCCESS)
}

fn run_check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let bits = &args.moduli_bits;
    if args.special_primes >= bits.len() {
        anyhow::bail!(
            "{} primes with {} special leave no ciphertext prime",
            bits.len(),
            args.special_primes
        );
    }
    let (q_bits, p_bits) = bits.split_at(bits.len() - args.special_primes);
    let scale_bits = args
        .scale_bits
        .unwrap_or(q_bits.get(1).copied().unwrap_or(q_bits[0]));
    let literal = ParametersLiteral {
        log_n: args.log_n,
        q_bits: q_bits.to_vec(),
        p_bits: p_bits.to_vec(),
        scale_bits,
        security: level(args.security)?,
    };
    let precision = estimate_precision_bits(literal.log_n, scale_bits, q_bits.len() - 1);
    let mut report = Report::new(&literal, args.security, precision);
    // `build` runs every check the library applies, including that the primes exist.
    if let Err(err) = literal.build() {
        report.secure = false;
        report.reason = Some(explain(&err, &literal));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print_text();
        match &report.reason {
            None => println!("verdict         SECURE"),
            Some(reason) => println!("verdict         REFUSED: {reason}"),
        }
    }
    Ok(if report.secure {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn explain(err: &HeError, literal: &ParametersLiteral) -> String {
    match err {
        HeError::InsecureParameters {
            total_bits,
            max_bits,
            ..
        } => {
            // The next degree up whose bound admits this modulus, if any.
            let fix = (literal.log_n + 1..=15)
                .find(|&l| {
                    literal
                        .security
                        .max_log_qp(l)
                        .is_some_and(|m| m >= *total_bits)
                })
                .map(|l| {
                    format!(
                        "; N = 2^{l} would admit it, or drop {} bits",
                        total_bits - max_bits
                    )
                })
                .unwrap_or_default();
            format!("{err}{fix}")
        }
        other => other.to_string(),
    }
}
