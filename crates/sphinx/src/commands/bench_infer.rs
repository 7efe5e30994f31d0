//! `sphinx bench infer`: Table V of the Sphinx paper on this machine: preprocessing and
//! online seconds and bytes per query, and private vs plaintext accuracy, for Pure-HE,
//! Sphinx-FP and Sphinx.
//!
//! The plaintext model is trained here briefly on the bundled MNIST sample (or loaded with
//! `--load DIR`); the queries are the first `--queries` held-out images. Sphinx and
//! Sphinx-FP run end to end in-process (both roles, real encryption, every message's wire
//! size accounted); Pure-HE is extrapolated from exact operation counts and measured unit
//! costs and says so. Per-query figures divide the cost of the run by the queries actually
//! answered (one preprocessing round serves all of them; nothing is scaled to the slot
//! count).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use sphinx_nn::data::bundled_mnist_sample;
use sphinx_nn::model::Model;
use sphinx_nn::optim::Sgd;
use sphinx_nn::presets::Preset;
use sphinx_nn::train::{sgd_step, shuffled_batches};
use sphinx_protocol::inference::baselines::{pure_he_inference, sphinx_fp};
use sphinx_protocol::inference::messages::InferenceKind;
use sphinx_protocol::inference::{
    FixedPoint, InferenceClient, InferenceSession, biases_of, inference_parameters,
};

/// Arguments of `sphinx bench infer`.
#[derive(Debug, Args)]
pub struct BenchInferArgs {
    /// Model preset (an MNIST-shaped one: sphinx-mnist-cnn, mlp-30, mlp-100, lenet5, ...).
    #[arg(long, default_value = "sphinx-mnist-cnn")]
    model: String,
    /// Private queries (the first K held-out images; one preprocessing round serves them).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=2000))]
    queries: u64,
    /// Load the plaintext model from DIR (sphinx-nn `save_dir` format) instead of training.
    #[arg(long, value_name = "DIR")]
    load: Option<PathBuf>,
    /// Epochs of plaintext SGD on the bundled training images (when not loading).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    epochs: u64,
    /// Pure-HE operations timed per kind for the unit costs.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..=10_000))]
    pure_he_reps: u64,
    /// Seed of training, keys and masks (a benchmark, not a deployment).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Row {
    framework: &'static str,
    /// Seconds per query before the input is known (amortized over the queries run).
    preprocessing_s: f64,
    /// Seconds per query once the input is known (both roles, in-process).
    online_s: f64,
    /// Wall time to answer one query on its own (packed baselines pay a whole batch).
    latency_s: f64,
    /// Bytes per query before the input is known.
    preprocessing_bytes: f64,
    /// Online bytes per query, both directions.
    online_bytes: f64,
    /// Process CPU seconds per query before the input is known (all threads; on a busy
    /// machine wall time overstates the cost, CPU time does not).
    preprocessing_cpu_s: Option<f64>,
    /// Process CPU seconds per query online (all threads).
    online_cpu_s: Option<f64>,
    /// Test accuracy (percent) of the private path; `null` where it was not run end to end.
    accuracy_private: Option<f64>,
    /// Test accuracy (percent) of the plaintext model on the same queries.
    accuracy_plaintext: f64,
    method: &'static str,
}

#[derive(Debug, Serialize)]
struct PaperRow {
    framework: &'static str,
    preprocessing_s: Option<f64>,
    online_s: Option<f64>,
    preprocessing_mb: Option<f64>,
    online_mb: Option<f64>,
}

#[derive(Debug, Serialize)]
struct SphinxDetails {
    ring_degree: usize,
    plaintext_modulus: u64,
    modulus_bits: Vec<u32>,
    activation_bits: u8,
    weight_bits: u8,
    preprocessing_round_s: f64,
    preprocessing_round_bytes: u64,
    preprocessing_upload_bytes: u64,
    preprocessing_download_bytes: u64,
    setup_bytes: u64,
    online_upload_bytes_per_query: f64,
    online_download_bytes_per_query: f64,
    max_logit_error_vs_plaintext: f64,
    argmax_agreement: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    model_source: String,
    queries: u64,
    threads: usize,
    rows: Vec<Row>,
    sphinx: SphinxDetails,
    pure_he_encrypted_weight_bytes: u64,
    paper: Vec<PaperRow>,
}

fn progress(len: u64, unit: &str) -> ProgressBar {
    // indicatif draws nothing when stderr is not a terminal (CI, pipes, tests).
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit} {{msg}}"
    )) {
        bar.set_style(style);
    }
    bar
}

/// CPU time of this process so far (all threads), in seconds.
fn process_cpu() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

fn train(model: &mut Model, epochs: u64, seed: u64) -> anyhow::Result<()> {
    let train = bundled_mnist_sample()?.train;
    let mut opt = Sgd::new(0.05, 0.9)?;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let batches: Vec<Vec<usize>> = (0..epochs)
        .flat_map(|_| shuffled_batches(train.len(), 32, &mut rng))
        .collect();
    let bar = progress(batches.len() as u64, "plaintext SGD steps");
    for b in &batches {
        let (x, y) = train.batch(b)?;
        sgd_step(model, &mut opt, x.view(), &y)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Runs `sphinx bench infer`.
///
/// # Errors
/// Unknown or non-MNIST model, unreadable `--load`, and any protocol error.
pub fn run(args: &BenchInferArgs) -> anyhow::Result<ExitCode> {
    let preset: Preset = args.model.parse()?;
    let spec = preset.spec();
    let split = bundled_mnist_sample()?;
    if spec.input != split.test.shape {
        bail!(
            "{} takes {} inputs; the bundled sample is {}",
            args.model,
            spec.input,
            split.test.shape
        );
    }
    let (model, model_source) = match &args.load {
        Some(dir) => {
            let m = sphinx_nn::io::load_dir(dir)
                .with_context(|| format!("loading the model from {}", dir.display()))?;
            if m.spec() != &spec {
                bail!("{} is not a {} model", dir.display(), args.model);
            }
            (m, format!("loaded from {}", dir.display()))
        }
        None => {
            let mut m = Model::new(spec.clone(), args.seed)?;
            eprintln!(
                "training {} in plaintext: {} epoch(s) of SGD on the {} bundled training images",
                args.model,
                args.epochs,
                split.train.len()
            );
            train(&mut m, args.epochs, args.seed)?;
            (
                m,
                format!(
                    "trained here: {} epoch(s) of plaintext SGD (batch 32, lr 0.05, momentum 0.9) on the bundled MNIST sample",
                    args.epochs
                ),
            )
        }
    };
    let k = usize::try_from(args.queries)?.min(split.test.len());
    let test = split.test.head(k);
    let inputs = test.images.view();
    let labels = &test.labels;
    let plain_logits = model.forward(inputs)?;
    let plain_pred: Vec<usize> = plain_logits
        .rows()
        .into_iter()
        .map(|r| argmax(r.as_slice().unwrap_or(&[])))
        .collect();
    let pct = |pred: &[usize]| {
        100.0
            * pred
                .iter()
                .zip(labels)
                .filter(|&(&p, &y)| p == usize::from(y))
                .count() as f64
            / k as f64
    };
    let accuracy_plaintext = pct(&plain_pred);
    eprintln!(
        "plaintext accuracy on {k} held-out images: {accuracy_plaintext:.2}% ({} thread(s))",
        rayon::current_num_threads()
    );

    // Sphinx.
    let params = inference_parameters().build()?;
    let fixed = FixedPoint::default();
    let (client, setup) = InferenceClient::new(
        params.clone(),
        spec.clone(),
        biases_of(&model),
        fixed,
        ChaCha20Rng::seed_from_u64(args.seed.wrapping_add(1)),
    )?;
    let outputs = client.preprocessing_outputs() as u64;
    let mut session = InferenceSession::new(
        client,
        setup,
        &model,
        ChaCha20Rng::seed_from_u64(args.seed.wrapping_add(2)),
    )?;
    eprintln!(
        "Sphinx preprocessing: {} [r] up, {outputs} flooded [W r - s] down, N = {}",
        session.client().preprocessing_inputs(),
        params.n()
    );
    let bar = progress(outputs, "output ciphertexts");
    let cpu = process_cpu();
    session
        .preprocess_with(k, &mut |n| bar.inc(n as u64))
        .context("Sphinx preprocessing")?;
    bar.finish_and_clear();
    let pre_cpu = process_cpu() - cpu;
    let bar = progress(k as u64, "private queries");
    let cpu = process_cpu();
    let mut private_pred = Vec::with_capacity(k);
    let (mut max_err, mut agree) = (0f64, 0usize);
    for (i, row) in inputs.rows().into_iter().enumerate() {
        let x: Vec<f32> = row.iter().copied().collect();
        let logits = session.query(&x).context("Sphinx online query")?;
        let pred = argmax(&logits);
        agree += usize::from(pred == plain_pred[i]);
        for (a, b) in logits.iter().zip(plain_logits.row(i)) {
            max_err = max_err.max(f64::from((a - b).abs()));
        }
        private_pred.push(pred);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let online_cpu = process_cpu() - cpu;
    let traffic = session.traffic();
    let kf = k as f64;
    let pre_bytes = traffic.preprocessing_bytes();
    let pre_s = session.preprocessing_time().as_secs_f64();
    let online_up = traffic.kind(InferenceKind::OnlineInput).bytes;
    let online_down = traffic.kind(InferenceKind::OnlineOutput).bytes;
    let sphinx_row = Row {
        framework: "Sphinx",
        preprocessing_s: pre_s / kf,
        online_s: session.online_time().as_secs_f64() / kf,
        latency_s: session.online_time().as_secs_f64() / kf,
        preprocessing_bytes: pre_bytes as f64 / kf,
        online_bytes: traffic.online_bytes() as f64 / kf,
        preprocessing_cpu_s: Some(pre_cpu / kf),
        online_cpu_s: Some(online_cpu / kf),
        accuracy_private: Some(pct(&private_pred)),
        accuracy_plaintext,
        method: "measured end to end in-process: one BFV preprocessing round for all queries, then each query alone",
    };
    let literal = params.literal();
    let sphinx = SphinxDetails {
        ring_degree: params.n(),
        plaintext_modulus: params.t(),
        modulus_bits: literal.q_bits.clone(),
        activation_bits: fixed.activation_bits,
        weight_bits: fixed.weight_bits,
        preprocessing_round_s: pre_s,
        preprocessing_round_bytes: pre_bytes,
        preprocessing_upload_bytes: traffic.kind(InferenceKind::PreprocessInput).bytes
            + traffic.kind(InferenceKind::PreprocessStart).bytes,
        preprocessing_download_bytes: traffic.kind(InferenceKind::PreprocessOutput).bytes,
        setup_bytes: traffic.kind(InferenceKind::Setup).bytes,
        online_upload_bytes_per_query: online_up as f64 / kf,
        online_download_bytes_per_query: online_down as f64 / kf,
        max_logit_error_vs_plaintext: max_err,
        argmax_agreement: agree as f64 / kf,
    };
    drop(session);

    // Sphinx-FP.
    eprintln!("Sphinx-FP: CKKS forward pass, N = 4096");
    let bar = progress(k as u64, "Sphinx-FP queries");
    let mut rng = ChaCha20Rng::seed_from_u64(args.seed.wrapping_add(3));
    let cpu = process_cpu();
    let fp = sphinx_fp(&model, inputs, &mut rng, &|done| {
        bar.set_position(done as u64)
    })
    .context("Sphinx-FP")?;
    bar.finish_and_clear();
    let fp_cpu = process_cpu() - cpu;
    let fp_pred: Vec<usize> = fp
        .logits
        .rows()
        .into_iter()
        .map(|r| argmax(&r.to_vec()))
        .collect();
    let fp_row = Row {
        framework: "Sphinx-FP",
        preprocessing_s: fp.preprocessing_s / kf,
        online_s: fp.online_s / kf,
        // Every layer costs the same for one query as for a full batch of slots.
        latency_s: fp.online_s / k.div_ceil(fp.slots) as f64,
        preprocessing_bytes: fp.preprocessing_bytes as f64 / kf,
        online_bytes: fp.online_bytes as f64 / kf,
        // The run's CPU time split in the proportion of its wall times.
        preprocessing_cpu_s: Some(
            fp_cpu * fp.preprocessing_s / (fp.preprocessing_s + fp.online_s).max(1e-9) / kf,
        ),
        online_cpu_s: Some(
            fp_cpu * fp.online_s / (fp.preprocessing_s + fp.online_s).max(1e-9) / kf,
        ),
        accuracy_private: Some(pct(&fp_pred)),
        accuracy_plaintext,
        method: "measured end to end in-process: training's CKKS forward pass, queries packed in slots, client-precomputed encryptions of zero",
    };

    // Pure-HE.
    eprintln!("Pure-HE: timing unit operations on N = 16384");
    let t = Instant::now();
    let pure = pure_he_inference(&spec, usize::try_from(args.pure_he_reps)?, &mut rng)
        .context("Pure-HE unit costs")?;
    let batches = k.div_ceil(pure.slots) as f64;
    eprintln!("  measured in {:.1} s", t.elapsed().as_secs_f64());
    let pure_row = Row {
        framework: "Pure-HE",
        preprocessing_s: 0.0,
        online_s: pure.seconds_per_batch() * batches / kf,
        latency_s: pure.seconds_per_batch(),
        preprocessing_bytes: 0.0,
        online_bytes: pure.online_bytes_per_batch as f64 * batches / kf,
        preprocessing_cpu_s: None,
        online_cpu_s: None,
        accuracy_private: None,
        accuracy_plaintext,
        method: "extrapolated: exact ciphertext x ciphertext product and relinearize+rescale counts x measured unit costs (N = 16384), queries packed in slots; not run end to end",
    };

    let report = Report {
        model: args.model.clone(),
        model_source,
        queries: k as u64,
        threads: rayon::current_num_threads(),
        rows: vec![pure_row, fp_row, sphinx_row],
        sphinx,
        pure_he_encrypted_weight_bytes: pure.encrypted_weight_bytes,
        paper: vec![
            PaperRow {
                framework: "Pure-HE",
                preprocessing_s: None,
                online_s: Some(2915.0),
                preprocessing_mb: None,
                online_mb: None,
            },
            PaperRow {
                framework: "Sphinx-FP",
                preprocessing_s: None,
                online_s: Some(108.0),
                preprocessing_mb: None,
                online_mb: None,
            },
            PaperRow {
                framework: "Sphinx",
                preprocessing_s: Some(6.01),
                online_s: Some(0.05),
                preprocessing_mb: Some(87.6),
                online_mb: Some(0.07),
            },
        ],
    };
    print_markdown(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_markdown(r: &Report) {
    let mb = |b: f64| b / 1e6;
    println!(
        "Table V ({}, {} queries, {} thread(s); model {})\n",
        r.model, r.queries, r.threads, r.model_source
    );
    println!(
        "| framework | preprocessing s/query | preprocessing MB/query | online s/query | one-query latency s | online MB/query | private acc. % | plaintext acc. % | paper: prep. s / MB, online s / MB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let opt = |v: Option<f64>, d: usize| v.map_or_else(|| "-".to_string(), |x| format!("{x:.d$}"));
    for (row, paper) in r.rows.iter().zip(&r.paper) {
        println!(
            "| {} | {:.4} | {:.3} | {:.5} | {:.4} | {:.4} | {} | {:.2} | {} / {}, {} / {} |",
            row.framework,
            row.preprocessing_s,
            mb(row.preprocessing_bytes),
            row.online_s,
            row.latency_s,
            mb(row.online_bytes),
            opt(row.accuracy_private, 2),
            row.accuracy_plaintext,
            opt(paper.preprocessing_s, 2),
            opt(paper.preprocessing_mb, 1),
            opt(paper.online_s, 2),
            opt(paper.online_mb, 2),
        );
    }
    println!();
    for row in &r.rows {
        println!("- {}: {}", row.framework, row.method);
    }
    for row in &r.rows {
        if let (Some(p), Some(o)) = (row.preprocessing_cpu_s, row.online_cpu_s) {
            println!(
                "- {} CPU time per query (all threads): preprocessing {p:.4} s, online {o:.5} s",
                row.framework
            );
        }
    }
    println!(
        "- Sphinx: one round of {:.1} s and {:.1} MB for {} queries; max |logit - plaintext| = {:.2e}, argmax agreement {:.2}%",
        r.sphinx.preprocessing_round_s,
        mb(r.sphinx.preprocessing_round_bytes as f64),
        r.queries,
        r.sphinx.max_logit_error_vs_plaintext,
        100.0 * r.sphinx.argmax_agreement
    );
}
