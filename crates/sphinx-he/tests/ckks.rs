//! CKKS operations against the plaintext computation, with log2-precision thresholds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sphinx_he::*;

struct Ctx {
    params: Arc<Parameters>,
    sk: SecretKey,
    pk: PublicKey,
    rlk: RelinearizationKey,
    gk: GaloisKeys,
    enc: Encoder,
    eval: Evaluator,
}

fn ctx() -> &'static Ctx {
    static CTX: OnceLock<Ctx> = OnceLock::new();
    CTX.get_or_init(|| {
        let params = ParametersLiteral::seal_n8192().build().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let sk = SecretKey::generate(&params, &mut rng).unwrap();
        let pk = PublicKey::new(&sk, &mut rng).unwrap();
        let rlk = RelinearizationKey::new(&sk, &mut rng).unwrap();
        let mut steps = GaloisKeys::power_of_two_steps(&params);
        steps.push(5);
        let gk = GaloisKeys::new(&sk, &steps, true, &mut rng).unwrap();
        let enc = Encoder::new(&params);
        let eval = Evaluator::new(&params);
        Ctx {
            params,
            sk,
            pk,
            rlk,
            gk,
            enc,
            eval,
        }
    })
}

fn random_values(rng: &mut ChaCha20Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// `-log2` of the largest absolute error.
fn precision(expected: &[f64], got: &[f64]) -> f64 {
    let err = expected
        .iter()
        .zip(got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    -err.max(f64::MIN_POSITIVE).log2()
}

fn encrypt(c: &Ctx, v: &[f64], rng: &mut ChaCha20Rng) -> Ciphertext {
    let pt = c
        .enc
        .encode(v, c.params.scale(), c.params.max_level())
        .unwrap();
    c.pk.encrypt(&pt, rng).unwrap()
}

fn decrypt(c: &Ctx, ct: &Ciphertext) -> Vec<f64> {
    c.enc.decode(&c.sk.decrypt(ct).unwrap()).unwrap()
}

#[test]
fn encode_decode_and_encrypt_decrypt() {
    let c = ctx();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let x = random_values(&mut rng, c.params.slots());
    let pt = c.enc.encode(&x, c.params.scale(), 2).unwrap();
    assert!(precision(&x, &c.enc.decode(&pt).unwrap()) > 30.0);
    let pk_ct = c.pk.encrypt(&pt, &mut rng).unwrap();
    let p = precision(&x, &decrypt(c, &pk_ct));
    assert!(
        p >= c.params.precision_bits(0) && p >= 20.0,
        "pk precision {p}"
    );
    let sk_ct = c.sk.encrypt(&pt, &mut rng).unwrap();
    assert!(sk_ct.seed().is_some());
    assert!(precision(&x, &decrypt(c, &sk_ct)) >= 20.0);
    // The seed alone reproduces c1.
    let rebuilt = Ciphertext::from_seeded(
        &c.params,
        sk_ct.polys()[0].clone(),
        *sk_ct.seed().unwrap(),
        2,
        sk_ct.scale(),
    )
    .unwrap();
    assert_eq!(rebuilt, sk_ct);
    // A level-1 plaintext too.
    let pt1 = c.enc.encode(&x, c.params.scale(), 1).unwrap();
    assert!(precision(&x, &decrypt(c, &c.pk.encrypt(&pt1, &mut rng).unwrap())) >= 20.0);
}

#[test]
fn complex_slots_round_trip() {
    let c = ctx();
    let z: Vec<Complex> = (0..c.params.slots())
        .map(|i| Complex::new((i as f64).sin(), (i as f64).cos()))
        .collect();
    let pt = c.enc.encode_complex(&z, c.params.scale(), 2).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let out = c
        .enc
        .decode_complex(&c.sk.decrypt(&c.pk.encrypt(&pt, &mut rng).unwrap()).unwrap())
        .unwrap();
    let err = z
        .iter()
        .zip(&out)
        .map(|(a, b)| (a.re - b.re).abs().max((a.im - b.im).abs()))
        .fold(0.0, f64::max);
    assert!(-err.log2() >= 20.0);
}

#[test]
fn additive_operations() {
    let c = ctx();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let n = c.params.slots();
    let (x, y) = (random_values(&mut rng, n), random_values(&mut rng, n));
    let (cx, cy) = (encrypt(c, &x, &mut rng), encrypt(c, &y, &mut rng));
    let e = &c.eval;
    let sum: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
    let diff: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a - b).collect();
    assert!(precision(&sum, &decrypt(c, &e.add(&cx, &cy).unwrap())) >= 20.0);
    assert!(precision(&diff, &decrypt(c, &e.sub(&cx, &cy).unwrap())) >= 20.0);
    let neg: Vec<f64> = x.iter().map(|a| -a).collect();
    assert!(precision(&neg, &decrypt(c, &e.negate(&cx).unwrap())) >= 20.0);
    let py = c.enc.encode(&y, cx.scale(), cx.level()).unwrap();
    assert!(precision(&sum, &decrypt(c, &e.add_plain(&cx, &py).unwrap())) >= 20.0);
    assert!(precision(&diff, &decrypt(c, &e.sub_plain(&cx, &py).unwrap())) >= 20.0);
    let plus: Vec<f64> = x.iter().map(|a| a + 0.75).collect();
    assert!(precision(&plus, &decrypt(c, &e.add_scalar(&cx, 0.75).unwrap())) >= 20.0);
    let mut acc = cx.clone();
    e.add_assign(&mut acc, &cy).unwrap();
    e.sub_assign(&mut acc, &cy).unwrap();
    assert!(precision(&x, &decrypt(c, &acc)) >= 20.0);
}

#[test]
fn multiplicative_operations() {
    let c = ctx();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let n = c.params.slots();
    let (x, y) = (random_values(&mut rng, n), random_values(&mut rng, n));
    let (cx, cy) = (encrypt(c, &x, &mut rng), encrypt(c, &y, &mut rng));
    let e = &c.eval;
    let prod: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a * b).collect();

    let py = c.enc.encode(&y, c.params.scale(), cx.level()).unwrap();
    let r = e.rescale(&e.mul_plain(&cx, &py).unwrap()).unwrap();
    assert_eq!(r.level(), 1);
    assert!(precision(&prod, &decrypt(c, &r)) >= 20.0);

    let three = e.multiply(&cx, &cy).unwrap();
    assert_eq!(three.size(), 3);
    let p3 = precision(&prod, &decrypt(c, &e.rescale(&three).unwrap()));
    assert!(
        p3 >= 18.0,
        "3-part decrypt {p3}: rounding times s² dominates"
    );
    let relin = e
        .rescale(&e.multiply_relin(&cx, &cy, &c.rlk).unwrap())
        .unwrap();
    assert_eq!(relin.size(), 2);
    assert!(precision(&prod, &decrypt(c, &relin)) >= 20.0);

    // Depth 2: (x·y)·x.
    let cx1 = e.drop_to_level(&cx, 1).unwrap();
    let d2 = e
        .rescale(&e.multiply_relin(&relin, &cx1, &c.rlk).unwrap())
        .unwrap();
    let want: Vec<f64> = prod.iter().zip(&x).map(|(a, b)| a * b).collect();
    assert_eq!(d2.level(), 0);
    let p2 = precision(&want, &decrypt(c, &d2));
    println!(
        "depth 2 precision {p2:.1} bits, estimate {:.1}",
        c.params.precision_bits(2)
    );
    assert!(p2 >= c.params.precision_bits(2), "{p2}");

    let times3: Vec<f64> = x.iter().map(|a| -3.0 * a).collect();
    let k = e.mul_integer(&cx, -3).unwrap();
    assert_eq!((k.level(), k.scale()), (cx.level(), cx.scale()));
    assert!(precision(&times3, &decrypt(c, &k)) >= 20.0);

    let scaled: Vec<f64> = x.iter().map(|a| 0.3 * a).collect();
    let s = e.rescale(&e.mul_scalar(&cx, 0.3).unwrap()).unwrap();
    assert!(
        (s.scale() - cx.scale()).abs() < 1e-6,
        "rescale restores the scale exactly"
    );
    assert!(precision(&scaled, &decrypt(c, &s)) >= 20.0);
}

#[test]
fn rotations_conjugation_and_sums() {
    let c = ctx();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let n = c.params.slots();
    let x = random_values(&mut rng, n);
    let cx = encrypt(c, &x, &mut rng);
    let e = &c.eval;
    for steps in [1i64, -1, 5, 3, 100, -7, 4095] {
        let r = e.rotate(&cx, steps, &c.gk).unwrap();
        let want: Vec<f64> = (0..n)
            .map(|i| x[(i as i64 + steps).rem_euclid(n as i64) as usize])
            .collect();
        let p = precision(&want, &decrypt(c, &r));
        assert!(p >= 20.0, "rotate {steps}: {p}");
    }
    let z: Vec<Complex> = (0..n).map(|i| Complex::new(x[i], x[(i + 1) % n])).collect();
    let cz =
        c.pk.encrypt(
            &c.enc.encode_complex(&z, c.params.scale(), 2).unwrap(),
            &mut rng,
        )
        .unwrap();
    let conj = c
        .enc
        .decode_complex(&c.sk.decrypt(&e.conjugate(&cz, &c.gk).unwrap()).unwrap())
        .unwrap();
    let err = z
        .iter()
        .zip(&conj)
        .map(|(a, b)| (a.re - b.re).abs().max((a.im + b.im).abs()))
        .fold(0.0, f64::max);
    assert!(-err.log2() >= 20.0);
    let total: f64 = x.iter().sum();
    let s = decrypt(c, &e.sum_slots(&cx, &c.gk).unwrap());
    assert!(precision(&vec![total; n], &s) >= 14.0, "sum of 4096 slots");
}

#[test]
fn mismatches_are_errors_not_panics() {
    let c = ctx();
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let x = random_values(&mut rng, 8);
    let cx = encrypt(c, &x, &mut rng);
    let e = &c.eval;
    let low = e.drop_to_level(&cx, 1).unwrap();
    assert!(matches!(
        e.add(&cx, &low),
        Err(HeError::LevelMismatch { left: 2, right: 1 })
    ));
    let sq = e.multiply(&cx, &cx).unwrap();
    assert!(matches!(
        e.add(&cx, &sq),
        Err(HeError::ScaleMismatch { .. })
    ));
    assert!(matches!(
        e.multiply(&sq, &sq),
        Err(HeError::UnsupportedCiphertextSize { .. })
    ));
    let bottom = e.drop_to_level(&cx, 0).unwrap();
    assert!(matches!(
        e.rescale(&bottom),
        Err(HeError::InvalidLevel { .. })
    ));
    assert!(matches!(
        e.rotate(&cx, 4096, &c.gk),
        Err(HeError::InvalidRotation { .. })
    ));
    assert!(matches!(
        e.rotate(&cx, i64::MIN, &c.gk),
        Err(HeError::InvalidRotation { .. })
    ));
    let only_left = GaloisKeys::new(&c.sk, &[1], false, &mut rng).unwrap();
    assert!(matches!(
        e.rotate(&cx, 3, &only_left),
        Err(HeError::MissingGaloisKey { .. })
    ));
    assert!(e.rotate(&cx, 1, &only_left).is_ok());
    let other = ParametersLiteral::insecure_for_tests(12, &[50, 40, 40], &[50], 40)
        .build()
        .unwrap();
    let other_eval = Evaluator::new(&other);
    assert!(matches!(
        other_eval.add(&cx, &cx),
        Err(HeError::ParamMismatch { .. })
    ));
    let other_enc = Encoder::new(&other);
    let pt = other_enc.encode(&x, other.scale(), 2).unwrap();
    assert!(matches!(
        e.mul_plain(&cx, &pt),
        Err(HeError::ParamMismatch { .. })
    ));
    assert!(matches!(
        c.pk.encrypt(&pt, &mut rng),
        Err(HeError::ParamMismatch { .. })
    ));
    assert!(matches!(
        other_eval.negate(&cx),
        Err(HeError::ParamMismatch { .. })
    ));
    assert!(matches!(
        c.enc.encode(&vec![0.0; 5000], 1e12, 2),
        Err(HeError::TooManyValues { .. })
    ));
    assert!(matches!(
        c.enc.encode(&[1e10], 2f64.powi(60), 2),
        Err(HeError::EncodingOverflow { .. })
    ));
    assert!(matches!(
        c.enc.encode(&[1.0], 1.0, 3),
        Err(HeError::InvalidLevel { .. })
    ));
    let no_conj = GaloisKeys::new(&c.sk, &[1], false, &mut rng).unwrap();
    assert!(matches!(
        e.conjugate(&cx, &no_conj),
        Err(HeError::MissingGaloisKey { .. })
    ));
    assert!(format!("{:?}", c.sk).contains("redacted"));
}

#[test]
fn seeded_ciphertexts_lose_the_seed_when_c1_changes() {
    let c = ctx();
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let pt = c.enc.encode(&[1.0, 2.0], c.params.scale(), 2).unwrap();
    let ct = c.sk.encrypt(&pt, &mut rng).unwrap();
    assert!(
        c.eval.add_plain(&ct, &pt).unwrap().seed().is_some(),
        "c1 untouched"
    );
    assert!(
        c.eval.drop_to_level(&ct, 0).unwrap().seed().is_some(),
        "prefix of the expansion"
    );
    assert!(c.eval.add(&ct, &ct).unwrap().seed().is_none());
    assert!(c.eval.mul_integer(&ct, 2).unwrap().seed().is_none());
}

#[test]
fn batch_operations_run_in_parallel() {
    let c = ctx();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let cts: Vec<Ciphertext> = (0..4).map(|i| encrypt(c, &[i as f64], &mut rng)).collect();
    let out = c.eval.par_map(&cts, |e, ct| e.mul_integer(ct, 2)).unwrap();
    for (i, ct) in out.iter().enumerate() {
        assert!((decrypt(c, ct)[0] - 2.0 * i as f64).abs() < 1e-5);
    }
}

#[test]
fn several_special_primes_and_no_special_prime() {
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let params = ParametersLiteral::insecure_for_tests(12, &[55, 40, 40], &[45, 45], 40)
        .build()
        .unwrap();
    let sk = SecretKey::generate(&params, &mut rng).unwrap();
    let pk = PublicKey::new(&sk, &mut rng).unwrap();
    let rlk = RelinearizationKey::new(&sk, &mut rng).unwrap();
    let gk = GaloisKeys::new(&sk, &[3], false, &mut rng).unwrap();
    let (enc, e) = (Encoder::new(&params), Evaluator::new(&params));
    let x = random_values(&mut rng, params.slots());
    let ct = pk
        .encrypt(&enc.encode(&x, params.scale(), 2).unwrap(), &mut rng)
        .unwrap();
    let dec = |c: &Ciphertext| enc.decode(&sk.decrypt(c).unwrap()).unwrap();
    assert!(precision(&x, &dec(&ct)) >= 20.0);
    let sq: Vec<f64> = x.iter().map(|a| a * a).collect();
    let r = e
        .rescale(&e.multiply_relin(&ct, &ct, &rlk).unwrap())
        .unwrap();
    assert!(precision(&sq, &dec(&r)) >= 20.0);
    let rot: Vec<f64> = (0..x.len()).map(|i| x[(i + 3) % x.len()]).collect();
    assert!(precision(&rot, &dec(&e.rotate(&ct, 3, &gk).unwrap())) >= 20.0);

    // Without special primes: encryption and the 3-part product work, key switching refuses.
    let params = ParametersLiteral::insecure_for_tests(11, &[54], &[], 24)
        .build()
        .unwrap();
    let sk = SecretKey::generate(&params, &mut rng).unwrap();
    let pk = PublicKey::new(&sk, &mut rng).unwrap();
    let (enc, e) = (Encoder::new(&params), Evaluator::new(&params));
    let x = random_values(&mut rng, params.slots());
    let ct = pk
        .encrypt(&enc.encode(&x, params.scale(), 0).unwrap(), &mut rng)
        .unwrap();
    let out = enc
        .decode(&sk.decrypt(&e.multiply(&ct, &ct).unwrap()).unwrap())
        .unwrap();
    assert!(
        precision(&sq_of(&x), &out) >= 7.0,
        "scale 2^48 within a 54-bit modulus"
    );
    assert!(matches!(
        RelinearizationKey::new(&sk, &mut rng),
        Err(HeError::NoSpecialPrimes)
    ));
}

fn sq_of(x: &[f64]) -> Vec<f64> {
    x.iter().map(|a| a * a).collect()
}

#[test]
fn linear_combinations_match_plaintext() {
    let c = ctx();
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let n = c.params.slots();
    let xs: Vec<Vec<f64>> = (0..5).map(|_| random_values(&mut rng, n)).collect();
    let cts: Vec<Ciphertext> = xs.iter().map(|x| encrypt(c, x, &mut rng)).collect();
    let refs: Vec<&Ciphertext> = cts.iter().collect();
    let w = [0.5, -1.25, 0.0, 2.0, 0.125];
    let want: Vec<f64> = (0..n)
        .map(|j| xs.iter().zip(&w).map(|(x, w)| w * x[j]).sum())
        .collect();
    let out = c
        .eval
        .rescale(&c.eval.linear_combination(&refs, &w).unwrap())
        .unwrap();
    assert!((out.scale() - cts[0].scale()).abs() < 1e-6);
    assert!(precision(&want, &decrypt(c, &out)) >= 20.0);
    let k = [3i64, -1, 0, 2, 7];
    let want: Vec<f64> = (0..n)
        .map(|j| xs.iter().zip(&k).map(|(x, &k)| k as f64 * x[j]).sum())
        .collect();
    let out = c.eval.linear_combination_integer(&refs, &k).unwrap();
    assert_eq!(out.level(), cts[0].level());
    assert!(precision(&want, &decrypt(c, &out)) >= 20.0);
    assert!(matches!(
        c.eval.linear_combination(&refs, &w[..2]),
        Err(HeError::LengthMismatch { .. })
    ));
    assert!(matches!(
        c.eval.linear_combination(&[], &[]),
        Err(HeError::LengthMismatch { .. })
    ));
}

#[test]
fn huge_values_decode_through_the_exact_crt_path() {
    // Coefficients near 2^125 leave the 128-bit fast path of decoding.
    let c = ctx();
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let v = 7.0e6; // 7e6 · 2^40 ≈ 2^62.7: a constant polynomial; squared ≈ 2^125.4
    let pt = c
        .enc
        .encode(&vec![v; c.params.slots()], c.params.scale(), 2)
        .unwrap();
    let ct = c.pk.encrypt(&pt, &mut rng).unwrap();
    let prod = c.eval.mul_plain(&ct, &pt).unwrap();
    let out = decrypt(c, &prod);
    let rel = out
        .iter()
        .map(|x| (x / (v * v) - 1.0).abs())
        .fold(0.0, f64::max);
    assert!(rel < 1e-9, "relative error {rel}");
}

#[test]
fn preset_16384_reaches_depth_6_with_estimated_precision() {
    let params = ParametersLiteral::seal_n16384().build().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let sk = SecretKey::generate(&params, &mut rng).unwrap();
    let pk = PublicKey::new(&sk, &mut rng).unwrap();
    let rlk = RelinearizationKey::new(&sk, &mut rng).unwrap();
    let (enc, e) = (Encoder::new(&params), Evaluator::new(&params));
    let n = params.slots();
    let mut want = vec![1.0; n];
    let mut acc: Option<Ciphertext> = None;
    for _ in 0..7 {
        let x: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        want.iter_mut().zip(&x).for_each(|(w, v)| *w *= v);
        let level = acc.as_ref().map_or(params.max_level(), Ciphertext::level);
        let ct = pk
            .encrypt(&enc.encode(&x, params.scale(), level).unwrap(), &mut rng)
            .unwrap();
        if level == params.max_level() {
            // Q = 2^300 here: decoding takes the exact multi-word CRT path.
            let fresh = enc.decode(&sk.decrypt(&ct).unwrap()).unwrap();
            assert!(precision(&x, &fresh) >= 24.0);
        }
        acc = Some(match acc {
            None => ct,
            Some(a) => e
                .rescale(&e.multiply_relin(&a, &ct, &rlk).unwrap())
                .unwrap(),
        });
    }
    let acc = acc.unwrap();
    assert_eq!(acc.level(), 0);
    let p = precision(&want, &enc.decode(&sk.decrypt(&acc).unwrap()).unwrap());
    println!(
        "depth 6 precision {p:.1} bits, estimate {:.1}",
        params.precision_bits(6)
    );
    assert!(p >= params.precision_bits(6), "{p}");
}

#[test]
fn secret_key_round_trips_through_its_explicit_export() {
    let c = ctx();
    let coeffs = c.sk.expose_secret_coefficients().unwrap();
    assert_eq!(coeffs.len(), c.params.n());
    assert!(coeffs.iter().all(|x| (-1..=1).contains(x)));
    let sk2 = SecretKey::from_secret_coefficients(&c.params, &coeffs).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let x = random_values(&mut rng, 16);
    let ct = encrypt(c, &x, &mut rng);
    let out = c.enc.decode(&sk2.decrypt(&ct).unwrap()).unwrap();
    assert!(precision(&x, &out[..16]) >= 20.0);
    assert!(matches!(
        SecretKey::from_secret_coefficients(&c.params, &[2; 8192]),
        Err(HeError::InvalidSecretKey)
    ));
    assert!(matches!(
        SecretKey::from_secret_coefficients(&c.params, &[0; 10]),
        Err(HeError::InvalidSecretKey)
    ));
}

#[test]
fn suggested_set_without_key_switching_meets_its_estimate() {
    let s =
        params::suggest_without_key_switching(1, 30, 2048, SecurityLevel::Classical128).unwrap();
    let params = s.literal.build().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(15);
    let sk = SecretKey::generate(&params, &mut rng).unwrap();
    let pk = PublicKey::new(&sk, &mut rng).unwrap();
    let (enc, e) = (Encoder::new(&params), Evaluator::new(&params));
    let n = params.slots();
    let (x, y) = (random_values(&mut rng, n), random_values(&mut rng, n));
    let top = params.max_level();
    let cx = pk
        .encrypt(&enc.encode(&x, params.scale(), top).unwrap(), &mut rng)
        .unwrap();
    let cy = pk
        .encrypt(&enc.encode(&y, params.scale(), top).unwrap(), &mut rng)
        .unwrap();
    // The Sphinx server step: a 3-part product, rescaled, decrypted by the client with s and s².
    let prod = e.rescale(&e.multiply(&cx, &cy).unwrap()).unwrap();
    let want: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a * b).collect();
    let p = precision(&want, &enc.decode(&sk.decrypt(&prod).unwrap()).unwrap());
    assert!(p >= s.precision_bits, "{p} < {}", s.precision_bits);
}
