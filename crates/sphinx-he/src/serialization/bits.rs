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
//! flag (the first offending index is searched for only on the error path). For the widths
//! RNS-CKKS uses (20 to 62 bits), 64 values fill exactly `width` words, so runs of 64
//! values go through a kernel compiled per width ([`SPECIALIZED`]) whose shifts and word
//! indices are constants: no data-dependent branch per value, about 2.5× faster than the
//! general loop that handles the remainder (`benches/serialization.rs`).

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
    // Whole blocks of 64 values end on a word boundary: the general loop below takes over
    // from there with an empty accumulator.
    let blocks = if SPECIALIZED.contains(&width) {
        values.len() / 64
    } else {
        0
    };
    let (head, values) = values.split_at(blocks * 64);
    let (block_bytes, rest) = out[start..].split_at_mut(blocks * 8 * width as usize);
    specialized!(width, pack_blocks, head, block_bytes);
    let mut words = rest.chunks_exact_mut(8);
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
    let blocks = if SPECIALIZED.contains(&width) {
        out.len() / 64
    } else {
        0
    };
    let (head, out_rest) = out.split_at_mut(blocks * 64);
    let (block_bytes, bytes) = bytes.split_at(blocks * 8 * width as usize);
    let mut bad = false;
    specialized!(width, unpack_blocks, block_bytes, head, modulus, &mut bad);
    let out = out_rest;
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
        let index = head
            .iter()
            .chain(out.iter())
            .position(|&v| v >= modulus)
            .unwrap_or(0);
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

/// Checks that the bits after the last of `count` fields of `width` bits in `bytes` (the
/// padding of the last byte) are zero, for a run whose every field is admissible (a
/// power-of-two modulus): what [`unpack_checked`] would check, without unpacking.
pub(crate) fn check_padding(
    bytes: &[u8],
    count: usize,
    width: u32,
    at: Location,
) -> Result<(), DecodeError> {
    if bytes.len() != packed_len(count, width) {
        return Err(DecodeError::Internal("limb slice length"));
    }
    let used = (count * width as usize) % 8;
    match bytes.last() {
        Some(&last) if used != 0 && last >> used != 0 => Err(DecodeError::NonzeroPadding {
            component: at.component,
            limb: at.limb,
        }),
        _ => Ok(()),
    }
}

/// Widths with a compiled 64-value block kernel (see the module docs).
const SPECIALIZED: std::ops::RangeInclusive<u32> = 20..=62;

/// Calls `$f::<W>` with `W` = `$width` as a constant, for every width of [`SPECIALIZED`]
/// (other widths do nothing: their callers have no blocks).
macro_rules! specialized {
    ($width:expr, $f:ident, $($arg:expr),*) => {
        specialized!(@each $width, $f, ($($arg),*), 20 21 22 23 24 25 26 27 28 29 30 31 32 33
            34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60
            61 62)
    };
    (@each $width:expr, $f:ident, $args:tt, $($w:literal)*) => {
        match $width {
            $($w => specialized!(@call $f, $w, $args),)*
            _ => {}
        }
    };
    (@call $f:ident, $w:literal, ($($arg:expr),*)) => {
        $f::<$w>($($arg),*)
    };
}
use specialized;

/// Packs whole blocks of 64 values of `W` bits into `W` little-endian words each.
#[inline(never)]
fn pack_blocks<const W: usize>(values: &[u64], out: &mut [u8]) {
    for (block, bytes) in values.chunks_exact(64).zip(out.chunks_exact_mut(8 * W)) {
        let block: &[u64; 64] = block.try_into().unwrap_or_else(|_| unreachable!());
        let mut words = [0u64; W];
        // Unrolled by hand (LLVM keeps a 64-iteration loop): every shift, word index and
        // branch below is a constant.
        macro_rules! put {
            ($($i:literal)*) => {$({
                let (k, s) = ($i * W / 64, $i * W % 64);
                words[k] |= block[$i] << s;
                if s + W > 64 {
                    words[k + 1] |= block[$i] >> (64 - s);
                }
            })*};
        }
        put!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29
            30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57
            58 59 60 61 62 63);
        for (dst, w) in bytes.chunks_exact_mut(8).zip(words) {
            dst.copy_from_slice(&w.to_le_bytes());
        }
    }
}

/// Unpacks whole blocks of 64 values of `W` bits; sets `bad` if any is `>= modulus`.
fn unpack_blocks<const W: usize>(bytes: &[u8], out: &mut [u64], modulus: u64, bad: &mut bool) {
    // A power-of-two modulus `2^W` (compact ciphertexts) admits every field: no check.
    if modulus > u64::MAX >> (64 - W) {
        unpack_blocks_with::<W, false>(bytes, out, modulus, bad);
    } else {
        unpack_blocks_with::<W, true>(bytes, out, modulus, bad);
    }
}

#[inline(never)]
fn unpack_blocks_with<const W: usize, const CHECK: bool>(
    bytes: &[u8],
    out: &mut [u64],
    modulus: u64,
    bad: &mut bool,
) {
    let mask = u64::MAX >> (64 - W);
    let mut any = false;
    for (chunk, block) in bytes.chunks_exact(8 * W).zip(out.chunks_exact_mut(64)) {
        let block: &mut [u64; 64] = block.try_into().unwrap_or_else(|_| unreachable!());
        let mut words = [0u64; W];
        for (w, b) in words.iter_mut().zip(chunk.chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(b);
            *w = u64::from_le_bytes(le);
        }
        macro_rules! get {
            ($($i:literal)*) => {$({
                let (k, s) = ($i * W / 64, $i * W % 64);
                let mut v = words[k] >> s;
                if s + W > 64 {
                    v |= words[k + 1] << (64 - s);
                }
                let v = v & mask;
                if CHECK {
                    any |= v >= modulus;
                }
                block[$i] = v;
            })*};
        }
        get!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29
            30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57
            58 59 60 61 62 63);
    }
    *bad |= any;
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
    fn reports_the_first_value_out_of_range_inside_and_after_whole_blocks() {
        // 150 values of 41 bits: two 64-value blocks through the compiled kernel, 22 after.
        let modulus = (1u64 << 40) + 15;
        for (bad, index) in [
            (vec![5, 70, 140], 5),
            (vec![140], 140),
            (vec![127, 128], 127),
        ] {
            let mut values: Vec<u64> = (0..150u64).map(|i| i * 7_919).collect();
            for &i in &bad {
                values[i] = modulus + i as u64;
            }
            let mut bytes = Vec::new();
            pack(&values, 41, &mut bytes);
            assert_eq!(bytes, reference_pack(&values, 41));
            let mut out = vec![0u64; 150];
            let err = unpack_checked(&bytes, 41, modulus, &mut out, AT).unwrap_err();
            assert!(
                matches!(err, DecodeError::CoefficientOutOfRange { index: i, .. } if i == index),
                "{err}"
            );
        }
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

    proptest! {
        #[test]
        fn padding_check_agrees_with_unpacking(width in 1u32..64, count in 1usize..150, flip in 0u32..8, seed in any::<u64>()) {
            let values: Vec<u64> = (0..count as u64).map(|i| (seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) & ((1u64 << width) - 1)).collect();
            let mut bytes = Vec::new();
            pack(&values, width, &mut bytes);
            prop_assert!(check_padding(&bytes, count, width, AT).is_ok());
            if let Some(last) = bytes.last_mut() {
                *last ^= 1 << flip;
            }
            let mut out = vec![0u64; count];
            let unpacked = unpack_checked(&bytes, width, 1u64 << width, &mut out, AT);
            prop_assert_eq!(check_padding(&bytes, count, width, AT).is_ok(), unpacked.is_ok());
        }
    }

    #[test]
    fn known_layout_is_little_endian_lsb_first() {
        let mut bytes = Vec::new();
        pack(&[0b101, 0b011, 0b111], 3, &mut bytes);
        // 5 | 3 << 3 | 7 << 6 = 0b1_1101_1101: the first field in the lowest bits.
        assert_eq!(bytes, vec![0b1101_1101, 0b0000_0001]);
    }
}
