//! Compares training settings and the averaging of `W` with the plaintext
//! reference of the protocol's DP-SGD on the bundled MNIST sample: σ calibrated for the
//! ε budget, several seeds per setting, mean ± sd of the accuracy.
//!
//! ```sh
//! cargo run --release -p sphinx-protocol --example update_sweep -- \
//!     [--validation] [--seeds 11-18] RULE...
//! ```
//!
//! `RULE` is `hidden:epochs:batch:lr:clip:decay[:prep[:crop]]` (`decay`: of the exported
//! average of `W`, 0 for none); hidden units replace the 30 of `pool-mlp-30`. `prep` is the
//! input map: `g` (default) standardizes every pixel with the mean and deviation of the
//! training part's pixels left by the crop, as `sphinx client train` does
//! (`sphinx_client::data::input_stats`); `i` standardizes each pooled image with its
//! own mean and deviation (a `GroupNorm` of one group after the pooling, no training
//! statistic); `n` feeds the raw `[0, 1]` pixels. `crop` (default 0) drops that many
//! border pixels on each side before the pooling. `--validation` trains on the first
//! 7,000 training digits (batch scaled by 7/8) and scores the last 1,000; otherwise it
//! trains on all 8,000 and scores the 2,000 held-out digits.
//!
//! Each line also gives the encrypted cost of the setting: per-sample gradient
//! ciphertexts over the run (`Σ ⌈units/R⌉ · patch` per step, `R` replicas of the batch
//! per ciphertext, as `sphinx_protocol::client` packs them) and the first layer's input
//! ciphertexts, each relative to the demo default's.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use rayon::prelude::*;
use sphinx_dp::{
    ClipNorm, Delta, DpSgdAggregator, DpSgdConfig, Epsilon, RdpAccountant, SampleRate,
    calibrate_noise,
};
use sphinx_nn::data::{Dataset, bundled_mnist_sample};
use sphinx_nn::layers::LayerSpec;
use sphinx_nn::presets::Preset;
use sphinx_protocol::reference::ReferenceTrainer;
use sphinx_protocol::update::WeightAverage;

/// Replicas of a batch of expected size `qn` per ciphertext of 2,048 slots (the client's
/// block of `⌈qN + 6√(qN) + 8⌉` slots).
fn replicas(qn: f64) -> usize {
    let block = (qn + 6.0 * qn.sqrt() + 8.0).ceil() as usize;
    2048 / block.max(1)
}

/// Per-sample gradient and input ciphertexts of one step of `FC in→hidden→10` at `R`.
fn step_cts(inputs: usize, hidden: usize, r: usize) -> [usize; 2] {
    [
        hidden.div_ceil(r) * inputs + 10usize.div_ceil(r) * hidden,
        inputs,
    ]
}

/// Drops `crop` pixels on every side of each square one-channel image.
fn crop(data: &Dataset, crop: usize) -> Dataset {
    if crop == 0 {
        return data.clone();
    }
    let side = data.shape.height;
    let inner = side - 2 * crop;
    let idx: Vec<usize> = (crop..side - crop)
        .flat_map(|y| (crop..side - crop).map(move |x| y * side + x))
        .collect();
    let images = ndarray::Array2::from_shape_fn((data.len(), inner * inner), |(n, j)| {
        data.images[[n, idx[j]]]
    });
    Dataset {
        images,
        labels: data.labels.clone(),
        shape: sphinx_nn::layers::Shape::image(1, inner, inner),
        num_classes: data.num_classes,
    }
}

fn standardize(train: &mut Dataset, test: &mut Dataset) {
    let n = train.images.len() as f64;
    let mean = train.images.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = train
        .images
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let (m, s) = (mean as f32, var.sqrt().max(1e-6) as f32);
    train.images.mapv_inplace(|v| (v - m) / s);
    test.images.mapv_inplace(|v| (v - m) / s);
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let validation = args.iter().any(|a| a == "--validation");
    args.retain(|a| a != "--validation");
    let mut seeds: Vec<u64> = (11..=18).collect();
    if let Some(i) = args.iter().position(|a| a == "--seeds") {
        let r = args.remove(i + 1);
        args.remove(i);
        let (a, b) = r.split_once('-').unwrap();
        seeds = (a.parse().unwrap()..=b.parse().unwrap()).collect();
    }
    let split = bundled_mnist_sample().unwrap();
    let (train, test) = if validation {
        let tr = split.train.head(7000);
        let all = split.train.head(8000);
        let idx: Vec<usize> = (7000..8000).collect();
        let (x, y) = all.batch(&idx).unwrap();
        let va = Dataset {
            images: x,
            labels: y,
            shape: all.shape,
            num_classes: all.num_classes,
        };
        (tr, va)
    } else {
        (split.train, split.test)
    };
    let (train0, test0) = (train, test);
    // The demo default's cost per run, the unit of the cost columns.
    let base = {
        let [g, i] = step_cts(196, 40, replicas(512.0));
        [(94 * g) as f64, (94 * i) as f64]
    };
    for rule in &args {
        let f: Vec<&str> = rule.split(':').collect();
        let hidden: usize = f[0].parse().unwrap();
        let epochs: f64 = f[1].parse().unwrap();
        let mut batch: f64 = f[2].parse().unwrap();
        let lr: f32 = f[3].parse().unwrap();
        let clip: f64 = f[4].parse().unwrap();
        let average = WeightAverage {
            decay: f[5].parse().unwrap(),
        };
        let prep = f.get(6).copied().unwrap_or("g");
        let border: usize = f.get(7).map_or(0, |c| c.parse().unwrap());
        let mut train = crop(&train0, border);
        let mut test = crop(&test0, border);
        match prep {
            "g" => standardize(&mut train, &mut test),
            "i" | "n" => {}
            other => panic!("unknown prep {other}"),
        }
        if validation {
            batch *= 7.0 / 8.0;
        }
        let n = train.len();
        let q = batch / n as f64;
        let steps = ((epochs / q).round() as u64).max(1);
        let cal = calibrate_noise(
            &RdpAccountant::new(),
            SampleRate::new(q).unwrap(),
            steps,
            Epsilon::new(8.0).unwrap(),
            Delta::new(1e-5).unwrap(),
        )
        .unwrap();
        let mut spec = Preset::PoolMlp30.spec();
        spec.input = train.shape;
        let side = train.shape.height / 2;
        if prep == "i" {
            spec.layers.insert(1, LayerSpec::GroupNorm { groups: 1 });
        }
        for l in &mut spec.layers {
            if let LayerSpec::Linear {
                in_features,
                out_features,
            } = l
            {
                if *out_features == 30 {
                    *in_features = side * side;
                    *out_features = hidden;
                } else if *in_features == 30 {
                    *in_features = hidden;
                }
            }
        }
        let dim = side * side * hidden + hidden * 10;
        let r = replicas(batch);
        let [g, i] = step_cts(side * side, hidden, r);
        let cost = [
            (steps as usize * g) as f64 / base[0],
            (steps as usize * i) as f64 / base[1],
        ];
        let cfg = DpSgdConfig {
            clip_norm: ClipNorm::new(clip).unwrap(),
            noise_multiplier: cal.noise_multiplier,
            sample_rate: SampleRate::new(q).unwrap(),
            dataset_size: n,
        };
        // Per seed: the last iterate and the exported model (W̄ with the last b).
        let runs: Vec<[f64; 2]> = seeds
            .par_iter()
            .map(|&seed| {
                let agg = DpSgdAggregator::seeded(dim, cfg, seed).unwrap();
                let mut t = ReferenceTrainer::new(spec.clone(), seed + 1000, 0.01, agg, lr)
                    .unwrap()
                    .with_weight_average(average)
                    .unwrap();
                for _ in 0..steps {
                    t.step(&train).unwrap();
                }
                let acc = |m: &sphinx_nn::model::Model| {
                    100.0 * m.accuracy(test.images.view(), &test.labels, 500).unwrap()
                };
                [acc(t.model()), acc(&t.exported_model().unwrap())]
            })
            .collect();
        for (k, name) in ["last", "exported"].iter().enumerate() {
            let accs: Vec<f64> = runs.iter().map(|r| r[k]).collect();
            let mean = accs.iter().sum::<f64>() / accs.len() as f64;
            let sd = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>()
                / (accs.len().max(2) - 1) as f64)
                .sqrt();
            let min = accs.iter().copied().fold(f64::INFINITY, f64::min);
            println!(
                "{rule}\t{name}\tsteps {steps}\tσ {:.3}\tR {r}\tcost {:.2} (inputs {:.2})\tmean {mean:.2} ± {sd:.2}\tmin {min:.2}\t{}",
                cal.noise_multiplier.get(),
                cost[0],
                cost[1],
                accs.iter()
                    .map(|a| format!("{a:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
}
