//! Unit tests of the server's arithmetic. They hold a decryption key to build inputs, so
//! they live outside `server.rs`, whose source must never name one.
use super::*;
use rand::SeedableRng;

/// The blocked, split-residue combination equals the evaluator's modular one, for
/// mixed signs, zeros, and weights beyond the fast path (fallback).
#[test]
fn chunk_combinations_match_the_evaluator() {
    let params = sphinx_he::bfv::BfvParametersLiteral::insecure_for_tests(10, &[60, 60, 60], 37)
        .build()
        .unwrap();
    let bfv = Bfv::new(&params);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let sk = sphinx_he::SecretKey::generate(params.rlwe(), &mut rng).unwrap();
    let cts: Vec<Ciphertext> = (0..40)
        .map(|i| {
            bfv.encrypt_sk(&sk, &bfv.encode(&[i as u64, 7]).unwrap(), &mut rng)
                .unwrap()
        })
        .collect();
    let refs: Vec<&Ciphertext> = cts.iter().collect();
    let eval = Evaluator::new(params.rlwe());
    for big in [1i64, 1 << 21] {
        let terms: Vec<Vec<(u32, i64)>> = (0..5)
            .map(|o| {
                (0..40u32)
                    .filter(|q| (q + o) % 3 != 0)
                    .map(|q| (q, big * ((i64::from(q) * 37 + i64::from(o)) % 4001 - 2000)))
                    .collect()
            })
            .collect();
        let got = chunk_combinations(&eval, &refs, &terms).unwrap();
        for (ct, t) in got.iter().zip(&terms) {
            let (r, k): (Vec<&Ciphertext>, Vec<i64>) =
                t.iter().map(|&(q, k)| (refs[q as usize], k)).unzip();
            assert_eq!(ct, &eval.linear_combination_integer(&r, &k).unwrap());
        }
    }
}
