//! Compact level-0 ciphertexts (power-of-two modulus): round trips, the decryption error
//! against the analysis of `serialization::compact`, and rejection of bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sphinx_he::serialization::compact::{max_bits, min_bits, slot_error_bound, slot_error_std};
use sphinx_he::serialization::{
    CompactCiphertext, DEFAULT_SIZE_LIMIT, DecodeError, HEADER_LEN, Serializable,
};
use sphinx_he::*;

mod common;
use common::protocol_params;

struct Fixture {
    params: Arc<Parameters>,
    sk: SecretKey,
    encoder: Encoder,
    /// A two-part level-0 ciphertext of values up to ±2000 and a three-part level-0
    /// product (values up to ±40), both at scale ≈ Δ.
    two: Ciphertext,
    three: Ciphertext,
}

fn fixture() -> Fixture {
    let params = protocol_params();
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let sk = SecretKey::generate(&params, &mut rng).unwrap();
    let encoder = Encoder::new(&params);
    let eval = Evaluator::new(&params);
    let top = params.max_level();
    let wide: Vec<f64> = (0..params.slots())
        .map(|_| rng.random_range(-2000.0..2000.0))
        .collect();
    let narrow: Vec<f64> = (0..params.slots())
        .map(|_| rng.random_range(-6.0..6.0))
        .collect();
    let ct = sk
        .encrypt(
            &encoder.encode(&wide, params.scale(), top).unwrap(),
            &mut rng,
        )
        .unwrap();
    let two = eval.drop_to_level(&ct, 0).unwrap();
    let small = sk
        .encrypt(
            &encoder.encode(&narrow, params.scale(), top).unwrap(),
            &mut rng,
        )
        .unwrap();
    let three = eval
        .rescale(&eval.multiply(&small, &small).unwrap())
        .unwrap();
    assert_eq!((two.size(), three.size()), (2, 3));
    assert_eq!((two.level(), three.level()), (0, 0));
    Fixture {
        params,
        sk,
        encoder,
        two,
        three,
    }
}

fn decrypt(f: &Fixture, ct: &Ciphertext) -> Vec<f64> {
    f.encoder.decode(&f.sk.decrypt(ct).unwrap()).unwrap()
}

/// Max and RMS of the slot-wise difference that the switch to `2^bits` and back adds.
fn added_error(f: &Fixture, ct: &Ciphertext, bits: u32) -> (f64, f64) {
    let compact = CompactCiphertext::from_ciphertext(&f.params, ct, bits).unwrap();
    let bytes = compact.to_bytes(&f.params).unwrap();
    let back = CompactCiphertext::from_bytes(&f.params, &bytes, DEFAULT_SIZE_LIMIT).unwrap();
    assert_eq!(back, compact);
    let lifted = back.lift(&f.params).unwrap();
    let (exact, approx) = (decrypt(f, ct), decrypt(f, &lifted));
    let diffs: Vec<f64> = exact.iter().zip(&approx).map(|(a, b)| a - b).collect();
    let max = diffs.iter().fold(0.0f64, |m, d| m.max(d.abs()));
    let rms = (diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len() as f64).sqrt();
    (max, rms)
}

#[test]
fn round_trip_sizes_and_idempotence() {
    let f = fixture();
    for (ct, size) in [(&f.two, 2), (&f.three, 3)] {
        let c = CompactCiphertext::from_ciphertext(&f.params, ct, 34).unwrap();
        let bytes = c.to_bytes(&f.params).unwrap();
        assert_eq!(bytes.len(), c.serialized_len(&f.params).unwrap());
        // 4096 coefficients of 34 bits per part: 17 408 bytes.
        assert_eq!(bytes.len(), HEADER_LEN + 10 + size * 17_408);
        // Against the full form (the fixture's two-part ciphertext still carries its seed).
        let unseeded = Ciphertext::from_parts(&f.params, ct.polys().to_vec(), 0, ct.scale());
        let full = unseeded.unwrap().to_bytes(&f.params).unwrap().len();
        assert_eq!(full, HEADER_LEN + 9 + size * 20_992);
        assert!(bytes.len() * 41 < full * 35, "{} vs {full}", bytes.len());
        // The lift is exactly inverted by the switch: a lifted ciphertext compacts to the
        // same bytes (the server may round in place and encode later).
        let lifted = c.lift(&f.params).unwrap();
        let again = CompactCiphertext::from_ciphertext(&f.params, &lifted, 34).unwrap();
        assert_eq!(again, c);
        assert_eq!(lifted.scale(), ct.scale());
    }
}

#[test]
fn decryption_error_matches_the_analysis() {
    let f = fixture();
    for (ct, bits) in [(&f.two, 34), (&f.two, 30), (&f.three, 38), (&f.three, 34)] {
        let predicted = slot_error_std(&f.params, ct.size(), bits, ct.scale());
        let bound = slot_error_bound(&f.params, ct.size(), bits, ct.scale());
        let (max, rms) = added_error(&f, ct, bits);
        eprintln!(
            "size {} k {bits}: max {max:.3e} (2^{:.1}, {:.1} σ, bound {bound:.3e}), rms {rms:.3e}, predicted σ {predicted:.3e}",
            ct.size(),
            max.log2(),
            max / predicted,
        );
        // The variance analysis: the measured RMS over 2048 slots is the predicted σ.
        assert!(
            (0.75 * predicted..1.25 * predicted).contains(&rms),
            "rms {rms} vs σ {predicted}"
        );
        // The worst slot: within the rescaling bound.
        assert!(max < bound, "max {max} vs bound {bound}");
    }
    // The figure docs/protocol.md quotes: k = 34 keeps two-part results near 2^-12.6.
    let sigma = slot_error_std(&f.params, 2, 34, f.params.scale());
    assert!((-13.0..-12.0).contains(&sigma.log2()), "2^{}", sigma.log2());
}

#[test]
fn bits_outside_the_useful_range_are_refused() {
    let f = fixture();
    let max = max_bits(&f.params).unwrap();
    assert_eq!(max, 40, "one less than the bit length of q_0");
    let min = min_bits(&f.params, 2, f.params.scale()).unwrap();
    assert!(slot_error_std(&f.params, 2, min, f.params.scale()) < 1.0);
    assert!(slot_error_std(&f.params, 2, min - 1, f.params.scale()) >= 1.0);
    assert!(min_bits(&f.params, 3, f.params.scale()).unwrap() > min);
    for bits in [0, min - 1, max + 1, 41, 63] {
        let err = CompactCiphertext::from_ciphertext(&f.params, &f.two, bits).unwrap_err();
        assert!(
            matches!(err, HeError::InvalidCompactBits { bits: b, .. } if b == bits),
            "{err}"
        );
    }
    // Only level-0 results are compacted.
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let pt = f
        .encoder
        .encode(&[1.0], f.params.scale(), f.params.max_level())
        .unwrap();
    let fresh = f.sk.encrypt(&pt, &mut rng).unwrap();
    let err = CompactCiphertext::from_ciphertext(&f.params, &fresh, 34).unwrap_err();
    assert!(matches!(err, HeError::InvalidLevel { .. }), "{err}");
    // Other parameters are refused both ways.
    let other = ParametersLiteral::insecure_for_tests(12, &[41, 29], &[39], 29)
        .build()
        .unwrap();
    let c = CompactCiphertext::from_ciphertext(&f.params, &f.two, 34).unwrap();
    assert!(c.lift(&other).is_err());
    let bytes = c.to_bytes(&f.params).unwrap();
    assert!(matches!(
        CompactCiphertext::from_bytes(&other, &bytes, DEFAULT_SIZE_LIMIT),
        Err(DecodeError::ParamsMismatch { .. })
    ));
}

#[test]
fn corrupted_or_truncated_input_is_refused() {
    let f = fixture();
    let p = &f.params;
    let c = CompactCiphertext::from_ciphertext(p, &f.two, 34).unwrap();
    let good = c.to_bytes(p).unwrap();
    // Every case below goes through both decoders: copying, and slicing shared bytes (a
    // received frame), which must accept and refuse exactly the same inputs.
    let decode = |b: &[u8]| {
        let copied = CompactCiphertext::from_bytes(p, b, DEFAULT_SIZE_LIMIT);
        let shared = CompactCiphertext::from_shared(
            p,
            &bytes::Bytes::copy_from_slice(b),
            DEFAULT_SIZE_LIMIT,
        );
        assert_eq!(format!("{copied:?}"), format!("{shared:?}"));
        copied
    };
    assert_eq!(decode(&good).unwrap(), c);

    // Truncated anywhere, or extended.
    for cut in [0, 3, HEADER_LEN, HEADER_LEN + 5, good.len() - 1] {
        assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
    }
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        decode(&long),
        Err(DecodeError::LengthMismatch { .. })
    ));
    // A payload-length field that agrees with trailing bytes still fails the exact size.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 8]);
    let len = (good.len() - HEADER_LEN + 8) as u64;
    padded[20..28].copy_from_slice(&len.to_le_bytes());
    assert!(matches!(
        decode(&padded),
        Err(DecodeError::PayloadSize { .. })
    ));
    // The size limit is checked before anything else is read.
    assert!(matches!(
        CompactCiphertext::from_bytes(p, &good, 100),
        Err(DecodeError::TooLarge { .. })
    ));
    // Fields: size, bits (out of range, or in range with the wrong length), scale, level.
    let field = |at: usize, v: u8| {
        let mut b = good.clone();
        b[at] = v;
        decode(&b)
    };
    assert!(matches!(
        field(HEADER_LEN, 4),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        field(HEADER_LEN + 1, 41),
        Err(DecodeError::InvalidCompactBits { bits: 41, .. })
    ));
    assert!(matches!(
        field(HEADER_LEN + 1, 2),
        Err(DecodeError::InvalidCompactBits { bits: 2, .. })
    ));
    assert!(matches!(
        field(HEADER_LEN + 1, 35),
        Err(DecodeError::PayloadSize { .. })
    ));
    assert!(matches!(
        field(HEADER_LEN + 9, 0xff),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        field(16, 1),
        Err(DecodeError::InvalidLevel { .. })
    ));
    // A full ciphertext is not a compact one.
    assert!(matches!(
        decode(&f.two.to_bytes(p).unwrap()),
        Err(DecodeError::WrongObjectType { .. })
    ));
}

/// The coefficient-domain paths give exactly what the NTT-domain ones do: the server's
/// rescale-and-switch equals a rescale followed by the switch, and the client's decryption
/// of a compact result equals decrypting its lift (same polynomial, same decoded values).
#[test]
fn coefficient_domain_paths_equal_the_ntt_ones() {
    let params = protocol_params();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let sk = SecretKey::generate(&params, &mut rng).unwrap();
    let encoder = Encoder::new(&params);
    let eval = Evaluator::new(&params);
    let basis = params.q_basis(0).unwrap();
    let values: Vec<f64> = (0..params.slots())
        .map(|_| rng.random_range(-6.0..6.0))
        .collect();
    let ct = sk
        .encrypt(
            &encoder.encode(&values, params.scale(), 1).unwrap(),
            &mut rng,
        )
        .unwrap();
    let pt = encoder
        .encode(&values, params.q_primes()[1] as f64, 1)
        .unwrap();
    // A two-part and a three-part level-1 result, as the server rescales them.
    let two = eval.mul_plain(&ct, &pt).unwrap();
    let three = eval.multiply(&ct, &ct).unwrap();
    for (level1, bits) in [(&two, 34), (&two, 36), (&three, 34)] {
        let old = CompactCiphertext::from_ciphertext(&params, &eval.rescale(level1).unwrap(), bits)
            .unwrap();
        let new = eval.rescale_to_compact(level1, bits).unwrap();
        assert_eq!(new, old);
        let lifted = old.lift(&params).unwrap();
        let old_pt = sk.decrypt(&lifted).unwrap();
        let new_coeffs = sk.decrypt_compact(&new).unwrap();
        assert_eq!(new_coeffs, old_pt.poly().clone().into_coeff(basis).unwrap());
        let old_values = encoder.decode(&old_pt).unwrap();
        let new_values = encoder.decode_coeffs(&new_coeffs, 0, new.scale()).unwrap();
        assert_eq!(new_values, old_values);
    }
    assert!(
        eval.rescale_to_compact(&eval.rescale(&two).unwrap(), 34)
            .is_err()
    );
}
