//! The error type of `sphinx-he`.

use crate::params::{ParamId, SecurityLevel};

/// Everything that can go wrong in `sphinx-he`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum HeError {
    /// An error from the lattice arithmetic layer.
    #[error(transparent)]
    Math(#[from] sphinx_math::MathError),
    /// The modulus `QP` is too large for the ring degree at the requested security level.
    #[error(
        "insecure parameters: log2(QP) = {total_bits} bits exceeds the HomomorphicEncryption.org bound of {max_bits} bits for N = 2^{log_n} at {security}"
    )]
    InsecureParameters {
        /// `log2 N`.
        log_n: u32,
        /// Sum of the bit sizes of all primes (Q and P).
        total_bits: u32,
        /// The standard's bound.
        max_bits: u32,
        /// The requested level.
        security: SecurityLevel,
    },
    /// The security standard has no entry for this ring degree.
    #[error("no HomomorphicEncryption.org bound for N = 2^{log_n} at {security}")]
    UnsupportedDegree {
        /// `log2 N`.
        log_n: u32,
        /// The requested level.
        security: SecurityLevel,
    },
    /// A parameter literal that cannot describe a scheme instance.
    #[error("invalid parameters: {reason}")]
    InvalidParameters {
        /// Which rule was broken.
        reason: InvalidParametersReason,
    },
    /// No secure parameter set satisfies the request.
    #[error(
        "no secure parameter set for depth {depth}, scale 2^{scale_bits}, {min_slots} slots at {security}"
    )]
    NoSecureParameters {
        /// Requested multiplicative depth.
        depth: usize,
        /// Requested scale bits.
        scale_bits: u32,
        /// Requested minimum slot count.
        min_slots: usize,
        /// Requested security.
        security: SecurityLevel,
    },
    /// Operands were made under different parameter sets.
    #[error("parameter mismatch: expected {expected}, got {got}")]
    ParamMismatch {
        /// The evaluator's (or first operand's) parameters.
        expected: ParamId,
        /// The other operand's parameters.
        got: ParamId,
    },
    /// Operands are at different levels.
    #[error("level mismatch: {left} vs {right}")]
    LevelMismatch {
        /// Level of the first operand.
        left: usize,
        /// Level of the second operand.
        right: usize,
    },
    /// Operands have different scales (additions need equal scales).
    #[error("scale mismatch: 2^{:.3} vs 2^{:.3}", left.log2(), right.log2())]
    ScaleMismatch {
        /// Scale of the first operand.
        left: f64,
        /// Scale of the second operand.
        right: f64,
    },
    /// A level outside the modulus chain, or an operation that needs a higher level.
    #[error("level {level} is not usable here (valid: {min} ..= {max})")]
    InvalidLevel {
        /// Requested or current level.
        level: usize,
        /// Lowest level allowed for the operation.
        min: usize,
        /// Highest level of the chain.
        max: usize,
    },
    /// A ciphertext with an unsupported number of polynomials for the operation.
    #[error("ciphertext has {got} polynomials, operation supports {supported}")]
    UnsupportedCiphertextSize {
        /// Number of polynomials found.
        got: usize,
        /// What the operation accepts.
        supported: &'static str,
    },
    /// More values than slots.
    #[error("{got} values do not fit in {slots} slots")]
    TooManyValues {
        /// Values given.
        got: usize,
        /// Slots available.
        slots: usize,
    },
    /// A value times the scale does not fit in a signed 63-bit coefficient, or is not finite.
    #[error("value {value} at scale 2^{:.1} cannot be encoded", scale.log2())]
    EncodingOverflow {
        /// The offending value.
        value: f64,
        /// The requested scale.
        scale: f64,
    },
    /// A scale that is not a positive finite number.
    #[error("invalid scale {0}")]
    InvalidScale(f64),
    /// Key switching needs at least one special prime.
    #[error("these parameters have no special prime, so they support no key switching")]
    NoSpecialPrimes,
    /// No Galois key for the requested automorphism.
    #[error("no Galois key for element {element} (rotation or conjugation not generated)")]
    MissingGaloisKey {
        /// The Galois element `k` of `X -> X^k`.
        element: u64,
    },
    /// Two lists that must have equal lengths do not (or are empty).
    #[error("length mismatch: {left} vs {right} (and both must be non-empty)")]
    LengthMismatch {
        /// Length of the first list.
        left: usize,
        /// Length of the second list.
        right: usize,
    },
    /// Secret-key material that is not `N` ternary coefficients.
    #[error("invalid secret key material")]
    InvalidSecretKey,
    /// A plaintext value that is not reduced modulo the plaintext modulus `t`.
    #[error("value {value} is not below the plaintext modulus {modulus}")]
    ValueOutOfRange {
        /// The offending value.
        value: u64,
        /// The plaintext modulus.
        modulus: u64,
    },
    /// A power-of-two modulus `2^bits` for a compact level-0 ciphertext outside the
    /// useful range: at least `log2 q_0` saves nothing, and below `min` the rounding alone
    /// would swamp a value of 1 (see `serialization::compact`).
    #[error("compact modulus 2^{bits} is outside 2^{min} ..= 2^{max} for these parameters")]
    InvalidCompactBits {
        /// The requested exponent.
        bits: u32,
        /// The smallest exponent accepted for this ciphertext.
        min: u32,
        /// The largest (one less than the bit length of `q_0`).
        max: u32,
    },
    /// A rotation step outside `(-slots, slots)`.
    #[error("rotation by {steps} is out of range for {slots} slots")]
    InvalidRotation {
        /// Requested steps.
        steps: i64,
        /// Slot count.
        slots: usize,
    },
    /// An invariant that the types guarantee did not hold (a bug in this crate).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Why a parameter literal was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidParametersReason {
    /// `log_n` outside the supported range.
    LogN(u32),
    /// No ciphertext primes.
    EmptyChain,
    /// More ciphertext primes than the key-switching accumulators allow.
    TooManyPrimes(usize),
    /// A prime size outside `min ..= 60`.
    PrimeBits(u32),
    /// A scale of zero bits or more than 60.
    ScaleBits(u32),
    /// A BFV plaintext modulus size outside the supported range (or needing special primes).
    PlaintextModulusBits(u32),
    /// The BFV ciphertext modulus is too small for noise flooding plus exact decryption.
    FloodingBudget {
        /// `log2` of the worst-case noise after flooding, rounded up.
        needed_bits: u32,
        /// `log2` of the largest noise decryption tolerates, rounded down.
        available_bits: u32,
    },
}

impl std::fmt::Display for InvalidParametersReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LogN(l) => write!(
                f,
                "log_n = {l} is outside 4 ..= 17 (11 ..= 15 for secure sets)"
            ),
            Self::EmptyChain => write!(f, "the ciphertext modulus chain is empty"),
            Self::TooManyPrimes(c) => write!(f, "{c} ciphertext primes exceed the maximum of 64"),
            Self::PrimeBits(b) => write!(f, "a {b}-bit prime is outside the supported sizes"),
            Self::ScaleBits(b) => write!(f, "scale of {b} bits is outside 1 ..= 60"),
            Self::PlaintextModulusBits(b) => write!(
                f,
                "a {b}-bit plaintext modulus is outside the supported sizes (BFV sets take no special primes)"
            ),
            Self::FloodingBudget {
                needed_bits,
                available_bits,
            } => write!(
                f,
                "flooded noise needs {needed_bits} bits but decryption tolerates only {available_bits}"
            ),
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, HeError>;
