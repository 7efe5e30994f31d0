//! BFV parameters: an RLWE parameter set (checked by the same security table as CKKS) plus the
//! plaintext modulus `t`, `Δ = ⌊Q/t⌋`, and the worst-case noise bounds that size flooding.

use std::sync::Arc;

use sphinx_math::{Modulus, NttPlan, primes};

use crate::error::{HeError, InvalidParametersReason, Result};
use crate::params::{ERROR_STD_DEV, ParamId, Parameters, ParametersLiteral, SecurityLevel};

/// Statistical security parameter of noise flooding: the flooded ciphertext's noise is within
/// statistical distance `2^-40` of a distribution that does not depend on the server's inputs.
pub const FLOODING_STATISTICAL_SECURITY: u32 = 40;

/// A plain description of a BFV parameter set; turn it into [`BfvParameters`] with
/// [`build`](Self::build).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfvParametersLiteral {
    /// `log2 N`.
    pub log_n: u32,
    /// Bit sizes of the ciphertext primes; `Q` is their product. BFV here never rescales and
    /// never key-switches, so there are no special primes.
    pub q_bits: Vec<u32>,
    /// Bit size of the plaintext prime `t ≡ 1 (mod 2N)`.
    pub t_bits: u32,
    /// Security level the RLWE set must meet (same table and check as CKKS).
    pub security: SecurityLevel,
}

impl BfvParametersLiteral {
    /// The preprocessing set: `N = 8192`, `Q = [60, 60, 60, 30]` (210 of 218 bits allowed for
    /// 128-bit classical security), a 41-bit `t`; room for flooding at `2^-40`.
    pub fn delphi_n8192() -> Self {
        Self {
            log_n: 13,
            q_bits: vec![60, 60, 60, 30],
            t_bits: 41,
            security: SecurityLevel::Classical128,
        }
    }

    /// An INSECURE set for tests (no bound on the modulus, small degrees allowed).
    pub fn insecure_for_tests(log_n: u32, q_bits: &[u32], t_bits: u32) -> Self {
        Self {
            log_n,
            q_bits: q_bits.to_vec(),
            t_bits,
            security: SecurityLevel::InsecureToyForTests,
        }
    }

    /// The underlying RLWE literal. `scale_bits` records `log2 t` (BFV has no scale), so the
    /// parameter id of a BFV set differs from that of a CKKS set with the same primes and
    /// default scale whenever the two differ.
    pub fn rlwe_literal(&self) -> ParametersLiteral {
        ParametersLiteral {
            log_n: self.log_n,
            q_bits: self.q_bits.clone(),
            p_bits: Vec::new(),
            scale_bits: self.t_bits,
            security: self.security,
        }
    }

    /// Validates the set: the RLWE security check, a plaintext prime distinct from `Q`'s, and a
    /// modulus large enough for flooded preprocessing results to decrypt exactly.
    ///
    /// # Errors
    /// [`HeError::InsecureParameters`], [`HeError::UnsupportedDegree`],
    /// [`HeError::InvalidParameters`] (including
    /// [`InvalidParametersReason::FloodingBudget`]), or [`HeError::Math`].
    ///
    /// ```
    /// use sphinx_he::bfv::BfvParametersLiteral;
    /// use sphinx_he::HeError;
    /// let p = BfvParametersLiteral::delphi_n8192().build()?;
    /// assert_eq!(p.t() % (2 * 8192), 1);
    /// let mut big = BfvParametersLiteral::delphi_n8192();
    /// big.q_bits.push(30); // 240 > 218 bits
    /// assert!(matches!(big.build(), Err(HeError::InsecureParameters { .. })));
    /// # Ok::<(), HeError>(())
    /// ```
    pub fn build(&self) -> Result<Arc<BfvParameters>> {
        BfvParameters::new(self.clone()).map(Arc::new)
    }
}

/// Worst-case noise bounds (as `log2` of coefficient magnitudes) of the preprocessing path.
///
/// With `B = ⌈6σ⌉` (the error sampler's cut), ternary secrets and `N` coefficients:
/// - `fresh = B(2N+1)`: public-key encryption `e_0 + u·e + e_1·s` (seeded secret-key
///   encryption has only `B`);
/// - `mul_plain = N·(t/2)·fresh + t·(N·t/4 + 1)`: `W·e` plus the carry of `W·r` past `t`,
///   which `Δ·t = Q − (Q mod t)` turns into `−(Q mod t)·k`;
/// - `before_flooding = mul_plain + t`: subtracting the mask `Δ·s`;
/// - `flooding_bits = ⌈log2 before_flooding⌉ + λ + log2 N`: flooding noise is uniform on
///   `[−2^f, 2^f)`, so shifting it by any `|e| ≤ before_flooding` moves it by statistical
///   distance `≤ N·|e|/2^(f+1) ≤ 2^-(λ+1)` over all `N` coefficients;
/// - `after_flooding = before_flooding + 2^f + fresh` (the flooding ciphertext's own noise);
/// - `decryption = Q/(2t) − t`: the largest noise with exact decryption.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseBounds {
    /// `log2` of the fresh encryption noise bound.
    pub fresh: f64,
    /// `log2` of the bound after one plaintext × ciphertext product.
    pub mul_plain: f64,
    /// `log2` of the bound of `W·[r] − s` before flooding.
    pub before_flooding: f64,
    /// `f`: the flooding noise is uniform on `[−2^f, 2^f)`.
    pub flooding_bits: u32,
    /// `log2` of the bound after flooding.
    pub after_flooding: f64,
    /// `log2` of the largest noise that still decrypts exactly.
    pub decryption: f64,
}

/// Validated BFV parameters; share them with `Arc<BfvParameters>`.
pub struct BfvParameters {
    literal: BfvParametersLiteral,
    rlwe: Arc<Parameters>,
    pub(crate) t: Modulus,
    pub(crate) t_plan: NttPlan,
    /// `Δ mod q_i`.
    pub(crate) delta_mod_q: Vec<u64>,
    /// `2^f mod q_i` for centering the flooding noise.
    pub(crate) flood_offset_mod_q: Vec<u64>,
    bounds: NoiseBounds,
}

impl BfvParameters {
    /// Validates `literal` (same as [`BfvParametersLiteral::build`]).
    ///
    /// # Errors
    /// As [`BfvParametersLiteral::build`].
    pub fn new(literal: BfvParametersLiteral) -> Result<Self> {
        let rlwe = literal.rlwe_literal().build()?;
        let n = rlwe.n();
        let bad_t = HeError::InvalidParameters {
            reason: InvalidParametersReason::PlaintextModulusBits(literal.t_bits),
        };
        if !(primes::min_prime_bits(n)..=60).contains(&literal.t_bits) {
            return Err(bad_t);
        }
        // Same-size primes are handed out in request order, so asking for t last keeps Q's
        // primes identical to those of `rlwe` and makes t distinct from all of them.
        let mut bits = literal.q_bits.clone();
        bits.push(literal.t_bits);
        let all = primes::ntt_primes(&bits, n)?;
        let t_value = *all.last().ok_or(bad_t)?;
        let t = Modulus::new(t_value)?;
        let t_plan = NttPlan::new(n, t)?;

        let moduli = rlwe.q_basis(rlwe.max_level())?.moduli().to_vec();
        let q_mod_t = moduli
            .iter()
            .fold(1u64, |acc, m| t.mul(acc, t.reduce(m.value())));
        // Δ = (Q − (Q mod t)) / t and Q ≡ 0 (mod q_i).
        let delta_mod_q = moduli
            .iter()
            .map(|m| Ok(m.mul(m.neg(m.reduce(q_mod_t)), m.inv(m.reduce(t_value))?)))
            .collect::<Result<Vec<_>>>()?;

        let log2_q: f64 = moduli.iter().map(|m| (m.value() as f64).log2()).sum();
        let bounds = noise_bounds(literal.log_n, t_value as f64, log2_q);
        if bounds.after_flooding >= bounds.decryption {
            return Err(HeError::InvalidParameters {
                reason: InvalidParametersReason::FloodingBudget {
                    needed_bits: bounds.after_flooding.ceil() as u32,
                    available_bits: bounds.decryption.max(0.0).floor() as u32,
                },
            });
        }
        let flood_offset_mod_q = moduli
            .iter()
            .map(|m| m.pow(2, bounds.flooding_bits as u64))
            .collect();
        Ok(Self {
            literal,
            rlwe,
            t,
            t_plan,
            delta_mod_q,
            flood_offset_mod_q,
            bounds,
        })
    }

    /// The literal these parameters were built from.
    pub fn literal(&self) -> &BfvParametersLiteral {
        &self.literal
    }

    /// The RLWE parameters: generate keys with them.
    pub fn rlwe(&self) -> &Arc<Parameters> {
        &self.rlwe
    }

    /// Identity shared by every key, plaintext and ciphertext of this set.
    pub fn id(&self) -> ParamId {
        self.rlwe.id()
    }

    /// The plaintext modulus `t`.
    pub fn t(&self) -> u64 {
        self.t.value()
    }

    /// Ring degree `N`, also the slot count.
    pub fn n(&self) -> usize {
        self.rlwe.n()
    }

    /// The worst-case noise bounds behind the flooding width and the size of `Q`.
    pub fn noise_bounds(&self) -> NoiseBounds {
        self.bounds
    }
}

impl std::fmt::Debug for BfvParameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BfvParameters")
            .field("literal", &self.literal)
            .field("t", &self.t.value())
            .field("rlwe", &self.rlwe)
            .field("bounds", &self.bounds)
            .finish_non_exhaustive()
    }
}

fn noise_bounds(log_n: u32, t: f64, log2_q: f64) -> NoiseBounds {
    let n = (1u64 << log_n) as f64;
    let b = (6.0 * ERROR_STD_DEV).ceil();
    let fresh = b * (2.0 * n + 1.0);
    let mul_plain = n * (t / 2.0) * fresh + t * (n * t / 4.0 + 1.0);
    let before = mul_plain + t;
    let flooding_bits = before.log2().ceil() as u32 + FLOODING_STATISTICAL_SECURITY + log_n;
    let after = before + (flooding_bits as f64).exp2() + fresh;
    // Q/(2t) − t, in log2: Q/(2t) dwarfs t for every set that passes the check.
    let decryption = log2_q - 1.0 - t.log2();
    let decryption = decryption
        + (1.0 - (t.log2() - decryption).exp2())
            .max(f64::MIN_POSITIVE)
            .log2();
    NoiseBounds {
        fresh: fresh.log2(),
        mul_plain: mul_plain.log2(),
        before_flooding: before.log2(),
        flooding_bits,
        after_flooding: after.log2(),
        decryption,
    }
}
