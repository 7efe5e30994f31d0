//! CKKS encoding: `N/2` complex (or real) slots to a scaled integer polynomial and back,
//! through the canonical embedding computed by an `O(N log N)` special FFT.

use std::sync::Arc;

use sphinx_math::{Coeff, Poly};

use crate::ckks::fft::{Complex, SpecialFft};
use crate::error::{HeError, Result};
use crate::params::Parameters;
use crate::rlwe::ciphertext::{Plaintext, check_scale};

/// Encodes and decodes CKKS plaintexts for one parameter set.
#[derive(Debug, Clone)]
pub struct Encoder {
    params: Arc<Parameters>,
    fft: SpecialFft,
}

/// Largest magnitude of an encoded coefficient (`value × scale` must stay below it).
const MAX_COEFF: f64 = 9.2e18; // just under 2^63

impl Encoder {
    /// An encoder for `params`.
    pub fn new(params: &Arc<Parameters>) -> Self {
        Self {
            params: Arc::clone(params),
            fft: SpecialFft::new(params.n()),
        }
    }

    /// Number of slots, `N/2`.
    pub fn slots(&self) -> usize {
        self.params.slots()
    }

    /// Encodes real values (missing slots are zero) at `scale` and `level`.
    ///
    /// # Errors
    /// [`HeError::TooManyValues`], [`HeError::EncodingOverflow`] (a coefficient beyond `2^63`
    /// or a non-finite value), [`HeError::InvalidScale`], [`HeError::InvalidLevel`].
    pub fn encode(&self, values: &[f64], scale: f64, level: usize) -> Result<Plaintext> {
        let slots: Vec<Complex> = values.iter().map(|&v| Complex::new(v, 0.0)).collect();
        self.encode_complex(&slots, scale, level)
    }

    /// Encodes complex values (missing slots are zero).
    ///
    /// # Errors
    /// As [`encode`](Self::encode).
    pub fn encode_complex(
        &self,
        values: &[Complex],
        scale: f64,
        level: usize,
    ) -> Result<Plaintext> {
        let slots = self.slots();
        if values.len() > slots {
            return Err(HeError::TooManyValues {
                got: values.len(),
                slots,
            });
        }
        let coeffs = self.coefficients_of(values);
        self.encode_coefficients(&coeffs, scale, level)
            .map_err(|e| match e {
                HeError::EncodingOverflow { .. } => HeError::EncodingOverflow {
                    value: values
                        .iter()
                        .map(|c| c.re.abs().max(c.im.abs()))
                        .fold(0.0, f64::max),
                    scale,
                },
                other => other,
            })
    }

    /// The real coefficients of the unscaled encoding of `values` (length `N`):
    /// [`encode`](Self::encode) at scale `Δ` rounds `Δ ·` these. The map is linear, so a
    /// caller that encodes many combinations `Σ_r w_r · v_r` of a few vectors can combine
    /// their coefficients instead (`N · R` operations instead of an FFT each) and pass the
    /// result to [`encode_coefficients`](Self::encode_coefficients).
    ///
    /// # Errors
    /// [`HeError::TooManyValues`].
    pub fn to_coefficients(&self, values: &[f64]) -> Result<Vec<f64>> {
        let slots = self.slots();
        if values.len() > slots {
            return Err(HeError::TooManyValues {
                got: values.len(),
                slots,
            });
        }
        let z: Vec<Complex> = values.iter().map(|&v| Complex::new(v, 0.0)).collect();
        Ok(self.coefficients_of(&z))
    }

    /// The unscaled coefficients of at most `slots` complex values (missing ones zero).
    fn coefficients_of(&self, values: &[Complex]) -> Vec<f64> {
        let slots = self.slots();
        let mut z = values.to_vec();
        z.resize(slots, Complex::default());
        let mut w = Vec::new();
        self.fft.slots_to_coeffs(&z, &mut w);
        let mut coeffs = vec![0.0; self.params.n()];
        for (k, wk) in w.iter().enumerate() {
            coeffs[k] = wk.re;
            coeffs[k + slots] = wk.im;
        }
        coeffs
    }

    /// The plaintext `round(scale · coeffs)` at `level` (see
    /// [`to_coefficients`](Self::to_coefficients)).
    ///
    /// # Errors
    /// [`HeError::LengthMismatch`] unless `coeffs` has `N` entries;
    /// [`HeError::EncodingOverflow`] (a coefficient beyond `2^63` or not finite),
    /// [`HeError::InvalidScale`], [`HeError::InvalidLevel`].
    pub fn encode_coefficients(
        &self,
        coeffs: &[f64],
        scale: f64,
        level: usize,
    ) -> Result<Plaintext> {
        let n = self.params.n();
        if coeffs.len() != n {
            return Err(HeError::LengthMismatch {
                left: n,
                right: coeffs.len(),
            });
        }
        check_scale(scale)?;
        let basis = self.params.q_basis(level)?;
        let mut ints = vec![0i64; n];
        for (dst, &v) in ints.iter_mut().zip(coeffs) {
            let x = round(v * scale);
            if !x.is_finite() || x.abs() >= MAX_COEFF {
                return Err(HeError::EncodingOverflow { value: v, scale });
            }
            *dst = x as i64;
        }
        let poly = Poly::<Coeff>::from_i64(basis, &ints)?.into_ntt(basis)?;
        Plaintext::from_poly(&self.params, poly, level, scale)
    }

    /// Decodes the real parts of all slots.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`] if `pt` belongs to other parameters.
    pub fn decode(&self, pt: &Plaintext) -> Result<Vec<f64>> {
        Ok(self.decode_complex(pt)?.into_iter().map(|c| c.re).collect())
    }

    /// Decodes all slots.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`] if `pt` belongs to other parameters.
    pub fn decode_complex(&self, pt: &Plaintext) -> Result<Vec<Complex>> {
        self.params.check_id(pt.param_id)?;
        let basis = self.params.q_basis(pt.level)?;
        let coeffs = pt.poly.clone().into_coeff(basis)?;
        self.decode_complex_coeffs(&coeffs, pt.level, pt.scale)
    }

    /// [`decode`](Self::decode) of a plaintext given by its coefficients at `level` and
    /// `scale` (what [`SecretKey::decrypt_compact`](crate::SecretKey::decrypt_compact)
    /// returns, at level 0 and the compact ciphertext's scale).
    ///
    /// # Errors
    /// [`HeError::InvalidLevel`], [`HeError::InvalidScale`]; a polynomial not over the
    /// primes of `level`.
    pub fn decode_coeffs(
        &self,
        coeffs: &Poly<Coeff>,
        level: usize,
        scale: f64,
    ) -> Result<Vec<f64>> {
        Ok(self
            .decode_coeffs_complex(coeffs, level, scale)?
            .into_iter()
            .map(|c| c.re)
            .collect())
    }

    /// [`decode_complex`](Self::decode_complex) of a plaintext given by its coefficients,
    /// as [`decode_coeffs`](Self::decode_coeffs) takes them: both parts of every slot, e.g.
    /// the two real results a server packed into one ciphertext with
    /// [`Evaluator::add_imaginary_assign`](crate::Evaluator::add_imaginary_assign).
    ///
    /// # Errors
    /// As [`decode_coeffs`](Self::decode_coeffs).
    pub fn decode_coeffs_complex(
        &self,
        coeffs: &Poly<Coeff>,
        level: usize,
        scale: f64,
    ) -> Result<Vec<Complex>> {
        let basis = self.params.q_basis(level)?;
        if coeffs.data().len() != basis.len() * basis.n() {
            return Err(HeError::InvalidLevel {
                level: coeffs.data().len() / basis.n().max(1),
                min: level,
                max: level,
            });
        }
        check_scale(scale)?;
        self.decode_complex_coeffs(coeffs, level, scale)
    }

    fn decode_complex_coeffs(
        &self,
        coeffs: &Poly<Coeff>,
        level: usize,
        scale: f64,
    ) -> Result<Vec<Complex>> {
        let values = self.crt_to_f64(coeffs, level);
        let slots = self.slots();
        let inv_scale = 1.0 / scale;
        let mut w: Vec<Complex> = (0..slots)
            .map(|k| Complex::new(values[k] * inv_scale, values[k + slots] * inv_scale))
            .collect();
        let mut out = Vec::new();
        self.fft.coeffs_to_slots(&mut w, &mut out);
        Ok(out)
    }

    /// Centered integer value of each coefficient (exact CRT), as `f64`.
    pub(crate) fn crt_to_f64(&self, coeffs: &Poly<Coeff>, level: usize) -> Vec<f64> {
        let n = self.params.n();
        let moduli = &self
            .params
            .q_basis(level)
            .map(|b| b.moduli().to_vec())
            .unwrap_or_default();
        if level == 0 {
            let m = moduli[0];
            return coeffs.limb(0).iter().map(|&x| m.center(x) as f64).collect();
        }
        let crt = &self.params.crt[level];
        // x = Σ y_i (Q/q_i) - v Q with v = round(Σ y_i / q_i) is the centered value; compute
        // it modulo 2^128, exact whenever |x| < 2^125 (always, for meaningful messages).
        // Limb-major passes keep each loop simple enough to pipeline well.
        let mut frac = vec![0.0f64; n];
        let mut acc = vec![0u128; n];
        let mut ys = vec![0u64; moduli.len() * n];
        for (i, m) in moduli.iter().enumerate() {
            let (inv, inv_shoup) = crt.q_hat_inv[i];
            let (inv_q, q_hat) = (crt.inv_q[i], crt.q_hat_wrapped[i]);
            let y_limb = &mut ys[i * n..(i + 1) * n];
            for (((y, &x), f), a) in y_limb
                .iter_mut()
                .zip(coeffs.limb(i))
                .zip(frac.iter_mut())
                .zip(acc.iter_mut())
            {
                let yv = m.mul_shoup(x, inv, inv_shoup);
                *y = yv;
                *f += yv as f64 * inv_q;
                *a = a.wrapping_add((yv as u128).wrapping_mul(q_hat));
            }
        }
        let mut out = Vec::with_capacity(n);
        let mut y_col = vec![0u64; moduli.len()];
        let mut scratch = CrtScratch::default();
        for (c, (&f, &a)) in frac.iter().zip(&acc).enumerate() {
            // f >= 0, so adding 0.5 and truncating rounds (and stays in hardware).
            let v = (f + 0.5) as u64;
            if (f - v as f64).abs() < crt.fast_threshold {
                let xi = a.wrapping_sub((v as u128).wrapping_mul(crt.q_wrapped)) as i128;
                out.push(if let Ok(small) = i64::try_from(xi) {
                    small as f64
                } else {
                    xi as f64
                });
            } else {
                for (k, y) in y_col.iter_mut().enumerate() {
                    *y = ys[k * n + c];
                }
                out.push(crt_exact(crt, &y_col, &mut scratch));
            }
        }
        out
    }
}

/// Exact multi-word CRT of the values `y_i = [x_i (Q/q_i)^{-1}]_{q_i}`, centered, as `f64`.
fn crt_exact(crt: &crate::params::CrtLevel, ys: &[u64], scratch: &mut CrtScratch) -> f64 {
    let words = crt.q.len() + 1;
    let CrtScratch { acc, tmp } = scratch;
    acc.clear();
    acc.resize(words, 0);
    for (i, &y) in ys.iter().enumerate() {
        let mut carry = 0u128;
        for (k, a) in acc.iter_mut().enumerate() {
            let h = crt.q_hat[i].get(k).copied().unwrap_or(0) as u128;
            let t = *a as u128 + h * y as u128 + carry;
            *a = t as u64;
            carry = t >> 64;
        }
    }
    // acc < |ys|·Q: at most |ys| subtractions.
    while !less_than(acc, &crt.q) {
        sub_in_place(acc, &crt.q);
    }
    if less_than(&crt.q_half, acc) {
        tmp.clear();
        tmp.extend_from_slice(&crt.q);
        tmp.push(0);
        sub_in_place(tmp, acc);
        -to_f64(tmp)
    } else {
        to_f64(acc)
    }
}

/// Reusable buffers of [`crt_exact`].
#[derive(Default)]
struct CrtScratch {
    acc: Vec<u64>,
    tmp: Vec<u64>,
}

/// Round half away from zero without a libm call (baseline x86-64 has no rounding instruction).
#[inline(always)]
fn round(x: f64) -> f64 {
    if x.abs() < 4.5e15 {
        (x + 0.5f64.copysign(x)) as i64 as f64
    } else {
        x.round()
    }
}

fn less_than(a: &[u64], b: &[u64]) -> bool {
    let len = a.len().max(b.len());
    for k in (0..len).rev() {
        let (x, y) = (
            a.get(k).copied().unwrap_or(0),
            b.get(k).copied().unwrap_or(0),
        );
        if x != y {
            return x < y;
        }
    }
    false
}

fn sub_in_place(a: &mut [u64], b: &[u64]) {
    let mut borrow = 0u64;
    for (k, x) in a.iter_mut().enumerate() {
        let y = b.get(k).copied().unwrap_or(0);
        let (d1, b1) = x.overflowing_sub(y);
        let (d2, b2) = d1.overflowing_sub(borrow);
        *x = d2;
        borrow = (b1 | b2) as u64;
    }
}

fn to_f64(a: &[u64]) -> f64 {
    a.iter()
        .rev()
        .fold(0.0, |acc, &w| acc * 18446744073709551616.0 + w as f64)
}
