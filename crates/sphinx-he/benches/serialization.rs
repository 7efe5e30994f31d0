//! Criterion benches of ciphertext serialization throughput at the training protocol's
//! parameters (N = 4096, q = 41 + 29 bits, P = 39 bits, scale 2^29): the objects that
//! dominate a training step's traffic. Throughput is in bytes of the encoding.
//!
//! Timed by the calling thread's CPU clock (every case is single-threaded), so that other
//! load on a shared machine inflates the figures less than wall time would.
//!
//! `cargo bench -p sphinx-he --bench serialization`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Criterion's `iter_custom` body: `iters` calls of `f`, timed by the thread's CPU clock.
fn cpu_iter<T>(iters: u64, mut f: impl FnMut() -> T) -> Duration {
    let start = thread_cpu();
    for _ in 0..iters {
        black_box(f());
    }
    thread_cpu() - start
}

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_he::serialization::{CompactCiphertext, DEFAULT_SIZE_LIMIT, Serializable};
use sphinx_he::*;

#[path = "../tests/common/mod.rs"]
mod common;
use common::protocol_params;

fn serialization(c: &mut Criterion) {
    let params = protocol_params();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let sk = SecretKey::generate(&params, &mut rng).unwrap();
    let eval = Evaluator::new(&params);
    let xs: Vec<f64> = (0..params.slots())
        .map(|i| ((i as f64) * 0.01).sin())
        .collect();
    let pt = Encoder::new(&params)
        .encode(&xs, params.scale(), params.max_level())
        .unwrap();
    // What the client uploads: a fresh seeded encryption at the top level.
    let seeded = sk.encrypt(&pt, &mut rng).unwrap();
    // What the server returns: a two-part product result rescaled to level 0.
    let mut result = eval.multiply(&seeded, &seeded).unwrap();
    let rlk = RelinearizationKey::new(&sk, &mut rng).unwrap();
    eval.relinearize_assign(&mut result, &rlk).unwrap();
    let level1 = result.clone();
    eval.rescale_assign(&mut result).unwrap();

    let cases = [("seeded_fresh", &seeded), ("level0_result", &result)];
    let mut g = c.benchmark_group("serialization_n4096");
    for (name, ct) in cases {
        let bytes = ct.to_bytes(&params).unwrap();
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("{name}_to_bytes"), |b| {
            b.iter_custom(|iters| cpu_iter(iters, || black_box(ct).to_bytes(&params).unwrap()))
        });
        g.bench_function(format!("{name}_from_bytes"), |b| {
            b.iter_custom(|iters| {
                cpu_iter(iters, || {
                    Ciphertext::from_bytes(&params, black_box(&bytes), DEFAULT_SIZE_LIMIT).unwrap()
                })
            })
        });
    }
    // The same result in its compact wire form at 2^34 (what the protocol sends): the
    // server's switch (inverse NTT, rounding, packing) and the client's lift (unpacking,
    // lifting, NTT).
    let compact = CompactCiphertext::from_ciphertext(&params, &result, 34).unwrap();
    let bytes = compact.to_bytes(&params).unwrap();
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("level0_compact34_switch_and_to_bytes", |b| {
        b.iter_custom(|iters| {
            cpu_iter(iters, || {
                CompactCiphertext::from_ciphertext(&params, black_box(&result), 34)
                    .unwrap()
                    .to_bytes(&params)
                    .unwrap()
            })
        })
    });
    g.bench_function("level0_compact34_to_bytes", |b| {
        b.iter_custom(|iters| cpu_iter(iters, || black_box(&compact).to_bytes(&params).unwrap()))
    });
    g.bench_function("level0_compact34_from_bytes_and_lift", |b| {
        b.iter_custom(|iters| {
            cpu_iter(iters, || {
                CompactCiphertext::from_bytes(&params, black_box(&bytes), DEFAULT_SIZE_LIMIT)
                    .unwrap()
                    .lift(&params)
                    .unwrap()
            })
        })
    });
    g.bench_function("level0_compact34_from_bytes", |b| {
        b.iter_custom(|iters| {
            cpu_iter(iters, || {
                CompactCiphertext::from_bytes(&params, black_box(&bytes), DEFAULT_SIZE_LIMIT)
                    .unwrap()
            })
        })
    });
    g.finish();

    // A result's whole path without the bytes: the server's rescale and switch, the
    // client's decryption and decoding; through the NTT domain and through coefficients.
    let encoder = Encoder::new(&params);
    let mut g = c.benchmark_group("result_path_n4096");
    g.bench_function("server_rescale_then_switch", |b| {
        b.iter_custom(|iters| {
            cpu_iter(iters, || {
                let r = eval.rescale(black_box(&level1)).unwrap();
                CompactCiphertext::from_ciphertext(&params, &r, 34).unwrap()
            })
        })
    });
    g.bench_function("server_rescale_to_compact", |b| {
        b.iter_custom(|iters| {
            cpu_iter(iters, || {
                eval.rescale_to_compact(black_box(&level1), 34).unwrap()
            })
        })
    });
    g.bench_function("client_lift_decrypt_decode", |b| {
        b.iter_custom(|iters| {
            cpu_iter(iters, || {
                let ct = black_box(&compact).lift(&params).unwrap();
                encoder.decode(&sk.decrypt(&ct).unwrap()).unwrap()
            })
        })
    });
    g.bench_function("client_decrypt_compact_decode", |b| {
        b.iter_custom(|iters| {
            cpu_iter(iters, || {
                let c = black_box(&compact);
                let m = sk.decrypt_compact(c).unwrap();
                encoder.decode_coeffs(&m, 0, c.scale()).unwrap()
            })
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

criterion_group! { name = benches; config = config(); targets = serialization }
criterion_main!(benches);
