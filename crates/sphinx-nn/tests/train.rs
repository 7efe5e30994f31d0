//! Training steps: plaintext SGD learns, momentum follows its formula, and the DP-SGD
//! step equals clip → sum → noise → divide by the expected batch size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sphinx_dp::{ClipNorm, DpSgdAggregator, DpSgdConfig, NoiseMultiplier, SampleRate};
use sphinx_nn::data::bundled_mnist_sample;
use sphinx_nn::model::Model;
use sphinx_nn::optim::Sgd;
use sphinx_nn::presets::Preset;
use sphinx_nn::train;

#[test]
fn plaintext_sgd_learns_the_bundled_sample() {
    let split = bundled_mnist_sample().unwrap();
    let (train_set, test_set) = (split.train.head(2000), split.test.head(500));
    let mut model = Model::new(Preset::Mlp30.spec(), 1).unwrap();
    let before = model
        .accuracy(test_set.images.view(), &test_set.labels, 500)
        .unwrap();
    let mut opt = Sgd::new(0.1, 0.9).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for _ in 0..3 {
        for idx in train::shuffled_batches(train_set.len(), 32, &mut rng) {
            let (x, y) = train_set.batch(&idx).unwrap();
            train::sgd_step(&mut model, &mut opt, x.view(), &y).unwrap();
        }
    }
    let after = model
        .accuracy(test_set.images.view(), &test_set.labels, 500)
        .unwrap();
    assert!(before < 0.3 && after > 0.8, "accuracy {before} -> {after}");
}

#[test]
fn momentum_and_weight_decay_follow_their_formulas() {
    let split = bundled_mnist_sample().unwrap();
    let (x, y) = split.train.batch(&[0, 1, 2, 3]).unwrap();
    let start = Model::new(Preset::Mlp30.spec(), 3).unwrap();
    let (lr, mu, wd) = (0.05f32, 0.9f32, 0.01f32);
    let mut model = start.clone();
    let mut opt = Sgd::new(lr, mu).unwrap().with_weight_decay(wd).unwrap();
    let g1 = model.loss_and_grads(x.view(), &y).unwrap().1;
    opt.step(&mut model, &g1).unwrap();
    let g2 = model.loss_and_grads(x.view(), &y).unwrap().1;
    opt.step(&mut model, &g2).unwrap();
    // v1 = g1 + λw0, w1 = w0 − η v1; v2 = μ v1 + g2 + λw1, w2 = w1 − η v2.
    let w0 = start.param_layers().next().unwrap().weight().clone();
    let v1 = &g1.layers[0].weight + &(&w0 * wd);
    let w1 = &w0 - &(&v1 * lr);
    let v2 = &(&v1 * mu) + &g2.layers[0].weight + &(&w1 * wd);
    let w2 = &w1 - &(&v2 * lr);
    let got = model.param_layers().next().unwrap().weight();
    assert!((got - &w2).iter().all(|d| d.abs() < 1e-6));
    // Biases: no decay.
    let b0 = start.param_layers().next().unwrap().bias().clone();
    let vb1 = g1.layers[0].bias.clone();
    let b1 = &b0 - &(&vb1 * lr);
    let b2 = &b1 - &(&(&vb1 * mu + &g2.layers[0].bias) * lr);
    assert!(
        (model.param_layers().next().unwrap().bias() - &b2)
            .iter()
            .all(|d| d.abs() < 1e-6)
    );
    assert!(Sgd::new(0.0, 0.0).is_err() && Sgd::new(0.1, 1.0).is_err());
}

#[test]
fn dp_sgd_step_is_clip_sum_noise_scale() {
    // q = 1 puts every example in the batch; a tiny σ leaves the noise far below the
    // tolerance, so the update must equal −η · Σ_i clip_C(g_i) / N.
    let split = bundled_mnist_sample().unwrap();
    let data = split.train.head(12);
    let start = Model::new(Preset::Mlp30.spec(), 4).unwrap();
    let clip = 0.05;
    let config = DpSgdConfig {
        clip_norm: ClipNorm::new(clip).unwrap(),
        noise_multiplier: NoiseMultiplier::new(1e-6).unwrap(),
        sample_rate: SampleRate::new(1.0).unwrap(),
        dataset_size: data.len(),
    };
    let mut agg = DpSgdAggregator::seeded(start.num_params(), config, 9).unwrap();
    let mut model = start.clone();
    let mut opt = Sgd::new(1.0, 0.0).unwrap();
    let stats = train::dp_sgd_step(&mut model, &mut opt, &mut agg, &data).unwrap();
    assert_eq!(stats.batch_size, 12);

    let per_sample = start
        .per_sample_grads(data.images.view(), &data.labels)
        .unwrap();
    let mut expected = vec![0.0f64; start.num_params()];
    let mut clipped = 0;
    for i in 0..12 {
        let sample: Vec<f64> = per_sample
            .iter()
            .flat_map(|p| {
                let g = p.sample(i).unwrap();
                g.weight
                    .iter()
                    .chain(g.bias.iter())
                    .map(|&v| f64::from(v))
                    .collect::<Vec<_>>()
            })
            .collect();
        let norm = sample.iter().map(|v| v * v).sum::<f64>().sqrt();
        clipped += usize::from(norm > clip);
        let factor = (clip / norm).min(1.0);
        for (e, v) in expected.iter_mut().zip(sample) {
            *e += factor * v / 12.0;
        }
    }
    assert_eq!(stats.clipped, clipped);
    assert!(clipped > 0);
    let before: Vec<f32> = flat_params(&start);
    let after: Vec<f32> = flat_params(&model);
    for ((b, a), e) in before.iter().zip(&after).zip(&expected) {
        let update = f64::from(b - a);
        assert!(
            (update - e).abs() < 1e-5 + 1e-3 * e.abs(),
            "{update} vs {e}"
        );
    }
}

fn flat_params(model: &Model) -> Vec<f32> {
    model
        .param_layers()
        .flat_map(|p| {
            p.weight()
                .iter()
                .chain(p.bias().iter())
                .copied()
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn seeded_dp_sgd_is_reproducible_and_noisy() {
    let split = bundled_mnist_sample().unwrap();
    let data = split.train.head(400);
    let run = |seed| {
        let mut model = Model::new(Preset::Mlp30.spec(), 1).unwrap();
        let config = DpSgdConfig {
            clip_norm: ClipNorm::new(1.0).unwrap(),
            noise_multiplier: NoiseMultiplier::new(1.0).unwrap(),
            sample_rate: SampleRate::new(0.05).unwrap(),
            dataset_size: data.len(),
        };
        let mut agg = DpSgdAggregator::seeded(model.num_params(), config, seed).unwrap();
        let mut opt = Sgd::new(0.1, 0.0).unwrap();
        let mut sizes = Vec::new();
        for _ in 0..5 {
            sizes.push(
                train::dp_sgd_step(&mut model, &mut opt, &mut agg, &data)
                    .unwrap()
                    .batch_size,
            );
        }
        (flat_params(&model), sizes)
    };
    let (a, sa) = run(1);
    let (b, sb) = run(1);
    let (c, _) = run(2);
    assert_eq!(a, b);
    assert_eq!(sa, sb);
    assert_ne!(a, c);
    // Poisson batches: sizes vary around q·N = 20.
    assert!(sa.iter().any(|&s| s != sa[0]) && sa.iter().all(|&s| s < 60));
}
