//! `sphinx client`: the data owner's side (DESIGN.md §1): `init` (server, pinned
//! certificate, account), `train` (private DP training on a `sphinx server`, resumable),
//! `export` (W and the decrypted b as safetensors + JSON), `budget` (ε spent and left),
//! `infer` and `eval` (private inference on the server: one image or a held-out set).
//!
//! Everything the client keeps lives in `--dir` (default `~/.sphinx-client`); see
//! `sphinx_client::store` for the layout and its permissions.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::RngCore;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use sphinx_client::ClientError;
use sphinx_client::connection::{Connection, parse_fingerprint};
use sphinx_client::data;
use sphinx_client::remote::{RemoteTrainer, dp_event};
use sphinx_client::remote_infer::RemoteInference;
use sphinx_client::store::{ClientDir, ModelRecord, ModelSecrets, Profile};
use sphinx_dp::{Delta, Epsilon, RdpAccountant, SampleRate, calibrate_noise};
use sphinx_protocol::ProtocolError;
use sphinx_protocol::wire::{AccountName, Token};

/// `sphinx client` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Set up a client directory: server address, pinned certificate, account.
    Init(InitArgs),
    /// Train a model privately on the server (creates it, or resumes it).
    Train(Box<TrainArgs>),
    /// Save a trained model (W and decrypted b) as model.safetensors + model.json.
    Export(ExportArgs),
    /// ε spent and left for a model.
    Budget(BudgetArgs),
    /// Classify one image (or one held-out example) by private inference on the server.
    Infer(InferArgs),
    /// Accuracy and confusion matrix over held-out examples by private inference.
    Eval(EvalArgs),
}

/// Where the client keeps its state.
#[derive(Debug, Clone, Args)]
pub struct DirArg {
    /// Client directory (keys, token, models, progress).
    #[arg(long, env = "SPHINX_CLIENT_DIR", default_value_os_t = default_dir())]
    pub dir: PathBuf,
}

fn default_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".sphinx-client")
}

/// Arguments of `sphinx client init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    dir: DirArg,
    /// The server, `host:port`.
    #[arg(long)]
    pub server: String,
    /// SHA-256 fingerprint of the server's certificate, as `sphinx server` prints it.
    #[arg(long)]
    pub fingerprint: String,
    /// Account name on the server.
    #[arg(long)]
    pub account: String,
    /// The account's token (from `sphinx server add-account`); read from the environment
    /// variable SPHINX_TOKEN when not given, so it stays out of shell history.
    #[arg(
        long,
        env = "SPHINX_TOKEN",
        hide_env_values = true,
        conflicts_with = "register"
    )]
    pub token: Option<String>,
    /// Create the account on the server (servers started with --open-registration).
    #[arg(long)]
    pub register: bool,
}

/// Arguments of `sphinx client train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// Local name of the model; an existing one resumes.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Model preset (new models): crop-pool-mlp-40, pool-mlp-40, pool-mlp-30, mlp-30,
    /// mlp-100, sphinx-mnist-cnn, ...
    #[arg(long, default_value = "crop-pool-mlp-40")]
    pub model: String,
    /// `bundled` (real MNIST sample), `fashion-mnist`, or a directory of IDX files.
    #[arg(long, default_value = "bundled")]
    pub data: String,
    /// Use only the first N training examples.
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Epochs: the plan is round(epochs / q) Poisson steps.
    #[arg(long, default_value_t = 10.0)]
    pub epochs: f64,
    /// Expected (Poisson) batch size B; q = B / N.
    #[arg(long, default_value_t = 512)]
    pub batch_size: usize,
    /// SGD learning rate.
    #[arg(long, default_value_t = 6.0)]
    pub lr: f32,
    /// ε budget; σ is calibrated so the planned steps spend exactly this.
    #[arg(long, default_value_t = 8.0)]
    pub epsilon: f64,
    /// δ.
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// Per-sample clipping norm C of the whole W-gradient.
    #[arg(long, default_value_t = 1.5)]
    pub clip: f64,
    /// Decay d of the moving average of W that the server keeps and that export and
    /// inference use (W̄ ← d·W̄ + (1 − d)·W after each step; 0: the last iterate).
    /// Post-processing of the noisy weights: it costs no privacy.
    #[arg(long, default_value_t = 0.9)]
    pub weight_average: f32,
    /// Use this noise multiplier instead of calibrating one; the ε budget still stops
    /// training.
    #[arg(long)]
    pub noise_multiplier: Option<f64>,
    /// Feed raw [0, 1] pixels instead of standardized ones.
    #[arg(long)]
    pub no_standardize: bool,
    /// Run at most this many steps now (training resumes later).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Reproducible keys, sampling and noise from this seed: experiments and tests only.
    #[arg(long, hide = true)]
    pub insecure_seed: Option<u64>,
}

/// Arguments of `sphinx client export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    dir: DirArg,
    /// The model.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Output directory (model.json, model.safetensors, preprocessing.json).
    #[arg(long)]
    pub out: PathBuf,
}

/// Arguments of `sphinx client budget`.
#[derive(Debug, Args)]
pub struct BudgetArgs {
    #[command(flatten)]
    dir: DirArg,
    /// The model.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sphinx client infer`.
#[derive(Debug, Args)]
pub struct InferArgs {
    #[command(flatten)]
    dir: DirArg,
    /// The model.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// A PNG or PGM image (resized to the model's input when the aspect ratio matches).
    #[arg(conflicts_with = "index", required_unless_present = "index")]
    pub image: Option<PathBuf>,
    /// Classify held-out example N of --data instead of an image.
    #[arg(long)]
    pub index: Option<usize>,
    /// Held-out examples for --index: `bundled`, `fashion-mnist`, or a directory of IDX files.
    #[arg(long, default_value = "bundled")]
    pub data: String,
    /// Invert the image first (dark digit on a light background, unlike MNIST).
    #[arg(long, requires = "image")]
    pub invert: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Reproducible inference masks from this seed: experiments and tests only.
    #[arg(long, hide = true)]
    pub insecure_seed: Option<u64>,
}

/// Arguments of `sphinx client eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    dir: DirArg,
    /// The model.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Held-out examples: `bundled`, `fashion-mnist`, or a directory of IDX files.
    #[arg(long, default_value = "bundled")]
    pub data: String,
    /// Classify the first N held-out examples.
    #[arg(long, default_value_t = 500)]
    pub limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Reproducible inference masks from this seed: experiments and tests only.
    #[arg(long, hide = true)]
    pub insecure_seed: Option<u64>,
}

/// Reconnections `train` attempts after losing the server mid-training.
const RECONNECT_ATTEMPTS: u32 = 5;
/// Seconds between them.
const RECONNECT_DELAY_S: u64 = 2;

/// Whether `e` is a lost or refused connection (worth a reconnect), not a refusal by
/// the server or a local problem.
fn is_connection_loss(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<ClientError>(),
            Some(ClientError::Network(_))
        )
    })
}

/// Exit code of `train` when the budget allows no further step.
pub const EXIT_BUDGET: u8 = 3;

/// Runs `sphinx client`.
pub fn run(cmd: ClientCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClientCommand::Init(a) => init(&a),
        ClientCommand::Train(a) => train(&a),
        ClientCommand::Export(a) => export(&a),
        ClientCommand::Budget(a) => budget(&a),
        ClientCommand::Infer(a) => infer(&a),
        ClientCommand::Eval(a) => eval(&a),
    }
}

/// Opens an authenticated connection for the client in `dir`.
pub fn connect(dir: &ClientDir) -> anyhow::Result<Connection> {
    let profile = dir.profile()?;
    let mut conn = Connection::connect(&profile.server, &profile.fingerprint)
        .with_context(|| format!("connecting to {}", profile.server))?;
    let (account, token) = dir.credentials()?;
    conn.auth(&account, &token)?;
    Ok(conn)
}

fn init(a: &InitArgs) -> anyhow::Result<ExitCode> {
    let fingerprint = parse_fingerprint(&a.fingerprint)?;
    let account = AccountName::new(&a.account)?;
    let mut conn = Connection::connect(&a.server, &fingerprint)
        .with_context(|| format!("connecting to {}", a.server))?;
    let token = if a.register {
        // A successful registration authenticates the connection.
        conn.register(&account)?
    } else {
        let Some(hex) = &a.token else {
            bail!("give the account's token with --token or SPHINX_TOKEN, or --register");
        };
        let token = Token::from_hex(hex)?;
        conn.auth(&account, &token)
            .context("authenticating with the given account and token")?;
        token
    };
    let profile = Profile {
        server: a.server.clone(),
        fingerprint,
        account: a.account.clone(),
    };
    ClientDir::create(&a.dir.dir, &profile, &token)?;
    println!(
        "client directory {} ready: server {}, account {}",
        a.dir.dir.display(),
        a.server,
        a.account
    );
    Ok(ExitCode::SUCCESS)
}

/// Loads the data of a record (same source, subset and preprocessing as at creation).
pub fn training_data(record: &ModelRecord) -> anyhow::Result<sphinx_nn::data::Dataset> {
    let split = data::load(&record.data, Some(record.train_examples), None)?;
    let mut train = split.train;
    data::standardize(&mut train, record.standardize);
    Ok(train)
}

/// The plan of a new model: σ calibrated for round(epochs / q) steps at (ε, δ).
pub fn plan_record(a: &TrainArgs) -> anyhow::Result<(ModelRecord, sphinx_nn::data::Dataset)> {
    let split = data::load(&a.data, a.train_subset, None)?;
    let mut train = split.train;
    let preset: sphinx_nn::presets::Preset = a.model.parse()?;
    if train.shape != preset.spec().input {
        bail!(
            "model {} expects {} inputs but {} has {} images",
            a.model,
            preset.spec().input,
            a.data,
            train.shape
        );
    }
    let stats = if a.no_standardize {
        None
    } else {
        Some(data::input_stats(&train, &preset.spec())?)
    };
    data::standardize(&mut train, stats);
    let n = train.len();
    if a.batch_size == 0 || a.batch_size > n {
        bail!("--batch-size must be between 1 and the {n} training examples");
    }
    let q = a.batch_size as f64 / n as f64;
    let steps = ((a.epochs / q).round() as u64).max(1);
    let sigma = match a.noise_multiplier {
        Some(s) => s,
        None => calibrate_noise(
            &RdpAccountant::new(),
            SampleRate::new(q)?,
            steps,
            Epsilon::new(a.epsilon)?,
            Delta::new(a.delta)?,
        )
        .context("calibrating σ for --epsilon")?
        .noise_multiplier
        .get(),
    };
    let init_seed = match a.insecure_seed {
        Some(s) => s,
        None => rand::rng().next_u64(),
    };
    let record = ModelRecord {
        name: a.name.clone(),
        server_model: 0,
        preset: a.model.clone(),
        data: a.data.clone(),
        train_examples: n,
        data_digest: data::digest(&train),
        standardize: stats,
        batch_size: a.batch_size,
        total_steps: steps,
        learning_rate: a.lr,
        clip: a.clip,
        epsilon: a.epsilon,
        delta: a.delta,
        noise_multiplier: sigma,
        sample_rate: q,
        init_seed,
        bias_init: 0.01,
        weight_average: a.weight_average,
    };
    Ok((record, train))
}

/// Opens the model named in `a` (resuming) or creates it on the server.
pub fn open_or_create(
    dir: ClientDir,
    conn: Connection,
    a: &TrainArgs,
) -> anyhow::Result<RemoteTrainer> {
    if dir.has_model(&a.name) {
        let record = dir.record(&a.name)?;
        let train = training_data(&record)?;
        Ok(RemoteTrainer::resume(dir, conn, &a.name, train)?)
    } else {
        let (record, train) = plan_record(a)?;
        let secrets = match a.insecure_seed {
            Some(s) => ModelSecrets::from_test_seed(s),
            None => ModelSecrets::generate()?,
        };
        Ok(RemoteTrainer::create(dir, conn, record, &secrets, train)?)
    }
}

fn bar(len: u64, pos: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} step {pos}/{len} {msg} ETA {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_position(pos);
    bar
}

/// Runs steps until the plan is done, `max_steps` were taken, or the budget refuses.
/// Returns whether the budget stopped it.
pub fn run_steps(
    trainer: &mut RemoteTrainer,
    max_steps: Option<u64>,
    quiet: bool,
) -> anyhow::Result<bool> {
    let total = trainer.record().total_steps;
    let bar = bar(total, trainer.step());
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let mut taken = 0u64;
    let mut refused = false;
    while trainer.step() < total && max_steps.is_none_or(|m| taken < m) {
        match trainer.step_once() {
            Ok(r) => {
                let msg = format!(
                    "loss {:.4}, batch acc {:.1}%, ε {:.3}",
                    r.loss,
                    100.0 * r.accuracy,
                    r.epsilon
                );
                bar.set_position(r.step + 1);
                bar.set_message(msg.clone());
                if bar.is_hidden() && !quiet {
                    eprintln!("step {}/{total}: {msg}, {:.2} s", r.step + 1, r.seconds);
                }
            }
            Err(ClientError::Protocol(ProtocolError::BudgetExhausted { budget })) => {
                bar.abandon();
                eprintln!(
                    "stopped before step {}: one more step would exceed the budget ε = {budget}",
                    trainer.step() + 1
                );
                refused = true;
                break;
            }
            Err(e) => {
                bar.abandon();
                return Err(e).context(format!(
                    "step {} failed; run the same command again to resume",
                    trainer.step() + 1
                ));
            }
        }
        taken += 1;
    }
    bar.finish_and_clear();
    Ok(refused)
}

fn train(a: &TrainArgs) -> anyhow::Result<ExitCode> {
    let dir = ClientDir::open(&a.dir.dir)?;
    let conn = connect(&dir)?;
    let started = Instant::now();
    let mut trainer = open_or_create(dir, conn, a)?;
    let record = trainer.record().clone();
    let spent_before = trainer.client().ledger().spent()?.epsilon.get();
    eprintln!(
        "model {:?} ({}, server id {}): step {}/{}, q = {:.5}, σ = {:.4}, C = {}, lr = {}, ε {:.3} of {} at δ = {:e}",
        record.name,
        record.preset,
        record.server_model,
        trainer.step(),
        record.total_steps,
        record.sample_rate,
        record.noise_multiplier,
        record.clip,
        record.learning_rate,
        spent_before,
        record.epsilon,
        record.delta
    );
    if trainer.step() >= record.total_steps || !trainer.can_step()? {
        eprintln!(
            "refusing to train: the plan of {} steps is complete or one more step would exceed ε = {}",
            record.total_steps, record.epsilon
        );
        return Ok(ExitCode::from(EXIT_BUDGET));
    }
    let target = a.steps.map(|n| trainer.step() + n);
    let mut retries = 0;
    let refused = loop {
        let left = target.map(|t| t.saturating_sub(trainer.step()));
        match run_steps(&mut trainer, left, false) {
            Ok(refused) => break refused,
            Err(e) if is_connection_loss(&e) => {
                eprintln!("{e:#}");
                // The server rolled back the interrupted step; resuming redoes it exactly.
                trainer = loop {
                    retries += 1;
                    if retries > RECONNECT_ATTEMPTS {
                        bail!("gave up reconnecting; run the same command again to resume");
                    }
                    eprintln!(
                        "reconnecting in {RECONNECT_DELAY_S} s ({retries}/{RECONNECT_ATTEMPTS})"
                    );
                    std::thread::sleep(std::time::Duration::from_secs(RECONNECT_DELAY_S));
                    let dir = ClientDir::open(&a.dir.dir)?;
                    match connect(&dir).and_then(|conn| {
                        let train = training_data(&record)?;
                        Ok(RemoteTrainer::resume(dir, conn, &record.name, train)?)
                    }) {
                        Ok(t) => break t,
                        Err(e) => eprintln!("{e:#}"),
                    }
                };
            }
            Err(e) => return Err(e),
        }
    };
    let (up, down) = trainer.connection().traffic();
    let spent = trainer.client().ledger().spent()?;
    println!(
        "trained {} to step {}/{} in {:.1} s: ε = {:.4} spent at δ = {:e} (budget {}), {} bytes up, {} bytes down",
        record.name,
        trainer.step(),
        record.total_steps,
        started.elapsed().as_secs_f64(),
        spent.epsilon.get(),
        record.delta,
        record.epsilon,
        up,
        down
    );
    Ok(if refused {
        ExitCode::from(EXIT_BUDGET)
    } else {
        ExitCode::SUCCESS
    })
}

fn export(a: &ExportArgs) -> anyhow::Result<ExitCode> {
    let dir = ClientDir::open(&a.dir.dir)?;
    let conn = connect(&dir)?;
    let record = dir.record(&a.name)?;
    let train = training_data(&record)?;
    let mut trainer = RemoteTrainer::resume(dir, conn, &a.name, train)?;
    let model = trainer.export()?;
    write_export(&model, &record, &a.out)?;
    println!(
        "exported {} (step {}) to {}",
        record.name,
        trainer.step(),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `model.json`, `model.safetensors` and `preprocessing.json` (the input
/// standardization the model expects) into `out`.
pub fn write_export(
    model: &sphinx_nn::model::Model,
    record: &ModelRecord,
    out: &Path,
) -> anyhow::Result<()> {
    sphinx_nn::io::save_dir(model, out)?;
    #[derive(Serialize)]
    struct Preprocessing {
        /// Pixels are bytes / 255, then `(x - mean) / std` when present.
        standardize: Option<[f32; 2]>,
    }
    let path = out.join("preprocessing.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&Preprocessing {
            standardize: record.standardize,
        })?,
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[derive(Debug, Serialize)]
struct BudgetReport {
    model: String,
    steps: u64,
    planned_steps: u64,
    epsilon_spent: f64,
    epsilon_budget: f64,
    epsilon_left: f64,
    delta: f64,
    steps_left: u64,
    noise_multiplier: f64,
    sample_rate: f64,
}

fn budget(a: &BudgetArgs) -> anyhow::Result<ExitCode> {
    let dir = ClientDir::open(&a.dir.dir)?;
    let record = dir.record(&a.name)?;
    let progress = dir
        .progress(&a.name)?
        .context("the model has no training state yet")?;
    let mut ledger = progress.committed.ledger.clone();
    let spent = ledger.spent()?.epsilon.get();
    let steps_left = ledger.remaining_steps(dp_event(&record)?, 1 << 40)?;
    let report = BudgetReport {
        model: record.name.clone(),
        steps: progress.committed.step,
        planned_steps: record.total_steps,
        epsilon_spent: spent,
        epsilon_budget: record.epsilon,
        epsilon_left: (record.epsilon - spent).max(0.0),
        delta: record.delta,
        steps_left,
        noise_multiplier: record.noise_multiplier,
        sample_rate: record.sample_rate,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!(
            "{}",
            sphinx_client::report::table(
                &format!("privacy budget of model {}", report.model),
                &[
                    ("ε spent", format!("{:.4}", report.epsilon_spent)),
                    ("ε budget", format!("{}", report.epsilon_budget)),
                    ("ε left", format!("{:.4}", report.epsilon_left)),
                    ("δ", format!("{:e}", report.delta)),
                    (
                        "steps done / planned",
                        format!("{} / {}", report.steps, report.planned_steps)
                    ),
                    (
                        "further steps the budget allows",
                        report.steps_left.to_string()
                    ),
                ],
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The client directory and the record of model `name`, which must exist.
fn trained_record(dir_path: &Path, name: &str) -> anyhow::Result<(ClientDir, ModelRecord)> {
    let dir = ClientDir::open(dir_path)?;
    if !dir.has_model(name) {
        bail!(
            "no model {name:?} in {}: train one first with `sphinx client train --name {name}`",
            dir_path.display()
        );
    }
    let record = dir.record(name)?;
    Ok((dir, record))
}

/// A trained model's record, its export (server `W`, decrypted biases) and an inference
/// session on the same connection.
fn open_inference(
    dir_path: &Path,
    name: &str,
    seed: Option<u64>,
) -> anyhow::Result<(ModelRecord, RemoteInference)> {
    let (dir, record) = trained_record(dir_path, name)?;
    let trained = dir.progress(name)?.is_some_and(|p| p.committed.step > 0);
    if !trained {
        bail!("model {name:?} has no training step yet: run `sphinx client train --name {name}`");
    }
    let conn = connect(&dir)?;
    let train = training_data(&record)?;
    let mut trainer = RemoteTrainer::resume(dir, conn, name, train)?;
    let model = trainer.export()?;
    let conn = trainer.into_connection();
    let rng = match seed {
        Some(s) => ChaCha20Rng::seed_from_u64(s),
        None => ChaCha20Rng::from_os_rng(),
    };
    let session = RemoteInference::new(conn, record.model_id(), &model, rng)
        .context("opening an inference session")?;
    Ok((record, session))
}

/// Held-out examples of `source`, standardized as the model was trained.
fn held_out(
    source: &str,
    limit: Option<usize>,
    record: &ModelRecord,
) -> anyhow::Result<sphinx_nn::data::Dataset> {
    let input = record
        .preset
        .parse::<sphinx_nn::presets::Preset>()?
        .spec()
        .input;
    let mut test = data::load(source, None, limit)?.test;
    if test.shape != input {
        bail!(
            "model {:?} expects {} inputs but {source} has {} images",
            record.name,
            input,
            test.shape
        );
    }
    data::standardize(&mut test, record.standardize);
    Ok(test)
}

/// An image file as the model's input row: resized, optionally inverted, standardized.
fn image_input(path: &Path, invert: bool, record: &ModelRecord) -> anyhow::Result<Vec<f32>> {
    let input = record
        .preset
        .parse::<sphinx_nn::presets::Preset>()?
        .spec()
        .input;
    if input.channels != 1 {
        bail!(
            "model {:?} expects {} inputs; only greyscale models take image files",
            record.name,
            input
        );
    }
    let img = sphinx_client::image::read(path)?;
    // Width × height must match up to scale, so resizing never distorts the digit.
    if img.width * input.height != img.height * input.width {
        bail!(
            "{}: {}×{} pixels cannot be scaled to the model's {}×{} input",
            path.display(),
            img.width,
            img.height,
            input.width,
            input.height
        );
    }
    let img = img.resized(input.width, input.height);
    let (mean, std) = record.standardize.map_or((0.0, 1.0), |[m, s]| (m, s));
    Ok(img
        .pixels
        .iter()
        .map(|&v| if invert { 1.0 - v } else { v })
        .map(|v| (v - mean) / std)
        .collect())
}

#[derive(Debug, Serialize)]
struct InferReport {
    model: String,
    input: String,
    label: Option<u8>,
    class: usize,
    probabilities: Vec<f32>,
    online_latency_ms: f64,
}

fn infer(a: &InferArgs) -> anyhow::Result<ExitCode> {
    let (_, record) = trained_record(&a.dir.dir, &a.name)?;
    // Check the input before any network work, so a bad file fails fast.
    let (x, label, input) = match (&a.image, a.index) {
        (Some(path), _) => (
            image_input(path, a.invert, &record)?,
            None,
            path.display().to_string(),
        ),
        (None, Some(i)) => {
            let test = held_out(&a.data, None, &record)?;
            let (Some(row), Some(&l)) = (test.images.outer_iter().nth(i), test.labels.get(i))
            else {
                bail!(
                    "--index {i} is out of range: {} has {} held-out examples",
                    a.data,
                    test.len()
                );
            };
            (
                row.iter().copied().collect(),
                Some(l),
                format!("{} held-out #{i}", a.data),
            )
        }
        (None, None) => bail!("give an image file or --index"),
    };
    let (record, mut session) = open_inference(&a.dir.dir, &a.name, a.insecure_seed)?;
    session.preprocess(1)?;
    let logits = session.query(&x)?;
    let probabilities = sphinx_client::remote_infer::probabilities(&logits);
    let class = sphinx_client::remote_infer::argmax(&logits);
    let report = InferReport {
        model: record.name.clone(),
        input,
        label,
        class,
        probabilities,
        online_latency_ms: 1e3 * session.online_time().as_secs_f64(),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let mut rows = vec![("predicted class", report.class.to_string())];
        if let Some(l) = report.label {
            rows.push(("true label", l.to_string()));
        }
        let probs: Vec<(String, String)> = report
            .probabilities
            .iter()
            .enumerate()
            .map(|(c, p)| (format!("P(class {c})"), format!("{p:.4}")))
            .collect();
        let mut all: Vec<(&str, String)> = rows;
        all.extend(probs.iter().map(|(k, v)| (k.as_str(), v.clone())));
        all.push((
            "online latency",
            format!("{:.1} ms", report.online_latency_ms),
        ));
        print!(
            "{}",
            sphinx_client::report::table(
                &format!("private inference: {} on {}", report.model, report.input),
                &all
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct EvalReport {
    model: String,
    data: String,
    queries: usize,
    accuracy: f64,
    confusion: Vec<Vec<u64>>,
    online_latency_ms: f64,
    preprocessing_seconds: f64,
    preprocessing_bytes: u64,
    online_bytes: u64,
}

fn eval(a: &EvalArgs) -> anyhow::Result<ExitCode> {
    if a.limit == 0 {
        bail!("--limit must be at least 1");
    }
    let (_, record) = trained_record(&a.dir.dir, &a.name)?;
    let test = held_out(&a.data, Some(a.limit), &record)?;
    let (record, mut session) = open_inference(&a.dir.dir, &a.name, a.insecure_seed)?;
    eprintln!(
        "private inference: preprocessing masks for {} queries",
        test.len()
    );
    session.preprocess(test.len())?;
    let bar = ProgressBar::with_draw_target(Some(test.len() as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} query {pos}/{len} {msg} ETA {eta}",
    ) {
        bar.set_style(style);
    }
    let mut predicted = Vec::with_capacity(test.len());
    let (mut correct, mut classes) = (0usize, 0usize);
    for (row, &label) in test.images.outer_iter().zip(&test.labels) {
        let x: Vec<f32> = row.iter().copied().collect();
        let logits = session.query(&x)?;
        classes = logits.len();
        let p = sphinx_client::remote_infer::argmax(&logits);
        correct += usize::from(p == usize::from(label));
        predicted.push(p);
        bar.set_message(format!(
            "accuracy {:.1}%",
            100.0 * correct as f64 / predicted.len() as f64
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let queries = predicted.len();
    let report = EvalReport {
        model: record.name.clone(),
        data: a.data.clone(),
        queries,
        accuracy: correct as f64 / queries.max(1) as f64,
        confusion: sphinx_client::report::confusion_matrix(&test.labels, &predicted, classes),
        online_latency_ms: 1e3 * session.online_time().as_secs_f64() / queries.max(1) as f64,
        preprocessing_seconds: session.preprocessing_time().as_secs_f64(),
        preprocessing_bytes: session.preprocessing_traffic().total(),
        online_bytes: session.online_traffic().total(),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!(
            "{}",
            sphinx_client::report::table(
                &format!(
                    "private inference: {} on {} held-out examples of {}",
                    report.model, queries, report.data
                ),
                &[
                    ("accuracy", format!("{:.2}%", 100.0 * report.accuracy)),
                    (
                        "online latency per query",
                        format!("{:.1} ms", report.online_latency_ms)
                    ),
                    (
                        "preprocessing",
                        format!(
                            "{:.1} s, {:.1} MB",
                            report.preprocessing_seconds,
                            report.preprocessing_bytes as f64 / 1e6
                        )
                    ),
                    (
                        "online traffic",
                        format!("{:.1} kB", report.online_bytes as f64 / 1e3)
                    ),
                ],
            )
        );
        println!("\nconfusion matrix (rows: true label, columns: predicted):");
        print!(
            "{}",
            sphinx_client::report::confusion_text(&report.confusion)
        );
    }
    Ok(ExitCode::SUCCESS)
}
