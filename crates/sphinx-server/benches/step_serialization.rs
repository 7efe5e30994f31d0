//! What the network path adds to a training step beyond framing and TLS: encoding and
//! decoding every message of one step (the in-process `Session` passes them by value).
//! mlp-30 on the bundled MNIST sample, expected batch 64, as `network_step`.
//!
//! Timed by the process's CPU clock (the work is single-threaded), comparable to the CPU
//! figures of `network_step` on a shared, loaded machine.
//!
//! `cargo bench -p sphinx-server --bench step_serialization`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::VecDeque;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_dp::{
    ClipNorm, Delta, DpSgdAggregator, DpSgdConfig, Epsilon, NoiseMultiplier, PrivacyBudget,
    SampleRate,
};
use sphinx_nn::data::bundled_mnist_sample;
use sphinx_nn::model::Model;
use sphinx_nn::presets::Preset;
use sphinx_protocol::client::{Client, ClientConfig};
use sphinx_protocol::messages::{ClientMessage, ServerMessage};
use sphinx_protocol::server::Server;

/// CPU time of this process (all threads) so far.
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn cpu_timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = process_cpu();
    for _ in 0..iters {
        f();
    }
    process_cpu() - start
}

fn bench(c: &mut Criterion) {
    let spec = "mlp-30".parse::<Preset>().unwrap().spec();
    let train = bundled_mnist_sample().unwrap().train;
    let n = train.len();
    let weights: usize = Model::zeros(spec.clone())
        .unwrap()
        .param_layers()
        .map(|p| p.weight().len())
        .sum();
    let dp = DpSgdConfig {
        clip_norm: ClipNorm::new(1.0).unwrap(),
        noise_multiplier: NoiseMultiplier::new(1.0).unwrap(),
        sample_rate: SampleRate::new(64.0 / n as f64).unwrap(),
        dataset_size: n,
    };
    let params = sphinx_protocol::params::build_training_parameters().unwrap();
    let (mut client, setup) = Client::new(
        params.clone(),
        spec,
        train,
        DpSgdAggregator::seeded(weights, dp, 1).unwrap(),
        ClientConfig {
            learning_rate: 0.1,
            init_seed: 1,
            bias_init: 0.01,
            weight_average: 0.0,
            budget: PrivacyBudget {
                epsilon: Epsilon::new(1e6).unwrap(),
                delta: Delta::new(1e-5).unwrap(),
            },
        },
        ChaCha20Rng::seed_from_u64(2),
    )
    .unwrap();
    let ClientMessage::Setup(setup) = setup else {
        panic!("not a setup")
    };
    let mut server = Server::new(*setup, &mut ChaCha20Rng::seed_from_u64(3)).unwrap();
    // One step's messages in both directions.
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let mut queue = VecDeque::from([client.start_step().unwrap()]);
    while let Some(msg) = queue.pop_front() {
        up.push(msg.clone());
        for reply in server.handle(msg).unwrap() {
            down.push(reply.clone());
            queue.extend(client.handle(reply).unwrap());
        }
        while let Some(reply) = server.poll().unwrap() {
            down.push(reply.clone());
            queue.extend(client.handle(reply).unwrap());
        }
    }
    let up_bytes: Vec<Vec<u8>> = up.iter().map(|m| m.encode(&params).unwrap()).collect();
    let down_bytes: Vec<Vec<u8>> = down.iter().map(|m| m.encode(&params).unwrap()).collect();
    let total: usize = up_bytes.iter().chain(&down_bytes).map(Vec::len).sum();
    eprintln!(
        "one step: {} messages, {:.1} MB",
        up.len() + down.len(),
        total as f64 / 1e6
    );

    let mut group = c.benchmark_group("step_messages_mlp30_batch64");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("encode_cpu", |b| {
        b.iter_custom(|iters| {
            cpu_timed(iters, || {
                for m in &up {
                    std::hint::black_box(m.encode(&params).unwrap());
                }
                for m in &down {
                    std::hint::black_box(m.encode(&params).unwrap());
                }
            })
        })
    });
    group.bench_function("decode_cpu", |b| {
        b.iter_custom(|iters| {
            cpu_timed(iters, || {
                for bytes in &up_bytes {
                    std::hint::black_box(
                        ClientMessage::decode(&params, bytes, bytes.len()).unwrap(),
                    );
                }
                for bytes in &down_bytes {
                    std::hint::black_box(
                        ServerMessage::decode(&params, bytes, bytes.len()).unwrap(),
                    );
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
