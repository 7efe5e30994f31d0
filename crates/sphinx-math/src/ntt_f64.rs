//! Negacyclic NTT for primes below `2^50` in double precision (AVX2 + FMA).
//!
//! Without AVX-512 an x86 vector unit has no 64×64-bit multiply, so an integer Shoup butterfly
//! spends most of its instructions emulating one from 32-bit products. Residues below `2^50`
//! are exact in an `f64`, and a fused multiply-add gives the exact 100-bit product as a sum of
//! two doubles (`h = a·w` rounded, `l = fma(a, w, −h)`); with the quotient estimated by
//! `round(a · (w / q))` the remainder `h − q̂·q + l` is an exact integer in `(−q, q)` (the
//! estimate is within 0.75 of `a·w/q`). That is seven vector operations per four products.
//!
//! The transform is the textbook Cooley–Tukey (forward) / Gentleman–Sande (inverse) pair with
//! twiddles `ψ^{brev(k)}`, which is the ordering of [`tfhe_ntt`] (position `i` holds the
//! evaluation at `ψ^{2·brev(i)+1}`): with the same `ψ` both compute the same map, bit for bit,
//! and [`crate::NttPlan`] uses this one for its small primes when the CPU has AVX2 and FMA.
//! Values stay reduced to `[0, q)` after every butterfly, held as `f64` bits in the caller's
//! `u64` buffer between stages.

use pulp::x86::V3;
use std::arch::x86_64::__m256d;

/// Primes must be below `2^MAX_BITS`.
const MAX_BITS: u32 = 50;

const TWO52: f64 = 4_503_599_627_370_496.0;
const EXP52: u64 = 0x4330_0000_0000_0000;
const MASK52: u64 = (1 << 52) - 1;

/// Twiddles of one stage: for stages whose blocks are shorter than a vector (`t` = 1, 2), one
/// entry per lane in the order the shuffles put the lanes in; otherwise one per block.
struct Stage {
    w: Vec<f64>,
    wq: Vec<f64>,
}

/// Twiddle tables of one prime for both directions.
pub(crate) struct F64Ntt {
    simd: V3,
    q: f64,
    /// `fwd[s]`: stage `s` of the forward transform (`m = 2^s` blocks).
    fwd: Vec<Stage>,
    /// `inv[s]`: stage `s` of the inverse (`n / 2^(s+1)` blocks), the last one's twiddle
    /// times `1/n`.
    inv: Vec<Stage>,
    n_inv: (f64, f64),
}

/// Lane order of the `t = 1` stage: two vectors `(c0..c3)`, `(c4..c7)` unpack into the
/// pairs `(c0,c1) (c4,c5) (c2,c3) (c6,c7)`, so lanes take blocks 0, 2, 1, 3 of the group.
const T1_ORDER: [usize; 4] = [0, 2, 1, 3];

fn stage(twiddles: &[u64], t: usize, qf: f64) -> Stage {
    let w: Vec<u64> = match t {
        1 => twiddles
            .chunks_exact(4)
            .flat_map(|c| T1_ORDER.map(|i| c[i]))
            .collect(),
        2 => twiddles.iter().flat_map(|&w| [w, w]).collect(),
        _ => twiddles.to_vec(),
    };
    Stage {
        wq: w.iter().map(|&x| x as f64 / qf).collect(),
        w: w.iter().map(|&x| x as f64).collect(),
    }
}

impl F64Ntt {
    /// Tables for `n` and a prime `q < 2^50` with `psi` a primitive `2n`-th root of unity and
    /// `n_inv = 1/n mod q`; `mul` multiplies modulo `q`. `None` if `q` is too large, `n < 16`
    /// or the CPU lacks AVX2 and FMA.
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
                stage(&fwd_tw[m..2 * m], n / (2 * m), qf)
            })
            .collect();
        let inv = (0..log_n as usize)
            .map(|s| {
                let h = n >> (s + 1);
                stage(&inv_tw[h..2 * h], 1 << s, qf)
            })
            .collect();
        Some(Self {
            simd,
            q: qf,
            fwd,
            inv,
            n_inv: (n_inv as f64, n_inv as f64 / qf),
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
        let k = Kernel::new(self.plan.simd, self.plan.q);
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
    zero: __m256d,
}

type V = [u64; 4];

impl Kernel {
    #[inline(always)]
    fn new(simd: V3, q: f64) -> Self {
        Self {
            simd,
            q: simd.avx._mm256_set1_pd(q),
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

    #[inline(always)]
    fn mul(self, a: __m256d, w: __m256d, wq: __m256d) -> __m256d {
        let (avx, fma) = (self.simd.avx, self.simd.fma);
        let h = avx._mm256_mul_pd(a, w);
        let l = fma._mm256_fmsub_pd(a, w, h);
        let q_hat = avx._mm256_round_pd::<8>(avx._mm256_mul_pd(a, wq)); // nearest, no exceptions
        let r = fma._mm256_fnmadd_pd(q_hat, self.q, h);
        self.fix(avx._mm256_add_pd(r, l))
    }

    #[inline(always)]
    fn add(self, a: __m256d, b: __m256d) -> __m256d {
        let avx = self.simd.avx;
        self.fix(avx._mm256_sub_pd(avx._mm256_add_pd(a, b), self.q))
    }

    #[inline(always)]
    fn sub(self, a: __m256d, b: __m256d) -> __m256d {
        self.fix(self.simd.avx._mm256_sub_pd(a, b))
    }

    /// Cooley–Tukey butterfly: `(u + w·v, u − w·v)`.
    #[inline(always)]
    fn ct(self, u: __m256d, v: __m256d, w: __m256d, wq: __m256d) -> (__m256d, __m256d) {
        let v = self.mul(v, w, wq);
        (self.add(u, v), self.sub(u, v))
    }

    /// Gentleman–Sande butterfly: `(u + v, w·(u − v))`.
    #[inline(always)]
    fn gs(self, u: __m256d, v: __m256d, w: __m256d, wq: __m256d) -> (__m256d, __m256d) {
        (self.add(u, v), self.mul(self.sub(u, v), w, wq))
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

    #[inline(always)]
    fn store_int(self, x: __m256d) -> V {
        let v: V = pulp::cast(self.simd.avx._mm256_add_pd(x, self.splat(TWO52)));
        v.map(|b| b & MASK52)
    }

    /// One stage with blocks of `t ≥ 4` coefficients; `int_in`/`int_out` convert from/to
    /// integers on the way (first and last stages).
    #[inline(always)]
    fn wide_stage(self, a: &mut [V], t4: usize, st: &Stage, dir: Dir, io: (bool, bool)) {
        for ((c, &w), &wq) in a.chunks_exact_mut(2 * t4).zip(&st.w).zip(&st.wq) {
            let (w, wq) = (self.splat(w), self.splat(wq));
            let (lo, hi) = c.split_at_mut(t4);
            for (x, y) in lo.iter_mut().zip(hi.iter_mut()) {
                let (u, v) = if io.0 {
                    (self.load_int(x), self.load_int(y))
                } else {
                    (self.load(x), self.load(y))
                };
                let (u, v) = match dir {
                    Dir::Fwd => self.ct(u, v, w, wq),
                    Dir::Inv => self.gs(u, v, w, wq),
                };
                if io.1 {
                    (*x, *y) = (self.store_int(u), self.store_int(v));
                } else {
                    (*x, *y) = (pulp::cast(u), pulp::cast(v));
                }
            }
        }
    }

    /// The `t = 2` stage: each pair of vectors holds two blocks of four.
    #[inline(always)]
    fn stage_t2(self, a: &mut [V], st: &Stage, dir: Dir, io: (bool, bool)) {
        let avx = self.simd.avx;
        let ws = pulp::as_arrays::<4, f64>(&st.w).0;
        let wqs = pulp::as_arrays::<4, f64>(&st.wq).0;
        for ((c, w), wq) in a.chunks_exact_mut(2).zip(ws).zip(wqs) {
            let (p, r) = if io.0 {
                (self.load_int(&c[0]), self.load_int(&c[1]))
            } else {
                (self.load(&c[0]), self.load(&c[1]))
            };
            let u = avx._mm256_permute2f128_pd::<0x20>(p, r);
            let v = avx._mm256_permute2f128_pd::<0x31>(p, r);
            let (w, wq): (__m256d, __m256d) = (pulp::cast(*w), pulp::cast(*wq));
            let (u, v) = match dir {
                Dir::Fwd => self.ct(u, v, w, wq),
                Dir::Inv => self.gs(u, v, w, wq),
            };
            let p = avx._mm256_permute2f128_pd::<0x20>(u, v);
            let r = avx._mm256_permute2f128_pd::<0x31>(u, v);
            if io.1 {
                (c[0], c[1]) = (self.store_int(p), self.store_int(r));
            } else {
                (c[0], c[1]) = (pulp::cast(p), pulp::cast(r));
            }
        }
    }

    /// The `t = 1` stage: each pair of vectors holds four blocks of two.
    #[inline(always)]
    fn stage_t1(self, a: &mut [V], st: &Stage, dir: Dir, io: (bool, bool)) {
        let avx = self.simd.avx;
        let ws = pulp::as_arrays::<4, f64>(&st.w).0;
        let wqs = pulp::as_arrays::<4, f64>(&st.wq).0;
        for ((c, w), wq) in a.chunks_exact_mut(2).zip(ws).zip(wqs) {
            let (p, r) = if io.0 {
                (self.load_int(&c[0]), self.load_int(&c[1]))
            } else {
                (self.load(&c[0]), self.load(&c[1]))
            };
            let u = avx._mm256_unpacklo_pd(p, r);
            let v = avx._mm256_unpackhi_pd(p, r);
            let (w, wq): (__m256d, __m256d) = (pulp::cast(*w), pulp::cast(*wq));
            let (u, v) = match dir {
                Dir::Fwd => self.ct(u, v, w, wq),
                Dir::Inv => self.gs(u, v, w, wq),
            };
            let p = avx._mm256_unpacklo_pd(u, v);
            let r = avx._mm256_unpackhi_pd(u, v);
            if io.1 {
                (c[0], c[1]) = (self.store_int(p), self.store_int(r));
            } else {
                (c[0], c[1]) = (pulp::cast(p), pulp::cast(r));
            }
        }
    }

    #[inline(always)]
    fn run_stage(self, a: &mut [V], t: usize, st: &Stage, dir: Dir, io: (bool, bool)) {
        match t {
            1 => self.stage_t1(a, st, dir, io),
            2 => self.stage_t2(a, st, dir, io),
            _ => self.wide_stage(a, t / 4, st, dir, io),
        }
    }

    #[inline(always)]
    fn forward(self, plan: &F64Ntt, a: &mut [u64]) {
        let n = a.len();
        let a = pulp::as_arrays_mut::<4, u64>(a).0;
        let stages = plan.fwd.len();
        for (s, st) in plan.fwd.iter().enumerate() {
            let t = n >> (s + 1);
            self.run_stage(a, t, st, Dir::Fwd, (s == 0, s + 1 == stages));
        }
    }

    #[inline(always)]
    fn inverse(self, plan: &F64Ntt, a: &mut [u64]) {
        let n = a.len();
        let a = pulp::as_arrays_mut::<4, u64>(a).0;
        for (s, st) in plan.inv.iter().enumerate() {
            // The last stage's upper outputs carry 1/n in the twiddle; the lower half takes
            // it below, with the conversion back to integers.
            self.run_stage(a, 1 << s, st, Dir::Inv, (s == 0, false));
        }
        let (ni, niq) = (self.splat(plan.n_inv.0), self.splat(plan.n_inv.1));
        let (lo, hi) = a.split_at_mut(n / 8);
        for x in lo.iter_mut() {
            *x = self.store_int(self.mul(self.load(x), ni, niq));
        }
        for x in hi.iter_mut() {
            *x = self.store_int(self.load(x));
        }
    }
}

#[derive(Clone, Copy)]
enum Dir {
    Fwd,
    Inv,
}
