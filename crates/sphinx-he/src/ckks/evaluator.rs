//! The CKKS evaluator: homomorphic arithmetic on [`Ciphertext`]s.
//!
//! Every binary operation checks that both operands carry this evaluator's parameter id and
//! the same level (and, for additions, the same scale) and returns an error otherwise.
//! Operations come as `op` (new result) and `op_assign` (in place). Ciphertexts stay in NTT
//! form throughout; only rescaling and key switching leave it internally.

use std::sync::Arc;

use rayon::prelude::*;
use sphinx_math::{Ntt, Poly, RnsBasis, lazy};

use crate::error::{HeError, Result};
use crate::params::Parameters;
use crate::rlwe::ciphertext::{Ciphertext, Plaintext};
use crate::rlwe::keys::{
    GaloisKeys, KeySwitchingKey, RelinearizationKey, conjugation_element, rotation_element,
};
use crate::rlwe::keyswitch::{key_switch_add, key_switch_add_permuted};
use crate::serialization::CompactCiphertext;

/// Coefficients per parallel task of [`Evaluator::plain_dot_products`]: small enough that
/// one block of every input and plaintext of a layer stays in cache while all outputs
/// read it.
pub const PLAIN_DOT_BLOCK: usize = 32;

/// Relative tolerance for "equal" scales in additions.
const SCALE_TOLERANCE: f64 = 1e-10;

/// Homomorphic operations for one parameter set. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Evaluator {
    params: Arc<Parameters>,
}

impl Evaluator {
    /// An evaluator for `params`.
    pub fn new(params: &Arc<Parameters>) -> Self {
        Self {
            params: Arc::clone(params),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<Parameters> {
        &self.params
    }

    fn basis_of(&self, ct: &Ciphertext) -> Result<&RnsBasis> {
        self.params.check_id(ct.param_id)?;
        self.params.q_basis(ct.level)
    }

    fn check_pair(
        &self,
        a: &Ciphertext,
        b_id: crate::ParamId,
        b_level: usize,
    ) -> Result<&RnsBasis> {
        self.params.check_id(b_id)?;
        if a.level != b_level {
            return Err(HeError::LevelMismatch {
                left: a.level,
                right: b_level,
            });
        }
        self.basis_of(a)
    }

    fn check_scales(a: f64, b: f64) -> Result<()> {
        if ((a - b) / a).abs() <= SCALE_TOLERANCE {
            Ok(())
        } else {
            Err(HeError::ScaleMismatch { left: a, right: b })
        }
    }

    fn require_size(ct: &Ciphertext, sizes: &'static str, ok: bool) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(HeError::UnsupportedCiphertextSize {
                got: ct.size(),
                supported: sizes,
            })
        }
    }

    /// `a + b`.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`], [`HeError::LevelMismatch`], [`HeError::ScaleMismatch`].
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.add_sub_new(a, b, false)
    }

    fn add_sub_new(&self, a: &Ciphertext, b: &Ciphertext, sub: bool) -> Result<Ciphertext> {
        if a.size() != b.size() {
            let mut out = a.clone();
            self.add_sub_assign(&mut out, b, sub)?;
            return Ok(out);
        }
        let basis = self.check_pair(a, b.param_id, b.level)?;
        Self::check_scales(a.scale, b.scale)?;
        // One pass per polynomial instead of a copy followed by an in-place update.
        let polys = a
            .polys
            .iter()
            .zip(&b.polys)
            .map(|(x, y)| {
                if sub {
                    Poly::difference_of(x, y, basis)
                } else {
                    Poly::sum_of(x, y, basis)
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Ciphertext {
            polys,
            param_id: a.param_id,
            level: a.level,
            scale: a.scale,
            seed: None,
        })
    }

    /// `a += b` (sizes may differ; the result has the larger size).
    ///
    /// # Errors
    /// As [`add`](Self::add).
    pub fn add_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        self.add_sub_assign(a, b, false)
    }

    /// `a - b`.
    ///
    /// # Errors
    /// As [`add`](Self::add).
    pub fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.add_sub_new(a, b, true)
    }

    /// `a -= b`.
    ///
    /// # Errors
    /// As [`add`](Self::add).
    pub fn sub_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        self.add_sub_assign(a, b, true)
    }

    /// Checks that `b` can be added to `a` and gives `a` at least `b`'s parts (zeros): the
    /// common start of every in-place sum. Returns their basis.
    fn widen_for_sum(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<RnsBasis> {
        let basis = self.check_pair(a, b.param_id, b.level)?.clone();
        Self::check_scales(a.scale, b.scale)?;
        let polys = a.polys_mut();
        while polys.len() < b.polys.len() {
            polys.push(Poly::zero(&basis));
        }
        Ok(basis)
    }

    fn add_sub_assign(&self, a: &mut Ciphertext, b: &Ciphertext, sub: bool) -> Result<()> {
        let basis = self.widen_for_sum(a, b)?;
        for (x, y) in a.polys_mut().iter_mut().zip(&b.polys) {
            if sub {
                x.sub_assign(y, &basis)?
            } else {
                x.add_assign(y, &basis)?
            }
        }
        Ok(())
    }

    /// `a += i·b`: adds `b` times the imaginary unit to every slot of `a`, so two real-valued
    /// ciphertexts travel and decrypt as one (real parts from `a`, imaginary parts from
    /// `b`; [`Encoder::decode_complex`](crate::Encoder::decode_complex)). It is the product
    /// of `b` with the monomial `X^{N/2}`, which every slot root maps to `i`: exact, no key
    /// and no noise beyond the sum's. Sizes may differ (the result has the larger one).
    ///
    /// # Errors
    /// As [`add`](Self::add).
    pub fn add_imaginary_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        let basis = self.widen_for_sum(a, b)?;
        for (x, y) in a.polys_mut().iter_mut().zip(&b.polys) {
            let units = basis.moduli().iter().zip(&self.params.imaginary_unit);
            for (i, (m, (unit, shoup))) in units.enumerate() {
                let dst = x.limb_mut(i);
                for (((d, &s), &w), &ws) in dst.iter_mut().zip(y.limb(i)).zip(unit).zip(shoup) {
                    *d = m.add(*d, m.mul_shoup(s, w, ws));
                }
            }
        }
        Ok(())
    }

    /// `-a`.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`].
    pub fn negate(&self, a: &Ciphertext) -> Result<Ciphertext> {
        let mut out = a.clone();
        self.negate_assign(&mut out)?;
        Ok(out)
    }

    /// `a = -a`.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`].
    pub fn negate_assign(&self, a: &mut Ciphertext) -> Result<()> {
        let basis = self.basis_of(a)?.clone();
        for p in a.polys_mut() {
            p.neg_assign(&basis)?;
        }
        Ok(())
    }

    /// `a + pt`.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`], [`HeError::LevelMismatch`], [`HeError::ScaleMismatch`].
    pub fn add_plain(&self, a: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        let mut out = a.clone();
        self.add_plain_assign(&mut out, pt)?;
        Ok(out)
    }

    /// `a += pt`.
    ///
    /// # Errors
    /// As [`add_plain`](Self::add_plain).
    pub fn add_plain_assign(&self, a: &mut Ciphertext, pt: &Plaintext) -> Result<()> {
        let basis = self.check_pair(a, pt.param_id, pt.level)?;
        Self::check_scales(a.scale, pt.scale)?;
        // Only c0 changes, so a seeded c1 stays valid.
        a.polys[0].add_assign(&pt.poly, basis)?;
        Ok(())
    }

    /// `a - pt`.
    ///
    /// # Errors
    /// As [`add_plain`](Self::add_plain).
    pub fn sub_plain(&self, a: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        let mut out = a.clone();
        self.sub_plain_assign(&mut out, pt)?;
        Ok(out)
    }

    /// `a -= pt`.
    ///
    /// # Errors
    /// As [`add_plain`](Self::add_plain).
    pub fn sub_plain_assign(&self, a: &mut Ciphertext, pt: &Plaintext) -> Result<()> {
        let basis = self.check_pair(a, pt.param_id, pt.level)?;
        Self::check_scales(a.scale, pt.scale)?;
        a.polys[0].sub_assign(&pt.poly, basis)?;
        Ok(())
    }

    /// `a · pt` (slot-wise); the scale multiplies, the level stays (rescale afterwards).
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`], [`HeError::LevelMismatch`].
    pub fn mul_plain(&self, a: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        let basis = self.check_pair(a, pt.param_id, pt.level)?;
        let polys = if let [c0, c1] = a.polys.as_slice() {
            // Both parts times the same plaintext: one pass per limb through the plan's
            // paired product (double precision for the small primes).
            let (mut o0, mut o1) = (Poly::<Ntt>::zero(basis), Poly::<Ntt>::zero(basis));
            for (i, plan) in basis.plans().iter().enumerate() {
                let p = [pt.poly.limb(i)];
                plan.dot_product_pair(
                    o0.limb_mut(i),
                    o1.limb_mut(i),
                    &p,
                    &[c0.limb(i)],
                    &[c1.limb(i)],
                );
            }
            vec![o0, o1]
        } else {
            a.polys
                .iter()
                .map(|p| Poly::mul(p, &pt.poly, basis))
                .collect::<std::result::Result<Vec<_>, _>>()?
        };
        Ok(Ciphertext {
            polys,
            param_id: a.param_id,
            level: a.level,
            scale: a.scale * pt.scale,
            seed: None,
        })
    }

    /// `a *= pt`.
    ///
    /// # Errors
    /// As [`mul_plain`](Self::mul_plain).
    pub fn mul_plain_assign(&self, a: &mut Ciphertext, pt: &Plaintext) -> Result<()> {
        let basis = self.check_pair(a, pt.param_id, pt.level)?.clone();
        for p in a.polys_mut() {
            p.mul_assign(&pt.poly, &basis)?;
        }
        a.scale *= pt.scale;
        Ok(())
    }

    /// `a · k` for an integer `k`: exact, consumes no level, keeps the scale.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`].
    pub fn mul_integer(&self, a: &Ciphertext, k: i64) -> Result<Ciphertext> {
        let mut out = a.clone();
        self.mul_integer_assign(&mut out, k)?;
        Ok(out)
    }

    /// `a *= k` for an integer `k`.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`].
    pub fn mul_integer_assign(&self, a: &mut Ciphertext, k: i64) -> Result<()> {
        let basis = self.basis_of(a)?.clone();
        let scalars: Vec<u64> = basis.moduli().iter().map(|m| m.reduce_i64(k)).collect();
        for p in a.polys_mut() {
            p.mul_scalar_assign(&scalars, &basis)?;
        }
        Ok(())
    }

    /// The scale a real scalar is encoded at by [`mul_scalar`](Self::mul_scalar): the prime
    /// the next rescale divides by, so that rescaling restores the ciphertext's scale exactly
    /// (the default scale at level 0).
    pub fn scalar_scale(&self, level: usize) -> f64 {
        match level {
            0 => self.params.scale(),
            l => self
                .params
                .q_primes()
                .get(l)
                .map_or(self.params.scale(), |&q| q as f64),
        }
    }

    /// `a · c` for a real `c`, encoded as `round(c · scalar_scale(level))`; the scale
    /// multiplies by `scalar_scale(level)`, so rescale afterwards.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`], [`HeError::EncodingOverflow`].
    pub fn mul_scalar(&self, a: &Ciphertext, c: f64) -> Result<Ciphertext> {
        let mut out = a.clone();
        self.mul_scalar_assign(&mut out, c)?;
        Ok(out)
    }

    /// `a *= c` for a real `c` (see [`mul_scalar`](Self::mul_scalar)).
    ///
    /// # Errors
    /// As [`mul_scalar`](Self::mul_scalar).
    pub fn mul_scalar_assign(&self, a: &mut Ciphertext, c: f64) -> Result<()> {
        let basis = self.basis_of(a)?.clone();
        let delta = self.scalar_scale(a.level);
        let k = round_to_i64(c, delta)?;
        let scalars: Vec<u64> = basis.moduli().iter().map(|m| m.reduce_i64(k)).collect();
        for p in a.polys_mut() {
            p.mul_scalar_assign(&scalars, &basis)?;
        }
        a.scale *= delta;
        Ok(())
    }

    /// `Σ_i w_i · cts[i]` for real weights, fused (one pass, no temporaries): the building
    /// block of a plaintext-weight linear layer on slot-packed ciphertexts. Each weight is
    /// encoded as `round(w_i · scalar_scale(level))`, so the result's scale is
    /// `scale · scalar_scale(level)`; rescale afterwards.
    ///
    /// # Errors
    /// [`HeError::LengthMismatch`] for empty or unequal lists; [`HeError::ParamMismatch`],
    /// [`HeError::LevelMismatch`], [`HeError::ScaleMismatch`] or
    /// [`HeError::UnsupportedCiphertextSize`] if the ciphertexts differ;
    /// [`HeError::EncodingOverflow`].
    pub fn linear_combination(&self, cts: &[&Ciphertext], weights: &[f64]) -> Result<Ciphertext> {
        if cts.len() != weights.len() {
            return Err(HeError::LengthMismatch {
                left: cts.len(),
                right: weights.len(),
            });
        }
        let mut out = self.linear_combinations(cts, weights)?;
        out.pop().ok_or(HeError::LengthMismatch {
            left: cts.len(),
            right: weights.len(),
        })
    }

    /// Several linear combinations of the same ciphertexts at once: output `j` is
    /// `Σ_i weights[j · cts.len() + i] · cts[i]` (`weights` row-major, one row per output),
    /// encoded and scaled as in [`linear_combination`](Self::linear_combination). Sharing the
    /// inputs lets each block of them be read from memory once for all outputs, and the
    /// products are summed unreduced (`sphinx_math::lazy`), one reduction per output
    /// coefficient.
    ///
    /// # Errors
    /// As [`linear_combination`](Self::linear_combination); [`HeError::LengthMismatch`] if
    /// `weights.len()` is not a positive multiple of `cts.len()`.
    pub fn linear_combinations(
        &self,
        cts: &[&Ciphertext],
        weights: &[f64],
    ) -> Result<Vec<Ciphertext>> {
        let level = cts.first().map_or(0, |c| c.level);
        let delta = self.scalar_scale(level);
        let ints = weights
            .iter()
            .map(|&w| round_to_i64(w, delta))
            .collect::<Result<Vec<_>>>()?;
        let mut out = self.linear_combinations_integer(cts, &ints)?;
        for ct in &mut out {
            ct.scale *= delta;
        }
        Ok(out)
    }

    /// Several slot-wise linear combinations with plaintext *vectors*: output `j` is
    /// `Σ_i pts[j · cts.len() + i] ⊙ cts[i]` over the `i` where the plaintext is present (an
    /// output without terms is an encryption of zero). Like
    /// [`linear_combinations`](Self::linear_combinations), but each weight may differ from
    /// slot to slot, so one output can carry different units in different slot blocks.
    /// Every plaintext has the ciphertexts' level and one common scale, which multiplies the
    /// result's; rescale afterwards. Products are summed unreduced
    /// (`sphinx_math::lazy::plain_matmul`).
    ///
    /// # Errors
    /// [`HeError::LengthMismatch`] for an empty `cts` or if `pts.len()` is not a positive
    /// multiple of `cts.len()`; [`HeError::ParamMismatch`], [`HeError::LevelMismatch`],
    /// [`HeError::ScaleMismatch`] or [`HeError::UnsupportedCiphertextSize`] if the operands
    /// differ.
    pub fn plain_linear_combinations(
        &self,
        cts: &[&Ciphertext],
        pts: &[Option<&Plaintext>],
    ) -> Result<Vec<Ciphertext>> {
        let first = match cts.first() {
            Some(c) if pts.len().is_multiple_of(cts.len()) && !pts.is_empty() => *c,
            _ => {
                return Err(HeError::LengthMismatch {
                    left: cts.len(),
                    right: pts.len(),
                });
            }
        };
        let rows = pts.len() / cts.len();
        let basis = self.basis_of(first)?;
        for ct in cts {
            self.check_pair(first, ct.param_id, ct.level)?;
            Self::check_scales(first.scale, ct.scale)?;
            Self::require_size(ct, "equal sizes", ct.size() == first.size())?;
        }
        let mut pt_scale = None;
        for pt in pts.iter().flatten() {
            self.check_pair(first, pt.param_id, pt.level)?;
            match pt_scale {
                None => pt_scale = Some(pt.scale),
                Some(s) => Self::check_scales(s, pt.scale)?,
            }
        }
        let mut polys: Vec<Vec<Poly<Ntt>>> = (0..rows)
            .map(|_| (0..first.size()).map(|_| Poly::zero(basis)).collect())
            .collect();
        for (i, m) in basis.moduli().iter().enumerate() {
            let ps: Vec<Option<&[u64]>> = pts.iter().map(|p| p.map(|p| p.poly.limb(i))).collect();
            for part in 0..first.size() {
                let xs: Vec<&[u64]> = cts.iter().map(|ct| ct.polys[part].limb(i)).collect();
                let mut outs: Vec<&mut [u64]> =
                    polys.iter_mut().map(|p| p[part].limb_mut(i)).collect();
                lazy::plain_matmul(m, &xs, &ps, &mut outs)?;
            }
        }
        let scale = first.scale * pt_scale.unwrap_or(1.0);
        Ok(polys
            .into_iter()
            .map(|polys| Ciphertext {
                polys,
                param_id: first.param_id,
                level: first.level,
                scale,
                seed: None,
            })
            .collect())
    }

    /// Sparse slot-wise products with plaintext vectors, for a whole layer at once: output
    /// `j` is `Σ_{(i, k) ∈ terms[j]} pts[k] ⊙ cts[i]` (an output without terms is an
    /// encryption of zero). The work runs in parallel over blocks of
    /// [`PLAIN_DOT_BLOCK`] coefficients of each limb, every block computing all outputs,
    /// so each input and plaintext is read from memory once however many outputs use it
    /// (`sphinx_math::lazy::plain_dot_products`). Ciphertexts have two parts, one level and
    /// one scale; plaintexts their level and one common scale, which multiplies the result's;
    /// rescale afterwards.
    ///
    /// # Errors
    /// [`HeError::LengthMismatch`] for an empty `cts` or `pts`, or an index out of range;
    /// [`HeError::ParamMismatch`], [`HeError::LevelMismatch`], [`HeError::ScaleMismatch`],
    /// [`HeError::UnsupportedCiphertextSize`].
    pub fn plain_dot_products(
        &self,
        cts: &[&Ciphertext],
        pts: &[&Plaintext],
        terms: &[&[(u32, u32)]],
    ) -> Result<Vec<Ciphertext>> {
        let (Some(&first), Some(&pt0)) = (cts.first(), pts.first()) else {
            return Err(HeError::LengthMismatch {
                left: cts.len(),
                right: pts.len(),
            });
        };
        if let Some(&(i, k)) = terms
            .iter()
            .flat_map(|t| t.iter())
            .find(|&&(i, k)| i as usize >= cts.len() || k as usize >= pts.len())
        {
            return Err(HeError::LengthMismatch {
                left: cts.len().min(pts.len()),
                right: (i.max(k)) as usize,
            });
        }
        let basis = self.basis_of(first)?;
        for ct in cts {
            self.check_pair(first, ct.param_id, ct.level)?;
            Self::check_scales(first.scale, ct.scale)?;
            Self::require_size(ct, "2", ct.size() == 2)?;
        }
        for pt in pts {
            self.check_pair(first, pt.param_id, pt.level)?;
            Self::check_scales(pt0.scale, pt.scale)?;
        }
        let n = self.params.n();
        let block = PLAIN_DOT_BLOCK.min(n);
        let limbs = basis.moduli().len();
        let mut polys: Vec<[Poly<Ntt>; 2]> = terms
            .iter()
            .map(|_| [Poly::zero(basis), Poly::zero(basis)])
            .collect();
        // Task b writes coefficient block b (limb-major) of every output.
        let mut tasks: Vec<Vec<[&mut [u64]; 2]>> = (0..limbs * n / block)
            .map(|_| Vec::with_capacity(terms.len()))
            .collect();
        for [p0, p1] in &mut polys {
            for (task, (c0, c1)) in tasks.iter_mut().zip(
                p0.data_mut()
                    .chunks_mut(block)
                    .zip(p1.data_mut().chunks_mut(block)),
            ) {
                task.push([c0, c1]);
            }
        }
        let moduli = basis.moduli();
        tasks
            .into_par_iter()
            .enumerate()
            .try_for_each(|(b, mut outs)| {
                let range = b * block..(b + 1) * block;
                let m = &moduli[b * block / n];
                let xs: Vec<[&[u64]; 2]> = cts
                    .iter()
                    .map(|c| {
                        [
                            &c.polys[0].data()[range.clone()],
                            &c.polys[1].data()[range.clone()],
                        ]
                    })
                    .collect();
                let ps: Vec<&[u64]> = pts.iter().map(|p| &p.poly.data()[range.clone()]).collect();
                lazy::plain_dot_products(m, &xs, &ps, terms, &mut outs)
            })?;
        let scale = first.scale * pt0.scale;
        Ok(polys
            .into_iter()
            .map(|polys| Ciphertext {
                polys: polys.into(),
                param_id: first.param_id,
                level: first.level,
                scale,
                seed: None,
            })
            .collect())
    }

    /// `Σ_i k_i · cts[i]` for integer weights: exact, consumes no level, keeps the scale.
    ///
    /// # Errors
    /// As [`linear_combination`](Self::linear_combination).
    pub fn linear_combination_integer(
        &self,
        cts: &[&Ciphertext],
        weights: &[i64],
    ) -> Result<Ciphertext> {
        if cts.len() != weights.len() {
            return Err(HeError::LengthMismatch {
                left: cts.len(),
                right: weights.len(),
            });
        }
        let mut out = self.linear_combinations_integer(cts, weights)?;
        out.pop().ok_or(HeError::LengthMismatch {
            left: cts.len(),
            right: weights.len(),
        })
    }

    /// [`linear_combinations`](Self::linear_combinations) with integer weights: exact,
    /// consumes no level, keeps the scale.
    ///
    /// # Errors
    /// As [`linear_combinations`](Self::linear_combinations).
    pub fn linear_combinations_integer(
        &self,
        cts: &[&Ciphertext],
        weights: &[i64],
    ) -> Result<Vec<Ciphertext>> {
        let first = match cts.first() {
            Some(c) if weights.len().is_multiple_of(cts.len()) && !weights.is_empty() => *c,
            _ => {
                return Err(HeError::LengthMismatch {
                    left: cts.len(),
                    right: weights.len(),
                });
            }
        };
        let rows = weights.len() / cts.len();
        let basis = self.basis_of(first)?;
        for ct in cts {
            self.check_pair(first, ct.param_id, ct.level)?;
            Self::check_scales(first.scale, ct.scale)?;
            Self::require_size(ct, "equal sizes", ct.size() == first.size())?;
        }
        let mut polys: Vec<Vec<Poly<Ntt>>> = (0..rows)
            .map(|_| (0..first.size()).map(|_| Poly::zero(basis)).collect())
            .collect();
        for (i, m) in basis.moduli().iter().enumerate() {
            for part in 0..first.size() {
                let xs: Vec<&[u64]> = cts.iter().map(|ct| ct.polys[part].limb(i)).collect();
                let mut outs: Vec<&mut [u64]> =
                    polys.iter_mut().map(|p| p[part].limb_mut(i)).collect();
                lazy::scalar_matmul(m, &xs, weights, &mut outs)?;
            }
        }
        Ok(polys
            .into_iter()
            .map(|polys| Ciphertext {
                polys,
                param_id: first.param_id,
                level: first.level,
                scale: first.scale,
                seed: None,
            })
            .collect())
    }

    /// `Σ_i a_i · b_i` without relinearization: a 3-part ciphertext decrypting under
    /// `(1, s, s²)`, computed in one pass with the products summed unreduced
    /// (`sphinx_math::lazy::tensor_sum`), so one reduction per output coefficient. Every
    /// operand has two parts and the pair list's level; the products' scales must agree.
    ///
    /// # Errors
    /// [`HeError::LengthMismatch`] for an empty list; [`HeError::ParamMismatch`],
    /// [`HeError::LevelMismatch`], [`HeError::ScaleMismatch`],
    /// [`HeError::UnsupportedCiphertextSize`].
    pub fn multiply_sum(&self, pairs: &[(&Ciphertext, &Ciphertext)]) -> Result<Ciphertext> {
        let Some(&(a0, b0)) = pairs.first() else {
            return Err(HeError::LengthMismatch { left: 0, right: 0 });
        };
        let basis = self.basis_of(a0)?;
        let scale = a0.scale * b0.scale;
        for &(a, b) in pairs {
            self.check_pair(a0, a.param_id, a.level)?;
            self.check_pair(a0, b.param_id, b.level)?;
            Self::require_size(a, "2", a.size() == 2)?;
            Self::require_size(b, "2", b.size() == 2)?;
            Self::check_scales(scale, a.scale * b.scale)?;
        }
        let mut c = [Poly::zero(basis), Poly::zero(basis), Poly::zero(basis)];
        for (i, m) in basis.moduli().iter().enumerate() {
            let terms: Vec<lazy::TensorTerm<'_>> = pairs
                .iter()
                .map(|(a, b)| {
                    [
                        a.polys[0].limb(i),
                        a.polys[1].limb(i),
                        b.polys[0].limb(i),
                        b.polys[1].limb(i),
                    ]
                })
                .collect();
            let [c0, c1, c2] = &mut c;
            lazy::tensor_sum(m, &terms, [c0.limb_mut(i), c1.limb_mut(i), c2.limb_mut(i)])?;
        }
        Ok(Ciphertext {
            polys: c.into(),
            param_id: a0.param_id,
            level: a0.level,
            scale,
            seed: None,
        })
    }

    /// Several [`multiply_sum`](Self::multiply_sum)s sharing their left operands: output `j`
    /// is `Σ_t lhs[t] · rhs[j][t]` over the `t` where `rhs[j][t]` is present (3 parts, no
    /// relinearization; an output without terms is an encryption of zero). Each block of
    /// `lhs[t]` is read once for all outputs (`sphinx_math::lazy::tensor_sums_shared`).
    /// Every operand has two parts, the level and the scale of `lhs[0]`; outputs have the
    /// squared scale.
    ///
    /// # Errors
    /// [`HeError::LengthMismatch`] for an empty `lhs` or a row of `rhs` of another length;
    /// [`HeError::ParamMismatch`], [`HeError::LevelMismatch`], [`HeError::ScaleMismatch`],
    /// [`HeError::UnsupportedCiphertextSize`].
    pub fn multiply_sums_shared(
        &self,
        lhs: &[&Ciphertext],
        rhs: &[Vec<Option<&Ciphertext>>],
    ) -> Result<Vec<Ciphertext>> {
        let Some(&first) = lhs.first() else {
            return Err(HeError::LengthMismatch { left: 0, right: 0 });
        };
        if let Some(row) = rhs.iter().find(|r| r.len() != lhs.len()) {
            return Err(HeError::LengthMismatch {
                left: lhs.len(),
                right: row.len(),
            });
        }
        let basis = self.basis_of(first)?;
        for &ct in lhs.iter().chain(rhs.iter().flatten().flatten()) {
            self.check_pair(first, ct.param_id, ct.level)?;
            Self::require_size(ct, "2", ct.size() == 2)?;
            Self::check_scales(first.scale, ct.scale)?;
        }
        let mut polys: Vec<[Poly<Ntt>; 3]> = rhs
            .iter()
            .map(|_| [Poly::zero(basis), Poly::zero(basis), Poly::zero(basis)])
            .collect();
        for (i, m) in basis.moduli().iter().enumerate() {
            let l: Vec<[&[u64]; 2]> = lhs
                .iter()
                .map(|c| [c.polys[0].limb(i), c.polys[1].limb(i)])
                .collect();
            let r: Vec<Vec<Option<[&[u64]; 2]>>> = rhs
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|c| c.map(|c| [c.polys[0].limb(i), c.polys[1].limb(i)]))
                        .collect()
                })
                .collect();
            let mut outs: Vec<[&mut [u64]; 3]> = polys
                .iter_mut()
                .map(|[a, b, c]| [a.limb_mut(i), b.limb_mut(i), c.limb_mut(i)])
                .collect();
            lazy::tensor_sums_shared(m, &l, &r, &mut outs)?;
        }
        Ok(polys
            .into_iter()
            .map(|p| Ciphertext {
                polys: p.into(),
                param_id: first.param_id,
                level: first.level,
                scale: first.scale * first.scale,
                seed: None,
            })
            .collect())
    }

    /// `a + c` for a real `c` added to every slot (at the ciphertext's scale).
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`], [`HeError::EncodingOverflow`].
    pub fn add_scalar(&self, a: &Ciphertext, c: f64) -> Result<Ciphertext> {
        let mut out = a.clone();
        self.add_scalar_assign(&mut out, c)?;
        Ok(out)
    }

    /// `a += c` for a real `c` in every slot.
    ///
    /// # Errors
    /// As [`add_scalar`](Self::add_scalar).
    pub fn add_scalar_assign(&self, a: &mut Ciphertext, c: f64) -> Result<()> {
        let basis = self.basis_of(a)?.clone();
        let k = round_to_i64(c, a.scale)?;
        // A constant polynomial has the same value at every evaluation point.
        let n = self.params.n();
        for (i, m) in basis.moduli().iter().enumerate() {
            let v = m.reduce_i64(k);
            for x in &mut a.polys[0].data_mut()[i * n..(i + 1) * n] {
                *x = m.add(*x, v);
            }
        }
        Ok(())
    }

    /// `a · b` without relinearization: a 3-part ciphertext decrypting under `(1, s, s²)`.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`], [`HeError::LevelMismatch`],
    /// [`HeError::UnsupportedCiphertextSize`] unless both have 2 parts.
    pub fn multiply(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        let basis = self.check_pair(a, b.param_id, b.level)?;
        Self::require_size(a, "2", a.size() == 2)?;
        Self::require_size(b, "2", b.size() == 2)?;
        let (a0, a1, b0, b1) = (&a.polys[0], &a.polys[1], &b.polys[0], &b.polys[1]);
        let c0 = Poly::mul(a0, b0, basis)?;
        let mut c1 = Poly::mul(a0, b1, basis)?;
        c1.mul_add_assign(a1, b0, basis)?;
        let c2 = Poly::mul(a1, b1, basis)?;
        Ok(Ciphertext {
            polys: vec![c0, c1, c2],
            param_id: a.param_id,
            level: a.level,
            scale: a.scale * b.scale,
            seed: None,
        })
    }

    /// `a · b` followed by relinearization.
    ///
    /// # Errors
    /// As [`multiply`](Self::multiply) and [`relinearize`](Self::relinearize).
    pub fn multiply_relin(
        &self,
        a: &Ciphertext,
        b: &Ciphertext,
        rlk: &RelinearizationKey,
    ) -> Result<Ciphertext> {
        let mut out = self.multiply(a, b)?;
        self.relinearize_assign(&mut out, rlk)?;
        Ok(out)
    }

    /// Relinearizes a 3-part ciphertext to 2 parts (2-part input is returned unchanged).
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`], [`HeError::NoSpecialPrimes`].
    pub fn relinearize(&self, a: &Ciphertext, rlk: &RelinearizationKey) -> Result<Ciphertext> {
        self.basis_of(a)?;
        match a.polys.as_slice() {
            [c0, c1, c2] => {
                // Copy only c0 and c1; c2 is read in place.
                let (mut d0, mut d1) = (c0.clone(), c1.clone());
                key_switch_add(&self.params, a.level, c2, &rlk.0, &mut d0, &mut d1)?;
                Ok(Ciphertext {
                    polys: vec![d0, d1],
                    param_id: a.param_id,
                    level: a.level,
                    scale: a.scale,
                    seed: None,
                })
            }
            _ => {
                let mut out = a.clone();
                self.relinearize_assign(&mut out, rlk)?;
                Ok(out)
            }
        }
    }

    /// In-place [`relinearize`](Self::relinearize).
    ///
    /// # Errors
    /// As [`relinearize`](Self::relinearize).
    pub fn relinearize_assign(&self, a: &mut Ciphertext, rlk: &RelinearizationKey) -> Result<()> {
        self.basis_of(a)?;
        if a.size() == 2 {
            return Ok(());
        }
        Self::require_size(a, "2 or 3", a.size() == 3)?;
        let level = a.level;
        let polys = a.polys_mut();
        let c2 = polys.pop().ok_or(HeError::UnsupportedCiphertextSize {
            got: 0,
            supported: "3",
        })?;
        let (c0, rest) = polys.split_at_mut(1);
        key_switch_add(&self.params, level, &c2, &rlk.0, &mut c0[0], &mut rest[0])
    }

    /// Divides by the last prime of the level (rounding) and drops it: level − 1, scale / q_level.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`], [`HeError::InvalidLevel`] at level 0.
    pub fn rescale(&self, a: &Ciphertext) -> Result<Ciphertext> {
        let basis = self.basis_of(a)?;
        if a.level == 0 {
            return Err(HeError::InvalidLevel {
                level: 0,
                min: 1,
                max: self.params.max_level(),
            });
        }
        // Out of place: the input is read once and the result written once, with no copy of
        // the limbs the division overwrites or drops.
        let mut scratch = Vec::new();
        let polys = a
            .polys
            .iter()
            .map(|p| basis.divided_round_last_ntt(p, &mut scratch))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Ciphertext {
            polys,
            param_id: a.param_id,
            level: a.level - 1,
            scale: a.scale / self.params.q_primes()[a.level] as f64,
            seed: None,
        })
    }

    /// [`rescale`](Self::rescale) from level 1 to 0 followed by
    /// [`CompactCiphertext::from_ciphertext`], with the division done on coefficients:
    /// both limbs of each part are taken out of the NTT domain and divided there, so no part
    /// goes back into it only to leave it again for the switch (one NTT fewer per part).
    /// The result is identical to the two steps done one after the other.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`], [`HeError::InvalidLevel`] unless `a` is at level 1,
    /// errors of [`CompactCiphertext::from_ciphertext`].
    pub fn rescale_to_compact(&self, a: &Ciphertext, bits: u32) -> Result<CompactCiphertext> {
        let basis = self.basis_of(a)?;
        if a.level != 1 {
            return Err(HeError::InvalidLevel {
                level: a.level,
                min: 1,
                max: 1,
            });
        }
        let parts = a
            .polys
            .iter()
            .map(|p| {
                let mut c = p.clone().into_coeff(basis)?;
                basis.divide_round_last_coeff(&mut c)?;
                Ok(c)
            })
            .collect::<Result<Vec<_>>>()?;
        let scale = a.scale / self.params.q_primes()[1] as f64;
        CompactCiphertext::from_coeff_parts(&self.params, &parts, scale, bits)
    }

    /// In-place [`rescale`](Self::rescale).
    ///
    /// # Errors
    /// As [`rescale`](Self::rescale).
    pub fn rescale_assign(&self, a: &mut Ciphertext) -> Result<()> {
        let basis = self.basis_of(a)?.clone();
        if a.level == 0 {
            return Err(HeError::InvalidLevel {
                level: 0,
                min: 1,
                max: self.params.max_level(),
            });
        }
        let q_last = self.params.q_primes()[a.level] as f64;
        let mut scratch = Vec::new();
        for p in a.polys_mut() {
            basis.divide_round_last_ntt(p, &mut scratch)?;
        }
        a.level -= 1;
        a.scale /= q_last;
        Ok(())
    }

    /// Drops primes down to `level` without dividing (value and scale unchanged); use before
    /// combining operands of different levels, or to shrink results before sending them.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`], [`HeError::InvalidLevel`] if `level` is above the current one.
    pub fn drop_to_level(&self, a: &Ciphertext, level: usize) -> Result<Ciphertext> {
        let mut out = a.clone();
        self.drop_to_level_assign(&mut out, level)?;
        Ok(out)
    }

    /// In-place [`drop_to_level`](Self::drop_to_level).
    ///
    /// # Errors
    /// As [`drop_to_level`](Self::drop_to_level).
    pub fn drop_to_level_assign(&self, a: &mut Ciphertext, level: usize) -> Result<()> {
        self.basis_of(a)?;
        if level > a.level {
            return Err(HeError::InvalidLevel {
                level,
                min: 0,
                max: a.level,
            });
        }
        let keep = level + 1;
        a.level = level;
        // Truncating c1's limbs keeps it a prefix of the seed's expansion, so the seed stays valid.
        for p in a.polys.iter_mut() {
            p.truncate(keep);
        }
        Ok(())
    }

    /// Applies `X -> X^k` and switches back to `s` with `key` (for `s(X^k) -> s`).
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`], [`HeError::UnsupportedCiphertextSize`] for 3 parts.
    pub fn apply_galois(
        &self,
        a: &Ciphertext,
        perm: &[u32],
        key: &KeySwitchingKey,
    ) -> Result<Ciphertext> {
        let basis = self.basis_of(a)?;
        Self::require_size(a, "2", a.size() == 2)?;
        let mut c0 = a.polys[0].permute(perm)?;
        let mut out1 = Poly::<Ntt>::zero(basis);
        key_switch_add_permuted(
            &self.params,
            a.level,
            &a.polys[1],
            Some(perm),
            key,
            &mut c0,
            &mut out1,
        )?;
        Ok(Ciphertext {
            polys: vec![c0, out1],
            param_id: a.param_id,
            level: a.level,
            scale: a.scale,
            seed: None,
        })
    }

    fn galois_with(&self, a: &Ciphertext, k: u64, gk: &GaloisKeys) -> Result<Ciphertext> {
        self.params.check_id(gk.param_id)?;
        let key = gk.get(k).ok_or(HeError::MissingGaloisKey { element: k })?;
        let perm = gk
            .perms
            .get(&k)
            .ok_or(HeError::MissingGaloisKey { element: k })?;
        self.apply_galois(a, perm, key)
    }

    /// Rotates the slots left by `steps` (right if negative). Uses the key for `steps` if
    /// present, otherwise composes power-of-two rotations.
    ///
    /// # Errors
    /// [`HeError::MissingGaloisKey`], [`HeError::InvalidRotation`], and those of
    /// [`apply_galois`](Self::apply_galois).
    pub fn rotate(&self, a: &Ciphertext, steps: i64, gk: &GaloisKeys) -> Result<Ciphertext> {
        let n = self.params.n();
        let slots = self.params.slots() as i64;
        let k = rotation_element(steps, n)?;
        if k == 1 {
            return Ok(a.clone());
        }
        if gk.get(k).is_some() {
            return self.galois_with(a, k, gk);
        }
        // Compose from power-of-two rotations: the signed-digit (NAF) form needs the fewest
        // key switches (each adds noise); plain binary needs only the left keys.
        let r = steps.rem_euclid(slots);
        for plan in [naf_steps(r, slots), binary_steps(r)] {
            let elements = plan
                .iter()
                .map(|&s| rotation_element(s, n))
                .collect::<Result<Vec<_>>>()?;
            if elements.iter().all(|&e| gk.get(e).is_some()) {
                let mut out = a.clone();
                for e in elements {
                    out = self.galois_with(&out, e, gk)?;
                }
                return Ok(out);
            }
        }
        Err(HeError::MissingGaloisKey { element: k })
    }

    /// In-place [`rotate`](Self::rotate).
    ///
    /// # Errors
    /// As [`rotate`](Self::rotate).
    pub fn rotate_assign(&self, a: &mut Ciphertext, steps: i64, gk: &GaloisKeys) -> Result<()> {
        *a = self.rotate(a, steps, gk)?;
        Ok(())
    }

    /// Complex conjugation of every slot.
    ///
    /// # Errors
    /// [`HeError::MissingGaloisKey`] if the keys lack conjugation.
    pub fn conjugate(&self, a: &Ciphertext, gk: &GaloisKeys) -> Result<Ciphertext> {
        self.galois_with(a, conjugation_element(self.params.n()), gk)
    }

    /// Every slot becomes the sum of all slots (needs the positive power-of-two rotations).
    ///
    /// # Errors
    /// As [`rotate`](Self::rotate).
    pub fn sum_slots(&self, a: &Ciphertext, gk: &GaloisKeys) -> Result<Ciphertext> {
        let mut acc = a.clone();
        let mut step = 1i64;
        while step < self.params.slots() as i64 {
            let rotated = self.rotate(&acc, step, gk)?;
            self.add_assign(&mut acc, &rotated)?;
            step *= 2;
        }
        Ok(acc)
    }

    /// Applies `op` to every ciphertext in parallel (rayon), stopping at the first error.
    ///
    /// # Errors
    /// The first error `op` returns.
    pub fn par_map<F>(&self, cts: &[Ciphertext], op: F) -> Result<Vec<Ciphertext>>
    where
        F: Fn(&Self, &Ciphertext) -> Result<Ciphertext> + Sync + Send,
    {
        cts.par_iter().map(|ct| op(self, ct)).collect()
    }
}

/// Signed power-of-two steps summing to `r` modulo `slots` (non-adjacent form).
fn naf_steps(mut r: i64, slots: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut bit = 1i64;
    while r != 0 {
        if r & 1 == 1 {
            let d = 2 - (r & 3); // ±1
            r -= d;
            if bit < slots {
                out.push(d * bit);
            }
        }
        r >>= 1;
        bit <<= 1;
    }
    out
}

/// Left power-of-two steps summing to `r`.
fn binary_steps(r: i64) -> Vec<i64> {
    (0..63)
        .filter(|i| (r >> i) & 1 == 1)
        .map(|i| 1i64 << i)
        .collect()
}

fn round_to_i64(c: f64, scale: f64) -> Result<i64> {
    let x = (c * scale).round();
    if !x.is_finite() || x.abs() >= 9.2e18 {
        return Err(HeError::EncodingOverflow { value: c, scale });
    }
    Ok(x as i64)
}
