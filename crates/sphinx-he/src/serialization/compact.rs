//! Level-0 ciphertexts switched to a power-of-two modulus `2^k` for the wire.
//!
//! A result that its receiver will only decrypt needs far fewer bits per coefficient than
//! `q_0` carries: the message sits in the top `log2(q_0/Δ)` bits above the scale and the
//! noise in the low bits is already large. [`CompactCiphertext::from_ciphertext`] takes each
//! part `c_i` of a level-0 ciphertext to the coefficient domain and keeps
//! `c'_i = round(c_i · 2^k / q_0) mod 2^k`, packed at exactly `k` bits per coefficient.
//! [`CompactCiphertext::lift`] maps back to `c̃_i = round(c'_i · q_0 / 2^k) mod q_0`
//! (then NTT): an ordinary level-0 ciphertext at the same scale that the secret key
//! decrypts as usual. No secret is involved in either direction, so the server compacts
//! its own results.
//!
//! # Error
//! `c̃_i = c_i + ε_i (mod q_0)` with `|ε_i| ≤ q_0/2^{k+1} + 1/2`, so decryption gains
//! `ε_0 + ε_1·s (+ ε_2·s²)`. With `ε_i` uniform (variance `v = ((q_0/2^k)² + 1)/12`) and
//! `s` uniform ternary (`E[s_j²] = 2/3`; a coefficient of `s²` sums `N/2` pairs of equal
//! products, variance `8N/9`), one coefficient of the added noise has variance
//! `v·(1 + 2N/3 [+ 8N²/9])`, and a slot (real part of the canonical embedding, `N`
//! coefficients) at scale `Δ` gains an error of standard deviation [`slot_error_std`]
//! `= √(v·(1 + 2N/3 [+ 8N²/9])·N/2) / Δ` (the RMS over slots; a slot's own deviation
//! varies with `|s(ζ)|`, so the largest error over a ciphertext's slots is several times
//! that, bounded by [`slot_error_bound`]). For the
//! training parameters (`N = 4096`, `q_0` a 41-bit prime just below `2^41`, `Δ = 2^29`) that is
//! `≈ 2^{21.4-k}` for two parts: `k = 34` adds `2^{-12.6}` (1.6·10⁻⁴) RMS per slot and
//! about 10⁻³ in the worst of a ciphertext's 2048 slots (`tests/compact.rs`), whatever the
//! value (the range `±q_0/(2Δ)` is kept). A third part costs `√(4N/3) ≈ 74×` more (≈ 6.2 bits of
//! `k`).
//!
//! # Accepted `k`
//! `k ≤ ⌈log2 q_0⌉ − 1` (so `2^k < q_0`: anything larger saves nothing, and the lift stays
//! below `q_0` and inverts the switch exactly) and `k ≥` the smallest exponent whose
//! [`slot_error_std`] at the ciphertext's size and scale is below 1 (below that the rounding
//! alone swamps a value of 1). Anything else is [`HeError::InvalidCompactBits`] on the
//! way out and [`DecodeError::InvalidCompactBits`] on the way in.
//!
//! # Format
//! Envelope of type [`ObjectType::CompactCiphertext`], header level 0; payload `u8` size
//! (2 or 3), `u8` `k`, `f64` scale, then `size` polynomials in the **coefficient** domain,
//! each `N` values of exactly `k` bits (least significant first, zero padding to a byte).

use std::sync::Arc;

use bytes::Bytes;
use sphinx_math::{Coeff, Poly};

use super::bits::{Location, check_padding, pack, packed_len, unpack_checked};
use super::envelope::{HEADER_LEN, ObjectType};
use super::objects::{expect_payload, open, read_scale, write_header};
use super::{DecodeError, Serializable, residue_bits};
use crate::error::{HeError, Result};
use crate::params::{ParamId, Parameters};
use crate::rlwe::Ciphertext;

/// A level-0 ciphertext whose parts are switched to the modulus `2^bits` (module docs):
/// what a server sends for a result the client will only decrypt.
#[derive(Clone, Debug, PartialEq)]
pub struct CompactCiphertext {
    param_id: ParamId,
    bits: u32,
    scale: f64,
    size: usize,
    /// `size` parts of `N` values below `2^bits` (coefficient domain), each packed at
    /// exactly `bits` bits as the wire format has them: a result is compacted to travel, so
    /// it is kept in its wire form (only the receiver's lift unpacks it, fused with the
    /// lift). Shared bytes, so that [`from_shared`](Self::from_shared) keeps a slice of the
    /// received frame instead of copying tens of megabytes per training step.
    packed: Bytes,
}

thread_local! {
    /// One part switched to `2^bits`, before it is packed.
    static SWITCHED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Bytes before the polynomials: size, bits, scale.
const PREFIX_LEN: usize = 1 + 1 + 8;

fn q0(params: &Parameters) -> Result<u64> {
    let basis = params.q_basis(0)?;
    basis
        .moduli()
        .first()
        .map(|m| m.value())
        .ok_or(HeError::InvalidLevel {
            level: 0,
            min: 0,
            max: 0,
        })
}

/// Standard deviation of the error one slot gains from a switch to `2^bits` and back, for
/// a ciphertext of `size` parts at `scale` (module docs; assumes a uniform ternary secret).
#[must_use]
pub fn slot_error_std(params: &Parameters, size: usize, bits: u32, scale: f64) -> f64 {
    let Ok(q) = q0(params) else {
        return f64::INFINITY;
    };
    let n = params.n() as f64;
    let step = q as f64 / 2f64.powi(bits as i32);
    let rounding = (step * step + 1.0) / 12.0;
    let mut spread = 1.0 + 2.0 * n / 3.0;
    if size >= 3 {
        spread += 8.0 * n * n / 9.0;
    }
    (rounding * spread * n / 2.0).sqrt() / scale
}

/// A high-probability bound on the largest error any slot gains from a switch to
/// `2^bits` and back: the switch is a rescale by `q_0/2^k`, so the CKKS rescaling bound
/// `B = √(N/3)·(3 + 8√h)` (Cheon, Kim, Kim, Song 2017) applies to the rounding of each
/// part, in units of `q_0/2^k`, with `h = 2N/3` the expected Hamming weight of a uniform
/// ternary secret; a third part adds `√(N/3)·8h` by the same rule with `s²` (whose
/// canonical norm is at most the square of `s`'s). The per-slot error is a Gaussian whose
/// variance varies with `|s(ζ)|` from slot to slot, so its largest value over a
/// ciphertext is several [`slot_error_std`]s; this bound covers it.
#[must_use]
pub fn slot_error_bound(params: &Parameters, size: usize, bits: u32, scale: f64) -> f64 {
    let Ok(q) = q0(params) else {
        return f64::INFINITY;
    };
    let n = params.n() as f64;
    let h = 2.0 * n / 3.0;
    let step = q as f64 / 2f64.powi(bits as i32);
    let mut factor = 3.0 + 8.0 * h.sqrt();
    if size >= 3 {
        factor += 8.0 * h;
    }
    (step + 1.0) * (n / 3.0).sqrt() * factor / scale
}

/// The largest accepted exponent: `⌈log2 q_0⌉ − 1`.
///
/// # Errors
/// Only for parameters without a level 0 (none that [`Parameters`] accepts).
pub fn max_bits(params: &Parameters) -> Result<u32> {
    Ok(residue_bits(q0(params)?) - 1)
}

/// The smallest accepted exponent for `size` parts at `scale`: the first whose
/// [`slot_error_std`] is below 1 (`max_bits + 1`, accepting nothing, if none is).
///
/// # Errors
/// As [`max_bits`].
pub fn min_bits(params: &Parameters, size: usize, scale: f64) -> Result<u32> {
    let max = max_bits(params)?;
    Ok((1..=max)
        .find(|&k| slot_error_std(params, size, k, scale) < 1.0)
        .unwrap_or(max + 1))
}

/// `Some((min, max))` when `bits` is outside the accepted range.
fn out_of_range(
    params: &Parameters,
    size: usize,
    bits: u32,
    scale: f64,
) -> Result<Option<(u32, u32)>> {
    let (min, max) = (min_bits(params, size, scale)?, max_bits(params)?);
    Ok((!(min..=max).contains(&bits)).then_some((min, max)))
}

/// Bytes of the serialized form of a `size`-part compact ciphertext at `bits`, envelope
/// included: what [`Serializable::serialized_len`] returns, without building one.
#[must_use]
pub fn compact_len(params: &Parameters, size: usize, bits: u32) -> usize {
    HEADER_LEN + PREFIX_LEN + size * packed_len(params.n(), bits)
}

/// Exact `round(c · 2^bits / q) mod 2^bits` for `c < q`, `2^bits < q < 2^62`.
struct SwitchDown {
    two_q: u128,
    q: u128,
    bits: u32,
    ratio: f64,
    mask: u64,
}

impl SwitchDown {
    fn new(q: u64, bits: u32) -> Self {
        Self {
            two_q: 2 * u128::from(q),
            q: u128::from(q),
            bits,
            ratio: 2f64.powi(bits as i32) / q as f64,
            mask: (1u64 << bits) - 1,
        }
    }

    #[inline]
    fn apply(&self, c: u64) -> u64 {
        // round(c·2^k/q) = ⌊(c·2^{k+1} + q) / 2q⌋. The f64 estimate (a 128-bit division
        // per coefficient would cost more than the NTT) is within one of it for the
        // moduli in use, and the correction loops make it exact for any input; `t`
        // stays below 2^{k+1} ≤ 2^62, so one 64×64-bit product checks it.
        let num = (u128::from(c) << (self.bits + 1)) + self.q;
        let mut t = (c as f64 * self.ratio + 0.5) as u64;
        let mut prod = u128::from(t) * self.two_q;
        while prod > num {
            t -= 1;
            prod -= self.two_q;
        }
        while num - prod >= self.two_q {
            t += 1;
            prod += self.two_q;
        }
        t & self.mask
    }
}

/// `round(c' · q / 2^bits)`, below `q` when `c' < 2^bits < q`.
#[inline]
fn lift_one(c: u64, q: u64, bits: u32) -> u64 {
    ((u128::from(c) * u128::from(q) + (1u128 << (bits - 1))) >> bits) as u64
}

impl CompactCiphertext {
    /// Switches a level-0 ciphertext to the modulus `2^bits` (server side; no key needed).
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`] for a ciphertext of other parameters,
    /// [`HeError::InvalidLevel`] unless it is at level 0, [`HeError::InvalidCompactBits`]
    /// for `bits` outside [`min_bits`] ..= [`max_bits`].
    pub fn from_ciphertext(params: &Parameters, ct: &Ciphertext, bits: u32) -> Result<Self> {
        params.check_id(ct.param_id)?;
        if ct.level != 0 {
            return Err(HeError::InvalidLevel {
                level: ct.level,
                min: 0,
                max: 0,
            });
        }
        let size = ct.polys.len();
        if let Some((min, max)) = out_of_range(params, size, bits, ct.scale)? {
            return Err(HeError::InvalidCompactBits { bits, min, max });
        }
        let basis = params.q_basis(0)?;
        let parts = ct
            .polys
            .iter()
            .map(|p| Ok(p.clone().into_coeff(basis)?))
            .collect::<Result<Vec<_>>>()?;
        Self::from_coeff_parts(params, &parts, ct.scale, bits)
    }

    /// Switches the parts of a level-0 ciphertext given in the coefficient domain (what
    /// [`Evaluator::rescale_to_compact`](crate::ckks::Evaluator::rescale_to_compact)
    /// produces without the NTT a rescale ends with).
    pub(crate) fn from_coeff_parts(
        params: &Parameters,
        parts: &[Poly<Coeff>],
        scale: f64,
        bits: u32,
    ) -> Result<Self> {
        let size = parts.len();
        if !(2..=3).contains(&size) {
            return Err(HeError::UnsupportedCiphertextSize {
                got: size,
                supported: "2 or 3",
            });
        }
        if let Some((min, max)) = out_of_range(params, size, bits, scale)? {
            return Err(HeError::InvalidCompactBits { bits, min, max });
        }
        let n = params.n();
        let switch = SwitchDown::new(q0(params)?, bits);
        let mut packed = Vec::with_capacity(size * packed_len(n, bits));
        SWITCHED.with_borrow_mut(|switched| {
            for p in parts {
                let data = p.data();
                if data.len() != n {
                    return Err(HeError::InvalidLevel {
                        level: data.len() / n.max(1),
                        min: 0,
                        max: 0,
                    });
                }
                switched.clear();
                switched.extend(data.iter().map(|&c| switch.apply(c)));
                pack(switched, bits, &mut packed);
            }
            Ok(())
        })?;
        Ok(Self {
            param_id: params.id(),
            bits,
            scale,
            size,
            packed: packed.into(),
        })
    }

    /// Each part lifted back to `q_0`, in the coefficient domain (`size · N` values,
    /// part-major): what [`lift`](Self::lift) transforms, and what
    /// [`SecretKey::decrypt_compact`](crate::SecretKey::decrypt_compact) uses directly.
    pub(crate) fn lifted_coeffs(&self, params: &Parameters) -> Result<Vec<u64>> {
        params.check_id(self.param_id)?;
        let q = q0(params)?;
        let n = params.n();
        let mut out = vec![0u64; self.size * n];
        let part_len = packed_len(n, self.bits);
        for (component, (dst, src)) in out
            .chunks_exact_mut(n)
            .zip(self.packed.chunks_exact(part_len))
            .enumerate()
        {
            let at = Location { component, limb: 0 };
            // Checked when the bytes came in (padding) or written by `pack` (values): this
            // cannot fail for a constructed value.
            unpack_checked(src, self.bits, 1u64 << self.bits, dst, at)
                .map_err(|_| HeError::Internal("compact parts do not unpack"))?;
            for c in dst.iter_mut() {
                *c = lift_one(*c, q, self.bits);
            }
        }
        Ok(out)
    }

    /// The level-0 ciphertext the receiver decrypts: each part lifted back to `q_0`.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`] if `params` are not this ciphertext's.
    pub fn lift(&self, params: &Parameters) -> Result<Ciphertext> {
        let basis = params.q_basis(0)?;
        let polys = self
            .lifted_coeffs(params)?
            .chunks_exact(params.n())
            .map(|part| Ok(Poly::<Coeff>::from_data(basis, part.to_vec())?.into_ntt(basis)?))
            .collect::<Result<Vec<_>>>()?;
        Ciphertext::from_parts(params, polys, 0, self.scale)
    }

    /// The exponent `k` of the modulus `2^k`.
    #[must_use]
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Number of parts (2 or 3).
    #[must_use]
    pub fn size(&self) -> usize {
        self.size
    }

    /// The scale of the encrypted message.
    #[must_use]
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Identity of the parameters.
    #[must_use]
    pub fn param_id(&self) -> ParamId {
        self.param_id
    }
}

impl CompactCiphertext {
    /// [`from_bytes`](Serializable::from_bytes) of an encoding held in shared bytes: the
    /// result keeps a slice of `bytes` (no copy of the packed parts), so a receiver that
    /// decodes hundreds of results from one frame keeps the frame alive instead.
    ///
    /// # Errors
    /// As [`from_bytes`](Serializable::from_bytes).
    pub fn from_shared(
        params: &Arc<Parameters>,
        bytes: &Bytes,
        limit: usize,
    ) -> std::result::Result<Self, DecodeError> {
        Self::decode(params, bytes, limit, |packed| bytes.slice_ref(packed))
    }

    /// Decodes `bytes`, keeping the packed parts as `keep` makes them.
    fn decode(
        params: &Arc<Parameters>,
        bytes: &[u8],
        limit: usize,
        keep: impl FnOnce(&[u8]) -> Bytes,
    ) -> std::result::Result<Self, DecodeError> {
        let (header, mut r) = open(params, bytes, limit, &[ObjectType::CompactCiphertext])?;
        if header.level != 0 {
            return Err(DecodeError::InvalidLevel {
                found: header.level,
                allowed: "0 (compact ciphertexts are level-0 results)",
            });
        }
        let size = usize::from(r.u8()?);
        if !(2..=3).contains(&size) {
            return Err(DecodeError::Malformed("ciphertext size must be 2 or 3"));
        }
        let bits = u32::from(r.u8()?);
        let scale = read_scale(&mut r)?;
        if let Some((min, max)) =
            out_of_range(params, size, bits, scale).map_err(DecodeError::Rejected)?
        {
            return Err(DecodeError::InvalidCompactBits { bits, min, max });
        }
        let n = params.n();
        expect_payload(&header, PREFIX_LEN + size * packed_len(n, bits))?;
        // Every field below 2^bits is a valid residue: only the padding after each part's
        // last field needs checking, and the parts are kept packed.
        let part_len = packed_len(n, bits);
        let packed = r.take(size * part_len)?;
        for (component, part) in packed.chunks_exact(part_len).enumerate() {
            check_padding(part, n, bits, Location { component, limb: 0 })?;
        }
        r.finish()?;
        Ok(Self {
            param_id: params.id(),
            bits,
            scale,
            size,
            packed: keep(packed),
        })
    }
}

impl Serializable for CompactCiphertext {
    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.serialized_len(params)?);
        self.write_into(params, &mut out)?;
        Ok(out)
    }

    fn write_into(&self, params: &Parameters, out: &mut Vec<u8>) -> Result<()> {
        let len = self.serialized_len(params)?;
        let start = out.len();
        write_header(
            out,
            ObjectType::CompactCiphertext,
            params,
            0,
            len - HEADER_LEN,
        );
        // size ∈ {2, 3} and bits < 64 by construction.
        out.push(self.size as u8);
        out.push(self.bits as u8);
        out.extend_from_slice(&self.scale.to_bits().to_le_bytes());
        out.extend_from_slice(&self.packed);
        debug_assert_eq!(out.len() - start, len);
        Ok(())
    }

    fn serialized_len(&self, params: &Parameters) -> Result<usize> {
        params.check_id(self.param_id)?;
        Ok(compact_len(params, self.size, self.bits))
    }

    fn from_bytes(
        params: &Arc<Parameters>,
        bytes: &[u8],
        limit: usize,
    ) -> std::result::Result<Self, DecodeError> {
        Self::decode(params, bytes, limit, Bytes::copy_from_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_down_is_exact_rounding() {
        let q = (1u64 << 40) + 0x1234_5679; // odd, above 2^40
        for bits in [2, 17, 34, 40] {
            let s = SwitchDown::new(q, bits);
            for c in [0, 1, q / 2, q / 3, q - 1, 0xdead_beef, q - (q >> bits) / 2] {
                let exact = ((u128::from(c) << (bits + 1)) + u128::from(q)) / (2 * u128::from(q));
                assert_eq!(
                    s.apply(c),
                    (exact as u64) & ((1 << bits) - 1),
                    "c {c} bits {bits}"
                );
            }
        }
    }

    #[test]
    fn lift_inverts_the_switch_and_stays_below_q() {
        let q = (1u64 << 40) + 0x1234_5679;
        let bits = 34;
        let s = SwitchDown::new(q, bits);
        for c in [0u64, 1, 2, 12345, (1 << bits) - 1, 1 << (bits - 1)] {
            let up = lift_one(c, q, bits);
            assert!(up < q);
            assert_eq!(s.apply(up), c);
        }
    }
}
