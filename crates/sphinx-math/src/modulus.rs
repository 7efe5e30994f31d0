//! A word-sized modulus `q < 2^62` with precomputed Barrett and Shoup constants.
//!
//! Every arithmetic helper takes operands already reduced to `[0, q)` and returns a reduced
//! value, except where a doc comment says otherwise. The branch-free forms (`min` of a value
//! and its wrapped difference) let the compiler vectorize the slice helpers.

use crate::error::{MathError, Result};

/// All ones if `v > half`, else zero.
#[inline(always)]
fn above(v: u64, half: u64) -> u64 {
    0u64.wrapping_sub((v > half) as u64)
}

/// A modulus `2 <= q < 2^62` with a precomputed Barrett constant `floor(2^128 / q)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Modulus {
    value: u64,
    bits: u32,
    ratio_hi: u64,
    ratio_lo: u64,
    /// `floor(2^(2b) / q)` for the shifted Barrett reduction of products (`b` = bit length).
    mu: u64,
}

impl Modulus {
    /// Largest supported bit size: `q < 2^62` leaves room for lazy `[0, 4q)` sums.
    pub const MAX_BITS: u32 = 62;

    /// Creates a modulus.
    ///
    /// # Errors
    /// [`MathError::InvalidModulus`] when `q < 2` or `q >= 2^62`.
    pub fn new(q: u64) -> Result<Self> {
        if !(2..(1u64 << Self::MAX_BITS)).contains(&q) {
            return Err(MathError::InvalidModulus(q));
        }
        // floor(2^128 / q) = floor((2^128 - 1) / q) unless q divides 2^128, i.e. q is a power of
        // two; then the Barrett estimate is exact either way and one correction step suffices.
        let ratio = u128::MAX / q as u128;
        let bits = 64 - q.leading_zeros();
        Ok(Self {
            value: q,
            bits,
            ratio_hi: (ratio >> 64) as u64,
            ratio_lo: ratio as u64,
            mu: ((1u128 << (2 * bits)) / q as u128) as u64,
        })
    }

    /// The modulus value `q`.
    #[inline(always)]
    pub fn value(&self) -> u64 {
        self.value
    }

    /// Bit length of `q`.
    #[inline(always)]
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// `x mod q` for any 128-bit `x` (Barrett reduction with one final correction).
    #[inline(always)]
    pub fn reduce_u128(&self, x: u128) -> u64 {
        let x0 = x as u64;
        let x1 = (x >> 64) as u64;
        // floor(x * ratio / 2^128), computed from the four 64x64 partial products.
        let lo_lo_hi = ((x0 as u128 * self.ratio_lo as u128) >> 64) as u64;
        let t = x1 as u128 * self.ratio_lo as u128 + lo_lo_hi as u128;
        let t2 = x0 as u128 * self.ratio_hi as u128 + (t as u64) as u128;
        let q_hat = x1
            .wrapping_mul(self.ratio_hi)
            .wrapping_add((t >> 64) as u64)
            .wrapping_add((t2 >> 64) as u64);
        let r = x0.wrapping_sub(q_hat.wrapping_mul(self.value));
        r.min(r.wrapping_sub(self.value))
    }

    /// `x mod q` for any 64-bit `x`.
    #[inline(always)]
    pub fn reduce(&self, x: u64) -> u64 {
        let q_hat = ((x as u128 * self.ratio_hi as u128) >> 64) as u64;
        let r = x.wrapping_sub(q_hat.wrapping_mul(self.value));
        r.min(r.wrapping_sub(self.value))
    }

    /// `x mod q` for a signed `x`, in `[0, q)`.
    #[inline(always)]
    pub fn reduce_i64(&self, x: i64) -> u64 {
        let r = self.reduce(x.unsigned_abs());
        // Branch-free select on the sign (signs of encoded data are unpredictable).
        let mask = (x >> 63) as u64;
        (self.neg(r) & mask) | (r & !mask)
    }

    /// The representative of `x` in `(-q/2, q/2]`.
    #[inline(always)]
    pub fn center(&self, x: u64) -> i64 {
        x.wrapping_sub(self.value & above(x, self.value >> 1)) as i64
    }

    /// `a + b mod q`.
    #[inline(always)]
    pub fn add(&self, a: u64, b: u64) -> u64 {
        let s = a + b;
        s.min(s.wrapping_sub(self.value))
    }

    /// `a - b mod q`.
    #[inline(always)]
    pub fn sub(&self, a: u64, b: u64) -> u64 {
        let d = a.wrapping_sub(b);
        d.min(d.wrapping_add(self.value))
    }

    /// `-a mod q`.
    #[inline(always)]
    pub fn neg(&self, a: u64) -> u64 {
        let d = self.value - a;
        // a == 0 gives q, which must map back to 0.
        d.min(d.wrapping_sub(self.value))
    }

    /// `a * b mod q` for `a, b < q`.
    #[inline(always)]
    pub fn mul(&self, a: u64, b: u64) -> u64 {
        self.reduce_product(a as u128 * b as u128)
    }

    /// `x mod q` for `x < q²` (a product of reduced values): Barrett with the quotient estimated
    /// from the top bits only (HAC 14.42), two multiplications instead of five.
    #[inline(always)]
    pub fn reduce_product(&self, x: u128) -> u64 {
        let b = self.bits;
        let x1 = (x >> (b - 1)) as u64;
        let q_hat = ((x1 as u128 * self.mu as u128) >> (b + 1)) as u64;
        let r = (x as u64).wrapping_sub(q_hat.wrapping_mul(self.value));
        // The estimate is at most 2 short.
        let r = r.min(r.wrapping_sub(self.value));
        r.min(r.wrapping_sub(self.value))
    }

    /// The Shoup companion `floor(w * 2^64 / q)` of a fixed operand `w < q`.
    #[inline(always)]
    pub fn shoup(&self, w: u64) -> u64 {
        (((w as u128) << 64) / self.value as u128) as u64
    }

    /// `a * w mod q` for a fixed operand `w < q` with Shoup companion `w_shoup`;
    /// `a` may be any value below `2^64`.
    #[inline(always)]
    pub fn mul_shoup(&self, a: u64, w: u64, w_shoup: u64) -> u64 {
        let q_hat = ((a as u128 * w_shoup as u128) >> 64) as u64;
        let r = a
            .wrapping_mul(w)
            .wrapping_sub(q_hat.wrapping_mul(self.value));
        r.min(r.wrapping_sub(self.value))
    }

    /// `a^e mod q`.
    pub fn pow(&self, a: u64, mut e: u64) -> u64 {
        let mut base = self.reduce(a);
        let mut acc = self.reduce(1);
        while e > 0 {
            if e & 1 == 1 {
                acc = self.mul(acc, base);
            }
            base = self.mul(base, base);
            e >>= 1;
        }
        acc
    }

    /// The inverse of `a` modulo `q`.
    ///
    /// # Errors
    /// [`MathError::NotInvertible`] when `gcd(a, q) != 1`.
    pub fn inv(&self, a: u64) -> Result<u64> {
        let (mut r0, mut r1) = (self.value as i128, self.reduce(a) as i128);
        let (mut t0, mut t1) = (0i128, 1i128);
        while r1 != 0 {
            let quot = r0 / r1;
            (r0, r1) = (r1, r0 - quot * r1);
            (t0, t1) = (t1, t0 - quot * t1);
        }
        if r0 != 1 {
            return Err(MathError::NotInvertible {
                value: a,
                modulus: self.value,
            });
        }
        Ok(t0.rem_euclid(self.value as i128) as u64)
    }

    /// `a[i] = a[i] + b[i] mod q`.
    #[inline]
    pub fn add_assign_slice(&self, a: &mut [u64], b: &[u64]) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x = self.add(*x, y);
        }
    }

    /// `a[i] = a[i] - b[i] mod q`.
    #[inline]
    pub fn sub_assign_slice(&self, a: &mut [u64], b: &[u64]) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x = self.sub(*x, y);
        }
    }

    /// `a[i] = b[i] - a[i] mod q`.
    #[inline]
    pub fn rsub_assign_slice(&self, a: &mut [u64], b: &[u64]) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x = self.sub(y, *x);
        }
    }

    /// `a[i] = -a[i] mod q`.
    #[inline]
    pub fn neg_assign_slice(&self, a: &mut [u64]) {
        for x in a.iter_mut() {
            *x = self.neg(*x);
        }
    }

    /// `a[i] = a[i] * b[i] mod q`.
    #[inline]
    pub fn mul_assign_slice(&self, a: &mut [u64], b: &[u64]) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x = self.mul(*x, y);
        }
    }

    /// `a[i] = a[i] + b[i] * c[i] mod q`.
    #[inline]
    pub fn mul_add_assign_slice(&self, a: &mut [u64], b: &[u64], c: &[u64]) {
        for ((x, &y), &z) in a.iter_mut().zip(b).zip(c) {
            *x = self.add(*x, self.mul(y, z));
        }
    }

    /// `a[i] = a[i] * w mod q` for a fixed `w < q` with Shoup companion `w_shoup`.
    #[inline]
    pub fn mul_shoup_assign_slice(&self, a: &mut [u64], w: u64, w_shoup: u64) {
        for x in a.iter_mut() {
            *x = self.mul_shoup(*x, w, w_shoup);
        }
    }

    /// `a[i] = a[i] * w[i] mod q` where `w_shoup[i]` is the Shoup companion of `w[i]`.
    #[inline]
    pub fn mul_shoup_vec_assign_slice(&self, a: &mut [u64], w: &[u64], w_shoup: &[u64]) {
        for ((x, &y), &ys) in a.iter_mut().zip(w).zip(w_shoup) {
            *x = self.mul_shoup(*x, y, ys);
        }
    }

    /// `out[i] =` the centered representative of `src[i] mod p` (in `(-p/2, p/2]`), reduced
    /// modulo this `q`. Lifts a residue modulo one prime to another with rounding semantics.
    /// `src` holds residues below `p < 2^62`.
    ///
    /// Key switching and rescaling call this for every pair of primes, so it is a vector
    /// loop (AVX2 where the CPU has it): the reduction of a wider residue uses only 32×32→64
    /// multiplies, which x86 vector units have (a 64×64→128 product they do not).
    #[inline]
    pub fn lift_centered(&self, out: &mut [u64], src: &[u64], p: u64) {
        let len = out.len().min(src.len());
        let (out, src) = (&mut out[..len], &src[..len]);
        let q = self.value;
        if p <= q {
            pulp::Arch::new().dispatch(LiftNarrow {
                out,
                src,
                half: p >> 1,
                shift: q - p,
            });
            return;
        }
        match ShiftedBarrett::new(q, p) {
            Some(barrett) => pulp::Arch::new().dispatch(LiftWide {
                out,
                src,
                half: p >> 1,
                p_mod: self.reduce(p),
                barrett,
            }),
            None => {
                let p_mod = self.reduce(p);
                for (o, &v) in out.iter_mut().zip(src) {
                    let r = self.reduce(v);
                    let t = self.sub(r, p_mod);
                    let mask = above(v, p >> 1);
                    *o = (t & mask) | (r & !mask);
                }
            }
        }
    }

    /// `out[i] = a[i] mod q` for values of any size.
    #[inline]
    pub fn reduce_slice(&self, out: &mut [u64], a: &[u64]) {
        for (o, &x) in out.iter_mut().zip(a) {
            *o = self.reduce(x);
        }
    }
}

/// [`Modulus::lift_centered`] from a smaller modulus: no reduction, `v` or `v − p + q`.
struct LiftNarrow<'a> {
    out: &'a mut [u64],
    src: &'a [u64],
    half: u64,
    shift: u64,
}

impl pulp::WithSimd for LiftNarrow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self {
            out,
            src,
            half,
            shift,
        } = self;
        for (o, &v) in out.iter_mut().zip(src) {
            *o = v + (shift & above(v, half));
        }
    }
}

/// `x mod q` for `x < 2^bits(p)` with 32-bit multiplies only: `x̂ = floor(floor(x / 2^s) ·
/// mu / 2^t)` with `s = bits(q) − 1`, `t = bits(p) − bits(q) + 2`, `mu = floor(2^(s+t) / q)`
/// is at most 2 below `floor(x / q)` and never above it (HAC 14.42 with the shifts fitted
/// to the input width), so `x − x̂·q < 3q`. Both factors of `x̂` are below `2^32` when
/// `bits(p) − bits(q) ≤ 30`, and `x̂ < 2^31` makes `x̂·q` two 32×32 products.
#[derive(Clone, Copy)]
struct ShiftedBarrett {
    q: u64,
    s: u32,
    t: u32,
    mu: u64,
}

impl ShiftedBarrett {
    /// `None` when the widths are too far apart for 32-bit factors.
    fn new(q: u64, p: u64) -> Option<Self> {
        let (bq, bp) = (64 - q.leading_zeros(), 64 - p.leading_zeros());
        if bp < bq || bp - bq > 30 {
            return None;
        }
        let (s, t) = (bq - 1, bp - bq + 2);
        let mu = ((1u128 << (s + t)) / u128::from(q)) as u64;
        // `mu ≤ 2^t ≤ 2^32`, with equality for a power-of-two `q` at the widest gap: the
        // factor must fit 32 bits.
        if mu > u64::from(u32::MAX) {
            return None;
        }
        Some(Self { q, s, t, mu })
    }

    #[inline(always)]
    fn reduce(self, x: u64) -> u64 {
        let x1 = u64::from((x >> self.s) as u32);
        let q_hat = u64::from(((x1 * u64::from(self.mu as u32)) >> self.t) as u32);
        let prod =
            q_hat * u64::from(self.q as u32) + ((q_hat * u64::from((self.q >> 32) as u32)) << 32);
        let r = x.wrapping_sub(prod);
        let r = r.min(r.wrapping_sub(self.q));
        r.min(r.wrapping_sub(self.q))
    }
}

/// [`Modulus::lift_centered`] from a larger modulus, reduced with [`ShiftedBarrett`].
struct LiftWide<'a> {
    out: &'a mut [u64],
    src: &'a [u64],
    half: u64,
    p_mod: u64,
    barrett: ShiftedBarrett,
}

impl pulp::WithSimd for LiftWide<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self {
            out,
            src,
            half,
            p_mod,
            barrett,
        } = self;
        let q = barrett.q;
        for (o, &v) in out.iter_mut().zip(src) {
            let r = barrett.reduce(v);
            // r − p_mod mod q for the upper half of the source range.
            let d = r.wrapping_sub(p_mod & above(v, half));
            *o = d.min(d.wrapping_add(q));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gcd(mut a: u64, mut b: u64) -> u64 {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }

    fn moduli() -> impl Strategy<Value = u64> {
        prop_oneof![
            2u64..1000,
            (1u64 << 30)..(1u64 << 31),
            (1u64 << 59)..(1u64 << 62)
        ]
    }

    proptest! {
        #[test]
        fn barrett_matches_u128_remainder(q in moduli(), a in any::<u64>(), b in any::<u64>(), x in any::<u128>()) {
            let m = Modulus::new(q).unwrap();
            prop_assert_eq!(m.reduce(a), a % q);
            prop_assert_eq!(m.reduce_u128(x), (x % q as u128) as u64);
            let (a, b) = (a % q, b % q);
            prop_assert_eq!(m.mul(a, b), ((a as u128 * b as u128) % q as u128) as u64);
            let (qm1, big) = (q - 1, (q - 1) as u128 * (q - 1) as u128);
            prop_assert_eq!(m.mul(qm1, qm1), (big % q as u128) as u64);
            prop_assert_eq!(m.add(a, b), ((a as u128 + b as u128) % q as u128) as u64);
            prop_assert_eq!(m.sub(a, b), ((a as u128 + q as u128 - b as u128) % q as u128) as u64);
            prop_assert_eq!(m.add(m.neg(a), a), 0);
        }

        #[test]
        fn shoup_matches_barrett(q in moduli(), a in any::<u64>(), w in any::<u64>()) {
            let m = Modulus::new(q).unwrap();
            let w = w % q;
            prop_assert_eq!(m.mul_shoup(a, w, m.shoup(w)), m.mul(m.reduce(a), w));
        }

        #[test]
        fn inverse_and_signed_reduction(q in moduli(), a in any::<u64>(), s in any::<i64>()) {
            let m = Modulus::new(q).unwrap();
            let a = a % q;
            match m.inv(a) {
                Ok(ai) => prop_assert_eq!(m.mul(a, ai), 1 % q),
                Err(_) => prop_assert_ne!(gcd(a, q), 1),
            }
            let r = m.reduce_i64(s);
            prop_assert_eq!(r as i128, (s as i128).rem_euclid(q as i128));
            let c = m.center(r);
            prop_assert!(c.unsigned_abs() <= q / 2);
            prop_assert_eq!(m.reduce_i64(c), r);
        }
    }

    #[test]
    fn centered_lift_matches_signed_reduction() {
        for (p, q) in [
            (97u64, 1_000_003u64),
            (1_000_003, 97),
            (101, 101),
            (103, 101),
        ] {
            let m = Modulus::new(q).unwrap();
            let src: Vec<u64> = (0..p).collect();
            let mut out = vec![0; src.len()];
            m.lift_centered(&mut out, &src, p);
            for (&v, &o) in src.iter().zip(&out) {
                let c = if v > p / 2 {
                    v as i64 - p as i64
                } else {
                    v as i64
                };
                assert_eq!(o, m.reduce_i64(c));
            }
        }
    }

    proptest! {
        #[test]
        fn centered_lift_between_word_sized_moduli(
            bp in 2u32..63,
            bq in 2u32..63,
            p_off in any::<u64>(),
            q_off in any::<u64>(),
            seed in any::<u64>(),
        ) {
            let p = (1u64 << (bp - 1)) | (p_off & ((1u64 << (bp - 1)) - 1));
            let q = (1u64 << (bq - 1)) | (q_off & ((1u64 << (bq - 1)) - 1));
            prop_assume!(p >= 2 && q >= 2);
            let m = Modulus::new(q).unwrap();
            // The extremes of the range and of each half, then pseudo-random residues.
            let mut src: Vec<u64> = [0, 1, p / 2, p / 2 + 1, p - 1]
                .into_iter()
                .filter(|&v| v < p)
                .collect();
            let mut x = seed;
            src.extend((0..300).map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 1) % p
            }));
            let mut out = vec![0; src.len()];
            m.lift_centered(&mut out, &src, p);
            for (&v, &o) in src.iter().zip(&out) {
                let c = if v > p / 2 { v as i128 - p as i128 } else { v as i128 };
                prop_assert_eq!(o as i128, c.rem_euclid(q as i128), "v = {}", v);
            }
        }
    }

    #[test]
    fn rejects_out_of_range_moduli() {
        assert!(Modulus::new(1).is_err());
        assert!(Modulus::new(1 << 62).is_err());
        assert!(Modulus::new((1 << 62) - 1).is_ok());
    }
}
