//! The fused many-operand operations (`linear_combinations`, `multiply_sum`) against the
//! composition of single operations, bit for bit, on a parameter set whose primes take
//! the lazily reduced kernels (≤ 42 bits) and on one whose primes take the reference path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sphinx_he::*;

fn small_primes() -> Arc<Parameters> {
    ParametersLiteral {
        log_n: 12,
        q_bits: vec![41, 29],
        p_bits: vec![39],
        scale_bits: 29,
        security: SecurityLevel::Classical128,
    }
    .build()
    .unwrap()
}

fn fresh(
    params: &Arc<Parameters>,
    sk: &SecretKey,
    count: usize,
    rng: &mut ChaCha20Rng,
) -> Vec<Ciphertext> {
    let enc = Encoder::new(params);
    (0..count)
        .map(|_| {
            let v: Vec<f64> = (0..params.slots())
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let pt = enc.encode(&v, params.scale(), params.max_level()).unwrap();
            sk.encrypt(&pt, rng).unwrap()
        })
        .collect()
}

fn same(a: &Ciphertext, b: &Ciphertext) -> bool {
    a.size() == b.size()
        && a.level() == b.level()
        && (a.scale() - b.scale()).abs() <= 1e-9 * a.scale()
        && a.polys()
            .iter()
            .zip(b.polys())
            .all(|(x, y)| x.data() == y.data())
}

fn check(params: &Arc<Parameters>) {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let sk = SecretKey::generate(params, &mut rng).unwrap();
    let eval = Evaluator::new(params);
    let cts = fresh(params, &sk, 6, &mut rng);
    let refs: Vec<&Ciphertext> = cts.iter().collect();
    // Weights of both signs, zero, and the largest the split path takes (|k| < 2^31).
    let ks: Vec<i64> = (0..3 * cts.len())
        .map(|i| match i {
            0 => (1 << 31) - 1,
            1 => -(1 << 31) + 1,
            2 => 0,
            _ => rng.random_range(-(1i64 << 40)..(1 << 40)) >> rng.random_range(0..40),
        })
        .collect();
    let many = eval.linear_combinations_integer(&refs, &ks).unwrap();
    assert_eq!(many.len(), 3);
    for (row, got) in many.iter().enumerate() {
        let mut want = eval.mul_integer(&cts[0], ks[row * cts.len()]).unwrap();
        for (ct, &k) in cts.iter().zip(&ks[row * cts.len()..]).skip(1) {
            eval.add_assign(&mut want, &eval.mul_integer(ct, k).unwrap())
                .unwrap();
        }
        assert!(same(got, &want), "row {row}");
    }
    let pairs: Vec<(&Ciphertext, &Ciphertext)> = cts.iter().zip(cts.iter().rev()).collect();
    let got = eval.multiply_sum(&pairs).unwrap();
    let mut want = eval.multiply(pairs[0].0, pairs[0].1).unwrap();
    for (a, b) in &pairs[1..] {
        eval.add_assign(&mut want, &eval.multiply(a, b).unwrap())
            .unwrap();
    }
    assert!(same(&got, &want));
    assert!(matches!(
        eval.multiply_sum(&[]),
        Err(HeError::LengthMismatch { .. })
    ));
    assert!(matches!(
        eval.linear_combinations_integer(&refs, &ks[..5]),
        Err(HeError::LengthMismatch { .. })
    ));
}

#[test]
fn fused_operations_match_their_compositions_on_small_primes() {
    check(&small_primes());
}

#[test]
fn fused_operations_match_their_compositions_on_large_primes() {
    check(&ParametersLiteral::seal_n8192().build().unwrap());
}
