//! The error type of `sphinx-math`.

/// Everything that can go wrong in `sphinx-math`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MathError {
    /// A modulus outside the supported range `2 ..= 2^62 - 1`.
    #[error("modulus {0} is outside the supported range [2, 2^62)")]
    InvalidModulus(u64),
    /// A requested prime bit size outside what the generator supports.
    #[error("prime bit size {bits} is unsupported (need {min} ..= {max})")]
    InvalidPrimeBits {
        /// The requested size.
        bits: u32,
        /// Smallest supported size for this ring degree.
        min: u32,
        /// Largest supported size.
        max: u32,
    },
    /// Not enough NTT-friendly primes exist with the requested size.
    #[error("only {found} primes of {bits} bits are congruent to 1 mod {two_n}, {wanted} wanted")]
    NotEnoughPrimes {
        /// Requested size.
        bits: u32,
        /// `2N`.
        two_n: u64,
        /// How many were asked for.
        wanted: usize,
        /// How many exist.
        found: usize,
    },
    /// A ring degree that is not a power of two in `16 ..= 2^17`.
    #[error("ring degree {0} is not a power of two in [16, 2^17]")]
    InvalidDegree(usize),
    /// The modulus does not admit a negacyclic NTT of the requested size.
    #[error("modulus {modulus} does not support a negacyclic NTT of size {n}")]
    NotNttFriendly {
        /// The modulus.
        modulus: u64,
        /// Ring degree.
        n: usize,
    },
    /// A value has no inverse modulo the given modulus.
    #[error("{value} is not invertible modulo {modulus}")]
    NotInvertible {
        /// The value.
        value: u64,
        /// The modulus.
        modulus: u64,
    },
    /// Two operands (or an operand and a basis) disagree on their shape.
    #[error(
        "shape mismatch: expected {expected_limbs} limbs of degree {expected_n}, got {got_limbs} of degree {got_n}"
    )]
    ShapeMismatch {
        /// Expected number of limbs.
        expected_limbs: usize,
        /// Expected ring degree.
        expected_n: usize,
        /// Number of limbs found.
        got_limbs: usize,
        /// Ring degree found.
        got_n: usize,
    },
    /// A coefficient is not reduced modulo its limb's modulus.
    #[error("coefficient {value} of limb {limb} is not below its modulus {modulus}")]
    UnreducedCoefficient {
        /// The limb index.
        limb: usize,
        /// The offending value.
        value: u64,
        /// The limb's modulus.
        modulus: u64,
    },
    /// A Galois element that is not an odd residue modulo `2N`.
    #[error("Galois element {k} is not odd modulo 2N = {two_n}")]
    InvalidGaloisElement {
        /// The element.
        k: u64,
        /// `2N`.
        two_n: u64,
    },
    /// The operation needs a basis with at least this many limbs.
    #[error("operation needs at least {0} limbs")]
    TooFewLimbs(usize),
    /// The moduli of a basis are not pairwise distinct.
    #[error("modulus {0} appears twice in an RNS basis")]
    DuplicateModulus(u64),
    /// The NTT backend ordered evaluation points differently for two primes.
    #[error("the NTT backend uses inconsistent evaluation orders across primes")]
    InconsistentNttOrder,
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, MathError>;
