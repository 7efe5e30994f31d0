//! Criterion benches of the BFV preprocessing primitives on `delphi_n8192`
//! (N = 8192, Q = 60+60+60+30 bits, t ≈ 2^41), single ciphertexts, one thread.
//!
//! `cargo bench -p sphinx-he --bench bfv`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sphinx_he::bfv::{Bfv, BfvParametersLiteral};
use sphinx_he::{PublicKey, SecretKey};

fn primitives(c: &mut Criterion) {
    let params = BfvParametersLiteral::delphi_n8192().build().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let sk = SecretKey::generate(params.rlwe(), &mut rng).unwrap();
    let pk = PublicKey::new(&sk, &mut rng).unwrap();
    let bfv = Bfv::new(&params);
    let t = params.t();
    let mut slots = || -> Vec<u64> { (0..params.n()).map(|_| rng.random_range(0..t)).collect() };
    let (r, w, s) = (slots(), slots(), slots());
    let pr = bfv.encode(&r).unwrap();
    let pw = bfv.encode(&w).unwrap();
    let ps = bfv.encode(&s).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let ct = bfv.encrypt_sk(&sk, &pr, &mut rng).unwrap();
    let masked = bfv
        .sub_plain(&bfv.mul_plain(&ct, &pw).unwrap(), &ps)
        .unwrap();
    let flooded = bfv.flood(&pk, &masked, &mut rng).unwrap();

    let mut g = c.benchmark_group("bfv_n8192");
    // A fresh plaintext pays for lifting m(X) to Q (one NTT mod t, 4 NTTs over Q) once.
    g.bench_function("encode_then_mul_plain", |b| {
        b.iter(|| {
            bfv.mul_plain(&ct, &bfv.encode(black_box(&w)).unwrap())
                .unwrap()
        })
    });
    g.bench_function("encrypt_sk", |b| {
        b.iter(|| bfv.encrypt_sk(&sk, black_box(&pr), &mut rng).unwrap())
    });
    g.bench_function("encrypt_pk", |b| {
        b.iter(|| bfv.encrypt_pk(&pk, black_box(&pr), &mut rng).unwrap())
    });
    g.bench_function("mul_plain", |b| {
        b.iter(|| bfv.mul_plain(black_box(&ct), &pw).unwrap())
    });
    g.bench_function("sub_plain", |b| {
        b.iter(|| bfv.sub_plain(black_box(&ct), &ps).unwrap())
    });
    g.bench_function("flood", |b| {
        b.iter(|| bfv.flood(&pk, black_box(&masked), &mut rng).unwrap())
    });
    g.bench_function("decrypt_decode", |b| {
        b.iter(|| {
            bfv.decode(&bfv.decrypt(&sk, black_box(&flooded)).unwrap())
                .unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = primitives
}
criterion_main!(benches);
