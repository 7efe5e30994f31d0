//! `sphinx bench train`: one Sphinx private-training step, timed per phase, with bytes
//! per image in each direction, against the Pure-HE baseline on the same batch.
//!
//! The Sphinx figures come from real encrypted steps (client and server in-process, on
//! the bundled MNIST sample, Poisson batches of the expected size). The Pure-HE figure is
//! the exact operation count of one batch-packed Pure-HE step times per-operation costs
//! measured in the same run (see `sphinx_protocol::pure_he`), reported per sample and
//! labelled as extrapolated.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use sphinx_dp::{
    ClipNorm, Delta, DpSgdAggregator, DpSgdConfig, Epsilon, NoiseMultiplier, PrivacyBudget,
    SampleRate,
};
use sphinx_nn::data::bundled_mnist_sample;
use sphinx_nn::model::Model;
use sphinx_nn::presets::Preset;
use sphinx_protocol::accounting::Phase;
use sphinx_protocol::client::{Client, ClientConfig};
use sphinx_protocol::messages::{Direction, MessageKind};
use sphinx_protocol::params::build_training_parameters;
use sphinx_protocol::pure_he;
use sphinx_protocol::session::Session;

/// Arguments of `sphinx bench train`.
#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// Model preset (an MNIST-shaped one: sphinx-mnist-cnn, mlp-30, mlp-100, lenet5, ...).
    #[arg(long, default_value = "sphinx-mnist-cnn")]
    model: String,
    /// Expected (Poisson) batch size; at most the 2048 slots of a ciphertext.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1500))]
    batch_size: u64,
    /// Timed training steps (the figures are means over them).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    steps: u64,
    /// Pure-HE operations timed per kind for the unit costs.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(2..=10_000))]
    pure_he_reps: u64,
    /// Seed of keys, sampling and noise (a benchmark, not a deployment).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct SphinxReport {
    seconds_per_batch: f64,
    bytes_up_per_image: f64,
    bytes_down_per_image: f64,
    phases: BTreeMap<&'static str, f64>,
    mean_batch_size: f64,
    steps: u64,
    setup_bytes: u64,
    bytes_per_message_type: BTreeMap<&'static str, u64>,
    ring_degree: usize,
    modulus_bits: Vec<u32>,
}

#[derive(Debug, Serialize)]
struct PureHeReport {
    seconds_per_sample: f64,
    seconds_per_batch: f64,
    method: &'static str,
    mul_relin_rescale_ops: u64,
    rotation_ops: u64,
    mul_relin_rescale_seconds: f64,
    rotation_seconds: f64,
    ring_degree: usize,
    modulus_bits: Vec<u32>,
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    expected_batch_size: u64,
    threads: usize,
    sphinx: SphinxReport,
    pure_he: PureHeReport,
    speedup: f64,
}

/// Runs `sphinx bench train`.
///
/// # Errors
/// Unknown or non-MNIST model, and any protocol error.
pub fn run(args: &BenchTrainArgs) -> anyhow::Result<ExitCode> {
    let preset: Preset = args.model.parse()?;
    let spec = preset.spec();
    let split = bundled_mnist_sample()?;
    if spec.input != split.train.shape {
        bail!(
            "{} takes {} inputs; the bundled sample is {}",
            args.model,
            spec.input,
            split.train.shape
        );
    }
    let train = split.train;
    let n = train.len();
    let weights: usize = Model::zeros(spec.clone())?
        .param_layers()
        .map(|p| p.weight().len())
        .sum();
    let dp = DpSgdConfig {
        clip_norm: ClipNorm::new(1.0)?,
        noise_multiplier: NoiseMultiplier::new(1.0)?,
        sample_rate: SampleRate::new(args.batch_size as f64 / n as f64)?,
        dataset_size: n,
    };
    let params = build_training_parameters()?;
    let (client, setup) = Client::new(
        params.clone(),
        spec.clone(),
        train,
        DpSgdAggregator::seeded(weights, dp, args.seed)?,
        ClientConfig {
            learning_rate: 0.1,
            init_seed: args.seed,
            bias_init: 0.01,
            weight_average: 0.0,
            // Timing only: a budget the run cannot reach.
            budget: PrivacyBudget {
                epsilon: Epsilon::new(1e6)?,
                delta: Delta::new(1e-5)?,
            },
        },
        ChaCha20Rng::seed_from_u64(args.seed.wrapping_add(1)),
    )?;
    let mut session = Session::new(
        client,
        setup,
        &mut ChaCha20Rng::seed_from_u64(args.seed.wrapping_add(2)),
    )?;
    let setup_bytes = session.traffic().kind(MessageKind::Setup).bytes;
    eprintln!(
        "Sphinx: {} ({} weights), expected batch {}, N = {}, {} thread(s)",
        args.model,
        weights,
        args.batch_size,
        params.n(),
        rayon::current_num_threads()
    );
    let (mut images, mut wall) = (0usize, 0.0f64);
    for s in 0..args.steps {
        let t = Instant::now();
        let outcome = session.run_step().context("encrypted training step")?;
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "  step {}: batch {}, {secs:.2} s",
            s + 1,
            outcome.batch_size
        );
        wall += secs;
        images += outcome.batch_size;
    }
    let steps = args.steps as f64;
    let traffic = session.traffic();
    let per_image = |d: Direction| {
        let setup = if d == Direction::ClientToServer {
            setup_bytes
        } else {
            0
        };
        (traffic.bytes(d) - setup) as f64 / images.max(1) as f64
    };
    let times = session.times();
    let phases: BTreeMap<_, _> = Phase::ALL
        .iter()
        .map(|&p| (p.name(), times.get(p).as_secs_f64() / steps))
        .collect();
    let literal = params.literal();
    let sphinx = SphinxReport {
        seconds_per_batch: wall / steps,
        bytes_up_per_image: per_image(Direction::ClientToServer),
        bytes_down_per_image: per_image(Direction::ServerToClient),
        phases,
        mean_batch_size: images as f64 / steps,
        steps: args.steps,
        setup_bytes,
        bytes_per_message_type: traffic.kinds().map(|(k, t)| (k.name(), t.bytes)).collect(),
        ring_degree: params.n(),
        modulus_bits: literal
            .q_bits
            .iter()
            .chain(&literal.p_bits)
            .copied()
            .collect(),
    };

    eprintln!("Pure-HE: timing unit operations");
    let mut rng = ChaCha20Rng::seed_from_u64(args.seed.wrapping_add(3));
    let costs = pure_he::measure_op_costs(usize::try_from(args.pure_he_reps)?, &mut rng)?;
    let pure_params = costs.params.build()?;
    let counts = pure_he::op_counts(&spec, pure_params.slots())?;
    let pure_batch = counts.seconds(&costs);
    let pure_he = PureHeReport {
        seconds_per_sample: pure_batch / sphinx.mean_batch_size.max(1.0),
        seconds_per_batch: pure_batch,
        method: "extrapolated: exact operation count of one batch-packed step x measured per-operation cost",
        mul_relin_rescale_ops: counts.mul_relin_rescale,
        rotation_ops: counts.rotations,
        mul_relin_rescale_seconds: costs.mul_relin_rescale,
        rotation_seconds: costs.rotation,
        ring_degree: pure_params.n(),
        modulus_bits: costs
            .params
            .q_bits
            .iter()
            .chain(&costs.params.p_bits)
            .copied()
            .collect(),
    };
    let report = Report {
        model: args.model.clone(),
        expected_batch_size: args.batch_size,
        threads: rayon::current_num_threads(),
        speedup: pure_batch / sphinx.seconds_per_batch,
        sphinx,
        pure_he,
    };
    print_markdown(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_markdown(r: &Report) {
    let s = &r.sphinx;
    println!(
        "## Private training: {} (expected batch {}, mean realized {:.1}, {} step(s), {} thread(s))\n",
        r.model, r.expected_batch_size, s.mean_batch_size, s.steps, r.threads
    );
    println!("| phase | seconds per batch |\n|---|---:|");
    for p in Phase::ALL {
        println!(
            "| {} | {:.3} |",
            p.name(),
            s.phases.get(p.name()).copied().unwrap_or(0.0)
        );
    }
    println!("| **total (wall)** | **{:.3}** |\n", s.seconds_per_batch);
    println!("| figure | value |\n|---|---:|");
    println!(
        "| Sphinx bytes up per image | {:.0} |",
        s.bytes_up_per_image
    );
    println!(
        "| Sphinx bytes down per image | {:.0} |",
        s.bytes_down_per_image
    );
    println!("| Sphinx setup bytes (once) | {} |", s.setup_bytes);
    println!(
        "| Pure-HE seconds per batch (extrapolated, N = {}) | {:.1} |",
        r.pure_he.ring_degree, r.pure_he.seconds_per_batch
    );
    println!(
        "| Pure-HE seconds per sample (extrapolated) | {:.3} |",
        r.pure_he.seconds_per_sample
    );
    println!("| speedup (Pure-HE / Sphinx) | {:.1}x |", r.speedup);
}
