//! Public-key and seeded secret-key encryption, and decryption of 2- and 3-part ciphertexts.

use rand::{CryptoRng, RngCore};
use sphinx_math::{Coeff, Ntt, Poly};

use crate::error::{HeError, Result};
use crate::rlwe::ciphertext::{Ciphertext, Plaintext};
use crate::rlwe::keys::{PublicKey, SecretKey, small_ntt};
use crate::rlwe::keyswitch::mod_down_add;
use crate::rlwe::sampler;
use crate::serialization::CompactCiphertext;

impl PublicKey {
    /// Encrypts `pt` at its level: `(b u + e_0 + m, a u + e_1)` with ternary `u`.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`] if `pt` was made under other parameters.
    pub fn encrypt<R: RngCore + CryptoRng>(
        &self,
        pt: &Plaintext,
        rng: &mut R,
    ) -> Result<Ciphertext> {
        self.params.check_id(pt.param_id)?;
        let mut ct = self.encrypt_zero(pt.level, pt.scale, rng)?;
        let basis = self.params.q_basis(pt.level)?;
        ct.polys[0].add_assign(&pt.poly, basis)?;
        Ok(ct)
    }

    /// A fresh encryption of zero at `level` with the given scale metadata.
    ///
    /// # Errors
    /// [`HeError::InvalidLevel`], [`HeError::InvalidScale`].
    pub fn encrypt_zero<R: RngCore + CryptoRng>(
        &self,
        level: usize,
        scale: f64,
        rng: &mut R,
    ) -> Result<Ciphertext> {
        let params = &self.params;
        let q_basis = params.q_basis(level)?;
        let n = params.n();
        let nl = level + 1;
        let nq_all = params.q_primes().len();
        // Work modulo Q_l·P when special primes exist, then divide by P.
        let basis = if params.p_primes().is_empty() {
            q_basis
        } else {
            params.qp_basis(level)?
        };
        let u = small_ntt(basis, sampler::ternary(n, rng))?;
        let mut c0 = small_ntt(basis, sampler::gaussian(n, rng))?;
        let mut c1 = small_ntt(basis, sampler::gaussian(n, rng))?;
        for (i, plan) in basis.plans().iter().enumerate() {
            let key_limb = if i < nl { i } else { nq_all + (i - nl) };
            let (ul, bl, al) = (u.limb(i), self.b.limb(key_limb), self.a.limb(key_limb));
            plan.mul_accumulate(c0.limb_mut(i), bl, ul);
            plan.mul_accumulate(c1.limb_mut(i), al, ul);
        }
        if params.p_primes().is_empty() {
            return Ciphertext::from_parts(params, vec![c0, c1], level, scale);
        }
        let mut out0 = Poly::<Ntt>::zero(q_basis);
        let mut out1 = Poly::<Ntt>::zero(q_basis);
        let (mut conv, mut tmp) = (Vec::new(), Vec::new());
        mod_down_add(params, level, c0.data_mut(), &mut out0, &mut conv, &mut tmp)?;
        mod_down_add(params, level, c1.data_mut(), &mut out1, &mut conv, &mut tmp)?;
        Ciphertext::from_parts(params, vec![out0, out1], level, scale)
    }
}

impl SecretKey {
    /// Symmetric encryption with a seeded `c_1`: `(-a s + e + m, a)` where `a` is expanded from
    /// a fresh 32-byte seed drawn from `rng`; the ciphertext keeps the seed so it can be sent
    /// at about half size.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`] if `pt` was made under other parameters.
    pub fn encrypt<R: RngCore + CryptoRng>(
        &self,
        pt: &Plaintext,
        rng: &mut R,
    ) -> Result<Ciphertext> {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        self.encrypt_with_seed(pt, seed, rng)
    }

    /// As [`encrypt`](Self::encrypt) with a caller-chosen seed for `c_1` (known-answer tests);
    /// the error still comes from `rng`. Never reuse a seed.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`].
    pub fn encrypt_with_seed<R: RngCore + CryptoRng>(
        &self,
        pt: &Plaintext,
        seed: [u8; 32],
        rng: &mut R,
    ) -> Result<Ciphertext> {
        let params = &self.params;
        params.check_id(pt.param_id)?;
        let level = pt.level;
        let basis = params.q_basis(level)?;
        let n = params.n();
        let c1 = sampler::expand_seed(basis, &seed);
        let mut c0 = small_ntt(basis, sampler::gaussian(n, rng))?;
        let s = self.s_q(level);
        let mut a_s = vec![0u64; n];
        for (i, (m, plan)) in basis.moduli().iter().zip(basis.plans()).enumerate() {
            let (al, sl, ml) = (c1.limb(i), &s[i * n..(i + 1) * n], pt.poly.limb(i));
            a_s.fill(0);
            plan.mul_accumulate(&mut a_s, al, sl);
            for ((x, &t), &mv) in c0.limb_mut(i).iter_mut().zip(&a_s).zip(ml) {
                *x = m.add(m.sub(*x, t), mv);
            }
        }
        let mut ct = Ciphertext::from_parts(params, vec![c0, c1], level, pt.scale)?;
        ct.seed = Some(seed);
        Ok(ct)
    }

    /// Decrypts a 2- or 3-part ciphertext: `c_0 + c_1 s (+ c_2 s²)`.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`], [`HeError::UnsupportedCiphertextSize`].
    pub fn decrypt(&self, ct: &Ciphertext) -> Result<Plaintext> {
        let params = &self.params;
        params.check_id(ct.param_id)?;
        let level = ct.level;
        let basis = params.q_basis(level)?;
        let n = params.n();
        if !(2..=3).contains(&ct.polys.len()) {
            return Err(HeError::UnsupportedCiphertextSize {
                got: ct.polys.len(),
                supported: "2 or 3",
            });
        }
        let s = self.s_q(level);
        let mut out: Poly<Ntt> = ct.polys[0].clone();
        let mut tmp = vec![0u64; n];
        for (i, plan) in basis.plans().iter().enumerate() {
            let sl = &s[i * n..(i + 1) * n];
            let c1 = ct.polys[1].limb(i);
            if let Some(c2) = ct.polys.get(2) {
                // c0 + (c1 + c2 s) s: one extra product instead of forming s².
                tmp.copy_from_slice(c1);
                plan.mul_accumulate(&mut tmp, c2.limb(i), sl);
                plan.mul_accumulate(out.limb_mut(i), &tmp, sl);
            } else {
                plan.mul_accumulate(out.limb_mut(i), c1, sl);
            }
        }
        Plaintext::from_poly(params, out, level, ct.scale)
    }

    /// Decrypts a compact level-0 result without lifting it into the NTT domain first:
    /// `c̃_0 + INTT(NTT(c̃_1 (+ c̃_2 s)) · s)` on the lifted parts `c̃_i`, so one forward
    /// transform per part after the first and one inverse in all (against one forward per
    /// part for [`CompactCiphertext::lift`] and one inverse to decode the
    /// [`decrypt`](Self::decrypt)ed plaintext). Returns the message polynomial in the
    /// coefficient domain, for [`Encoder::decode_coeffs`](crate::Encoder::decode_coeffs) at
    /// the ciphertext's scale; it equals the coefficients of `decrypt(&c.lift(..))`.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`] if `c` belongs to other parameters.
    pub fn decrypt_compact(&self, c: &CompactCiphertext) -> Result<Poly<Coeff>> {
        let params = &self.params;
        let basis = params.q_basis(0)?;
        let n = params.n();
        let parts = c.lifted_coeffs(params)?;
        let (m, plan) = match (basis.moduli().first(), basis.plans().first()) {
            (Some(m), Some(plan)) => (*m, plan),
            _ => {
                return Err(HeError::InvalidLevel {
                    level: 0,
                    min: 0,
                    max: 0,
                });
            }
        };
        let s = self.s_q(0);
        let mut chunks = parts.chunks_exact(n);
        let (Some(c0), Some(c1)) = (chunks.next(), chunks.next()) else {
            return Err(HeError::UnsupportedCiphertextSize {
                got: parts.len() / n.max(1),
                supported: "2 or 3",
            });
        };
        let mut acc = c1.to_vec();
        plan.forward(&mut acc);
        if let Some(c2) = chunks.next() {
            // (c1 + c2 s) s: one extra product instead of forming s².
            let mut t = c2.to_vec();
            plan.forward(&mut t);
            plan.mul_accumulate(&mut acc, &t, s);
        }
        let mut out = vec![0u64; n];
        plan.mul_accumulate(&mut out, &acc, s);
        plan.inverse(&mut out);
        for (x, &a) in out.iter_mut().zip(c0) {
            *x = m.add(*x, a);
        }
        Ok(Poly::<Coeff>::from_data(basis, out)?)
    }
}
