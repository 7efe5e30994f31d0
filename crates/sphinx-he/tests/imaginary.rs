//! Two real results in one ciphertext (`Evaluator::add_imaginary_assign`): the exact
//! coefficient form of the operation, and decryption of both halves against the plaintext
//! computation on the training protocol's path (level-1 products, relinearization,
//! `rescale_to_compact`, `decrypt_compact`, `decode_coeffs_complex`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sphinx_he::*;

mod common;

/// Keys and tools at the training protocol's parameters.
struct Ctx {
    params: Arc<Parameters>,
    sk: SecretKey,
    rlk: RelinearizationKey,
    encoder: Encoder,
    eval: Evaluator,
}

fn ctx() -> &'static Ctx {
    static CTX: OnceLock<Ctx> = OnceLock::new();
    CTX.get_or_init(|| {
        let params = common::protocol_params();
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let sk = SecretKey::generate(&params, &mut rng).unwrap();
        let rlk = RelinearizationKey::new(&sk, &mut rng).unwrap();
        Ctx {
            encoder: Encoder::new(&params),
            eval: Evaluator::new(&params),
            params,
            sk,
            rlk,
        }
    })
}

fn random_values(rng: &mut ChaCha20Rng, n: usize, range: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-range..range)).collect()
}

fn encrypt(c: &Ctx, values: &[f64], rng: &mut ChaCha20Rng) -> Ciphertext {
    let top = c.params.max_level();
    let pt = c.encoder.encode(values, c.params.scale(), top).unwrap();
    c.sk.encrypt(&pt, rng).unwrap()
}

/// The decrypted slots of a level-1 result after the protocol's rescale into a compact
/// ciphertext at `bits`.
fn decrypt_compact(c: &Ctx, level1: &Ciphertext, bits: u32) -> Vec<Complex> {
    let compact = c.eval.rescale_to_compact(level1, bits).unwrap();
    let coeffs = c.sk.decrypt_compact(&compact).unwrap();
    c.encoder
        .decode_coeffs_complex(&coeffs, 0, compact.scale())
        .unwrap()
}

#[test]
fn adding_an_imaginary_part_shifts_coefficients_by_half_the_ring() {
    // Known answer: X^{N/2}·b(X) mod X^N + 1 moves coefficient j to j + N/2 and the upper
    // half, negated, to the bottom; limb by limb, exactly.
    let c = ctx();
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let n = c.params.n();
    let x = encrypt(c, &random_values(&mut rng, 8, 1.0), &mut rng);
    let y = encrypt(c, &random_values(&mut rng, 8, 1.0), &mut rng);
    // Two- and three-part operands at the same scale Δ² (sizes may differ).
    let three = c.eval.multiply(&x, &y).unwrap();
    let pt = c
        .encoder
        .encode(&random_values(&mut rng, 8, 1.0), c.params.scale(), 1)
        .unwrap();
    let two = c.eval.mul_plain(&y, &pt).unwrap();
    for (a, b) in [(&x, &y), (&two, &three), (&three, &two)] {
        let mut packed = a.clone();
        c.eval.add_imaginary_assign(&mut packed, b).unwrap();
        assert_eq!(packed.size(), a.size().max(b.size()));
        let basis = c.params.q_basis(a.level()).unwrap();
        let coeffs = |ct: &Ciphertext, part: usize| match ct.polys().get(part) {
            Some(p) => p.clone().into_coeff(basis).unwrap().data().to_vec(),
            None => vec![0u64; n * basis.len()],
        };
        for part in 0..packed.size() {
            let (got, ac, bc) = (coeffs(&packed, part), coeffs(a, part), coeffs(b, part));
            for (limb, m) in basis.moduli().iter().enumerate() {
                let (al, bl, gl) = (
                    &ac[limb * n..][..n],
                    &bc[limb * n..][..n],
                    &got[limb * n..][..n],
                );
                for j in 0..n {
                    let shifted = if j >= n / 2 {
                        bl[j - n / 2]
                    } else {
                        m.neg(bl[j + n / 2])
                    };
                    assert_eq!(
                        gl[j],
                        m.add(al[j], shifted),
                        "part {part} limb {limb} coefficient {j}"
                    );
                }
            }
        }
    }
}

#[test]
fn operands_must_match() {
    let c = ctx();
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let x = encrypt(c, &[1.0], &mut rng);
    let low = c.eval.drop_to_level(&x, 0).unwrap();
    let mut a = x.clone();
    assert!(matches!(
        c.eval.add_imaginary_assign(&mut a, &low),
        Err(HeError::LevelMismatch { .. })
    ));
    let doubled = c.eval.mul_scalar(&x, 2.0).unwrap();
    assert!(matches!(
        c.eval.add_imaginary_assign(&mut a, &doubled),
        Err(HeError::ScaleMismatch { .. })
    ));
    // The failed calls left `a` as it was.
    assert_eq!(a, x);
}

/// Largest and RMS slot error of `got`'s real or imaginary parts against `want`.
fn errors(got: &[Complex], want: &[f64], imaginary: bool) -> (f64, f64) {
    let diffs: Vec<f64> = got
        .iter()
        .zip(want)
        .map(|(z, v)| (if imaginary { z.im } else { z.re } - v).abs())
        .collect();
    let max = diffs.iter().fold(0.0, |m: f64, d| m.max(*d));
    let rms = (diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len() as f64).sqrt();
    (max, rms)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Both halves of a packed result decrypt to their plaintext values, as precisely as
    /// each result sent alone.
    #[test]
    fn both_halves_decrypt_to_the_plaintext_results(seed in any::<u64>(), bits in 34u32..=36) {
        let c = ctx();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let slots = c.params.slots();
        let (x, y, w) = (
            random_values(&mut rng, slots, 40.0),
            random_values(&mut rng, slots, 40.0),
            random_values(&mut rng, slots, 1.0),
        );
        let (cx, cy) = (encrypt(c, &x, &mut rng), encrypt(c, &y, &mut rng));
        let times = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).collect::<Vec<_>>();
        // Plaintext products (forward outputs, Wᵀδ), packed at level 1 as the server does.
        let pw = c.encoder.encode(&w, c.params.q_primes()[1] as f64, 1).unwrap();
        let (px, py) = (c.eval.mul_plain(&cx, &pw).unwrap(), c.eval.mul_plain(&cy, &pw).unwrap());
        let mut plain = px.clone();
        c.eval.add_imaginary_assign(&mut plain, &py).unwrap();
        // Ciphertext products (per-sample gradients): packed before relinearization, so
        // the pair is key-switched once.
        let relin = |mut p: Ciphertext| {
            c.eval.relinearize_assign(&mut p, &c.rlk).unwrap();
            p
        };
        let (sx, sy) = (c.eval.multiply(&cx, &cx).unwrap(), c.eval.multiply(&cy, &cy).unwrap());
        let mut squares = sx.clone();
        c.eval.add_imaginary_assign(&mut squares, &sy).unwrap();
        let cases = [
            (plain, px, py, times(&x, &w), times(&y, &w)),
            (relin(squares), relin(sx), relin(sy), times(&x, &x), times(&y, &y)),
        ];
        for (packed, re_alone, im_alone, re, im) in &cases {
            let got = decrypt_compact(c, packed, bits);
            let ((max_re, rms_re), (max_im, rms_im)) = (errors(&got, re, false), errors(&got, im, true));
            let (_, alone_re) = errors(&decrypt_compact(c, re_alone, bits), re, false);
            let (_, alone_im) = errors(&decrypt_compact(c, im_alone, bits), im, false);
            // Each half carries its own error and the other's imaginary error: at most √2
            // times the RMS of a result sent alone, and less where the switch to 2^bits
            // (2^(21.4 - bits) RMS per slot, docs/protocol.md), which the pair shares,
            // dominates.
            let alone = alone_re.max(alone_im);
            prop_assert!(rms_re.max(rms_im) < 1.6 * alone, "packed {rms_re:.3e} {rms_im:.3e}, alone {alone:.3e}");
            prop_assert!(max_re.max(max_im) < 2f64.powf(25.0 - f64::from(bits)), "packed {max_re:.3e} {max_im:.3e}");
        }
    }
}
