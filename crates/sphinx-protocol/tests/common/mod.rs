//! Shared fixtures of the protocol tests: tiny models on the bundled MNIST sample.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_dp::{
    ClipNorm, Delta, DpSgdAggregator, DpSgdConfig, Epsilon, NoiseMultiplier, PrivacyBudget,
    SampleRate,
};
use sphinx_nn::data::{Dataset, bundled_mnist_sample};
use sphinx_nn::layers::{LayerSpec, Shape};
use sphinx_nn::model::ModelSpec;
use sphinx_protocol::client::{Client, ClientConfig};
use sphinx_protocol::params::build_training_parameters;
use sphinx_protocol::reference::ReferenceTrainer;
use sphinx_protocol::session::Session;
use sphinx_protocol::update::WeightAverage;

/// 28×28 → avg-pool 4 → 7×7 → FC 16 → ReLU → FC 10 (944 weights).
pub fn tiny_mlp() -> ModelSpec {
    ModelSpec {
        input: Shape::image(1, 28, 28),
        layers: vec![
            LayerSpec::AvgPool2d {
                kernel: 4,
                stride: 4,
            },
            LayerSpec::Flatten,
            LayerSpec::Linear {
                in_features: 49,
                out_features: 16,
            },
            LayerSpec::Relu,
            LayerSpec::Linear {
                in_features: 16,
                out_features: 10,
            },
        ],
    }
}

/// 28×28 → avg-pool 2 → conv 5×5 (2 channels) → ReLU → avg-pool 2 → FC 10 (550 weights).
pub fn tiny_cnn() -> ModelSpec {
    ModelSpec {
        input: Shape::image(1, 28, 28),
        layers: vec![
            LayerSpec::AvgPool2d {
                kernel: 2,
                stride: 2,
            },
            LayerSpec::Conv2d {
                in_channels: 1,
                out_channels: 2,
                kernel: 5,
                stride: 1,
                padding: 0,
            },
            LayerSpec::Relu,
            LayerSpec::AvgPool2d {
                kernel: 2,
                stride: 2,
            },
            LayerSpec::Flatten,
            LayerSpec::Linear {
                in_features: 50,
                out_features: 10,
            },
        ],
    }
}

pub fn weights_of(spec: &ModelSpec) -> usize {
    sphinx_nn::model::Model::zeros(spec.clone())
        .unwrap()
        .param_layers()
        .map(|p| p.weight().len())
        .sum()
}

pub fn data(train: usize, test: usize) -> (Dataset, Dataset) {
    let split = bundled_mnist_sample().unwrap();
    (split.train.head(train), split.test.head(test))
}

pub fn dp_config(n: usize, batch: f64, sigma: f64, clip: f64) -> DpSgdConfig {
    DpSgdConfig {
        clip_norm: ClipNorm::new(clip).unwrap(),
        noise_multiplier: NoiseMultiplier::new(sigma).unwrap(),
        sample_rate: SampleRate::new(batch / n as f64).unwrap(),
        dataset_size: n,
    }
}

pub fn budget(epsilon: f64) -> PrivacyBudget {
    PrivacyBudget {
        epsilon: Epsilon::new(epsilon).unwrap(),
        delta: Delta::new(1e-5).unwrap(),
    }
}

pub const INIT_SEED: u64 = 11;
pub const BIAS_INIT: f32 = 0.01;

/// An encrypted session and its plaintext reference, sharing the DP seed.
pub fn pair(
    spec: &ModelSpec,
    train: &Dataset,
    cfg: DpSgdConfig,
    lr: f32,
    dp_seed: u64,
    epsilon: f64,
) -> (Session, ReferenceTrainer) {
    pair_averaged(spec, train, cfg, lr, dp_seed, epsilon, 0.0)
}

/// [`pair`] with the server and the reference keeping the average `W̄` with `decay`.
pub fn pair_averaged(
    spec: &ModelSpec,
    train: &Dataset,
    cfg: DpSgdConfig,
    lr: f32,
    dp_seed: u64,
    epsilon: f64,
    decay: f32,
) -> (Session, ReferenceTrainer) {
    let dim = weights_of(spec);
    let params = build_training_parameters().unwrap();
    let (client, setup) = Client::new(
        params,
        spec.clone(),
        train.clone(),
        DpSgdAggregator::seeded(dim, cfg, dp_seed).unwrap(),
        ClientConfig {
            learning_rate: lr,
            init_seed: INIT_SEED,
            bias_init: BIAS_INIT,
            weight_average: decay,
            budget: budget(epsilon),
        },
        ChaCha20Rng::seed_from_u64(dp_seed + 1),
    )
    .unwrap();
    let session =
        Session::new(client, setup, &mut ChaCha20Rng::seed_from_u64(dp_seed + 2)).unwrap();
    let reference = ReferenceTrainer::new(
        spec.clone(),
        INIT_SEED,
        BIAS_INIT,
        DpSgdAggregator::seeded(dim, cfg, dp_seed).unwrap(),
        lr,
    )
    .unwrap()
    .with_weight_average(WeightAverage { decay })
    .unwrap();
    (session, reference)
}
