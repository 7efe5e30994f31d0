//! Noise calibration: the smallest σ whose ε after T steps is at most a target.
//!
//! For fixed q, T and δ, the accountant's ε(σ) is non-increasing in σ (every
//! order's RDP decreases as σ grows, and the conversion is monotone in the RDP).
//! The search brackets the target by doubling/halving σ, then bisects on log σ
//! until the bracket is narrower than a relative [`SIGMA_REL_TOL`]. The returned
//! σ is the bracket's upper end, so its ε never exceeds the target, and it is
//! within about `1e-6` relative of the exact threshold, which reproduces the target
//! ε to the same relative precision.

use crate::accountant::{DpEvent, RdpAccountant};
use crate::error::{DpError, Result};
use crate::params::{Delta, Epsilon, MAX_NOISE_MULTIPLIER, NoiseMultiplier, SampleRate};

/// Relative width of the final σ bracket.
pub const SIGMA_REL_TOL: f64 = 1e-7;

/// Smallest σ the search considers.
const MIN_SIGMA: f64 = 1e-3;

/// A calibrated noise multiplier and the ε it achieves.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    /// The smallest σ (to [`SIGMA_REL_TOL`]) with ε ≤ target.
    pub noise_multiplier: NoiseMultiplier,
    /// ε at that σ (≤ target).
    pub epsilon: Epsilon,
    /// The optimal Rényi order at that σ.
    pub order: f64,
}

/// σ for a target ε after `steps` Poisson-subsampled Gaussian steps, using the
/// order grid of `template` (e.g. `RdpAccountant::new()`).
///
/// ```
/// use sphinx_dp::{calibrate_noise, Delta, Epsilon, RdpAccountant, SampleRate};
/// let c = calibrate_noise(&RdpAccountant::new(), SampleRate::new(0.01)?, 1_000,
///                         Epsilon::new(1.0)?, Delta::new(1e-5)?)?;
/// assert!(c.epsilon.get() <= 1.0 && c.epsilon.get() > 0.9999);
/// # Ok::<(), sphinx_dp::DpError>(())
/// ```
///
/// # Errors
/// [`DpError::OutOfRange`] for a zero target ε or zero steps,
/// [`DpError::CalibrationFailed`] if even σ = 10⁶ spends more than the target.
pub fn calibrate_noise(
    template: &RdpAccountant,
    sample_rate: SampleRate,
    steps: u64,
    target: Epsilon,
    delta: Delta,
) -> Result<Calibration> {
    if target.get() <= 0.0 {
        return Err(DpError::OutOfRange {
            name: "target epsilon",
            value: target.get(),
            expected: "epsilon > 0",
        });
    }
    if steps == 0 {
        return Err(DpError::OutOfRange {
            name: "steps",
            value: 0.0,
            expected: "steps >= 1",
        });
    }
    let eval = |sigma: f64| -> Result<(f64, f64)> {
        let mut acc = RdpAccountant::with_series(template.orders().to_vec(), template.series())?;
        acc.compose(
            DpEvent::poisson_gaussian(sample_rate, NoiseMultiplier::new(sigma)?),
            steps,
        );
        match acc.epsilon(delta) {
            Ok(r) => Ok((r.epsilon.get(), r.order)),
            Err(DpError::InfiniteEpsilon) => Ok((f64::INFINITY, f64::NAN)),
            Err(e) => Err(e),
        }
    };
    let fits = |e: f64| e <= target.get();

    // Bracket: lo spends too much (or is the floor), hi fits.
    let mut hi = 1.0f64;
    let mut hi_eval = eval(hi)?;
    let mut lo;
    if fits(hi_eval.0) {
        lo = hi;
        loop {
            if lo <= MIN_SIGMA {
                return calibration(lo, eval(lo)?);
            }
            lo = (lo / 2.0).max(MIN_SIGMA);
            let e = eval(lo)?;
            if !fits(e.0) {
                break;
            }
            hi = lo;
            hi_eval = e;
        }
    } else {
        loop {
            lo = hi;
            if hi >= MAX_NOISE_MULTIPLIER {
                return Err(DpError::CalibrationFailed {
                    target: target.get(),
                    max_sigma: MAX_NOISE_MULTIPLIER,
                });
            }
            hi = (hi * 2.0).min(MAX_NOISE_MULTIPLIER);
            hi_eval = eval(hi)?;
            if fits(hi_eval.0) {
                break;
            }
        }
    }
    while hi / lo - 1.0 > SIGMA_REL_TOL {
        let mid = (lo * hi).sqrt();
        let e = eval(mid)?;
        if fits(e.0) {
            hi = mid;
            hi_eval = e;
        } else {
            lo = mid;
        }
    }
    calibration(hi, hi_eval)
}

fn calibration(sigma: f64, (eps, order): (f64, f64)) -> Result<Calibration> {
    Ok(Calibration {
        noise_multiplier: NoiseMultiplier::new(sigma)?,
        epsilon: Epsilon::new(eps)?,
        order,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accountant::epsilon_for;

    #[test]
    fn calibration_reproduces_target() {
        let q = SampleRate::new(0.004).unwrap();
        let d = Delta::new(1e-5).unwrap();
        for target in [0.5, 2.0, 8.0] {
            let c = calibrate_noise(
                &RdpAccountant::new(),
                q,
                10_000,
                Epsilon::new(target).unwrap(),
                d,
            )
            .unwrap();
            let again = epsilon_for(q, c.noise_multiplier, 10_000, d).unwrap();
            assert_eq!(again.epsilon, c.epsilon);
            assert!(c.epsilon.get() <= target);
            assert!(
                c.epsilon.get() >= target * (1.0 - 1e-5),
                "{target}: {}",
                c.epsilon
            );
            // A slightly smaller σ overshoots: σ is minimal.
            let below = NoiseMultiplier::new(c.noise_multiplier.get() * (1.0 - 1e-5)).unwrap();
            assert!(epsilon_for(q, below, 10_000, d).unwrap().epsilon.get() > target);
        }
    }

    #[test]
    fn calibration_rejects_bad_input() {
        let q = SampleRate::new(0.01).unwrap();
        let d = Delta::new(1e-5).unwrap();
        let acc = RdpAccountant::new();
        assert!(calibrate_noise(&acc, q, 100, Epsilon::new(0.0).unwrap(), d).is_err());
        assert!(calibrate_noise(&acc, q, 0, Epsilon::new(1.0).unwrap(), d).is_err());
    }
}
