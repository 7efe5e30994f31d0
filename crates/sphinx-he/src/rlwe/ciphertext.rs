//! RLWE plaintexts and ciphertexts: polynomials in NTT form plus their identity (parameter id,
//! level) and the encoding scale.
//!
//! These types know nothing of any encoding: CKKS interprets `scale` as `Δ`, an exact
//! (BFV-style) encoding would keep it at 1 and scale by `Q/t` itself.

use sphinx_math::{Ntt, Poly};

use crate::error::{HeError, Result};
use crate::params::{ParamId, Parameters};
use crate::rlwe::sampler::expand_seed;

/// An encoded message: one polynomial over `q_0 … q_level`, in NTT form.
#[derive(Clone, Debug, PartialEq)]
pub struct Plaintext {
    pub(crate) poly: Poly<Ntt>,
    pub(crate) param_id: ParamId,
    pub(crate) level: usize,
    pub(crate) scale: f64,
}

impl Plaintext {
    /// Wraps a polynomial, checking it against the parameters.
    ///
    /// # Errors
    /// [`HeError::InvalidLevel`], [`HeError::InvalidScale`] or a shape mismatch.
    pub fn from_poly(
        params: &Parameters,
        poly: Poly<Ntt>,
        level: usize,
        scale: f64,
    ) -> Result<Self> {
        params.check_level(level)?;
        poly.check(params.q_basis(level)?)?;
        check_scale(scale)?;
        Ok(Self {
            poly,
            param_id: params.id(),
            level,
            scale,
        })
    }

    /// The polynomial (NTT form).
    pub fn poly(&self) -> &Poly<Ntt> {
        &self.poly
    }

    /// Identity of the parameters it was made under.
    pub fn param_id(&self) -> ParamId {
        self.param_id
    }

    /// Level: the polynomial lives modulo `q_0 … q_level`.
    pub fn level(&self) -> usize {
        self.level
    }

    /// Encoding scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }
}

/// An RLWE ciphertext `(c_0, c_1[, c_2])` decrypting to `c_0 + c_1 s (+ c_2 s²)`.
///
/// `seed` is `Some` only for a fresh symmetric encryption whose `c_1` is the expansion of that
/// seed ([`expand_seed`]); it lets a serializer send 32 bytes instead of `c_1`. Every
/// operation that changes `c_1` clears it.
#[derive(Clone, Debug, PartialEq)]
pub struct Ciphertext {
    pub(crate) polys: Vec<Poly<Ntt>>,
    pub(crate) param_id: ParamId,
    pub(crate) level: usize,
    pub(crate) scale: f64,
    pub(crate) seed: Option<[u8; 32]>,
}

impl Ciphertext {
    /// Assembles a ciphertext from its polynomials (2 or 3, NTT form, over `q_0 … q_level`).
    ///
    /// # Errors
    /// [`HeError::UnsupportedCiphertextSize`], [`HeError::InvalidLevel`], [`HeError::InvalidScale`]
    /// or a shape mismatch.
    pub fn from_parts(
        params: &Parameters,
        polys: Vec<Poly<Ntt>>,
        level: usize,
        scale: f64,
    ) -> Result<Self> {
        if !(2..=3).contains(&polys.len()) {
            return Err(HeError::UnsupportedCiphertextSize {
                got: polys.len(),
                supported: "2 or 3",
            });
        }
        let basis = params.q_basis(level)?;
        for p in &polys {
            p.check(basis)?;
        }
        check_scale(scale)?;
        Ok(Self {
            polys,
            param_id: params.id(),
            level,
            scale,
            seed: None,
        })
    }

    /// Rebuilds a fresh seeded ciphertext from `c_0` and the seed of its `c_1`.
    ///
    /// # Errors
    /// As [`from_parts`](Self::from_parts).
    pub fn from_seeded(
        params: &Parameters,
        c0: Poly<Ntt>,
        seed: [u8; 32],
        level: usize,
        scale: f64,
    ) -> Result<Self> {
        let c1 = expand_seed(params.q_basis(level)?, &seed);
        let mut ct = Self::from_parts(params, vec![c0, c1], level, scale)?;
        ct.seed = Some(seed);
        Ok(ct)
    }

    /// The polynomials `c_0, c_1[, c_2]` (NTT form).
    pub fn polys(&self) -> &[Poly<Ntt>] {
        &self.polys
    }

    /// Number of polynomials (2, or 3 after a product without relinearization).
    pub fn size(&self) -> usize {
        self.polys.len()
    }

    /// Identity of the parameters it was made under.
    pub fn param_id(&self) -> ParamId {
        self.param_id
    }

    /// Level: the polynomials live modulo `q_0 … q_level`.
    pub fn level(&self) -> usize {
        self.level
    }

    /// Encoding scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Overrides the scale (e.g. after an exact integer multiplication the caller accounts for).
    ///
    /// # Errors
    /// [`HeError::InvalidScale`].
    pub fn set_scale(&mut self, scale: f64) -> Result<()> {
        check_scale(scale)?;
        self.scale = scale;
        Ok(())
    }

    /// The seed `c_1` was expanded from, if this is an untouched seeded encryption.
    pub fn seed(&self) -> Option<&[u8; 32]> {
        self.seed.as_ref()
    }

    /// Mutable access to the polynomials; clears the seed since `c_1` may change.
    pub(crate) fn polys_mut(&mut self) -> &mut Vec<Poly<Ntt>> {
        self.seed = None;
        &mut self.polys
    }
}

pub(crate) fn check_scale(scale: f64) -> Result<()> {
    if scale.is_finite() && scale > 0.0 {
        Ok(())
    } else {
        Err(HeError::InvalidScale(scale))
    }
}
