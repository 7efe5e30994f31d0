//! RNS polynomials in `Z_Q[X]/(X^N + 1)` whose representation is part of their type.
//!
//! A [`Poly<Coeff>`] holds coefficients, a [`Poly<Ntt>`] holds NTT values; products exist only
//! on the latter, so the compiler refuses to multiply coefficient vectors by mistake.
//! Storage is one flat limb-major `Vec<u64>`: limb `i` (residues mod `q_i`) is
//! `data[i*N .. (i+1)*N]`. A polynomial does not own its basis; every operation takes the
//! [`RnsBasis`] and checks the shape against it, so one basis per level can be shared by all
//! polynomials of that level.

use std::marker::PhantomData;

use crate::error::{MathError, Result};
use crate::modulus::Modulus;
use crate::rns::RnsBasis;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Coeff {}
    impl Sealed for super::Ntt {}
}

/// A polynomial representation marker.
pub trait Representation: sealed::Sealed + Clone + Copy + Send + Sync + 'static {
    /// Name used in `Debug` output.
    const NAME: &'static str;
}

/// Coefficient representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coeff;
/// NTT (evaluation) representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ntt;

impl Representation for Coeff {
    const NAME: &'static str = "Coeff";
}
impl Representation for Ntt {
    const NAME: &'static str = "Ntt";
}

/// A polynomial over an RNS basis in representation `R`.
#[derive(Clone, PartialEq, Eq)]
pub struct Poly<R: Representation> {
    n: usize,
    limbs: usize,
    data: Vec<u64>,
    _repr: PhantomData<R>,
}

impl<R: Representation> std::fmt::Debug for Poly<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Coefficients may be secret; print the shape only.
        write!(
            f,
            "Poly<{}>(n = {}, limbs = {})",
            R::NAME,
            self.n,
            self.limbs
        )
    }
}

impl<R: Representation> Poly<R> {
    /// The zero polynomial over `basis`.
    pub fn zero(basis: &RnsBasis) -> Self {
        Self::zero_with(basis.n(), basis.len())
    }

    /// The zero polynomial with `limbs` limbs of degree `n`.
    pub fn zero_with(n: usize, limbs: usize) -> Self {
        Self {
            n,
            limbs,
            data: vec![0; n * limbs],
            _repr: PhantomData,
        }
    }

    /// Wraps limb-major data, checking its length and that every residue is reduced.
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] or [`MathError::UnreducedCoefficient`].
    pub fn from_data(basis: &RnsBasis, data: Vec<u64>) -> Result<Self> {
        let n = basis.n();
        if data.len() != n * basis.len() {
            return Err(MathError::ShapeMismatch {
                expected_limbs: basis.len(),
                expected_n: n,
                got_limbs: data.len() / n,
                got_n: n,
            });
        }
        for (limb, (chunk, m)) in data.chunks_exact(n).zip(basis.moduli()).enumerate() {
            if let Some(&value) = chunk.iter().find(|&&v| v >= m.value()) {
                return Err(MathError::UnreducedCoefficient {
                    limb,
                    value,
                    modulus: m.value(),
                });
            }
        }
        Ok(Self {
            n,
            limbs: basis.len(),
            data,
            _repr: PhantomData,
        })
    }

    /// Checks that this polynomial has the shape of `basis`.
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`].
    #[inline]
    pub fn check(&self, basis: &RnsBasis) -> Result<()> {
        if self.n != basis.n() || self.limbs != basis.len() {
            return Err(MathError::ShapeMismatch {
                expected_limbs: basis.len(),
                expected_n: basis.n(),
                got_limbs: self.limbs,
                got_n: self.n,
            });
        }
        Ok(())
    }

    /// Ring degree.
    #[inline]
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of limbs.
    #[inline]
    pub fn num_limbs(&self) -> usize {
        self.limbs
    }

    /// All residues, limb-major.
    #[inline]
    pub fn data(&self) -> &[u64] {
        &self.data
    }

    /// All residues, limb-major, mutable. Callers keep them reduced.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u64] {
        &mut self.data
    }

    /// Consumes the polynomial, returning its residues.
    pub fn into_data(self) -> Vec<u64> {
        self.data
    }

    /// Limb `i`.
    ///
    /// # Panics
    /// If `i >= num_limbs()`.
    #[inline]
    pub fn limb(&self, i: usize) -> &[u64] {
        &self.data[i * self.n..(i + 1) * self.n]
    }

    /// Limb `i`, mutable.
    ///
    /// # Panics
    /// If `i >= num_limbs()`.
    #[inline]
    pub fn limb_mut(&mut self, i: usize) -> &mut [u64] {
        &mut self.data[i * self.n..(i + 1) * self.n]
    }

    /// Iterates over the limbs.
    pub fn limbs(&self) -> std::slice::ChunksExact<'_, u64> {
        self.data.chunks_exact(self.n)
    }

    /// Keeps the first `limbs` limbs (no-op if there are fewer).
    pub fn truncate(&mut self, limbs: usize) {
        if limbs < self.limbs {
            self.limbs = limbs;
            self.data.truncate(limbs * self.n);
        }
    }

    /// `self += rhs`.
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if either operand is not over `basis`.
    pub fn add_assign(&mut self, rhs: &Self, basis: &RnsBasis) -> Result<()> {
        self.check(basis)?;
        rhs.check(basis)?;
        for ((a, b), m) in self
            .data
            .chunks_exact_mut(self.n)
            .zip(rhs.limbs())
            .zip(basis.moduli())
        {
            m.add_assign_slice(a, b);
        }
        Ok(())
    }

    /// `a + b` as a new polynomial, in one pass (no copy of `a` first).
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if either operand is not over `basis`.
    pub fn sum_of(a: &Self, b: &Self, basis: &RnsBasis) -> Result<Self> {
        Self::zip_limbs(a, b, basis, Modulus::add)
    }

    /// `a - b` as a new polynomial, in one pass.
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if either operand is not over `basis`.
    pub fn difference_of(a: &Self, b: &Self, basis: &RnsBasis) -> Result<Self> {
        Self::zip_limbs(a, b, basis, Modulus::sub)
    }

    /// Coefficient-wise `op(q_i, a, b)` into a fresh polynomial: one pass, no copy of `a`.
    fn zip_limbs(
        a: &Self,
        b: &Self,
        basis: &RnsBasis,
        op: impl Fn(&Modulus, u64, u64) -> u64,
    ) -> Result<Self> {
        a.check(basis)?;
        b.check(basis)?;
        let mut data = Vec::with_capacity(a.data.len());
        for ((x, y), m) in a.limbs().zip(b.limbs()).zip(basis.moduli()) {
            data.extend(x.iter().zip(y).map(|(&u, &v)| op(m, u, v)));
        }
        Ok(Self {
            n: a.n,
            limbs: a.limbs,
            data,
            _repr: PhantomData,
        })
    }

    /// `self -= rhs`.
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if either operand is not over `basis`.
    pub fn sub_assign(&mut self, rhs: &Self, basis: &RnsBasis) -> Result<()> {
        self.check(basis)?;
        rhs.check(basis)?;
        for ((a, b), m) in self
            .data
            .chunks_exact_mut(self.n)
            .zip(rhs.limbs())
            .zip(basis.moduli())
        {
            m.sub_assign_slice(a, b);
        }
        Ok(())
    }

    /// `self = -self`.
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if `self` is not over `basis`.
    pub fn neg_assign(&mut self, basis: &RnsBasis) -> Result<()> {
        self.check(basis)?;
        for (a, m) in self.data.chunks_exact_mut(self.n).zip(basis.moduli()) {
            m.neg_assign_slice(a);
        }
        Ok(())
    }

    /// Multiplies limb `i` by the constant `scalars[i]` (already reduced mod `q_i`).
    /// The same constant in every limb means multiplying by an integer, in either representation.
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if `self` is not over `basis` or `scalars` is too short.
    pub fn mul_scalar_assign(&mut self, scalars: &[u64], basis: &RnsBasis) -> Result<()> {
        self.check(basis)?;
        if scalars.len() < self.limbs {
            return Err(MathError::TooFewLimbs(self.limbs));
        }
        for ((a, m), &s) in self
            .data
            .chunks_exact_mut(self.n)
            .zip(basis.moduli())
            .zip(scalars)
        {
            let s = m.reduce(s);
            m.mul_shoup_assign_slice(a, s, m.shoup(s));
        }
        Ok(())
    }
}

impl Poly<Coeff> {
    /// The polynomial with the given small signed coefficients, reduced into every limb.
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if `coeffs.len() != basis.n()`.
    pub fn from_i64(basis: &RnsBasis, coeffs: &[i64]) -> Result<Self> {
        let n = basis.n();
        if coeffs.len() != n {
            return Err(MathError::ShapeMismatch {
                expected_limbs: basis.len(),
                expected_n: n,
                got_limbs: 1,
                got_n: coeffs.len(),
            });
        }
        let max_abs = coeffs.iter().map(|c| c.unsigned_abs()).max().unwrap_or(0);
        let mut p = Self::zero(basis);
        for (limb, m) in p.data.chunks_exact_mut(n).zip(basis.moduli()) {
            let q = m.value();
            if max_abs < q {
                // Already in (-q, q): a branch-free conditional add, no multiplication.
                for (o, &c) in limb.iter_mut().zip(coeffs) {
                    *o = (c as u64).wrapping_add(q & ((c >> 63) as u64));
                }
            } else {
                for (o, &c) in limb.iter_mut().zip(coeffs) {
                    *o = m.reduce_i64(c);
                }
            }
        }
        Ok(p)
    }

    /// As [`from_i64`](Self::from_i64) for coefficients known to be smaller in magnitude than
    /// every modulus of the basis (secrets and errors): one compare per residue.
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if `coeffs.len() != basis.n()`,
    /// [`MathError::UnreducedCoefficient`] if a coefficient is too large.
    pub fn from_small_i64(basis: &RnsBasis, coeffs: &[i64]) -> Result<Self> {
        let n = basis.n();
        if coeffs.len() != n {
            return Err(MathError::ShapeMismatch {
                expected_limbs: basis.len(),
                expected_n: n,
                got_limbs: 1,
                got_n: coeffs.len(),
            });
        }
        let min_q = basis.moduli().iter().map(|m| m.value()).min().unwrap_or(0);
        if let Some(&c) = coeffs.iter().find(|c| c.unsigned_abs() >= min_q) {
            return Err(MathError::UnreducedCoefficient {
                limb: 0,
                value: c.unsigned_abs(),
                modulus: min_q,
            });
        }
        let mut p = Self::zero(basis);
        for (limb, m) in p.data.chunks_exact_mut(n).zip(basis.moduli()) {
            let q = m.value();
            for (o, &c) in limb.iter_mut().zip(coeffs) {
                // Branch-free: signs of secrets and errors are random.
                *o = (c as u64).wrapping_add(q & ((c >> 63) as u64));
            }
        }
        Ok(p)
    }

    /// Forward NTT of every limb, reusing the buffer.
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if `self` is not over `basis`.
    pub fn into_ntt(mut self, basis: &RnsBasis) -> Result<Poly<Ntt>> {
        self.check(basis)?;
        for (limb, plan) in self.data.chunks_exact_mut(self.n).zip(basis.plans()) {
            plan.forward(limb);
        }
        Ok(Poly {
            n: self.n,
            limbs: self.limbs,
            data: self.data,
            _repr: PhantomData,
        })
    }

    /// `a(X) -> a(X^k)` on coefficients, for odd `k`.
    ///
    /// # Errors
    /// [`MathError::InvalidGaloisElement`] for even `k`, [`MathError::ShapeMismatch`].
    pub fn automorphism(&self, k: u64, basis: &RnsBasis) -> Result<Self> {
        self.check(basis)?;
        let n = self.n;
        let two_n = 2 * n as u64;
        if k.is_multiple_of(2) {
            return Err(MathError::InvalidGaloisElement { k, two_n });
        }
        let k = k % two_n;
        let mut out = Self::zero(basis);
        for ((dst, src), m) in out
            .data
            .chunks_exact_mut(n)
            .zip(self.limbs())
            .zip(basis.moduli())
        {
            for (i, &c) in src.iter().enumerate() {
                let j = (i as u64 * k) % two_n;
                if j < n as u64 {
                    dst[j as usize] = c;
                } else {
                    dst[(j - n as u64) as usize] = m.neg(c);
                }
            }
        }
        Ok(out)
    }
}

impl Poly<Ntt> {
    /// Inverse NTT of every limb, reusing the buffer.
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if `self` is not over `basis`.
    pub fn into_coeff(mut self, basis: &RnsBasis) -> Result<Poly<Coeff>> {
        self.check(basis)?;
        for (limb, plan) in self.data.chunks_exact_mut(self.n).zip(basis.plans()) {
            plan.inverse(limb);
        }
        Ok(Poly {
            n: self.n,
            limbs: self.limbs,
            data: self.data,
            _repr: PhantomData,
        })
    }

    /// `self *= rhs` (the negacyclic product).
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if either operand is not over `basis`.
    pub fn mul_assign(&mut self, rhs: &Self, basis: &RnsBasis) -> Result<()> {
        self.check(basis)?;
        rhs.check(basis)?;
        let mut tmp = vec![0u64; self.n];
        for ((a, b), plan) in self
            .data
            .chunks_exact_mut(self.n)
            .zip(rhs.limbs())
            .zip(basis.plans())
        {
            tmp.copy_from_slice(a);
            a.fill(0);
            plan.mul_accumulate(a, &tmp, b);
        }
        Ok(())
    }

    /// `self += a * b`.
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if an operand is not over `basis`.
    pub fn mul_add_assign(&mut self, a: &Self, b: &Self, basis: &RnsBasis) -> Result<()> {
        self.check(basis)?;
        a.check(basis)?;
        b.check(basis)?;
        for (((acc, x), y), plan) in self
            .data
            .chunks_exact_mut(self.n)
            .zip(a.limbs())
            .zip(b.limbs())
            .zip(basis.plans())
        {
            plan.mul_accumulate(acc, x, y);
        }
        Ok(())
    }

    /// `a * b` as a new polynomial.
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if an operand is not over `basis`.
    pub fn mul(a: &Self, b: &Self, basis: &RnsBasis) -> Result<Self> {
        let mut out = Self::zero(basis);
        out.mul_add_assign(a, b, basis)?;
        Ok(out)
    }

    /// Applies a precomputed NTT-domain permutation (see [`RnsBasis::galois_permutation`]).
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if `perm.len() != n`.
    pub fn permute(&self, perm: &[u32]) -> Result<Self> {
        if perm.len() != self.n {
            return Err(MathError::ShapeMismatch {
                expected_limbs: self.limbs,
                expected_n: self.n,
                got_limbs: self.limbs,
                got_n: perm.len(),
            });
        }
        // Gathered straight into fresh memory: no zeroing pass before the writes.
        let mut data = Vec::with_capacity(self.data.len());
        for src in self.data.chunks_exact(self.n) {
            data.extend(perm.iter().map(|&p| src[p as usize]));
        }
        Ok(Self {
            n: self.n,
            limbs: self.limbs,
            data,
            _repr: PhantomData,
        })
    }

    /// Writes the permuted polynomial into `out` (same shape as `self`).
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if `perm` or `out` do not fit.
    pub fn permute_into(&self, perm: &[u32], out: &mut Self) -> Result<()> {
        if perm.len() != self.n || out.n != self.n || out.limbs != self.limbs {
            return Err(MathError::ShapeMismatch {
                expected_limbs: self.limbs,
                expected_n: self.n,
                got_limbs: out.limbs,
                got_n: perm.len(),
            });
        }
        for (dst, src) in out
            .data
            .chunks_exact_mut(self.n)
            .zip(self.data.chunks_exact(self.n))
        {
            for (d, &p) in dst.iter_mut().zip(perm) {
                *d = src[p as usize];
            }
        }
        Ok(())
    }

    /// `a(X) -> a(X^k)` on NTT values, for odd `k`.
    ///
    /// # Errors
    /// [`MathError::InvalidGaloisElement`] for even `k`, [`MathError::ShapeMismatch`].
    pub fn automorphism(&self, k: u64, basis: &RnsBasis) -> Result<Self> {
        self.check(basis)?;
        self.permute(&basis.galois_permutation(k)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primes::ntt_primes;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn automorphism_commutes_with_ntt(coeffs in prop::collection::vec(-1000i64..1000, 32), k in 0u64..32) {
            let k = 2 * k + 1;
            let b = RnsBasis::new(32, &ntt_primes(&[40, 50], 32).unwrap()).unwrap();
            let p = Poly::<Coeff>::from_i64(&b, &coeffs).unwrap();
            let via_coeff = p.automorphism(k, &b).unwrap().into_ntt(&b).unwrap();
            let via_ntt = p.into_ntt(&b).unwrap().automorphism(k, &b).unwrap();
            prop_assert_eq!(via_coeff, via_ntt);
        }

        #[test]
        fn small_and_general_constructors_agree(coeffs in prop::collection::vec(-100_000i64..100_000, 16)) {
            let b = RnsBasis::new(16, &ntt_primes(&[30, 35], 16).unwrap()).unwrap();
            prop_assert_eq!(Poly::<Coeff>::from_i64(&b, &coeffs).unwrap(), Poly::<Coeff>::from_small_i64(&b, &coeffs).unwrap());
        }

        #[test]
        fn ring_identities_hold(a in prop::collection::vec(-1000i64..1000, 16), c in prop::collection::vec(-1000i64..1000, 16)) {
            let b = RnsBasis::new(16, &ntt_primes(&[30, 35], 16).unwrap()).unwrap();
            let pa = Poly::<Coeff>::from_i64(&b, &a).unwrap().into_ntt(&b).unwrap();
            let pc = Poly::<Coeff>::from_i64(&b, &c).unwrap().into_ntt(&b).unwrap();
            let mut s = pa.clone();
            s.add_assign(&pc, &b).unwrap();
            prop_assert_eq!(&s, &Poly::sum_of(&pa, &pc, &b).unwrap());
            s.sub_assign(&pc, &b).unwrap();
            prop_assert_eq!(&s, &pa);
            let mut d = pa.clone();
            d.sub_assign(&pc, &b).unwrap();
            prop_assert_eq!(&d, &Poly::difference_of(&pa, &pc, &b).unwrap());
            let mut m1 = pa.clone();
            m1.mul_assign(&pc, &b).unwrap();
            let mut m2 = Poly::<Ntt>::zero(&b);
            m2.mul_add_assign(&pc, &pa, &b).unwrap();
            prop_assert_eq!(&m1, &m2);
            let mut twice = pa.clone();
            twice.mul_scalar_assign(&[2, 2], &b).unwrap();
            let mut sum = pa.clone();
            sum.add_assign(&pa, &b).unwrap();
            prop_assert_eq!(twice, sum);
            let mut z = pa.clone();
            z.neg_assign(&b).unwrap();
            z.add_assign(&pa, &b).unwrap();
            prop_assert_eq!(z, Poly::<Ntt>::zero(&b));
        }
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let b = RnsBasis::new(16, &ntt_primes(&[30, 35], 16).unwrap()).unwrap();
        let small = b.prefix(1).unwrap();
        let mut x = Poly::<Ntt>::zero(&b);
        let y = Poly::<Ntt>::zero(&small);
        assert!(matches!(
            x.add_assign(&y, &b),
            Err(MathError::ShapeMismatch { .. })
        ));
        assert!(Poly::<Coeff>::from_data(&b, vec![u64::MAX; 32]).is_err());
    }
}
