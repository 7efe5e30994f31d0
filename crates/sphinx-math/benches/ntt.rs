//! Criterion benches of the negacyclic NTT at the training protocol's degree (N = 4096):
//! its 41-bit limb (tfhe-ntt's 64-bit plan) and its 29-bit limb (the 32-bit plan, with
//! the 64-bit plan on the same prime beside it for comparison), then each direction at SEAL's
//! N = 8192 on a 60-bit prime (tfhe-ntt's 64-bit plan) and a 40-bit one (the f64 transform).
//!
//! `cargo bench -p sphinx-math --bench ntt`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sphinx_math::{Modulus, ntt::NttPlan, primes::ntt_primes};

const N: usize = 4096;

fn transforms(c: &mut Criterion) {
    let mut g = c.benchmark_group("ntt N=4096");
    for bits in [41u32, 29] {
        let q = ntt_primes(&[bits], N).unwrap()[0];
        let plan = NttPlan::new(N, Modulus::new(q).unwrap()).unwrap();
        let mut a: Vec<u64> = (0..N as u64).map(|i| (i * 7_919) % q).collect();
        g.bench_function(format!("forward + inverse, {bits}-bit prime"), |b| {
            b.iter(|| {
                plan.forward(black_box(&mut a));
                plan.inverse(black_box(&mut a));
            });
        });
        if bits < 31 {
            let wide = tfhe_ntt::prime64::Plan::try_new(N, q).unwrap();
            g.bench_function(
                format!("forward + inverse, {bits}-bit prime, 64-bit plan"),
                |b| {
                    b.iter(|| {
                        wide.fwd(black_box(&mut a));
                        wide.inv(black_box(&mut a));
                        wide.normalize(&mut a);
                    });
                },
            );
        }
    }
    g.finish();
    let n = 8192;
    let mut g = c.benchmark_group("ntt N=8192");
    for bits in [60u32, 40] {
        let q = ntt_primes(&[bits], n).unwrap()[0];
        let plan = NttPlan::new(n, Modulus::new(q).unwrap()).unwrap();
        let mut a: Vec<u64> = (0..n as u64).map(|i| (i * 7_919) % q).collect();
        g.bench_function(format!("forward, {bits}-bit prime"), |b| {
            b.iter(|| plan.forward(black_box(&mut a)));
        });
        g.bench_function(format!("inverse, {bits}-bit prime"), |b| {
            b.iter(|| plan.inverse(black_box(&mut a)));
        });
    }
    g.finish();
}

criterion_group!(benches, transforms);
criterion_main!(benches);
