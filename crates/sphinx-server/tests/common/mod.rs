//! A tiny model and data set shared by the network tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_dp::{
    ClipNorm, Delta, DpSgdAggregator, DpSgdConfig, Epsilon, NoiseMultiplier, PrivacyBudget,
    SampleRate,
};
use sphinx_he::Parameters;
use sphinx_nn::data::Dataset;
use sphinx_nn::layers::{LayerSpec, Shape};
use sphinx_nn::model::{Model, ModelSpec};
use sphinx_protocol::client::{Client, ClientConfig};
use sphinx_protocol::messages::ClientMessage;
use sphinx_protocol::wire::{AccountName, Token};
use sphinx_server::{Registration, ServerConfig, ServerHandle};

/// A 4 → 3 linear model on 20 samples (batch ≈ 5), fixed seeds.
pub fn client(seed: u64) -> (Client, ClientMessage, Arc<Parameters>) {
    let spec = ModelSpec {
        input: Shape::flat(4),
        layers: vec![LayerSpec::Linear {
            in_features: 4,
            out_features: 3,
        }],
    };
    let images = ndarray::Array2::from_shape_fn((20, 4), |(i, j)| ((i + j) % 3) as f32 / 2.0);
    let data = Dataset {
        images,
        labels: (0..20).map(|i| (i % 3) as u8).collect(),
        shape: Shape::flat(4),
        num_classes: 3,
    };
    let dp = DpSgdConfig {
        clip_norm: ClipNorm::new(1.0).unwrap(),
        noise_multiplier: NoiseMultiplier::new(1.0).unwrap(),
        sample_rate: SampleRate::new(0.25).unwrap(),
        dataset_size: 20,
    };
    let config = ClientConfig {
        learning_rate: 0.1,
        init_seed: 1,
        bias_init: 0.01,
        weight_average: 0.0,
        budget: PrivacyBudget {
            epsilon: Epsilon::new(50.0).unwrap(),
            delta: Delta::new(1e-5).unwrap(),
        },
    };
    let params = sphinx_protocol::params::build_training_parameters().unwrap();
    let (client, setup) = Client::new(
        params.clone(),
        spec,
        data,
        DpSgdAggregator::seeded(12, dp, seed).unwrap(),
        config,
        ChaCha20Rng::seed_from_u64(seed + 1000),
    )
    .unwrap();
    (client, setup, params)
}

/// A server on a random loopback port over a fresh data directory with accounts `a`, `b`.
pub fn server() -> (ServerHandle, tempfile::TempDir, Vec<(AccountName, Token)>) {
    server_with(sphinx_server::Limits::default())
}

/// [`server`] with the given limits.
pub fn server_with(
    limits: sphinx_server::Limits,
) -> (ServerHandle, tempfile::TempDir, Vec<(AccountName, Token)>) {
    let dir = tempfile::tempdir().unwrap();
    let accounts = ["a", "b"]
        .iter()
        .map(|n| {
            let name = AccountName::new(n).unwrap();
            let token = sphinx_server::add_account(dir.path(), &name).unwrap();
            (name, token)
        })
        .collect();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    config.registration = Registration::Closed;
    config.limits = limits;
    (ServerHandle::spawn(config).unwrap(), dir, accounts)
}

/// Largest absolute difference between two models' weights and biases.
pub fn max_diff(a: &Model, b: &Model) -> (f32, f32) {
    let (mut dw, mut db) = (0f32, 0f32);
    for (x, y) in a.layers().iter().zip(b.layers()) {
        if let (Some(p), Some(q)) = (x.as_param(), y.as_param()) {
            for (u, v) in p.weight().iter().zip(q.weight()) {
                dw = dw.max((u - v).abs());
            }
            for (u, v) in p.bias().iter().zip(q.bias()) {
                db = db.max((u - v).abs());
            }
        }
    }
    (dw, db)
}
