//! Per-sample L2 clipping of a flat gradient.
//!
//! For a per-sample gradient `x ∈ ℝ^d` and clip norm C, clipping returns
//! `x·min(1, C/‖x‖₂)` (Abadi et al., "Deep Learning with Differential Privacy",
//! CCS 2016, Algorithm 1). This bounds each example's contribution to the batch
//! sum, i.e. the L2 sensitivity of the sum under adding or removing one example,
//! by C. Norms are accumulated in `f64`.

use crate::error::{DpError, Result};
use crate::params::ClipNorm;

/// What clipping did to one per-sample gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipInfo {
    /// ‖x‖₂ before clipping.
    pub norm: f64,
    /// The factor the gradient was multiplied by, `min(1, C/‖x‖₂)` (1 for a zero gradient).
    pub factor: f64,
}

/// `‖x‖₂`, accumulated in `f64`.
///
/// # Errors
/// [`DpError::NonFiniteGradient`] (with `sample = 0`) if any coordinate is NaN or ±∞.
pub fn l2_norm(x: &[f32]) -> Result<f64> {
    let mut sum = 0.0f64;
    for (coordinate, &v) in x.iter().enumerate() {
        if !v.is_finite() {
            return Err(DpError::NonFiniteGradient {
                sample: 0,
                coordinate,
            });
        }
        let v = f64::from(v);
        sum += v * v;
    }
    Ok(sum.sqrt())
}

/// `min(1, bound/norm)`, and 1 for a zero norm.
#[must_use]
pub fn clip_factor(norm: f64, bound: f64) -> f64 {
    if norm > bound { bound / norm } else { 1.0 }
}

/// Clips `x` in place to L2 norm at most C and reports the norm and factor.
///
/// ```
/// use sphinx_dp::{clip_in_place, ClipNorm};
/// let mut g = [3.0f32, 4.0];
/// let info = clip_in_place(&mut g, ClipNorm::new(1.0)?)?;
/// assert_eq!(info.norm, 5.0);
/// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
/// # Ok::<(), sphinx_dp::DpError>(())
/// ```
///
/// # Errors
/// [`DpError::NonFiniteGradient`] if `x` contains NaN or ±∞ (then `x` is unchanged).
pub fn clip_in_place(x: &mut [f32], clip: ClipNorm) -> Result<ClipInfo> {
    let norm = l2_norm(x)?;
    let factor = clip_factor(norm, clip.get());
    if factor < 1.0 {
        for v in x.iter_mut() {
            *v = (f64::from(*v) * factor) as f32;
        }
    }
    Ok(ClipInfo { norm, factor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_bounds_norm_and_keeps_direction() {
        let c = ClipNorm::new(2.0).unwrap();
        let mut g = vec![1.0f32, -2.0, 2.0];
        let info = clip_in_place(&mut g, c).unwrap();
        assert_eq!(info.norm, 3.0);
        assert!((info.factor - 2.0 / 3.0).abs() < 1e-15);
        assert!((l2_norm(&g).unwrap() - 2.0).abs() < 1e-6);
        let mut small = vec![0.1f32, 0.2];
        let before = small.clone();
        assert_eq!(clip_in_place(&mut small, c).unwrap().factor, 1.0);
        assert_eq!(small, before);
        let mut zero = vec![0.0f32; 4];
        assert_eq!(clip_in_place(&mut zero, c).unwrap().factor, 1.0);
    }

    #[test]
    fn non_finite_is_an_error() {
        let mut g = vec![1.0f32, f32::NAN];
        assert_eq!(
            clip_in_place(&mut g, ClipNorm::new(1.0).unwrap()),
            Err(DpError::NonFiniteGradient {
                sample: 0,
                coordinate: 1
            })
        );
    }
}
