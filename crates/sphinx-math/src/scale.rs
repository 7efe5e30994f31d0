//! `(a − b) · w mod q` for a fixed `w`, slice-wide: the last step of every division by a
//! prime (rescaling, the mod-down of key switching and of public-key encryption).
//!
//! A Shoup product needs the high half of a 64×64-bit product, which no AVX2 instruction
//! gives; the vector path builds it from four 32×32→64 products (`vpmuludq`), four lanes
//! at a time, and is about twice as fast as the scalar loop that the compiler cannot
//! vectorize. It is chosen at run time; other CPUs take the scalar loop, with the same result.

use crate::modulus::Modulus;

/// `a[i] = (a[i] − b[i]) · w mod q` over the common length, with `w_shoup` the Shoup
/// companion of `w` ([`Modulus::shoup`]). Every input is reduced (`< q`).
pub fn sub_mul_shoup_assign(m: &Modulus, a: &mut [u64], b: &[u64], w: u64, w_shoup: u64) {
    let len = a.len().min(b.len());
    run(m, &mut a[..len], None, &b[..len], w, w_shoup, false);
}

/// `out[i] = (a[i] − b[i]) · w mod q` over the common length, with `w_shoup` the Shoup
/// companion of `w`. Every input is reduced (`< q`).
pub fn sub_mul_shoup(m: &Modulus, out: &mut [u64], a: &[u64], b: &[u64], w: u64, w_shoup: u64) {
    let len = out.len().min(a.len()).min(b.len());
    run(
        m,
        &mut out[..len],
        Some(&a[..len]),
        &b[..len],
        w,
        w_shoup,
        false,
    );
}

/// `out[i] = out[i] + (a[i] − b[i]) · w mod q` over the common length, with `w_shoup` the
/// Shoup companion of `w`. Every input is reduced (`< q`).
pub fn sub_mul_shoup_add(m: &Modulus, out: &mut [u64], a: &[u64], b: &[u64], w: u64, w_shoup: u64) {
    let len = out.len().min(a.len()).min(b.len());
    run(
        m,
        &mut out[..len],
        Some(&a[..len]),
        &b[..len],
        w,
        w_shoup,
        true,
    );
}

/// `out (=|+=) (a − b) · w` where a missing `a` means `out` itself (all of equal length).
fn run(
    m: &Modulus,
    out: &mut [u64],
    a: Option<&[u64]>,
    b: &[u64],
    w: u64,
    w_shoup: u64,
    add: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        avx2::run(simd, m, out, a, b, w, w_shoup, add);
        return;
    }
    scalar(m, out, a, b, w, w_shoup, add);
}

fn scalar(
    m: &Modulus,
    out: &mut [u64],
    a: Option<&[u64]>,
    b: &[u64],
    w: u64,
    w_shoup: u64,
    add: bool,
) {
    let q = m.value();
    for (i, (o, &y)) in out.iter_mut().zip(b).enumerate() {
        let x = a.map_or(*o, |a| a[i]);
        let r = m.mul_shoup(x + q - y, w, w_shoup);
        *o = if add { m.add(*o, r) } else { r };
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use pulp::cast;
    use pulp::x86::V3;
    use std::arch::x86_64::__m256i;

    use super::scalar;
    use crate::modulus::Modulus;

    /// `x − q` where `x ≥ q`, else `x` (all values below `2^63`, so signed compares work).
    #[inline(always)]
    fn reduce_once(simd: V3, x: __m256i, q: __m256i) -> __m256i {
        let avx2 = simd.avx2;
        let below = avx2._mm256_cmpgt_epi64(q, x);
        avx2._mm256_sub_epi64(x, avx2._mm256_andnot_si256(below, q))
    }

    /// Low 64 bits of `x · y` given `y`'s low and high 32-bit halves (each in a 64-bit lane).
    #[inline(always)]
    fn mul_lo(simd: V3, x: __m256i, y_lo: __m256i, y_hi: __m256i) -> __m256i {
        let avx2 = simd.avx2;
        let x_hi = avx2._mm256_srli_epi64::<32>(x);
        let ll = avx2._mm256_mul_epu32(x, y_lo);
        let cross = avx2._mm256_add_epi64(
            avx2._mm256_mul_epu32(x, y_hi),
            avx2._mm256_mul_epu32(x_hi, y_lo),
        );
        avx2._mm256_add_epi64(ll, avx2._mm256_slli_epi64::<32>(cross))
    }

    /// High 64 bits of `x · y` given `y`'s halves, from four 32×32-bit products.
    #[inline(always)]
    fn mul_hi(simd: V3, x: __m256i, y_lo: __m256i, y_hi: __m256i, low32: __m256i) -> __m256i {
        let avx2 = simd.avx2;
        let x_hi = avx2._mm256_srli_epi64::<32>(x);
        let ll = avx2._mm256_mul_epu32(x, y_lo);
        let lh = avx2._mm256_mul_epu32(x, y_hi);
        let hl = avx2._mm256_mul_epu32(x_hi, y_lo);
        let hh = avx2._mm256_mul_epu32(x_hi, y_hi);
        // Neither sum can carry out of 64 bits: (2^32 − 1)^2 + 2 (2^32 − 1) < 2^64.
        let t = avx2._mm256_add_epi64(lh, avx2._mm256_srli_epi64::<32>(ll));
        let u = avx2._mm256_add_epi64(hl, avx2._mm256_and_si256(t, low32));
        avx2._mm256_add_epi64(
            avx2._mm256_add_epi64(hh, avx2._mm256_srli_epi64::<32>(t)),
            avx2._mm256_srli_epi64::<32>(u),
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn run(
        simd: V3,
        m: &Modulus,
        out: &mut [u64],
        a: Option<&[u64]>,
        b: &[u64],
        w: u64,
        w_shoup: u64,
        add: bool,
    ) {
        simd.vectorize(
            #[inline(always)]
            || {
                let avx = simd.avx;
                let avx2 = simd.avx2;
                let splat = |v: u64| avx._mm256_set1_epi64x(v as i64);
                let q = m.value();
                let (vq, q_lo, q_hi) = (splat(q), splat(q & 0xffff_ffff), splat(q >> 32));
                let (w_lo, w_hi) = (splat(w & 0xffff_ffff), splat(w >> 32));
                let (s_lo, s_hi) = (splat(w_shoup & 0xffff_ffff), splat(w_shoup >> 32));
                let low32 = splat(0xffff_ffff);
                let (out4, out_tail) = pulp::as_arrays_mut::<4, u64>(out);
                let (a4, a_tail) = match a {
                    Some(a) => {
                        let (a4, tail) = pulp::as_arrays::<4, u64>(a);
                        (Some(a4), Some(tail))
                    }
                    None => (None, None),
                };
                let (b4, b_tail) = pulp::as_arrays::<4, u64>(b);
                for (i, (o, y)) in out4.iter_mut().zip(b4).enumerate() {
                    let x: __m256i = cast(a4.map_or(*o, |a4| a4[i]));
                    let y: __m256i = cast(*y);
                    // x + q − y < 2q < 2^63.
                    let d = avx2._mm256_sub_epi64(avx2._mm256_add_epi64(x, vq), y);
                    let q_hat = mul_hi(simd, d, s_lo, s_hi, low32);
                    let r = avx2._mm256_sub_epi64(
                        mul_lo(simd, d, w_lo, w_hi),
                        mul_lo(simd, q_hat, q_lo, q_hi),
                    );
                    let mut r = reduce_once(simd, r, vq);
                    if add {
                        r = reduce_once(simd, avx2._mm256_add_epi64(r, cast(*o)), vq);
                    }
                    *o = cast(r);
                }
                scalar(m, out_tail, a_tail, b_tail, w, w_shoup, add);
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_the_scalar_definition(
            bits in prop::sample::select(vec![2u32, 20, 33, 40, 59, 60, 61, 62]),
            n in 0usize..40,
            add in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; s };
            let q = ((next() >> (64 - bits)) | (1 << (bits - 1)) | 1).max(3);
            let m = Modulus::new(q).unwrap();
            // Edge residues first: 0 and q − 1 in every combination.
            let mut pick = |i: usize| match i % 5 { 0 => 0, 1 => q - 1, _ => next() % q };
            let a: Vec<u64> = (0..n).map(&mut pick).collect();
            let b: Vec<u64> = (0..n).map(|i| pick(i / 2 + 1)).collect();
            let start: Vec<u64> = (0..n).map(|i| pick(i + 3)).collect();
            let w = if seed % 3 == 0 { q - 1 } else { next() % q };
            let mut got = start.clone();
            let mut fresh = start.clone();
            sub_mul_shoup(&m, &mut fresh, &a, &b, w, m.shoup(w));
            if add {
                sub_mul_shoup_add(&m, &mut got, &a, &b, w, m.shoup(w));
            } else {
                got.copy_from_slice(&a);
                sub_mul_shoup_assign(&m, &mut got, &b, w, m.shoup(w));
            }
            for i in 0..n {
                let r = m.mul(m.sub(a[i], b[i]), w);
                let want = if add { m.add(start[i], r) } else { r };
                prop_assert_eq!(got[i], want, "i = {}", i);
                prop_assert_eq!(fresh[i], r, "i = {}", i);
            }
        }
    }
}
