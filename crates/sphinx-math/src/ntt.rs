//! Negacyclic number-theoretic transform modulo a word-sized prime.
//!
//! The butterflies come from [`tfhe_ntt::prime64::Plan`]: its AVX2 (and, on CPUs that have it,
//! AVX-512/IFMA) kernels with Shoup twiddles, maintained by Zama for their production TFHE
//! stack. For primes below `2^50` on x86-64 CPUs with AVX2 and FMA, a double-precision
//! transform (`ntt_f64`) with the same evaluation order replaces it: the products are exact
//! `f64` fused multiply-adds, which AVX2 has, where the integer kernel emulates 64-bit
//! multiplies from 32-bit ones, and values stay unreduced between stages within bounds fixed
//! when the plan is built (about 2.4× the backend on a 40-bit prime at N = 8192; equality with
//! the backend is tested). The same arithmetic gives [`NttPlan::dot_product_pair`], the inner
//! products of key switching, with one reduction per output.
//! What it does not give us, we add here: the map from output position to evaluation point
//! (needed to apply automorphisms directly on NTT values) and the `1/N` normalization folded
//! into [`NttPlan::inverse`].
//!
//! Primes below `2^31` are transformed by tfhe-ntt's 32-bit plan instead, faster still:
//! eight lanes per AVX2 vector instead of four and native 32×32-bit products, 2.7× the
//! 64-bit plan at N = 4096 (the training protocol's second limb has 29 bits). Both plans order their outputs alike
//! ([`crate::rns::RnsBasis`] checks it), and the values are the same.

use std::collections::HashMap;

use crate::error::{MathError, Result};
use crate::modulus::Modulus;
#[cfg(target_arch = "x86_64")]
use crate::ntt_f64::F64Ntt;

/// Smallest ring degree tfhe-ntt accepts.
pub const MIN_DEGREE: usize = 16;
/// Largest ring degree we support.
pub const MAX_DEGREE: usize = 1 << 17;

pub(crate) fn check_degree(n: usize) -> Result<()> {
    if n.is_power_of_two() && (MIN_DEGREE..=MAX_DEGREE).contains(&n) {
        Ok(())
    } else {
        Err(MathError::InvalidDegree(n))
    }
}

/// A negacyclic NTT of size `n` modulo a prime `q ≡ 1 (mod 2n)`.
///
/// [`forward`](Self::forward) maps the coefficients of `a(X) mod (X^n + 1)` to the values
/// `a(ψ^{e_i})`, where `ψ` is a primitive `2n`-th root of unity and `e_i = exponents()[i]` is odd.
pub struct NttPlan {
    plan: tfhe_ntt::prime64::Plan,
    /// The 32-bit plan of a prime below `2^31`, used for the transforms.
    plan32: Option<tfhe_ntt::prime32::Plan>,
    modulus: Modulus,
    /// Position `i` of the forward output holds the evaluation at `ψ^{exponents[i]}`.
    exponents: Vec<u32>,
    /// Inverse of `exponents`, indexed by `(e - 1) / 2`.
    position_of: Vec<u32>,
    /// The double-precision transform, used instead of `plan` for primes below `2^50` on
    /// CPUs with AVX2 and FMA (the same map, from `ntt_f64`).
    #[cfg(target_arch = "x86_64")]
    small: Option<F64Ntt>,
}

impl std::fmt::Debug for NttPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NttPlan")
            .field("n", &self.exponents.len())
            .field("modulus", &self.modulus.value())
            .finish()
    }
}

impl NttPlan {
    /// Builds the plan (twiddle tables and evaluation order).
    ///
    /// # Errors
    /// [`MathError::InvalidDegree`] or [`MathError::NotNttFriendly`].
    pub fn new(n: usize, modulus: Modulus) -> Result<Self> {
        check_degree(n)?;
        let q = modulus.value();
        let err = MathError::NotNttFriendly { modulus: q, n };
        if q >= 1 << 62 || q % (2 * n as u64) != 1 {
            return Err(err);
        }
        let plan = tfhe_ntt::prime64::Plan::try_new(n, q).ok_or(err)?;
        // The transform of `X` lists the evaluation points themselves. Take the first as ψ (any
        // odd power of a primitive 2n-th root is one) and recover every point's exponent.
        let mut x = vec![0u64; n];
        x[1] = 1;
        plan.fwd(&mut x);
        let psi = x[0];
        let mut log = HashMap::with_capacity(2 * n);
        let mut pw = 1u64;
        for e in 0..2 * n as u32 {
            log.insert(pw, e);
            pw = modulus.mul(pw, psi);
        }
        let mut exponents = Vec::with_capacity(n);
        let mut position_of = vec![0u32; n];
        for (i, v) in x.iter().enumerate() {
            let e = *log
                .get(v)
                .ok_or(MathError::NotNttFriendly { modulus: q, n })?;
            if e % 2 == 0 {
                return Err(MathError::NotNttFriendly { modulus: q, n });
            }
            position_of[(e / 2) as usize] = i as u32;
            exponents.push(e);
        }
        let plan32 = u32::try_from(q)
            .ok()
            .filter(|&q| q < 1 << 31)
            .and_then(|q| tfhe_ntt::prime32::Plan::try_new(n, q));
        // Same ψ, same output order: the double-precision transform is the same map. Not
        // built where the 32-bit plan is faster still.
        #[cfg(target_arch = "x86_64")]
        let small = match plan32 {
            Some(_) => None,
            None => {
                let n_inv = modulus.inv(n as u64 % q)?;
                F64Ntt::new(n, q, psi, n_inv, |a, b| modulus.mul(a, b))
            }
        };
        Ok(Self {
            plan,
            plan32,
            modulus,
            exponents,
            position_of,
            #[cfg(target_arch = "x86_64")]
            small,
        })
    }

    /// Ring degree `n`.
    #[inline]
    pub fn n(&self) -> usize {
        self.exponents.len()
    }

    /// The prime modulus.
    #[inline]
    pub fn modulus(&self) -> &Modulus {
        &self.modulus
    }

    /// Exponent of the evaluation point at each output position (see the type docs).
    pub fn exponents(&self) -> &[u32] {
        &self.exponents
    }

    /// Forward transform in place: coefficients in `[0, q)` to evaluations in `[0, q)`.
    ///
    /// # Panics
    /// If `a.len() != n` (an internal invariant: callers pass limbs of checked polynomials).
    #[inline]
    pub fn forward(&self, a: &mut [u64]) {
        if let Some(plan) = &self.plan32 {
            in_u32(a, |b| plan.fwd(b));
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(small) = &self.small {
            assert_eq!(a.len(), self.n());
            small.forward(a);
            return;
        }
        self.plan.fwd(a);
    }

    /// Inverse transform in place, including the `1/n` factor.
    ///
    /// # Panics
    /// If `a.len() != n`.
    #[inline]
    pub fn inverse(&self, a: &mut [u64]) {
        if let Some(plan) = &self.plan32 {
            in_u32(a, |b| {
                plan.inv(b);
                plan.normalize(b);
            });
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(small) = &self.small {
            assert_eq!(a.len(), self.n());
            small.inverse(a);
            return;
        }
        self.plan.inv(a);
        self.plan.normalize(a);
    }

    /// `acc[i] += a[i] * b[i] mod q` with the backend's vectorized kernel (inputs reduced).
    ///
    /// # Panics
    /// If the slices are not all of length `n`.
    #[inline]
    pub fn mul_accumulate(&self, acc: &mut [u64], a: &[u64], b: &[u64]) {
        // The backend silently skips a tail that is not a multiple of its vector width.
        assert!(acc.len() == self.n() && a.len() == self.n() && b.len() == self.n());
        self.plan.mul_accumulate(acc, a, b);
    }

    /// `out0 = Σ_j xs[j] · ys0[j]` and `out1 = Σ_j xs[j] · ys1[j]` modulo `q`, overwriting the
    /// outputs (inputs reduced): the two inner products of key switching, which share their
    /// left factors. For primes below `2^50` on CPUs with AVX2 and FMA the products are exact
    /// double-precision ones, summed before a single reduction per output; otherwise
    /// [`Self::mul_accumulate`] per term.
    ///
    /// # Panics
    /// If the three lists differ in length or a slice is not of length `n`.
    pub fn dot_product_pair(
        &self,
        out0: &mut [u64],
        out1: &mut [u64],
        xs: &[&[u64]],
        ys0: &[&[u64]],
        ys1: &[&[u64]],
    ) {
        let n = self.n();
        assert!(xs.len() == ys0.len() && xs.len() == ys1.len());
        assert!(out0.len() == n && out1.len() == n);
        assert!(xs.iter().chain(ys0).chain(ys1).all(|x| x.len() == n));
        #[cfg(target_arch = "x86_64")]
        if let Some(small) = &self.small {
            small.dot_product_pair((out0, out1), xs, (ys0, ys1), None);
            return;
        }
        out0.fill(0);
        out1.fill(0);
        for ((x, y0), y1) in xs.iter().zip(ys0).zip(ys1) {
            self.plan.mul_accumulate(out0, x, y0);
            self.plan.mul_accumulate(out1, x, y1);
        }
    }

    /// `out0 += (Σ_j xs[j] · ys0[j] − sub0) · w` and `out1 += (Σ_j xs[j] · ys1[j] − sub1) · w`
    /// modulo `q` (inputs reduced, `w_shoup` the Shoup companion of `w`): the inner products
    /// of key switching with the mod-down of their result fused in, so that for primes below
    /// `2^50` (as in [`Self::dot_product_pair`]) the sums are never stored.
    ///
    /// # Panics
    /// If the lists differ in length or a slice is not of length `n`.
    #[allow(clippy::too_many_arguments)]
    pub fn dot_product_pair_mod_down(
        &self,
        (out0, out1): (&mut [u64], &mut [u64]),
        xs: &[&[u64]],
        (ys0, ys1): (&[&[u64]], &[&[u64]]),
        (sub0, sub1): (&[u64], &[u64]),
        (w, w_shoup): (u64, u64),
    ) {
        let n = self.n();
        assert!(xs.len() == ys0.len() && xs.len() == ys1.len());
        assert!(out0.len() == n && out1.len() == n && sub0.len() == n && sub1.len() == n);
        assert!(xs.iter().chain(ys0).chain(ys1).all(|x| x.len() == n));
        #[cfg(target_arch = "x86_64")]
        if let Some(small) = &self.small {
            small.dot_product_pair((out0, out1), xs, (ys0, ys1), Some(([sub0, sub1], w)));
            return;
        }
        DOT.with_borrow_mut(|[acc0, acc1]| {
            acc0.resize(n, 0);
            acc1.resize(n, 0);
            self.dot_product_pair(acc0, acc1, xs, ys0, ys1);
            let m = &self.modulus;
            crate::scale::sub_mul_shoup_add(m, out0, acc0, sub0, w, w_shoup);
            crate::scale::sub_mul_shoup_add(m, out1, acc1, sub1, w, w_shoup);
        });
    }

    /// The permutation that applies `X -> X^k` to NTT values: `out[i] = in[perm[i]]`.
    ///
    /// # Errors
    /// [`MathError::InvalidGaloisElement`] if `k` is even.
    pub fn galois_permutation(&self, k: u64) -> Result<Vec<u32>> {
        let two_n = 2 * self.n() as u64;
        if k.is_multiple_of(2) {
            return Err(MathError::InvalidGaloisElement { k, two_n });
        }
        let k = k % two_n;
        Ok(self
            .exponents
            .iter()
            .map(|&e| {
                let target = (e as u64 * k) % two_n;
                self.position_of[(target / 2) as usize]
            })
            .collect())
    }
}

thread_local! {
    /// Reused sums of [`NttPlan::dot_product_pair_mod_down`] where they are stored.
    static DOT: std::cell::RefCell<[Vec<u64>; 2]> = const {
        std::cell::RefCell::new([Vec::new(), Vec::new()])
    };
    /// Reused 32-bit copy of the limb being transformed by a 32-bit plan.
    static NARROW: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a 32-bit copy of `a` (every value below `2^31`) and copies the result back.
fn in_u32(a: &mut [u64], f: impl FnOnce(&mut [u32])) {
    NARROW.with_borrow_mut(|b| {
        b.clear();
        // Values are below q < 2^31: the narrowing is exact.
        b.extend(a.iter().map(|&v| v as u32));
        f(b);
        for (x, &y) in a.iter_mut().zip(b.iter()) {
            *x = u64::from(y);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primes::ntt_primes;
    use proptest::prelude::*;

    /// A cheap deterministic stream of test words from `seed` (64-bit LCG, high bits folded).
    fn lcg(mut s: u64) -> impl FnMut() -> u64 {
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s ^ (s >> 29)
        }
    }

    /// Test words modulo `m` from [`lcg`]: all `q - 1` (`fill` 0), `0` or `q - 1` at random
    /// (1), or uniform (otherwise), the extremes being where lazy reductions could overflow.
    fn words(fill: u8, m: Modulus, seed: u64) -> impl FnMut() -> u64 {
        let mut raw = lcg(seed);
        let q = m.value();
        move || {
            let r = raw();
            match fill {
                0 => q - 1,
                1 => r % 2 * (q - 1),
                _ => m.reduce(r),
            }
        }
    }

    fn schoolbook(a: &[u64], b: &[u64], m: &Modulus) -> Vec<u64> {
        let n = a.len();
        let mut out = vec![0u64; n];
        for (i, &x) in a.iter().enumerate() {
            for (j, &y) in b.iter().enumerate() {
                let p = m.mul(x, y);
                let k = i + j;
                if k < n {
                    out[k] = m.add(out[k], p);
                } else {
                    out[k - n] = m.sub(out[k - n], p);
                }
            }
        }
        out
    }

    #[test]
    fn narrow_primes_transform_exactly_like_the_64_bit_plan() {
        for (bits, n) in [(29u32, 4096usize), (30, 64), (31, 256)] {
            let q = ntt_primes(&[bits], n).unwrap()[0];
            let plan = NttPlan::new(n, Modulus::new(q).unwrap()).unwrap();
            assert!(
                plan.plan32.is_some(),
                "{bits}-bit prime takes the 32-bit plan"
            );
            let wide = tfhe_ntt::prime64::Plan::try_new(n, q).unwrap();
            let a: Vec<u64> = (0..n as u64)
                .map(|i| {
                    if i % 7 == 0 {
                        q - 1
                    } else {
                        (i * 2_654_435_761) % q
                    }
                })
                .collect();
            let (mut narrow, mut reference) = (a.clone(), a.clone());
            plan.forward(&mut narrow);
            wide.fwd(&mut reference);
            assert_eq!(narrow, reference, "{bits} bits: same values, same order");
            plan.inverse(&mut narrow);
            assert_eq!(narrow, a, "{bits} bits: inverse");
        }
        let q = ntt_primes(&[41], 64).unwrap()[0];
        assert!(
            NttPlan::new(64, Modulus::new(q).unwrap())
                .unwrap()
                .plan32
                .is_none()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn ntt_product_matches_schoolbook(
            log_n in 4usize..8,
            bits in prop_oneof![Just(30u32), Just(40), Just(50), Just(60), Just(61)],
            seed in any::<u64>(),
        ) {
            let n = 1 << log_n;
            let q = ntt_primes(&[bits], n).unwrap()[0];
            let m = Modulus::new(q).unwrap();
            let plan = NttPlan::new(n, m).unwrap();
            let mut raw = lcg(seed);
            let mut next = || m.reduce(raw());
            let a: Vec<u64> = (0..n).map(|_| next()).collect();
            let b: Vec<u64> = (0..n).map(|_| next()).collect();
            let expected = schoolbook(&a, &b, &m);
            let (mut fa, mut fb) = (a.clone(), b.clone());
            plan.forward(&mut fa);
            plan.forward(&mut fb);
            prop_assert!(fa.iter().all(|&x| x < q));
            m.mul_assign_slice(&mut fa, &fb);
            plan.inverse(&mut fa);
            prop_assert_eq!(&fa, &expected);
            let mut back = fb.clone();
            plan.inverse(&mut back);
            prop_assert_eq!(back, b);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// The double-precision transform is the backend's map, bit for bit, extremes included.
        #[test]
        fn small_prime_transform_equals_the_backend(
            log_n in 4usize..15,
            bits in prop_oneof![Just(20u32), Just(30), Just(40), Just(41), Just(45), Just(49), Just(50)],
            fill in 0u8..3,
            seed in any::<u64>(),
        ) {
            let n = 1 << log_n;
            let q = ntt_primes(&[bits], n).unwrap()[0];
            let m = Modulus::new(q).unwrap();
            let plan = NttPlan::new(n, m).unwrap();
            // Below 2^31 the 32-bit plan takes over where tfhe-ntt has one for this degree
            // (not at n = 16); otherwise the double-precision transform.
            prop_assert!(
                plan.plan32.is_some() || plan.small.is_some() || pulp::x86::V3::try_new().is_none()
            );
            prop_assert!(plan.plan32.is_none() || bits < 31);
            let mut next = words(fill, m, seed);
            let a: Vec<u64> = (0..n).map(|_| next()).collect();
            let (mut ours, mut theirs) = (a.clone(), a.clone());
            plan.forward(&mut ours);
            plan.plan.fwd(&mut theirs);
            prop_assert_eq!(&ours, &theirs);
            plan.inverse(&mut ours);
            plan.plan.inv(&mut theirs);
            plan.plan.normalize(&mut theirs);
            prop_assert_eq!(&ours, &theirs);
            prop_assert_eq!(ours, a);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// The lazily summed products equal the sum of reduced products, extremes included and
        /// with enough terms that primes near `2^50` need intermediate reductions.
        #[test]
        fn dot_product_pair_matches_the_reference(
            log_n in 4usize..9,
            bits in prop_oneof![
                Just(20u32), Just(30), Just(40), Just(41), Just(49), Just(50), Just(51), Just(60),
                Just(61)
            ],
            terms in prop_oneof![Just(0usize), Just(1), Just(3), 2usize..24],
            fill in 0u8..3,
            seed in any::<u64>(),
        ) {
            let n = 1 << log_n;
            let q = ntt_primes(&[bits], n).unwrap()[0];
            let m = Modulus::new(q).unwrap();
            let plan = NttPlan::new(n, m).unwrap();
            let mut next = words(fill, m, seed);
            let mut vecs = |k: usize| -> Vec<Vec<u64>> {
                (0..k).map(|_| (0..n).map(|_| next()).collect()).collect()
            };
            let (xs, ys0, ys1) = (vecs(terms), vecs(terms), vecs(terms));
            fn refs(v: &[Vec<u64>]) -> Vec<&[u64]> {
                v.iter().map(Vec::as_slice).collect()
            }
            let (mut out0, mut out1) = (vec![1u64; n], vec![2u64; n]);
            plan.dot_product_pair(&mut out0, &mut out1, &refs(&xs), &refs(&ys0), &refs(&ys1));
            // The fused mod-down: outputs, subtrahends and factor from the same generator.
            let [base0, base1, sub0, sub1] = [0; 4].map(|_| (0..n).map(|_| next()).collect::<Vec<_>>());
            let w = next();
            let (mut md0, mut md1) = (base0.clone(), base1.clone());
            plan.dot_product_pair_mod_down(
                (&mut md0, &mut md1),
                &refs(&xs),
                (&refs(&ys0), &refs(&ys1)),
                (&sub0, &sub1),
                (w, m.shoup(w)),
            );
            for i in 0..n {
                let dot = |ys: &[Vec<u64>]| {
                    xs.iter().zip(ys).fold(0, |acc, (x, y)| m.add(acc, m.mul(x[i], y[i])))
                };
                let (d0, d1) = (dot(&ys0), dot(&ys1));
                prop_assert_eq!(out0[i], d0);
                prop_assert_eq!(out1[i], d1);
                prop_assert_eq!(md0[i], m.add(base0[i], m.mul(m.sub(d0, sub0[i]), w)));
                prop_assert_eq!(md1[i], m.add(base1[i], m.mul(m.sub(d1, sub1[i]), w)));
            }
        }
    }

    /// The degrees above the proptest's: several passes over the whole array before the
    /// L1-sized chunks of the lazy double-precision transform, and its reduction schedule
    /// for primes just below `2^50`.
    #[test]
    fn small_prime_transform_equals_the_backend_at_large_degrees() {
        for log_n in 14..=17 {
            let n = 1usize << log_n;
            for bits in [41u32, 50] {
                let q = ntt_primes(&[bits], n).unwrap()[0];
                let m = Modulus::new(q).unwrap();
                let plan = NttPlan::new(n, m).unwrap();
                let mut next = lcg(u64::from(bits) << log_n);
                for fill in 0..2 {
                    let a: Vec<u64> = (0..n)
                        .map(|_| {
                            let r = next();
                            if fill == 0 { q - 1 } else { m.reduce(r) }
                        })
                        .collect();
                    let (mut ours, mut theirs) = (a.clone(), a.clone());
                    plan.forward(&mut ours);
                    plan.plan.fwd(&mut theirs);
                    assert!(ours == theirs, "forward, {bits} bits, n = 2^{log_n}");
                    plan.inverse(&mut ours);
                    assert!(ours == a, "inverse, {bits} bits, n = 2^{log_n}");
                }
            }
        }
    }

    #[test]
    fn evaluation_points_are_what_the_exponents_say() {
        let n = 64;
        let q = ntt_primes(&[40], n).unwrap()[0];
        let m = Modulus::new(q).unwrap();
        let plan = NttPlan::new(n, m).unwrap();
        let mut x = vec![0u64; n];
        x[1] = 1;
        plan.forward(&mut x);
        let psi = x[0];
        assert_eq!(m.pow(psi, n as u64), q - 1, "psi is a primitive 2n-th root");
        let mut a: Vec<u64> = (0..n as u64).map(|i| (i * i + 7) % q).collect();
        let coeffs = a.clone();
        plan.forward(&mut a);
        for (i, &e) in plan.exponents().iter().enumerate() {
            let point = m.pow(psi, e as u64);
            let value = coeffs
                .iter()
                .rev()
                .fold(0, |acc, &c| m.add(m.mul(acc, point), c));
            assert_eq!(a[i], value);
        }
    }
}
