//! Criterion benches of the lazily reduced kernels against their per-product-reduction
//! references, at the training protocol's shapes (N = 4096, a 41-bit limb): a convolution
//! position (16 outputs × 25 inputs; packed: 6 outputs × 25 plaintext vectors) and a
//! per-sample gradient (64 ciphertext products).
//!
//! `cargo bench -p sphinx-math --bench lazy`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng, rngs::StdRng};
use sphinx_math::lazy::{
    TensorTerm, plain_dot_products, plain_matmul, plain_matmul_reference, scalar_matmul,
    scalar_matmul_reference, tensor_sum, tensor_sum_reference, tensor_sums_shared,
};
use sphinx_math::{Modulus, primes::ntt_primes};

const N: usize = 4096;

fn kernels(c: &mut Criterion) {
    let q = ntt_primes(&[41], N).unwrap()[0];
    let m = Modulus::new(q).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let mut vecs = |count: usize| -> Vec<Vec<u64>> {
        (0..count)
            .map(|_| (0..N).map(|_| rng.random_range(0..q)).collect())
            .collect()
    };
    let inputs = vecs(25);
    let xs: Vec<&[u64]> = inputs.iter().map(Vec::as_slice).collect();
    let ks: Vec<i64> = (0..16 * 25)
        .map(|i| (i as i64 * 7_919_113) % (1 << 28) - (1 << 27))
        .collect();
    let mut outs = vec![vec![0u64; N]; 16];
    let mut g = c.benchmark_group("lazy");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("scalar_matmul 16x25 N=4096", |b| {
        b.iter(|| {
            let mut o: Vec<&mut [u64]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
            scalar_matmul(&m, black_box(&xs), &ks, &mut o).unwrap();
        });
    });
    g.bench_function("scalar_matmul reference 16x25 N=4096", |b| {
        b.iter(|| {
            let mut o: Vec<&mut [u64]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
            scalar_matmul_reference(&m, black_box(&xs), &ks, &mut o);
        });
    });
    let plains = vecs(6 * 25);
    let ps: Vec<Option<&[u64]>> = plains.iter().map(|p| Some(p.as_slice())).collect();
    g.bench_function("plain_matmul 6x25 N=4096", |b| {
        b.iter(|| {
            let mut o: Vec<&mut [u64]> = outs[..6].iter_mut().map(Vec::as_mut_slice).collect();
            plain_matmul(&m, black_box(&xs), &ps, &mut o).unwrap();
        });
    });
    g.bench_function("plain_matmul reference 6x25 N=4096", |b| {
        b.iter(|| {
            let mut o: Vec<&mut [u64]> = outs[..6].iter_mut().map(Vec::as_mut_slice).collect();
            plain_matmul_reference(&m, black_box(&xs), &ps, &mut o);
        });
    });
    let data = vecs(4 * 64);
    let terms: Vec<TensorTerm<'_>> = data
        .chunks(4)
        .map(|c| [c[0].as_slice(), &c[1], &c[2], &c[3]])
        .collect();
    let (mut c0, mut c1, mut c2) = (vec![0; N], vec![0; N], vec![0; N]);
    g.bench_function("tensor_sum 64 terms N=4096", |b| {
        b.iter(|| tensor_sum(&m, black_box(&terms), [&mut c0, &mut c1, &mut c2]).unwrap());
    });
    g.bench_function("tensor_sum reference 64 terms N=4096", |b| {
        b.iter(|| tensor_sum_reference(&m, black_box(&terms), [&mut c0, &mut c1, &mut c2]));
    });
    g.finish();
}

criterion_group!(benches, kernels, conv_layer, shared_gradients);
criterion_main!(benches);

/// A convolution layer's packed products as the evaluator runs them, one limb, one thread:
/// 8 input channels of 12×12, 6 packed output groups of 8×8 positions, 5×5 windows (200
/// terms per output), in blocks of 32 coefficients, every block computing all outputs.
fn conv_layer(c: &mut Criterion) {
    const BLOCK: usize = 32;
    let (channels, side, out_side, groups) = (8usize, 12usize, 8usize, 6usize);
    let mut g = c.benchmark_group("plain_dot_products conv");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for bits in [41u32, 29] {
        let q = ntt_primes(&[bits], N).unwrap()[0];
        let m = Modulus::new(q).unwrap();
        let mut rng = StdRng::seed_from_u64(2);
        let mut vec = || -> Vec<u64> { (0..N).map(|_| rng.random_range(0..q)).collect() };
        let inputs: Vec<[Vec<u64>; 2]> = (0..channels * side * side)
            .map(|_| [vec(), vec()])
            .collect();
        let plains: Vec<Vec<u64>> = (0..groups * channels * 25).map(|_| vec()).collect();
        let terms: Vec<Vec<(u32, u32)>> = (0..groups)
            .flat_map(|gr| (0..out_side * out_side).map(move |pos| (gr, pos)))
            .map(|(gr, pos)| {
                let (y, x) = (pos / out_side, pos % out_side);
                let mut t = Vec::with_capacity(channels * 25);
                for ch in 0..channels {
                    for (dy, dx) in (0..5).flat_map(|dy| (0..5).map(move |dx| (dy, dx))) {
                        let input = ch * side * side + (y + dy) * side + x + dx;
                        let plain = (gr * channels + ch) * 25 + dy * 5 + dx;
                        t.push((input as u32, plain as u32));
                    }
                }
                t
            })
            .collect();
        let term_refs: Vec<&[(u32, u32)]> = terms.iter().map(Vec::as_slice).collect();
        let mut outs: Vec<[Vec<u64>; 2]> = terms.iter().map(|_| [vec![0; N], vec![0; N]]).collect();
        let macs = 2 * N * terms.iter().map(Vec::len).sum::<usize>();
        g.throughput(criterion::Throughput::Elements(macs as u64));
        g.bench_function(
            format!("{bits}-bit limb, {} outputs x 200 terms", terms.len()),
            |b| {
                b.iter(|| {
                    for start in (0..N).step_by(BLOCK) {
                        let r = start..start + BLOCK;
                        let xs: Vec<[&[u64]; 2]> = inputs
                            .iter()
                            .map(|[a, b]| [&a[r.clone()], &b[r.clone()]])
                            .collect();
                        let ps: Vec<&[u64]> = plains.iter().map(|p| &p[r.clone()]).collect();
                        let mut o: Vec<[&mut [u64]; 2]> = outs
                            .iter_mut()
                            .map(|[a, b]| [&mut a[r.clone()], &mut b[r.clone()]])
                            .collect();
                        plain_dot_products(&m, black_box(&xs), &ps, &term_refs, &mut o).unwrap();
                    }
                });
            },
        );
    }
    g.finish();
}

/// The per-sample weight gradients of one packed `δ` group of a convolution as the server
/// runs them, one limb, one thread: 8 weights sharing the 64 positions' `δ`, each meeting
/// the input its window reads there (8×8 positions of a 12×12 input channel).
fn shared_gradients(c: &mut Criterion) {
    let (positions, side, out_side, rows) = (64usize, 12usize, 8usize, 8usize);
    let mut g = c.benchmark_group("tensor_sums_shared conv");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for bits in [41u32, 29] {
        let q = ntt_primes(&[bits], N).unwrap()[0];
        let m = Modulus::new(q).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let mut vec = || -> Vec<u64> { (0..N).map(|_| rng.random_range(0..q)).collect() };
        let delta: Vec<[Vec<u64>; 2]> = (0..positions).map(|_| [vec(), vec()]).collect();
        let input: Vec<[Vec<u64>; 2]> = (0..side * side).map(|_| [vec(), vec()]).collect();
        let lhs: Vec<[&[u64]; 2]> = delta.iter().map(|[a, b]| [&a[..], &b[..]]).collect();
        let rhs: Vec<Vec<Option<[&[u64]; 2]>>> = (0..rows)
            .map(|w| {
                let (dy, dx) = (w / 5, w % 5);
                (0..positions)
                    .map(|pos| {
                        let (y, x) = (pos / out_side + dy, pos % out_side + dx);
                        let [a, b] = &input[y * side + x];
                        Some([&a[..], &b[..]])
                    })
                    .collect()
            })
            .collect();
        let mut outs: Vec<[Vec<u64>; 3]> = (0..rows)
            .map(|_| [vec![0; N], vec![0; N], vec![0; N]])
            .collect();
        g.throughput(criterion::Throughput::Elements(
            (rows * positions * N) as u64,
        ));
        g.bench_function(
            format!("{bits}-bit limb, {rows} weights x {positions} positions"),
            |b| {
                b.iter(|| {
                    let mut o: Vec<[&mut [u64]; 3]> = outs
                        .iter_mut()
                        .map(|[a, b, c]| [&mut a[..], &mut b[..], &mut c[..]])
                        .collect();
                    tensor_sums_shared(&m, black_box(&lhs), &rhs, &mut o).unwrap();
                });
            },
        );
    }
    g.finish();
}
