//! `sphinx demo`: the whole story on one machine (DESIGN.md §1). A `sphinx server` starts
//! in this process on a random loopback port with TLS; the client pins its certificate,
//! registers an account, trains the model privately with DP-SGD on the bundled real MNIST
//! sample over that TLS connection, exports it (decrypting the biases), and classifies the
//! held-out digits with the private inference protocol; then it prints a summary and
//! writes a report folder (JSON and PNG plots).
//!
//! Private inference runs over the same TLS connection
//! (`sphinx_client::remote_infer::RemoteInference` against the in-process server), so its
//! online latency per query includes the loopback TLS round trips.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use sphinx_client::connection::Connection;
use sphinx_client::data;
use sphinx_client::remote_infer::RemoteInference;
use sphinx_client::report;
use sphinx_client::store::{ClientDir, Profile, StepRecord};
use sphinx_protocol::wire::{AccountName, ModelId};
use sphinx_server::{Registration, ServerConfig, ServerHandle};

use super::client::{DirArg, TrainArgs, open_or_create, run_steps, write_export};

/// Arguments of `sphinx demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Model preset; `sphinx-mnist-cnn` runs the paper's CNN (much slower).
    #[arg(long, default_value = "crop-pool-mlp-40")]
    pub model: String,
    /// Write the headline figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Report folder (summary, per-step history, plots, exported model).
    #[arg(long, default_value = "sphinx-demo-report")]
    pub report: PathBuf,
    /// Epochs of private training.
    #[arg(long, default_value_t = 10.0)]
    pub epochs: f64,
    /// Expected (Poisson) batch size.
    #[arg(long, default_value_t = 512)]
    pub batch_size: usize,
    /// SGD learning rate.
    #[arg(long, default_value_t = 6.0)]
    pub lr: f32,
    /// Per-sample clipping norm.
    #[arg(long, default_value_t = 1.5)]
    pub clip: f64,
    /// Decay of the server's moving average of W that the demo exports and queries
    /// (0: the last iterate).
    #[arg(long, default_value_t = 0.9)]
    pub weight_average: f32,
    /// ε budget.
    #[arg(long, default_value_t = 8.0)]
    pub epsilon: f64,
    /// δ.
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// Use only the first N training examples (fast runs, tests).
    #[arg(long, hide = true)]
    pub train_subset: Option<usize>,
    /// Classify only the first N held-out examples.
    #[arg(long, hide = true)]
    pub test_subset: Option<usize>,
    /// Stop training after this many steps (fast runs, tests).
    #[arg(long, hide = true)]
    pub steps: Option<u64>,
    /// Reproducible keys, sampling and noise (experiments only).
    #[arg(long, hide = true)]
    pub insecure_seed: Option<u64>,
}

/// The `--json` figures.
#[derive(Debug, Serialize)]
struct Headline {
    test_accuracy: f64,
    epsilon: f64,
    delta: f64,
    train_seconds: f64,
    bytes_up: u64,
    bytes_down: u64,
    online_latency_ms: f64,
}

/// Everything the report folder's `summary.json` holds.
#[derive(Debug, Serialize)]
struct Summary {
    #[serde(flatten)]
    headline: Headline,
    model: String,
    train_examples: usize,
    test_examples: usize,
    steps: u64,
    batch_size: usize,
    learning_rate: f32,
    clip: f64,
    weight_average: f32,
    noise_multiplier: f64,
    sample_rate: f64,
    seconds_per_step: f64,
    training_bytes_up: u64,
    training_bytes_down: u64,
    inference_preprocessing_seconds: f64,
    inference_preprocessing_bytes: u64,
    inference_online_bytes_per_query: f64,
    total_seconds: f64,
    confusion_matrix: Vec<Vec<u64>>,
}

/// Runs `sphinx demo`.
pub fn run(a: &DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    std::fs::create_dir_all(&a.report)
        .with_context(|| format!("creating {}", a.report.display()))?;

    // 1. The server: TLS on a random loopback port, a fresh self-signed certificate.
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().context("loopback address")?,
        work.path().join("server"),
    );
    config.registration = Registration::Open;
    let server = ServerHandle::spawn(config)?;
    let addr = server.addr().to_string();
    let fingerprint = server.fingerprint().to_owned();
    eprintln!("server: TLS 1.3 on {addr}, certificate sha256 {fingerprint}");

    // 2. The client: pin the certificate, register, keep its state in a 0700 directory.
    let account = AccountName::new("demo")?;
    let mut conn = Connection::connect(&addr, &fingerprint)?;
    // A successful registration authenticates the connection.
    let token = conn.register(&account)?;
    let client_dir = work.path().join("client");
    let dir = ClientDir::create(
        &client_dir,
        &Profile {
            server: addr.clone(),
            fingerprint,
            account: account.as_str().to_owned(),
        },
        &token,
    )?;

    // 3. Private training over the connection.
    let train_args = TrainArgs {
        dir: DirArg { dir: client_dir },
        name: "demo".into(),
        model: a.model.clone(),
        data: "bundled".into(),
        train_subset: a.train_subset,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        epsilon: a.epsilon,
        delta: a.delta,
        clip: a.clip,
        weight_average: a.weight_average,
        noise_multiplier: None,
        no_standardize: false,
        steps: a.steps,
        insecure_seed: a.insecure_seed,
    };
    let train_start = Instant::now();
    let mut trainer = open_or_create(dir, conn, &train_args)?;
    let record = trainer.record().clone();
    eprintln!(
        "private training: {} on {} bundled MNIST digits, {} Poisson steps (q = {:.4}, σ = {:.3}, C = {}, lr = {}, W averaged with decay {}), budget ε = {} at δ = {:e}",
        record.preset,
        record.train_examples,
        record.total_steps,
        record.sample_rate,
        record.noise_multiplier,
        record.clip,
        record.learning_rate,
        record.weight_average,
        record.epsilon,
        record.delta
    );
    run_steps(&mut trainer, a.steps, false)?;
    let train_seconds = train_start.elapsed().as_secs_f64();
    let (train_up, train_down) = trainer.connection().traffic();
    let epsilon = trainer.client().ledger().spent()?.epsilon.get();
    let history: Vec<StepRecord> = trainer.progress().history.clone();
    let model = trainer.export()?;
    let conn = trainer.into_connection();
    write_export(&model, &record, &a.report.join("model"))?;

    // 4. Private inference on the held-out digits.
    let split = data::load("bundled", None, a.test_subset)?;
    let mut test = split.test;
    data::standardize(&mut test, record.standardize);
    let model_id = ModelId(record.server_model);
    let mut session = RemoteInference::new(conn, model_id, &model, rng(a.insecure_seed, 11))?;
    eprintln!(
        "private inference: preprocessing masks for {} queries",
        test.len()
    );
    session.preprocess(test.len())?;
    let mut predicted = Vec::with_capacity(test.len());
    for row in test.images.rows() {
        let x: Vec<f32> = row.to_vec();
        let logits = session.query(&x)?;
        let (best, _) = logits
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &v)| if v > b.1 { (i, v) } else { b },
            );
        predicted.push(best);
    }
    let queries = test.len().max(1);
    let correct = predicted
        .iter()
        .zip(&test.labels)
        .filter(|&(&p, &l)| p == usize::from(l))
        .count();
    let test_accuracy = correct as f64 / queries as f64;
    let online_latency_ms = 1e3 * session.online_time().as_secs_f64() / queries as f64;
    let (inf_pre, inf_online) = (session.preprocessing_traffic(), session.online_traffic());
    let inference_preprocessing_seconds = session.preprocessing_time().as_secs_f64();
    drop(session);
    server.shutdown()?;
    let confusion = report::confusion_matrix(&test.labels, &predicted, 10);

    let steps = history.len() as u64;
    let seconds_per_step = if history.is_empty() {
        0.0
    } else {
        history.iter().map(|r| r.seconds).sum::<f64>() / history.len() as f64
    };
    let headline = Headline {
        test_accuracy,
        epsilon,
        delta: record.delta,
        train_seconds,
        bytes_up: train_up + inf_pre.up + inf_online.up,
        bytes_down: train_down + inf_pre.down + inf_online.down,
        online_latency_ms,
    };
    let summary = Summary {
        headline,
        model: record.preset.clone(),
        train_examples: record.train_examples,
        test_examples: test.len(),
        steps,
        batch_size: record.batch_size,
        learning_rate: record.learning_rate,
        clip: record.clip,
        weight_average: record.weight_average,
        noise_multiplier: record.noise_multiplier,
        sample_rate: record.sample_rate,
        seconds_per_step,
        training_bytes_up: train_up,
        training_bytes_down: train_down,
        inference_preprocessing_seconds,
        inference_preprocessing_bytes: inf_pre.total(),
        inference_online_bytes_per_query: inf_online.total() as f64 / queries as f64,
        total_seconds: started.elapsed().as_secs_f64(),
        confusion_matrix: confusion.clone(),
    };
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    let table = report::table(
        "Sphinx demo: private training and private inference on the bundled MNIST sample",
        &[
            ("model", summary.model.clone()),
            (
                "held-out accuracy (private inference)",
                format!("{:.2}% of {}", 100.0 * test_accuracy, summary.test_examples),
            ),
            (
                "privacy spent",
                format!("ε = {:.3} at δ = {:e}", epsilon, record.delta),
            ),
            (
                "training",
                format!(
                    "{steps} steps, {:.1} s ({:.2} s per batch of ~{})",
                    train_seconds, seconds_per_step, record.batch_size
                ),
            ),
            (
                "training bytes up / down (TLS)",
                format!("{} / {}", mb(train_up), mb(train_down)),
            ),
            (
                "inference preprocessing",
                format!(
                    "{:.1} s, {}",
                    summary.inference_preprocessing_seconds,
                    mb(summary.inference_preprocessing_bytes)
                ),
            ),
            (
                "online latency per query",
                format!(
                    "{online_latency_ms:.3} ms, {:.0} bytes",
                    summary.inference_online_bytes_per_query
                ),
            ),
            (
                "total wall time",
                format!("{:.1} s", started.elapsed().as_secs_f64()),
            ),
        ],
    );
    print!("{table}");

    // 5. The report folder.
    let write = |name: &str, text: String| -> anyhow::Result<()> {
        let path = a.report.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("summary.json", serde_json::to_string_pretty(&summary)?)?;
    write("history.json", serde_json::to_string_pretty(&history)?)?;
    write(
        "report.md",
        format!(
            "```text\n{table}```\n\nConfusion matrix (held-out, private inference):\n\n```text\n{}```\n",
            report::confusion_text(&confusion)
        ),
    )?;
    report::training_plots(&a.report, &history)?;
    report::confusion_plot(
        &a.report.join("confusion_matrix.png"),
        &format!(
            "Held-out confusion matrix ({:.1}% accurate)",
            100.0 * test_accuracy
        ),
        &confusion,
    )?;
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary.headline)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!("report written to {}", a.report.display());
    if steps == 0 {
        bail!("no training step was taken");
    }
    Ok(ExitCode::SUCCESS)
}

fn rng(seed: Option<u64>, salt: u64) -> ChaCha20Rng {
    match seed {
        Some(s) => ChaCha20Rng::seed_from_u64(s.wrapping_mul(31).wrapping_add(salt)),
        None => ChaCha20Rng::from_os_rng(),
    }
}
