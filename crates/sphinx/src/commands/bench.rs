//! `sphinx bench`: timings of our engine, side by side with a peer's.
//!
//! `sphinx bench ckks` times each CKKS primitive on one parameter set (median of
//! individually timed calls after a warm-up, on a local rayon pool of `--threads`
//! threads), prints a Markdown table and optionally writes JSON with `ops_ns` and
//! `ciphertext_bytes`. `--peer FILE` reads the JSON that
//! `bench/peers/tenseal_ckks.py` writes for Microsoft SEAL and adds its figures
//! and our/peer ratios.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sphinx_he::serialization::Serializable;
use sphinx_he::{
    Ciphertext, Encoder, Evaluator, GaloisKeys, Parameters, ParametersLiteral, PublicKey,
    RelinearizationKey, SecretKey,
};

/// `sphinx bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time the CKKS primitives (SEAL's parameter sets; one thread by default).
    Ckks(CkksArgs),
    /// Time one Sphinx private-training step per phase, bytes per image, and Pure-HE.
    Train(super::bench_train::BenchTrainArgs),
    /// Table V: private inference (Sphinx, Sphinx-FP, Pure-HE) per query, with accuracy.
    Infer(super::bench_infer::BenchInferArgs),
}

/// Arguments of `sphinx bench ckks`.
#[derive(Debug, Args)]
pub struct CkksArgs {
    /// log2 N: 13 (moduli 60,40,40 + special 60) or 14 (60, 6×40 + special 60); scale 2^40.
    #[arg(long, default_value_t = 13, value_parser = clap::value_parser!(u32).range(13..=14))]
    log_n: u32,
    /// Threads of the local rayon pool the operations run on.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: u64,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Peer results (JSON from bench/peers/tenseal_ckks.py) to compare against.
    #[arg(long, value_name = "FILE")]
    peer: Option<PathBuf>,
    /// Three timed runs per operation: a smoke test, not a measurement.
    #[arg(long, conflicts_with = "reps")]
    quick: bool,
    /// Exactly this many timed runs per operation (default: at least 30 and 0.5 s each).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    reps: Option<u64>,
    /// Repeat the whole sweep; each figure is then the minimum over rounds of the
    /// round's median (the least disturbed round on a shared machine).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: u64,
    /// What a timing measures: wall time, or the CPU time of the timing thread, which
    /// leaves out the time other processes hold the core (one thread only).
    #[arg(long, value_enum, default_value_t = Clock::Wall)]
    clock: Clock,
}

/// The clock the operations are timed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Clock {
    /// Elapsed real time.
    Wall,
    /// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`): on a shared machine,
    /// the cost of the code without the time spent waiting for a core.
    ThreadCpu,
}

impl Clock {
    fn name(self) -> &'static str {
        match self {
            Self::Wall => "wall",
            Self::ThreadCpu => "thread-cpu",
        }
    }
}

/// Reads one clock; `elapsed` gives nanoseconds since `start`.
#[derive(Clone, Copy, Debug)]
enum Stamp {
    Wall(Instant),
    Cpu(u64),
}

impl Stamp {
    fn now(clock: Clock) -> Self {
        match clock {
            Clock::Wall => Self::Wall(Instant::now()),
            Clock::ThreadCpu => Self::Cpu(thread_cpu_ns()),
        }
    }

    fn elapsed_ns(self) -> u64 {
        match self {
            Self::Wall(t) => u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Self::Cpu(t) => thread_cpu_ns().saturating_sub(t),
        }
    }
}

fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// The operations, in table order; the names are the JSON keys SEAL's script uses too.
const OPS: [&str; 13] = [
    "encode",
    "encrypt_pk",
    "encrypt_sk",
    "decrypt_decode",
    "add",
    "mul_plain",
    "mul_scalar",
    "mul",
    "relinearize",
    "rescale",
    "mul_relin_rescale",
    "rotate",
    "ntt_forward",
];

const SIZES: [&str; 3] = ["fresh", "seeded", "level0"];

const KEYS: [&str; 3] = ["public_key", "relin_key", "galois_key"];

/// What `--json` writes.
#[derive(Debug, Serialize)]
struct CkksReport {
    engine: &'static str,
    version: &'static str,
    log_n: u32,
    moduli_bits: Vec<u32>,
    scale_bits: u32,
    security: u32,
    threads: u64,
    rounds: u64,
    clock: &'static str,
    /// Median wall time per operation (minimum over rounds of the round's median).
    ops_ns: BTreeMap<&'static str, u64>,
    /// 10th percentile: the undisturbed cost on a shared machine.
    ops_ns_p10: BTreeMap<&'static str, u64>,
    reps: BTreeMap<&'static str, usize>,
    ciphertext_bytes: BTreeMap<&'static str, usize>,
    /// Serialized public key, relinearization key, and one Galois key.
    key_bytes: BTreeMap<&'static str, usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<PeerComparison>,
}

/// The peer's figures and our/peer ratios, as written into our JSON.
#[derive(Debug, Serialize)]
struct PeerComparison {
    engine: String,
    ops_ns: BTreeMap<String, u64>,
    ops_ns_p10: BTreeMap<String, u64>,
    ciphertext_bytes: BTreeMap<String, u64>,
    /// ours / peer of the medians: below 1 means we are faster.
    time_ratio: BTreeMap<String, f64>,
    /// ours / peer of the 10th percentiles (when the peer file has them).
    time_ratio_p10: BTreeMap<String, f64>,
    /// ours / peer: below 1 means ours is smaller.
    size_ratio: BTreeMap<String, f64>,
    key_bytes: BTreeMap<String, u64>,
    key_ratio: BTreeMap<String, f64>,
}

/// The part of the peer's JSON we read.
#[derive(Debug, Deserialize)]
struct PeerFile {
    #[serde(default)]
    engine: String,
    log_n: u32,
    moduli_bits: Vec<u32>,
    scale_bits: u32,
    #[serde(default = "wall")]
    clock: String,
    ops_ns: BTreeMap<String, u64>,
    #[serde(default)]
    ops_ns_p10: BTreeMap<String, u64>,
    ciphertext_bytes: BTreeMap<String, u64>,
    #[serde(default)]
    key_bytes: BTreeMap<String, u64>,
}

fn wall() -> String {
    "wall".to_string()
}

/// Runs `sphinx bench`.
pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Ckks(args) => run_ckks(&args),
        BenchCommand::Train(args) => super::bench_train::run(&args),
        BenchCommand::Infer(args) => super::bench_infer::run(&args),
    }
}

fn run_ckks(args: &CkksArgs) -> anyhow::Result<ExitCode> {
    let literal = match args.log_n {
        13 => ParametersLiteral::seal_n8192(),
        _ => ParametersLiteral::seal_n16384(),
    };
    let moduli_bits: Vec<u32> = literal
        .q_bits
        .iter()
        .chain(&literal.p_bits)
        .copied()
        .collect();
    // Read the peer first: a bad file should fail before minutes of timing.
    let peer = args
        .peer
        .as_ref()
        .map(|p| read_peer(p, &literal, &moduli_bits, args.clock))
        .transpose()?;
    let params = literal.build()?;
    let threads = usize::try_from(args.threads)?;
    if args.clock == Clock::ThreadCpu && threads > 1 {
        anyhow::bail!("--clock thread-cpu times one thread; use --clock wall with --threads > 1");
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let reps = Reps::from_args(args)?;
    eprintln!(
        "sphinx-he CKKS: N = 2^{}, moduli {:?}, scale 2^{}, {} thread(s)",
        literal.log_n, moduli_bits, literal.scale_bits, threads
    );
    let (mut timings, sizes, keys) = pool.install(|| measure(&params, reps))?;
    for round in 2..=args.rounds {
        eprintln!("round {round} of {}", args.rounds);
        let (next, _, _) = pool.install(|| measure(&params, reps))?;
        for (name, t) in next {
            timings
                .entry(name)
                .and_modify(|best| {
                    best.median = best.median.min(t.median);
                    best.p10 = best.p10.min(t.p10);
                    best.reps += t.reps;
                })
                .or_insert(t);
        }
    }
    let ops: BTreeMap<_, _> = timings.iter().map(|(&k, t)| (k, t.median)).collect();
    let p10: BTreeMap<_, _> = timings.iter().map(|(&k, t)| (k, t.p10)).collect();
    let counts: BTreeMap<_, _> = timings.iter().map(|(&k, t)| (k, t.reps)).collect();

    let peer = peer.map(|p| compare(p, &ops, &p10, &sizes, &keys));
    print_table(&ops, &sizes, &keys, peer.as_ref());
    if let Some(path) = &args.json {
        let report = CkksReport {
            engine: "sphinx-he",
            version: env!("CARGO_PKG_VERSION"),
            log_n: literal.log_n,
            moduli_bits,
            scale_bits: literal.scale_bits,
            security: literal.security.bits().unwrap_or(0),
            threads: args.threads,
            rounds: args.rounds,
            clock: args.clock.name(),
            ops_ns: ops,
            ops_ns_p10: p10,
            reps: counts,
            ciphertext_bytes: sizes,
            key_bytes: keys,
            peer,
        };
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn read_peer(
    path: &PathBuf,
    literal: &ParametersLiteral,
    moduli_bits: &[u32],
    clock: Clock,
) -> anyhow::Result<PeerFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let peer: PeerFile =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if peer.log_n != literal.log_n
        || peer.moduli_bits != moduli_bits
        || peer.scale_bits != literal.scale_bits
    {
        anyhow::bail!(
            "{} was measured on N = 2^{}, moduli {:?}, scale 2^{}; this run uses N = 2^{}, {:?}, 2^{}",
            path.display(),
            peer.log_n,
            peer.moduli_bits,
            peer.scale_bits,
            literal.log_n,
            moduli_bits,
            literal.scale_bits
        );
    }
    if peer.clock != clock.name() {
        anyhow::bail!(
            "{} was timed with the {} clock; this run uses {} (pass --clock {})",
            path.display(),
            peer.clock,
            clock.name(),
            peer.clock
        );
    }
    Ok(peer)
}

/// How many timed repetitions each operation gets.
#[derive(Clone, Copy, Debug)]
struct Reps {
    clock: Clock,
    warmup: usize,
    min: usize,
    max: usize,
    budget: Duration,
}

impl Reps {
    fn from_args(args: &CkksArgs) -> anyhow::Result<Self> {
        Ok(match (args.reps, args.quick) {
            (Some(n), _) => {
                let n = usize::try_from(n)?;
                Self {
                    clock: args.clock,
                    warmup: 1,
                    min: n,
                    max: n,
                    budget: Duration::ZERO,
                }
            }
            (None, true) => Self {
                clock: args.clock,
                warmup: 1,
                min: 3,
                max: 3,
                budget: Duration::ZERO,
            },
            (None, false) => Self {
                clock: args.clock,
                warmup: 3,
                min: 30,
                max: 5000,
                budget: Duration::from_millis(500),
            },
        })
    }
}

/// One operation's timing: median and 10th percentile of the wall time, in ns.
#[derive(Clone, Copy, Debug)]
struct Timing {
    median: u64,
    p10: u64,
    reps: usize,
}

/// Times `op` over inputs from `setup` (untimed), after a warm-up. The 10th
/// percentile shows an undisturbed call's cost when the machine is shared; the
/// median is the headline figure.
fn median_ns<S, T>(
    reps: Reps,
    mut setup: impl FnMut() -> S,
    mut op: impl FnMut(S) -> sphinx_he::Result<T>,
) -> anyhow::Result<Timing> {
    for _ in 0..reps.warmup {
        std::hint::black_box(op(setup())?);
    }
    let mut samples: Vec<u64> = Vec::with_capacity(reps.min);
    let start = Instant::now();
    while samples.len() < reps.max && (samples.len() < reps.min || start.elapsed() < reps.budget) {
        let input = setup();
        let t = Stamp::now(reps.clock);
        let out = op(input)?;
        let dt = t.elapsed_ns();
        // Dropping the result is not part of the operation.
        drop(std::hint::black_box(out));
        samples.push(dt);
    }
    samples.sort_unstable();
    let n = samples.len();
    let median = match (samples.get(n / 2), n % 2) {
        (Some(&hi), 1) => hi,
        (Some(&hi), _) => samples
            .get(n / 2 - 1)
            .map_or(hi, |&lo| lo / 2 + hi / 2 + (lo % 2 + hi % 2) / 2),
        (None, _) => anyhow::bail!("no timed repetitions"),
    };
    let p10 = samples.get(n / 10).copied().unwrap_or(median);
    Ok(Timing {
        median,
        p10,
        reps: n,
    })
}

type Measured = (
    BTreeMap<&'static str, Timing>,
    BTreeMap<&'static str, usize>,
    BTreeMap<&'static str, usize>,
);

fn measure(params: &Arc<Parameters>, reps: Reps) -> anyhow::Result<Measured> {
    let mut rng = ChaCha20Rng::from_os_rng();
    let sk = SecretKey::generate(params, &mut rng)?;
    let pk = PublicKey::new(&sk, &mut rng)?;
    let rlk = RelinearizationKey::new(&sk, &mut rng)?;
    let gk = GaloisKeys::new(&sk, &[1], false, &mut rng)?;
    let encoder = Encoder::new(params);
    let eval = Evaluator::new(params);
    let top = params.max_level();
    let scale = params.scale();

    let mut value_rng = ChaCha20Rng::seed_from_u64(1);
    let mut values = || -> Vec<f64> {
        (0..params.slots())
            .map(|_| rand::Rng::random_range(&mut value_rng, -1.0..1.0))
            .collect()
    };
    let (xs, ys) = (values(), values());
    let pt_x = encoder.encode(&xs, scale, top)?;
    let pt_y = encoder.encode(&ys, scale, top)?;
    let ct_x = pk.encrypt(&pt_x, &mut rng)?;
    let ct_y = pk.encrypt(&pt_y, &mut rng)?;
    let ct3 = eval.multiply(&ct_x, &ct_y)?;
    let ct_relin = eval.relinearize(&ct3, &rlk)?;

    // The pipeline must compute x·y before any figure is trusted.
    let check = encoder.decode(&sk.decrypt(&eval.rescale(&ct_relin)?)?)?;
    let max_err = check
        .iter()
        .zip(xs.iter().zip(&ys))
        .map(|(g, (a, b))| (g - a * b).abs())
        .fold(0.0, f64::max);
    anyhow::ensure!(max_err < 1e-3, "sanity check failed: max error {max_err}");

    let mut ops = BTreeMap::new();
    let mut record = |name: &'static str, t: Timing| {
        eprintln!(
            "  {name:<18} {:>10.1} us  ({} reps)",
            t.median as f64 / 1e3,
            t.reps
        );
        ops.insert(name, t);
    };
    let none = || ();
    record(
        "encode",
        median_ns(reps, none, |()| encoder.encode(&xs, scale, top))?,
    );
    record(
        "encrypt_pk",
        median_ns(reps, none, |()| pk.encrypt(&pt_x, &mut rng))?,
    );
    record(
        "encrypt_sk",
        median_ns(reps, none, |()| sk.encrypt(&pt_x, &mut rng))?,
    );
    record(
        "decrypt_decode",
        median_ns(reps, none, |()| encoder.decode(&sk.decrypt(&ct_x)?))?,
    );
    record("add", median_ns(reps, none, |()| eval.add(&ct_x, &ct_y))?);
    record(
        "mul_plain",
        median_ns(reps, none, |()| eval.mul_plain(&ct_x, &pt_y))?,
    );
    record(
        "mul_scalar",
        median_ns(reps, none, |()| eval.mul_scalar(&ct_x, 0.75))?,
    );
    record(
        "mul",
        median_ns(reps, none, |()| eval.multiply(&ct_x, &ct_y))?,
    );
    record(
        "relinearize",
        median_ns(reps, none, |()| eval.relinearize(&ct3, &rlk))?,
    );
    record(
        "rescale",
        median_ns(reps, none, |()| eval.rescale(&ct_relin))?,
    );
    record(
        "mul_relin_rescale",
        median_ns(reps, none, |()| {
            let mut c = eval.multiply_relin(&ct_x, &ct_y, &rlk)?;
            eval.rescale_assign(&mut c)?;
            Ok(c)
        })?,
    );
    record(
        "rotate",
        median_ns(reps, none, |()| eval.rotate(&ct_x, 1, &gk))?,
    );
    // One polynomial over all top-level ciphertext primes, coefficient to NTT form.
    let basis = params.q_basis(top)?.clone();
    let coeff = ct_x.polys()[1].clone().into_coeff(&basis)?;
    record(
        "ntt_forward",
        median_ns(
            reps,
            || coeff.clone(),
            |p| p.into_ntt(&basis).map_err(sphinx_he::HeError::from),
        )?,
    );

    let mut sizes = BTreeMap::new();
    let fresh: &Ciphertext = &ct_x;
    sizes.insert("fresh", fresh.to_bytes(params)?.len());
    sizes.insert(
        "seeded",
        sk.encrypt(&pt_x, &mut rng)?.to_bytes(params)?.len(),
    );
    sizes.insert(
        "level0",
        eval.drop_to_level(&ct_x, 0)?.to_bytes(params)?.len(),
    );
    let mut keys = BTreeMap::new();
    keys.insert("public_key", pk.to_bytes(params)?.len());
    keys.insert("relin_key", rlk.to_bytes(params)?.len());
    // A set holding one key: every Galois key has the same size.
    keys.insert("galois_key", gk.to_bytes(params)?.len());
    Ok((ops, sizes, keys))
}

fn ratios<K: AsRef<str>>(
    ours: &BTreeMap<K, impl Copy + Into<f64>>,
    theirs: &BTreeMap<String, u64>,
) -> BTreeMap<String, f64> {
    ours.iter()
        .filter_map(|(k, &o)| {
            let p = *theirs.get(k.as_ref()).filter(|&&p| p > 0)?;
            Some((k.as_ref().to_string(), o.into() / p as f64))
        })
        .collect()
}

fn compare(
    peer: PeerFile,
    ops: &BTreeMap<&'static str, u64>,
    p10: &BTreeMap<&'static str, u64>,
    sizes: &BTreeMap<&'static str, usize>,
    keys: &BTreeMap<&'static str, usize>,
) -> PeerComparison {
    // Byte counts and nanoseconds both fit f64's 53-bit mantissa at these sizes.
    let as_f64 = |m: &BTreeMap<&'static str, u64>| -> BTreeMap<&'static str, f64> {
        m.iter().map(|(&k, &v)| (k, v as f64)).collect()
    };
    let bytes_f64 = |m: &BTreeMap<&'static str, usize>| -> BTreeMap<&'static str, f64> {
        m.iter().map(|(&k, &v)| (k, v as f64)).collect()
    };
    PeerComparison {
        time_ratio: ratios(&as_f64(ops), &peer.ops_ns),
        time_ratio_p10: ratios(&as_f64(p10), &peer.ops_ns_p10),
        size_ratio: ratios(&bytes_f64(sizes), &peer.ciphertext_bytes),
        key_ratio: ratios(&bytes_f64(keys), &peer.key_bytes),
        key_bytes: peer.key_bytes,
        engine: peer.engine,
        ops_ns: peer.ops_ns,
        ops_ns_p10: peer.ops_ns_p10,
        ciphertext_bytes: peer.ciphertext_bytes,
    }
}

type BytesPeer<'a> = Option<(&'a BTreeMap<String, u64>, &'a BTreeMap<String, f64>)>;

fn ratio_cell(m: &BTreeMap<String, f64>, name: &str) -> String {
    m.get(name)
        .map_or_else(|| "–".to_string(), |r| format!("{r:.2}"))
}

fn print_table(
    ops: &BTreeMap<&'static str, u64>,
    sizes: &BTreeMap<&'static str, usize>,
    keys: &BTreeMap<&'static str, usize>,
    peer: Option<&PeerComparison>,
) {
    let us = |ns: u64| format!("{:.1}", ns as f64 / 1e3);
    match peer {
        None => {
            println!("| operation | sphinx-he (µs) |");
            println!("|---|---:|");
        }
        Some(_) => {
            println!(
                "| operation | sphinx-he (µs) | SEAL (µs) | ours / SEAL | ours / SEAL, 10th pct |"
            );
            println!("|---|---:|---:|---:|---:|");
        }
    }
    for name in OPS {
        let ours = ops.get(name).map_or_else(|| "–".to_string(), |&ns| us(ns));
        match peer {
            None => println!("| {name} | {ours} |"),
            Some(p) => {
                let theirs = p
                    .ops_ns
                    .get(name)
                    .map_or_else(|| "–".to_string(), |&ns| us(ns));
                let r = ratio_cell(&p.time_ratio, name);
                let r10 = ratio_cell(&p.time_ratio_p10, name);
                println!("| {name} | {ours} | {theirs} | {r} | {r10} |");
            }
        }
    }
    print_bytes(
        "ciphertext",
        &SIZES,
        sizes,
        peer.map(|p| (&p.ciphertext_bytes, &p.size_ratio)),
    );
    print_bytes(
        "key",
        &KEYS,
        keys,
        peer.map(|p| (&p.key_bytes, &p.key_ratio)),
    );
}

fn print_bytes(
    what: &str,
    names: &[&str],
    ours: &BTreeMap<&'static str, usize>,
    peer: BytesPeer<'_>,
) {
    println!();
    match peer {
        None => {
            println!("| {what} | sphinx-he (bytes) |");
            println!("|---|---:|");
        }
        Some(_) => {
            println!("| {what} | sphinx-he (bytes) | SEAL (bytes) | ours / SEAL |");
            println!("|---|---:|---:|---:|");
        }
    }
    for &name in names {
        let o = ours
            .get(name)
            .map_or_else(|| "–".to_string(), usize::to_string);
        match peer {
            None => println!("| {name} | {o} |"),
            Some((bytes, ratios)) => {
                let t = bytes
                    .get(name)
                    .map_or_else(|| "–".to_string(), u64::to_string);
                println!("| {name} | {o} | {t} | {} |", ratio_cell(ratios, name));
            }
        }
    }
}
