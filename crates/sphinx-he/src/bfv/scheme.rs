//! BFV plaintexts, encryption, exact decryption, additive and plaintext-multiplicative
//! operations, and noise flooding.

use std::sync::{Arc, OnceLock};

use rand::{CryptoRng, RngCore};
use sphinx_math::{Coeff, Ntt, Poly};

use crate::bfv::params::BfvParameters;
use crate::ckks::Encoder;
use crate::error::{HeError, Result};
use crate::params::ParamId;
use crate::rlwe::{Ciphertext, Plaintext, PublicKey, SecretKey};

/// A BFV plaintext: `N` slot values modulo `t`. Its polynomial `m(X)` (coefficients centered
/// in `(−t/2, t/2]`), lifted to `Q` in NTT form, is computed on first use in a product or sum
/// and kept, so a server plaintext used against many ciphertexts pays for it once.
#[derive(Clone, Debug)]
pub struct BfvPlaintext {
    slots: Vec<u64>,
    lifted: OnceLock<Poly<Ntt>>,
    param_id: ParamId,
}

impl PartialEq for BfvPlaintext {
    fn eq(&self, other: &Self) -> bool {
        self.param_id == other.param_id && self.slots == other.slots
    }
}

impl BfvPlaintext {
    /// The slot values, each in `[0, t)`.
    pub fn slots(&self) -> &[u64] {
        &self.slots
    }

    /// Identity of the parameters it was made under.
    pub fn param_id(&self) -> ParamId {
        self.param_id
    }
}

/// Encoding, encryption, decryption and evaluation for one [`BfvParameters`] set.
///
/// Ciphertexts are ordinary RLWE [`Ciphertext`]s at the top level with scale `1`.
#[derive(Clone, Debug)]
pub struct Bfv {
    params: Arc<BfvParameters>,
}

impl Bfv {
    /// A context for `params`.
    pub fn new(params: &Arc<BfvParameters>) -> Self {
        Self {
            params: Arc::clone(params),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<BfvParameters> {
        &self.params
    }

    /// Encodes up to `N` values in `[0, t)` into the slots (the rest are zero). Slot-wise
    /// products and sums mod `t` are products and sums of the encoded polynomials.
    ///
    /// # Errors
    /// [`HeError::TooManyValues`], [`HeError::ValueOutOfRange`].
    pub fn encode(&self, values: &[u64]) -> Result<BfvPlaintext> {
        let n = self.params.n();
        let t = self.params.t();
        if values.len() > n {
            return Err(HeError::TooManyValues {
                got: values.len(),
                slots: n,
            });
        }
        if let Some(&value) = values.iter().find(|&&v| v >= t) {
            return Err(HeError::ValueOutOfRange { value, modulus: t });
        }
        let mut slots = values.to_vec();
        slots.resize(n, 0);
        Ok(self.plaintext(slots))
    }

    /// Encodes signed values, each reduced modulo `t` (fixed-point data in `(−t/2, t/2]`).
    ///
    /// # Errors
    /// [`HeError::TooManyValues`].
    pub fn encode_i64(&self, values: &[i64]) -> Result<BfvPlaintext> {
        let t = self.params.t;
        let reduced: Vec<u64> = values.iter().map(|&v| t.reduce_i64(v)).collect();
        self.encode(&reduced)
    }

    /// The slot values in `[0, t)`.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`].
    pub fn decode(&self, pt: &BfvPlaintext) -> Result<Vec<u64>> {
        self.params.rlwe().check_id(pt.param_id)?;
        Ok(pt.slots.clone())
    }

    /// The slot values centered in `(−t/2, t/2]`.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`].
    pub fn decode_i64(&self, pt: &BfvPlaintext) -> Result<Vec<i64>> {
        self.params.rlwe().check_id(pt.param_id)?;
        Ok(pt.slots.iter().map(|&v| self.params.t.center(v)).collect())
    }

    /// Public-key encryption of `pt`: noise at most `B(2N+1)` (see
    /// [`NoiseBounds`](crate::bfv::NoiseBounds)).
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`].
    pub fn encrypt_pk<R: RngCore + CryptoRng>(
        &self,
        pk: &PublicKey,
        pt: &BfvPlaintext,
        rng: &mut R,
    ) -> Result<Ciphertext> {
        pk.encrypt(&self.scaled(pt)?, rng)
    }

    /// Seeded secret-key encryption of `pt` (the client's `[r]`: `c_1` travels as a 32-byte
    /// seed); noise at most `B`.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`].
    pub fn encrypt_sk<R: RngCore + CryptoRng>(
        &self,
        sk: &SecretKey,
        pt: &BfvPlaintext,
        rng: &mut R,
    ) -> Result<Ciphertext> {
        sk.encrypt(&self.scaled(pt)?, rng)
    }

    /// Exact decryption: `⌊t·[c_0 + c_1 s]_Q / Q⌉ mod t`, correct while the noise stays below
    /// `Q/(2t) − t`.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`], [`HeError::InvalidLevel`], [`HeError::ScaleMismatch`],
    /// [`HeError::UnsupportedCiphertextSize`].
    pub fn decrypt(&self, sk: &SecretKey, ct: &Ciphertext) -> Result<BfvPlaintext> {
        self.check_ct(ct)?;
        let mut slots = self.decrypt_coeffs(sk, ct)?;
        self.params.t_plan.forward(&mut slots);
        Ok(self.plaintext(slots))
    }

    /// The centered noise coefficients `[c_0 + c_1 s − Δ·m]_Q` of `ct` (as `f64`), for
    /// measuring noise in tests and diagnostics; `m` is the exact decryption.
    ///
    /// # Errors
    /// As [`decrypt`](Self::decrypt).
    pub fn noise(&self, sk: &SecretKey, ct: &Ciphertext) -> Result<Vec<f64>> {
        let pt = self.decrypt(sk, ct)?;
        let rlwe = self.params.rlwe();
        let level = rlwe.max_level();
        let basis = rlwe.q_basis(level)?;
        let mut v = sk.decrypt(ct)?.poly;
        v.sub_assign(&self.scaled(&pt)?.poly, basis)?;
        let coeffs = v.into_coeff(basis)?;
        Ok(Encoder::new(rlwe).crt_to_f64(&coeffs, level))
    }

    /// `a + b` (noise: the sum plus at most `t`).
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`], [`HeError::LevelMismatch`], [`HeError::InvalidLevel`],
    /// [`HeError::ScaleMismatch`], [`HeError::UnsupportedCiphertextSize`].
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.combine(a, b, false)
    }

    /// `a − b`.
    ///
    /// # Errors
    /// As [`add`](Self::add).
    pub fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.combine(a, b, true)
    }

    /// `ct + pt` (noise grows by at most `t`).
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`], [`HeError::InvalidLevel`], [`HeError::ScaleMismatch`],
    /// [`HeError::UnsupportedCiphertextSize`].
    pub fn add_plain(&self, ct: &Ciphertext, pt: &BfvPlaintext) -> Result<Ciphertext> {
        self.plain_combine(ct, pt, false)
    }

    /// `ct − pt`: the server's `[W r] − s`.
    ///
    /// # Errors
    /// As [`add_plain`](Self::add_plain).
    pub fn sub_plain(&self, ct: &Ciphertext, pt: &BfvPlaintext) -> Result<Ciphertext> {
        self.plain_combine(ct, pt, true)
    }

    /// `pt ⊙ ct` slot-wise mod `t`: the server's plaintext `W` times the client's `[r]`.
    /// Noise: `N·(t/2)·e + t·(N·t/4 + 1)` for input noise `e`.
    ///
    /// # Errors
    /// As [`add_plain`](Self::add_plain).
    pub fn mul_plain(&self, ct: &Ciphertext, pt: &BfvPlaintext) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        let lifted = self.lifted(pt)?;
        let basis = self.top_basis()?;
        let mut out = ct.clone();
        for p in out.polys_mut() {
            p.mul_assign(lifted, basis)?;
        }
        Ok(out)
    }

    /// Re-randomizes `ct` for release to the secret-key holder: adds a fresh public-key
    /// encryption of zero (fresh `c_1`) whose `c_0` also carries noise uniform on
    /// `[−2^f, 2^f)`, `f = ` [`NoiseBounds::flooding_bits`](crate::bfv::NoiseBounds). Any
    /// ciphertext within the preprocessing noise bound then decrypts exactly, and its noise
    /// is within statistical distance `2^-40` of a distribution independent of how it was
    /// computed.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`] (also for a key of other parameters), [`HeError::InvalidLevel`],
    /// [`HeError::ScaleMismatch`], [`HeError::UnsupportedCiphertextSize`].
    pub fn flood<R: RngCore + CryptoRng>(
        &self,
        pk: &PublicKey,
        ct: &Ciphertext,
        rng: &mut R,
    ) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        let rlwe = self.params.rlwe();
        rlwe.check_id(pk.param_id())?;
        let level = rlwe.max_level();
        let basis = self.top_basis()?;
        let mut zero = pk.encrypt_zero(level, 1.0, rng)?;
        let noise = self.flooding_noise(rng)?;
        let parts = zero.polys_mut();
        parts[0].add_assign(&noise, basis)?;
        for (z, c) in parts.iter_mut().zip(ct.polys()) {
            z.add_assign(c, basis)?;
        }
        Ok(zero)
    }

    /// Uniform integers on `[−2^f, 2^f)` in NTT form over `Q`.
    fn flooding_noise<R: RngCore + CryptoRng>(&self, rng: &mut R) -> Result<Poly<Ntt>> {
        let basis = self.top_basis()?;
        let n = self.params.n();
        let bits = self.params.noise_bounds().flooding_bits + 1;
        let words = bits.div_ceil(64) as usize;
        let top_mask = u64::MAX >> (64 * words as u32 - bits);
        let mut draws: Vec<u64> = (0..n * words).map(|_| rng.next_u64()).collect();
        let mut poly = Poly::<Coeff>::zero(basis);
        for ((limb, m), &offset) in poly
            .data_mut()
            .chunks_exact_mut(n)
            .zip(basis.moduli())
            .zip(&self.params.flood_offset_mod_q)
        {
            for (x, w) in limb.iter_mut().zip(draws.chunks_exact(words)) {
                let mut acc = 0u64;
                for (k, &word) in w.iter().enumerate().rev() {
                    let word = if k == words - 1 {
                        word & top_mask
                    } else {
                        word
                    };
                    acc = m.reduce_u128(((acc as u128) << 64) | word as u128);
                }
                *x = m.sub(acc, offset);
            }
        }
        draws.fill(0);
        Ok(poly.into_ntt(basis)?)
    }

    fn top_basis(&self) -> Result<&sphinx_math::RnsBasis> {
        let rlwe = self.params.rlwe();
        rlwe.q_basis(rlwe.max_level())
    }

    fn check_ct(&self, ct: &Ciphertext) -> Result<()> {
        let rlwe = self.params.rlwe();
        rlwe.check_id(ct.param_id())?;
        let max = rlwe.max_level();
        if ct.level() != max {
            return Err(HeError::InvalidLevel {
                level: ct.level(),
                min: max,
                max,
            });
        }
        if ct.scale() != 1.0 {
            return Err(HeError::ScaleMismatch {
                left: ct.scale(),
                right: 1.0,
            });
        }
        if ct.size() != 2 {
            return Err(HeError::UnsupportedCiphertextSize {
                got: ct.size(),
                supported: "2",
            });
        }
        Ok(())
    }

    fn combine(&self, a: &Ciphertext, b: &Ciphertext, subtract: bool) -> Result<Ciphertext> {
        let rlwe = self.params.rlwe();
        rlwe.check_id(a.param_id())?;
        rlwe.check_id(b.param_id())?;
        if a.level() != b.level() {
            return Err(HeError::LevelMismatch {
                left: a.level(),
                right: b.level(),
            });
        }
        self.check_ct(a)?;
        self.check_ct(b)?;
        let basis = self.top_basis()?;
        let polys = a
            .polys()
            .iter()
            .zip(b.polys())
            .map(|(x, y)| {
                if subtract {
                    Poly::difference_of(x, y, basis)
                } else {
                    Poly::sum_of(x, y, basis)
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ciphertext::from_parts(rlwe, polys, rlwe.max_level(), 1.0)
    }

    fn plain_combine(
        &self,
        ct: &Ciphertext,
        pt: &BfvPlaintext,
        subtract: bool,
    ) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        let lifted = self.lifted(pt)?;
        let basis = self.top_basis()?;
        let n = self.params.n();
        let mut out = ct.clone();
        let c0 = &mut out.polys_mut()[0];
        // Δ·m limb by limb straight into c_0: no temporary polynomial.
        for (i, (m, &delta)) in basis
            .moduli()
            .iter()
            .zip(&self.params.delta_mod_q)
            .enumerate()
        {
            let delta_shoup = m.shoup(delta);
            let src = &lifted.data()[i * n..(i + 1) * n];
            for (x, &v) in c0.limb_mut(i).iter_mut().zip(src) {
                let d = m.mul_shoup(v, delta, delta_shoup);
                *x = if subtract { m.sub(*x, d) } else { m.add(*x, d) };
            }
        }
        Ok(out)
    }

    /// `Δ·m` as an RLWE plaintext at the top level with scale 1.
    fn scaled(&self, pt: &BfvPlaintext) -> Result<Plaintext> {
        let rlwe = self.params.rlwe();
        rlwe.check_id(pt.param_id)?;
        let basis = self.top_basis()?;
        let mut poly = self.lifted(pt)?.clone();
        poly.mul_scalar_assign(&self.params.delta_mod_q, basis)?;
        Plaintext::from_poly(rlwe, poly, rlwe.max_level(), 1.0)
    }

    fn plaintext(&self, slots: Vec<u64>) -> BfvPlaintext {
        BfvPlaintext {
            slots,
            lifted: OnceLock::new(),
            param_id: self.params.id(),
        }
    }

    /// `m(X)` lifted to `Q` (NTT form), computed once per plaintext.
    fn lifted<'a>(&self, pt: &'a BfvPlaintext) -> Result<&'a Poly<Ntt>> {
        self.params.rlwe().check_id(pt.param_id)?;
        if let Some(p) = pt.lifted.get() {
            return Ok(p);
        }
        let basis = self.top_basis()?;
        let n = self.params.n();
        let t = self.params.t();
        let mut coeffs = pt.slots.clone();
        self.params.t_plan.inverse(&mut coeffs);
        let mut poly = Poly::<Coeff>::zero(basis);
        for (limb, m) in poly.data_mut().chunks_exact_mut(n).zip(basis.moduli()) {
            m.lift_centered(limb, &coeffs, t);
        }
        let poly = poly.into_ntt(basis)?;
        Ok(pt.lifted.get_or_init(|| poly))
    }

    /// Coefficients of `⌊t·v/Q⌉ mod t` for `v = c_0 + c_1 s`.
    ///
    /// With `y_i = [v_i (Q/q_i)^{-1}]_{q_i}`, `t·v/Q ≡ Σ_i y_i·t/q_i (mod t)`; each `y_i·t`
    /// fits in 128 bits, so its quotient by `q_i` is exact and only the fractional parts
    /// (each below 1) are summed in `f64`, far more precisely than the rounding margin needs.
    fn decrypt_coeffs(&self, sk: &SecretKey, ct: &Ciphertext) -> Result<Vec<u64>> {
        let rlwe = self.params.rlwe();
        let level = rlwe.max_level();
        let basis = self.top_basis()?;
        let n = self.params.n();
        let t = self.params.t;
        let tv = t.value() as u128;
        let fast = t.value() < 1 << 50;
        let v = sk.decrypt(ct)?.poly.into_coeff(basis)?;
        let crt = &rlwe.crt[level];
        let mut int = vec![0u64; n];
        let mut frac = vec![0.0f64; n];
        for (i, m) in basis.moduli().iter().enumerate() {
            let (inv, inv_shoup) = crt.q_hat_inv[i];
            let q = m.value() as u128;
            let inv_q = crt.inv_q[i];
            for ((&x, a), f) in v.limb(i).iter().zip(int.iter_mut()).zip(frac.iter_mut()) {
                let y = m.mul_shoup(x, inv, inv_shoup) as u128 * tv;
                let (quot, rem) = div_rem(y, q, inv_q, fast);
                *a = t.add(*a, t.reduce_u128(quot));
                *f += rem as f64 * inv_q;
            }
        }
        let out = int
            .iter()
            .zip(&frac)
            .map(|(&a, &f)| t.add(a, t.reduce((f + 0.5) as u64)))
            .collect();
        Ok(out)
    }
}

/// `(⌊x/q⌋, x mod q)` for `x = y·t` with `y < q < 2^62`, so the quotient is below `t`. For
/// `t < 2^50` an `f64` estimate of the quotient (relative error below 2^-51) is off by less
/// than 1 and one correction step in each direction makes it exact, far cheaper than a
/// 128-bit division; larger `t` take the division.
#[inline(always)]
fn div_rem(x: u128, q: u128, inv_q: f64, fast: bool) -> (u128, u128) {
    if !fast {
        return (x / q, x % q);
    }
    let mut quot = (x as f64 * inv_q) as u128;
    let mut rem = x as i128 - (quot * q) as i128;
    if rem < 0 {
        rem += q as i128;
        quot -= 1;
    }
    if rem >= q as i128 {
        rem -= q as i128;
        quot += 1;
    }
    (quot, rem as u128)
}
