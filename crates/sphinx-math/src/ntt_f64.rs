//! Negacyclic NTT for primes below `2^50` in double precision (AVX2 + FMA), lazily reduced.
//!
//! Without AVX-512 an x86 vector unit has no 64×64-bit multiply, so an integer Shoup butterfly
//! spends most of its instructions emulating one from 32-bit products. Integers up to `2^53`
//! are exact in an `f64`, and a fused multiply-add gives the exact product `a·w` as a sum of
//! two doubles (`h = a·w` rounded, `l = fma(a, w, −h)`). With the quotient estimated as
//! `k = round(a · (w·(1/q)))` (`w·(1/q)` does not depend on the data, so `k` waits for one
//! product, not two), the remainder `(h − k·q) + l` is computed exactly (both steps are
//! exact: each result is an integer of at most 53 bits) and is a *centered* representative of
//! `a·w mod q`: about `(−q/2, q/2)`. Six vector operations give four products. The same
//! products, with `k = round(h·(1/q))` where both factors vary, give the inner products of
//! key switching (`dot_product_pair`): summed unreduced, one reduction per output.
//!
//! The transform is the textbook Cooley–Tukey (forward) / Gentleman–Sande (inverse) pair with
//! twiddles `ψ^{brev(k)}`, which is the ordering of [`tfhe_ntt`] (position `i` holds the
//! evaluation at `ψ^{2·brev(i)+1}`): with the same `ψ` both compute the same map, and
//! [`crate::NttPlan`] uses this one for its small primes when the CPU has AVX2 and FMA.
//!
//! # Lazy reduction, and why it is exact
//! Between stages the values are signed integers held as `f64` (bits in the caller's `u64`
//! buffer), congruent to the true ones modulo `q` but not reduced: a butterfly is one modular
//! product and a plain add and subtract, with no comparison or correction. Every value is an
//! exact integer as long as each intermediate stays within `2^53` in magnitude, so the result,
//! brought to `[0, q)` once at the end, is *the* residue: bit for bit what tfhe-ntt computes.
//!
//! When a plan is built, a worst-case bound `B` on `|x|` is carried through every stage
//! (with `u = 2^-53` the unit roundoff, and twiddles in `[0, q)`):
//! - a product of `|a| ≤ B` by a twiddle: `k` is the rounding of `a·w/q·(1 + ε)` with
//!   `|ε| ≤ 3u` (three roundings: `1/q`, `w·(1/q)` and `a` times that; or, where both
//!   factors vary, `h`, `1/q` and their product), so
//!   `|a·w − k·q| ≤ q·(1/2 + 3u·B)`; the intermediate `h − k·q` is off by at most
//!   `|l| ≤ u·B·q`, and both must stay within `2^53`;
//! - a centered reduction `x − round(x·(1/q))·q` of `|x| ≤ B`: `≤ q/2 + 2u·B`;
//! - a sum or difference of two values: the sum of their bounds, within `2^53`.
//!
//! The forward butterfly `(u + w·v, u − w·v)` adds about `q/2` per stage; the inverse one
//! `(u + v, w·(u − v))` doubles the sums. Wherever the next bound would pass `2^52` the plan
//! reduces the unmultiplied operand of that stage (three more operations on one of two
//! outputs), which leaves room for one more stage below `2^53`. For a 40-bit prime at
//! `N = 8192` this never happens: the forward bound ends near `7.5·q`, the inverse sums reach
//! `2^52` only in the last stage, whose products then need one reduction each before the final
//! correction. For primes near `2^50`, where the quotient estimate itself loses precision
//! (`3u·B` is then several units), the schedule reduces every few stages.
//! The plan refuses (and [`crate::NttPlan`] keeps tfhe-ntt's integer transform) if any
//! constraint could not be met; it is met for every prime below `2^50` and every supported
//! degree (tested).
//!
//! The last forward stage reduces its outputs to `[0, q)`: where the plan's bound is below
//! `2^50`, in three operations (`x − ⌊(x + 1/2)/q⌋·q`, exact there: `Kernel::canon_floor`),
//! otherwise a centered reduction, then adding `q` to negatives. The last inverse stage
//! folds in `1/n` as a product, which is already centered, and corrects it the same way.
//!
//! # Passes over memory
//! Stages run two at a time (radix 4: four vectors loaded, two butterfly layers, four
//! stored), so `N = 8192` takes six passes instead of thirteen. The three stages on blocks
//! shorter than two vectors run in one pass with the data shuffled in registers, four blocks
//! interleaved (one block alone is a long dependency chain). Stages whose blocks fit in 16 KiB
//! finish chunk by chunk, depth first, while the chunk is in L1. At `N = 8192` a 40-bit
//! forward transform takes about 21 µs here, against 50 µs for the eager version it replaced
//! and 51 µs for tfhe-ntt's integer transform of a 60-bit prime (`cargo bench -p sphinx-math
//! --bench ntt -- N=8192`).

use pulp::x86::V3;
use std::arch::x86_64::__m256d;

/// Primes must be below `2^MAX_BITS`.
const MAX_BITS: u32 = 50;

const TWO52: f64 = 4_503_599_627_370_496.0;
const TWO53: f64 = 9_007_199_254_740_992.0;
const EXP52: u64 = 0x4330_0000_0000_0000;
const MASK52: u64 = (1 << 52) - 1;
/// Unit roundoff of `f64`.
const UNIT: f64 = 1.0 / TWO53;
/// A stage whose outputs could exceed this reduces first, so the next stage's sums (at most
/// twice this, or this plus one product) stay exact.
const SOFT: f64 = TWO52;

/// Elements per chunk that the inner stages finish before moving on (16 KiB: half of L1).
const CHUNK: usize = 2048;

/// Blocks of eight that the register-only stages interleave.
const TAIL: usize = 4;

/// Runs `$body` with `$b` bound to the forward butterfly, reducing or not.
macro_rules! with_ct {
    ($red:expr, $b:ident => $body:expr) => {
        if $red {
            let $b = Ct::<true>;
            $body
        } else {
            let $b = Ct::<false>;
            $body
        }
    };
}

/// Runs `$body` with `$b` bound to the inverse butterfly, reducing or not.
macro_rules! with_gs {
    ($red:expr, $b:ident => $body:expr) => {
        if $red {
            let $b = Gs::<true>;
            $body
        } else {
            let $b = Gs::<false>;
            $body
        }
    };
}

/// Runs `$body` with `$b` bound to the last inverse butterfly.
macro_rules! with_gs_last {
    ($red:expr, $n_inv:expr, $b:ident => $body:expr) => {
        if $red {
            let $b = GsLast::<true> {
                n_inv: $n_inv.0,
                floor: $n_inv.1,
            };
            $body
        } else {
            let $b = GsLast::<false> {
                n_inv: $n_inv.0,
                floor: $n_inv.1,
            };
            $body
        }
    };
}

/// Worst-case `|a·w − k·q|` of a lazy product with `|a| ≤ b`, `0 ≤ w < q` (rounded up, with
/// slack for the rounding of this very computation).
fn mul_bound(q: f64, b: f64) -> f64 {
    (q * (0.5 + 3.001 * UNIT * b)).ceil() + 2.0
}

/// The product's intermediate `h − k·q` must be exact as well.
fn mul_exact(q: f64, b: f64) -> bool {
    mul_bound(q, b) + b * q * UNIT * 1.001 + 2.0 <= TWO53
}

/// Worst-case `|x − round(x/q)·q|` of a centered reduction of `|x| ≤ b`.
fn reduce_bound(q: f64, b: f64) -> f64 {
    (q * 0.5 + 2.001 * UNIT * b).ceil() + 2.0
}

/// Twiddles of one stage: one per block, except for `t = 2` (blocks shorter than a vector),
/// where each is repeated for the two lanes of its block.
struct Stage {
    w: Vec<f64>,
    /// Reduce the operand that is not multiplied (forward: the input `u`; inverse: the sum).
    reduce: bool,
}

/// Twiddle tables and reduction schedule of one prime for both directions.
pub(crate) struct F64Ntt {
    simd: V3,
    n: usize,
    q: f64,
    q_inv: f64,
    /// `fwd[s]`: stage `s` of the forward transform (`m = 2^s` blocks of `2t`, `t = n/2m`).
    fwd: Vec<Stage>,
    /// `inv[s]`: stage `s` of the inverse (`n / 2^(s+1)` blocks, `t = 2^s`); the last one's
    /// twiddle carries `1/n`.
    inv: Vec<Stage>,
    n_inv: f64,
    /// The last inverse products may reach `q` in magnitude (large primes only) and take a
    /// centered reduction before the final correction.
    inv_last_reduce: bool,
    /// Whether the forward outputs and the last inverse products are small enough for
    /// [`Kernel::canon_floor`].
    floor: (bool, bool),
}

fn stage(twiddles: &[u64], t: usize, reduce: bool) -> Stage {
    let w: Vec<u64> = match t {
        2 => twiddles.iter().flat_map(|&w| [w, w]).collect(),
        _ => twiddles.to_vec(),
    };
    Stage {
        w: w.iter().map(|&x| x as f64).collect(),
        reduce,
    }
}

/// Largest bound on `|x|` for which [`Kernel::canon_floor`] is exact (see there).
const FLOOR_MAX: f64 = TWO52 / 4.0;

/// Reduction schedule of the forward transform for `log_n` stages, and whether its outputs
/// may take the cheaper final reduction; `None` if some stage cannot be kept exact.
fn forward_schedule(q: f64, log_n: u32) -> Option<(Vec<bool>, bool)> {
    let mut b = q - 1.0;
    let mut flags = Vec::with_capacity(log_n as usize);
    for s in 0..log_n {
        let last = s + 1 == log_n;
        let m = mul_bound(q, b);
        // The last stage reduces its outputs instead.
        let reduce = !last && b + m > SOFT;
        let bu = if reduce { reduce_bound(q, b) } else { b };
        let out = bu + m;
        if !mul_exact(q, b) || out > TWO53 || (reduce && reduce_bound(q, b) > TWO53) {
            return None;
        }
        if last && reduce_bound(q, out) >= q {
            return None;
        }
        flags.push(reduce);
        b = out;
    }
    Some((flags, b + 1.0 <= FLOOR_MAX))
}

/// Reduction schedule of the inverse transform (flags per stage, whether the last products
/// need a reduction before the final correction, and whether it may be the cheaper one).
fn inverse_schedule(q: f64, log_n: u32) -> Option<(Vec<bool>, bool, bool)> {
    let mut b = q - 1.0;
    let mut flags = Vec::with_capacity(log_n as usize);
    for s in 0..log_n {
        let sum = 2.0 * b;
        if sum > TWO53 || !mul_exact(q, sum) {
            return None;
        }
        let m = mul_bound(q, sum);
        if s + 1 == log_n {
            // Both outputs are products (by `1/n` and by `w/n`).
            let last_reduce = m >= q;
            if last_reduce && reduce_bound(q, m) >= q {
                return None;
            }
            flags.push(false);
            return Some((flags, last_reduce, m + 1.0 <= FLOOR_MAX));
        }
        let reduce = sum > SOFT;
        let bu = if reduce { reduce_bound(q, sum) } else { sum };
        flags.push(reduce);
        b = bu.max(m);
    }
    None
}

impl F64Ntt {
    /// Tables for `n` and a prime `q < 2^50` with `psi` a primitive `2n`-th root of unity and
    /// `n_inv = 1/n mod q`; `mul` multiplies modulo `q`. `None` if `q` is too large, `n < 16`,
    /// the CPU lacks AVX2 and FMA, or the bounds above cannot be kept.
    pub(crate) fn new(
        n: usize,
        q: u64,
        psi: u64,
        n_inv: u64,
        mul: impl Fn(u64, u64) -> u64,
    ) -> Option<Self> {
        if q >= 1 << MAX_BITS || n < 16 || !n.is_power_of_two() {
            return None;
        }
        let simd = V3::try_new()?;
        let log_n = n.trailing_zeros();
        let qf = q as f64;
        let (fwd_flags, fwd_floor) = forward_schedule(qf, log_n)?;
        let (inv_flags, inv_last_reduce, inv_floor) = inverse_schedule(qf, log_n)?;
        let pow = |base: u64, mut e: u64| {
            let (mut acc, mut b) = (1u64, base);
            while e > 0 {
                if e & 1 == 1 {
                    acc = mul(acc, b);
                }
                b = mul(b, b);
                e >>= 1;
            }
            acc
        };
        let brev = |k: usize| u64::from((k as u32).reverse_bits() >> (32 - log_n));
        let psi_inv = pow(psi, 2 * n as u64 - 1);
        let fwd_tw: Vec<u64> = (0..n).map(|k| pow(psi, brev(k))).collect();
        let mut inv_tw: Vec<u64> = (0..n).map(|k| pow(psi_inv, brev(k))).collect();
        inv_tw[1] = mul(inv_tw[1], n_inv);
        let fwd = (0..log_n as usize)
            .map(|s| {
                let m = 1 << s;
                stage(&fwd_tw[m..2 * m], n / (2 * m), fwd_flags[s])
            })
            .collect();
        let inv = (0..log_n as usize)
            .map(|s| {
                let h = n >> (s + 1);
                stage(&inv_tw[h..2 * h], 1 << s, inv_flags[s])
            })
            .collect();
        Some(Self {
            simd,
            n,
            q: qf,
            q_inv: 1.0 / qf,
            fwd,
            inv,
            n_inv: n_inv as f64,
            inv_last_reduce,
            floor: (fwd_floor, inv_floor),
        })
    }

    /// Forward transform in place (coefficients in `[0, q)`, length `n`).
    pub(crate) fn forward(&self, a: &mut [u64]) {
        self.simd.vectorize(Run {
            plan: self,
            a,
            dir: Dir::Fwd,
        });
    }

    /// Inverse transform in place, `1/n` included.
    pub(crate) fn inverse(&self, a: &mut [u64]) {
        self.simd.vectorize(Run {
            plan: self,
            a,
            dir: Dir::Inv,
        });
    }

    /// `out0 = Σ_j xs[j]·ys0[j]`, `out1 = Σ_j xs[j]·ys1[j]` modulo `q`, every input reduced
    /// and every slice of length `n` (checked by the caller). With `mod_down = Some((subs,
    /// w))` the outputs are not overwritten but take `out_k += (Σ_k − subs[k])·w` instead.
    ///
    /// Each product is a centered representative (`|·| ≤ M(q)` of the module docs, about
    /// `q/2`), summed lazily; the sum is reduced every `sum_terms` terms, so it stays below
    /// `2^52`. The optional difference and product are lazy as well (`|Σ − sub| ≤ 2^52 + q`
    /// within the bounds of one product), and the result is reduced once at the end.
    pub(crate) fn dot_product_pair(
        &self,
        (out0, out1): (&mut [u64], &mut [u64]),
        xs: &[&[u64]],
        (ys0, ys1): (&[&[u64]], &[&[u64]]),
        mod_down: Option<([&[u64]; 2], u64)>,
    ) {
        let dot = Dot {
            plan: self,
            out: [out0, out1],
            xs,
            ys: [ys0, ys1],
        };
        match mod_down {
            None => self.simd.vectorize(DotRun::<false> {
                dot,
                subs: [&[], &[]],
                w: 0.0,
            }),
            Some((subs, w)) => self.simd.vectorize(DotRun::<true> {
                dot,
                subs,
                w: w as f64,
            }),
        }
    }
}

/// Products of reduced inputs `|a|, |b| < q` summed before one reduction: how many terms fit
/// below `2^52` (at least one: `M(q) < q` for `q < 2^50`).
fn sum_terms(q: f64) -> usize {
    ((SOFT / mul_bound(q, q)).floor() as usize).max(1)
}

/// The operands of [`F64Ntt::dot_product_pair`].
struct Dot<'a> {
    plan: &'a F64Ntt,
    out: [&'a mut [u64]; 2],
    xs: &'a [&'a [u64]],
    ys: [&'a [&'a [u64]]; 2],
}

/// A [`F64Ntt::dot_product_pair`] call inside the AVX2 + FMA context, with the mod-down
/// (`MOD_DOWN`) or without.
struct DotRun<'a, const MOD_DOWN: bool> {
    dot: Dot<'a>,
    subs: [&'a [u64]; 2],
    w: f64,
}

impl<const MOD_DOWN: bool> pulp::NullaryFnOnce for DotRun<'_, MOD_DOWN> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        fn view<'a>(s: &[&'a [u64]]) -> Vec<&'a [V]> {
            s.iter().map(|x| pulp::as_arrays::<4, u64>(x).0).collect()
        }
        let Dot { plan, out, xs, ys } = self.dot;
        let k = Kernel::new(plan.simd, plan.q, plan.q_inv);
        let avx = k.simd.avx;
        let every = sum_terms(plan.q);
        let (xs, ys0, ys1) = (view(xs), view(ys[0]), view(ys[1]));
        let [out0, out1] = out;
        let out0 = pulp::as_arrays_mut::<4, u64>(out0).0;
        let out1 = pulp::as_arrays_mut::<4, u64>(out1).0;
        let (sub0, sub1) = (
            pulp::as_arrays::<4, u64>(self.subs[0]).0,
            pulp::as_arrays::<4, u64>(self.subs[1]).0,
        );
        let w = k.splat(self.w);
        for (c, (o0, o1)) in out0.iter_mut().zip(out1.iter_mut()).enumerate() {
            let (mut s0, mut s1) = (k.zero, k.zero);
            let mut terms = 0;
            for ((x, y0), y1) in xs.iter().zip(&ys0).zip(&ys1) {
                if terms >= every {
                    (s0, s1) = (k.reduce(s0), k.reduce(s1));
                    terms = 1;
                }
                terms += 1;
                let x = k.load_int(&x[c]);
                s0 = avx._mm256_add_pd(s0, k.mul_var(x, k.load_int(&y0[c])));
                s1 = avx._mm256_add_pd(s1, k.mul_var(x, k.load_int(&y1[c])));
            }
            if MOD_DOWN {
                let t0 = k.mul(avx._mm256_sub_pd(s0, k.load_int(&sub0[c])), w);
                let t1 = k.mul(avx._mm256_sub_pd(s1, k.load_int(&sub1[c])), w);
                s0 = avx._mm256_add_pd(k.load_int(o0), t0);
                s1 = avx._mm256_add_pd(k.load_int(o1), t1);
            }
            (*o0, *o1) = (k.store_int(k.canon(s0)), k.store_int(k.canon(s1)));
        }
    }
}

/// One transform, run inside the AVX2 + FMA context (a named type with an always-inlined
/// `call`, so every intrinsic below is inlined into that context).
struct Run<'a> {
    plan: &'a F64Ntt,
    a: &'a mut [u64],
    dir: Dir,
}

impl pulp::NullaryFnOnce for Run<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let k = Kernel::new(self.plan.simd, self.plan.q, self.plan.q_inv);
        match self.dir {
            Dir::Fwd => k.forward(self.plan, self.a),
            Dir::Inv => k.inverse(self.plan, self.a),
        }
    }
}

#[derive(Clone, Copy)]
struct Kernel {
    simd: V3,
    q: __m256d,
    q_inv: __m256d,
    half_q_inv: __m256d,
    zero: __m256d,
}

type V = [u64; 4];

/// A butterfly of one stage (the stage loops are generic over it, so each kind of stage is
/// compiled without branches).
trait Butterfly: Copy {
    fn apply(self, k: Kernel, u: __m256d, v: __m256d, w: __m256d) -> (__m256d, __m256d);
}

/// Cooley–Tukey `(u + w·v, u − w·v)`, `u` reduced first if `RED`.
#[derive(Clone, Copy)]
struct Ct<const RED: bool>;

impl<const RED: bool> Butterfly for Ct<RED> {
    #[inline(always)]
    fn apply(self, k: Kernel, u: __m256d, v: __m256d, w: __m256d) -> (__m256d, __m256d) {
        let avx = k.simd.avx;
        let t = k.mul(v, w);
        let u = if RED { k.reduce(u) } else { u };
        (avx._mm256_add_pd(u, t), avx._mm256_sub_pd(u, t))
    }
}

/// Gentleman–Sande `(u + v, w·(u − v))`, the sum reduced if `RED`.
#[derive(Clone, Copy)]
struct Gs<const RED: bool>;

impl<const RED: bool> Butterfly for Gs<RED> {
    #[inline(always)]
    fn apply(self, k: Kernel, u: __m256d, v: __m256d, w: __m256d) -> (__m256d, __m256d) {
        let avx = k.simd.avx;
        let s = avx._mm256_add_pd(u, v);
        let s = if RED { k.reduce(s) } else { s };
        (s, k.mul(avx._mm256_sub_pd(u, v), w))
    }
}

/// The last inverse stage: `(u + v)/n` and `w·(u − v)` (`w` carries `1/n`), brought to
/// `[0, q)`.
#[derive(Clone, Copy)]
struct GsLast<const RED: bool> {
    n_inv: __m256d,
    floor: bool,
}

impl<const RED: bool> Butterfly for GsLast<RED> {
    #[inline(always)]
    fn apply(self, k: Kernel, u: __m256d, v: __m256d, w: __m256d) -> (__m256d, __m256d) {
        let avx = k.simd.avx;
        let s = k.mul(avx._mm256_add_pd(u, v), self.n_inv);
        let d = k.mul(avx._mm256_sub_pd(u, v), w);
        if RED {
            (k.canon_if(self.floor, s), k.canon_if(self.floor, d))
        } else {
            (k.fix(s), k.fix(d))
        }
    }
}

impl Kernel {
    #[inline(always)]
    fn new(simd: V3, q: f64, q_inv: f64) -> Self {
        Self {
            simd,
            q: simd.avx._mm256_set1_pd(q),
            q_inv: simd.avx._mm256_set1_pd(q_inv),
            half_q_inv: simd.avx._mm256_set1_pd(q_inv * 0.5),
            zero: simd.avx._mm256_setzero_pd(),
        }
    }

    #[inline(always)]
    fn splat(self, x: f64) -> __m256d {
        self.simd.avx._mm256_set1_pd(x)
    }

    /// `r + q` where `r < 0`: `(−q, q)` to `[0, q)`.
    #[inline(always)]
    fn fix(self, r: __m256d) -> __m256d {
        let avx = self.simd.avx;
        let neg = avx._mm256_cmp_pd::<1>(r, self.zero); // _CMP_LT_OS
        avx._mm256_add_pd(r, avx._mm256_and_pd(neg, self.q))
    }

    /// Centered reduction `x − round(x/q)·q` (see the module docs for its bound).
    #[inline(always)]
    fn reduce(self, x: __m256d) -> __m256d {
        let (avx, fma) = (self.simd.avx, self.simd.fma);
        let k = avx._mm256_round_pd::<8>(avx._mm256_mul_pd(x, self.q_inv)); // nearest, no exceptions
        fma._mm256_fnmadd_pd(k, self.q, x)
    }

    /// To `[0, q)`.
    #[inline(always)]
    fn canon(self, x: __m256d) -> __m256d {
        self.fix(self.reduce(x))
    }

    /// To `[0, q)` in three operations, for `|x| < 2^50` (`FLOOR_MAX`): `x − k·q` with
    /// `k = ⌊(x + 1/2)/q⌋`, evaluated as `⌊fma(x, 1/q, 1/(2q))⌋`. With `x = k·q + r`,
    /// `0 ≤ r < q`, the exact quotient is `k + (r + 1/2)/q`, at least `1/(2q)` away from an
    /// integer, and the computed one is off by at most `2.0001u·(|x| + 1)/q < 1/(2q)`
    /// (two roundings, `1/q` and the fused product), so the floor is exactly `k`.
    #[inline(always)]
    fn canon_floor(self, x: __m256d) -> __m256d {
        let (avx, fma) = (self.simd.avx, self.simd.fma);
        let k = avx._mm256_floor_pd(fma._mm256_fmadd_pd(x, self.q_inv, self.half_q_inv));
        fma._mm256_fnmadd_pd(k, self.q, x)
    }

    /// To `[0, q)` by [`Self::canon_floor`] where the plan's bound allows it (`floor`),
    /// else by [`Self::canon`].
    #[inline(always)]
    fn canon_if(self, floor: bool, x: __m256d) -> __m256d {
        if floor {
            self.canon_floor(x)
        } else {
            self.canon(x)
        }
    }

    /// A centered representative of `a·w mod q` (see the module docs for its bound).
    #[inline(always)]
    fn mul(self, a: __m256d, w: __m256d) -> __m256d {
        let (avx, fma) = (self.simd.avx, self.simd.fma);
        let h = avx._mm256_mul_pd(a, w);
        let l = fma._mm256_fmsub_pd(a, w, h);
        // `w/q` does not depend on the data (hoisted out of loops with one twiddle per block),
        // so `k` waits for one product, not two.
        let wq = avx._mm256_mul_pd(w, self.q_inv);
        let k = avx._mm256_round_pd::<8>(avx._mm256_mul_pd(a, wq));
        let r = fma._mm256_fnmadd_pd(k, self.q, h);
        avx._mm256_add_pd(r, l)
    }

    /// As [`Self::mul`] with both factors varying (`k` from the rounded product instead).
    #[inline(always)]
    fn mul_var(self, a: __m256d, b: __m256d) -> __m256d {
        let (avx, fma) = (self.simd.avx, self.simd.fma);
        let h = avx._mm256_mul_pd(a, b);
        let l = fma._mm256_fmsub_pd(a, b, h);
        let k = avx._mm256_round_pd::<8>(avx._mm256_mul_pd(h, self.q_inv));
        let r = fma._mm256_fnmadd_pd(k, self.q, h);
        avx._mm256_add_pd(r, l)
    }

    #[inline(always)]
    fn load(self, x: &V) -> __m256d {
        pulp::cast(*x)
    }

    #[inline(always)]
    fn load_int(self, x: &V) -> __m256d {
        // Exact for x < 2^52: the integer sits in the mantissa of 2^52 + x.
        let avx = self.simd.avx;
        let biased: __m256d = pulp::cast(x.map(|v| v | EXP52));
        avx._mm256_sub_pd(biased, self.splat(TWO52))
    }

    /// `x` in `[0, q)`.
    #[inline(always)]
    fn store_int(self, x: __m256d) -> V {
        let v: V = pulp::cast(self.simd.avx._mm256_add_pd(x, self.splat(TWO52)));
        v.map(|b| b & MASK52)
    }

    /// One stage with blocks of `t ≥ 8` coefficients (`t4 = t/4` vectors); `INT_IN`/`INT_OUT`
    /// convert from/to integers on the way.
    #[inline(always)]
    fn wide_stage<B: Butterfly, const INT_IN: bool, const INT_OUT: bool>(
        self,
        a: &mut [V],
        t4: usize,
        w: &[f64],
        bf: B,
    ) {
        for (c, &w) in a.chunks_exact_mut(2 * t4).zip(w) {
            let w = self.splat(w);
            let (lo, hi) = c.split_at_mut(t4);
            for (x, y) in lo.iter_mut().zip(hi.iter_mut()) {
                let (u, v) = if INT_IN {
                    (self.load_int(x), self.load_int(y))
                } else {
                    (self.load(x), self.load(y))
                };
                let (u, v) = bf.apply(self, u, v, w);
                if INT_OUT {
                    (*x, *y) = (self.store_int(u), self.store_int(v));
                } else {
                    (*x, *y) = (pulp::cast(u), pulp::cast(v));
                }
            }
        }
    }

    /// The forward stages with `t = 4, 2, 1` in one pass: each pair of vectors is a block of
    /// eight, shuffled in registers between stages, then brought to `[0, q)`. Blocks go four
    /// at a time, interleaved: one block is a long dependency chain.
    #[inline(always)]
    fn forward_tail(self, a: &mut [V], st: [&Stage; 3], e0: usize, floor: bool) {
        let w4 = &st[0].w[e0 / 8..];
        let w2 = pulp::as_arrays::<4, f64>(&st[1].w[e0 / 2..]).0;
        let w1 = pulp::as_arrays::<4, f64>(&st[2].w[e0 / 2..]).0;
        let red = (st[0].reduce, st[1].reduce, floor);
        let mut blocks = a.chunks_exact_mut(2 * TAIL);
        let mut i = 0;
        for c in &mut blocks {
            let w = (&w4[i..i + TAIL], &w2[i..i + TAIL], &w1[i..i + TAIL]);
            self.forward_tail_group::<TAIL>(c, w, red);
            i += TAIL;
        }
        for c in blocks.into_remainder().chunks_exact_mut(2) {
            self.forward_tail_group::<1>(c, (&w4[i..], &w2[i..], &w1[i..]), red);
            i += 1;
        }
    }

    /// `K` blocks of eight (`2K` vectors) through the last three forward stages.
    #[inline(always)]
    fn forward_tail_group<const K: usize>(
        self,
        c: &mut [V],
        (w4, w2, w1): (&[f64], &[[f64; 4]], &[[f64; 4]]),
        (r4, r2, floor): (bool, bool, bool),
    ) {
        let avx = self.simd.avx;
        let mut p = [self.zero; K];
        let mut r = [self.zero; K];
        for i in 0..K {
            (p[i], r[i]) = (self.load(&c[2 * i]), self.load(&c[2 * i + 1]));
        }
        // t = 4: (x0..x3) against (x4..x7).
        for i in 0..K {
            let w = self.splat(w4[i]);
            (p[i], r[i]) = if r4 {
                Ct::<true>.apply(self, p[i], r[i], w)
            } else {
                Ct::<false>.apply(self, p[i], r[i], w)
            };
        }
        // t = 2: (x0, x1, x4, x5) against (x2, x3, x6, x7).
        for i in 0..K {
            let u = avx._mm256_permute2f128_pd::<0x20>(p[i], r[i]);
            let v = avx._mm256_permute2f128_pd::<0x31>(p[i], r[i]);
            let w: __m256d = pulp::cast(w2[i]);
            (p[i], r[i]) = if r2 {
                Ct::<true>.apply(self, u, v, w)
            } else {
                Ct::<false>.apply(self, u, v, w)
            };
        }
        // t = 1: (x0, x2, x4, x6) against (x1, x3, x5, x7), blocks in natural order.
        for i in 0..K {
            let e = avx._mm256_unpacklo_pd(p[i], r[i]);
            let o = avx._mm256_unpackhi_pd(p[i], r[i]);
            let (e, o) = Ct::<false>.apply(self, e, o, pulp::cast(w1[i]));
            (p[i], r[i]) = (self.canon_if(floor, e), self.canon_if(floor, o));
        }
        // Back to (x0..x3), (x4..x7).
        for i in 0..K {
            let u = avx._mm256_unpacklo_pd(p[i], r[i]);
            let v = avx._mm256_unpackhi_pd(p[i], r[i]);
            c[2 * i] = self.store_int(avx._mm256_permute2f128_pd::<0x20>(u, v));
            c[2 * i + 1] = self.store_int(avx._mm256_permute2f128_pd::<0x31>(u, v));
        }
    }

    /// The inverse stages with `t = 1, 2, 4` in one pass (the mirror of `forward_tail`),
    /// converting from integers first.
    #[inline(always)]
    fn inverse_head(self, a: &mut [V], st: [&Stage; 3], e0: usize) {
        let w1 = pulp::as_arrays::<4, f64>(&st[0].w[e0 / 2..]).0;
        let w2 = pulp::as_arrays::<4, f64>(&st[1].w[e0 / 2..]).0;
        let w4 = &st[2].w[e0 / 8..];
        let red = (st[0].reduce, st[1].reduce, st[2].reduce);
        let mut blocks = a.chunks_exact_mut(2 * TAIL);
        let mut i = 0;
        for c in &mut blocks {
            let w = (&w1[i..i + TAIL], &w2[i..i + TAIL], &w4[i..i + TAIL]);
            self.inverse_head_group::<TAIL>(c, w, red);
            i += TAIL;
        }
        for c in blocks.into_remainder().chunks_exact_mut(2) {
            self.inverse_head_group::<1>(c, (&w1[i..], &w2[i..], &w4[i..]), red);
            i += 1;
        }
    }

    /// `K` blocks of eight through the first three inverse stages.
    #[inline(always)]
    fn inverse_head_group<const K: usize>(
        self,
        c: &mut [V],
        (w1, w2, w4): (&[[f64; 4]], &[[f64; 4]], &[f64]),
        (r1, r2, r4): (bool, bool, bool),
    ) {
        let avx = self.simd.avx;
        let mut p = [self.zero; K];
        let mut r = [self.zero; K];
        // t = 1: (x0, x2, x4, x6) against (x1, x3, x5, x7).
        for i in 0..K {
            let (x, y) = (self.load_int(&c[2 * i]), self.load_int(&c[2 * i + 1]));
            let u = avx._mm256_permute2f128_pd::<0x20>(x, y);
            let v = avx._mm256_permute2f128_pd::<0x31>(x, y);
            let e = avx._mm256_unpacklo_pd(u, v);
            let o = avx._mm256_unpackhi_pd(u, v);
            let w: __m256d = pulp::cast(w1[i]);
            (p[i], r[i]) = if r1 {
                Gs::<true>.apply(self, e, o, w)
            } else {
                Gs::<false>.apply(self, e, o, w)
            };
        }
        // t = 2: (x0, x1, x4, x5) against (x2, x3, x6, x7).
        for i in 0..K {
            let u = avx._mm256_unpacklo_pd(p[i], r[i]);
            let v = avx._mm256_unpackhi_pd(p[i], r[i]);
            let w: __m256d = pulp::cast(w2[i]);
            (p[i], r[i]) = if r2 {
                Gs::<true>.apply(self, u, v, w)
            } else {
                Gs::<false>.apply(self, u, v, w)
            };
        }
        // t = 4: (x0..x3) against (x4..x7).
        for i in 0..K {
            let x = avx._mm256_permute2f128_pd::<0x20>(p[i], r[i]);
            let y = avx._mm256_permute2f128_pd::<0x31>(p[i], r[i]);
            let w = self.splat(w4[i]);
            let (x, y) = if r4 {
                Gs::<true>.apply(self, x, y, w)
            } else {
                Gs::<false>.apply(self, x, y, w)
            };
            (c[2 * i], c[2 * i + 1]) = (pulp::cast(x), pulp::cast(y));
        }
    }

    /// Two forward stages in one pass: stage `s` (blocks of `2t`, `t4 = t/4` vectors, twiddles
    /// `w1`) and stage `s + 1` (blocks of `t`, twiddles `w2`), on four vectors at a time.
    #[inline(always)]
    fn forward_pair<B1: Butterfly, B2: Butterfly, const INT_IN: bool>(
        self,
        a: &mut [V],
        t4: usize,
        (w1, w2): (&[f64], &[f64]),
        (b1, b2): (B1, B2),
    ) {
        let h = t4 / 2;
        for ((c, &wa), wb) in a.chunks_exact_mut(2 * t4).zip(w1).zip(w2.chunks_exact(2)) {
            let (wa, wb0, wb1) = (self.splat(wa), self.splat(wb[0]), self.splat(wb[1]));
            let (c01, c23) = c.split_at_mut(t4);
            let (c0, c1) = c01.split_at_mut(h);
            let (c2, c3) = c23.split_at_mut(h);
            for (((x0, x1), x2), x3) in c0.iter_mut().zip(c1).zip(c2).zip(c3) {
                let xs = [&*x0, &*x1, &*x2, &*x3];
                let [y0, y1, y2, y3] = if INT_IN {
                    xs.map(|x| self.load_int(x))
                } else {
                    xs.map(|x| self.load(x))
                };
                let (y0, y2) = b1.apply(self, y0, y2, wa);
                let (y1, y3) = b1.apply(self, y1, y3, wa);
                let (y0, y1) = b2.apply(self, y0, y1, wb0);
                let (y2, y3) = b2.apply(self, y2, y3, wb1);
                (*x0, *x1, *x2, *x3) = (
                    pulp::cast(y0),
                    pulp::cast(y1),
                    pulp::cast(y2),
                    pulp::cast(y3),
                );
            }
        }
    }

    /// Two inverse stages in one pass: stage `s` (blocks of `2t`, `t4 = t/4` vectors,
    /// twiddles `w1`) and stage `s + 1` (blocks of `4t`, twiddles `w2`).
    #[inline(always)]
    fn inverse_pair<B1: Butterfly, B2: Butterfly, const INT_OUT: bool>(
        self,
        a: &mut [V],
        t4: usize,
        (w1, w2): (&[f64], &[f64]),
        (b1, b2): (B1, B2),
    ) {
        for ((c, wa), &wb) in a.chunks_exact_mut(4 * t4).zip(w1.chunks_exact(2)).zip(w2) {
            let (wa0, wa1, wb) = (self.splat(wa[0]), self.splat(wa[1]), self.splat(wb));
            let (c01, c23) = c.split_at_mut(2 * t4);
            let (c0, c1) = c01.split_at_mut(t4);
            let (c2, c3) = c23.split_at_mut(t4);
            for (((x0, x1), x2), x3) in c0.iter_mut().zip(c1).zip(c2).zip(c3) {
                let [y0, y1, y2, y3] = [&*x0, &*x1, &*x2, &*x3].map(|x| self.load(x));
                let (y0, y1) = b1.apply(self, y0, y1, wa0);
                let (y2, y3) = b1.apply(self, y2, y3, wa1);
                let (y0, y2) = b2.apply(self, y0, y2, wb);
                let (y1, y3) = b2.apply(self, y1, y3, wb);
                if INT_OUT {
                    (*x0, *x1, *x2, *x3) = (
                        self.store_int(y0),
                        self.store_int(y1),
                        self.store_int(y2),
                        self.store_int(y3),
                    );
                } else {
                    (*x0, *x1, *x2, *x3) = (
                        pulp::cast(y0),
                        pulp::cast(y1),
                        pulp::cast(y2),
                        pulp::cast(y3),
                    );
                }
            }
        }
    }

    /// Forward stages `from..to` (all with `t ≥ 8`) on `a`, which starts at element `e0` of
    /// the transform: the first alone if their count is odd, the rest in pairs.
    #[inline(always)]
    fn forward_stages(self, plan: &F64Ntt, a: &mut [V], (from, to): (usize, usize), e0: usize) {
        let n = plan.n;
        let mut s = from;
        if (to - from) % 2 == 1 {
            let st = &plan.fwd[s];
            let (t4, w) = (n >> (s + 3), &st.w[e0 * (1 << s) / n..]);
            if s == 0 {
                with_ct!(st.reduce, b => self.wide_stage::<_, true, false>(a, t4, w, b));
            } else {
                with_ct!(st.reduce, b => self.wide_stage::<_, false, false>(a, t4, w, b));
            }
            s += 1;
        }
        while s < to {
            let (st1, st2) = (&plan.fwd[s], &plan.fwd[s + 1]);
            let t4 = n >> (s + 3);
            let w = (&st1.w[e0 * (1 << s) / n..], &st2.w[e0 * (2 << s) / n..]);
            if s == 0 {
                with_ct!(st1.reduce, b1 => with_ct!(st2.reduce, b2 =>
                    self.forward_pair::<_, _, true>(a, t4, w, (b1, b2))));
            } else {
                with_ct!(st1.reduce, b1 => with_ct!(st2.reduce, b2 =>
                    self.forward_pair::<_, _, false>(a, t4, w, (b1, b2))));
            }
            s += 2;
        }
    }

    /// Inverse stages `from..to` (all with `t ≥ 8`) on `a`, which starts at element `e0`: in
    /// pairs, the last alone if their count is odd. The transform's last stage (only ever
    /// run on the whole array) scales by `1/n` and converts back to integers.
    #[inline(always)]
    fn inverse_stages(self, plan: &F64Ntt, a: &mut [V], (from, to): (usize, usize), e0: usize) {
        let last = plan.inv.len() - 1;
        let n_inv = (self.splat(plan.n_inv), plan.floor.1);
        let red = plan.inv_last_reduce;
        let mut s = from;
        while s < to {
            let st1 = &plan.inv[s];
            // Stage s has t = 2^s, blocks of 2t: its twiddles start at block e0 / 2^(s+1).
            let t4 = 1 << (s - 2);
            let w1 = &st1.w[e0 >> (s + 1)..];
            if s + 1 < to {
                let st2 = &plan.inv[s + 1];
                let w = (w1, &st2.w[e0 >> (s + 2)..]);
                if s + 1 == last {
                    with_gs!(st1.reduce, b1 => with_gs_last!(red, n_inv, b2 =>
                        self.inverse_pair::<_, _, true>(a, t4, w, (b1, b2))));
                } else {
                    with_gs!(st1.reduce, b1 => with_gs!(st2.reduce, b2 =>
                        self.inverse_pair::<_, _, false>(a, t4, w, (b1, b2))));
                }
                s += 2;
            } else {
                if s == last {
                    with_gs_last!(red, n_inv, b =>
                        self.wide_stage::<_, false, true>(a, t4, w1, b));
                } else {
                    with_gs!(st1.reduce, b => self.wide_stage::<_, false, false>(a, t4, w1, b));
                }
                s += 1;
            }
        }
    }

    #[inline(always)]
    fn forward(self, plan: &F64Ntt, a: &mut [u64]) {
        let n = a.len();
        let a = pulp::as_arrays_mut::<4, u64>(a).0;
        let stages = plan.fwd.len();
        // Stages whose blocks are longer than a chunk run over the whole array; then each
        // chunk (in L1) takes the rest of its stages, the last three in registers.
        let chunk = n.min(CHUNK);
        let outer = (n / chunk).trailing_zeros() as usize;
        self.forward_stages(plan, a, (0, outer), 0);
        let [.., s4, s2, s1] = &plan.fwd[..] else {
            return;
        };
        for (i, c) in a.chunks_exact_mut(chunk / 4).enumerate() {
            let e0 = i * chunk;
            self.forward_stages(plan, c, (outer, stages - 3), e0);
            let st = [s4, s2, s1];
            self.forward_tail(c, st, e0, plan.floor.0);
        }
    }

    #[inline(always)]
    fn inverse(self, plan: &F64Ntt, a: &mut [u64]) {
        let n = a.len();
        let a = pulp::as_arrays_mut::<4, u64>(a).0;
        let stages = plan.inv.len();
        let chunk = n.min(CHUNK);
        let inner = chunk.trailing_zeros() as usize;
        let [s1, s2, s4, ..] = &plan.inv[..] else {
            return;
        };
        for (i, c) in a.chunks_exact_mut(chunk / 4).enumerate() {
            let e0 = i * chunk;
            self.inverse_head(c, [s1, s2, s4], e0);
            // The transform's last stage is never inside a chunk (n ≥ 2·chunk), or the whole
            // array is one chunk.
            self.inverse_stages(plan, c, (3, inner.min(stages)), e0);
        }
        if inner < stages {
            self.inverse_stages(plan, a, (inner, stages), 0);
        }
    }
}

#[derive(Clone, Copy)]
enum Dir {
    Fwd,
    Inv,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primes::ntt_primes;

    /// The schedule exists for every prime size and degree the plan takes, and the bounds
    /// behave as the module docs say for SEAL's 40-bit primes.
    #[test]
    fn schedules_exist_for_every_size_and_degree() {
        for log_n in 4..=17u32 {
            for bits in [20u32, 30, 35, 40, 41, 45, 48, 49, 50] {
                let top = (1u64 << bits) - 1;
                for q in [top, top - (1 << (bits - 2)), 1 << (bits - 1)] {
                    let qf = q as f64;
                    assert!(
                        forward_schedule(qf, log_n).is_some(),
                        "fwd {bits} bits n=2^{log_n}"
                    );
                    assert!(
                        inverse_schedule(qf, log_n).is_some(),
                        "inv {bits} bits n=2^{log_n}"
                    );
                }
            }
        }
        let q = ntt_primes(&[40], 8192).unwrap()[0] as f64;
        let (fwd, fwd_floor) = forward_schedule(q, 13).unwrap();
        assert!(
            fwd.iter().all(|&r| !r),
            "40-bit forward: no reduction before the end"
        );
        let (inv, last, inv_floor) = inverse_schedule(q, 13).unwrap();
        assert!(
            inv.iter().all(|&r| !r),
            "40-bit inverse: sums reach 2^52 only at the end"
        );
        assert!(last, "so the last products need their reduction");
        assert!(
            fwd_floor && inv_floor,
            "40-bit: the three-operation final reduction"
        );
        let q = ntt_primes(&[50], 8192).unwrap()[0] as f64;
        assert!(forward_schedule(q, 13).unwrap().0.iter().any(|&r| r));
        assert!(inverse_schedule(q, 13).unwrap().0.iter().any(|&r| r));
    }

    /// The bounds are worst cases: feeding the largest magnitudes through the scalar model of
    /// the kernel's arithmetic never leaves them.
    #[test]
    fn product_bound_holds_at_the_extremes() {
        for bits in [40u32, 45, 49, 50] {
            let q = ntt_primes(&[bits], 16).unwrap()[0];
            let qf = q as f64;
            for b in [qf, 8.0 * qf, TWO52, TWO53] {
                if !mul_exact(qf, b) {
                    continue;
                }
                for a in [b, -b, b - 1.0, -(b - 1.0), (b / 3.0).round()] {
                    for w in [q - 1, q / 2, q / 3, 1] {
                        let wf = w as f64;
                        let h = a * wf;
                        let l = a.mul_add(wf, -h);
                        // The transform's quotient `a·(w·(1/q))` and the inner products'
                        // `(a·w)·(1/q)`: three roundings each.
                        let qi = 1.0 / qf;
                        for k in [a * (wf * qi), h * qi].map(f64::round_ties_even) {
                            let r = (-k).mul_add(qf, h) + l;
                            assert!(r.abs() <= mul_bound(qf, b), "{bits} bits a={a} w={w}");
                            let exact = (a as i128) * i128::from(w) - (k as i128) * i128::from(q);
                            assert_eq!(r as i128, exact, "{bits} bits a={a} w={w}");
                        }
                    }
                    let k = (a * (1.0 / qf)).round_ties_even();
                    let r = (-k).mul_add(qf, a);
                    assert!(r.abs() <= reduce_bound(qf, b));
                }
            }
        }
    }

    /// The three-operation final reduction is exact up to its bound, at the points where a
    /// floor is most fragile: multiples of `q` and their neighbours.
    #[test]
    fn floor_reduction_is_exact_below_its_bound() {
        for bits in [20u32, 30, 40, 41, 45, 49, 50] {
            let q = ntt_primes(&[bits], 16).unwrap()[0];
            let (qf, qi) = (q as f64, 1.0 / q as f64);
            let top = (FLOOR_MAX - 1.0) as i64;
            let kmax = top / q as i64;
            let mut xs = vec![top, -top, 0, 1, -1];
            let ks = [1, 2, 3, 7, kmax / 3, kmax - 1, kmax];
            for k in ks.into_iter().filter(|&k| (0..=kmax).contains(&k)) {
                for d in [-1i64, 0, 1] {
                    for sign in [1i64, -1] {
                        let x = sign * (k * q as i64 + d);
                        if x.abs() <= top {
                            xs.push(x);
                        }
                    }
                }
            }
            for x in xs {
                let xf = x as f64;
                let k = xf.mul_add(qi, qi * 0.5).floor();
                let r = (-k).mul_add(qf, xf);
                assert_eq!(r as i64, x.rem_euclid(q as i64), "{bits} bits, x = {x}");
            }
        }
    }
}
