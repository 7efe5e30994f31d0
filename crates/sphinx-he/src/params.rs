//! Parameters: a plain [`ParametersLiteral`] validated into immutable, shared [`Parameters`].
//!
//! A literal names the ring degree `N = 2^log_n`, the bit sizes of the ciphertext primes
//! `Q = q_0 ⋯ q_L` (each rescale drops the last), of the special primes `P` used only inside
//! key switching, the default CKKS scale, and a [`SecurityLevel`]. [`ParametersLiteral::build`]
//! refuses any set whose `log2(QP)` exceeds the HomomorphicEncryption.org bound for `N` at that
//! level (ternary secret, classical attacks). Toy sets exist only through the loudly named
//! [`SecurityLevel::InsecureToyForTests`].
//!
//! # Presets
//! | preset | N | primes (Q \| P) | log2 QP | scale | security | depth | precision (estimate / measured) |
//! |---|---|---|---|---|---|---|---|
//! | [`ParametersLiteral::seal_n8192`] | 8192 | 60, 40, 40 \| 60 | 200 ≤ 218 | 2^40 | 128-bit classical | 2 | 24.2 / 26.3 bits after depth 2 (fresh: 27 bits) |
//! | [`ParametersLiteral::seal_n16384`] | 16384 | 60, 6×40 \| 60 | 360 ≤ 438 | 2^40 | 128-bit classical | 6 | 22.6 / 25.4 bits after depth 6 |
//!
//! Precision is `log2(1/max slot error)` for values in `[-1, 1]` (see
//! [`estimate_precision_bits`]); the measured figures come from `tests/ckks.rs`, which fails if a
//! measurement falls below its estimate. Rotations add one key switch each (≈ 25 bits).

use std::sync::Arc;

use sphinx_math::{BasisConverter, Modulus, RnsBasis, primes};

use crate::error::{HeError, InvalidParametersReason, Result};

/// Standard deviation of the error distribution (the HomomorphicEncryption.org default).
pub const ERROR_STD_DEV: f64 = 3.2;

/// Security level against classical attacks, per the HomomorphicEncryption.org standard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecurityLevel {
    /// 128-bit classical security.
    Classical128,
    /// 192-bit classical security.
    Classical192,
    /// 256-bit classical security.
    Classical256,
    /// No security at all: any degree and modulus. For unit tests and toy examples only.
    InsecureToyForTests,
}

impl std::fmt::Display for SecurityLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Classical128 => write!(f, "128-bit security"),
            Self::Classical192 => write!(f, "192-bit security"),
            Self::Classical256 => write!(f, "256-bit security"),
            Self::InsecureToyForTests => write!(f, "NO security (toy parameters for tests)"),
        }
    }
}

impl SecurityLevel {
    /// The level for `bits` in {128, 192, 256}.
    pub fn from_bits(bits: u32) -> Option<Self> {
        match bits {
            128 => Some(Self::Classical128),
            192 => Some(Self::Classical192),
            256 => Some(Self::Classical256),
            _ => None,
        }
    }

    /// The security in bits, or `None` for toy parameters.
    pub fn bits(self) -> Option<u32> {
        match self {
            Self::Classical128 => Some(128),
            Self::Classical192 => Some(192),
            Self::Classical256 => Some(256),
            Self::InsecureToyForTests => None,
        }
    }

    /// Largest `log2(QP)` the standard allows for `N = 2^log_n` (ternary secret, classical),
    /// or `None` if the standard has no entry (or the level is the toy one).
    pub fn max_log_qp(self, log_n: u32) -> Option<u32> {
        // HomomorphicEncryption.org security standard, Table 1 (uniform ternary secret).
        let table: [u32; 6] = match self {
            Self::Classical128 => [27, 54, 109, 218, 438, 881],
            Self::Classical192 => [19, 37, 75, 152, 305, 611],
            Self::Classical256 => [14, 29, 58, 118, 237, 476],
            Self::InsecureToyForTests => return None,
        };
        let idx = log_n.checked_sub(10)? as usize;
        table.get(idx).copied()
    }
}

/// A 64-bit digest of everything that defines a parameter set; equal ids mean equal parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub u64);

impl std::fmt::Display for ParamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "params#{:016x}", self.0)
    }
}

/// A plain description of a parameter set; turn it into [`Parameters`] with
/// [`build`](Self::build).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParametersLiteral {
    /// `log2 N`.
    pub log_n: u32,
    /// Bit sizes of the ciphertext primes `q_0, …, q_L` (rescaling drops from the end).
    pub q_bits: Vec<u32>,
    /// Bit sizes of the special primes `P` (key switching only; may be empty).
    pub p_bits: Vec<u32>,
    /// Default CKKS scale `2^scale_bits`.
    pub scale_bits: u32,
    /// Security level the set must meet.
    pub security: SecurityLevel,
}

impl ParametersLiteral {
    /// SEAL's standard CKKS set: `N = 8192`, `Q = [60, 40, 40]`, `P = [60]`, scale `2^40`,
    /// 128-bit security (200 of 218 bits), depth 2.
    pub fn seal_n8192() -> Self {
        Self {
            log_n: 13,
            q_bits: vec![60, 40, 40],
            p_bits: vec![60],
            scale_bits: 40,
            security: SecurityLevel::Classical128,
        }
    }

    /// `N = 16384`, `Q = [60, 40 × 6]`, `P = [60]`, scale `2^40`, 128-bit security
    /// (360 of 438 bits), depth 6.
    pub fn seal_n16384() -> Self {
        Self {
            log_n: 14,
            q_bits: vec![60, 40, 40, 40, 40, 40, 40],
            p_bits: vec![60],
            scale_bits: 40,
            security: SecurityLevel::Classical128,
        }
    }

    /// An INSECURE set for tests: no bound on the modulus, small degrees allowed.
    pub fn insecure_for_tests(log_n: u32, q_bits: &[u32], p_bits: &[u32], scale_bits: u32) -> Self {
        Self {
            log_n,
            q_bits: q_bits.to_vec(),
            p_bits: p_bits.to_vec(),
            scale_bits,
            security: SecurityLevel::InsecureToyForTests,
        }
    }

    /// Sum of the bit sizes of all primes, the `log2(QP)` the security check uses.
    pub fn total_bits(&self) -> u32 {
        self.q_bits.iter().chain(&self.p_bits).sum()
    }

    /// Checks the set against the security table.
    ///
    /// # Errors
    /// [`HeError::InsecureParameters`] or [`HeError::UnsupportedDegree`].
    pub fn check_security(&self) -> Result<()> {
        if self.security == SecurityLevel::InsecureToyForTests {
            return Ok(());
        }
        let max_bits = self
            .security
            .max_log_qp(self.log_n)
            .ok_or(HeError::UnsupportedDegree {
                log_n: self.log_n,
                security: self.security,
            })?;
        let total_bits = self.total_bits();
        if total_bits > max_bits {
            return Err(HeError::InsecureParameters {
                log_n: self.log_n,
                total_bits,
                max_bits,
                security: self.security,
            });
        }
        Ok(())
    }

    /// Validates the literal, generates the primes and all per-level precomputations.
    ///
    /// # Errors
    /// [`HeError::InvalidParameters`], [`HeError::InsecureParameters`],
    /// [`HeError::UnsupportedDegree`], or [`HeError::Math`] if too few primes exist.
    ///
    /// ```
    /// use sphinx_he::{HeError, ParametersLiteral};
    /// let params = ParametersLiteral::seal_n8192().build()?;
    /// assert_eq!(params.slots(), 4096);
    /// let mut too_big = ParametersLiteral::seal_n8192();
    /// too_big.q_bits.push(40);
    /// assert!(matches!(too_big.build(), Err(HeError::InsecureParameters { .. })));
    /// # Ok::<(), HeError>(())
    /// ```
    pub fn build(&self) -> Result<Arc<Parameters>> {
        Parameters::new(self.clone()).map(Arc::new)
    }
}

/// A parameter set suggested by [`suggest`], with its estimated precision.
#[derive(Clone, Debug, PartialEq)]
pub struct Suggestion {
    /// The parameters.
    pub literal: ParametersLiteral,
    /// Estimated precision in bits after `depth` multiplications (see [`estimate_precision_bits`]).
    pub precision_bits: f64,
}

/// Headroom bits of `q_0` above the scale: the integer part a decrypted value may occupy.
pub const SUGGEST_HEADROOM_BITS: u32 = 20;

/// The smallest secure set for `depth` rescaled multiplications at scale `2^scale_bits` with at
/// least `min_slots` slots: `q_0` of `min(60, scale_bits + 20)` bits, `depth` primes of
/// `scale_bits`, one special prime as large as the largest ciphertext prime.
///
/// # Errors
/// [`HeError::NoSecureParameters`] if no degree up to `2^15` works (or `security` is the toy
/// level), [`HeError::InvalidParameters`] for scale bits outside `1 ..= 60`.
///
/// ```
/// use sphinx_he::{SecurityLevel, params::suggest};
/// let s = suggest(2, 40, 4096, SecurityLevel::Classical128)?;
/// assert_eq!(s.literal.log_n, 13);
/// assert_eq!(s.literal.q_bits, vec![60, 40, 40]);
/// assert_eq!(s.literal.p_bits, vec![60]);
/// # Ok::<(), sphinx_he::HeError>(())
/// ```
pub fn suggest(
    depth: usize,
    scale_bits: u32,
    min_slots: usize,
    security: SecurityLevel,
) -> Result<Suggestion> {
    suggest_inner(depth, scale_bits, min_slots, security, true)
}

/// As [`suggest`] for workloads that need no key switching (no relinearization, rotation or
/// conjugation; the client decrypts 3-part products itself): no special prime, so more of the
/// modulus budget goes to the ciphertext and smaller rings qualify. The precision estimate
/// accounts for the larger public-key encryption noise (no division by `P`).
///
/// # Errors
/// As [`suggest`].
pub fn suggest_without_key_switching(
    depth: usize,
    scale_bits: u32,
    min_slots: usize,
    security: SecurityLevel,
) -> Result<Suggestion> {
    suggest_inner(depth, scale_bits, min_slots, security, false)
}

fn suggest_inner(
    depth: usize,
    scale_bits: u32,
    min_slots: usize,
    security: SecurityLevel,
    key_switching: bool,
) -> Result<Suggestion> {
    let none = HeError::NoSecureParameters {
        depth,
        scale_bits,
        min_slots,
        security,
    };
    if !(1..=60).contains(&scale_bits) {
        return Err(HeError::InvalidParameters {
            reason: InvalidParametersReason::ScaleBits(scale_bits),
        });
    }
    if security == SecurityLevel::InsecureToyForTests || depth > 63 {
        return Err(none);
    }
    let q0 = (scale_bits + SUGGEST_HEADROOM_BITS).min(60);
    let mut q_bits = vec![q0];
    q_bits.extend(std::iter::repeat_n(scale_bits, depth));
    let p_bits = if key_switching {
        vec![q0.max(scale_bits)]
    } else {
        Vec::new()
    };
    if min_slots > 1 << 14 {
        return Err(none);
    }
    let min_log_n = (2 * min_slots.max(1)).next_power_of_two().ilog2().max(10);
    for log_n in min_log_n..=15 {
        let literal = ParametersLiteral {
            log_n,
            q_bits: q_bits.clone(),
            p_bits: p_bits.clone(),
            scale_bits,
            security,
        };
        if literal.check_security().is_err() {
            continue;
        }
        // Small degrees may lack primes of the requested size; try the next degree then.
        if primes::ntt_primes(&[q_bits.as_slice(), &p_bits].concat(), 1 << log_n).is_err() {
            continue;
        }
        let precision_bits = if key_switching {
            estimate_precision_bits(log_n, scale_bits, depth)
        } else {
            estimate_precision_bits_without_key_switching(log_n, scale_bits, depth)
        };
        return Ok(Suggestion {
            literal,
            precision_bits,
        });
    }
    Err(none)
}

/// Estimated precision (bits) of CKKS results after `depth` rescaled multiplications of values
/// in `[-1, 1]`, for parameters with a special prime as large as `q_0` (as [`suggest`] makes).
///
/// The largest per-coefficient error of a fresh or key-switched ciphertext is the key-switching
/// term `Σ_j [d]_{q_j} e_j / P`, of variance about `N σ² / 12` (public-key encryption is
/// divided by `P` too and leaves only a rounding error of variance `(1 + 2N/3) / 12`). A real
/// slot sums `N` coefficients with unit-modulus weights: `σ_slot = sqrt(N/2 · v) / Δ`. We take
/// `6 σ_slot` as the worst of the slots and add half a bit per level for the rescaling and
/// multiplication terms. Capped at 52 bits (`f64` resolution).
pub fn estimate_precision_bits(log_n: u32, scale_bits: u32, depth: usize) -> f64 {
    let n = (1u64 << log_n) as f64;
    let coeff_var = n * ERROR_STD_DEV * ERROR_STD_DEV / 12.0;
    let slot_std = (n / 2.0 * coeff_var).sqrt();
    let bits = scale_bits as f64 - (6.0 * slot_std).log2() - 0.5 * (depth as f64 + 1.0).log2();
    bits.clamp(0.0, 52.0)
}

/// As [`estimate_precision_bits`] for sets without special primes, where products stay
/// 3-part (the client decrypts them with `s` and `s²`).
///
/// Two terms compete. Public-key encryption noise `e_0 + u e + e_1 s` has variance
/// `σ²(1 + 4N/3)` per coefficient (treated as in [`estimate_precision_bits`]). Rescaling a 3-part
/// product rounds `c_2`, and that rounding error is multiplied by `s²`: in slot `j` it is
/// `r(ζ_j)·s(ζ_j)²`, heavy-tailed because `|s(ζ_j)|²` is; its worst slot is about
/// `1.5 · sqrt(N/12) · (2N/3) · ln N` (fitted to measurements at `N = 2^12`, `2^13`).
pub fn estimate_precision_bits_without_key_switching(
    log_n: u32,
    scale_bits: u32,
    depth: usize,
) -> f64 {
    let n = (1u64 << log_n) as f64;
    let coeff_var = ERROR_STD_DEV * ERROR_STD_DEV * (1.0 + 4.0 * n / 3.0);
    let slot_std = (n / 2.0 * coeff_var).sqrt();
    let mut bits = scale_bits as f64 - (6.0 * slot_std).log2() - 0.5 * (depth as f64 + 1.0).log2();
    if depth > 0 {
        let worst = 1.5 * (n / 12.0).sqrt() * (2.0 * n / 3.0) * n.ln();
        bits = bits.min(scale_bits as f64 - worst.log2() - 0.5 * (depth as f64).log2());
    }
    bits.clamp(0.0, 52.0)
}

/// Precomputations of hybrid key switching at one level.
#[derive(Debug)]
pub(crate) struct KeySwitchLevel {
    /// Converts residues mod `P` to residues mod `Q_l`.
    pub(crate) p_to_q: BasisConverter,
}

/// Exact CRT reconstruction constants of one level, for decoding.
#[derive(Debug)]
pub(crate) struct CrtLevel {
    /// `Q_l` as little-endian words.
    pub(crate) q: Vec<u64>,
    /// `floor(Q_l / 2)`.
    pub(crate) q_half: Vec<u64>,
    /// `Q_l / q_i` as words, per limb.
    pub(crate) q_hat: Vec<Vec<u64>>,
    /// `(Q_l / q_i)^{-1} mod q_i` and Shoup companions.
    pub(crate) q_hat_inv: Vec<(u64, u64)>,
    /// `Q_l / q_i mod 2^128`, for the fast path of decoding.
    pub(crate) q_hat_wrapped: Vec<u128>,
    /// `Q_l mod 2^128`.
    pub(crate) q_wrapped: u128,
    /// `1 / q_i`.
    pub(crate) inv_q: Vec<f64>,
    /// Below this `|Σ y_i/q_i - v|` (i.e. `|x| < 2^125`) the 128-bit fast path is exact;
    /// zero (never) when `Q_l > 2^170`.
    pub(crate) fast_threshold: f64,
}

/// Validated, immutable parameters; share them with `Arc<Parameters>`.
pub struct Parameters {
    literal: ParametersLiteral,
    id: ParamId,
    n: usize,
    q_primes: Vec<u64>,
    p_primes: Vec<u64>,
    /// `q_bases[l]` holds `q_0 … q_l`.
    q_bases: Vec<RnsBasis>,
    /// `qp_bases[l]` holds `q_0 … q_l, p_0 … p_{k-1}`.
    qp_bases: Vec<RnsBasis>,
    /// All primes `q_0 … q_L, p_0 …`.
    full_basis: RnsBasis,
    pub(crate) ks: Vec<KeySwitchLevel>,
    /// `P^{-1} mod q_i` with Shoup companions.
    pub(crate) p_inv_mod_q: Vec<(u64, u64)>,
    /// `P mod q_i`.
    pub(crate) p_mod_q: Vec<u64>,
    /// `floor(P/2) mod q_i` and `mod p_k`, for rounding in the division by `P`.
    pub(crate) p_half_mod_q: Vec<u64>,
    pub(crate) p_half_mod_p: Vec<u64>,
    pub(crate) crt: Vec<CrtLevel>,
    /// Per ciphertext prime: the NTT of the monomial `X^{N/2}` (the imaginary unit in every
    /// slot) and its Shoup companions, for
    /// [`Evaluator::add_imaginary_assign`](crate::Evaluator::add_imaginary_assign).
    pub(crate) imaginary_unit: Vec<(Vec<u64>, Vec<u64>)>,
}

impl Parameters {
    /// Validates `literal` and precomputes everything (same as [`ParametersLiteral::build`]).
    ///
    /// # Errors
    /// As [`ParametersLiteral::build`].
    pub fn new(literal: ParametersLiteral) -> Result<Self> {
        let invalid = |reason| HeError::InvalidParameters { reason };
        let toy = literal.security == SecurityLevel::InsecureToyForTests;
        let log_range = if toy { 4..=17 } else { 10..=17 };
        if !log_range.contains(&literal.log_n) {
            return Err(invalid(InvalidParametersReason::LogN(literal.log_n)));
        }
        if literal.q_bits.is_empty() {
            return Err(invalid(InvalidParametersReason::EmptyChain));
        }
        if literal.q_bits.len() > 64 || literal.p_bits.len() > 16 {
            return Err(invalid(InvalidParametersReason::TooManyPrimes(
                literal.q_bits.len() + literal.p_bits.len(),
            )));
        }
        if !(1..=60).contains(&literal.scale_bits) {
            return Err(invalid(InvalidParametersReason::ScaleBits(
                literal.scale_bits,
            )));
        }
        let n = 1usize << literal.log_n;
        let min_bits = primes::min_prime_bits(n);
        if let Some(&b) = literal
            .q_bits
            .iter()
            .chain(&literal.p_bits)
            .find(|&&b| !(min_bits..=60).contains(&b))
        {
            return Err(invalid(InvalidParametersReason::PrimeBits(b)));
        }
        literal.check_security()?;

        let all_bits: Vec<u32> = literal
            .q_bits
            .iter()
            .chain(&literal.p_bits)
            .copied()
            .collect();
        let all_primes = primes::ntt_primes(&all_bits, n)?;
        let (q_primes, p_primes) = all_primes.split_at(literal.q_bits.len());
        let full_basis = RnsBasis::new(n, &all_primes)?;
        let nq = q_primes.len();
        let np = p_primes.len();
        let mut q_bases = Vec::with_capacity(nq);
        let mut qp_bases = Vec::with_capacity(nq);
        for l in 0..nq {
            q_bases.push(full_basis.prefix(l + 1)?);
            let idx: Vec<usize> = (0..=l).chain(nq..nq + np).collect();
            qp_bases.push(full_basis.select(&idx)?);
        }
        let q_moduli: Vec<Modulus> = full_basis.moduli()[..nq].to_vec();
        let p_moduli: Vec<Modulus> = full_basis.moduli()[nq..].to_vec();
        let mut ks = Vec::new();
        let mut p_inv_mod_q = Vec::new();
        let mut p_mod_q = Vec::new();
        if np > 0 {
            for l in 0..nq {
                ks.push(KeySwitchLevel {
                    p_to_q: BasisConverter::new(&p_moduli, &q_moduli[..=l])?,
                });
            }
            for m in &q_moduli {
                let p_mod = p_moduli
                    .iter()
                    .fold(1u64, |acc, p| m.mul(acc, m.reduce(p.value())));
                let inv = m.inv(p_mod)?;
                p_inv_mod_q.push((inv, m.shoup(inv)));
                p_mod_q.push(p_mod);
            }
        }
        // P is odd, so floor(P/2) = (P - 1) / 2 = (P - 1) * 2^{-1} modulo any odd prime.
        let half_of = |m: &Modulus| -> Result<u64> {
            let p_mod = p_moduli
                .iter()
                .fold(1u64, |acc, p| m.mul(acc, m.reduce(p.value())));
            Ok(m.mul(m.sub(p_mod, m.reduce(1)), m.inv(2)?))
        };
        let p_half_mod_q = if np > 0 {
            q_moduli.iter().map(half_of).collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let p_half_mod_p = p_moduli.iter().map(half_of).collect::<Result<Vec<_>>>()?;
        let crt = (0..nq)
            .map(|l| crt_level(&q_moduli[..=l]))
            .collect::<Result<Vec<_>>>()?;
        let imaginary_unit = q_moduli
            .iter()
            .zip(full_basis.plans())
            .map(|(m, plan)| {
                let mut unit = vec![0u64; n];
                unit[n / 2] = 1;
                plan.forward(&mut unit);
                let shoup = unit.iter().map(|&w| m.shoup(w)).collect();
                (unit, shoup)
            })
            .collect();
        let id = ParamId(digest(&literal, &all_primes));
        Ok(Self {
            literal,
            id,
            n,
            q_primes: q_primes.to_vec(),
            p_primes: p_primes.to_vec(),
            q_bases,
            qp_bases,
            full_basis,
            ks,
            p_inv_mod_q,
            p_mod_q,
            p_half_mod_q,
            p_half_mod_p,
            crt,
            imaginary_unit,
        })
    }

    /// The literal these parameters were built from.
    pub fn literal(&self) -> &ParametersLiteral {
        &self.literal
    }

    /// Identity of this parameter set (carried by every ciphertext, plaintext and key).
    pub fn id(&self) -> ParamId {
        self.id
    }

    /// `log2 N`.
    pub fn log_n(&self) -> u32 {
        self.literal.log_n
    }

    /// Ring degree `N`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// CKKS slot count `N/2`.
    pub fn slots(&self) -> usize {
        self.n / 2
    }

    /// Highest level `L` (fresh ciphertexts); level `l` uses primes `q_0 … q_l`.
    pub fn max_level(&self) -> usize {
        self.q_primes.len() - 1
    }

    /// Default CKKS scale `2^scale_bits`.
    pub fn scale(&self) -> f64 {
        (self.literal.scale_bits as f64).exp2()
    }

    /// Security level.
    pub fn security(&self) -> SecurityLevel {
        self.literal.security
    }

    /// The ciphertext primes `q_0 … q_L`.
    pub fn q_primes(&self) -> &[u64] {
        &self.q_primes
    }

    /// The special primes.
    pub fn p_primes(&self) -> &[u64] {
        &self.p_primes
    }

    /// The basis `q_0 … q_level`.
    ///
    /// # Errors
    /// [`HeError::InvalidLevel`] if `level > max_level()`.
    pub fn q_basis(&self, level: usize) -> Result<&RnsBasis> {
        self.q_bases.get(level).ok_or(HeError::InvalidLevel {
            level,
            min: 0,
            max: self.max_level(),
        })
    }

    /// The basis `q_0 … q_level, p_0 …` used inside key switching.
    ///
    /// # Errors
    /// [`HeError::InvalidLevel`] if `level > max_level()`.
    pub fn qp_basis(&self, level: usize) -> Result<&RnsBasis> {
        self.qp_bases.get(level).ok_or(HeError::InvalidLevel {
            level,
            min: 0,
            max: self.max_level(),
        })
    }

    /// All primes, ciphertext primes first: the basis of secret and switching keys.
    pub fn full_basis(&self) -> &RnsBasis {
        &self.full_basis
    }

    /// `log2(QP)` as the sum of prime bit sizes.
    pub fn total_bits(&self) -> u32 {
        self.literal.total_bits()
    }

    /// Estimated precision after `depth` multiplications (see [`estimate_precision_bits`]).
    pub fn precision_bits(&self, depth: usize) -> f64 {
        estimate_precision_bits(self.literal.log_n, self.literal.scale_bits, depth)
    }

    /// Checks that an object made under `id` belongs to these parameters.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`].
    #[inline]
    pub fn check_id(&self, id: ParamId) -> Result<()> {
        if id == self.id {
            Ok(())
        } else {
            Err(HeError::ParamMismatch {
                expected: self.id,
                got: id,
            })
        }
    }

    /// Checks that `level` exists.
    ///
    /// # Errors
    /// [`HeError::InvalidLevel`].
    #[inline]
    pub fn check_level(&self, level: usize) -> Result<()> {
        if level <= self.max_level() {
            Ok(())
        } else {
            Err(HeError::InvalidLevel {
                level,
                min: 0,
                max: self.max_level(),
            })
        }
    }
}

impl std::fmt::Debug for Parameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parameters")
            .field("id", &self.id)
            .field("literal", &self.literal)
            .field("q_primes", &self.q_primes)
            .field("p_primes", &self.p_primes)
            .finish_non_exhaustive()
    }
}

fn digest(literal: &ParametersLiteral, primes: &[u64]) -> u64 {
    // FNV-1a over a canonical encoding: stable across runs and machines.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u64| {
        for b in x.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(literal.log_n as u64);
    eat(literal.q_bits.len() as u64);
    eat(literal.p_bits.len() as u64);
    for &p in primes {
        eat(p);
    }
    eat(literal.scale_bits as u64);
    eat(literal.security.bits().unwrap_or(0) as u64);
    h
}

fn mul_word(a: &[u64], w: u64) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len() + 1);
    let mut carry = 0u128;
    for &x in a {
        let t = x as u128 * w as u128 + carry;
        out.push(t as u64);
        carry = t >> 64;
    }
    out.push(carry as u64);
    while out.len() > 1 && out.last() == Some(&0) {
        out.pop();
    }
    out
}

fn crt_level(moduli: &[Modulus]) -> Result<CrtLevel> {
    let q = moduli
        .iter()
        .fold(vec![1u64], |acc, m| mul_word(&acc, m.value()));
    let mut q_half = q.clone();
    let mut carry = 0u64;
    for w in q_half.iter_mut().rev() {
        let next = *w & 1;
        *w = (*w >> 1) | (carry << 63);
        carry = next;
    }
    let mut q_hat = Vec::new();
    let mut q_hat_inv = Vec::new();
    for (i, mi) in moduli.iter().enumerate() {
        let mut hat = vec![1u64];
        let mut hat_mod = 1u64;
        for (k, mk) in moduli.iter().enumerate() {
            if k != i {
                hat = mul_word(&hat, mk.value());
                hat_mod = mi.mul(hat_mod, mi.reduce(mk.value()));
            }
        }
        let inv = mi.inv(hat_mod)?;
        q_hat.push(hat);
        q_hat_inv.push((inv, mi.shoup(inv)));
    }
    let wrap = |w: &[u64]| {
        w.first().copied().unwrap_or(0) as u128 | (w.get(1).copied().unwrap_or(0) as u128) << 64
    };
    let q_hat_wrapped = q_hat.iter().map(|h| wrap(h)).collect();
    let q_wrapped = wrap(&q);
    let inv_q = moduli.iter().map(|m| 1.0 / m.value() as f64).collect();
    let log2_q: f64 = moduli.iter().map(|m| (m.value() as f64).log2()).sum();
    // The f64 sum Σ y_i/q_i is off by at most ~L·2^-52; keeping the threshold at 2^-45 or
    // more (Q ≤ 2^170) leaves a 16x margin, so a value taking the fast path has |x| < 2^126
    // and its 128-bit wrap-around is exact. Larger moduli always take the exact path.
    let fast_threshold = if log2_q <= 170.0 {
        (125.0 - log2_q).exp2().min(0.49)
    } else {
        0.0
    };
    Ok(CrtLevel {
        q,
        q_half,
        q_hat,
        q_hat_inv,
        q_hat_wrapped,
        q_wrapped,
        inv_q,
        fast_threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_table_bounds() {
        let b128: Vec<_> = (11..=15)
            .map(|l| SecurityLevel::Classical128.max_log_qp(l).unwrap())
            .collect();
        assert_eq!(b128, [54, 109, 218, 438, 881]);
        assert_eq!(SecurityLevel::Classical192.max_log_qp(13), Some(152));
        assert_eq!(SecurityLevel::Classical256.max_log_qp(15), Some(476));
        assert_eq!(SecurityLevel::Classical128.max_log_qp(16), None);
    }

    #[test]
    fn presets_are_secure_and_insecure_sets_are_refused() {
        let p = ParametersLiteral::seal_n8192().build().unwrap();
        assert_eq!((p.n(), p.max_level(), p.total_bits()), (8192, 2, 200));
        assert!(ParametersLiteral::seal_n16384().build().is_ok());
        let mut lit = ParametersLiteral::seal_n8192();
        lit.security = SecurityLevel::Classical192;
        assert_eq!(
            lit.build().unwrap_err(),
            HeError::InsecureParameters {
                log_n: 13,
                total_bits: 200,
                max_bits: 152,
                security: SecurityLevel::Classical192
            }
        );
        let lit = ParametersLiteral {
            log_n: 9,
            ..ParametersLiteral::seal_n8192()
        };
        assert!(matches!(
            lit.build(),
            Err(HeError::InvalidParameters { .. })
        ));
        let toy = ParametersLiteral::insecure_for_tests(9, &[50, 40], &[50], 40);
        assert!(toy.build().is_ok());
        let lit = ParametersLiteral {
            security: SecurityLevel::Classical128,
            ..toy
        };
        assert!(lit.build().is_err());
    }

    #[test]
    fn ids_are_deterministic_and_distinguish_sets() {
        let a = ParametersLiteral::seal_n8192().build().unwrap();
        let b = ParametersLiteral::seal_n8192().build().unwrap();
        let c = ParametersLiteral::seal_n16384().build().unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert!(a.check_id(c.id()).is_err());
    }

    #[test]
    fn suggest_picks_smallest_secure_ring() {
        let s = suggest(1, 30, 1024, SecurityLevel::Classical128).unwrap();
        assert_eq!(
            (s.literal.log_n, s.literal.total_bits()),
            (13, 50 + 30 + 50)
        );
        assert!(s.literal.build().is_ok());
        let s = suggest(6, 40, 16, SecurityLevel::Classical128).unwrap();
        assert_eq!(s.literal, ParametersLiteral::seal_n16384());
        assert!(s.precision_bits > 15.0);
        let s = suggest(2, 40, 8192, SecurityLevel::Classical128).unwrap();
        assert_eq!(s.literal.log_n, 14);
        assert!(matches!(
            suggest(60, 40, 1, SecurityLevel::Classical256),
            Err(HeError::NoSecureParameters { .. })
        ));
        for (depth, slots) in [(1, usize::MAX), (usize::MAX, 1)] {
            let r = suggest(depth, 40, slots, SecurityLevel::Classical128);
            assert!(matches!(r, Err(HeError::NoSecureParameters { .. })));
        }
    }

    #[test]
    fn suggest_without_key_switching_uses_the_whole_budget() {
        let s = suggest_without_key_switching(1, 30, 2048, SecurityLevel::Classical128).unwrap();
        assert_eq!(
            (
                s.literal.log_n,
                s.literal.q_bits.clone(),
                s.literal.p_bits.len()
            ),
            (12, vec![50, 30], 0)
        );
        assert!(s.literal.build().is_ok());
        let with = suggest(1, 30, 2048, SecurityLevel::Classical128).unwrap();
        assert_eq!(with.literal.log_n, 13);
        assert!(s.precision_bits < with.precision_bits + 3.0);
    }

    #[test]
    fn crt_constants_reconstruct() {
        let p = ParametersLiteral::seal_n8192().build().unwrap();
        let c = &p.crt[2];
        assert_eq!(c.q.len(), 3); // 140 bits
        assert_eq!(c.q_hat[0].len(), 2);
    }
}
