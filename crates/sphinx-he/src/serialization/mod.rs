//! Compact, versioned, validated serialization of ciphertexts, plaintexts and
//! public key material.
//!
//! Every object is an [envelope](envelope) (magic, format version, object type,
//! parameter id, level, payload length) followed by a payload in which each RNS
//! residue mod `q_i` takes exactly `⌈log2 q_i⌉` bits. A fresh symmetric
//! ciphertext is stored as `c0` plus the 32-byte seed that regenerates `c1`,
//! about half the size of a full one.
//!
//! Decoding never trusts its input: the header is checked against a caller-given
//! size limit before anything is allocated, the payload length must equal the
//! one implied by the expected parameters and the header's level, every residue
//! must be below its prime, padding bits must be zero and no byte may trail. Any
//! failure is a [`DecodeError`]; decoders do not panic on any input. Decoding
//! needs the parameters the object is expected to belong to, and refuses objects
//! made under other parameters.
//!
//! Secret keys have no serialization at all: no type here accepts one.

mod bits;
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

/// Reads one polynomial of `n` coefficients per limb over `moduli`, limb-major
/// (limb `i` is `out[i*n..(i+1)*n]`), checking every residue.
pub(crate) fn read_poly(
    r: &mut Reader<'_>,
    n: usize,
    moduli: &[u64],
    component: usize,
) -> Result<Vec<u64>, DecodeError> {
    let mut out = vec![0u64; n * moduli.len()];
    for (limb, (&q, dst)) in moduli.iter().zip(out.chunks_exact_mut(n)).enumerate() {
        let width = residue_bits(q);
        let src = r.take(packed_len(n, width))?;
        unpack_checked(src, width, q, dst, Location { component, limb })?;
    }
    Ok(out)
}

mod objects;

pub use objects::{DEFAULT_SIZE_LIMIT, Serializable};
