//! Where `sphinx demo`'s held-out accuracy comes from: the plaintext reference
//! (`sphinx_protocol::reference::ReferenceTrainer`) of the demo's exact run (the same
//! `--insecure-seed` gives the same Poisson batches, noise and initial weights), and the
//! plaintext accuracy of a demo's exported model.
//!
//! ```sh
//! cargo run --release -p sphinx-client --example demo_gap -- \
//!     [--seeds 11-26] [--report sphinx-demo-report --seed S]
//! ```
//!
//! For every seed it prints the reference's accuracy on the 2,000 held-out digits (last
//! iterate and exported `W̄`) with the inputs standardized with the statistics of all
//! 784 pixels of the training images (the demo before `data::input_stats`) and with those
//! of the 400 pixels the model reads after its crop (the demo since). With `--report`, it scores the exported model of a demo run
//! (`<report>/model`, its `preprocessing.json`) in plaintext and compares its weights with
//! those of the reference of seed `S` trained on inputs standardized the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sphinx_client::data;
use sphinx_client::store::ModelSecrets;
use sphinx_dp::{
    ClipNorm, Delta, DpSgdAggregator, DpSgdConfig, Epsilon, RdpAccountant, SampleRate,
    calibrate_noise,
};
use sphinx_nn::data::Dataset;
use sphinx_nn::model::Model;
use sphinx_nn::presets::Preset;
use sphinx_protocol::reference::ReferenceTrainer;
use sphinx_protocol::update::WeightAverage;

const PRESET: Preset = Preset::CropPoolMlp40;
const BATCH: f64 = 512.0;
const EPOCHS: f64 = 10.0;
const LR: f32 = 6.0;
const CLIP: f64 = 1.5;
const DECAY: f32 = 0.9;

/// Mean and deviation of the pixels inside a `border`-pixel frame of square images.
fn inner_stats(data: &Dataset, border: usize) -> [f32; 2] {
    let side = data.shape.height;
    let vals: Vec<f64> = data
        .images
        .rows()
        .into_iter()
        .flat_map(|r| {
            (border..side - border)
                .flat_map(move |y| (border..side - border).map(move |x| y * side + x))
                .map(move |j| f64::from(r[j]))
                .collect::<Vec<_>>()
        })
        .collect();
    let n = vals.len() as f64;
    let mean = vals.iter().sum::<f64>() / n;
    let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    [mean as f32, var.sqrt().max(1e-6) as f32]
}

fn acc(m: &Model, test: &Dataset) -> f64 {
    100.0 * m.accuracy(test.images.view(), &test.labels, 500).unwrap()
}

/// The demo's run of `seed` in plaintext: returns (last, exported) models.
fn reference(seed: u64, train: &Dataset, max_steps: Option<u64>) -> (Model, Model) {
    let n = train.len();
    let q = BATCH / n as f64;
    let steps = ((EPOCHS / q).round() as u64).max(1);
    let cal = calibrate_noise(
        &RdpAccountant::new(),
        SampleRate::new(q).unwrap(),
        steps,
        Epsilon::new(8.0).unwrap(),
        Delta::new(1e-5).unwrap(),
    )
    .unwrap();
    let spec = PRESET.spec();
    let dim: usize = Model::zeros(spec.clone())
        .unwrap()
        .param_layers()
        .map(|p| p.weight().len())
        .sum();
    let cfg = DpSgdConfig {
        clip_norm: ClipNorm::new(CLIP).unwrap(),
        noise_multiplier: cal.noise_multiplier,
        sample_rate: SampleRate::new(q).unwrap(),
        dataset_size: n,
    };
    let secrets = ModelSecrets::from_test_seed(seed);
    let agg =
        DpSgdAggregator::with_rng(dim, cfg, ChaCha20Rng::from_seed(secrets.dp_seed())).unwrap();
    let mut t = ReferenceTrainer::new(spec, seed, 0.01, agg, LR)
        .unwrap()
        .with_weight_average(WeightAverage { decay: DECAY })
        .unwrap();
    for _ in 0..max_steps.map_or(steps, |m| m.min(steps)) {
        t.step(train).unwrap();
    }
    (t.model().clone(), t.exported_model().unwrap())
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str| -> Option<String> {
        let i = args.iter().position(|a| a == flag)?;
        let v = args.remove(i + 1);
        args.remove(i);
        Some(v)
    };
    let seeds: Vec<u64> = take("--seeds").map_or_else(
        || (11..=26).collect(),
        |r| {
            let (a, b) = r.split_once('-').unwrap();
            (a.parse().unwrap()..=b.parse().unwrap()).collect()
        },
    );
    let report = take("--report").map(PathBuf::from);
    let report_seed: Option<u64> = take("--seed").map(|s| s.parse().unwrap());
    let max_steps: Option<u64> = take("--steps").map(|s| s.parse().unwrap());

    let split = data::load("bundled", None, None).unwrap();
    let demo_stats = data::pixel_stats(&split.train);
    let crop_stats = inner_stats(&split.train, 4);
    println!(
        "standardization: demo (all 784 pixels) mean {:.4} sd {:.4}; cropped 20x20 mean {:.4} sd {:.4}",
        demo_stats[0], demo_stats[1], crop_stats[0], crop_stats[1]
    );
    let prep = |stats: [f32; 2]| {
        let (mut tr, mut te) = (split.train.clone(), split.test.clone());
        data::standardize(&mut tr, Some(stats));
        data::standardize(&mut te, Some(stats));
        (tr, te)
    };
    let (demo_train, demo_test) = prep(demo_stats);
    let (crop_train, crop_test) = prep(crop_stats);

    if let Some(dir) = report {
        let model = sphinx_nn::io::load_dir(&dir.join("model")).unwrap();
        let pre: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("model/preprocessing.json")).unwrap())
                .unwrap();
        let s = &pre["standardize"];
        let stats = [s[0].as_f64().unwrap() as f32, s[1].as_f64().unwrap() as f32];
        let mut test = split.test.clone();
        data::standardize(&mut test, Some(stats));
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
        println!(
            "demo report {}: private inference {:.2}%, exported model in plaintext {:.2}%",
            dir.display(),
            100.0 * summary["test_accuracy"].as_f64().unwrap(),
            acc(&model, &test)
        );
        if let Some(seed) = report_seed {
            // Trained as the demo was: its own standardization.
            let (train, _) = prep(stats);
            let (last, exported) = reference(seed, &train, max_steps);
            let mut max_w = 0f32;
            let mut max_b = 0f32;
            for (l, (a, b)) in model
                .param_layers()
                .zip(exported.param_layers())
                .enumerate()
            {
                let norm = |v: &mut dyn Iterator<Item = f32>| v.map(|x| x * x).sum::<f32>().sqrt();
                for (x, y) in a.weight().iter().zip(b.weight()) {
                    max_w = max_w.max((x - y).abs());
                }
                for (x, y) in a.bias().iter().zip(b.bias()) {
                    max_b = max_b.max((x - y).abs());
                }
                println!(
                    "layer {l}: |W̄ demo| {:.4} |W̄ ref| {:.4} |ΔW̄| {:.4}; |b demo| {:.4} |b ref| {:.4} |Δb| {:.4}",
                    norm(&mut a.weight().iter().copied()),
                    norm(&mut b.weight().iter().copied()),
                    norm(&mut a.weight().iter().zip(b.weight()).map(|(x, y)| x - y)),
                    norm(&mut a.bias().iter().copied()),
                    norm(&mut b.bias().iter().copied()),
                    norm(&mut a.bias().iter().zip(b.bias()).map(|(x, y)| x - y)),
                );
            }
            println!(
                "reference of seed {seed}: exported {:.2}% (last iterate {:.2}%); max |ΔW̄| {max_w:.2e}, max |Δb| {max_b:.2e} from the demo's export",
                acc(&exported, &test),
                acc(&last, &test)
            );
        }
        return;
    }

    let mut rows = Vec::new();
    for &seed in &seeds {
        let (l1, e1) = reference(seed, &demo_train, max_steps);
        let (l2, e2) = reference(seed, &crop_train, max_steps);
        let r = [
            acc(&l1, &demo_test),
            acc(&e1, &demo_test),
            acc(&l2, &crop_test),
            acc(&e2, &crop_test),
        ];
        println!(
            "seed {seed}: demo stats last {:.2} exported {:.2} | cropped stats last {:.2} exported {:.2}",
            r[0], r[1], r[2], r[3]
        );
        rows.push(r);
    }
    let names = [
        "demo stats, last",
        "demo stats, exported",
        "cropped stats, last",
        "cropped stats, exported",
    ];
    for (k, name) in names.iter().enumerate() {
        let v: Vec<f64> = rows.iter().map(|r| r[k]).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64)
            .sqrt();
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        println!("{name}: mean {mean:.2} ± {sd:.2}, min {min:.2}");
    }
}
