//! Criterion benchmarks: accountant queries, noise calibration, the DP-SGD
//! aggregation and the exact discrete Gaussian sampler.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

use sphinx_dp::{
    ClipNorm, Delta, DpEvent, DpSgdAggregator, DpSgdConfig, Epsilon, LatticeGaussian,
    NoiseMultiplier, RdpAccountant, SampleRate, calibrate_noise, epsilon_for, seeded_rng,
};

fn accountant(c: &mut Criterion) {
    let q = SampleRate::new(0.01).unwrap();
    let sigma = NoiseMultiplier::new(1.1).unwrap();
    let delta = Delta::new(1e-5).unwrap();
    c.bench_function(
        "epsilon_for q=0.01 sigma=1.1 T=1e4 (fresh curve, 183 orders)",
        |b| {
            b.iter(|| epsilon_for(black_box(q), black_box(sigma), 10_000, delta).unwrap());
        },
    );
    let mut acc = RdpAccountant::new();
    let step = DpEvent::poisson_gaussian(q, sigma);
    acc.compose(step, 1);
    c.bench_function("ledger check: epsilon_after one cached step", |b| {
        b.iter(|| acc.epsilon_after(black_box(step), 1, delta).unwrap());
    });
    let template = RdpAccountant::new();
    c.bench_function("calibrate_noise q=0.01 T=1e4 eps=2", |b| {
        b.iter(|| {
            calibrate_noise(&template, q, 10_000, Epsilon::new(2.0).unwrap(), delta).unwrap()
        });
    });
}

fn aggregation(c: &mut Criterion) {
    // The MNIST CNN of DESIGN.md §6 has about 26k weights; a Poisson batch of
    // expected size 64 from 60k examples.
    let dim = 26_000;
    let config = DpSgdConfig {
        clip_norm: ClipNorm::new(1.0).unwrap(),
        noise_multiplier: NoiseMultiplier::new(1.1).unwrap(),
        sample_rate: SampleRate::new(64.0 / 60_000.0).unwrap(),
        dataset_size: 60_000,
    };
    let mut agg = DpSgdAggregator::seeded(dim, config, 1).unwrap();
    let rows: Vec<f32> = (0..64 * dim)
        .map(|i| ((i % 17) as f32 - 8.0) * 1e-3)
        .collect();
    c.bench_function("aggregate 64 x 26k (clip, lattice sum, exact noise)", |b| {
        b.iter(|| agg.aggregate_rows(black_box(&rows)).unwrap());
    });
    let lg = LatticeGaussian::new(config.noise_multiplier, config.clip_norm).unwrap();
    let mut rng = seeded_rng(2);
    c.bench_function("discrete gaussian: 1 exact sample (s ~ 2^28)", |b| {
        b.iter(|| lg.sample_lattice(&mut rng));
    });
}

criterion_group!(benches, accountant, aggregation);
criterion_main!(benches);
