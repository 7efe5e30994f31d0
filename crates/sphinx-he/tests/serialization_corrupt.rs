//! Corrupted-input corpus for every decoder: random mutations of valid encodings
//! (bit flips, truncations, extensions, overwritten header fields and byte runs)
//! must decode to an error or to an object whose re-encoding is exactly the
//! input, and must never panic. Runs in CI as an ordinary test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_he::serialization::{CompactCiphertext, HEADER_LEN, Serializable};
use sphinx_he::{
    Ciphertext, Encoder, Evaluator, GaloisKeys, KeySwitchingKey, Parameters, ParametersLiteral,
    Plaintext, PublicKey, RelinearizationKey, SecretKey,
};

struct Corpus {
    params: Arc<Parameters>,
    samples: Vec<Vec<u8>>,
}

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let params = ParametersLiteral::insecure_for_tests(5, &[30, 24, 24], &[30], 24)
            .build()
            .unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let sk = SecretKey::generate(&params, &mut rng).unwrap();
        let pk = PublicKey::new(&sk, &mut rng).unwrap();
        let rlk = RelinearizationKey::new(&sk, &mut rng).unwrap();
        let gk = GaloisKeys::new(&sk, &[1, 2], true, &mut rng).unwrap();
        let pt = Encoder::new(&params)
            .encode(&[0.5, -0.25, 1.0], params.scale(), params.max_level())
            .unwrap();
        let eval = Evaluator::new(&params);
        let fresh = pk.encrypt(&pt, &mut rng).unwrap();
        let seeded = sk.encrypt(&pt, &mut rng).unwrap();
        let product = eval.multiply(&fresh, &fresh).unwrap();
        let low = eval.drop_to_level(&fresh, 0).unwrap();
        let low3 = eval.drop_to_level(&product, 0).unwrap();
        let compact = CompactCiphertext::from_ciphertext(&params, &low, 20).unwrap();
        let compact3 = CompactCiphertext::from_ciphertext(&params, &low3, 27).unwrap();
        let p = &params;
        // Keys assembled from polynomials have no seeds: the full key forms.
        let (b, a) = pk.polys();
        let pk_full = PublicKey::from_parts(p, b.clone(), a.clone()).unwrap();
        let (bs, as_) = rlk.0.polys();
        let rlk_full =
            RelinearizationKey(KeySwitchingKey::from_parts(p, bs.to_vec(), as_.to_vec()).unwrap());
        let samples = vec![
            pk_full.to_bytes(p).unwrap(),
            rlk_full.to_bytes(p).unwrap(),
            fresh.to_bytes(p).unwrap(),
            seeded.to_bytes(p).unwrap(),
            product.to_bytes(p).unwrap(),
            low.to_bytes(p).unwrap(),
            pt.to_bytes(p).unwrap(),
            pk.to_bytes(p).unwrap(),
            rlk.to_bytes(p).unwrap(),
            gk.to_bytes(p).unwrap(),
            compact.to_bytes(p).unwrap(),
            compact3.to_bytes(p).unwrap(),
        ];
        Corpus { params, samples }
    })
}

/// Decodes with `T`; a success must be the one canonical encoding of the result.
fn check_one<T: Serializable>(
    params: &Arc<Parameters>,
    bytes: &[u8],
    limit: usize,
) -> Result<bool, TestCaseError> {
    match T::from_bytes(params, bytes, limit) {
        Ok(obj) => {
            prop_assert_eq!(
                obj.to_bytes(params).unwrap(),
                bytes.to_vec(),
                "accepted a non-canonical encoding"
            );
            Ok(true)
        }
        Err(err) => {
            // Every error renders (Display must not panic either).
            prop_assert!(!err.to_string().is_empty());
            Ok(false)
        }
    }
}

/// Runs every decoder; returns how many accepted the bytes.
fn decode_all(bytes: &[u8], limit: usize) -> Result<usize, TestCaseError> {
    let p = &corpus().params;
    let accepted = [
        check_one::<Ciphertext>(p, bytes, limit)?,
        check_one::<Plaintext>(p, bytes, limit)?,
        check_one::<PublicKey>(p, bytes, limit)?,
        check_one::<RelinearizationKey>(p, bytes, limit)?,
        check_one::<GaloisKeys>(p, bytes, limit)?,
        check_one::<CompactCiphertext>(p, bytes, limit)?,
    ];
    Ok(accepted.iter().filter(|&&a| a).count())
}

#[derive(Clone, Debug)]
enum Mutation {
    FlipBits(Vec<(usize, u8)>),
    Truncate(usize),
    Extend(Vec<u8>),
    SetHeaderByte(usize, u8),
    SetPayloadLen(u64),
    Overwrite(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        proptest::collection::vec((any::<usize>(), 0u8..8), 1..6).prop_map(Mutation::FlipBits),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..40).prop_map(Mutation::Extend),
        (0..HEADER_LEN, any::<u8>()).prop_map(|(i, v)| Mutation::SetHeaderByte(i, v)),
        any::<u64>().prop_map(Mutation::SetPayloadLen),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(i, v)| Mutation::Overwrite(i, v)),
    ]
}

fn apply(mut b: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let len = b.len();
    match m {
        Mutation::FlipBits(flips) => {
            for &(at, bit) in flips {
                b[at % len] ^= 1 << bit;
            }
        }
        Mutation::Truncate(at) => b.truncate(at % len),
        Mutation::Extend(extra) => b.extend_from_slice(extra),
        // After a truncation the header may be partly gone: mutate what is left.
        Mutation::SetHeaderByte(at, v) => {
            if let Some(x) = b.get_mut(*at) {
                *x = *v;
            }
        }
        Mutation::SetPayloadLen(v) => {
            if let Some(field) = b.get_mut(20..28) {
                field.copy_from_slice(&v.to_le_bytes());
            }
        }
        Mutation::Overwrite(at, v) => {
            let start = at % len;
            for (dst, src) in b[start..].iter_mut().zip(v) {
                *dst = *src;
            }
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_encodings_never_panic(which in 0usize..12, muts in proptest::collection::vec(mutation(), 1..4), limit_shift in 0u32..24) {
        let corpus = corpus();
        let mut bytes = corpus.samples[which].clone();
        for m in &muts {
            bytes = apply(bytes, m);
            if bytes.is_empty() {
                break;
            }
        }
        // Limits from tiny to generous: the limit check must come first and never panic.
        let limit = (64usize << limit_shift).min(1 << 30);
        let accepted = decode_all(&bytes, limit)?;
        prop_assert!(accepted <= 1, "bytes accepted by {} decoders", accepted);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        prop_assert_eq!(decode_all(&bytes, 1 << 20)?, 0);
    }

    #[test]
    fn random_payload_behind_a_valid_header_never_panics(which in 0usize..12, seed in any::<u64>()) {
        // Keep a valid header and replace the whole payload with noise of the right length.
        let mut bytes = corpus().samples[which].clone();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        rand::RngCore::fill_bytes(&mut rng, &mut bytes[HEADER_LEN..]);
        decode_all(&bytes, 1 << 30)?;
    }
}

#[test]
fn corpus_itself_decodes() {
    for (i, s) in corpus().samples.iter().enumerate() {
        assert_eq!(decode_all(s, 1 << 30).unwrap(), 1, "sample {i}");
    }
}
