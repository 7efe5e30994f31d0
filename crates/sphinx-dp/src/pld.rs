//! A privacy-loss-distribution (PLD) accountant: a tighter, optional second
//! accountant for the Poisson-subsampled Gaussian mechanism. The default stays
//! the RDP accountant of [`crate::accountant`].
//!
//! # The math
//! For a pair of output distributions (P, Q) the privacy loss is
//! `L(x) = log(P(x)/Q(x))` with `x ∼ P`, and the mechanism is (ε, δ)-DP for
//!
//! ```text
//! δ(ε) = E_{x∼P}[(1 − e^{ε − L(x)})₊] = P(L > ε) − e^ε·Q(L > ε)
//! ```
//!
//! (the hockey-stick divergence). Composition adds independent losses, so the
//! PLD of T steps is the T-fold convolution of one step's PLD (Meiser and
//! Mohammadi 2018; Koskela, Jälkö and Honkela 2020; Sommer, Meiser and Mohammadi
//! 2019). For one Poisson-subsampled Gaussian step with rate q and noise σ,
//! with `M = (1 − q)·N(0, σ²) + q·N(1, σ²)` and `μ₀ = N(0, σ²)`, removal gives the
//! pair (M, μ₀) and addition the pair (μ₀, M); both are tracked and ε is the
//! larger of the two. Each loss is monotone in x, so `δ(ε)` has a closed form in
//! Gaussian tails.
//!
//! # Discretization
//! One step's PLD is discretized on the grid `ε_j = j·Δ` by *connect-the-dots*
//! (Doroshenko, Ghazi, Kamath, Kumar and Manurangsi, PETS 2022): masses `ω_j` on
//! the grid plus a mass `ω_∞` at +∞, chosen so that the discrete PLD's δ equals the
//! exact `δ(ε_j)` at every grid point. Between grid points its δ is
//! `a − b·e^ε`, which lies above the true curve, so the discrete PLD dominates the
//! true one and remains a valid (pessimistic) bound under composition. Losses
//! below the covered range are lumped at its lowest point; convolutions are done
//! with an FFT, and after each one tails of mass ≤ 1e-15 are truncated
//! pessimistically (the upper tail is moved to +∞, the lower tail up to the
//! lowest kept point). ε for a δ is then solved exactly on the final PMF.

use crate::error::{DpError, Result};
use crate::params::{Delta, Epsilon, NoiseMultiplier, SampleRate};
use crate::rdp::log_erfc;

/// Default loss discretization interval Δ (as in `dp-accounting`).
pub const DEFAULT_PLD_INTERVAL: f64 = 1e-4;

/// Mass truncated from each tail after a convolution.
const TAIL_TRUNCATION: f64 = 1e-15;

/// Standard-normal upper tail `P[Z > z]`.
fn normal_sf(z: f64) -> f64 {
    0.5 * log_erfc(z / std::f64::consts::SQRT_2).exp()
}

/// Standard-normal CDF `P[Z <= z]`.
fn normal_cdf(z: f64) -> f64 {
    normal_sf(-z)
}

/// A discrete PLD: `probs[i]` is the mass at loss `(lower + i)·Δ`.
#[derive(Debug, Clone, PartialEq)]
struct Pmf {
    lower: i64,
    probs: Vec<f64>,
    infinity_mass: f64,
}

impl Pmf {
    fn identity() -> Self {
        Self {
            lower: 0,
            probs: vec![1.0],
            infinity_mass: 0.0,
        }
    }

    /// Connect-the-dots PMF from the exact δ curve on grid indices `lo..=hi`.
    fn connect_dots(interval: f64, lo: i64, hi: i64, delta_at: impl Fn(f64) -> f64) -> Self {
        let n = usize::try_from(hi - lo + 1).unwrap_or(1).max(1);
        let mut probs = vec![0.0; n];
        let infinity_mass = delta_at(hi as f64 * interval).clamp(0.0, 1.0);
        let decay = (-interval).exp();
        let one_minus_decay = -(-interval).exp_m1();
        // Running sums over points above j: A = Σ ω_i, C = Σ ω_i·e^{ε_j − ε_i}.
        let (mut above, mut scaled) = (0.0f64, 0.0f64);
        for idx in (1..n).rev() {
            let eps_below = (lo + idx as i64 - 1) as f64 * interval;
            let target = delta_at(eps_below);
            // δ(ε_{j}) = ω_∞ + ω_{j+1}(1 − e^{−Δ}) + A_{j+1} − e^{−Δ}·C_{j+1}.
            let w = ((target - infinity_mass - above + decay * scaled) / one_minus_decay).max(0.0);
            probs[idx] = w;
            scaled = decay * (w + scaled);
            above += w;
        }
        probs[0] = (1.0 - infinity_mass - above).max(0.0);
        Self {
            lower: lo,
            probs,
            infinity_mass,
        }
    }

    fn convolve(&self, other: &Self) -> Self {
        let probs = convolve(&self.probs, &other.probs);
        let infinity_mass = 1.0 - (1.0 - self.infinity_mass) * (1.0 - other.infinity_mass);
        let mut out = Self {
            lower: self.lower + other.lower,
            probs,
            infinity_mass,
        };
        out.truncate_tails();
        out
    }

    /// Drops tails of mass ≤ [`TAIL_TRUNCATION`] each, pessimistically.
    fn truncate_tails(&mut self) {
        for p in &mut self.probs {
            // FFT round-off leaves tiny negative values.
            if p.is_nan() || *p < 0.0 {
                *p = 0.0;
            }
        }
        let mut low_mass = 0.0;
        let mut start = 0;
        while start + 1 < self.probs.len() && low_mass + self.probs[start] <= TAIL_TRUNCATION {
            low_mass += self.probs[start];
            start += 1;
        }
        let mut high_mass = 0.0;
        let mut end = self.probs.len();
        while end > start + 1 && high_mass + self.probs[end - 1] <= TAIL_TRUNCATION {
            high_mass += self.probs[end - 1];
            end -= 1;
        }
        self.probs.truncate(end);
        self.probs.drain(..start);
        if let Some(first) = self.probs.first_mut() {
            *first += low_mass;
        }
        self.lower += start as i64;
        self.infinity_mass += high_mass;
    }

    fn self_compose(&self, count: u64) -> Self {
        let mut result = Self::identity();
        let mut base = self.clone();
        let mut k = count;
        while k > 0 {
            if k & 1 == 1 {
                result = result.convolve(&base);
            }
            k >>= 1;
            if k > 0 {
                base = base.convolve(&base);
            }
        }
        result
    }

    /// Smallest ε ≥ 0 with δ(ε) ≤ `delta`; +∞ if the mass at +∞ exceeds δ.
    fn epsilon_for_delta(&self, interval: f64, delta: f64) -> f64 {
        if self.infinity_mass > delta {
            return f64::INFINITY;
        }
        // Walk down from the largest loss, keeping A = Σ_{above} ω and
        // B = Σ_{above} ω·e^{−ε_i}; δ(ε) = ω_∞ + A − e^ε·B on each gap.
        let (mut upper, mut lower) = (self.infinity_mass, 0.0f64);
        for (i, &p) in self.probs.iter().enumerate().rev() {
            let loss = (self.lower + i as i64) as f64 * interval;
            if upper > delta && lower > 0.0 && ((upper - delta) / lower).ln() >= loss {
                break;
            }
            upper += p;
            lower += (-loss).exp() * p;
        }
        if upper <= lower + delta || lower <= 0.0 {
            return 0.0;
        }
        ((upper - delta) / lower).ln().max(0.0)
    }
}

/// Linear convolution of two non-negative sequences via a radix-2 FFT.
fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    let len = a.len() + b.len() - 1;
    if a.len().min(b.len()) <= 32 {
        let mut out = vec![0.0; len];
        for (i, &x) in a.iter().enumerate() {
            for (j, &y) in b.iter().enumerate() {
                out[i + j] += x * y;
            }
        }
        return out;
    }
    let n = len.next_power_of_two();
    let twiddles = Twiddles::new(n);
    let (mut ar, mut ai) = (a.to_vec(), vec![0.0; n]);
    ar.resize(n, 0.0);
    fft(&mut ar, &mut ai, &twiddles, false);
    let same = std::ptr::eq(a, b);
    let (br, bi) = if same {
        (ar.clone(), ai.clone())
    } else {
        let (mut br, mut bi) = (b.to_vec(), vec![0.0; n]);
        br.resize(n, 0.0);
        fft(&mut br, &mut bi, &twiddles, false);
        (br, bi)
    };
    for k in 0..n {
        let (re, im) = (ar[k] * br[k] - ai[k] * bi[k], ar[k] * bi[k] + ai[k] * br[k]);
        ar[k] = re;
        ai[k] = im;
    }
    fft(&mut ar, &mut ai, &twiddles, true);
    ar.truncate(len);
    ar
}

/// `e^{−2πik/n}` for `k < n/2`, each from its exact angle (no accumulated error).
struct Twiddles {
    cos: Vec<f64>,
    sin: Vec<f64>,
}

impl Twiddles {
    fn new(n: usize) -> Self {
        let (cos, sin) = (0..n / 2)
            .map(|k| {
                let angle = -2.0 * std::f64::consts::PI * k as f64 / n as f64;
                (angle.cos(), angle.sin())
            })
            .unzip();
        Self { cos, sin }
    }
}

/// In-place iterative radix-2 complex FFT (`re.len()` a power of two equal to the
/// twiddle table's size); the inverse includes the 1/n scaling.
fn fft(re: &mut [f64], im: &mut [f64], tw: &Twiddles, inverse: bool) {
    let n = re.len();
    let mut j = 0usize;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let sign = if inverse { -1.0 } else { 1.0 };
    let mut len = 2;
    while len <= n {
        let half = len / 2;
        let stride = n / len;
        for start in (0..n).step_by(len) {
            for k in 0..half {
                let (wr, wi) = (tw.cos[k * stride], sign * tw.sin[k * stride]);
                let (a, b) = (start + k, start + k + half);
                let (xr, xi) = (re[b] * wr - im[b] * wi, re[b] * wi + im[b] * wr);
                re[b] = re[a] - xr;
                im[b] = im[a] - xi;
                re[a] += xr;
                im[a] += xi;
            }
        }
        len <<= 1;
    }
    if inverse {
        let scale = 1.0 / n as f64;
        for (r, i) in re.iter_mut().zip(im.iter_mut()) {
            *r *= scale;
            *i *= scale;
        }
    }
}

/// Tail quantile used to bound the loss range of one step (`P[Z > 8] ≈ 6e-16`).
const RANGE_Z: f64 = 8.0;

/// The two one-step PMFs (removal, addition) of the subsampled Gaussian.
fn step_pmfs(q: f64, sigma: f64, interval: f64) -> (Pmf, Pmf) {
    let s2 = sigma * sigma;
    let loss_remove = |x: f64| (q * (((2.0 * x - 1.0) / (2.0 * s2)).exp() - 1.0)).ln_1p();
    if q >= 1.0 {
        // Plain Gaussian: loss (2x − 1)/(2σ²) with x ∼ N(1, σ²) (removal) and its mirror.
        let delta = |eps: f64| {
            let a = 1.0 / (2.0 * sigma);
            normal_sf(eps * sigma - a) - eps.exp() * normal_sf(eps * sigma + a)
        };
        let hi = ((1.0 + 2.0 * RANGE_Z * sigma) / (2.0 * s2) / interval).ceil() as i64;
        let pmf = Pmf::connect_dots(interval, -hi, hi, delta);
        return (pmf.clone(), pmf);
    }
    // Removal: P = M, Q = μ₀, L(x) = log(1 − q + q·e^{(2x−1)/2σ²}) increasing.
    let delta_remove = |eps: f64| -> f64 {
        let shifted = eps.exp_m1() + q; // e^ε − (1 − q)
        if shifted <= 0.0 {
            return -eps.exp_m1();
        }
        let t = s2 * (shifted / q).ln() + 0.5;
        (q * normal_sf((t - 1.0) / sigma) - shifted * normal_sf(t / sigma)).max(0.0)
    };
    let lo_r = (loss_remove(-RANGE_Z * sigma) / interval).floor() as i64;
    let hi_r = (loss_remove(1.0 + RANGE_Z * sigma) / interval).ceil() as i64;
    let remove = Pmf::connect_dots(interval, lo_r, hi_r, delta_remove);
    // Addition: P = μ₀, Q = M, L(x) = −log(1 − q + q·e^{(2x−1)/2σ²}) decreasing.
    let delta_add = |eps: f64| -> f64 {
        let shifted = (-eps).exp_m1() + q; // e^{−ε} − (1 − q)
        if shifted <= 0.0 {
            return 0.0;
        }
        let t = s2 * (shifted / q).ln() + 0.5;
        let p = normal_cdf(t / sigma);
        let mixture = (1.0 - q) * p + q * normal_cdf((t - 1.0) / sigma);
        (p - eps.exp() * mixture).max(0.0)
    };
    let lo_a = (-loss_remove(RANGE_Z * sigma) / interval).floor() as i64;
    let hi_a = (-loss_remove(-RANGE_Z * sigma) / interval).ceil() as i64;
    let add = Pmf::connect_dots(interval, lo_a, hi_a, delta_add);
    (remove, add)
}

/// Largest number of grid points of one step's PMF (bounds memory and time).
const MAX_STEP_POINTS: i64 = 1 << 22;

/// ε after `steps` Poisson-subsampled Gaussian steps, by the PLD accountant with
/// loss interval Δ ([`DEFAULT_PLD_INTERVAL`] is a good default).
///
/// ```
/// use sphinx_dp::pld::{pld_epsilon, DEFAULT_PLD_INTERVAL};
/// use sphinx_dp::{epsilon_for, Delta, NoiseMultiplier, SampleRate};
/// let (q, s, d) = (SampleRate::new(0.01)?, NoiseMultiplier::new(1.1)?, Delta::new(1e-5)?);
/// let pld = pld_epsilon(q, s, 1_000, d, DEFAULT_PLD_INTERVAL)?;
/// let rdp = epsilon_for(q, s, 1_000, d)?;
/// assert!(pld.get() < rdp.epsilon.get()); // PLD is tighter
/// # Ok::<(), sphinx_dp::DpError>(())
/// ```
///
/// # Errors
/// [`DpError::OutOfRange`] for a non-positive interval or a step whose loss range
/// would need more than 2^22 grid points (σ far below 0.1 at Δ = 1e-4),
/// [`DpError::InfiniteEpsilon`] if the mass at +∞ exceeds δ.
pub fn pld_epsilon(
    sample_rate: SampleRate,
    noise_multiplier: NoiseMultiplier,
    steps: u64,
    delta: Delta,
    interval: f64,
) -> Result<Epsilon> {
    if !(interval.is_finite() && interval > 0.0 && interval <= 1.0) {
        return Err(DpError::OutOfRange {
            name: "PLD interval",
            value: interval,
            expected: "0 < interval <= 1",
        });
    }
    let (q, sigma) = (sample_rate.get(), noise_multiplier.get());
    let s2 = sigma * sigma;
    let span = (1.0 + 2.0 * RANGE_Z * sigma) / (2.0 * s2) / interval;
    if span.is_nan() || span >= MAX_STEP_POINTS as f64 {
        return Err(DpError::OutOfRange {
            name: "PLD grid points per step",
            value: span,
            expected: "at most 2^22 (use a larger interval or larger sigma)",
        });
    }
    let (remove, add) = step_pmfs(q, sigma, interval);
    let eps = remove
        .self_compose(steps)
        .epsilon_for_delta(interval, delta.get())
        .max(
            add.self_compose(steps)
                .epsilon_for_delta(interval, delta.get()),
        );
    if eps.is_finite() {
        Epsilon::new(eps)
    } else {
        Err(DpError::InfiniteEpsilon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_convolution_matches_direct() {
        let a: Vec<f64> = (0..100).map(|i| f64::from(i % 7) / 10.0).collect();
        let b: Vec<f64> = (0..77).map(|i| f64::from(i % 5) / 3.0).collect();
        let fast = convolve(&a, &b);
        let mut slow = vec![0.0; a.len() + b.len() - 1];
        for (i, x) in a.iter().enumerate() {
            for (j, y) in b.iter().enumerate() {
                slow[i + j] += x * y;
            }
        }
        for (f, s) in fast.iter().zip(&slow) {
            assert!((f - s).abs() < 1e-10, "{f} vs {s}");
        }
    }

    #[test]
    fn connect_dots_reproduces_delta_on_grid() {
        let (remove, _) = step_pmfs(0.05, 1.0, 1e-3);
        let total: f64 = remove.probs.iter().sum::<f64>() + remove.infinity_mass;
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        // δ of the discrete PLD at a grid point equals the exact δ there.
        let eps: f64 = 0.02;
        let exact = {
            let q: f64 = 0.05;
            let shifted = eps.exp_m1() + q;
            let t = (shifted / q).ln() + 0.5;
            q * normal_sf(t - 1.0) - shifted * normal_sf(t)
        };
        let discrete: f64 = remove
            .probs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let l = (remove.lower + i as i64) as f64 * 1e-3;
                if l > eps {
                    p * (1.0 - (eps - l).exp())
                } else {
                    0.0
                }
            })
            .sum::<f64>()
            + remove.infinity_mass;
        assert!((discrete - exact).abs() < 1e-9, "{discrete} vs {exact}");
    }

    #[test]
    fn plain_gaussian_matches_closed_form() {
        // One Gaussian release, σ = 1: the exact ε at δ solves
        // Φ(−ε + 1/2) − e^ε Φ(−ε − 1/2) = δ (Balle and Wang 2018).
        let d = Delta::new(1e-5).unwrap();
        let eps = pld_epsilon(
            SampleRate::new(1.0).unwrap(),
            NoiseMultiplier::new(1.0).unwrap(),
            1,
            d,
            1e-4,
        )
        .unwrap()
        .get();
        let delta_at = |e: f64| normal_sf(e - 0.5) - e.exp() * normal_sf(e + 0.5);
        assert!(delta_at(eps) <= 1e-5 * (1.0 + 1e-6));
        assert!(delta_at(eps - 1e-3) > 1e-5);
    }
}
