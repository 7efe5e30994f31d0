//! Little-endian bit streams: each residue mod q_i takes exactly ⌈log2 q_i⌉ bits.
//!
//! A 40-bit prime's residues stored as `u64` waste 24 bits in 64; packing them is
//! what keeps our ciphertexts smaller than SEAL's zstd-compressed ones without a
//! compressor. Every limb starts on a byte boundary, so a limb's byte length is
//! `⌈N·w/8⌉` and the padding bits must be zero (checked on read, so a decoder
//! accepts exactly one encoding per object).

use super::DecodeError;

/// Bytes that `count` values of `width` bits take, padded to a whole byte.
pub(crate) const fn packed_len(count: usize, width: u32) -> usize {
    (count * width as usize).div_ceil(8)
}

/// Appends `values`, each `< 2^width`, as a byte-aligned run of `width`-bit fields.
pub(crate) fn pack(values: &[u64], width: u32, out: &mut Vec<u8>) {
    debug_assert!((1..=64).contains(&width));
    out.reserve(packed_len(values.len(), width));
    // A 128-bit accumulator holds up to 63 pending bits plus one whole value.
    let mut acc: u128 = 0;
    let mut pending = 0u32;
    for &v in values {
        debug_assert!(width == 64 || v >> width == 0);
        acc |= u128::from(v) << pending;
        pending += width;
        if pending >= 64 {
            out.extend_from_slice(&(acc as u64).to_le_bytes());
            acc >>= 64;
            pending -= 64;
        }
    }
    let tail = pending.div_ceil(8) as usize;
    out.extend_from_slice(&acc.to_le_bytes()[..tail]);
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
    if bytes.len() != packed_len(out.len(), width) {
        return Err(DecodeError::Internal("limb slice length"));
    }
    let mask: u128 = if width == 64 {
        u128::from(u64::MAX)
    } else {
        (1u128 << width) - 1
    };
    let mut acc: u128 = 0;
    let mut pending = 0u32;
    let mut chunks = bytes.chunks_exact(8);
    for (index, slot) in out.iter_mut().enumerate() {
        if pending < width {
            let word = match chunks.next() {
                Some(c) => {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(c);
                    u64::from_le_bytes(w)
                }
                None => {
                    // The last partial word: fewer than 8 bytes remain.
                    let rest = chunks.remainder();
                    let mut w = [0u8; 8];
                    w[..rest.len()].copy_from_slice(rest);
                    u64::from_le_bytes(w)
                }
            };
            acc |= u128::from(word) << pending;
            pending += 64;
        }
        let v = (acc & mask) as u64;
        acc >>= width;
        pending -= width;
        if v >= modulus {
            return Err(DecodeError::CoefficientOutOfRange {
                component: at.component,
                limb: at.limb,
                index,
                modulus,
            });
        }
        *slot = v;
    }
    // Whatever is left in the accumulator is padding (inside the last byte, or
    // zero bits past the end of the input that the final partial read added).
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
