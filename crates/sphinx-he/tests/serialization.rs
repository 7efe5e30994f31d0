//! Serialization: round trips, sizes, rejection of malformed and mismatched input,
//! and a golden digest that freezes format version 1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_he::serialization::{
    DEFAULT_SIZE_LIMIT, DecodeError, HEADER_LEN, Header, ObjectType, Serializable,
};
use sphinx_he::*;
use sphinx_math::{Ntt, Poly};

fn toy() -> Arc<Parameters> {
    ParametersLiteral::insecure_for_tests(6, &[36, 30, 30], &[36], 30)
        .build()
        .unwrap()
}

struct Fixture {
    params: Arc<Parameters>,
    sk: SecretKey,
    pk: PublicKey,
    rlk: RelinearizationKey,
    gk: GaloisKeys,
    pt: Plaintext,
    rng: ChaCha20Rng,
}

fn fixture(params: Arc<Parameters>, seed: u64) -> Fixture {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let sk = SecretKey::generate(&params, &mut rng).unwrap();
    let pk = PublicKey::new(&sk, &mut rng).unwrap();
    let rlk = RelinearizationKey::new(&sk, &mut rng).unwrap();
    let gk = GaloisKeys::new(&sk, &[1, -1, 3], true, &mut rng).unwrap();
    let values: Vec<f64> = (0..params.slots())
        .map(|i| (i as f64 * 0.37).sin())
        .collect();
    let pt = Encoder::new(&params)
        .encode(&values, params.scale(), params.max_level())
        .unwrap();
    Fixture {
        params,
        sk,
        pk,
        rlk,
        gk,
        pt,
        rng,
    }
}

fn round_trip<T: Serializable + PartialEq + std::fmt::Debug>(
    params: &Arc<Parameters>,
    x: &T,
) -> Vec<u8> {
    let bytes = x.to_bytes(params).unwrap();
    assert_eq!(bytes.len(), x.serialized_len(params).unwrap());
    let back = T::from_bytes(params, &bytes, DEFAULT_SIZE_LIMIT).unwrap();
    assert_eq!(&back, x);
    assert_eq!(
        back.to_bytes(params).unwrap(),
        bytes,
        "encoding is canonical"
    );
    bytes
}

#[test]
fn every_object_round_trips() {
    let mut f = fixture(toy(), 1);
    let eval = Evaluator::new(&f.params);
    let fresh = f.pk.encrypt(&f.pt, &mut f.rng).unwrap();
    let seeded = f.sk.encrypt(&f.pt, &mut f.rng).unwrap();
    let product = eval.multiply(&fresh, &fresh).unwrap(); // 3 components
    let low = eval.drop_to_level(&fresh, 0).unwrap();
    for ct in [&fresh, &seeded, &product, &low] {
        round_trip(&f.params, ct);
    }
    round_trip(&f.params, &f.pt);
    round_trip(&f.params, &f.pk);
    round_trip(&f.params, &f.rlk);
    round_trip(&f.params, &f.gk);
}

#[test]
fn decoded_objects_still_work() {
    let mut f = fixture(toy(), 2);
    let p = &f.params;
    let pk = PublicKey::from_bytes(p, &f.pk.to_bytes(p).unwrap(), DEFAULT_SIZE_LIMIT).unwrap();
    let rlk =
        RelinearizationKey::from_bytes(p, &f.rlk.to_bytes(p).unwrap(), DEFAULT_SIZE_LIMIT).unwrap();
    let gk = GaloisKeys::from_bytes(p, &f.gk.to_bytes(p).unwrap(), DEFAULT_SIZE_LIMIT).unwrap();
    let ct = f.sk.encrypt(&f.pt, &mut f.rng).unwrap();
    let ct = Ciphertext::from_bytes(p, &ct.to_bytes(p).unwrap(), DEFAULT_SIZE_LIMIT).unwrap();
    let ct2 = pk.encrypt(&f.pt, &mut f.rng).unwrap();
    let eval = Evaluator::new(p);
    let prod = eval
        .rescale(&eval.multiply_relin(&ct, &ct2, &rlk).unwrap())
        .unwrap();
    let rot = eval.rotate(&prod, 1, &gk).unwrap();
    let enc = Encoder::new(p);
    let x: Vec<f64> = enc.decode(&f.pt).unwrap();
    let got = enc.decode(&f.sk.decrypt(&rot).unwrap()).unwrap();
    let n = x.len();
    for i in 0..n {
        let want = x[(i + 1) % n] * x[(i + 1) % n];
        assert!(
            (got[i] - want).abs() < 1e-2,
            "slot {i}: {} vs {want}",
            got[i]
        );
    }
}

/// Format sizes for SEAL's N = 8192 set, against SEAL 4.x (zstd) from bench/peers:
/// fresh 331,604 B, seeded 164,572 B, level 0 131,200 B.
#[test]
fn seal_n8192_sizes_are_packed() {
    let params = ParametersLiteral::seal_n8192().build().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let sk = SecretKey::generate(&params, &mut rng).unwrap();
    let pk = PublicKey::new(&sk, &mut rng).unwrap();
    let pt = Encoder::new(&params)
        .encode(&[1.0, 2.0], params.scale(), params.max_level())
        .unwrap();
    let fresh = pk
        .encrypt(&pt, &mut rng)
        .unwrap()
        .to_bytes(&params)
        .unwrap();
    let seeded = sk
        .encrypt(&pt, &mut rng)
        .unwrap()
        .to_bytes(&params)
        .unwrap();
    let low = Evaluator::new(&params)
        .drop_to_level(&pk.encrypt(&pt, &mut rng).unwrap(), 0)
        .unwrap();
    let low = low.to_bytes(&params).unwrap();
    // 2 polynomials × 8192 coefficients × (60 + 40 + 40) bits.
    assert_eq!(fresh.len(), HEADER_LEN + 1 + 8 + 2 * 8192 * 140 / 8);
    assert_eq!(seeded.len(), HEADER_LEN + 8 + 32 + 8192 * 140 / 8);
    assert_eq!(low.len(), HEADER_LEN + 1 + 8 + 2 * 8192 * 60 / 8);
    assert!(fresh.len() < 331_604 && seeded.len() < 164_572 && low.len() < 131_200);
    let header = Header::parse(&seeded, DEFAULT_SIZE_LIMIT).unwrap();
    assert_eq!(header.object, ObjectType::SeededCiphertext);
    assert_eq!(header.params_id, params.id().0);
    assert_eq!(usize::from(header.level), params.max_level());
}

fn fresh_ct(f: &mut Fixture) -> Vec<u8> {
    f.pk.encrypt(&f.pt, &mut f.rng)
        .unwrap()
        .to_bytes(&f.params)
        .unwrap()
}

fn decode_ct(
    params: &Arc<Parameters>,
    bytes: &[u8],
) -> std::result::Result<Ciphertext, DecodeError> {
    Ciphertext::from_bytes(params, bytes, DEFAULT_SIZE_LIMIT)
}

#[test]
fn rejects_truncation_and_trailing_bytes() {
    let mut f = fixture(toy(), 4);
    let bytes = fresh_ct(&mut f);
    for cut in [
        0,
        3,
        HEADER_LEN - 1,
        HEADER_LEN,
        HEADER_LEN + 5,
        bytes.len() - 1,
    ] {
        let err = decode_ct(&f.params, &bytes[..cut]).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Truncated { .. } | DecodeError::LengthMismatch { .. }
            ),
            "{cut}: {err}"
        );
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(
        decode_ct(&f.params, &long),
        Err(DecodeError::LengthMismatch { .. })
    ));
}

#[test]
fn rejects_bad_header_fields() {
    let mut f = fixture(toy(), 5);
    let bytes = fresh_ct(&mut f);
    let with = |at: usize, v: u8| {
        let mut b = bytes.clone();
        b[at] = v;
        decode_ct(&f.params, &b).unwrap_err()
    };
    assert!(matches!(with(0, b'X'), DecodeError::BadMagic { .. }));
    assert!(matches!(
        with(4, 2),
        DecodeError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    ));
    assert!(matches!(
        with(6, 99),
        DecodeError::UnknownObjectType { found: 99 }
    ));
    assert!(matches!(
        with(6, ObjectType::PublicKey.code()),
        DecodeError::WrongObjectType { .. }
    ));
    assert!(matches!(with(7, 1), DecodeError::Malformed(_)));
    assert!(matches!(
        with(8, bytes[8] ^ 1),
        DecodeError::ParamsMismatch { .. }
    ));
    assert!(matches!(
        with(16, 9),
        DecodeError::InvalidLevel { found: 9, .. }
    ));
    assert!(matches!(with(18, 1), DecodeError::Malformed(_)));
    // A lower level than the data: the payload no longer has the implied size.
    assert!(matches!(with(16, 0), DecodeError::PayloadSize { .. }));
    assert!(
        matches!(with(HEADER_LEN, 4), DecodeError::Malformed(_)),
        "size byte"
    );
}

#[test]
fn rejects_oversized_before_allocating() {
    let mut f = fixture(toy(), 6);
    let bytes = fresh_ct(&mut f);
    let payload = bytes.len() - HEADER_LEN;
    let err = Ciphertext::from_bytes(&f.params, &bytes, payload - 1).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooLarge {
            len: payload as u64,
            limit: payload - 1
        }
    );
    assert!(Ciphertext::from_bytes(&f.params, &bytes, payload).is_ok());
    // A header that claims 2^63 bytes is refused by the limit, not by an allocation.
    let mut huge = bytes[..HEADER_LEN].to_vec();
    huge[20..28].copy_from_slice(&(1u64 << 63).to_le_bytes());
    assert!(matches!(
        decode_ct(&f.params, &huge),
        Err(DecodeError::TooLarge { .. })
    ));
    // Galois keys: a hostile key count cannot overflow the size computation.
    let mut gk = f.gk.to_bytes(&f.params).unwrap();
    gk[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = GaloisKeys::from_bytes(&f.params, &gk, DEFAULT_SIZE_LIMIT).unwrap_err();
    assert!(matches!(err, DecodeError::PayloadSize { .. }), "{err}");
}

#[test]
fn rejects_unreduced_coefficients_and_bad_scale() {
    let mut f = fixture(toy(), 7);
    let bytes = fresh_ct(&mut f);
    // The first residue of c0, limb 0 (36 bits), set to all ones: 2^36 - 1 >= q_0.
    let mut b = bytes.clone();
    let at = HEADER_LEN + 1 + 8;
    for byte in &mut b[at..at + 4] {
        *byte = 0xff;
    }
    b[at + 4] |= 0x0f;
    let err = decode_ct(&f.params, &b).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::CoefficientOutOfRange {
                component: 0,
                limb: 0,
                index: 0,
                ..
            }
        ),
        "{err}"
    );
    for bad in [f64::NAN, f64::INFINITY, 0.0, -1.0] {
        let mut b = bytes.clone();
        b[HEADER_LEN + 1..HEADER_LEN + 9].copy_from_slice(&bad.to_bits().to_le_bytes());
        assert!(
            matches!(decode_ct(&f.params, &b), Err(DecodeError::Malformed(_))),
            "{bad}"
        );
    }
}

#[test]
fn rejects_other_parameters_and_types() {
    let mut f = fixture(toy(), 8);
    let other = ParametersLiteral::insecure_for_tests(6, &[36, 30, 30], &[36], 29)
        .build()
        .unwrap();
    let bytes = fresh_ct(&mut f);
    assert!(matches!(
        decode_ct(&other, &bytes),
        Err(DecodeError::ParamsMismatch { .. })
    ));
    let pk = f.pk.to_bytes(&f.params).unwrap();
    assert!(matches!(
        decode_ct(&f.params, &pk),
        Err(DecodeError::WrongObjectType { .. })
    ));
    let ct = f.pk.encrypt(&f.pt, &mut f.rng).unwrap();
    assert!(matches!(
        ct.to_bytes(&other),
        Err(HeError::ParamMismatch { .. })
    ));
    // Keys only exist at the top level.
    let mut low = pk.clone();
    low[16] = 0;
    assert!(matches!(
        PublicKey::from_bytes(&f.params, &low, DEFAULT_SIZE_LIMIT),
        Err(DecodeError::InvalidLevel { found: 0, .. })
    ));
}

#[test]
fn rejects_non_canonical_galois_sets() {
    let f = fixture(toy(), 9);
    let bytes = f.gk.to_bytes(&f.params).unwrap();
    let per_key = (bytes.len() - HEADER_LEN - 6) / f.gk.keys().len();
    let first = HEADER_LEN + 6;
    let second = first + per_key;
    let decode = |b: &[u8]| GaloisKeys::from_bytes(&f.params, b, DEFAULT_SIZE_LIMIT).unwrap_err();
    // Swap the first two elements: no longer increasing.
    let mut b = bytes.clone();
    let (e0, e1) = (b[first..first + 8].to_vec(), b[second..second + 8].to_vec());
    b[first..first + 8].copy_from_slice(&e1);
    b[second..second + 8].copy_from_slice(&e0);
    assert!(matches!(decode(&b), DecodeError::Malformed(_)));
    for bad in [0u64, 1, 4, 2 * 64 + 1] {
        let mut b = bytes.clone();
        b[first..first + 8].copy_from_slice(&bad.to_le_bytes());
        assert!(matches!(decode(&b), DecodeError::Malformed(_)), "{bad}");
    }
}

/// FNV-1a, 64 bits: enough to notice any change of the bytes.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Objects built from fixed polynomials (no sampling) and a fixed seed: if this
/// test fails, the wire format changed and FORMAT_VERSION must change with it.
/// `seeded_c1` freezes the seed expansion, which is part of the format.
#[test]
fn golden_digests_freeze_format_v1() {
    let params = ParametersLiteral::insecure_for_tests(4, &[30, 25], &[30], 25)
        .build()
        .unwrap();
    let level = params.max_level();
    let basis = params.q_basis(level).unwrap();
    let poly_over = |basis: &sphinx_math::RnsBasis, salt: u64| {
        let data: Vec<u64> = basis
            .moduli()
            .iter()
            .flat_map(|m| {
                (0..16u64)
                    .map(move |i| m.reduce((i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15 ^ salt)))
            })
            .collect();
        Poly::<Ntt>::from_data(basis, data).unwrap()
    };
    let poly = |salt: u64| poly_over(basis, salt);
    let full = params.full_basis();
    let pk = PublicKey::from_seeded_parts(&params, poly_over(full, 5), [9u8; 32]).unwrap();
    let rlk = RelinearizationKey(
        KeySwitchingKey::from_seeded_parts(
            &params,
            vec![poly_over(full, 6), poly_over(full, 7)],
            vec![[10u8; 32], [11u8; 32]],
        )
        .unwrap(),
    );
    let ct = Ciphertext::from_parts(&params, vec![poly(1), poly(2)], level, 2f64.powi(25)).unwrap();
    let seeded =
        Ciphertext::from_seeded(&params, poly(3), [7u8; 32], level, 2f64.powi(25)).unwrap();
    let pt = Plaintext::from_poly(&params, poly(4), level, 2f64.powi(25)).unwrap();
    let ct_bytes = ct.to_bytes(&params).unwrap();

    // The header, byte for byte.
    let mut want = b"SPHE".to_vec();
    want.extend_from_slice(&1u16.to_le_bytes());
    want.extend_from_slice(&[1, 0]);
    want.extend_from_slice(&params.id().0.to_le_bytes());
    want.extend_from_slice(&1u16.to_le_bytes());
    want.extend_from_slice(&0u16.to_le_bytes());
    want.extend_from_slice(&((ct_bytes.len() - HEADER_LEN) as u64).to_le_bytes());
    assert_eq!(&ct_bytes[..HEADER_LEN], &want[..]);

    let c1: Vec<u8> = seeded.polys()[1]
        .data()
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    let digests: BTreeMap<&str, String> = [
        ("params_id", params.id().0),
        ("ciphertext", fnv1a(&ct_bytes)),
        ("seeded", fnv1a(&seeded.to_bytes(&params).unwrap())),
        ("seeded_c1", fnv1a(&c1)),
        ("plaintext", fnv1a(&pt.to_bytes(&params).unwrap())),
        ("seeded_public_key", fnv1a(&pk.to_bytes(&params).unwrap())),
        ("seeded_relin_key", fnv1a(&rlk.to_bytes(&params).unwrap())),
    ]
    .into_iter()
    .map(|(k, v)| (k, format!("{v:016x}")))
    .collect();
    let pinned: BTreeMap<&str, String> = [
        ("params_id", "fad762cb72b7da40"),
        ("ciphertext", "97458c4d2042ca02"),
        ("seeded", "ad81ff72884f50c2"),
        ("seeded_c1", "2f03a3df8390599b"),
        ("plaintext", "62efc213a3420363"),
        ("seeded_public_key", "9558fdd7bf7b2696"),
        ("seeded_relin_key", "21103fec75090149"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    assert_eq!(digests, pinned);
}

/// Keys without their seeds (assembled from polynomials) use the full forms; fresh keys the
/// seeded ones, which are about half the size and decode to equal keys.
#[test]
fn keys_travel_seeded_or_full() {
    let f = fixture(toy(), 10);
    let p = &f.params;
    let (b, a) = f.pk.polys();
    let pk_full = PublicKey::from_parts(p, b.clone(), a.clone()).unwrap();
    let (bs, as_) = f.rlk.0.polys();
    let rlk_full =
        RelinearizationKey(KeySwitchingKey::from_parts(p, bs.to_vec(), as_.to_vec()).unwrap());
    let gk_full = GaloisKeys::from_parts(
        p,
        f.gk.keys()
            .iter()
            .map(|(&k, key)| {
                let (b, a) = key.polys();
                (
                    k,
                    KeySwitchingKey::from_parts(p, b.to_vec(), a.to_vec()).unwrap(),
                )
            })
            .collect(),
    )
    .unwrap();
    let pairs: [(Vec<u8>, Vec<u8>, ObjectType); 3] = [
        (
            round_trip(p, &f.pk),
            round_trip(p, &pk_full),
            ObjectType::SeededPublicKey,
        ),
        (
            round_trip(p, &f.rlk),
            round_trip(p, &rlk_full),
            ObjectType::SeededRelinKey,
        ),
        (
            round_trip(p, &f.gk),
            round_trip(p, &gk_full),
            ObjectType::SeededGaloisKeys,
        ),
    ];
    for (seeded, full, object) in pairs {
        assert_eq!(
            Header::parse(&seeded, DEFAULT_SIZE_LIMIT).unwrap().object,
            object
        );
        // About half: the seeds (32 bytes per polynomial) weigh more at this toy degree.
        assert!(
            seeded.len() * 100 < full.len() * 55,
            "{object}: {} vs {}",
            seeded.len(),
            full.len()
        );
    }
    // The seeded form decodes to the same key as the full one.
    let pk = PublicKey::from_bytes(p, &f.pk.to_bytes(p).unwrap(), DEFAULT_SIZE_LIMIT).unwrap();
    assert_eq!(pk, pk_full);
    assert!(pk.seed().is_some());
}
