//! BFV: exactness mod t, flooding statistics, parameter refusal and mismatch errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sphinx_he::bfv::{Bfv, BfvParameters, BfvParametersLiteral};
use sphinx_he::serialization::{DEFAULT_SIZE_LIMIT, Serializable};
use sphinx_he::{
    Ciphertext, HeError, InvalidParametersReason, PublicKey, SecretKey, SecurityLevel,
};

struct Setup {
    params: Arc<BfvParameters>,
    bfv: Bfv,
    sk: SecretKey,
    pk: PublicKey,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let params = BfvParametersLiteral::delphi_n8192().build().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let sk = SecretKey::generate(params.rlwe(), &mut rng).unwrap();
        let pk = PublicKey::new(&sk, &mut rng).unwrap();
        Setup {
            bfv: Bfv::new(&params),
            params,
            sk,
            pk,
        }
    })
}

fn random_slots(rng: &mut ChaCha20Rng, n: usize, t: u64) -> Vec<u64> {
    (0..n).map(|_| rng.random_range(0..t)).collect()
}

fn mulmod(a: u64, b: u64, t: u64) -> u64 {
    (a as u128 * b as u128 % t as u128) as u64
}

fn max_log2(noise: &[f64]) -> f64 {
    noise.iter().fold(0.0f64, |m, x| m.max(x.abs())).log2()
}

#[test]
fn preset_is_secure_and_sized_for_flooding() {
    let s = setup();
    let t = s.params.t();
    assert_eq!(t % (2 * 8192), 1);
    assert_eq!(64 - t.leading_zeros(), 41);
    assert!(!s.params.rlwe().q_primes().contains(&t));
    assert_eq!(s.params.rlwe().total_bits(), 210);
    assert_eq!(s.params.rlwe().security(), SecurityLevel::Classical128);
    let b = s.params.noise_bounds();
    assert!(b.flooding_bits as f64 >= b.before_flooding + 40.0 + 13.0);
    assert!(b.after_flooding + 15.0 < b.decryption, "{b:?}");
}

#[test]
fn round_trip_pk_and_sk_is_exact() {
    let s = setup();
    let t = s.params.t();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for _ in 0..3 {
        let m = random_slots(&mut rng, 8192, t);
        let pt = s.bfv.encode(&m).unwrap();
        for ct in [
            s.bfv.encrypt_pk(&s.pk, &pt, &mut rng).unwrap(),
            s.bfv.encrypt_sk(&s.sk, &pt, &mut rng).unwrap(),
        ] {
            assert_eq!(
                s.bfv.decode(&s.bfv.decrypt(&s.sk, &ct).unwrap()).unwrap(),
                m
            );
            let noise = s.bfv.noise(&s.sk, &ct).unwrap();
            assert!(max_log2(&noise) <= s.params.noise_bounds().fresh);
        }
    }
    let v = [-3i64, 0, 5, -(t as i64 / 2)];
    let ct = s
        .bfv
        .encrypt_sk(&s.sk, &s.bfv.encode_i64(&v).unwrap(), &mut rng)
        .unwrap();
    let got = s
        .bfv
        .decode_i64(&s.bfv.decrypt(&s.sk, &ct).unwrap())
        .unwrap();
    assert_eq!(&got[..4], &v);
    assert!(got[4..].iter().all(|&x| x == 0));
}

#[test]
fn additive_operations_are_exact() {
    let s = setup();
    let t = s.params.t();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (a, b, c) = (
        random_slots(&mut rng, 8192, t),
        random_slots(&mut rng, 8192, t),
        random_slots(&mut rng, 8192, t),
    );
    let (pa, pb, pc) = (
        s.bfv.encode(&a).unwrap(),
        s.bfv.encode(&b).unwrap(),
        s.bfv.encode(&c).unwrap(),
    );
    let ca = s.bfv.encrypt_pk(&s.pk, &pa, &mut rng).unwrap();
    let cb = s.bfv.encrypt_sk(&s.sk, &pb, &mut rng).unwrap();
    let dec = |ct: &Ciphertext| s.bfv.decode(&s.bfv.decrypt(&s.sk, ct).unwrap()).unwrap();
    let sum = s.bfv.add(&ca, &cb).unwrap();
    let want: Vec<u64> = a.iter().zip(&b).map(|(x, y)| (x + y) % t).collect();
    assert_eq!(dec(&sum), want);
    let diff = s.bfv.sub_plain(&s.bfv.sub(&ca, &cb).unwrap(), &pc).unwrap();
    let want: Vec<u64> = (0..8192)
        .map(|i| (a[i] + 2 * t - b[i] - c[i]) % t)
        .collect();
    assert_eq!(dec(&diff), want);
    let plus = s.bfv.add_plain(&cb, &pc).unwrap();
    let want: Vec<u64> = b.iter().zip(&c).map(|(x, y)| (x + y) % t).collect();
    assert_eq!(dec(&plus), want);
}

#[test]
fn preprocessing_result_is_exact_after_flooding() {
    let s = setup();
    let t = s.params.t();
    let bounds = s.params.noise_bounds();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    for _ in 0..3 {
        let (r, w, m) = (
            random_slots(&mut rng, 8192, t),
            random_slots(&mut rng, 8192, t),
            random_slots(&mut rng, 8192, t),
        );
        let ct_r = s
            .bfv
            .encrypt_sk(&s.sk, &s.bfv.encode(&r).unwrap(), &mut rng)
            .unwrap();
        let prod = s.bfv.mul_plain(&ct_r, &s.bfv.encode(&w).unwrap()).unwrap();
        let masked = s.bfv.sub_plain(&prod, &s.bfv.encode(&m).unwrap()).unwrap();
        assert!(max_log2(&s.bfv.noise(&s.sk, &masked).unwrap()) <= bounds.before_flooding);
        let out = s.bfv.flood(&s.pk, &masked, &mut rng).unwrap();
        let got = s.bfv.decode(&s.bfv.decrypt(&s.sk, &out).unwrap()).unwrap();
        let want: Vec<u64> = (0..8192)
            .map(|i| (mulmod(w[i], r[i], t) + t - m[i]) % t)
            .collect();
        assert_eq!(got, want);
        let noise = max_log2(&s.bfv.noise(&s.sk, &out).unwrap());
        assert!(noise <= bounds.after_flooding, "{noise} > {bounds:?}");
        assert!(noise > bounds.flooding_bits as f64 - 1.0, "{noise}");
    }
}

fn mismatch<T>(r: Result<T, HeError>) -> bool {
    matches!(r, Err(HeError::ParamMismatch { .. }))
}

#[test]
fn preprocessing_messages_round_trip_the_wire_format() {
    let s = setup();
    let rlwe = s.params.rlwe();
    let t = s.params.t();
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let (r, w) = (
        random_slots(&mut rng, 8192, t),
        random_slots(&mut rng, 8192, t),
    );
    let ct_r = s
        .bfv
        .encrypt_sk(&s.sk, &s.bfv.encode(&r).unwrap(), &mut rng)
        .unwrap();
    let up = ct_r.to_bytes(rlwe).unwrap();
    let back = Ciphertext::from_bytes(rlwe, &up, DEFAULT_SIZE_LIMIT).unwrap();
    let out = s
        .bfv
        .flood(
            &s.pk,
            &s.bfv.mul_plain(&back, &s.bfv.encode(&w).unwrap()).unwrap(),
            &mut rng,
        )
        .unwrap();
    let down = out.to_bytes(rlwe).unwrap();
    let got = Ciphertext::from_bytes(rlwe, &down, DEFAULT_SIZE_LIMIT).unwrap();
    let want: Vec<u64> = (0..8192).map(|i| mulmod(w[i], r[i], t)).collect();
    assert_eq!(
        s.bfv.decode(&s.bfv.decrypt(&s.sk, &got).unwrap()).unwrap(),
        want
    );
    // The seeded upload is about half the download: one packed polynomial of 210 bits per
    // coefficient (~210 KiB) against two.
    let poly = 8192 * 210 / 8;
    assert!(up.len() >= poly && up.len() < poly + 1024, "{}", up.len());
    assert!(
        down.len() >= 2 * poly && down.len() < 2 * poly + 1024,
        "{}",
        down.len()
    );
}

/// Two-sample Kolmogorov–Smirnov statistic.
fn ks(a: &[f64], b: &[f64]) -> f64 {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            i += 1;
        } else {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

#[test]
fn flooded_noise_does_not_depend_on_w() {
    let s = setup();
    let t = s.params.t();
    let f = s.params.noise_bounds().flooding_bits as f64;
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let r = random_slots(&mut rng, 8192, t);
    let target = random_slots(&mut rng, 8192, t);
    let ct_r = s
        .bfv
        .encrypt_sk(&s.sk, &s.bfv.encode(&r).unwrap(), &mut rng)
        .unwrap();
    // W = 1 leaves noise near t (the mask carry); a random W makes it ~2^90. Masks give the same W r − s.
    let w_one = vec![1u64; 8192];
    let w_rand = random_slots(&mut rng, 8192, t);
    let mut pre = Vec::new();
    let mut post = Vec::new();
    for w in [&w_one, &w_rand] {
        let mask: Vec<u64> = (0..8192)
            .map(|i| (mulmod(w[i], r[i], t) + t - target[i]) % t)
            .collect();
        let prod = s.bfv.mul_plain(&ct_r, &s.bfv.encode(w).unwrap()).unwrap();
        let masked = s
            .bfv
            .sub_plain(&prod, &s.bfv.encode(&mask).unwrap())
            .unwrap();
        pre.push(s.bfv.noise(&s.sk, &masked).unwrap());
        let out = s.bfv.flood(&s.pk, &masked, &mut rng).unwrap();
        assert_eq!(
            s.bfv.decode(&s.bfv.decrypt(&s.sk, &out).unwrap()).unwrap(),
            target
        );
        let noise = s.bfv.noise(&s.sk, &out).unwrap();
        post.push(noise.iter().map(|x| x / f.exp2()).collect::<Vec<f64>>());
    }
    // Before flooding the noise reveals which W was used.
    let (lo, hi) = (max_log2(&pre[0]), max_log2(&pre[1]));
    assert!(hi - lo > 30.0, "{lo} vs {hi}");
    // After flooding both look uniform on [-1, 1): same moments and same distribution.
    for p in &post {
        let n = p.len() as f64;
        let mean = p.iter().sum::<f64>() / n;
        let var = p.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0 / 3.0).abs() < 0.02, "{var}");
        assert!(p.iter().all(|x| x.abs() <= 1.0 + 1e-9));
    }
    // KS critical value at α = 0.001 for two samples of 8192 is about 0.030.
    let d = ks(&post[0], &post[1]);
    assert!(d < 0.03, "KS statistic {d}");
}

#[test]
fn insecure_and_undersized_sets_are_refused() {
    let mut lit = BfvParametersLiteral::delphi_n8192();
    lit.q_bits.push(30);
    assert_eq!(
        lit.build().unwrap_err(),
        HeError::InsecureParameters {
            log_n: 13,
            total_bits: 240,
            max_bits: 218,
            security: SecurityLevel::Classical128,
        }
    );
    let mut lit = BfvParametersLiteral::delphi_n8192();
    lit.security = SecurityLevel::Classical192;
    assert!(matches!(
        lit.build(),
        Err(HeError::InsecureParameters { .. })
    ));
    let lit = BfvParametersLiteral {
        log_n: 16,
        ..BfvParametersLiteral::delphi_n8192()
    };
    assert!(matches!(
        lit.build(),
        Err(HeError::UnsupportedDegree { .. })
    ));
    // Secure but too small for flooding.
    let mut lit = BfvParametersLiteral::delphi_n8192();
    lit.q_bits = vec![60, 60, 60];
    assert!(matches!(
        lit.build(),
        Err(HeError::InvalidParameters {
            reason: InvalidParametersReason::FloodingBudget { .. }
        })
    ));
    let mut lit = BfvParametersLiteral::delphi_n8192();
    lit.t_bits = 10;
    assert!(matches!(
        lit.build(),
        Err(HeError::InvalidParameters {
            reason: InvalidParametersReason::PlaintextModulusBits(10)
        })
    ));
    // The toy level is the only way around the table.
    let toy = BfvParametersLiteral::insecure_for_tests(10, &[60, 60, 50], 30);
    assert!(toy.build().is_ok());
    let lit = BfvParametersLiteral {
        security: SecurityLevel::Classical128,
        ..toy
    };
    assert!(matches!(
        lit.build(),
        Err(HeError::InsecureParameters { .. })
    ));
}

#[test]
fn mismatches_are_errors() {
    let s = setup();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let t = s.params.t();
    assert!(matches!(
        s.bfv.encode(&[t]),
        Err(HeError::ValueOutOfRange { .. })
    ));
    assert!(matches!(
        s.bfv.encode(&vec![0; 8193]),
        Err(HeError::TooManyValues { .. })
    ));
    let pt = s.bfv.encode(&[1, 2, 3]).unwrap();
    let ct = s.bfv.encrypt_sk(&s.sk, &pt, &mut rng).unwrap();

    // Another set (different t, same ring): every operand is refused.
    let other_params = BfvParametersLiteral::insecure_for_tests(13, &[60, 60, 60, 30], 40)
        .build()
        .unwrap();
    assert_ne!(other_params.id(), s.params.id());
    let other = Bfv::new(&other_params);
    let osk = SecretKey::generate(other_params.rlwe(), &mut rng).unwrap();
    let opk = PublicKey::new(&osk, &mut rng).unwrap();
    let opt = other.encode(&[1]).unwrap();
    let oct = other.encrypt_sk(&osk, &opt, &mut rng).unwrap();
    assert!(mismatch(s.bfv.add(&ct, &oct)));
    assert!(mismatch(s.bfv.mul_plain(&ct, &opt)));
    assert!(mismatch(s.bfv.add_plain(&oct, &pt)));
    assert!(mismatch(s.bfv.decrypt(&s.sk, &oct)));
    assert!(mismatch(s.bfv.flood(&opk, &ct, &mut rng)));
    assert!(mismatch(s.bfv.encrypt_sk(&s.sk, &opt, &mut rng)));
    assert!(mismatch(s.bfv.decode(&opt)));

    // A ciphertext below the top level, or with a CKKS scale, or 3 parts.
    let rlwe = s.params.rlwe();
    let low = Ciphertext::from_parts(
        rlwe,
        ct.polys()
            .iter()
            .map(|p| {
                let mut p = p.clone();
                p.truncate(3);
                p
            })
            .collect(),
        2,
        1.0,
    )
    .unwrap();
    assert!(matches!(
        s.bfv.add(&ct, &low),
        Err(HeError::LevelMismatch { left: 3, right: 2 })
    ));
    assert!(matches!(
        s.bfv.mul_plain(&low, &pt),
        Err(HeError::InvalidLevel { level: 2, .. })
    ));
    let mut scaled = ct.clone();
    scaled.set_scale(2f64.powi(40)).unwrap();
    assert!(matches!(
        s.bfv.add_plain(&scaled, &pt),
        Err(HeError::ScaleMismatch { .. })
    ));
    let three = Ciphertext::from_parts(rlwe, vec![ct.polys()[0].clone(); 3], 3, 1.0).unwrap();
    assert!(matches!(
        s.bfv.decrypt(&s.sk, &three),
        Err(HeError::UnsupportedCiphertextSize { got: 3, .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn mul_plain_matches_plaintext_arithmetic(seed in any::<u64>(), len in 1usize..=8192) {
        let s = setup();
        let t = s.params.t();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let r = random_slots(&mut rng, len, t);
        let w = random_slots(&mut rng, len, t);
        let ct = s.bfv.encrypt_pk(&s.pk, &s.bfv.encode(&r).unwrap(), &mut rng).unwrap();
        let prod = s.bfv.mul_plain(&ct, &s.bfv.encode(&w).unwrap()).unwrap();
        let got = s.bfv.decode(&s.bfv.decrypt(&s.sk, &prod).unwrap()).unwrap();
        for i in 0..8192 {
            let want = if i < len { mulmod(w[i], r[i], t) } else { 0 };
            prop_assert_eq!(got[i], want);
        }
        let noise = max_log2(&s.bfv.noise(&s.sk, &prod).unwrap());
        prop_assert!(noise <= s.params.noise_bounds().mul_plain);
    }
}

#[test]
fn large_plaintext_modulus_is_exact_too() {
    // t ≥ 2^50 takes the 128-bit division path of decryption (toy ring, large Q).
    let params = BfvParametersLiteral::insecure_for_tests(12, &[60, 60, 60, 60], 55)
        .build()
        .unwrap();
    let bfv = Bfv::new(&params);
    let t = params.t();
    assert!(t > 1 << 54);
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let sk = SecretKey::generate(params.rlwe(), &mut rng).unwrap();
    let pk = PublicKey::new(&sk, &mut rng).unwrap();
    let (r, w, m) = (
        random_slots(&mut rng, 4096, t),
        random_slots(&mut rng, 4096, t),
        random_slots(&mut rng, 4096, t),
    );
    let ct = bfv
        .encrypt_pk(&pk, &bfv.encode(&r).unwrap(), &mut rng)
        .unwrap();
    let prod = bfv.mul_plain(&ct, &bfv.encode(&w).unwrap()).unwrap();
    let out = bfv
        .flood(
            &pk,
            &bfv.sub_plain(&prod, &bfv.encode(&m).unwrap()).unwrap(),
            &mut rng,
        )
        .unwrap();
    let want: Vec<u64> = (0..4096)
        .map(|i| (mulmod(w[i], r[i], t) + t - m[i]) % t)
        .collect();
    assert_eq!(bfv.decode(&bfv.decrypt(&sk, &out).unwrap()).unwrap(), want);
}
