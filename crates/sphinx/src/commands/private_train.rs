//! `sphinx baseline train --mode sphinx`: the encrypted Sphinx training protocol, client
//! and server in one process (no network), with the flags and JSON report of the
//! plaintext baselines.

use std::time::Instant;

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_dp::{
    ClipNorm, Delta, DpSgdAggregator, DpSgdConfig, Epsilon, NoiseMultiplier, PrivacyBudget,
    RdpAccountant, SampleRate, calibrate_noise,
};
use sphinx_nn::data::Split;
use sphinx_nn::model::Model;
use sphinx_protocol::ProtocolError;
use sphinx_protocol::client::{Client, ClientConfig};
use sphinx_protocol::params::build_training_parameters;
use sphinx_protocol::session::Session;

use super::baseline::TrainArgs;

/// The outcome of an encrypted run.
pub struct SphinxRun {
    /// The trained model (server's `W`, client-decrypted `b`).
    pub model: Model,
    /// Steps taken.
    pub steps: u64,
    /// ε spent at `--delta`.
    pub epsilon: f64,
    /// σ used.
    pub noise_multiplier: f64,
    /// q.
    pub sample_rate: f64,
    /// The optimal RDP order of the ε conversion.
    pub order: f64,
}

/// Runs the protocol for round(epochs / q) Poisson steps, stopping early if the budget
/// refuses a step.
///
/// # Errors
/// Unsupported options (momentum, weight decay, cosine schedule, augmentation), DP
/// configuration errors, and protocol errors.
pub fn run(
    args: &TrainArgs,
    split: &Split,
    seed: u64,
    epoch_seconds: &mut Vec<f64>,
) -> anyhow::Result<SphinxRun> {
    if args.momentum != 0.0 || args.weight_decay != 0.0 || args.cosine || args.augment_shift != 0 {
        bail!(
            "--mode sphinx runs plain SGD (with --weight-average): --momentum, --weight-decay, --cosine and --augment-shift are not supported"
        );
    }
    let n = split.train.len();
    let q = (args.batch_size as f64 / n as f64).min(1.0);
    let sample_rate = SampleRate::new(q)?;
    let steps = ((f64::from(args.epochs) / q).round() as u64).max(1);
    let delta = Delta::new(args.delta)?;
    let (sigma, budget) = match (args.epsilon, args.noise_multiplier) {
        (Some(eps), None) => {
            let target = Epsilon::new(eps)?;
            let cal = calibrate_noise(&RdpAccountant::new(), sample_rate, steps, target, delta)
                .context("calibrating σ for --epsilon")?;
            (cal.noise_multiplier, target)
        }
        // σ given: the ledger still records every step; no budget to stop at.
        (None, Some(sigma)) => (NoiseMultiplier::new(sigma)?, Epsilon::new(1e12)?),
        _ => bail!("--mode sphinx needs exactly one of --epsilon or --noise-multiplier"),
    };
    let spec = args.model.parse::<sphinx_nn::presets::Preset>()?.spec();
    let weights: usize = Model::zeros(spec.clone())?
        .param_layers()
        .map(|p| p.weight().len())
        .sum();
    let config = DpSgdConfig {
        clip_norm: ClipNorm::new(args.clip)?,
        noise_multiplier: sigma,
        sample_rate,
        dataset_size: n,
    };
    let agg = match args.seed {
        Some(_) => DpSgdAggregator::seeded(weights, config, seed)?,
        None => DpSgdAggregator::new(weights, config)?,
    };
    let key_rng = match args.seed {
        Some(s) => ChaCha20Rng::seed_from_u64(s.wrapping_add(1)),
        None => ChaCha20Rng::from_os_rng(),
    };
    let (client, setup) = Client::new(
        build_training_parameters()?,
        spec,
        split.train.clone(),
        agg,
        ClientConfig {
            learning_rate: args.lr,
            init_seed: seed,
            bias_init: 0.01,
            weight_average: args.weight_average,
            budget: PrivacyBudget {
                epsilon: budget,
                delta,
            },
        },
        key_rng,
    )?;
    let mut session = Session::new(client, setup, &mut ChaCha20Rng::from_os_rng())?;
    eprintln!(
        "Sphinx (encrypted, in-process): q = {q:.6}, σ = {:.4}, C = {}, {steps} steps",
        sigma.get(),
        args.clip
    );
    let mut t0 = Instant::now();
    let mut taken = 0;
    for step in 0..steps {
        match session.run_step() {
            Ok(o) => eprintln!(
                "step {}: batch {}, loss {:.4}, ε {:.4}",
                step + 1,
                o.batch_size,
                o.loss_sum / o.batch_size.max(1) as f64,
                o.epsilon
            ),
            Err(ProtocolError::BudgetExhausted { budget }) => {
                eprintln!(
                    "stopping before step {}: budget ε = {budget} reached",
                    step + 1
                );
                break;
            }
            Err(e) => return Err(e.into()),
        }
        taken += 1;
        let epoch_done = ((step + 1) as f64 * q).floor() > (step as f64 * q).floor();
        if epoch_done || step + 1 == steps {
            epoch_seconds.push(t0.elapsed().as_secs_f64());
            t0 = Instant::now();
        }
    }
    let spent = session.client().ledger().spent()?;
    let model = session.export_model()?;
    Ok(SphinxRun {
        model,
        steps: taken,
        epsilon: spent.epsilon.get(),
        noise_multiplier: sigma.get(),
        sample_rate: q,
        order: spent.order,
    })
}
