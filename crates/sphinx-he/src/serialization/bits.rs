//! Little-endian bit streams: each residue mod q_i takes exactly ⌈log2 q_i⌉ bits.
//!
//! A 40-bit prime's residues stored as `u64` waste 24 bits in 64; packing them is
//! what keeps our ciphertexts smaller than SEAL's zstd-compressed ones without a
//! compressor. Every limb starts on a byte boundary, so a limb's byte length is
//! `⌈N·w/8⌉` and the padding bits must be zero (checked on read, so a decoder
//! accepts exactly one encoding per object).
//!
//! Both directions move whole 64-bit words: the output is sized once, each full word is
//! stored or loaded with one unaligned access, and the range check on read is a running
//! flag (the first offending index is searched for only on the error path). This runs at
//! memory speed rather than per value (`benches/serialization.rs`).

use super::DecodeError;

/// Bytes that `count` values of `width` bits take, padded to a whole byte.
pub(crate) const fn packed_len(count: usize, width: u32) -> usize {
    (count * width as usize).div_ceil(8)
}

/// `x >> s` for `s` in `0..=64` (64 gives 0, where a plain shift would overflow).
#[inline(always)]
fn shr(x: u64, s: u32) -> u64 {
    x.checked_shr(s).unwrap_or(0)
}

/// Appends `values`, each `< 2^width`, as a byte-aligned run of `width`-bit fields.
pub(crate) fn pack(values: &[u64], width: u32, out: &mut Vec<u8>) {
    debug_assert!((1..=64).contains(&width));
    let start = out.len();
    out.resize(start + packed_len(values.len(), width), 0);
    let mut words = out[start..].chunks_exact_mut(8);
    // `fill` bits of `acc` are pending (always < 64 between values).
    let mut acc = 0u64;
    let mut fill = 0u32;
    for &v in values {
        debug_assert!(width == 64 || v >> width == 0);
        acc |= v << fill;
        let total = fill + width;
        if total >= 64 {
            // ⌊count·width/64⌋ words are completed, exactly the full 8-byte chunks.
            if let Some(w) = words.next() {
                w.copy_from_slice(&acc.to_le_bytes());
            }
            acc = shr(v, 64 - fill);
            fill = total - 64;
        } else {
            fill = total;
        }
    }
    // The last `fill` bits: a whole chunk when they take 8 bytes, else the short remainder.
    let last = acc.to_le_bytes();
    match words.next() {
        Some(w) => w.copy_from_slice(&last),
        None => {
            let tail = words.into_remainder();
            let n = tail.len();
            tail.copy_from_slice(&last[..n]);
        }
    }
}

/// Reads `out.len()` fields of `width` bits from `bytes` (exactly
/// `packed_len(out.len(), width)` bytes), rejecting any value `>= modulus` and
/// nonzero padding. `at` names the limb for the error.
pub(crate) fn unpack_checked(
    bytes: &[u8],
    width: u32,
    modulus: u64,
    out: &mut [u64],
    at: Location,
) -> Result<(), DecodeError> {
    if bytes.len() != packed_len(out.len(), width) || !(1..=64).contains(&width) {
        return Err(DecodeError::Internal("limb slice length"));
    }
    let mask = shr(u64::MAX, 64 - width);
    let mut chunks = bytes.chunks_exact(8);
    let tail = chunks.remainder();
    let mut next_word = || match chunks.next() {
        Some(c) => {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            u64::from_le_bytes(w)
        }
        None => {
            // The last partial word, zero-extended.
            let mut w = [0u8; 8];
            w[..tail.len()].copy_from_slice(tail);
            u64::from_le_bytes(w)
        }
    };
    // `avail` unread bits sit at the bottom of `acc` (always < width between values).
    let mut acc = 0u64;
    let mut avail = 0u32;
    let mut bad = false;
    for slot in out.iter_mut() {
        let v = if avail >= width {
            let v = acc & mask;
            acc = shr(acc, width);
            avail -= width;
            v
        } else {
            let w = next_word();
            let v = (acc | (w << avail)) & mask;
            let used = width - avail;
            acc = shr(w, used);
            avail = 64 - used;
            v
        };
        bad |= v >= modulus;
        *slot = v;
    }
    if bad {
        let index = out.iter().position(|&v| v >= modulus).unwrap_or(0);
        return Err(DecodeError::CoefficientOutOfRange {
            component: at.component,
            limb: at.limb,
            index,
            modulus,
        });
    }
    // Whatever is left is padding: the rest of the last byte, and the zero bits the
    // final partial read added past the end of the input.
    if acc != 0 {
        return Err(DecodeError::NonzeroPadding {
            component: at.component,
            limb: at.limb,
        });
    }
    Ok(())
}

/// Which polynomial and limb a packed run belongs to, for error messages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Location {
    pub(crate) component: usize,
    pub(crate) limb: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AT: Location = Location {
        component: 0,
        limb: 0,
    };

    /// Bit by bit, the layout the module docs specify.
    fn reference_pack(values: &[u64], width: u32) -> Vec<u8> {
        let mut out = vec![0u8; packed_len(values.len(), width)];
        for (i, &v) in values.iter().enumerate() {
            for b in 0..width as usize {
                if (v >> b) & 1 == 1 {
                    let bit = i * width as usize + b;
                    out[bit / 8] |= 1 << (bit % 8);
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn matches_the_bitwise_reference(width in 1u32..=64, raw in proptest::collection::vec(any::<u64>(), 0..140), prefix in 0usize..9) {
            let mask = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
            let values: Vec<u64> = raw.iter().map(|v| v & mask).collect();
            // Appending after existing bytes leaves them alone.
            let mut bytes = vec![0xa5u8; prefix];
            pack(&values, width, &mut bytes);
            prop_assert!(bytes[..prefix].iter().all(|&b| b == 0xa5));
            let expected = reference_pack(&values, width);
            prop_assert_eq!(&bytes[prefix..], expected.as_slice());
        }
    }

    proptest! {
        #[test]
        fn round_trip(width in 1u32..=64, raw in proptest::collection::vec(any::<u64>(), 0..67)) {
            let mask = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
            let values: Vec<u64> = raw.iter().map(|v| v & mask).collect();
            let mut bytes = Vec::new();
            pack(&values, width, &mut bytes);
            prop_assert_eq!(bytes.len(), packed_len(values.len(), width));
            let mut back = vec![0u64; values.len()];
            unpack_checked(&bytes, width, u64::MAX, &mut back, AT).unwrap();
            // u64::MAX as modulus rejects only u64::MAX itself.
            prop_assume!(!values.contains(&u64::MAX));
            prop_assert_eq!(back, values);
        }
    }

    #[test]
    fn rejects_value_at_modulus() {
        let mut bytes = Vec::new();
        pack(&[3, 7, 2], 3, &mut bytes);
        let mut out = [0u64; 3];
        let err = unpack_checked(&bytes, 3, 7, &mut out, AT).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::CoefficientOutOfRange {
                    index: 1,
                    modulus: 7,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn rejects_nonzero_padding() {
        let mut bytes = Vec::new();
        pack(&[1, 1, 1], 3, &mut bytes); // 9 bits in 2 bytes: 7 padding bits
        assert_eq!(bytes.len(), 2);
        bytes[1] |= 0x80;
        let mut out = [0u64; 3];
        let err = unpack_checked(&bytes, 3, 8, &mut out, AT).unwrap_err();
        assert!(matches!(err, DecodeError::NonzeroPadding { .. }), "{err}");
    }

    #[test]
    fn known_layout_is_little_endian_lsb_first() {
        let mut bytes = Vec::new();
        pack(&[0b101, 0b011, 0b111], 3, &mut bytes);
        // 5 | 3 << 3 | 7 << 6 = 0b1_1101_1101: the first field in the lowest bits.
        assert_eq!(bytes, vec![0b1101_1101, 0b0000_0001]);
    }
}
