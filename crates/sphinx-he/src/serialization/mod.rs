//! Compact, versioned, validated serialization of ciphertexts, plaintexts and
//! public key material (format version 1).
//!
//! # Envelope
//! Every object starts with a 28-byte [`Header`]; all integers are little-endian:
//!
//! ```text
//! offset size field
//!      0    4 magic            b"SPHE"
//!      4    2 format version   u16, currently 1
//!      6    1 object type      u8, see ObjectType::code
//!      7    1 flags            u8, must be 0 (reserved)
//!      8    8 parameter id     u64, ParamId of the parameter set
//!     16    2 level            u16, index of the highest ciphertext prime in use
//!     18    2 reserved         u16, must be 0
//!     20    8 payload length   u64, bytes after the header
//!     28      payload
//! ```
//!
//! # Payloads
//! A "poly over B" is one packed limb per prime of `B`, in order, each residue mod
//! `q_i` taking exactly `⌈log2 q_i⌉` bits (least significant first), each limb
//! starting on a byte boundary with zero padding. `Q_l` is `q_0 … q_l`, `QP` all
//! primes. Polynomials are stored in the NTT form they live in.
//!
//! | type | header level | payload |
//! |---|---|---|
//! | ciphertext | its level `l` | `u8` size (2 or 3), `f64` scale, `size` polys over `Q_l` |
//! | seeded ciphertext | its level `l` | `f64` scale, 32-byte seed of `c_1`, `c_0` over `Q_l` |
//! | plaintext | its level `l` | `f64` scale, one poly over `Q_l` |
//! | public key | `L` | `b`, `a` over `QP` |
//! | relinearization key | `L` | `u16` digits (`L+1`), then `b_j`, `a_j` over `QP` per digit |
//! | Galois keys | `L` | `u32` count, `u16` digits, then per key: `u64` Galois element (odd, increasing) and its digits |
//! | seeded public key | `L` | `b` over `QP`, 32-byte seed of `a` |
//! | seeded relinearization key | `L` | `u16` digits, then `b_j` over `QP` and the 32-byte seed of `a_j` per digit |
//! | seeded Galois keys | `L` | as Galois keys, with seeded digits |
//! | compact ciphertext | 0 | `u8` size (2 or 3), `u8` `k`, `f64` scale, `size` polys of `N` `k`-bit values, coefficient domain ([`compact`]) |
//!
//! A fresh symmetric ciphertext is stored as `c_0` plus the 32-byte seed that
//! regenerates `c_1` ([`expand_seed`](crate::rlwe::sampler::expand_seed)), about half
//! the size of a full one; keys that know the seeds of their uniform parts travel the
//! same way. The seed expansion is part of the format. Each decoder accepts both
//! forms of its type.
//!
//! # Validation
//! Decoding never trusts its input: the header is checked against a caller-given
//! size limit before anything is allocated, the payload length must equal the
//! one implied by the expected parameters and the header's level, every residue
//! must be below its prime, padding bits must be zero and no byte may trail, so
//! each object has exactly one accepted encoding. Any failure is a
//! [`DecodeError`]; decoders do not panic on any input (a corpus of random
//! corruptions checks this in CI). Decoding needs the parameters the object is
//! expected to belong to and refuses objects made under other parameters.
//!
//! There is no unchecked variant: the range check is fused with unpacking and
//! costs one comparison per residue.
//!
//! Secret keys have no serialization here: [`Serializable`] is not implemented for
//! them (client-side persistence is the explicit
//! [`SecretKey::expose_secret_coefficients`](crate::SecretKey::expose_secret_coefficients)).

mod bits;
pub mod compact;
mod envelope;
mod error;

pub use envelope::{FORMAT_VERSION, HEADER_LEN, Header, MAGIC, ObjectType};
pub use error::DecodeError;

use bits::{Location, pack, packed_len, unpack_checked};
use envelope::Reader;

/// Bits needed for residues modulo `q`: values are in `[0, q)`.
pub(crate) const fn residue_bits(q: u64) -> u32 {
    64 - (q - 1).leading_zeros()
}

/// Bytes one polynomial with `n` coefficients per limb takes over `moduli`.
pub(crate) fn poly_len(n: usize, moduli: &[u64]) -> usize {
    moduli.iter().map(|&q| packed_len(n, residue_bits(q))).sum()
}

/// Appends a polynomial given limb by limb (each limb `n` residues mod its prime).
pub(crate) fn write_poly<'a>(
    out: &mut Vec<u8>,
    limbs: impl IntoIterator<Item = &'a [u64]>,
    moduli: &[u64],
) {
    for (limb, &q) in limbs.into_iter().zip(moduli) {
        pack(limb, residue_bits(q), out);
    }
}

/// Reads one polynomial of `n` coefficients per limb over `moduli` into `out` (limb-major,
/// limb `i` is `out[i*n..(i+1)*n]`), checking every residue while unpacking, so the caller
/// can wrap `out` without another pass.
pub(crate) fn read_poly_into(
    r: &mut Reader<'_>,
    n: usize,
    moduli: &[u64],
    component: usize,
    out: &mut [u64],
) -> Result<(), DecodeError> {
    if out.len() != n * moduli.len() {
        return Err(DecodeError::Internal("polynomial buffer shape"));
    }
    for (limb, (&q, dst)) in moduli.iter().zip(out.chunks_exact_mut(n)).enumerate() {
        let width = residue_bits(q);
        let src = r.take(packed_len(n, width))?;
        unpack_checked(src, width, q, dst, Location { component, limb })?;
    }
    Ok(())
}

mod objects;

pub use compact::CompactCiphertext;
pub use objects::{DEFAULT_SIZE_LIMIT, Serializable};
