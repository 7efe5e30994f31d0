//! NTT-friendly prime generation.
//!
//! A negacyclic NTT of size `N` modulo `p` needs a primitive `2N`-th root of unity, which exists
//! exactly when `p ≡ 1 (mod 2N)`. [`ntt_primes`] walks down from `2^bits` in steps of `2N`, so the
//! result is deterministic: the same sizes and degree always give the same primes, which lets
//! two parties derive identical parameters from a short description.

use crate::error::{MathError, Result};

/// Deterministic Miller–Rabin primality test, exact for every `u64`.
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    for p in [2u64, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    let mut d = n - 1;
    let mut s = 0;
    while d.is_multiple_of(2) {
        d /= 2;
        s += 1;
    }
    let mul = |a: u64, b: u64| ((a as u128 * b as u128) % n as u128) as u64;
    let pow = |mut a: u64, mut e: u64| {
        let mut r = 1u64;
        while e > 0 {
            if e & 1 == 1 {
                r = mul(r, a);
            }
            a = mul(a, a);
            e >>= 1;
        }
        r
    };
    // These bases are a known deterministic witness set for all n < 2^64.
    'witness: for a in [2u64, 325, 9375, 28178, 450775, 9780504, 1795265022] {
        let a = a % n;
        if a == 0 {
            continue;
        }
        let mut x = pow(a, d);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mul(x, x);
            if x == n - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

/// Smallest supported prime size for a ring of degree `n` (the prime must exceed `2n`).
pub fn min_prime_bits(n: usize) -> u32 {
    (2 * n as u64).ilog2() + 2
}

/// Largest supported prime size.
pub const MAX_PRIME_BITS: u32 = 61;

/// Returns one prime per entry of `bit_sizes`, each with exactly that many bits, congruent to
/// `1 mod 2n`, and all pairwise distinct.
///
/// Primes of equal size are handed out from the largest down, in the order they are requested.
///
/// # Errors
/// [`MathError::InvalidDegree`] for a bad `n`, [`MathError::InvalidPrimeBits`] for a size outside
/// `min_prime_bits(n) ..= 61`, [`MathError::NotEnoughPrimes`] when too few primes of a size exist.
///
/// ```
/// let primes = sphinx_math::primes::ntt_primes(&[60, 40, 40, 60], 8192)?;
/// assert!(primes.iter().all(|p| p % 16384 == 1));
/// assert_eq!(primes[1].ilog2() + 1, 40);
/// assert_ne!(primes[0], primes[3]);
/// # Ok::<(), sphinx_math::MathError>(())
/// ```
pub fn ntt_primes(bit_sizes: &[u32], n: usize) -> Result<Vec<u64>> {
    crate::ntt::check_degree(n)?;
    let two_n = 2 * n as u64;
    let min = min_prime_bits(n);
    let mut out = vec![0u64; bit_sizes.len()];
    let mut sizes: Vec<u32> = bit_sizes.to_vec();
    sizes.sort_unstable();
    sizes.dedup();
    for bits in sizes {
        if !(min..=MAX_PRIME_BITS).contains(&bits) {
            return Err(MathError::InvalidPrimeBits {
                bits,
                min,
                max: MAX_PRIME_BITS,
            });
        }
        let wanted = bit_sizes.iter().filter(|&&b| b == bits).count();
        let lower = 1u64 << (bits - 1);
        let mut candidate = ((1u64 << bits) - 1) / two_n * two_n + 1;
        let mut found = Vec::with_capacity(wanted);
        while found.len() < wanted && candidate > lower {
            if is_prime(candidate) {
                found.push(candidate);
            }
            candidate -= two_n;
        }
        if found.len() < wanted {
            return Err(MathError::NotEnoughPrimes {
                bits,
                two_n,
                wanted,
                found: found.len(),
            });
        }
        let mut it = found.into_iter();
        for (slot, _) in out.iter_mut().zip(bit_sizes).filter(|(_, b)| **b == bits) {
            *slot = it.next().unwrap_or_default();
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primality_matches_trial_division() {
        let trial = |n: u64| {
            n >= 2
                && (2..)
                    .take_while(|d| d * d <= n)
                    .all(|d| !n.is_multiple_of(d))
        };
        for n in 0..5000u64 {
            assert_eq!(is_prime(n), trial(n), "{n}");
        }
        assert!(is_prime((1 << 61) - 1));
        assert!(!is_prime(3_215_031_751)); // strong pseudoprime to bases 2, 3, 5, 7
    }

    #[test]
    fn primes_are_ntt_friendly_distinct_and_sized() {
        let sizes = [60, 40, 40, 40, 60, 50];
        let ps = ntt_primes(&sizes, 1 << 13).unwrap();
        for (p, b) in ps.iter().zip(sizes) {
            assert!(is_prime(*p));
            assert_eq!(p % (1 << 14), 1);
            assert_eq!(64 - p.leading_zeros(), b);
        }
        let mut sorted = ps.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ps.len());
        assert_eq!(ps, ntt_primes(&sizes, 1 << 13).unwrap(), "deterministic");
    }

    #[test]
    fn rejects_impossible_requests() {
        assert!(matches!(
            ntt_primes(&[10], 1 << 12),
            Err(MathError::InvalidPrimeBits { .. })
        ));
        assert!(matches!(
            ntt_primes(&[62], 1 << 12),
            Err(MathError::InvalidPrimeBits { .. })
        ));
        assert!(matches!(
            ntt_primes(&[15; 40], 1 << 12),
            Err(MathError::NotEnoughPrimes { .. })
        ));
    }
}
