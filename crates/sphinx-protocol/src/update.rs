//! Iterate averaging of `W`: the model that a run exports is an exponential moving average
//! of the weights it went through, not its last, noisiest iterate.
//!
//! After step `t` the server sets `W̄ ← d·W̄ + (1 − d)·W_t` (`W̄⁰ = W⁰`); training goes on
//! from `W`, while export and private inference use `W̄` with the final `[b]`. The decay
//! `d` is public (fixed in [`Setup`](crate::messages::Setup)) and `W̄` is a function of the
//! noisy `W` iterates only, so it is post-processing of the DP-SGD output: the privacy
//! guarantee is that of the plain run. The encrypted biases are not averaged: an average
//! of `[b]` needs a plaintext-scalar multiply, i.e. a rescale per step, and the training
//! ciphertexts have a single level; the biases follow un-noised gradients, so their last
//! iterate carries no DP noise to average out anyway.

use ndarray::Array2;

use crate::error::{ProtocolError, Result};

/// The averaging of `W` (`decay = 0`: none, the export is the last iterate).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WeightAverage {
    /// `d ∈ [0, 1)`: the weight of the previous average at each step.
    pub decay: f32,
}

impl WeightAverage {
    /// No averaging: the protocol's original behaviour.
    pub const NONE: Self = Self { decay: 0.0 };

    /// Checks `d ∈ [0, 1)`.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] naming the bad decay.
    pub fn validate(self) -> Result<()> {
        if self.decay.is_finite() && (0.0..1.0).contains(&self.decay) {
            Ok(())
        } else {
            Err(ProtocolError::Malformed(format!(
                "weight-average decay {} is not in [0, 1)",
                self.decay
            )))
        }
    }

    /// Whether an average is kept at all.
    #[must_use]
    pub fn is_enabled(self) -> bool {
        self.decay > 0.0
    }

    /// `avg ← d·avg + (1 − d)·w`, layer by layer: the one definition that the server and
    /// the plaintext reference share, so both round identically.
    pub fn update(self, avg: &mut [Array2<f32>], w: &[Array2<f32>]) {
        let d = self.decay;
        for (a, w) in avg.iter_mut().zip(w) {
            a.zip_mut_with(w, |a, &w| *a = d * *a + (1.0 - d) * w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_follows_the_recursion() {
        let avg = WeightAverage { decay: 0.5 };
        assert!(avg.validate().is_ok() && avg.is_enabled());
        let mut a = vec![Array2::from_elem((1, 2), 0.0_f32)];
        avg.update(&mut a, &[Array2::from_elem((1, 2), 2.0)]);
        avg.update(&mut a, &[Array2::from_elem((1, 2), 4.0)]);
        // 0 → 1 → 2.5
        assert_eq!(a[0], Array2::from_elem((1, 2), 2.5));
        assert!(!WeightAverage::NONE.is_enabled());
    }

    #[test]
    fn out_of_range_decays_are_refused() {
        for decay in [1.0, -0.1, f32::NAN, f32::INFINITY] {
            assert!(WeightAverage { decay }.validate().is_err());
        }
    }
}
