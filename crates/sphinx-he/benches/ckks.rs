//! Criterion benches of every CKKS primitive and of serialization, on SEAL's
//! N = 8192 set (moduli 60,40,40 + special 60, scale 2^40), single-threaded
//! unless rayon is told otherwise (`RAYON_NUM_THREADS=1` for comparisons).
//!
//! `cargo bench -p sphinx-he --bench ckks`; `sphinx bench ckks` measures the same
//! operations for the SEAL comparison table.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_he::serialization::{DEFAULT_SIZE_LIMIT, Serializable};
use sphinx_he::*;

fn primitives(c: &mut Criterion) {
    let params = ParametersLiteral::seal_n8192().build().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let sk = SecretKey::generate(&params, &mut rng).unwrap();
    let pk = PublicKey::new(&sk, &mut rng).unwrap();
    let rlk = RelinearizationKey::new(&sk, &mut rng).unwrap();
    let gk = GaloisKeys::new(&sk, &[1], false, &mut rng).unwrap();
    let encoder = Encoder::new(&params);
    let eval = Evaluator::new(&params);
    let top = params.max_level();
    let scale = params.scale();
    let xs: Vec<f64> = (0..params.slots())
        .map(|i| ((i as f64) * 0.01).sin())
        .collect();
    let pt = encoder.encode(&xs, scale, top).unwrap();
    let ct = pk.encrypt(&pt, &mut rng).unwrap();
    let ct3 = eval.multiply(&ct, &ct).unwrap();
    let relin = eval.relinearize(&ct3, &rlk).unwrap();
    let basis = params.q_basis(top).unwrap().clone();
    let coeff = ct.polys()[1].clone().into_coeff(&basis).unwrap();

    let mut g = c.benchmark_group("ckks_n8192");
    g.bench_function("encode", |b| {
        b.iter(|| encoder.encode(black_box(&xs), scale, top).unwrap())
    });
    g.bench_function("encrypt_pk", |b| {
        b.iter(|| pk.encrypt(black_box(&pt), &mut rng).unwrap())
    });
    g.bench_function("encrypt_sk", |b| {
        b.iter(|| sk.encrypt(black_box(&pt), &mut rng).unwrap())
    });
    g.bench_function("decrypt_decode", |b| {
        b.iter(|| {
            encoder
                .decode(&sk.decrypt(black_box(&ct)).unwrap())
                .unwrap()
        })
    });
    g.bench_function("add", |b| b.iter(|| eval.add(black_box(&ct), &ct).unwrap()));
    g.bench_function("mul_plain", |b| {
        b.iter(|| eval.mul_plain(black_box(&ct), &pt).unwrap())
    });
    g.bench_function("mul_scalar", |b| {
        b.iter(|| eval.mul_scalar(black_box(&ct), 0.75).unwrap())
    });
    g.bench_function("mul", |b| {
        b.iter(|| eval.multiply(black_box(&ct), &ct).unwrap())
    });
    g.bench_function("relinearize", |b| {
        b.iter(|| eval.relinearize(black_box(&ct3), &rlk).unwrap())
    });
    g.bench_function("rescale", |b| {
        b.iter(|| eval.rescale(black_box(&relin)).unwrap())
    });
    g.bench_function("mul_relin_rescale", |b| {
        b.iter(|| {
            eval.rescale(&eval.multiply_relin(black_box(&ct), &ct, &rlk).unwrap())
                .unwrap()
        })
    });
    g.bench_function("rotate", |b| {
        b.iter(|| eval.rotate(black_box(&ct), 1, &gk).unwrap())
    });
    g.bench_function("ntt_forward", |b| {
        b.iter_batched(
            || coeff.clone(),
            |p| p.into_ntt(&basis).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let seeded = sk.encrypt(&pt, &mut rng).unwrap();
    let full_bytes = ct.to_bytes(&params).unwrap();
    let seeded_bytes = seeded.to_bytes(&params).unwrap();
    let mut g = c.benchmark_group("serialization_n8192");
    g.bench_function("ciphertext_to_bytes", |b| {
        b.iter(|| black_box(&ct).to_bytes(&params).unwrap())
    });
    g.bench_function("ciphertext_from_bytes", |b| {
        b.iter(|| {
            Ciphertext::from_bytes(&params, black_box(&full_bytes), DEFAULT_SIZE_LIMIT).unwrap()
        })
    });
    g.bench_function("seeded_from_bytes", |b| {
        b.iter(|| {
            Ciphertext::from_bytes(&params, black_box(&seeded_bytes), DEFAULT_SIZE_LIMIT).unwrap()
        })
    });
    g.finish();
}

fn config() -> Criterion {
    // Short runs: the machine is shared; medians are stable at this length.
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = primitives }
criterion_main!(benches);
