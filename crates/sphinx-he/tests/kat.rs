//! Pinned known-answer vectors from fixed seeds. A change here means ciphertexts, keys or
//! parameter ids produced by earlier builds are no longer reproduced: bump formats knowingly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_he::*;

fn fnv(words: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        for b in w.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn digest(ct: &Ciphertext) -> u64 {
    let words: Vec<u64> = ct
        .polys()
        .iter()
        .flat_map(|p| p.data().iter().copied())
        .collect();
    fnv(&words)
}

#[test]
fn seal_preset_primes_and_id() {
    let params = ParametersLiteral::seal_n8192().build().unwrap();
    assert_eq!(params.q_primes(), PINNED_Q);
    assert_eq!(params.p_primes(), PINNED_P);
    assert_eq!(params.id(), ParamId(PINNED_ID));
}

#[test]
fn seeded_encryptions_are_pinned() {
    let params = ParametersLiteral::insecure_for_tests(12, &[50, 40], &[50], 40)
        .build()
        .unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(2024);
    let sk = SecretKey::generate(&params, &mut rng).unwrap();
    let pk = PublicKey::new(&sk, &mut rng).unwrap();
    let enc = Encoder::new(&params);
    let pt = enc.encode(&[0.5, -0.25, 1.0], params.scale(), 1).unwrap();
    let ct_pk = pk.encrypt(&pt, &mut rng).unwrap();
    let ct_sk = sk.encrypt_with_seed(&pt, [7u8; 32], &mut rng).unwrap();
    assert_eq!(&pt.poly().data()[..4], PINNED_PT);
    assert_eq!(digest(&ct_pk), PINNED_PK_DIGEST);
    assert_eq!(digest(&ct_sk), PINNED_SK_DIGEST);
    assert_eq!(&ct_sk.polys()[1].data()[..2], PINNED_SEED_C1);
    // Keys keep the seeds of their uniform parts, and the seeds reproduce them.
    let pk2 =
        PublicKey::from_seeded_parts(&params, pk.polys().0.clone(), *pk.seed().unwrap()).unwrap();
    assert_eq!(pk2, pk);
    let rlk = RelinearizationKey::new(&sk, &mut rng).unwrap();
    let seeds = rlk.0.seeds().unwrap().to_vec();
    let rlk2 =
        KeySwitchingKey::from_seeded_parts(&params, rlk.0.polys().0.to_vec(), seeds).unwrap();
    assert_eq!(rlk2, rlk.0);
    let out = enc.decode(&sk.decrypt(&ct_pk).unwrap()).unwrap();
    assert!((out[2] - 1.0).abs() < 1e-5);
}

// The same primes SEAL's `CoeffModulus::Create(8192, {60, 40, 40, 60})` returns.
const PINNED_Q: &[u64] = &[1152921504606830593, 1099511480321, 1099510890497];
const PINNED_P: &[u64] = &[1152921504606748673];
const PINNED_ID: u64 = 0x1459_1a72_1898_7fc2;
const PINNED_PT: &[u64] = &[
    756958469841339,
    258923045503019,
    966049520135126,
    844168916346602,
];
const PINNED_PK_DIGEST: u64 = 0x774c_d675_c432_3e23;
const PINNED_SK_DIGEST: u64 = 0x10f9_7cf3_3010_2500;
const PINNED_SEED_C1: &[u64] = &[750242615132404, 479029419439380];
