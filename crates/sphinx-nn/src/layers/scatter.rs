//! The 2-D scattering transform: a fixed, data-independent feature extractor.
//!
//! A scattering network (Mallat 2012; Bruna & Mallat 2013; Oyallon & Mallat 2015)
//! cascades wavelet convolutions and complex moduli, then averages with a Gaussian
//! low-pass `φ_J`. With `J` scales and `L` angles, for each input channel `x`:
//!
//! ```text
//! S0 x                 = x ⋆ φ_J
//! S1 x (j1, θ1)        = |x ⋆ ψ_{j1,θ1}| ⋆ φ_J                          0 ≤ j1 < J
//! S2 x (j1, θ1, j2, θ2) = ||x ⋆ ψ_{j1,θ1}| ⋆ ψ_{j2,θ2}| ⋆ φ_J           j1 < j2 < J
//! ```
//!
//! each sampled every `2^J` pixels: `K = 1 + J·L + L²·J(J−1)/2` channels of
//! `H/2^J × W/2^J` (81 channels of 7×7 for `J = 2`, `L = 8` on 28×28 images). The
//! features are stable to small deformations and, for shifts by multiples of `2^J`,
//! exactly translation covariant; Tramèr & Boneh (ICLR 2021) show that a linear model on
//! them trains far better under DP-SGD than an end-to-end CNN, because nothing of the
//! feature extractor has to be learned from noisy gradients.
//!
//! # Filters
//! `ψ_{j,θ}` is a Morlet wavelet: a Gabor function `G(u)·e^{i ξ_j ⟨u, e_θ⟩}` minus the
//! multiple of its envelope `G` that gives it zero mean, with `e_θ = (cos θ, sin θ)`,
//! `θ = ℓπ/L`, centre frequency `ξ_j = (3π/4)/2^j`, and an elliptic Gaussian envelope of
//! width `σ_j = 0.8·2^j` along `e_θ` and `σ_j/s` across it (slant `s = 4/L`, so
//! elongated across the oscillation for `L = 8`). `φ_J` is an isotropic Gaussian of
//! width `0.8·2^J` with unit sum. These are the usual choices of the literature
//! (Bruna & Mallat 2013 and the Kymatio package); both filters are symmetric
//! (`ψ(−u) = conj ψ(u)`), so their Fourier transforms are real.
//!
//! # Computation
//! Each image is zero-padded by `2^J` pixels on every side (so the circular convolutions
//! of the FFT barely wrap around: Fashion-MNIST and MNIST backgrounds are zero anyway)
//! and transformed with a mixed-radix FFT. Every convolution is a product in the
//! Fourier domain; subsampling by `2^k` is done there too, by averaging the `4^k`
//! aliased copies of the spectrum, and a filter applied to a signal already subsampled
//! by `2^k` is the alias *sum* of its spectrum (the transform of `4^k·f(2^k u)`, the
//! Riemann-sum approximation of the full-resolution filter), as in the multi-resolution
//! algorithm of Bruna & Mallat. `|x ⋆ ψ_{j}|` is computed at resolution `2^j`.
//!
//! The layer has no parameters and no backward pass: it is meant as the first stage of
//! a model (a fixed feature map, which training computes once per dataset), and
//! [`crate::model::ModelSpec::shapes`] refuses it after a trainable layer.

use std::f64::consts::PI;
use std::ops::{Add, Mul, Sub};
use std::sync::Arc;

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use super::{Nonlinear, Shape, check_cols, chunk_rows};
use crate::error::{NnError, Result, shape_err};

/// Largest number of scales accepted (`2^J` pixels per output cell).
pub const MAX_SCALES: usize = 5;
/// Largest number of angles accepted.
pub const MAX_ANGLES: usize = 16;

/// Width of the finest wavelet's envelope, in pixels.
const SIGMA0: f64 = 0.8;
/// Centre frequency of the finest wavelet, in radians per pixel.
const XI0: f64 = 0.75 * PI;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Cpx {
    re: f32,
    im: f32,
}

impl Cpx {
    const ZERO: Self = Self { re: 0.0, im: 0.0 };

    fn conj(self) -> Self {
        Self {
            re: self.re,
            im: -self.im,
        }
    }

    fn scale(self, s: f32) -> Self {
        Self {
            re: self.re * s,
            im: self.im * s,
        }
    }

    fn abs(self) -> f32 {
        // No overflow risk at these magnitudes, and much faster than `hypot`.
        (self.re * self.re + self.im * self.im).sqrt()
    }
}

impl Add for Cpx {
    type Output = Self;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Self {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }
}

impl Sub for Cpx {
    type Output = Self;
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Self {
            re: self.re - o.re,
            im: self.im - o.im,
        }
    }
}

impl Mul for Cpx {
    type Output = Self;
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Self {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }
}

/// A mixed-radix decimation-in-time FFT of one length (unnormalized forward transform),
/// with hard-coded butterflies for radices 2, 3 and 4 and a direct DFT for others.
#[derive(Debug, Clone)]
struct Fft {
    /// One entry per recursion depth.
    stages: Vec<Stage>,
}

#[derive(Debug, Clone)]
struct Stage {
    radix: usize,
    /// `W_n^{s·k}` at index `k·radix + s`, for the node size `n` of this depth.
    twiddles: Vec<Cpx>,
    /// `W_radix^{j}` for the direct DFT of radices without a hard-coded butterfly.
    roots: Vec<Cpx>,
}

fn unit_root(k: usize, n: usize) -> Cpx {
    let a = -2.0 * PI * k as f64 / n as f64;
    Cpx {
        re: a.cos() as f32,
        im: a.sin() as f32,
    }
}

/// Largest radix handled in place (a larger prime factor of the length is split off as
/// one stage with a direct DFT of that many points, allocated per call).
const MAX_RADIX: usize = 8;

impl Fft {
    fn new(n: usize) -> Self {
        let mut radices = Vec::new();
        let mut m = n.max(1);
        for p in [4, 2, 3, 5, 7] {
            while m.is_multiple_of(p) {
                radices.push(p);
                m /= p;
            }
        }
        if m > 1 {
            radices.push(m);
        }
        let mut size = n.max(1);
        let stages = radices
            .into_iter()
            .map(|p| {
                let sub = size / p;
                let twiddles = (0..sub)
                    .flat_map(|k| (0..p).map(move |s| (k, s)))
                    .map(|(k, s)| unit_root(s * k, size))
                    .collect();
                let roots = (0..p).map(|j| unit_root(j, p)).collect();
                size = sub;
                Stage {
                    radix: p,
                    twiddles,
                    roots,
                }
            })
            .collect();
        Self { stages }
    }

    /// `out[k] = Σ_t x[t·stride]·e^{−2πi kt/n}` for `k < n = out.len()`.
    fn run(&self, x: &[Cpx], stride: usize, out: &mut [Cpx]) {
        self.node(0, x, stride, out);
    }

    fn node(&self, depth: usize, x: &[Cpx], stride: usize, out: &mut [Cpx]) {
        let Some(stage) = self.stages.get(depth) else {
            out[0] = x[0];
            return;
        };
        let p = stage.radix;
        let m = out.len() / p;
        if p > MAX_RADIX {
            let y: Vec<Cpx> = (0..out.len()).map(|t| x[t * stride]).collect();
            let n = y.len();
            for (k, o) in out.iter_mut().enumerate() {
                let mut acc = Cpx::ZERO;
                for (t, &v) in y.iter().enumerate() {
                    acc = acc + v * unit_root((k * t) % n, n);
                }
                *o = acc;
            }
            return;
        }
        let mut y = [Cpx::ZERO; MAX_RADIX];
        if m == 1 {
            for (s, v) in y.iter_mut().take(p).enumerate() {
                *v = x[s * stride];
            }
            butterfly(stage, &mut y[..p]);
            for (o, &v) in out.iter_mut().zip(&y) {
                *o = v;
            }
            return;
        }
        for (s, chunk) in out.chunks_exact_mut(m).enumerate() {
            self.node(depth + 1, &x[s * stride..], stride * p, chunk);
        }
        // X[k + r·m] = Σ_s W_p^{s·r} · (W_n^{s·k} · Y_s[k]).
        for k in 0..m {
            let tw = &stage.twiddles[k * p..(k + 1) * p];
            y[0] = out[k];
            for s in 1..p {
                y[s] = out[s * m + k] * tw[s];
            }
            butterfly(stage, &mut y[..p]);
            for (r, &v) in y.iter().take(p).enumerate() {
                out[k + r * m] = v;
            }
        }
    }
}

/// `y[r] ← Σ_s y[s]·W_p^{s·r}` in place, `p = y.len()`.
#[inline(always)]
fn butterfly(stage: &Stage, y: &mut [Cpx]) {
    // −i·z
    let rot = |z: Cpx| Cpx {
        re: z.im,
        im: -z.re,
    };
    match *y {
        [a, b] => {
            y[0] = a + b;
            y[1] = a - b;
        }
        [a, b, d] => {
            let half = 0.5f32;
            let sin = 0.866_025_4_f32; // √3/2
            let sum = b + d;
            let mid = a - sum.scale(half);
            let t = rot((b - d).scale(sin));
            y[0] = a + sum;
            y[1] = mid + t;
            y[2] = mid - t;
        }
        [a, b, c, d] => {
            let (t0, t1) = (a + c, a - c);
            let (t2, t3) = (b + d, rot(b - d));
            y[0] = t0 + t2;
            y[1] = t1 + t3;
            y[2] = t0 - t2;
            y[3] = t1 - t3;
        }
        _ => {
            let p = y.len();
            let mut src = [Cpx::ZERO; MAX_RADIX];
            src[..p].copy_from_slice(y);
            for (r, o) in y.iter_mut().enumerate() {
                let mut acc = Cpx::ZERO;
                for (s, &v) in src.iter().take(p).enumerate() {
                    acc = acc + v * stage.roots[(s * r) % p];
                }
                *o = acc;
            }
        }
    }
}

/// FFTs and filter spectra at one resolution (the padded grid subsampled by `2^r`).
#[derive(Debug, Clone)]
struct Level {
    h: usize,
    w: usize,
    fft_h: Fft,
    fft_w: Fft,
    /// Spectrum of `φ_J` at this resolution (real), `h·w` values.
    phi: Vec<f32>,
    /// Spectra of `ψ_{j,θ}` (index `j·L + θ`), at this resolution.
    psi: Vec<Vec<f32>>,
}

impl Level {
    /// 2-D transform in place (`inverse`: unnormalized inverse, the caller scales).
    fn fft2(&self, data: &mut [Cpx], inverse: bool, tmp: &mut Vec<Cpx>) {
        let (h, w) = (self.h, self.w);
        tmp.resize(h.max(w), Cpx::ZERO);
        if inverse {
            data.iter_mut().for_each(|v| *v = v.conj());
        }
        for row in data.chunks_exact_mut(w) {
            self.fft_w.run(row, 1, &mut tmp[..w]);
            for (d, &v) in row.iter_mut().zip(tmp.iter()) {
                *d = v;
            }
        }
        for c in 0..w {
            self.fft_h.run(&data[c..], w, &mut tmp[..h]);
            for (r, &v) in tmp[..h].iter().enumerate() {
                data[r * w + c] = v;
            }
        }
        if inverse {
            data.iter_mut().for_each(|v| *v = v.conj());
        }
    }
}

/// Everything the transform precomputes for one input shape.
struct Plan {
    scales: usize,
    angles: usize,
    /// Levels `0..=J`.
    levels: Vec<Level>,
    /// Padding on each side at full resolution (`2^J`).
    pad: usize,
}

impl std::fmt::Debug for Plan {
    // The filter tables are thousands of numbers: leave them out of model dumps.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("scales", &self.scales)
            .field("angles", &self.angles)
            .field("pad", &self.pad)
            .finish_non_exhaustive()
    }
}

/// Alias sum of a spectrum of `h × w` down to `(h/f) × (w/f)`.
fn fold(src: &[f32], h: usize, w: usize, f: usize) -> Vec<f32> {
    let (hs, ws) = (h / f, w / f);
    let mut out = vec![0.0f32; hs * ws];
    for (y, row) in src.chunks_exact(w).enumerate() {
        for (x, &v) in row.iter().enumerate() {
            out[(y % hs) * ws + x % ws] += v;
        }
    }
    out
}

/// The 2-D FFT of `f = (re, im)` sampled on the periodic `h × w` grid (summed over nearby
/// periods so that wide envelopes wrap around correctly), for functions with
/// `f(−u) = conj f(u)`, whose transform is real: only the real part is kept.
fn spectrum(f: impl Fn(f64, f64) -> (f64, f64), level: &Level) -> Vec<f32> {
    let (h, w) = (level.h, level.w);
    let mut data = vec![Cpx::ZERO; h * w];
    for y in 0..h {
        for x in 0..w {
            let (mut re, mut im) = (0.0, 0.0);
            for py in -2i64..=2 {
                for px in -2i64..=2 {
                    let u = y as f64 + (py * h as i64) as f64;
                    let v = x as f64 + (px * w as i64) as f64;
                    let (a, b) = f(u, v);
                    re += a;
                    im += b;
                }
            }
            data[y * w + x] = Cpx {
                re: re as f32,
                im: im as f32,
            };
        }
    }
    let mut tmp = Vec::new();
    level.fft2(&mut data, false, &mut tmp);
    data.iter().map(|c| c.re).collect()
}

impl Plan {
    fn new(height: usize, width: usize, scales: usize, angles: usize) -> Self {
        let pad = 1usize << scales;
        let (ph, pw) = (height + 2 * pad, width + 2 * pad);
        let level_at = |r: usize| Level {
            h: ph >> r,
            w: pw >> r,
            fft_h: Fft::new(ph >> r),
            fft_w: Fft::new(pw >> r),
            phi: Vec::new(),
            psi: Vec::new(),
        };
        let mut base = level_at(0);
        // Low-pass: Gaussian of width 0.8·2^J, scaled to unit sum (φ̂(0) = 1).
        let sigma_phi = SIGMA0 * f64::from(1u32 << scales);
        let gauss = |y: f64, x: f64| (-(y * y + x * x) / (2.0 * sigma_phi * sigma_phi)).exp();
        let phi = spectrum(|y, x| (gauss(y, x), 0.0), &base);
        let dc = phi.first().copied().unwrap_or(1.0);
        base.phi = phi.iter().map(|v| v / dc).collect();
        let slant = 4.0 / angles as f64;
        for j in 0..scales {
            let sigma = SIGMA0 * f64::from(1u32 << j);
            let xi = XI0 / f64::from(1u32 << j);
            for l in 0..angles {
                let theta = l as f64 * PI / angles as f64;
                let (c, s) = (theta.cos(), theta.sin());
                // Envelope: variance σ² along e_θ, σ²/s² across it; unit integral.
                let norm = slant / (2.0 * PI * sigma * sigma);
                let env = |y: f64, x: f64| {
                    let along = x * c + y * s;
                    let across = -x * s + y * c;
                    norm * (-(along * along + slant * slant * across * across)
                        / (2.0 * sigma * sigma))
                        .exp()
                };
                let wave = |y: f64, x: f64| xi * (x * c + y * s);
                let gabor = spectrum(
                    |y, x| {
                        let (e, a) = (env(y, x), wave(y, x));
                        (e * a.cos(), e * a.sin())
                    },
                    &base,
                );
                let envelope = spectrum(|y, x| (env(y, x), 0.0), &base);
                // Zero mean: subtract κ·G with κ = Σ gabor / Σ G (the DC terms).
                let kappa = gabor[0] / envelope[0];
                base.psi.push(
                    gabor
                        .iter()
                        .zip(&envelope)
                        .map(|(g, e)| g - kappa * e)
                        .collect(),
                );
            }
        }
        let mut levels = Vec::with_capacity(scales + 1);
        for r in 1..=scales {
            let mut level = level_at(r);
            let f = 1usize << r;
            level.phi = fold(&base.phi, base.h, base.w, f);
            level.psi = base
                .psi
                .iter()
                .map(|p| fold(p, base.h, base.w, f))
                .collect();
            levels.push(level);
        }
        levels.insert(0, base);
        Self {
            scales,
            angles,
            levels,
            pad,
        }
    }

    /// Output channels per input channel.
    fn channels(&self) -> usize {
        let (j, l) = (self.scales, self.angles);
        1 + j * l + l * l * j * (j.saturating_sub(1)) / 2
    }

    /// Multiplies a spectrum at level `from` by `filter` and subsamples the product to
    /// level `to` (alias mean), into `dst`.
    fn filter_down(&self, src: &[Cpx], filter: &[f32], from: usize, to: usize, dst: &mut Vec<Cpx>) {
        let w = self.levels[from].w;
        let (hs, ws) = (self.levels[to].h, self.levels[to].w);
        let f = 1usize << (to - from);
        dst.clear();
        dst.resize(hs * ws, Cpx::ZERO);
        for (y, (row, frow)) in src.chunks_exact(w).zip(filter.chunks_exact(w)).enumerate() {
            let drow = &mut dst[(y % hs) * ws..(y % hs + 1) * ws];
            for (block, fblock) in row.chunks_exact(ws).zip(frow.chunks_exact(ws)) {
                for ((d, &v), &g) in drow.iter_mut().zip(block).zip(fblock) {
                    *d = *d + v.scale(g);
                }
            }
        }
        let norm = 1.0 / (f * f) as f32;
        dst.iter_mut().for_each(|v| *v = v.scale(norm));
    }

    /// Replaces the spectrum `a` (at `level`) by the spectrum of `|IFFT a| + i·|IFFT b|`
    /// (`0` for a missing `b`): two real signals packed in one complex one, which the
    /// real low-pass filter keeps apart (real and imaginary parts of [`Self::average`]).
    fn modulus_spectrum(
        &self,
        a: &mut [Cpx],
        b: Option<&mut [Cpx]>,
        level: usize,
        tmp: &mut Vec<Cpx>,
    ) {
        let lv = &self.levels[level];
        let inv = 1.0 / (lv.h * lv.w) as f32;
        lv.fft2(a, true, tmp);
        match b {
            Some(b) => {
                lv.fft2(b, true, tmp);
                for (u, v) in a.iter_mut().zip(b.iter()) {
                    *u = Cpx {
                        re: u.abs() * inv,
                        im: v.abs() * inv,
                    };
                }
            }
            None => a.iter_mut().for_each(|u| {
                *u = Cpx {
                    re: u.abs() * inv,
                    im: 0.0,
                };
            }),
        }
        lv.fft2(a, false, tmp);
    }

    /// Low-passes a spectrum at `level`, subsamples to `2^J` and writes the cropped real
    /// part to output channel `re` and the imaginary part to channel `im` (if any).
    fn average(
        &self,
        src: &[Cpx],
        level: usize,
        out: &mut [f32],
        re: usize,
        im: Option<usize>,
        ws: &mut Workspace,
    ) {
        self.filter_down(
            src,
            &self.levels[level].phi,
            level,
            self.scales,
            &mut ws.low,
        );
        let top = &self.levels[self.scales];
        top.fft2(&mut ws.low, true, &mut ws.tmp);
        let inv = 1.0 / (top.h * top.w) as f32;
        let ow = top.w - 2;
        let cell = (top.h - 2) * ow;
        for y in 0..top.h - 2 {
            let row = &ws.low[(y + 1) * top.w + 1..(y + 1) * top.w + 1 + ow];
            let dst = &mut out[re * cell + y * ow..re * cell + (y + 1) * ow];
            for (o, v) in dst.iter_mut().zip(row) {
                *o = v.re * inv;
            }
            if let Some(c) = im {
                let dst = &mut out[c * cell + y * ow..c * cell + (y + 1) * ow];
                for (o, v) in dst.iter_mut().zip(row) {
                    *o = v.im * inv;
                }
            }
        }
    }

    /// The `K` channels of one `height × width` channel into `out` (`K·(H/2^J)·(W/2^J)`):
    /// `S0`, then `S1` by `(j1, θ1)`, then `S2` by `(j1, θ1, j2, θ2)`.
    fn transform(&self, x: &[f32], width: usize, out: &mut [f32], ws: &mut Workspace) {
        let base = &self.levels[0];
        let (jmax, l) = (self.scales, self.angles);
        let mut xhat = std::mem::take(&mut ws.xhat);
        xhat.clear();
        xhat.resize(base.h * base.w, Cpx::ZERO);
        for (y, row) in x.chunks_exact(width).enumerate() {
            let dst = &mut xhat[(y + self.pad) * base.w + self.pad..];
            for (d, &v) in dst.iter_mut().zip(row) {
                *d = Cpx { re: v, im: 0.0 };
            }
        }
        base.fft2(&mut xhat, false, &mut ws.tmp);
        self.average(&xhat, 0, out, 0, None, ws);
        let (mut ua, mut ub) = (std::mem::take(&mut ws.ua), std::mem::take(&mut ws.ub));
        let mut second = 1 + jmax * l;
        for j1 in 0..jmax {
            if j1 + 1 == jmax {
                // Last scale: no second order, so angles go through the low-pass in pairs.
                for t1 in (0..l).step_by(2) {
                    self.filter_down(&xhat, &base.psi[j1 * l + t1], 0, j1, &mut ua);
                    let pair = t1 + 1 < l;
                    if pair {
                        self.filter_down(&xhat, &base.psi[j1 * l + t1 + 1], 0, j1, &mut ub);
                    }
                    self.modulus_spectrum(&mut ua, pair.then_some(&mut ub[..]), j1, &mut ws.tmp);
                    let c = 1 + j1 * l + t1;
                    self.average(&ua, j1, out, c, pair.then_some(c + 1), ws);
                }
                continue;
            }
            for t1 in 0..l {
                let mut u1 = std::mem::take(&mut ws.u1);
                self.filter_down(&xhat, &base.psi[j1 * l + t1], 0, j1, &mut u1);
                self.modulus_spectrum(&mut u1, None, j1, &mut ws.tmp);
                self.average(&u1, j1, out, 1 + j1 * l + t1, None, ws);
                for j2 in j1 + 1..jmax {
                    let filters = &self.levels[j1].psi;
                    for t2 in (0..l).step_by(2) {
                        self.filter_down(&u1, &filters[j2 * l + t2], j1, j2, &mut ua);
                        let pair = t2 + 1 < l;
                        if pair {
                            self.filter_down(&u1, &filters[j2 * l + t2 + 1], j1, j2, &mut ub);
                        }
                        self.modulus_spectrum(
                            &mut ua,
                            pair.then_some(&mut ub[..]),
                            j2,
                            &mut ws.tmp,
                        );
                        let c = second + t2;
                        self.average(&ua, j2, out, c, pair.then_some(c + 1), ws);
                    }
                    second += l;
                }
                ws.u1 = u1;
            }
        }
        (ws.xhat, ws.ua, ws.ub) = (xhat, ua, ub);
    }
}

/// Scratch buffers of one worker.
#[derive(Default)]
struct Workspace {
    xhat: Vec<Cpx>,
    u1: Vec<Cpx>,
    ua: Vec<Cpx>,
    ub: Vec<Cpx>,
    low: Vec<Cpx>,
    tmp: Vec<Cpx>,
}

/// The scattering transform of every channel, `J` scales and `L` angles (module docs).
#[derive(Debug, Clone)]
pub struct Scattering {
    input: Shape,
    output: Shape,
    plan: Arc<Plan>,
}

impl Scattering {
    /// A transform for inputs of shape `input`.
    ///
    /// # Errors
    /// [`NnError::Architecture`] unless `1 ≤ scales ≤` [`MAX_SCALES`],
    /// `1 ≤ angles ≤` [`MAX_ANGLES`], the input is non-empty and both sides are
    /// multiples of `2^scales`.
    pub fn new(input: Shape, scales: usize, angles: usize) -> Result<Self> {
        let output = output_shape(input, scales, angles)?;
        Ok(Self {
            input,
            output,
            plan: Arc::new(Plan::new(input.height, input.width, scales, angles)),
        })
    }

    /// Number of scales `J`.
    pub fn scales(&self) -> usize {
        self.plan.scales
    }

    /// Number of angles `L`.
    pub fn angles(&self) -> usize {
        self.plan.angles
    }

    /// Input shape of one sample.
    pub fn input_shape(&self) -> Shape {
        self.input
    }

    /// Output shape of one sample: `C·K × H/2^J × W/2^J`.
    pub fn output_shape(&self) -> Shape {
        self.output
    }
}

/// Output shape of a scattering transform (see [`Scattering::new`] for the errors).
pub(crate) fn output_shape(input: Shape, scales: usize, angles: usize) -> Result<Shape> {
    if !(1..=MAX_SCALES).contains(&scales) || !(1..=MAX_ANGLES).contains(&angles) {
        return Err(NnError::Architecture(format!(
            "scattering: scales must be in 1..={MAX_SCALES} and angles in 1..={MAX_ANGLES}, \
             got {scales} and {angles}"
        )));
    }
    let f = 1usize << scales;
    if input.is_empty() || !input.height.is_multiple_of(f) || !input.width.is_multiple_of(f) {
        return Err(NnError::Architecture(format!(
            "scattering with {scales} scales needs image sides that are multiples of {f}, \
             got {input}"
        )));
    }
    let k = 1 + scales * angles + angles * angles * scales * (scales - 1) / 2;
    Ok(Shape::image(
        input.channels * k,
        input.height / f,
        input.width / f,
    ))
}

impl Nonlinear for Scattering {
    fn in_dim(&self) -> usize {
        self.input.len()
    }

    fn out_dim(&self) -> usize {
        self.output.len()
    }

    fn forward(&self, input: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_cols("Scattering::forward", &input, self.input.len())?;
        let input = input.as_standard_layout();
        let xs = input
            .as_slice()
            .ok_or_else(|| shape_err("Scattering::forward", "contiguous", "strided"))?;
        let (din, dout) = (self.input.len(), self.output.len());
        let batch = input.nrows();
        let plane = self.input.height * self.input.width;
        let per_channel = self.plan.channels() * self.output.height * self.output.width;
        let mut out = vec![0.0f32; batch * dout];
        let rows = chunk_rows(batch);
        out.par_chunks_mut(dout * rows)
            .zip(xs.par_chunks(din * rows))
            .for_each(|(os, xs)| {
                let mut ws = Workspace::default();
                for (o, x) in os.chunks_exact_mut(dout).zip(xs.chunks_exact(din)) {
                    for (oc, xc) in o.chunks_exact_mut(per_channel).zip(x.chunks_exact(plane)) {
                        self.plan.transform(xc, self.input.width, oc, &mut ws);
                    }
                }
            });
        Array2::from_shape_vec((batch, dout), out)
            .map_err(|e| shape_err("Scattering::forward", "output", e))
    }

    /// Not available: the transform is a fixed front end (module docs).
    ///
    /// # Errors
    /// Always [`NnError::Architecture`].
    fn backward(
        &self,
        _input: ArrayView2<'_, f32>,
        _grad_out: ArrayView2<'_, f32>,
    ) -> Result<Array2<f32>> {
        Err(NnError::Architecture(
            "scattering has no backward pass: it must come before every trainable layer".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_dft(x: &[Cpx]) -> Vec<Cpx> {
        let n = x.len();
        (0..n)
            .map(|k| {
                let (mut re, mut im) = (0.0f64, 0.0f64);
                for (t, v) in x.iter().enumerate() {
                    let a = -2.0 * PI * (k * t) as f64 / n as f64;
                    re += f64::from(v.re) * a.cos() - f64::from(v.im) * a.sin();
                    im += f64::from(v.re) * a.sin() + f64::from(v.im) * a.cos();
                }
                Cpx {
                    re: re as f32,
                    im: im as f32,
                }
            })
            .collect()
    }

    #[test]
    fn fft_matches_naive_dft() {
        for n in [1, 2, 3, 8, 9, 18, 36, 40, 22, 13, 44] {
            let x: Vec<Cpx> = (0..n)
                .map(|i| Cpx {
                    re: ((i * 7 + 3) % 11) as f32 - 5.0,
                    im: ((i * 5 + 1) % 7) as f32 - 3.0,
                })
                .collect();
            let mut out = vec![Cpx::ZERO; n];
            Fft::new(n).run(&x, 1, &mut out);
            for (a, b) in out.iter().zip(naive_dft(&x)) {
                assert!(
                    (a.re - b.re).abs() < 1e-3 && (a.im - b.im).abs() < 1e-3,
                    "n = {n}"
                );
            }
        }
    }

    #[test]
    fn filters_have_the_intended_moments() {
        let plan = Plan::new(28, 28, 2, 8);
        let base = &plan.levels[0];
        assert!((base.phi[0] - 1.0).abs() < 1e-6);
        for psi in &base.psi {
            assert!(psi[0].abs() < 1e-5, "wavelets have zero mean");
        }
        // Each coarser level holds the alias sum: same DC gain.
        for level in &plan.levels[1..] {
            assert!((level.phi[0] - 1.0).abs() < 1e-4);
        }
    }
}
