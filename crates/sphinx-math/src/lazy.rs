//! Multiply-accumulate kernels with one modular reduction per output coefficient.
//!
//! The server of the training protocol spends its time in sums over many operands:
//! `Σ_t k_t · x_t` (plaintext integer weights times residue vectors, [`scalar_matmul`]),
//! `Σ_t p_t ⊙ x_t` (plaintext vectors times residue vectors, [`plain_matmul`]) and
//! `Σ_t x_t ⊗ y_t` (products of two-part ciphertexts without relinearization,
//! [`tensor_sum`]). Reducing every product modulo `q` costs a 64×64→128-bit multiply that
//! no x86 vector unit has. Here a residue `x < q < 2^42` is split as `x = x_h·2^21 + x_l`
//! with both halves below `2^22`; products of halves (and of a weight below `2^31`) are exact
//! in 64 bits, map to 32×32→64 vector multiplies (`vpmuludq` / `vpmuldq`), and thousands
//! of them are summed before the single reduction of each output. The loops are plain Rust,
//! compiled for the best instruction set the CPU has at run time (pulp dispatch, AVX2 on
//! x86-64 machines from the last decade).
//!
//! Moduli above [`MAX_LAZY_BITS`] bits or weights of `2^31` or more take a reference path
//! with a reduction per product, so every call is correct for every input.

use pulp::{Arch, Simd, WithSimd};

use crate::error::{MathError, Result};
use crate::modulus::Modulus;

/// Largest modulus bit length the split kernels accept.
pub const MAX_LAZY_BITS: u32 = 42;
/// Bits of the low half of a split residue.
const SPLIT: u32 = 21;
const LOW: u64 = (1 << SPLIT) - 1;
/// Coefficients processed per block: the accumulators (at most 9 × 8 bytes per coefficient)
/// stay in the L1 cache while every term streams through.
const CHUNK: usize = 128;
/// Exclusive bound on a weight's magnitude for the split path of [`scalar_matmul`].
const MAX_SPLIT_WEIGHT: u64 = 1 << 31;

fn shape(expected: usize, got: usize) -> MathError {
    MathError::ShapeMismatch {
        expected_limbs: 1,
        expected_n: expected,
        got_limbs: 1,
        got_n: got,
    }
}

/// `x mod q` for a signed 128-bit `x`, in `[0, q)`.
#[inline(always)]
fn reduce_i128(m: &Modulus, x: i128) -> u64 {
    let r = m.reduce_u128(x.unsigned_abs());
    if x < 0 { m.neg(r) } else { r }
}

/// `outs[j][c] = Σ_t ks[j·T + t] · xs[t][c] mod q` for `T = xs.len()` inputs and
/// `outs.len()` outputs: a dense integer matrix times a matrix of residues.
///
/// Every `xs[t]` and `outs[j]` has the same length; residues must be reduced (`< q`);
/// outputs are overwritten with reduced values. Zero weights are skipped.
///
/// # Errors
/// [`MathError::ShapeMismatch`] if `ks.len() != outs.len() · xs.len()` or the vector lengths
/// differ.
pub fn scalar_matmul(
    m: &Modulus,
    xs: &[&[u64]],
    ks: &[i64],
    outs: &mut [&mut [u64]],
) -> Result<()> {
    let n = outs.first().map_or(0, |o| o.len());
    if ks.len() != outs.len() * xs.len() {
        return Err(shape(outs.len() * xs.len(), ks.len()));
    }
    if let Some(bad) = xs
        .iter()
        .map(|x| x.len())
        .chain(outs.iter().map(|o| o.len()))
        .find(|&l| l != n)
    {
        return Err(shape(n, bad));
    }
    let max_k = ks.iter().map(|k| k.unsigned_abs()).max().unwrap_or(0);
    if m.bits() > MAX_LAZY_BITS || max_k >= MAX_SPLIT_WEIGHT {
        scalar_matmul_reference(m, xs, ks, outs);
        return Ok(());
    }
    // |k · half| < max_k · 2^22 per term; a block of terms sums below 2^63.
    let per_term = (max_k.max(1) as u128) << (SPLIT + 1);
    let flush_every = ((1u128 << 63) / per_term).max(1) as usize;
    Arch::new().dispatch(ScalarMatmul {
        m,
        xs,
        ks,
        outs,
        flush_every,
    });
    Ok(())
}

/// The reference [`scalar_matmul`]: one Shoup multiplication and reduction per product.
pub fn scalar_matmul_reference(m: &Modulus, xs: &[&[u64]], ks: &[i64], outs: &mut [&mut [u64]]) {
    let t = xs.len();
    for (j, out) in outs.iter_mut().enumerate() {
        out.fill(0);
        for (x, &k) in xs.iter().zip(&ks[j * t..(j + 1) * t]) {
            let k = m.reduce_i64(k);
            let ks = m.shoup(k);
            for (o, &v) in out.iter_mut().zip(x.iter()) {
                *o = m.add(*o, m.mul_shoup(v, k, ks));
            }
        }
    }
}

struct ScalarMatmul<'a, 'b, 'c> {
    m: &'a Modulus,
    xs: &'a [&'b [u64]],
    ks: &'a [i64],
    outs: &'a mut [&'c mut [u64]],
    flush_every: usize,
}

impl WithSimd for ScalarMatmul<'_, '_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Self {
            m,
            xs,
            ks,
            outs,
            flush_every,
        } = self;
        let t = xs.len();
        let n = outs.first().map_or(0, |o| o.len());
        let mut lo = [0i64; CHUNK];
        let mut hi = [0i64; CHUNK];
        // Blocks of coefficients outermost: one block of every input stays in cache while
        // all outputs read it.
        for start in (0..n).step_by(CHUNK) {
            let len = CHUNK.min(n - start);
            for (j, out) in outs.iter_mut().enumerate() {
                let out = &mut out[start..start + len];
                out.fill(0);
                let (lo, hi) = (&mut lo[..len], &mut hi[..len]);
                lo.fill(0);
                hi.fill(0);
                let mut pending = 0;
                for (x, &k) in xs.iter().zip(&ks[j * t..(j + 1) * t]) {
                    if k == 0 {
                        continue;
                    }
                    // |k| < 2^31 was checked, so the truncation is exact.
                    let k = i64::from(k as i32);
                    for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(&x[start..]) {
                        *l += i64::from((v & LOW) as i32) * k;
                        *h += i64::from((v >> SPLIT) as i32) * k;
                    }
                    pending += 1;
                    if pending == flush_every {
                        flush_signed(m, lo, hi, out);
                        pending = 0;
                    }
                }
                flush_signed(m, lo, hi, out);
            }
        }
    }
}

/// `out += hi·2^21 + lo mod q`, then clears the accumulators.
#[inline(always)]
fn flush_signed(m: &Modulus, lo: &mut [i64], hi: &mut [i64], out: &mut [u64]) {
    for ((o, l), h) in out.iter_mut().zip(lo.iter_mut()).zip(hi.iter_mut()) {
        let v = (i128::from(*h) << SPLIT) + i128::from(*l);
        *o = m.add(*o, reduce_i128(m, v));
        *l = 0;
        *h = 0;
    }
}

/// `outs[j][c] = Σ_t ps[j·T + t][c] · xs[t][c] mod q` for `T = xs.len()` inputs: a matrix
/// of plaintext *vectors* (NTT values, one per output and input; `None` is zero) times a
/// vector of residue vectors, the slot-wise analogue of [`scalar_matmul`]. Used where the
/// weight differs between slot blocks, so that one output carries several units.
///
/// Every vector has the same length; residues must be reduced (`< q`); outputs are
/// overwritten with reduced values.
///
/// # Errors
/// [`MathError::ShapeMismatch`] if `ps.len() != outs.len() · xs.len()` or the vector
/// lengths differ.
pub fn plain_matmul(
    m: &Modulus,
    xs: &[&[u64]],
    ps: &[Option<&[u64]>],
    outs: &mut [&mut [u64]],
) -> Result<()> {
    let n = outs.first().map_or(0, |o| o.len());
    if ps.len() != outs.len() * xs.len() {
        return Err(shape(outs.len() * xs.len(), ps.len()));
    }
    if let Some(bad) = xs
        .iter()
        .copied()
        .chain(ps.iter().flatten().copied())
        .map(<[u64]>::len)
        .chain(outs.iter().map(|o| o.len()))
        .find(|&l| l != n)
    {
        return Err(shape(n, bad));
    }
    if m.bits() > MAX_LAZY_BITS {
        plain_matmul_reference(m, xs, ps, outs);
        return Ok(());
    }
    if m.bits() <= MAX_SMALL_BITS {
        Arch::new().dispatch(PlainMatmulSmall { m, xs, ps, outs });
        return Ok(());
    }
    Arch::new().dispatch(PlainMatmul { m, xs, ps, outs });
    Ok(())
}

/// The reference [`plain_matmul`]: one reduction per product.
pub fn plain_matmul_reference(
    m: &Modulus,
    xs: &[&[u64]],
    ps: &[Option<&[u64]>],
    outs: &mut [&mut [u64]],
) {
    let t = xs.len();
    for (j, out) in outs.iter_mut().enumerate() {
        out.fill(0);
        for (x, p) in xs.iter().zip(&ps[j * t..(j + 1) * t]) {
            let Some(p) = p else { continue };
            for ((o, &v), &w) in out.iter_mut().zip(x.iter()).zip(p.iter()) {
                *o = m.add(*o, m.mul(v, w));
            }
        }
    }
}

struct PlainMatmul<'a, 'b, 'c> {
    m: &'a Modulus,
    xs: &'a [&'b [u64]],
    ps: &'a [Option<&'b [u64]>],
    outs: &'a mut [&'c mut [u64]],
}

/// Largest modulus bit length for which residues are multiplied whole: below `2^30`, one
/// 32×32→64 product per pair instead of the four of split halves.
pub const MAX_SMALL_BITS: u32 = 30;

/// Terms of at most `bound` each that a 64-bit sum holding below `2^32` can take.
fn small_flush(bound: u128) -> usize {
    (((1u128 << 64) - (1u128 << 32)) / bound.max(1)).clamp(1, 1 << 20) as usize
}

/// `acc` keeps its low 32 bits; the rest carries into `hi` (both exact, `acc·` total
/// `= hi·2^32 + acc`).
#[inline(always)]
fn carry_save(acc: &mut [u64], hi: &mut [u64]) {
    for (a, h) in acc.iter_mut().zip(hi.iter_mut()) {
        *h += *a >> 32;
        *a &= u64::from(u32::MAX);
    }
}

#[inline(always)]
fn carried(hi: u64, lo: u64) -> u128 {
    (u128::from(hi) << 32) + u128::from(lo)
}

/// [`plain_matmul`] for moduli of at most [`MAX_SMALL_BITS`] bits.
struct PlainMatmulSmall<'a, 'b, 'c> {
    m: &'a Modulus,
    xs: &'a [&'b [u64]],
    ps: &'a [Option<&'b [u64]>],
    outs: &'a mut [&'c mut [u64]],
}

impl WithSimd for PlainMatmulSmall<'_, '_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Self { m, xs, ps, outs } = self;
        let t = xs.len();
        let n = outs.first().map_or(0, |o| o.len());
        let q = u128::from(m.value());
        let flush_every = small_flush(q * q);
        let mut acc = [[0u64; CHUNK]; 2];
        for start in (0..n).step_by(CHUNK) {
            let len = CHUNK.min(n - start);
            let range = start..start + len;
            for (j, out) in outs.iter_mut().enumerate() {
                let out = &mut out[range.clone()];
                let [lo, hi] = &mut acc;
                let (lo, hi) = (&mut lo[..len], &mut hi[..len]);
                lo.fill(0);
                hi.fill(0);
                let mut pending = 0;
                for (x, p) in xs.iter().zip(&ps[j * t..(j + 1) * t]) {
                    let Some(p) = p else { continue };
                    let (x, p) = (&x[range.clone()], &p[range.clone()]);
                    for ((l, &u), &v) in lo.iter_mut().zip(x).zip(p) {
                        // Residues below 2^30: one exact 32×32→64 product.
                        *l += u64::from(u as u32) * u64::from(v as u32);
                    }
                    pending += 1;
                    if pending == flush_every {
                        carry_save(lo, hi);
                        pending = 0;
                    }
                }
                for ((o, &l), &h) in out.iter_mut().zip(lo.iter()).zip(hi.iter()) {
                    *o = m.reduce_u128(carried(h, l));
                }
            }
        }
    }
}

/// Terms per flush of [`plain_matmul`]: `mid` gains two products below `2^44` per term.
const PLAIN_FLUSH: usize = 1 << 18;

impl WithSimd for PlainMatmul<'_, '_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Self { m, xs, ps, outs } = self;
        let t = xs.len();
        let n = outs.first().map_or(0, |o| o.len());
        let mut acc = [[0u64; CHUNK]; 3];
        for start in (0..n).step_by(CHUNK) {
            let len = CHUNK.min(n - start);
            let range = start..start + len;
            for (j, out) in outs.iter_mut().enumerate() {
                let out = &mut out[range.clone()];
                out.fill(0);
                let [hh, mid, ll] = &mut acc;
                let (hh, mid, ll) = (&mut hh[..len], &mut mid[..len], &mut ll[..len]);
                let mut pending = 0;
                for (x, p) in xs.iter().zip(&ps[j * t..(j + 1) * t]) {
                    let Some(p) = p else { continue };
                    let (x, p) = (&x[range.clone()], &p[range.clone()]);
                    // Zipped, not indexed: no bounds checks, so the loop vectorizes.
                    for ((((h, d), l), &u), &v) in hh
                        .iter_mut()
                        .zip(mid.iter_mut())
                        .zip(ll.iter_mut())
                        .zip(x)
                        .zip(p)
                    {
                        add_split_product(h, d, l, u, v);
                    }
                    pending += 1;
                    if pending == PLAIN_FLUSH {
                        flush_split(m, hh, mid, ll, out);
                        pending = 0;
                    }
                }
                flush_split(m, hh, mid, ll, out);
            }
        }
    }
}

/// `out += hh·2^42 + mid·2^21 + ll mod q`, then clears the partial sums.
#[inline(always)]
fn flush_split(m: &Modulus, hh: &mut [u64], mid: &mut [u64], ll: &mut [u64], out: &mut [u64]) {
    for (((o, h), d), l) in out
        .iter_mut()
        .zip(hh.iter_mut())
        .zip(mid.iter_mut())
        .zip(ll.iter_mut())
    {
        *o = m.add(*o, m.reduce_u128(split_value(*h, *d, *l)));
        *h = 0;
        *d = 0;
        *l = 0;
    }
}

/// One output's terms for [`plain_dot_products`]: `(input, plaintext)` index pairs.
pub type PlainTerms = [(u32, u32)];

/// Sparse products of two-part inputs with plaintext vectors: for every output `j` and part
/// `k`, `outs[j][k] = Σ_{(i, l) ∈ terms[j]} ps[l] ⊙ xs[i][k] mod q` (an output without terms
/// is zero). Meant to be called on one block of coefficients of a whole layer at a time,
/// so that every input and plaintext block is loaded from memory once for all the outputs
/// that use it (the caller splits the coefficients and runs the blocks in parallel).
///
/// # Errors
/// [`MathError::ShapeMismatch`] if `terms.len() != outs.len()`, an index is out of range, or
/// the vectors differ in length.
pub fn plain_dot_products(
    m: &Modulus,
    xs: &[[&[u64]; 2]],
    ps: &[&[u64]],
    terms: &[&PlainTerms],
    outs: &mut [[&mut [u64]; 2]],
) -> Result<()> {
    let n = outs.first().map_or(0, |o| o[0].len());
    if terms.len() != outs.len() {
        return Err(shape(outs.len(), terms.len()));
    }
    if let Some(bad) = xs
        .iter()
        .flat_map(|x| x.iter().map(|v| v.len()))
        .chain(ps.iter().map(|p| p.len()))
        .chain(outs.iter().flat_map(|o| o.iter().map(|v| v.len())))
        .find(|&l| l != n)
    {
        return Err(shape(n, bad));
    }
    if let Some(&(i, l)) = terms
        .iter()
        .flat_map(|t| t.iter())
        .find(|&&(i, l)| i as usize >= xs.len() || l as usize >= ps.len())
    {
        return Err(shape(xs.len().min(ps.len()), i.max(l) as usize));
    }
    if m.bits() > MAX_LAZY_BITS {
        for (t, [o0, o1]) in terms.iter().zip(outs.iter_mut()) {
            o0.fill(0);
            o1.fill(0);
            for &(i, l) in t.iter() {
                let (x, p) = (&xs[i as usize], ps[l as usize]);
                for c in 0..n {
                    o0[c] = m.add(o0[c], m.mul(x[0][c], p[c]));
                    o1[c] = m.add(o1[c], m.mul(x[1][c], p[c]));
                }
            }
        }
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if n.is_multiple_of(4)
        && let Some(simd) = pulp::x86::V3::try_new()
    {
        avx2::plain_dot_products(simd, m, xs, ps, terms, outs);
        return Ok(());
    }
    if m.bits() <= MAX_SMALL_BITS {
        Arch::new().dispatch(PlainDotSmall {
            m,
            xs,
            ps,
            terms,
            outs,
        });
    } else {
        Arch::new().dispatch(PlainDot {
            m,
            xs,
            ps,
            terms,
            outs,
        });
    }
    Ok(())
}

struct PlainDot<'a, 'b, 'c> {
    m: &'a Modulus,
    xs: &'a [[&'b [u64]; 2]],
    ps: &'a [&'b [u64]],
    terms: &'a [&'b PlainTerms],
    outs: &'a mut [[&'c mut [u64]; 2]],
}

impl WithSimd for PlainDot<'_, '_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Self {
            m,
            xs,
            ps,
            terms,
            outs,
        } = self;
        let n = outs.first().map_or(0, |o| o[0].len());
        let mut acc = [[0u64; CHUNK]; 6];
        for start in (0..n).step_by(CHUNK) {
            let len = CHUNK.min(n - start);
            let range = start..start + len;
            for (t, [o0, o1]) in terms.iter().zip(outs.iter_mut()) {
                let [h0, d0, l0, h1, d1, l1] = &mut acc;
                let (h0, d0, l0) = (&mut h0[..len], &mut d0[..len], &mut l0[..len]);
                let (h1, d1, l1) = (&mut h1[..len], &mut d1[..len], &mut l1[..len]);
                for v in [&mut *h0, &mut *d0, &mut *l0, &mut *h1, &mut *d1, &mut *l1] {
                    v.fill(0);
                }
                o0[range.clone()].fill(0);
                o1[range.clone()].fill(0);
                let mut pending = 0;
                for &(i, l) in t.iter() {
                    let [x0, x1] = &xs[i as usize];
                    let (x0, x1, p) = (
                        &x0[range.clone()],
                        &x1[range.clone()],
                        &ps[l as usize][range.clone()],
                    );
                    for (((((((a, b), c), d), e), f), &u0), (&u1, &v)) in h0
                        .iter_mut()
                        .zip(d0.iter_mut())
                        .zip(l0.iter_mut())
                        .zip(h1.iter_mut())
                        .zip(d1.iter_mut())
                        .zip(l1.iter_mut())
                        .zip(x0)
                        .zip(x1.iter().zip(p))
                    {
                        add_split_product(a, b, c, u0, v);
                        add_split_product(d, e, f, u1, v);
                    }
                    pending += 1;
                    if pending == PLAIN_FLUSH {
                        flush_split(m, h0, d0, l0, &mut o0[range.clone()]);
                        flush_split(m, h1, d1, l1, &mut o1[range.clone()]);
                        pending = 0;
                    }
                }
                flush_split(m, h0, d0, l0, &mut o0[range.clone()]);
                flush_split(m, h1, d1, l1, &mut o1[range.clone()]);
            }
        }
    }
}

struct PlainDotSmall<'a, 'b, 'c> {
    m: &'a Modulus,
    xs: &'a [[&'b [u64]; 2]],
    ps: &'a [&'b [u64]],
    terms: &'a [&'b PlainTerms],
    outs: &'a mut [[&'c mut [u64]; 2]],
}

impl WithSimd for PlainDotSmall<'_, '_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Self {
            m,
            xs,
            ps,
            terms,
            outs,
        } = self;
        let n = outs.first().map_or(0, |o| o[0].len());
        let q = u128::from(m.value());
        let flush_every = small_flush(q * q);
        let mut acc = [[0u64; CHUNK]; 4];
        for start in (0..n).step_by(CHUNK) {
            let len = CHUNK.min(n - start);
            let range = start..start + len;
            for (t, [o0, o1]) in terms.iter().zip(outs.iter_mut()) {
                let [a0, c0, a1, c1] = &mut acc;
                let (a0, c0, a1, c1) = (
                    &mut a0[..len],
                    &mut c0[..len],
                    &mut a1[..len],
                    &mut c1[..len],
                );
                for v in [&mut *a0, &mut *c0, &mut *a1, &mut *c1] {
                    v.fill(0);
                }
                let mut pending = 0;
                for &(i, l) in t.iter() {
                    let [x0, x1] = &xs[i as usize];
                    let (x0, x1, p) = (
                        &x0[range.clone()],
                        &x1[range.clone()],
                        &ps[l as usize][range.clone()],
                    );
                    for (((s0, s1), &u0), (&u1, &v)) in a0
                        .iter_mut()
                        .zip(a1.iter_mut())
                        .zip(x0)
                        .zip(x1.iter().zip(p))
                    {
                        let v = u64::from(v as u32);
                        *s0 += u64::from(u0 as u32) * v;
                        *s1 += u64::from(u1 as u32) * v;
                    }
                    pending += 1;
                    if pending == flush_every {
                        carry_save(a0, c0);
                        carry_save(a1, c1);
                        pending = 0;
                    }
                }
                for (o, (&l, &h)) in o0[range.clone()].iter_mut().zip(a0.iter().zip(c0.iter())) {
                    *o = m.reduce_u128(carried(h, l));
                }
                for (o, (&l, &h)) in o1[range.clone()].iter_mut().zip(a1.iter().zip(c1.iter())) {
                    *o = m.reduce_u128(carried(h, l));
                }
            }
        }
    }
}

/// One term of [`tensor_sum`]: limbs `(x0, x1)` and `(y0, y1)` of two two-part ciphertexts.
pub type TensorTerm<'a> = [&'a [u64]; 4];

/// The tensor product summed over terms, without relinearization:
/// `c0 = Σ x0·y0`, `c1 = Σ (x0·y1 + x1·y0)`, `c2 = Σ x1·y1` (mod `q`, element-wise), each
/// term given as `[x0, x1, y0, y1]` (NTT values, reduced). Outputs are overwritten.
///
/// Karatsuba: `c1 = Σ (x0 + x1)(y0 + y1) − Σ x0·y0 − Σ x1·y1`, subtracted exactly before the
/// one reduction, so three products per term instead of four.
///
/// # Errors
/// [`MathError::ShapeMismatch`] if the vectors differ in length.
pub fn tensor_sum(m: &Modulus, terms: &[TensorTerm<'_>], out: [&mut [u64]; 3]) -> Result<()> {
    let n = out[0].len();
    if let Some(bad) = terms
        .iter()
        .flat_map(|t| t.iter().map(|v| v.len()))
        .chain(out.iter().map(|o| o.len()))
        .find(|&l| l != n)
    {
        return Err(shape(n, bad));
    }
    if m.bits() > MAX_LAZY_BITS {
        tensor_sum_reference(m, terms, out);
        return Ok(());
    }
    Arch::new().dispatch(TensorSum { m, terms, out });
    Ok(())
}

/// The reference [`tensor_sum`]: four products, each reduced.
pub fn tensor_sum_reference(m: &Modulus, terms: &[TensorTerm<'_>], out: [&mut [u64]; 3]) {
    let [c0, c1, c2] = out;
    c0.fill(0);
    c1.fill(0);
    c2.fill(0);
    for [x0, x1, y0, y1] in terms {
        for c in 0..c0.len() {
            c0[c] = m.add(c0[c], m.mul(x0[c], y0[c]));
            c1[c] = m.add(c1[c], m.add(m.mul(x0[c], y1[c]), m.mul(x1[c], y0[c])));
            c2[c] = m.add(c2[c], m.mul(x1[c], y1[c]));
        }
    }
}

struct TensorSum<'a, 'b, 'c> {
    m: &'a Modulus,
    terms: &'a [TensorTerm<'b>],
    out: [&'c mut [u64]; 3],
}

/// Terms per flush: each half product is below `2^44` (halves below `2^22`), `mid` sums
/// two per term, so `2^19` terms keep every partial sum below `2^64`.
const TENSOR_FLUSH: usize = 1 << 19;

/// Splits `u < 2^43` into halves `(u >> 21, u mod 2^21)`, both below `2^22`.
#[inline(always)]
fn halves(u: u64) -> (u64, u64) {
    (u64::from((u >> SPLIT) as u32), u64::from((u & LOW) as u32))
}

/// Adds `u·v` to the partial sums `(hh, mid, ll)` of `hh·2^42 + mid·2^21 + ll`.
#[inline(always)]
fn add_split_product(hh: &mut u64, mid: &mut u64, ll: &mut u64, u: u64, v: u64) {
    let ((uh, ul), (vh, vl)) = (halves(u), halves(v));
    *hh += uh * vh;
    *mid += uh * vl + ul * vh;
    *ll += ul * vl;
}

#[inline(always)]
fn split_value(hh: u64, mid: u64, ll: u64) -> u128 {
    (u128::from(hh) << (2 * SPLIT)) + (u128::from(mid) << SPLIT) + u128::from(ll)
}

impl WithSimd for TensorSum<'_, '_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Self { m, terms, out } = self;
        let [c0, c1, c2] = out;
        let n = c0.len();
        // Structure of arrays (one array per partial sum) so that the loop vectorizes.
        let mut acc = [[0u64; CHUNK]; 9];
        for start in (0..n).step_by(CHUNK) {
            let len = CHUNK.min(n - start);
            let range = start..start + len;
            let (o0, o1, o2) = (
                &mut c0[range.clone()],
                &mut c1[range.clone()],
                &mut c2[range.clone()],
            );
            o0.fill(0);
            o1.fill(0);
            o2.fill(0);
            for block in terms.chunks(TENSOR_FLUSH) {
                let [ahh, amid, all, bhh, bmid, bll, khh, kmid, kll] = &mut acc;
                let (ahh, amid, all) = (&mut ahh[..len], &mut amid[..len], &mut all[..len]);
                let (bhh, bmid, bll) = (&mut bhh[..len], &mut bmid[..len], &mut bll[..len]);
                let (khh, kmid, kll) = (&mut khh[..len], &mut kmid[..len], &mut kll[..len]);
                for v in [
                    &mut *ahh, &mut *amid, &mut *all, &mut *bhh, &mut *bmid, &mut *bll, &mut *khh,
                    &mut *kmid, &mut *kll,
                ] {
                    v.fill(0);
                }
                for [x0, x1, y0, y1] in block {
                    let (x0, x1) = (&x0[range.clone()], &x1[range.clone()]);
                    let (y0, y1) = (&y0[range.clone()], &y1[range.clone()]);
                    for c in 0..len {
                        let (u0, u1, v0, v1) = (x0[c], x1[c], y0[c], y1[c]);
                        add_split_product(&mut ahh[c], &mut amid[c], &mut all[c], u0, v0);
                        add_split_product(&mut bhh[c], &mut bmid[c], &mut bll[c], u1, v1);
                        add_split_product(&mut khh[c], &mut kmid[c], &mut kll[c], u0 + u1, v0 + v1);
                    }
                }
                for c in 0..len {
                    let va = split_value(ahh[c], amid[c], all[c]);
                    let vb = split_value(bhh[c], bmid[c], bll[c]);
                    // Σ(x0+x1)(y0+y1) ≥ Σx0·y0 + Σx1·y1 as integers: no wrap.
                    let vk = split_value(khh[c], kmid[c], kll[c]) - va - vb;
                    o0[c] = m.add(o0[c], m.reduce_u128(va));
                    o1[c] = m.add(o1[c], m.reduce_u128(vk));
                    o2[c] = m.add(o2[c], m.reduce_u128(vb));
                }
            }
        }
    }
}

/// Several tensor sums that share their left operands: output `j` is
/// `Σ_t lhs[t] ⊗ rhs[j][t]` over the `t` where `rhs[j][t]` is present (the tensor product
/// of [`tensor_sum`]; each operand `[part 0, part 1]` of one limb). Each block of `lhs[t]`
/// is loaded once for all outputs while their partial sums stay in the L1 cache: the
/// per-sample weight gradients of a convolution, where the weights of one packed `δ` group
/// all meet the same `δ` at every output position.
///
/// # Errors
/// [`MathError::ShapeMismatch`] if `rhs.len() != outs.len()`, a row of `rhs` is not as long
/// as `lhs`, or the vectors differ in length.
pub fn tensor_sums_shared(
    m: &Modulus,
    lhs: &[[&[u64]; 2]],
    rhs: &[Vec<Option<[&[u64]; 2]>>],
    outs: &mut [[&mut [u64]; 3]],
) -> Result<()> {
    let n = outs.first().map_or(0, |o| o[0].len());
    if rhs.len() != outs.len() {
        return Err(shape(outs.len(), rhs.len()));
    }
    if let Some(row) = rhs.iter().find(|r| r.len() != lhs.len()) {
        return Err(shape(lhs.len(), row.len()));
    }
    let lens = lhs
        .iter()
        .flat_map(|v| v.iter().map(|x| x.len()))
        .chain(
            rhs.iter()
                .flatten()
                .flatten()
                .flat_map(|v| v.iter().map(|x| x.len())),
        )
        .chain(outs.iter().flat_map(|o| o.iter().map(|x| x.len())));
    if let Some(bad) = lens.into_iter().find(|&l| l != n) {
        return Err(shape(n, bad));
    }
    if m.bits() > MAX_LAZY_BITS || lhs.len() > TENSOR_FLUSH {
        for (row, out) in rhs.iter().zip(outs.iter_mut()) {
            let terms: Vec<TensorTerm<'_>> = lhs
                .iter()
                .zip(row)
                .filter_map(|(l, r)| r.map(|r| [l[0], l[1], r[0], r[1]]))
                .collect();
            let [c0, c1, c2] = out;
            tensor_sum(m, &terms, [&mut **c0, &mut **c1, &mut **c2])?;
        }
        return Ok(());
    }
    if m.bits() <= MAX_SMALL_BITS {
        Arch::new().dispatch(TensorSumsSharedSmall { m, lhs, rhs, outs });
        return Ok(());
    }
    Arch::new().dispatch(TensorSumsShared { m, lhs, rhs, outs });
    Ok(())
}

struct TensorSumsShared<'a, 'b, 'c> {
    m: &'a Modulus,
    lhs: &'a [[&'b [u64]; 2]],
    rhs: &'a [Vec<Option<[&'b [u64]; 2]>>],
    outs: &'a mut [[&'c mut [u64]; 3]],
}

/// [`tensor_sums_shared`] for moduli of at most [`MAX_SMALL_BITS`] bits: whole residues,
/// three 32×32→64 products per term (Karatsuba), sums kept exact by carry-saving.
struct TensorSumsSharedSmall<'a, 'b, 'c> {
    m: &'a Modulus,
    lhs: &'a [[&'b [u64]; 2]],
    rhs: &'a [Vec<Option<[&'b [u64]; 2]>>],
    outs: &'a mut [[&'c mut [u64]; 3]],
}

impl WithSimd for TensorSumsSharedSmall<'_, '_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Self { m, lhs, rhs, outs } = self;
        let n = outs.first().map_or(0, |o| o[0].len());
        let q = u128::from(m.value());
        // The Karatsuba product (x0 + x1)(y0 + y1) is the largest: below (2q)².
        let flush_every = small_flush(4 * q * q);
        // Per output: low and carried sums of x0·y0, x1·y1 and (x0+x1)(y0+y1).
        let mut acc = vec![[[0u64; SHARED_CHUNK]; 6]; outs.len()];
        let mut pending = vec![0usize; outs.len()];
        for start in (0..n).step_by(SHARED_CHUNK) {
            let len = SHARED_CHUNK.min(n - start);
            let range = start..start + len;
            acc.fill([[0; SHARED_CHUNK]; 6]);
            pending.fill(0);
            for (t, [x0, x1]) in lhs.iter().enumerate() {
                let (x0, x1) = (&x0[range.clone()], &x1[range.clone()]);
                for ((row, a), pend) in rhs.iter().zip(acc.iter_mut()).zip(pending.iter_mut()) {
                    let Some([y0, y1]) = row[t] else { continue };
                    let (y0, y1) = (&y0[range.clone()], &y1[range.clone()]);
                    let [aa, bb, kk, ah, bh, kh] = a;
                    let (aa, bb, kk) = (&mut aa[..len], &mut bb[..len], &mut kk[..len]);
                    for (((((a0, b0), k0), &u0), &u1), (&v0, &v1)) in aa
                        .iter_mut()
                        .zip(bb.iter_mut())
                        .zip(kk.iter_mut())
                        .zip(x0)
                        .zip(x1)
                        .zip(y0.iter().zip(y1))
                    {
                        let (u0, u1) = (u64::from(u0 as u32), u64::from(u1 as u32));
                        let (v0, v1) = (u64::from(v0 as u32), u64::from(v1 as u32));
                        *a0 += u0 * v0;
                        *b0 += u1 * v1;
                        *k0 += (u0 + u1) * (v0 + v1);
                    }
                    *pend += 1;
                    if *pend == flush_every {
                        carry_save(aa, &mut ah[..len]);
                        carry_save(bb, &mut bh[..len]);
                        carry_save(kk, &mut kh[..len]);
                        *pend = 0;
                    }
                }
            }
            for (a, out) in acc.iter().zip(outs.iter_mut()) {
                let [aa, bb, kk, ah, bh, kh] = a;
                let [o0, o1, o2] = out;
                for c in 0..len {
                    let va = carried(ah[c], aa[c]);
                    let vb = carried(bh[c], bb[c]);
                    // Σ(x0+x1)(y0+y1) ≥ Σx0·y0 + Σx1·y1 as integers: no wrap.
                    let vk = carried(kh[c], kk[c]) - va - vb;
                    o0[start + c] = m.reduce_u128(va);
                    o1[start + c] = m.reduce_u128(vk);
                    o2[start + c] = m.reduce_u128(vb);
                }
            }
        }
    }
}

/// Coefficients per block of [`tensor_sums_shared`]: its partial sums take
/// `9 · 8 · SHARED_CHUNK` bytes per output.
const SHARED_CHUNK: usize = 32;

impl WithSimd for TensorSumsShared<'_, '_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let Self { m, lhs, rhs, outs } = self;
        let n = outs.first().map_or(0, |o| o[0].len());
        let mut acc = vec![[[0u64; SHARED_CHUNK]; 9]; outs.len()];
        for start in (0..n).step_by(SHARED_CHUNK) {
            let len = SHARED_CHUNK.min(n - start);
            let range = start..start + len;
            acc.fill([[0; SHARED_CHUNK]; 9]);
            for (t, [x0, x1]) in lhs.iter().enumerate() {
                let (x0, x1) = (&x0[range.clone()], &x1[range.clone()]);
                for (row, a) in rhs.iter().zip(acc.iter_mut()) {
                    let Some([y0, y1]) = row[t] else { continue };
                    let (y0, y1) = (&y0[range.clone()], &y1[range.clone()]);
                    let [ahh, amid, all, bhh, bmid, bll, khh, kmid, kll] = a;
                    for c in 0..len {
                        let (u0, u1, v0, v1) = (x0[c], x1[c], y0[c], y1[c]);
                        add_split_product(&mut ahh[c], &mut amid[c], &mut all[c], u0, v0);
                        add_split_product(&mut bhh[c], &mut bmid[c], &mut bll[c], u1, v1);
                        add_split_product(&mut khh[c], &mut kmid[c], &mut kll[c], u0 + u1, v0 + v1);
                    }
                }
            }
            for (a, out) in acc.iter().zip(outs.iter_mut()) {
                let [ahh, amid, all, bhh, bmid, bll, khh, kmid, kll] = a;
                let [o0, o1, o2] = out;
                for c in 0..len {
                    let va = split_value(ahh[c], amid[c], all[c]);
                    let vb = split_value(bhh[c], bmid[c], bll[c]);
                    // Σ(x0+x1)(y0+y1) ≥ Σx0·y0 + Σx1·y1 as integers: no wrap.
                    let vk = split_value(khh[c], kmid[c], kll[c]) - va - vb;
                    o0[start + c] = m.reduce_u128(va);
                    o1[start + c] = m.reduce_u128(vk);
                    o2[start + c] = m.reduce_u128(vb);
                }
            }
        }
    }
}

/// Register-blocked AVX2 forms of the kernels above: four coefficients of one output are
/// summed over all its terms in vector registers, so the partial sums never go through
/// memory (the portable loops keep them in arrays, one load and store per term and partial
/// sum, and the compiler does not vectorize their many-way zips well). Same results, bit for
/// bit: the sums are exact integers until the one reduction per coefficient.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use pulp::cast;
    use pulp::x86::V3;
    use std::arch::x86_64::__m256i;

    use super::{LOW, PLAIN_FLUSH, PlainTerms, SPLIT, carried, small_flush, split_value};
    use crate::modulus::Modulus;

    /// [`SPLIT`] as the shift intrinsics take it.
    const SPLIT_SHIFT: i32 = SPLIT as i32;

    fn lanes(v: __m256i) -> [u64; 4] {
        cast(v)
    }

    thread_local! {
        /// Reused gather buffer of [`plain_dot_products`].
        static SCRATCH: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Largest gather buffer kept between calls, in words (8 MiB; a block of 32
    /// coefficients of a CNN layer's inputs and plaintexts takes well under 2 MiB).
    const SCRATCH_KEEP: usize = 1 << 20;

    /// Four coefficients of plaintext `l`, quad `g`.
    trait Plains {
        fn quad(&self, l: usize, g: usize) -> [u64; 4];
    }

    /// Plaintexts copied into one buffer, `quads` quads per plaintext.
    struct Gathered<'a> {
        data: &'a [[u64; 4]],
        quads: usize,
    }

    impl Plains for Gathered<'_> {
        #[inline(always)]
        fn quad(&self, l: usize, g: usize) -> [u64; 4] {
            self.data[l * self.quads + g]
        }
    }

    /// Plaintexts read where they are.
    struct InPlace<'a, 'b>(&'a [&'b [u64]]);

    impl Plains for InPlace<'_, '_> {
        #[inline(always)]
        fn quad(&self, l: usize, g: usize) -> [u64; 4] {
            pulp::as_arrays::<4, u64>(self.0[l]).0[g]
        }
    }

    /// Gathers the inputs into one contiguous buffer (input `i`'s part `k` at row `2i + k`,
    /// rows of `n` coefficients), and the plaintexts too when each is read by several
    /// terms, then runs the kernel for the modulus. The callers pass blocks of a few dozen
    /// coefficients cut from thousands of separate polynomials: read in place, the loads
    /// of the kernel hop between thousands of 4 KiB pages and miss the TLB and the caches;
    /// gathered, a block's working set is a few hundred contiguous kilobytes, each copied
    /// once however many outputs read it. A plaintext read by one term only (a fully
    /// connected layer's packed weights) is cheaper read in place than copied.
    pub(super) fn plain_dot_products(
        simd: V3,
        m: &Modulus,
        xs: &[[&[u64]; 2]],
        ps: &[&[u64]],
        terms: &[&PlainTerms],
        outs: &mut [[&mut [u64]; 2]],
    ) {
        let n = outs.first().map_or(0, |o| o[0].len());
        let quads = n / 4;
        let reads: usize = terms.iter().map(|t| t.len()).sum();
        let gather_plains = reads >= 4 * ps.len();
        SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            for [x0, x1] in xs {
                buf.extend_from_slice(x0);
                buf.extend_from_slice(x1);
            }
            if gather_plains {
                for p in ps {
                    buf.extend_from_slice(p);
                }
            }
            let (x, p) = buf.split_at(2 * xs.len() * n);
            let x = pulp::as_arrays::<4, u64>(x).0;
            if gather_plains {
                let data = pulp::as_arrays::<4, u64>(p).0;
                run(simd, m, x, &Gathered { data, quads }, quads, terms, outs);
            } else {
                run(simd, m, x, &InPlace(ps), quads, terms, outs);
            }
            // A call on whole polynomials rather than blocks may have grown the buffer far
            // beyond what the blocked callers need; do not keep that for the thread's life.
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
        });
    }

    fn run(
        simd: V3,
        m: &Modulus,
        x: &[[u64; 4]],
        p: &impl Plains,
        quads: usize,
        terms: &[&PlainTerms],
        outs: &mut [[&mut [u64]; 2]],
    ) {
        // Two quads (a whole cache line) per pass where the length allows.
        match (m.bits() <= super::MAX_SMALL_BITS, quads.is_multiple_of(2)) {
            (true, true) => plain_dot_small::<2>(simd, m, x, p, quads, terms, outs),
            (true, false) => plain_dot_small::<1>(simd, m, x, p, quads, terms, outs),
            (false, true) => plain_dot_split::<2>(simd, m, x, p, quads, terms, outs),
            (false, false) => plain_dot_split::<1>(simd, m, x, p, quads, terms, outs),
        }
    }

    /// [`super::plain_dot_products`] for moduli of at most [`super::MAX_SMALL_BITS`] bits,
    /// lengths a multiple of 4: one 32×32→64 product per coefficient and part, partial sums
    /// carried into a high word every [`small_flush`] terms.
    fn plain_dot_small<const W: usize>(
        simd: V3,
        m: &Modulus,
        xs: &[[u64; 4]],
        ps: &impl Plains,
        quads: usize,
        terms: &[&PlainTerms],
        outs: &mut [[&mut [u64]; 2]],
    ) {
        simd.vectorize(
            #[inline(always)]
            || {
                let avx2 = simd.avx2;
                let zero = simd.avx._mm256_setzero_si256();
                let low32 = simd.avx._mm256_set1_epi64x(i64::from(u32::MAX));
                let flush_every = small_flush(u128::from(m.value()) * u128::from(m.value()));
                for (t, [o0, o1]) in terms.iter().zip(outs.iter_mut()) {
                    for g in (0..quads).step_by(W) {
                        // [part][quad]: low sums and carried high sums.
                        let (mut lo, mut hi) = ([[zero; W]; 2], [[zero; W]; 2]);
                        let mut pending = 0;
                        for &(i, l) in t.iter() {
                            let x = 2 * i as usize * quads + g;
                            for w in 0..W {
                                let pv: __m256i = cast(ps.quad(l as usize, g + w));
                                for (k, lo) in lo.iter_mut().enumerate() {
                                    let xv: __m256i = cast(xs[x + k * quads + w]);
                                    lo[w] =
                                        avx2._mm256_add_epi64(lo[w], avx2._mm256_mul_epu32(xv, pv));
                                }
                            }
                            pending += 1;
                            if pending == flush_every {
                                for (lo, hi) in lo.iter_mut().zip(hi.iter_mut()) {
                                    for w in 0..W {
                                        hi[w] = avx2._mm256_add_epi64(
                                            hi[w],
                                            avx2._mm256_srli_epi64::<32>(lo[w]),
                                        );
                                        lo[w] = avx2._mm256_and_si256(lo[w], low32);
                                    }
                                }
                                pending = 0;
                            }
                        }
                        for (out, (lo, hi)) in
                            [&mut **o0, &mut **o1].into_iter().zip(lo.iter().zip(&hi))
                        {
                            for w in 0..W {
                                let (a, h) = (lanes(lo[w]), lanes(hi[w]));
                                let start = 4 * (g + w);
                                for (k, o) in out[start..start + 4].iter_mut().enumerate() {
                                    *o = m.reduce_u128(carried(h[k], a[k]));
                                }
                            }
                        }
                    }
                }
            },
        );
    }

    /// [`super::plain_dot_products`] for moduli below `2^42`, lengths a multiple of 4:
    /// residues split into 21-bit halves, `x·p = x_h·p_h·2^42 + (x_h·p_l + x_l·p_h)·2^21 +
    /// x_l·p_l`, the middle term by Karatsuba from `(x_h + x_l)(p_h + p_l)` (three
    /// products instead of four; the subtraction happens once, on the exact sums).
    fn plain_dot_split<const W: usize>(
        simd: V3,
        m: &Modulus,
        xs: &[[u64; 4]],
        ps: &impl Plains,
        quads: usize,
        terms: &[&PlainTerms],
        outs: &mut [[&mut [u64]; 2]],
    ) {
        simd.vectorize(
            #[inline(always)]
            || {
                let avx2 = simd.avx2;
                let zero = simd.avx._mm256_setzero_si256();
                let low = simd.avx._mm256_set1_epi64x(LOW as i64);
                let split = |v: __m256i| {
                    let (h, l) = (
                        avx2._mm256_srli_epi64::<SPLIT_SHIFT>(v),
                        avx2._mm256_and_si256(v, low),
                    );
                    [h, avx2._mm256_add_epi64(h, l), l]
                };
                // (hh, kk, ll) partial sums of four coefficients.
                let flush = |acc: &mut [__m256i; 3], out: &mut [u64]| {
                    let [hh, kk, ll] = acc.map(lanes);
                    for (k, o) in out.iter_mut().enumerate() {
                        // (x_h + x_l)(p_h + p_l) ≥ x_h·p_h + x_l·p_l term by term: no wrap.
                        let mid = kk[k] - hh[k] - ll[k];
                        *o = m.add(*o, m.reduce_u128(split_value(hh[k], mid, ll[k])));
                    }
                    *acc = [zero; 3];
                };
                for (t, [o0, o1]) in terms.iter().zip(outs.iter_mut()) {
                    for g in (0..quads).step_by(W) {
                        let range = 4 * g..4 * (g + W);
                        o0[range.clone()].fill(0);
                        o1[range.clone()].fill(0);
                        // [part][quad]
                        let mut acc = [[[zero; 3]; W]; 2];
                        let mut pending = 0;
                        for &(i, l) in t.iter() {
                            let x = 2 * i as usize * quads + g;
                            for w in 0..W {
                                let pv = split(cast(ps.quad(l as usize, g + w)));
                                for (k, acc) in acc.iter_mut().enumerate() {
                                    let xv = split(cast(xs[x + k * quads + w]));
                                    for s in 0..3 {
                                        acc[w][s] = avx2._mm256_add_epi64(
                                            acc[w][s],
                                            avx2._mm256_mul_epu32(xv[s], pv[s]),
                                        );
                                    }
                                }
                            }
                            pending += 1;
                            if pending == PLAIN_FLUSH {
                                for (out, acc) in
                                    [&mut **o0, &mut **o1].into_iter().zip(acc.iter_mut())
                                {
                                    for (w, acc) in acc.iter_mut().enumerate() {
                                        flush(acc, &mut out[4 * (g + w)..4 * (g + w) + 4]);
                                    }
                                }
                                pending = 0;
                            }
                        }
                        for (out, acc) in [&mut **o0, &mut **o1].into_iter().zip(acc.iter_mut()) {
                            for (w, acc) in acc.iter_mut().enumerate() {
                                flush(acc, &mut out[4 * (g + w)..4 * (g + w) + 4]);
                            }
                        }
                    }
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn residues(q: u64, n: usize, rng: &mut StdRng) -> Vec<u64> {
        (0..n).map(|_| rng.random_range(0..q)).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn scalar_matmul_matches_reference(
            bits in prop::sample::select(vec![20u32, 29, 41, 42, 50]),
            n in 1usize..300,
            t in 0usize..9,
            rows in 1usize..4,
            kbits in prop::sample::select(vec![1u32, 29, 31, 32, 40]),
            seed in any::<u64>(),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let q = (1u64 << (bits - 1)) + 1 + 2 * rng.random_range(0..(1u64 << (bits - 3)));
            let m = Modulus::new(q).unwrap();
            let data: Vec<Vec<u64>> = (0..t).map(|_| residues(q, n, &mut rng)).collect();
            let xs: Vec<&[u64]> = data.iter().map(Vec::as_slice).collect();
            let lim = 1i64 << (kbits - 1);
            // Extremes included: the largest weight and half residues at q - 1.
            let ks: Vec<i64> = (0..rows * t)
                .map(|i| if i == 0 { -(lim - 1).max(1) } else { rng.random_range(-lim..lim) })
                .collect();
            let mut fast = vec![vec![1u64; n]; rows];
            let mut slow = vec![vec![2u64; n]; rows];
            {
                let mut f: Vec<&mut [u64]> = fast.iter_mut().map(Vec::as_mut_slice).collect();
                scalar_matmul(&m, &xs, &ks, &mut f).unwrap();
                let mut s: Vec<&mut [u64]> = slow.iter_mut().map(Vec::as_mut_slice).collect();
                scalar_matmul_reference(&m, &xs, &ks, &mut s);
            }
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn tensor_sum_matches_reference(
            bits in prop::sample::select(vec![20u32, 29, 41, 42, 50]),
            n in 1usize..300,
            t in 0usize..7,
            seed in any::<u64>(),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let q = (1u64 << (bits - 1)) + 1 + 2 * rng.random_range(0..(1u64 << (bits - 3)));
            let m = Modulus::new(q).unwrap();
            let data: Vec<Vec<u64>> = (0..4 * t)
                .map(|i| if i == 0 { vec![q - 1; n] } else { residues(q, n, &mut rng) })
                .collect();
            let terms: Vec<TensorTerm<'_>> = data
                .chunks(4)
                .map(|c| [c[0].as_slice(), &c[1], &c[2], &c[3]])
                .collect();
            let (mut f0, mut f1, mut f2) = (vec![5; n], vec![5; n], vec![5; n]);
            let (mut s0, mut s1, mut s2) = (vec![0; n], vec![0; n], vec![0; n]);
            tensor_sum(&m, &terms, [&mut f0, &mut f1, &mut f2]).unwrap();
            tensor_sum_reference(&m, &terms, [&mut s0, &mut s1, &mut s2]);
            prop_assert_eq!((f0, f1, f2), (s0, s1, s2));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn plain_matmul_matches_reference(
            bits in prop::sample::select(vec![20u32, 29, 41, 42, 50]),
            n in 1usize..300,
            t in 0usize..9,
            rows in 1usize..4,
            seed in any::<u64>(),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let q = (1u64 << (bits - 1)) + 1 + 2 * rng.random_range(0..(1u64 << (bits - 3)));
            let m = Modulus::new(q).unwrap();
            let data: Vec<Vec<u64>> = (0..t)
                .map(|i| if i == 0 { vec![q - 1; n] } else { residues(q, n, &mut rng) })
                .collect();
            let xs: Vec<&[u64]> = data.iter().map(Vec::as_slice).collect();
            let plains: Vec<Vec<u64>> = (0..rows * t)
                .map(|i| if i == 0 { vec![q - 1; n] } else { residues(q, n, &mut rng) })
                .collect();
            let ps: Vec<Option<&[u64]>> = plains
                .iter()
                .enumerate()
                .map(|(i, p)| (i % 3 != 2).then_some(p.as_slice()))
                .collect();
            let mut fast = vec![vec![1u64; n]; rows];
            let mut slow = vec![vec![2u64; n]; rows];
            {
                let mut f: Vec<&mut [u64]> = fast.iter_mut().map(Vec::as_mut_slice).collect();
                plain_matmul(&m, &xs, &ps, &mut f).unwrap();
                let mut s: Vec<&mut [u64]> = slow.iter_mut().map(Vec::as_mut_slice).collect();
                plain_matmul_reference(&m, &xs, &ps, &mut s);
            }
            prop_assert_eq!(fast, slow);
        }
    }

    #[test]
    fn shared_tensor_sums_match_single_sums() {
        let mut rng = StdRng::seed_from_u64(9);
        // Lengths: a multiple of the block, a partial last block, not a multiple of 4; terms
        // enough (at q − 1, the largest residue) for the small kernels to carry.
        for (bits, n) in [
            (41u32, 100usize),
            (42, 36),
            (29, 64),
            (30, 36),
            (30, 34),
            (50, 40),
        ] {
            let q = (1u64 << (bits - 1)) + 1 + 2 * rng.random_range(0..(1u64 << (bits - 3)));
            let m = Modulus::new(q).unwrap();
            let terms = 40;
            let data: Vec<Vec<u64>> = (0..2 * terms + 2 * 7)
                .map(|i| {
                    if i % 5 == 0 {
                        vec![q - 1; n]
                    } else {
                        residues(q, n, &mut rng)
                    }
                })
                .collect();
            let lhs: Vec<[&[u64]; 2]> = (0..terms)
                .map(|t| [data[2 * t].as_slice(), &data[2 * t + 1]])
                .collect();
            let pool: Vec<[&[u64]; 2]> = (terms..terms + 7)
                .map(|t| [data[2 * t].as_slice(), &data[2 * t + 1]])
                .collect();
            let rhs: Vec<Vec<Option<[&[u64]; 2]>>> = (0..3)
                .map(|j| {
                    (0..terms)
                        .map(|t| (t + j) % 3 != 0 || j == 2)
                        .map(|on| on.then(|| pool[rng.random_range(0..7)]))
                        .collect()
                })
                .collect();
            let mut got = vec![[vec![7u64; n], vec![7; n], vec![7; n]]; 3];
            {
                let mut outs: Vec<[&mut [u64]; 3]> = got
                    .iter_mut()
                    .map(|[a, b, c]| [a.as_mut_slice(), b.as_mut_slice(), c.as_mut_slice()])
                    .collect();
                tensor_sums_shared(&m, &lhs, &rhs, &mut outs).unwrap();
            }
            for (row, [g0, g1, g2]) in rhs.iter().zip(&got) {
                let terms: Vec<TensorTerm<'_>> = lhs
                    .iter()
                    .zip(row)
                    .filter_map(|(l, r)| r.map(|r| [l[0], l[1], r[0], r[1]]))
                    .collect();
                let (mut s0, mut s1, mut s2) = (vec![0; n], vec![0; n], vec![0; n]);
                tensor_sum_reference(&m, &terms, [&mut s0, &mut s1, &mut s2]);
                assert_eq!((g0, g1, g2), (&s0, &s1, &s2));
            }
        }
    }

    #[test]
    fn plain_dot_products_match_single_products() {
        let mut rng = StdRng::seed_from_u64(11);
        // Lengths: multiples of 8 and of 4 only (the two vector widths), and not of 4.
        for (bits, n) in [
            (41u32, 200usize),
            (42, 36),
            (29, 64),
            (30, 36),
            (30, 33),
            (41, 30),
            (50, 40),
        ] {
            let q = (1u64 << (bits - 1)) + 1 + 2 * rng.random_range(0..(1u64 << (bits - 3)));
            let m = Modulus::new(q).unwrap();
            let data: Vec<Vec<u64>> = (0..2 * 5 + 4)
                .map(|i| {
                    if i < 2 {
                        vec![q - 1; n]
                    } else {
                        residues(q, n, &mut rng)
                    }
                })
                .collect();
            let xs: Vec<[&[u64]; 2]> = (0..5)
                .map(|i| [&data[2 * i][..], &data[2 * i + 1][..]])
                .collect();
            let ps: Vec<&[u64]> = (10..14).map(|i| data[i].as_slice()).collect();
            // Many terms (repeats included) so that the sums carry and flush; then each
            // plaintext read once (the vector kernel reads those in place, not gathered).
            for terms in [
                vec![
                    (0..300).map(|k| ((k % 5) as u32, (k % 4) as u32)).collect(),
                    vec![],
                    vec![(4, 0), (0, 3)],
                ],
                vec![vec![(0, 0)], vec![(1, 1), (4, 2)], vec![(0, 3)]],
            ] {
                let refs: Vec<&PlainTerms> = terms.iter().map(Vec::as_slice).collect();
                let mut got = vec![[vec![9u64; n], vec![9; n]]; 3];
                {
                    let mut outs: Vec<[&mut [u64]; 2]> = got
                        .iter_mut()
                        .map(|[a, b]| [a.as_mut_slice(), b.as_mut_slice()])
                        .collect();
                    plain_dot_products(&m, &xs, &ps, &refs, &mut outs).unwrap();
                }
                for (t, [g0, g1]) in terms.iter().zip(&got) {
                    let (mut w0, mut w1) = (vec![0u64; n], vec![0u64; n]);
                    for &(i, l) in t {
                        for c in 0..n {
                            w0[c] = m.add(w0[c], m.mul(xs[i as usize][0][c], ps[l as usize][c]));
                            w1[c] = m.add(w1[c], m.mul(xs[i as usize][1][c], ps[l as usize][c]));
                        }
                    }
                    assert_eq!((g0, g1), (&w0, &w1), "{bits} bits");
                }
            }
            let bad: Vec<(u32, u32)> = vec![(5, 0)];
            let mut o = [vec![0u64; n], vec![0; n]];
            let [a, b] = &mut o;
            assert!(plain_dot_products(&m, &xs, &ps, &[&bad], &mut [[a, b]]).is_err());
        }
    }

    #[test]
    fn small_moduli_carry_long_sums_exactly() {
        // The largest residues of a 30-bit modulus force a carry every few terms.
        let q = (1u64 << 30) - 35;
        let m = Modulus::new(q).unwrap();
        assert!(m.bits() <= MAX_SMALL_BITS);
        let mut rng = StdRng::seed_from_u64(4);
        let n = 70;
        let data: Vec<Vec<u64>> = (0..80)
            .map(|i| {
                if i % 2 == 0 {
                    vec![q - 1; n]
                } else {
                    residues(q, n, &mut rng)
                }
            })
            .collect();
        let xs: Vec<&[u64]> = data[..40].iter().map(Vec::as_slice).collect();
        let ps: Vec<Option<&[u64]>> = data[40..].iter().map(|p| Some(p.as_slice())).collect();
        let (mut fast, mut slow) = (vec![0u64; n], vec![0u64; n]);
        plain_matmul(&m, &xs, &ps, &mut [&mut fast]).unwrap();
        plain_matmul_reference(&m, &xs, &ps, &mut [&mut slow]);
        assert_eq!(fast, slow);
        let lhs: Vec<[&[u64]; 2]> = data[..40]
            .chunks(2)
            .map(|c| [&c[0][..], &c[1][..]])
            .collect();
        let row: Vec<Option<[&[u64]; 2]>> = data[40..]
            .chunks(2)
            .map(|c| Some([&c[0][..], &c[1][..]]))
            .collect();
        let mut got = [vec![0u64; n], vec![0; n], vec![0; n]];
        {
            let [a, b, c] = &mut got;
            tensor_sums_shared(&m, &lhs, std::slice::from_ref(&row), &mut [[a, b, c]]).unwrap();
        }
        let terms: Vec<TensorTerm<'_>> = lhs
            .iter()
            .zip(&row)
            .filter_map(|(l, r)| r.map(|r| [l[0], l[1], r[0], r[1]]))
            .collect();
        let (mut s0, mut s1, mut s2) = (vec![0; n], vec![0; n], vec![0; n]);
        tensor_sum_reference(&m, &terms, [&mut s0, &mut s1, &mut s2]);
        assert_eq!(got, [s0, s1, s2]);
    }

    #[test]
    fn long_sums_flush_without_overflow() {
        // Weights near 2^31 force a flush every 2^10 terms.
        let q = (1u64 << 41) + 1 + 2 * 12_345;
        let m = Modulus::new(q).unwrap();
        let x = vec![q - 1; 16];
        let xs: Vec<&[u64]> = (0..3000).map(|_| x.as_slice()).collect();
        let ks = vec![(1i64 << 31) - 1; 3000];
        let mut fast = vec![0u64; 16];
        let mut slow = vec![0u64; 16];
        scalar_matmul(&m, &xs, &ks, &mut [&mut fast]).unwrap();
        scalar_matmul_reference(&m, &xs, &ks, &mut [&mut slow]);
        assert_eq!(fast, slow);
    }

    #[test]
    fn shape_errors() {
        let m = Modulus::new(97).unwrap();
        let x = vec![1u64; 4];
        let mut out = vec![0u64; 3];
        assert!(scalar_matmul(&m, &[&x], &[1], &mut [&mut out]).is_err());
        assert!(scalar_matmul(&m, &[&x], &[1, 2], &mut [&mut out[..]]).is_err());
        let (mut a, mut b, mut c) = (vec![0; 4], vec![0; 4], vec![0; 3]);
        assert!(tensor_sum(&m, &[[&x, &x, &x, &x]], [&mut a, &mut b, &mut c]).is_err());
        assert!(plain_matmul(&m, &[&x], &[Some(&x[..3])], &mut [&mut a]).is_err());
        assert!(plain_matmul(&m, &[&x], &[], &mut [&mut a]).is_err());
    }
}
