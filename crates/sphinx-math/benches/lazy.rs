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
    TensorTerm, plain_matmul, plain_matmul_reference, scalar_matmul, scalar_matmul_reference,
    tensor_sum, tensor_sum_reference,
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

criterion_group!(benches, kernels);
criterion_main!(benches);
