//! Residue number system (RNS) bases, fast base conversion and division by the last prime.
//!
//! An integer `x mod Q`, `Q = q_0 ⋯ q_{L-1}`, is held as its residues `x mod q_i`. Basis
//! conversion and rescaling work limb by limb on these residues and never build `x` itself.

use std::sync::Arc;

use crate::error::{MathError, Result};
use crate::modulus::Modulus;
use crate::ntt::{NttPlan, check_degree};
use crate::poly::{Coeff, Ntt, Poly};
use crate::scale;

/// An ordered list of distinct NTT-friendly primes for one ring degree, with their NTT plans.
///
/// Sub-bases share plans through `Arc`, so building one basis per level is cheap.
#[derive(Clone, Debug)]
pub struct RnsBasis {
    n: usize,
    moduli: Vec<Modulus>,
    plans: Vec<Arc<NttPlan>>,
    /// For `i < len - 1`: `q_last^{-1} mod q_i`, its Shoup companion, and `q_last mod q_i`.
    last_inv: Vec<(u64, u64, u64)>,
}

impl RnsBasis {
    /// Builds a basis and the NTT plan of every prime.
    ///
    /// # Errors
    /// Bad degree, a prime that is not NTT-friendly, or a repeated prime.
    pub fn new(n: usize, primes: &[u64]) -> Result<Self> {
        check_degree(n)?;
        let plans = primes
            .iter()
            .map(|&q| Ok(Arc::new(NttPlan::new(n, Modulus::new(q)?)?)))
            .collect::<Result<Vec<_>>>()?;
        Self::from_plans(plans)
    }

    /// Builds a basis from existing plans (shared, not copied).
    ///
    /// # Errors
    /// [`MathError::TooFewLimbs`] for an empty list, [`MathError::ShapeMismatch`] for plans of
    /// different degrees, [`MathError::DuplicateModulus`], or
    /// [`MathError::InconsistentNttOrder`] if the backend ordered two primes' outputs differently.
    pub fn from_plans(plans: Vec<Arc<NttPlan>>) -> Result<Self> {
        let first = plans.first().ok_or(MathError::TooFewLimbs(1))?;
        let n = first.n();
        for p in &plans {
            if p.n() != n {
                return Err(MathError::ShapeMismatch {
                    expected_limbs: plans.len(),
                    expected_n: n,
                    got_limbs: plans.len(),
                    got_n: p.n(),
                });
            }
            if p.exponents() != first.exponents() {
                return Err(MathError::InconsistentNttOrder);
            }
        }
        let moduli: Vec<Modulus> = plans.iter().map(|p| *p.modulus()).collect();
        for (i, m) in moduli.iter().enumerate() {
            if moduli[..i].contains(m) {
                return Err(MathError::DuplicateModulus(m.value()));
            }
        }
        let mut last_inv = Vec::new();
        if let Some((last, rest)) = moduli.split_last() {
            for m in rest {
                let inv = m.inv(last.value())?;
                last_inv.push((inv, m.shoup(inv), m.reduce(last.value())));
            }
        }
        Ok(Self {
            n,
            moduli,
            plans,
            last_inv,
        })
    }

    /// The basis made of the limbs at `indices`, in that order.
    ///
    /// # Errors
    /// [`MathError::TooFewLimbs`] if an index is out of range or the list is empty.
    pub fn select(&self, indices: &[usize]) -> Result<Self> {
        let plans = indices
            .iter()
            .map(|&i| {
                self.plans
                    .get(i)
                    .cloned()
                    .ok_or(MathError::TooFewLimbs(i + 1))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::from_plans(plans)
    }

    /// The basis of the first `len` primes.
    ///
    /// # Errors
    /// [`MathError::TooFewLimbs`] if `len` is zero or exceeds this basis.
    pub fn prefix(&self, len: usize) -> Result<Self> {
        self.select(&(0..len).collect::<Vec<_>>())
    }

    /// Ring degree.
    #[inline]
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of primes.
    #[inline]
    pub fn len(&self) -> usize {
        self.moduli.len()
    }

    /// Always false: a basis has at least one prime.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.moduli.is_empty()
    }

    /// The primes.
    #[inline]
    pub fn moduli(&self) -> &[Modulus] {
        &self.moduli
    }

    /// The NTT plans, one per prime.
    #[inline]
    pub fn plans(&self) -> &[Arc<NttPlan>] {
        &self.plans
    }

    /// Sum of the primes' bit lengths.
    pub fn total_bits(&self) -> u32 {
        self.moduli.iter().map(Modulus::bits).sum()
    }

    /// `log2` of the product of the primes.
    pub fn log2_product(&self) -> f64 {
        self.moduli.iter().map(|m| (m.value() as f64).log2()).sum()
    }

    /// The NTT-domain permutation of `X -> X^k` (identical for every prime of the basis).
    ///
    /// # Errors
    /// [`MathError::InvalidGaloisElement`] if `k` is even.
    pub fn galois_permutation(&self, k: u64) -> Result<Vec<u32>> {
        self.plans[0].galois_permutation(k)
    }

    /// Divides by the last prime with rounding and drops that limb: `x -> round(x / q_last)`,
    /// on a polynomial in NTT form. `scratch` is resized to `2n` words as needed.
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if `poly` is not over this basis,
    /// [`MathError::TooFewLimbs`] if the basis has a single prime.
    pub fn divide_round_last_ntt(
        &self,
        poly: &mut Poly<Ntt>,
        scratch: &mut Vec<u64>,
    ) -> Result<()> {
        poly.check(self)?;
        let l = self.len() - 1;
        if l == 0 {
            return Err(MathError::TooFewLimbs(2));
        }
        let n = self.n;
        scratch.resize(n, 0);
        let tmp = &mut scratch[..n];
        // The last limb is dropped below, so it is transformed in place rather than copied.
        let (head, last_coeffs) = poly.data_mut().split_at_mut(l * n);
        self.plans[l].inverse(last_coeffs);
        let q_last = self.moduli[l].value();
        for (i, limb) in head.chunks_exact_mut(n).enumerate() {
            let m = self.moduli[i];
            let (inv, inv_shoup, _) = self.last_inv[i];
            // The centered representative makes the division round to nearest.
            m.lift_centered(tmp, last_coeffs, q_last);
            self.plans[i].forward(tmp);
            // `a = (a − t) · q_last^{-1}`, read and written in place.
            scale::sub_mul_shoup_assign(&m, limb, tmp, inv, inv_shoup);
        }
        poly.truncate(l);
        Ok(())
    }

    /// [`divide_round_last_ntt`](Self::divide_round_last_ntt) into a new polynomial: the
    /// input is only read, so nothing is copied that the division would overwrite or drop.
    /// `scratch` is resized to `2n` words as needed.
    ///
    /// # Errors
    /// As [`divide_round_last_ntt`](Self::divide_round_last_ntt).
    pub fn divided_round_last_ntt(
        &self,
        poly: &Poly<Ntt>,
        scratch: &mut Vec<u64>,
    ) -> Result<Poly<Ntt>> {
        poly.check(self)?;
        let l = self.len() - 1;
        if l == 0 {
            return Err(MathError::TooFewLimbs(2));
        }
        let n = self.n;
        scratch.resize(2 * n, 0);
        let (last_coeffs, tmp) = scratch.split_at_mut(n);
        let (head, last) = poly.data().split_at(l * n);
        last_coeffs.copy_from_slice(last);
        self.plans[l].inverse(last_coeffs);
        let q_last = self.moduli[l].value();
        let mut out = Poly::<Ntt>::zero_with(n, l);
        for (i, (dst, src)) in out
            .data_mut()
            .chunks_exact_mut(n)
            .zip(head.chunks_exact(n))
            .enumerate()
        {
            let m = self.moduli[i];
            let (inv, inv_shoup, _) = self.last_inv[i];
            m.lift_centered(tmp, last_coeffs, q_last);
            self.plans[i].forward(tmp);
            scale::sub_mul_shoup(&m, dst, src, tmp, inv, inv_shoup);
        }
        Ok(out)
    }

    /// Same as [`divide_round_last_ntt`](Self::divide_round_last_ntt) for a polynomial in
    /// coefficient form.
    ///
    /// # Errors
    /// As [`divide_round_last_ntt`](Self::divide_round_last_ntt).
    pub fn divide_round_last_coeff(&self, poly: &mut Poly<Coeff>) -> Result<()> {
        poly.check(self)?;
        let l = self.len() - 1;
        if l == 0 {
            return Err(MathError::TooFewLimbs(2));
        }
        let n = self.n;
        let half = self.moduli[l].value() >> 1;
        let (head, last) = poly.data_mut().split_at_mut(l * n);
        for i in 0..l {
            let m = self.moduli[i];
            let (inv, inv_shoup, q_last_mod) = self.last_inv[i];
            let q = m.value();
            for (a, &v) in head[i * n..(i + 1) * n].iter_mut().zip(last.iter()) {
                let r = m.reduce(v);
                let t = if v > half { m.sub(r, q_last_mod) } else { r };
                *a = m.mul_shoup(*a + q - t, inv, inv_shoup);
            }
        }
        poly.truncate(l);
        Ok(())
    }
}

/// Fast base conversion from basis `B = {b_i}` to basis `C = {c_j}` (no shared primes needed).
///
/// For `x` given by its residues mod `B`, computes `Σ_i [x_i (B/b_i)^{-1}]_{b_i} · (B/b_i) mod c_j`,
/// which equals `x + αB` for some integer `0 <= α < |B|`. Hybrid key switching uses it to
/// extend digits to the special primes and to bring results back modulo `Q`; the `αB` term
/// is absorbed into noise by the subsequent division by `B`.
#[derive(Clone, Debug)]
pub struct BasisConverter {
    from: Vec<Modulus>,
    to: Vec<Modulus>,
    /// `(B/b_i)^{-1} mod b_i` and Shoup companions.
    hat_inv: Vec<(u64, u64)>,
    /// `(B/b_i) mod c_j`, row-major by `j`.
    hat_mod_to: Vec<u64>,
}

impl BasisConverter {
    /// Precomputes the conversion constants.
    ///
    /// # Errors
    /// [`MathError::TooFewLimbs`] for an empty basis, [`MathError::NotInvertible`] if `from`
    /// has repeated primes.
    pub fn new(from: &[Modulus], to: &[Modulus]) -> Result<Self> {
        if from.is_empty() || to.is_empty() {
            return Err(MathError::TooFewLimbs(1));
        }
        let mut hat_inv = Vec::with_capacity(from.len());
        for (i, bi) in from.iter().enumerate() {
            let mut hat = 1u64;
            for (k, bk) in from.iter().enumerate() {
                if k != i {
                    hat = bi.mul(hat, bi.reduce(bk.value()));
                }
            }
            let inv = bi.inv(hat)?;
            hat_inv.push((inv, bi.shoup(inv)));
        }
        let mut hat_mod_to = Vec::with_capacity(from.len() * to.len());
        for cj in to {
            for i in 0..from.len() {
                let mut hat = 1u64;
                for (k, bk) in from.iter().enumerate() {
                    if k != i {
                        hat = cj.mul(hat, cj.reduce(bk.value()));
                    }
                }
                hat_mod_to.push(hat);
            }
        }
        Ok(Self {
            from: from.to_vec(),
            to: to.to_vec(),
            hat_inv,
            hat_mod_to,
        })
    }

    /// Converts `input` (`|B|` limbs of `n` coefficients, limb-major, coefficient form) into
    /// `output` (`|C|` limbs). `scratch` is resized to `|B| n` words as needed.
    ///
    /// # Errors
    /// [`MathError::ShapeMismatch`] if the slice lengths do not match the bases and `n`.
    pub fn convert(
        &self,
        input: &[u64],
        output: &mut [u64],
        n: usize,
        scratch: &mut Vec<u64>,
    ) -> Result<()> {
        let (nb, nc) = (self.from.len(), self.to.len());
        if input.len() != nb * n || output.len() != nc * n {
            return Err(MathError::ShapeMismatch {
                expected_limbs: nb,
                expected_n: n,
                got_limbs: input.len() / n.max(1),
                got_n: n,
            });
        }
        if nb == 1 {
            // B/b_0 = 1: the conversion is a plain reduction.
            for (j, cj) in self.to.iter().enumerate() {
                cj.reduce_slice(&mut output[j * n..(j + 1) * n], input);
            }
            return Ok(());
        }
        scratch.resize(nb * n, 0);
        for (i, bi) in self.from.iter().enumerate() {
            let (w, ws) = self.hat_inv[i];
            for (y, &x) in scratch[i * n..(i + 1) * n]
                .iter_mut()
                .zip(&input[i * n..(i + 1) * n])
            {
                *y = bi.mul_shoup(x, w, ws);
            }
        }
        for (j, cj) in self.to.iter().enumerate() {
            let hats = &self.hat_mod_to[j * nb..(j + 1) * nb];
            let out = &mut output[j * n..(j + 1) * n];
            for (c, o) in out.iter_mut().enumerate() {
                let mut acc = 0u128;
                for (i, &h) in hats.iter().enumerate() {
                    acc += scratch[i * n + c] as u128 * h as u128;
                }
                *o = cj.reduce_u128(acc);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primes::ntt_primes;
    use proptest::prelude::*;

    fn basis(sizes: &[u32], n: usize) -> RnsBasis {
        RnsBasis::new(n, &ntt_primes(sizes, n).unwrap()).unwrap()
    }

    fn to_residues(b: &RnsBasis, xs: &[i128]) -> Vec<u64> {
        let n = xs.len();
        let mut out = vec![0u64; b.len() * n];
        for (i, m) in b.moduli().iter().enumerate() {
            for (c, &x) in xs.iter().enumerate() {
                out[i * n + c] = x.rem_euclid(m.value() as i128) as u64;
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn base_conversion_is_exact_up_to_multiples_of_b(xs in prop::collection::vec(0u64..u64::MAX, 16)) {
            let from = basis(&[30, 31], 16);
            let to = basis(&[40, 41, 42], 16);
            let big_b = from.moduli().iter().map(|m| m.value() as i128).product::<i128>();
            let xs: Vec<i128> = xs.iter().map(|&x| x as i128 % big_b).collect();
            let conv = BasisConverter::new(from.moduli(), to.moduli()).unwrap();
            let mut out = vec![0u64; 3 * 16];
            conv.convert(&to_residues(&from, &xs), &mut out, 16, &mut Vec::new()).unwrap();
            for (j, m) in to.moduli().iter().enumerate() {
                for (c, &x) in xs.iter().enumerate() {
                    let ok = (0..2).any(|alpha| ((x + alpha * big_b).rem_euclid(m.value() as i128)) as u64 == out[j * 16 + c]);
                    prop_assert!(ok);
                }
            }
        }

        #[test]
        fn division_by_last_prime_rounds(xs in prop::collection::vec(any::<i64>(), 16)) {
            let b = basis(&[50, 45, 30], 16);
            let xs: Vec<i128> = xs.iter().map(|&x| x as i128 * 1_000_003).collect();
            let q_last = b.moduli()[2].value() as i128;
            let expected: Vec<i128> = xs.iter().map(|&x| (2 * x + q_last).div_euclid(2 * q_last)).collect();
            let small = b.prefix(2).unwrap();
            let want = to_residues(&small, &expected);

            let mut p = Poly::<Coeff>::from_data(&b, to_residues(&b, &xs)).unwrap();
            b.divide_round_last_coeff(&mut p).unwrap();
            prop_assert_eq!(p.data(), &want[..]);

            let mut p = Poly::<Coeff>::from_data(&b, to_residues(&b, &xs)).unwrap().into_ntt(&b).unwrap();
            let fresh = b.divided_round_last_ntt(&p, &mut Vec::new()).unwrap();
            b.divide_round_last_ntt(&mut p, &mut Vec::new()).unwrap();
            prop_assert_eq!(&fresh, &p);
            let p = p.into_coeff(&small).unwrap();
            prop_assert_eq!(p.data(), &want[..]);
        }
    }

    #[test]
    fn rejects_duplicates_and_empty() {
        let q = ntt_primes(&[40], 16).unwrap()[0];
        assert_eq!(
            RnsBasis::new(16, &[q, q]).unwrap_err(),
            MathError::DuplicateModulus(q)
        );
        assert!(RnsBasis::new(16, &[]).is_err());
        assert!(RnsBasis::new(16, &[q + 2]).is_err());
    }
}
