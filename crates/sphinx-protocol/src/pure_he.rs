//! The Pure-HE training baseline (DESIGN.md §3.3): the whole model encrypted, `W`
//! included, so every multiply-accumulate of a step is a ciphertext × ciphertext product
//! with relinearization and rescaling, and averaging the per-sample gradients over the
//! batch slots takes rotations.
//!
//! A full encrypted step of the MNIST CNN is millions of such operations (hours on two
//! cores), so the baseline is **measured per operation and extrapolated**: [`op_counts`]
//! counts the operations of one batch-packed step exactly from the architecture, and
//! [`measure_op_costs`] times them (parallel throughput on the current rayon pool) on the
//! cheapest secure set with any depth headroom, `N = 16384`, `L = 6`. That set is too
//! shallow for a real Pure-HE step (which needs bootstrapping or more levels), so the
//! estimate favours the baseline.

use std::time::Instant;

use rand::{CryptoRng, RngCore};
use rayon::prelude::*;
use sphinx_he::{Encoder, Evaluator, GaloisKeys, ParametersLiteral, RelinearizationKey, SecretKey};
use sphinx_nn::layers::Layer;
use sphinx_nn::model::{Model, ModelSpec};

use crate::error::Result;
use crate::plan::LayerPlan;

/// Homomorphic operations of one Pure-HE training step with batch-axis packing
/// (independent of the batch size up to the slot count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpCounts {
    /// Ciphertext × ciphertext multiply-accumulates, each relinearized and rescaled:
    /// forward `W·a`, backward `Wᵀ·δ`, per-sample weight gradients `δ·a`, and two per
    /// activation (a degree-2 polynomial and its derivative).
    pub mul_relin_rescale: u64,
    /// Rotations: summing each parameter's gradient over the batch slots.
    pub rotations: u64,
}

/// Counts the operations of one step of `spec` with `slots` slots per ciphertext.
///
/// # Errors
/// [`crate::ProtocolError::Nn`] for a bad architecture.
pub fn op_counts(spec: &ModelSpec, slots: usize) -> Result<OpCounts> {
    let model = Model::zeros(spec.clone())?;
    let mut counts = OpCounts::default();
    let first = model.param_layer_indices().first().copied().unwrap_or(0);
    let log_slots = slots.max(1).ilog2() as u64;
    for (i, layer) in model.layers().iter().enumerate() {
        match layer {
            Layer::Linear(_) | Layer::Conv2d(_) => {
                let plan = LayerPlan::of(layer)?;
                let mut macs = 0u64;
                for p in 0..plan.patch() {
                    for pos in 0..plan.positions() {
                        macs += u64::from(plan.input_at(p, pos).is_some());
                    }
                }
                macs *= plan.units() as u64;
                let passes = if i == first { 2 } else { 3 };
                counts.mul_relin_rescale += passes * macs;
                let params = (plan.weights() + plan.units()) as u64;
                counts.rotations += params * log_slots;
            }
            Layer::Relu(_) | Layer::Square(_) => {
                counts.mul_relin_rescale += 2 * layer.in_dim() as u64;
            }
            _ => {}
        }
    }
    Ok(counts)
}

/// Measured cost per operation (seconds, parallel throughput).
#[derive(Debug, Clone, PartialEq)]
pub struct OpCosts {
    /// The parameter set measured.
    pub params: ParametersLiteral,
    /// One ciphertext product with relinearization and rescale, at the top level.
    pub mul_relin_rescale: f64,
    /// One rotation at the top level.
    pub rotation: f64,
}

/// Times `reps` operations of each kind (at least 2), run in parallel on the current
/// rayon pool, on `ParametersLiteral::seal_n16384()`.
///
/// # Errors
/// [`crate::ProtocolError::He`] from the engine.
pub fn measure_op_costs<R: RngCore + CryptoRng>(reps: usize, rng: &mut R) -> Result<OpCosts> {
    let literal = ParametersLiteral::seal_n16384();
    let params = literal.build()?;
    let sk = SecretKey::generate(&params, rng)?;
    let rlk = RelinearizationKey::new(&sk, rng)?;
    let gk = GaloisKeys::new(&sk, &[1], false, rng)?;
    let encoder = Encoder::new(&params);
    let eval = Evaluator::new(&params);
    let reps = reps.max(2);
    let values: Vec<f64> = (0..params.slots()).map(|i| (i % 7) as f64 / 7.0).collect();
    let pt = encoder.encode(&values, params.scale(), params.max_level())?;
    let cts = (0..reps)
        .map(|_| sk.encrypt(&pt, rng))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let t = Instant::now();
    cts.par_iter()
        .zip(cts.par_iter().rev())
        .map(|(a, b)| Ok(eval.rescale(&eval.multiply_relin(a, b, &rlk)?)?))
        .collect::<Result<Vec<_>>>()?;
    let mul = t.elapsed().as_secs_f64() / reps as f64;
    let t = Instant::now();
    cts.par_iter()
        .map(|a| Ok(eval.rotate(a, 1, &gk)?))
        .collect::<Result<Vec<_>>>()?;
    let rot = t.elapsed().as_secs_f64() / reps as f64;
    Ok(OpCosts {
        params: literal,
        mul_relin_rescale: mul,
        rotation: rot,
    })
}

impl OpCounts {
    /// Seconds for one step at `costs`.
    #[must_use]
    pub fn seconds(&self, costs: &OpCosts) -> f64 {
        self.mul_relin_rescale as f64 * costs.mul_relin_rescale
            + self.rotations as f64 * costs.rotation
    }
}
