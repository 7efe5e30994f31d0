//! The fused many-operand operations (`linear_combinations`, `plain_linear_combinations`,
//! `multiply_sum`) against the
//! composition of single operations, bit for bit, on a parameter set whose primes take
//! the lazily reduced kernels (≤ 42 bits) and on one whose primes take the reference path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sphinx_he::*;

mod common;
use common::protocol_params as small_primes;

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
    // Plaintext vectors: bit for bit the sum of single `mul_plain`s, absent ones skipped.
    let enc = Encoder::new(params);
    let top = params.max_level();
    let pts: Vec<Plaintext> = (0..2 * cts.len())
        .map(|_| {
            let v: Vec<f64> = (0..params.slots())
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            enc.encode(&v, eval.scalar_scale(top), top).unwrap()
        })
        .collect();
    let present: Vec<Option<&Plaintext>> = pts
        .iter()
        .enumerate()
        .map(|(i, p)| (i != 1).then_some(p))
        .collect();
    let many = eval.plain_linear_combinations(&refs, &present).unwrap();
    assert_eq!(many.len(), 2);
    for (row, got) in many.iter().enumerate() {
        let mut want: Option<Ciphertext> = None;
        for (ct, pt) in cts.iter().zip(&present[row * cts.len()..]) {
            let Some(pt) = pt else { continue };
            let term = eval.mul_plain(ct, pt).unwrap();
            match &mut want {
                None => want = Some(term),
                Some(w) => eval.add_assign(w, &term).unwrap(),
            }
        }
        assert!(same(got, &want.unwrap()), "plaintext row {row}");
    }
    // The sparse whole-layer form: the same sums from index pairs.
    let terms: Vec<Vec<(u32, u32)>> = vec![
        (0..cts.len() as u32).map(|i| (i, i)).collect(),
        vec![],
        vec![(5, 11), (0, 11), (5, 2)],
    ];
    let term_refs: Vec<&[(u32, u32)]> = terms.iter().map(Vec::as_slice).collect();
    let pt_refs: Vec<&Plaintext> = pts.iter().collect();
    let dots = eval
        .plain_dot_products(&refs, &pt_refs, &term_refs)
        .unwrap();
    for (t, got) in terms.iter().zip(&dots) {
        let Some(&(i0, k0)) = t.first() else {
            assert!(got.polys().iter().all(|p| p.data().iter().all(|&v| v == 0)));
            continue;
        };
        let mut want = eval
            .mul_plain(&cts[i0 as usize], &pts[k0 as usize])
            .unwrap();
        for &(i, k) in &t[1..] {
            let term = eval.mul_plain(&cts[i as usize], &pts[k as usize]).unwrap();
            eval.add_assign(&mut want, &term).unwrap();
        }
        assert!(same(got, &want));
    }
    assert!(matches!(
        eval.plain_dot_products(&refs, &pt_refs, &[&[(6, 0)]]),
        Err(HeError::LengthMismatch { .. })
    ));
    assert!(matches!(
        eval.plain_linear_combinations(&refs, &present[..5]),
        Err(HeError::LengthMismatch { .. })
    ));
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

#[test]
fn encoding_is_linear_in_the_coefficient_domain() {
    let params = small_primes();
    let enc = Encoder::new(&params);
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let (u, v): (Vec<f64>, Vec<f64>) = (0..params.slots())
        .map(|_| (rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)))
        .unzip();
    let (cu, cv) = (
        enc.to_coefficients(&u).unwrap(),
        enc.to_coefficients(&v).unwrap(),
    );
    let combined: Vec<f64> = cu.iter().zip(&cv).map(|(a, b)| 0.5 * a - 2.0 * b).collect();
    let top = params.max_level();
    let pt = enc
        .encode_coefficients(&combined, params.scale(), top)
        .unwrap();
    let direct: Vec<f64> = u.iter().zip(&v).map(|(a, b)| 0.5 * a - 2.0 * b).collect();
    let want = enc.encode(&direct, params.scale(), top).unwrap();
    let (got, want) = (enc.decode(&pt).unwrap(), enc.decode(&want).unwrap());
    let err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(err < 1e-6, "max slot difference {err}");
    assert!(matches!(
        enc.encode_coefficients(&combined[1..], params.scale(), top),
        Err(HeError::LengthMismatch { .. })
    ));
}
