//! Why a byte string was refused.

/// A serialized object that failed to decode or did not match the expected
/// parameters. Decoders return this for every malformed input; they never panic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ends before a field it needs.
    #[error("input truncated: needed {needed} bytes, got {got}")]
    Truncated {
        /// Bytes the next field needed, counted from the start.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The input does not start with the Sphinx HE magic.
    #[error("not a Sphinx HE object (magic {found:02x?})")]
    BadMagic {
        /// The first four bytes found.
        found: [u8; 4],
    },
    /// A format version this build cannot read.
    #[error("format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Version in the header.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The header's object-type byte names no known type.
    #[error("unknown object type {found}")]
    UnknownObjectType {
        /// The byte found.
        found: u8,
    },
    /// A valid object of another type than the caller asked for.
    #[error("expected a {expected}, found a {found}")]
    WrongObjectType {
        /// The type asked for.
        expected: super::ObjectType,
        /// The type in the header.
        found: super::ObjectType,
    },
    /// The payload is larger than the caller's limit (checked before allocating).
    #[error("payload of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Payload length claimed by the header.
        len: u64,
        /// The caller's limit.
        limit: usize,
    },
    /// The header's payload length disagrees with the bytes present.
    #[error("header announces {header} payload bytes but {actual} follow")]
    LengthMismatch {
        /// Payload length in the header.
        header: u64,
        /// Bytes actually following the header.
        actual: u64,
    },
    /// The object belongs to another parameter set.
    #[error("parameter id {found:#018x} does not match the expected {expected:#018x}")]
    ParamsMismatch {
        /// Id of the parameters the decoder was given.
        expected: u64,
        /// Id in the header.
        found: u64,
    },
    /// The level is not one the parameters (or this object type) allow.
    #[error("level {found} is invalid here (allowed: {allowed})")]
    InvalidLevel {
        /// Level in the header.
        found: u16,
        /// What the object type and parameters allow, in words.
        allowed: &'static str,
    },
    /// The payload length is not the one the parameters and header imply.
    #[error("payload is {found} bytes; these parameters and level need {expected}")]
    PayloadSize {
        /// Size implied by the parameters and the header fields.
        expected: u64,
        /// Size in the header.
        found: u64,
    },
    /// A residue is not reduced modulo its prime.
    #[error(
        "component {component}, limb {limb}, coefficient {index}: value is not below the modulus {modulus}"
    )]
    CoefficientOutOfRange {
        /// Polynomial index within the object.
        component: usize,
        /// RNS limb index.
        limb: usize,
        /// Coefficient index.
        index: usize,
        /// The prime the value must be below.
        modulus: u64,
    },
    /// The padding bits at the end of a packed limb are not zero.
    #[error("component {component}, limb {limb}: nonzero padding bits")]
    NonzeroPadding {
        /// Polynomial index within the object.
        component: usize,
        /// RNS limb index.
        limb: usize,
    },
    /// A compact ciphertext's power-of-two modulus is outside the accepted range.
    #[error("compact modulus 2^{bits} is outside 2^{min} ..= 2^{max}")]
    InvalidCompactBits {
        /// Exponent in the payload.
        bits: u32,
        /// Smallest accepted for these parameters, this size and scale.
        min: u32,
        /// Largest accepted (one less than the bit length of `q_0`).
        max: u32,
    },
    /// Bytes left over after the object.
    #[error("{extra} trailing bytes after the object")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// A field holds a value the format forbids.
    #[error("malformed object: {0}")]
    Malformed(&'static str),
    /// The decoded parts were refused by the object's constructor.
    #[error("decoded object rejected: {0}")]
    Rejected(crate::HeError),
    /// A decoder invariant failed; this is a bug in the decoder, reported
    /// instead of panicking.
    #[error("internal decoder error: {0}")]
    Internal(&'static str),
}
