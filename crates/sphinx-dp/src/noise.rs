//! Gaussian noise that resists floating-point attacks: an exact discrete Gaussian
//! on a fine lattice.
//!
//! # What is sampled
//! The discrete Gaussian over the integers with variance parameter `S` is
//!
//! ```text
//! P[Y = y] = exp(-y² / 2S) / Σ_{z ∈ ℤ} exp(-z² / 2S),   y ∈ ℤ.
//! ```
//!
//! [`DiscreteGaussian`] draws from it *exactly* with the rejection sampler of
//! Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential Privacy"
//! (NeurIPS 2020, Algorithms 1–3): Bernoulli(exp(−γ)) trials for rational γ built
//! from uniform integer draws, a discrete Laplace proposal with integer scale
//! `t = ⌊√S⌋ + 1`, and an exact accept/reject step. Every quantity is an integer
//! or a ratio of `u128` integers, so no floating-point value ever influences the
//! output distribution. Uniform integers come from the caller's CSPRNG
//! (ChaCha20, see [`crate::rng`]).
//!
//! # Why not `f64` Gaussian noise
//! Mironov, "On Significance of the Least Significant Bits for Differential
//! Privacy" (CCS 2012), showed that textbook floating-point noise leaks the input
//! through the set of representable outputs; Jin et al. (IEEE S&P 2022) extended
//! the attack to Gaussian samplers. Here the noisy *sum* is an exact integer: the
//! clipped per-sample gradients are rounded onto the lattice `g·ℤ^d`, summed in
//! `i64`, and integer noise is added. Only then is the result scaled to `f32`,
//! which is post-processing of an exactly private integer vector.
//!
//! # The lattice and the accounting
//! [`LatticeGaussian`] fixes the grid `g = C·2^-k` (an exact power-of-two
//! scaling of the clip norm C) and the lattice variance `S = ⌈(σ·2^k)²⌉`, so the
//! noise standard deviation `√S·g` is never below σ·C. `k` is the largest integer
//! ≤ 40 with `σ·2^k ≤ 2^29`; thus the noise scale is `s = √S ≥ 2^28` lattice units
//! whenever σ ≥ 2^-12. Each clipped gradient is rounded to a lattice vector of
//! integer L2 norm at most `2^k` (checked exactly), i.e. sensitivity exactly C.
//!
//! The RDP accountant ([`crate::rdp`]) analyses the continuous subsampled
//! Gaussian. For integer Rényi orders the quantity it bounds, `E[(P/Q)^α]`, is a
//! finite sum of Gaussian functions; over the lattice each becomes a Jacobi theta
//! sum which, by Poisson summation, equals the continuous integral up to a
//! relative error of order `d·exp(−2π²S)` (CKS 2020, §2–§4). At `S ≥ 2^56` this is
//! far below anything representable, so the discrete mechanism has the same RDP
//! curve as the continuous one it replaces, and the accountant's ε applies. The
//! sampler conditions on `|Y| ≤ T` with `T > 63·√S` to keep intermediates in
//! `u128`; the discarded tail has mass below `exp(−1980)`.
//!
//! Residual leakage: the sampler's running time depends on its output (Jin et al.
//! 2022); it runs on the client, and its time is small next to a training step.

use rand::{CryptoRng, Rng};

use crate::error::{DpError, Result};
use crate::params::{ClipNorm, NoiseMultiplier};

/// Largest supported lattice variance `S` (keeps every intermediate in `u128`).
pub const MAX_LATTICE_VARIANCE: u64 = 1 << 58;

/// Largest grid exponent `k` (grid `C·2^-k`).
const MAX_GRID_BITS: i32 = 40;

/// `σ·2^k` is kept at or below this many lattice units.
const LATTICE_SCALE_BITS: i32 = 29;

/// Bernoulli(num/den), exact; `den > 0`.
fn bernoulli_ratio<R: CryptoRng + ?Sized>(rng: &mut R, num: u128, den: u128) -> bool {
    num >= den || rng.random_range(0..den) < num
}

/// Bernoulli(exp(−num/den)) for `num <= den` (CKS Algorithm 1, γ ∈ [0, 1]).
fn bernoulli_exp_unit<R: CryptoRng + ?Sized>(rng: &mut R, num: u128, den: u128) -> bool {
    let mut k: u128 = 1;
    // A ~ Bernoulli(γ/k) is drawn as Bernoulli(γ)·Bernoulli(1/k) so that `k·den`
    // can never overflow.
    while bernoulli_ratio(rng, num, den) && bernoulli_ratio(rng, 1, k) {
        k += 1;
    }
    k % 2 == 1
}

/// Bernoulli(exp(−num/den)) for any rational γ ≥ 0 (CKS Algorithm 1).
fn bernoulli_exp<R: CryptoRng + ?Sized>(rng: &mut R, num: u128, den: u128) -> bool {
    let whole = num / den;
    let mut i: u128 = 0;
    while i < whole {
        if !bernoulli_exp_unit(rng, 1, 1) {
            return false;
        }
        i += 1;
    }
    bernoulli_exp_unit(rng, num % den, den)
}

/// Discrete Laplace with integer scale `t >= 1` (CKS Algorithm 2), as (negative, |x|).
fn discrete_laplace<R: CryptoRng + ?Sized>(rng: &mut R, t: u64) -> (bool, u64) {
    loop {
        let u = rng.random_range(0..t);
        if !bernoulli_exp(rng, u128::from(u), u128::from(t)) {
            continue;
        }
        let mut v: u64 = 0;
        while bernoulli_exp_unit(rng, 1, 1) {
            v = v.saturating_add(1);
        }
        // Values beyond u64 are rejected; the Gaussian step truncates far below that.
        let Some(x) = v.checked_mul(t).and_then(|tv| tv.checked_add(u)) else {
            continue;
        };
        let negative: bool = rng.random();
        if negative && x == 0 {
            continue;
        }
        return (negative, x);
    }
}

/// Exact sampler for the discrete Gaussian `N_ℤ(0, S)` with integer variance
/// parameter `S` (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscreteGaussian {
    variance: u64,
    laplace_scale: u64,
    max_abs: u64,
    gamma_den: u128,
}

impl DiscreteGaussian {
    /// A sampler for `N_ℤ(0, variance)`.
    ///
    /// # Errors
    /// [`DpError::OutOfRange`] unless `1 <= variance <= 2^58`.
    pub fn new(variance: u64) -> Result<Self> {
        if variance == 0 || variance > MAX_LATTICE_VARIANCE {
            return Err(DpError::OutOfRange {
                name: "lattice variance",
                value: variance as f64,
                expected: "1 <= S <= 2^58",
            });
        }
        let laplace_scale = variance.isqrt() + 1;
        let t = u128::from(laplace_scale);
        // 2·S·t² ≤ 2^59·(2^29 + 1)² < 2^118: cannot overflow for S ≤ 2^58.
        let gamma_den = 2 * u128::from(variance) * t * t;
        Ok(Self {
            variance,
            laplace_scale,
            // |Y|·t ≤ u64::MAX keeps (|Y|·t − S)² below 2^128.
            max_abs: u64::MAX / laplace_scale,
            gamma_den,
        })
    }

    /// The variance parameter `S`.
    #[must_use]
    pub const fn variance(&self) -> u64 {
        self.variance
    }

    /// One exact draw.
    pub fn sample<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> i64 {
        let t = u128::from(self.laplace_scale);
        let s = u128::from(self.variance);
        loop {
            let (negative, y) = discrete_laplace(rng, self.laplace_scale);
            if y > self.max_abs {
                continue;
            }
            // γ = (|y| − S/t)² / (2S) = (|y|·t − S)² / (2·S·t²).
            let a = (u128::from(y) * t).abs_diff(s);
            if bernoulli_exp(rng, a * a, self.gamma_den) {
                // y ≤ u64::MAX / 2 because t ≥ 2, so it fits in i64.
                let y = i64::try_from(y).unwrap_or(i64::MAX);
                return if negative { -y } else { y };
            }
        }
    }
}

/// Exact `⌈x²⌉` for a finite `x > 0` with `x <= 2^29`, from its binary representation.
fn ceil_square(x: f64) -> u64 {
    let bits = x.to_bits();
    let biased = i32::try_from((bits >> 52) & 0x7ff).unwrap_or(0);
    let fraction = bits & ((1u64 << 52) - 1);
    let (mantissa, exp) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), biased - 1075)
    };
    let sq = u128::from(mantissa) * u128::from(mantissa);
    let shift = 2 * exp;
    let value = if shift >= 0 {
        sq << shift.unsigned_abs()
    } else if shift <= -128 {
        u128::from(sq > 0)
    } else {
        let s = shift.unsigned_abs();
        (sq >> s) + u128::from(sq & ((1u128 << s) - 1) != 0)
    };
    u64::try_from(value).unwrap_or(u64::MAX).max(1)
}

/// Gaussian noise of standard deviation ≥ σ·C per coordinate, on the lattice
/// `g·ℤ` with `g = C·2^-k` (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatticeGaussian {
    grid: f64,
    grid_bits: i32,
    sampler: DiscreteGaussian,
}

impl LatticeGaussian {
    /// The lattice and sampler for noise multiplier σ and clip norm C.
    ///
    /// # Errors
    /// None for validated σ and C in practice; [`DpError::OutOfRange`] if the
    /// derived lattice variance were out of range.
    pub fn new(noise: NoiseMultiplier, clip: ClipNorm) -> Result<Self> {
        let sigma = noise.get();
        let limit = f64::from(LATTICE_SCALE_BITS).exp2();
        let mut grid_bits = MAX_GRID_BITS;
        while grid_bits > 0 && sigma * f64::from(grid_bits).exp2() > limit {
            grid_bits -= 1;
        }
        let scaled = sigma * f64::from(grid_bits).exp2();
        let sampler = DiscreteGaussian::new(ceil_square(scaled))?;
        Ok(Self {
            grid: clip.get() * f64::from(-grid_bits).exp2(),
            grid_bits,
            sampler,
        })
    }

    /// The grid spacing `g = C·2^-k`.
    #[must_use]
    pub const fn grid(&self) -> f64 {
        self.grid
    }

    /// `k`: a clipped gradient has lattice L2 norm at most `2^k`.
    #[must_use]
    pub const fn grid_bits(&self) -> i32 {
        self.grid_bits
    }

    /// The integer sampler on the lattice.
    #[must_use]
    pub const fn lattice_sampler(&self) -> &DiscreteGaussian {
        &self.sampler
    }

    /// The noise standard deviation in gradient units, `√S·g ≥ σ·C`.
    #[must_use]
    pub fn std_dev(&self) -> f64 {
        (self.sampler.variance() as f64).sqrt() * self.grid
    }

    /// One noise draw in lattice units (multiply by [`grid`](Self::grid) for gradient units).
    pub fn sample_lattice<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> i64 {
        self.sampler.sample(rng)
    }

    /// One noise draw in gradient units.
    pub fn sample<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> f64 {
        self.sample_lattice(rng) as f64 * self.grid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded_rng;

    fn moments(samples: &[i64]) -> (f64, f64) {
        let n = samples.len() as f64;
        let mean = samples.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = samples
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        (mean, var)
    }

    #[test]
    fn bernoulli_exp_matches_probability() {
        let mut rng = seeded_rng(1);
        let n = 100_000;
        for (num, den) in [(1u128, 2u128), (3, 2), (0, 5), (7, 3)] {
            let hits = (0..n).filter(|_| bernoulli_exp(&mut rng, num, den)).count();
            let p = (-(num as f64) / den as f64).exp();
            let se = (p * (1.0 - p) / n as f64).sqrt().max(1e-9);
            let got = hits as f64 / n as f64;
            assert!((got - p).abs() < 5.0 * se, "{num}/{den}: {got} vs {p}");
        }
    }

    #[test]
    fn small_variance_matches_exact_pmf() {
        let s = 2u64;
        let dg = DiscreteGaussian::new(s).unwrap();
        let mut rng = seeded_rng(2);
        let n = 200_000;
        let draws: Vec<i64> = (0..n).map(|_| dg.sample(&mut rng)).collect();
        let weight = |y: i64| (-(y * y) as f64 / (2.0 * s as f64)).exp();
        let norm: f64 = (-40..=40).map(weight).sum();
        for y in -4..=4 {
            let p = weight(y) / norm;
            let got = draws.iter().filter(|&&x| x == y).count() as f64 / n as f64;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!((got - p).abs() < 5.0 * se, "P[Y={y}] = {got}, expected {p}");
        }
        let (mean, var) = moments(&draws);
        assert!(mean.abs() < 5.0 * (var / n as f64).sqrt());
        // For S = 2 the discrete variance differs from S by < 1e-7.
        assert!((var - 2.0).abs() < 5.0 * 2.0 * (2.0 / n as f64).sqrt());
    }

    #[test]
    fn large_variance_moments_and_symmetry() {
        let s: u64 = 1 << 40;
        let dg = DiscreteGaussian::new(s).unwrap();
        let mut rng = seeded_rng(3);
        let n = 100_000;
        let draws: Vec<i64> = (0..n).map(|_| dg.sample(&mut rng)).collect();
        let (mean, var) = moments(&draws);
        let sd = (s as f64).sqrt();
        assert!(mean.abs() < 5.0 * sd / (n as f64).sqrt(), "mean {mean}");
        let rel = var / s as f64 - 1.0;
        assert!(
            rel.abs() < 5.0 * (2.0 / n as f64).sqrt(),
            "variance ratio {rel}"
        );
        let pos = draws.iter().filter(|&&x| x > 0).count() as f64;
        let neg = draws.iter().filter(|&&x| x < 0).count() as f64;
        assert!(
            (pos - neg).abs() < 5.0 * (pos + neg).sqrt(),
            "{pos} vs {neg}"
        );
        // Fourth moment of a Gaussian is 3σ⁴: checks the shape, not just the scale.
        let kurt = draws.iter().map(|&x| (x as f64 / sd).powi(4)).sum::<f64>() / n as f64;
        assert!((kurt - 3.0).abs() < 0.15, "kurtosis {kurt}");
    }

    #[test]
    fn ceil_square_is_exact() {
        assert_eq!(ceil_square(3.0), 9);
        assert_eq!(ceil_square(2.5), 7);
        assert_eq!(ceil_square(1e-3), 1);
        let x = 1.1 * 2f64.powi(28);
        let exact = ceil_square(x);
        assert!(exact as f64 >= x * x * (1.0 - 1e-15));
        assert!((exact as f64 - x * x).abs() <= 64.0);
    }

    #[test]
    fn lattice_noise_has_requested_scale() {
        let sigma = NoiseMultiplier::new(1.3).unwrap();
        let clip = ClipNorm::new(0.7).unwrap();
        let lg = LatticeGaussian::new(sigma, clip).unwrap();
        assert!(lg.std_dev() >= 1.3 * 0.7);
        assert!(lg.std_dev() <= 1.3 * 0.7 * (1.0 + 1e-12));
        assert!(lg.grid() * f64::from(lg.grid_bits()).exp2() == 0.7);
        let mut rng = seeded_rng(4);
        let n = 50_000;
        let draws: Vec<f64> = (0..n).map(|_| lg.sample(&mut rng)).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
        let target = (1.3f64 * 0.7).powi(2);
        assert!(mean.abs() < 5.0 * (target / n as f64).sqrt());
        assert!((var / target - 1.0).abs() < 5.0 * (2.0 / n as f64).sqrt());
    }

    #[test]
    fn grid_adapts_to_large_sigma() {
        let lg = LatticeGaussian::new(
            NoiseMultiplier::new(1e6).unwrap(),
            ClipNorm::new(1.0).unwrap(),
        )
        .unwrap();
        assert!(lg.lattice_sampler().variance() <= MAX_LATTICE_VARIANCE);
        assert!(lg.std_dev() >= 1e6);
        assert!(DiscreteGaussian::new(0).is_err());
        assert!(DiscreteGaussian::new(MAX_LATTICE_VARIANCE + 1).is_err());
    }
}
