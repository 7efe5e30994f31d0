//! `sphinx baseline`: plaintext reference training (no encryption), without privacy or
//! with DP-SGD, on the bundled MNIST sample, Fashion-MNIST or any IDX/CIFAR directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use sphinx_nn::data::{DataSource, Split};
use sphinx_nn::model::Model;
use sphinx_nn::optim::Sgd;
use sphinx_nn::presets::Preset;
use sphinx_nn::train;

/// `sphinx baseline` subcommands.
#[derive(Debug, Subcommand)]
pub enum BaselineCommand {
    /// Train a model in plaintext (optionally with DP-SGD) and report held-out accuracy,
    /// ε spent and wall time.
    Train(Box<TrainArgs>),
}

/// Training mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Minibatch SGD over shuffled epochs, no privacy.
    Plaintext,
    /// DP-SGD: Poisson batches, joint per-sample clipping, Gaussian noise, RDP accounting.
    DpSgd,
    /// The encrypted Sphinx protocol, client and server in-process (W clipped and noised,
    /// biases encrypted); see `private_train.rs`.
    Sphinx,
}

/// Arguments of `sphinx baseline train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// plaintext, dp-sgd, or sphinx (the encrypted protocol, in-process).
    #[arg(long, value_enum, default_value_t = Mode::Plaintext)]
    pub mode: Mode,
    /// Model preset: sphinx-mnist-cnn, sphinx-mnist-cnn-tanh, sphinx-cifar10-cnn, mlp-30, mlp-100,
    /// mlp-30-square, mlp-100-square, lenet5, pool-mlp-30, pool-mlp-40, crop-pool-mlp-40
    /// (the demo's), scatternet-linear.
    #[arg(long, default_value = "sphinx-mnist-cnn")]
    pub model: String,
    /// `bundled` (the MNIST sample in the binary), `fashion-mnist` (Debian's
    /// dataset-fashion-mnist) or a directory of IDX or CIFAR-10 binary files.
    #[arg(long, default_value = "bundled")]
    pub data: String,
    /// Epochs (DP-SGD: the run takes round(epochs · N / B) Poisson steps).
    #[arg(long, default_value_t = 1)]
    pub epochs: u32,
    /// Batch size (DP-SGD: the expected batch size, q = B / N).
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f32,
    /// SGD momentum (0 disables it).
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f32,
    /// L2 weight decay on weight matrices.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Augment training images with random translations of up to this many pixels.
    #[arg(long, default_value_t = 0)]
    pub augment_shift: usize,
    /// Cosine-decay the learning rate to 0 over the run instead of keeping it constant.
    #[arg(long)]
    pub cosine: bool,
    /// `--mode sphinx`: decay of the server's moving average of W that the run exports
    /// (0: the last iterate; post-processing of the noisy weights, docs/security.md).
    #[arg(long, default_value_t = 0.0)]
    pub weight_average: f32,
    /// DP-SGD: target ε; σ is calibrated to reach it, and no step may exceed it.
    #[arg(long, conflicts_with = "noise_multiplier")]
    pub epsilon: Option<f64>,
    /// DP-SGD: δ.
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// DP-SGD: per-sample clipping norm C (all parameters jointly).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// DP-SGD: noise multiplier σ (instead of --epsilon).
    #[arg(long)]
    pub noise_multiplier: Option<f64>,
    /// Seed for initialization, shuffling and (DP-SGD) sampling and noise. Without it,
    /// everything is seeded from the operating system; a seeded DP-SGD run is
    /// reproducible and therefore meant for experiments only.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Use only the first N training examples.
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Use only the first N held-out examples.
    #[arg(long)]
    pub test_subset: Option<usize>,
    /// Tuning without touching the test set: hold out the last N training examples as a
    /// validation set, train on the others, and report accuracy on the validation set.
    #[arg(long)]
    pub holdout: Option<usize>,
    /// Save the trained model (model.json + model.safetensors) into this directory.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    test_accuracy: f64,
    evaluated_on: &'static str,
    epsilon: Option<f64>,
    delta: Option<f64>,
    epochs: u32,
    steps: u64,
    seconds: f64,
    mode: Mode,
    model: String,
    data: String,
    train_examples: usize,
    test_examples: usize,
    batch_size: usize,
    lr: f32,
    momentum: f32,
    cosine: bool,
    weight_decay: f32,
    weight_average: f32,
    augment_shift: usize,
    noise_multiplier: Option<f64>,
    clip: Option<f64>,
    rdp_order: Option<f64>,
    seed: Option<u64>,
    train_seconds: f64,
    epoch_seconds: Vec<f64>,
}

/// Runs `sphinx baseline`.
pub fn run(cmd: BaselineCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BaselineCommand::Train(args) => train_cmd(&args),
    }
}

fn progress(len: u64) -> ProgressBar {
    // indicatif draws nothing when stderr is not a terminal (CI, pipes, tests).
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// A progress line: above the bar on a terminal, plain stderr otherwise.
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn lr_at(args: &TrainArgs, step: u64, total: u64) -> f32 {
    if !args.cosine || total == 0 {
        return args.lr;
    }
    let t = step as f64 / total as f64;
    (f64::from(args.lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())).max(1e-6) as f32
}

fn load_data(args: &TrainArgs) -> anyhow::Result<Split> {
    let source: DataSource = args.data.parse().unwrap_or(DataSource::Bundled);
    let mut split = source
        .load()
        .with_context(|| format!("loading --data {}", args.data))?;
    if let Some(n) = args.train_subset {
        split.train = split.train.head(n);
    }
    if let Some(n) = args.test_subset {
        split.test = split.test.head(n);
    }
    if let Some(n) = args.holdout {
        let keep = split.train.len().saturating_sub(n);
        if n == 0 || keep == 0 {
            bail!("--holdout must be between 1 and the number of training examples - 1");
        }
        let rest: Vec<usize> = (keep..split.train.len()).collect();
        let (images, labels) = split.train.batch(&rest)?;
        split.test = sphinx_nn::data::Dataset {
            images,
            labels,
            shape: split.train.shape,
            num_classes: split.train.num_classes,
        };
        split.train = split.train.head(keep);
        split.name = format!("{} (last {n} training examples held out)", split.name);
    }
    if split.train.is_empty() || split.test.is_empty() {
        bail!("empty training or held-out split");
    }
    Ok(split)
}

fn train_cmd(args: &TrainArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let preset: Preset = args.model.parse()?;
    let split = load_data(args)?;
    let spec = preset.spec();
    if split.train.shape != spec.input || split.train.num_classes != 10 {
        bail!(
            "model {} expects {} inputs but {} has {} images; pick a model for this dataset",
            preset,
            spec.input,
            split.name,
            split.train.shape
        );
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be positive");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut model = Model::new(spec, seed)?;
    // The layers before the first trainable one are a fixed function of each image, so
    // (without augmentation, which must see pixels) they are applied to the datasets
    // once and training runs on the features; the model is put back together below.
    let mut front = None;
    let mut split = split;
    if args.mode != Mode::Sphinx && args.augment_shift == 0 {
        let (f, head) = model.split_front()?;
        if !f.is_empty() {
            let t0 = Instant::now();
            split.train = f.apply_dataset(&split.train, 512)?;
            split.test = f.apply_dataset(&split.test, 512)?;
            eprintln!(
                "fixed features {} computed once for {} images in {:.1} s",
                f.output_shape(),
                split.train.len() + split.test.len(),
                t0.elapsed().as_secs_f64()
            );
        }
        front = Some(f);
        model = head;
    }
    let mut opt = Sgd::new(args.lr, args.momentum)?.with_weight_decay(args.weight_decay)?;
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5348_5546_464c_4521);
    eprintln!(
        "{} on {} ({} train, {} held out), {} parameters, mode {:?}",
        preset,
        split.name,
        split.train.len(),
        split.test.len(),
        model.num_params(),
        args.mode
    );
    let train_started = Instant::now();
    let mut epoch_seconds = Vec::new();
    let (steps, privacy) = match args.mode {
        Mode::Plaintext => {
            let per_epoch = split.train.len().div_ceil(args.batch_size) as u64;
            let total = per_epoch * u64::from(args.epochs);
            let bar = progress(total);
            let mut step = 0u64;
            for epoch in 0..args.epochs {
                let t0 = Instant::now();
                let (mut loss, mut seen, mut hits) = (0.0, 0usize, 0usize);
                for idx in train::shuffled_batches(split.train.len(), args.batch_size, &mut rng) {
                    opt.set_lr(lr_at(args, step, total))?;
                    let (mut x, y) = split.train.batch(&idx)?;
                    sphinx_nn::data::random_shift(
                        &mut x,
                        split.train.shape,
                        args.augment_shift,
                        &mut rng,
                    )?;
                    let s = train::sgd_step(&mut model, &mut opt, x.view(), &y)?;
                    (loss, seen, hits) = (loss + s.loss_sum, seen + s.batch_size, hits + s.correct);
                    step += 1;
                    bar.inc(1);
                    bar.set_message(format!(
                        "epoch {} loss {:.4}",
                        epoch + 1,
                        loss / seen.max(1) as f64
                    ));
                }
                epoch_seconds.push(t0.elapsed().as_secs_f64());
                say(
                    &bar,
                    format!(
                        "epoch {}: loss {:.4}, train accuracy {:.2}%, {:.1} s",
                        epoch + 1,
                        loss / seen.max(1) as f64,
                        100.0 * hits as f64 / seen.max(1) as f64,
                        t0.elapsed().as_secs_f64()
                    ),
                );
            }
            bar.finish_and_clear();
            (step, None)
        }
        Mode::DpSgd => dp::run(args, &mut model, &mut opt, &split, seed, &mut epoch_seconds)?,
        Mode::Sphinx => {
            let r = super::private_train::run(args, &split, seed, &mut epoch_seconds)?;
            model = r.model;
            let privacy = Privacy {
                epsilon: r.epsilon,
                delta: args.delta,
                noise_multiplier: r.noise_multiplier,
                sample_rate: r.sample_rate,
                order: r.order,
            };
            (r.steps, Some(privacy))
        }
    };
    let train_seconds = train_started.elapsed().as_secs_f64();
    let accuracy = model.accuracy(split.test.images.view(), &split.test.labels, 1000)?;
    if let Some(f) = front {
        model = Model::join(f, model)?;
    }
    let evaluated_on = if args.holdout.is_some() {
        "validation"
    } else {
        "test"
    };
    if let Some(dir) = &args.save {
        sphinx_nn::io::save_dir(&model, dir)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{evaluated_on} accuracy: {:.2}% ({} held-out examples)",
        100.0 * accuracy,
        split.test.len()
    );
    match &privacy {
        Some(p) => println!(
            "epsilon spent: {:.4} at delta = {:e} (σ = {:.4}, C = {}, q = {:.6}, RDP order {})",
            p.epsilon, p.delta, p.noise_multiplier, args.clip, p.sample_rate, p.order
        ),
        None => println!("epsilon spent: none (no privacy: plaintext training)"),
    }
    println!("steps: {steps}, wall time: {seconds:.1} s (training {train_seconds:.1} s)");
    if let Some(path) = &args.json {
        let report = Report {
            test_accuracy: accuracy,
            evaluated_on,
            epsilon: privacy.as_ref().map(|p| p.epsilon),
            delta: privacy.as_ref().map(|p| p.delta),
            epochs: args.epochs,
            steps,
            seconds,
            mode: args.mode,
            model: preset.to_string(),
            data: split.name.clone(),
            train_examples: split.train.len(),
            test_examples: split.test.len(),
            batch_size: args.batch_size,
            lr: args.lr,
            momentum: args.momentum,
            cosine: args.cosine,
            weight_decay: args.weight_decay,
            weight_average: args.weight_average,
            augment_shift: args.augment_shift,
            noise_multiplier: privacy.as_ref().map(|p| p.noise_multiplier),
            clip: privacy.as_ref().map(|_| args.clip),
            rdp_order: privacy.as_ref().map(|p| p.order),
            seed: args.seed,
            train_seconds,
            epoch_seconds,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What a DP-SGD run spent.
struct Privacy {
    epsilon: f64,
    delta: f64,
    noise_multiplier: f64,
    sample_rate: f64,
    order: f64,
}

mod dp {
    use sphinx_dp::{
        BudgetLedger, ClipNorm, Delta, DpEvent, DpSgdAggregator, DpSgdConfig, Epsilon,
        NoiseMultiplier, PrivacyBudget, RdpAccountant, SampleRate, calibrate_noise,
    };

    use super::*;

    /// Privacy accounting for the run: a ledger that refuses to exceed --epsilon, or a
    /// bare accountant when σ is given directly.
    enum Books {
        Ledger(BudgetLedger),
        Accountant(RdpAccountant),
    }

    pub(super) fn run(
        args: &TrainArgs,
        model: &mut Model,
        opt: &mut Sgd,
        split: &Split,
        seed: u64,
        epoch_seconds: &mut Vec<f64>,
    ) -> anyhow::Result<(u64, Option<Privacy>)> {
        let n = split.train.len();
        let q = (args.batch_size as f64 / n as f64).min(1.0);
        let sample_rate = SampleRate::new(q)?;
        let steps = ((f64::from(args.epochs) / q).round() as u64).max(1);
        let delta = Delta::new(args.delta)?;
        let (sigma, mut books) = match (args.epsilon, args.noise_multiplier) {
            (Some(eps), None) => {
                let target = Epsilon::new(eps)?;
                let cal = calibrate_noise(&RdpAccountant::new(), sample_rate, steps, target, delta)
                    .context("calibrating σ for --epsilon")?;
                let budget = PrivacyBudget {
                    epsilon: target,
                    delta,
                };
                (
                    cal.noise_multiplier,
                    Books::Ledger(BudgetLedger::new(budget)),
                )
            }
            (None, Some(sigma)) => (
                NoiseMultiplier::new(sigma)?,
                Books::Accountant(RdpAccountant::new()),
            ),
            _ => bail!("--mode dp-sgd needs exactly one of --epsilon or --noise-multiplier"),
        };
        let config = DpSgdConfig {
            clip_norm: ClipNorm::new(args.clip)?,
            noise_multiplier: sigma,
            sample_rate,
            dataset_size: n,
        };
        let dim = model.num_params();
        let mut agg = match args.seed {
            Some(_) => DpSgdAggregator::seeded(dim, config, seed)?,
            None => DpSgdAggregator::new(dim, config)?,
        };
        eprintln!(
            "DP-SGD: q = {q:.6}, σ = {:.4}, C = {}, {steps} steps, expected batch {:.1}",
            sigma.get(),
            args.clip,
            agg.expected_batch_size()
        );
        let event = DpEvent::poisson_gaussian(sample_rate, sigma);
        let bar = progress(steps);
        let mut t0 = Instant::now();
        let (mut loss, mut seen, mut hits, mut clipped) = (0.0, 0usize, 0usize, 0usize);
        let mut taken = 0;
        for step in 0..steps {
            // The step is charged before its noisy gradient exists (DESIGN.md §3.1 step 6).
            match &mut books {
                Books::Ledger(l) => {
                    if let Err(e) = l.try_record_step(event) {
                        say(&bar, format!("stopping before step {}: {e}", step + 1));
                        break;
                    }
                }
                Books::Accountant(a) => a.compose(event, 1),
            }
            opt.set_lr(lr_at(args, step, steps))?;
            let s = train::dp_sgd_step(model, opt, &mut agg, &split.train)?;
            taken += 1;
            (loss, seen, hits, clipped) = (
                loss + s.loss_sum,
                seen + s.batch_size,
                hits + s.correct,
                clipped + s.clipped,
            );
            bar.inc(1);
            // Epoch boundaries: every 1/q steps (an epoch is N expected samples).
            let epoch_done = ((step + 1) as f64 * q).floor() > (step as f64 * q).floor();
            if epoch_done || step + 1 == steps {
                epoch_seconds.push(t0.elapsed().as_secs_f64());
                say(
                    &bar,
                    format!(
                        "epoch {}: loss {:.4}, train accuracy {:.2}%, clipped {:.1}%, {:.1} s",
                        epoch_seconds.len(),
                        loss / seen.max(1) as f64,
                        100.0 * hits as f64 / seen.max(1) as f64,
                        100.0 * clipped as f64 / seen.max(1) as f64,
                        t0.elapsed().as_secs_f64()
                    ),
                );
                (loss, seen, hits, clipped) = (0.0, 0, 0, 0);
                t0 = Instant::now();
            }
        }
        bar.finish_and_clear();
        let report = match &books {
            Books::Ledger(l) => l.spent()?,
            Books::Accountant(a) => a.epsilon(delta)?,
        };
        Ok((
            taken,
            Some(Privacy {
                epsilon: report.epsilon.get(),
                delta: args.delta,
                noise_multiplier: sigma.get(),
                sample_rate: q,
                order: report.order,
            }),
        ))
    }
}
