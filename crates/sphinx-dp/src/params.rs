//! Validated newtypes for the DP quantities σ, q, δ, ε and C.
//!
//! Each is a distinct type with a checked constructor, so a sample rate can never be
//! passed where a noise multiplier is expected, and an out-of-range value never
//! enters the crate. They serialize as plain numbers and are re-validated when
//! deserialized.
//!
//! | type | symbol | allowed values |
//! |---|---|---|
//! | [`NoiseMultiplier`] | σ (noise std / clip norm) | `0 < σ <= 1e6` |
//! | [`SampleRate`] | q (Poisson rate) | `0 < q <= 1` |
//! | [`Delta`] | δ | `0 < δ < 1` |
//! | [`Epsilon`] | ε | `0 <= ε`, finite |
//! | [`ClipNorm`] | C (L2 clip bound) | `0 < C`, finite |

use serde::{Deserialize, Serialize};

use crate::error::{DpError, Result};

fn finite(name: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(DpError::NotFinite { name, value })
    }
}

macro_rules! dp_newtype {
    (
        $(#[$doc:meta])*
        $ty:ident, $name:literal, $expected:literal, |$v:ident| $ok:expr
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
        #[serde(try_from = "f64", into = "f64")]
        pub struct $ty(f64);

        impl $ty {
            #[doc = concat!("Validates `value` as ", $name, " (", $expected, ").")]
            ///
            /// # Errors
            /// [`DpError::NotFinite`] for NaN or ±∞, [`DpError::OutOfRange`] outside
            /// the allowed range.
            pub fn new(value: f64) -> Result<Self> {
                let $v = finite($name, value)?;
                if $ok {
                    Ok(Self($v))
                } else {
                    Err(DpError::OutOfRange {
                        name: $name,
                        value: $v,
                        expected: $expected,
                    })
                }
            }

            /// The value as a plain `f64`.
            #[must_use]
            pub const fn get(self) -> f64 {
                self.0
            }
        }

        impl TryFrom<f64> for $ty {
            type Error = DpError;
            fn try_from(value: f64) -> Result<Self> {
                Self::new(value)
            }
        }

        impl From<$ty> for f64 {
            fn from(value: $ty) -> f64 {
                value.0
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

/// Upper bound on σ. Beyond it no useful learning is possible, and the exact
/// integer noise sampler (see [`crate::noise`]) would need a coarser grid.
pub const MAX_NOISE_MULTIPLIER: f64 = 1e6;

dp_newtype!(
    /// The noise multiplier σ: the Gaussian noise added to the clipped sum has
    /// standard deviation σ·C per coordinate.
    NoiseMultiplier, "noise multiplier (sigma)", "0 < sigma <= 1e6",
    |v| v > 0.0 && v <= MAX_NOISE_MULTIPLIER
);

dp_newtype!(
    /// The Poisson sampling rate q: each example joins a step's batch
    /// independently with probability q (q = 1 means the full dataset).
    SampleRate, "sample rate (q)", "0 < q <= 1",
    |v| v > 0.0 && v <= 1.0
);

dp_newtype!(
    /// The δ of (ε, δ)-differential privacy.
    Delta, "delta", "0 < delta < 1",
    |v| v > 0.0 && v < 1.0
);

dp_newtype!(
    /// The ε of (ε, δ)-differential privacy.
    Epsilon, "epsilon", "0 <= epsilon (finite)",
    |v| v >= 0.0
);

dp_newtype!(
    /// The per-sample L2 clipping norm C.
    ClipNorm, "clip norm (C)", "0 < C (finite)",
    |v| v > 0.0
);

/// A target (ε, δ) that a training run must never exceed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacyBudget {
    /// The largest ε the run may spend.
    pub epsilon: Epsilon,
    /// The δ at which ε is measured.
    pub delta: Delta,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_enforced() {
        assert!(NoiseMultiplier::new(1.1).is_ok());
        assert!(matches!(
            NoiseMultiplier::new(0.0),
            Err(DpError::OutOfRange { .. })
        ));
        assert!(matches!(
            NoiseMultiplier::new(-1.0),
            Err(DpError::OutOfRange { .. })
        ));
        assert!(matches!(
            NoiseMultiplier::new(f64::NAN),
            Err(DpError::NotFinite { .. })
        ));
        assert!(SampleRate::new(1.0).is_ok());
        assert!(SampleRate::new(0.0).is_err());
        assert!(SampleRate::new(1.000_001).is_err());
        assert!(Delta::new(1.0).is_err());
        assert!(Delta::new(0.0).is_err());
        assert!(Delta::new(1e-5).is_ok());
        assert!(Epsilon::new(0.0).is_ok());
        assert!(Epsilon::new(f64::INFINITY).is_err());
        assert!(ClipNorm::new(0.0).is_err());
        assert_eq!(ClipNorm::new(2.5).map(ClipNorm::get), Ok(2.5));
    }

    #[test]
    fn serde_revalidates() {
        let q: SampleRate = serde_json::from_str("0.01").unwrap();
        assert_eq!(q.get(), 0.01);
        assert_eq!(serde_json::to_string(&q).unwrap(), "0.01");
        assert!(serde_json::from_str::<SampleRate>("1.5").is_err());
        assert!(serde_json::from_str::<Delta>("-0.1").is_err());
    }
}
