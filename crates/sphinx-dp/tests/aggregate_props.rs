//! Property tests of the DP-SGD aggregation's sensitivity guarantee.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use sphinx_dp::{ClipNorm, DpSgdAggregator, DpSgdConfig, NoiseMultiplier, SampleRate};

fn config(clip: f64, sigma: f64) -> DpSgdConfig {
    DpSgdConfig {
        clip_norm: ClipNorm::new(clip).unwrap(),
        noise_multiplier: NoiseMultiplier::new(sigma).unwrap(),
        sample_rate: SampleRate::new(0.1).unwrap(),
        dataset_size: 100,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the gradient, one example moves the exact lattice sum by at most C
    /// in L2 (checked in integers), and the reported factor is min(1, C/‖g‖) up to
    /// the lattice margin.
    #[test]
    fn one_example_has_sensitivity_at_most_c(
        grad in prop::collection::vec(-1e3f32..1e3, 1..300),
        clip in 1e-3f64..10.0,
        sigma in 0.3f64..50.0,
        seed in any::<u64>(),
    ) {
        let mut agg = DpSgdAggregator::seeded(grad.len(), config(clip, sigma), seed).unwrap();
        let grid = agg.lattice().grid();
        let bound = 4u128.pow(agg.lattice().grid_bits().unsigned_abs());
        let mut step = agg.begin_step();
        let info = step.add(&grad).unwrap();
        let out = step.finish();
        let sq: u128 = out
            .clipped_sum
            .iter()
            .map(|x| {
                let r = (x / grid).round() as i128;
                r.unsigned_abs() * r.unsigned_abs()
            })
            .sum();
        prop_assert!(sq <= bound);
        let ideal = if info.norm > clip { clip / info.norm } else { 1.0 };
        prop_assert!(info.factor <= ideal);
        prop_assert!(info.factor >= ideal * 0.99);
        prop_assert!(out.gradient.iter().all(|x| x.is_finite()));
    }
}
