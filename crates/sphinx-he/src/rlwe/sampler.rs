//! Samplers for secrets, errors and uniform ring elements.
//!
//! All randomness comes from a caller-supplied cryptographically secure generator; seeded
//! uniform polynomials come from ChaCha20 so a 32-byte seed can stand in for them.

use rand::{CryptoRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sphinx_math::{Ntt, Poly, RnsBasis};

use crate::params::ERROR_STD_DEV;

/// Uniform ternary coefficients in {-1, 0, 1}.
pub(crate) fn ternary<R: RngCore + CryptoRng>(n: usize, rng: &mut R) -> Vec<i64> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut w = rng.next_u64();
        // 40 base-3 digits per word, rejecting the tail of the range for exact uniformity.
        const LIMIT: u64 = 12157665459056928801; // 3^40
        if w >= LIMIT {
            continue;
        }
        for _ in 0..40 {
            if out.len() == n {
                break;
            }
            out.push((w % 3) as i64 - 1);
            w /= 3;
        }
    }
    out
}

/// Cumulative distribution of the rounded Gaussian on `[-B, B]`, scaled to `2^64`.
fn gaussian_table() -> &'static [u64] {
    use std::sync::OnceLock;
    static TABLE: OnceLock<Vec<u64>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let bound = (6.0 * ERROR_STD_DEV).ceil() as i64;
        let weights: Vec<f64> = (-bound..=bound)
            .map(|x| (-(x as f64).powi(2) / (2.0 * ERROR_STD_DEV * ERROR_STD_DEV)).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cdf: Vec<u64> = weights
            .iter()
            .map(|w| {
                acc += w / total;
                (acc * 18446744073709551616.0).min(u64::MAX as f64) as u64
            })
            .collect();
        if let Some(last) = cdf.last_mut() {
            *last = u64::MAX;
        }
        cdf
    })
}

/// Discrete Gaussian coefficients with standard deviation [`ERROR_STD_DEV`], cut at 6σ.
pub(crate) fn gaussian<R: RngCore + CryptoRng>(n: usize, rng: &mut R) -> Vec<i64> {
    let table = gaussian_table();
    let bound = (table.len() / 2) as i64;
    (0..n)
        .map(|_| {
            let u = rng.next_u64();
            table.partition_point(|&c| c < u) as i64 - bound
        })
        .collect()
}

/// Bytes of ChaCha20 output generated at a time by [`expand_seed`].
const EXPAND_BLOCK: usize = 1024;

/// Expands a 32-byte seed into the uniform `c1` of a seeded ciphertext over `basis`.
///
/// Limb by limb, coefficient by coefficient, each residue is the first ChaCha20 output word,
/// masked to the prime's bit length, that is below the prime. The expansion over a prefix of
/// primes is a prefix of the expansion over all primes.
pub fn expand_seed(basis: &RnsBasis, seed: &[u8; 32]) -> Poly<Ntt> {
    // Sampled directly in NTT form (the NTT is a bijection). The generator is private to
    // this expansion, so it is read ahead in blocks (ChaCha20's byte stream is its word
    // stream, little-endian) and each block is filtered in one pass: every word is stored
    // at the next free position, which advances only when the word is accepted, so the
    // loop has no data-dependent branch and the accepted words keep their stream order.
    let mut rng = ChaCha20Rng::from_seed(*seed);
    let mut block = [0u8; EXPAND_BLOCK];
    let mut pos = EXPAND_BLOCK;
    let mut p = Poly::<Ntt>::zero(basis);
    let n = basis.n();
    for (limb, m) in p.data_mut().chunks_exact_mut(n).zip(basis.moduli()) {
        let q = m.value();
        let mask = u64::MAX >> (64 - m.bits());
        let mut filled = 0;
        while filled < n {
            if pos == EXPAND_BLOCK {
                rng.fill_bytes(&mut block);
                pos = 0;
            }
            for w in block[pos..].chunks_exact(8) {
                if filled == n {
                    break;
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(w);
                let v = u64::from_le_bytes(b) & mask;
                limb[filled] = v;
                filled += usize::from(v < q);
                pos += 8;
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn gaussian_moments_match() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let xs = gaussian(200_000, &mut rng);
        let mean = xs.iter().sum::<i64>() as f64 / xs.len() as f64;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.05, "{mean}");
        assert!((var.sqrt() - ERROR_STD_DEV).abs() < 0.05, "{}", var.sqrt());
        assert!(xs.iter().all(|x| x.abs() <= 20));
    }

    #[test]
    fn expansion_takes_accepted_words_in_stream_order() {
        // The definition, word by word, against the block-filtered expansion; a prime far
        // below its bit length's power of two makes rejections frequent, and the 1 KiB
        // blocks split limbs at other points than limb boundaries.
        let n = 1024u64;
        // The smallest NTT prime of 31 bits: about half of the masked words are rejected.
        let low = (1u64 << 30) / (2 * n) + 1;
        let low = (low..)
            .map(|k| k * 2 * n + 1)
            .find(|&q| sphinx_math::primes::is_prime(q))
            .unwrap();
        let high = sphinx_math::primes::ntt_primes(&[41, 29], n as usize).unwrap();
        for primes in [high.clone(), vec![low, high[1]]] {
            let basis = sphinx_math::RnsBasis::new(n as usize, &primes).unwrap();
            for seed in [[9u8; 32], [200u8; 32]] {
                let mut rng = ChaCha20Rng::from_seed(seed);
                let mut want = Vec::new();
                for m in basis.moduli() {
                    let mask = u64::MAX >> (64 - m.bits());
                    for _ in 0..basis.n() {
                        want.push(loop {
                            let v = rng.next_u64() & mask;
                            if v < m.value() {
                                break v;
                            }
                        });
                    }
                }
                assert_eq!(expand_seed(&basis, &seed).data(), &want[..]);
            }
        }
    }

    #[test]
    fn ternary_is_balanced() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let xs = ternary(90_000, &mut rng);
        for v in -1..=1 {
            let c = xs.iter().filter(|&&x| x == v).count();
            assert!((c as i64 - 30_000).abs() < 1_000, "{v}: {c}");
        }
    }
}
