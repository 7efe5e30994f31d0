//! The DP-SGD gradient aggregation, as explicit phases.
//!
//! For a Poisson-sampled batch `B` of per-sample gradients `g_i ∈ ℝ^d`
//! (Abadi et al. 2016, Algorithm 1; DESIGN.md §3.1 step 5):
//!
//! ```text
//! 1. clip    ḡ_i = g_i · min(1, C/‖g_i‖₂)
//! 2. sum     s   = Σ_{i∈B} ḡ_i
//! 3. noise   s̃   = s + N(0, σ²C²·I_d)
//! 4. scale   ĝ   = s̃ / (q·N)          (the *expected* batch size)
//! ```
//!
//! Steps 1–3 are done exactly on the lattice `g·ℤ^d` of [`crate::noise`]: each
//! clipped gradient is rounded to the lattice, its integer L2 norm is checked to be
//! at most `C/g = 2^k` (so the sensitivity is exactly C), the sum is an `i64`
//! vector, and the noise is an exact discrete Gaussian. Step 4 is
//! post-processing. Dividing by the expected rather than the realized batch size
//! keeps the realized size (itself private) out of the update; empty batches
//! produce a pure-noise update, which must still be applied.

use crate::clip::{ClipInfo, clip_factor, l2_norm};
use crate::error::{DpError, Result};
use crate::noise::LatticeGaussian;
use crate::params::{ClipNorm, NoiseMultiplier, SampleRate};
use crate::rng::{DpRng, os_rng, seeded_rng};
use crate::sampler::PoissonSampler;

/// Largest fraction of C that rounding to the lattice may take from the clip bound.
const MAX_ROUNDING_SHRINK: f64 = 0.01;

/// The DP-SGD hyperparameters that the aggregation needs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DpSgdConfig {
    /// Per-sample L2 clip norm C.
    pub clip_norm: ClipNorm,
    /// Noise multiplier σ (noise std σ·C on the sum).
    pub noise_multiplier: NoiseMultiplier,
    /// Poisson sampling rate q.
    pub sample_rate: SampleRate,
    /// Number of training examples N (the expected batch size is q·N).
    pub dataset_size: usize,
}

/// The result of one aggregated step.
#[derive(Debug, Clone, PartialEq)]
pub struct DpStepOutput {
    /// The noisy averaged gradient `(Σ clipped + noise) / (q·N)`, length d.
    pub gradient: Vec<f32>,
    /// Realized batch size (private: do not send it anywhere).
    pub batch_size: usize,
    /// Per-sample L2 norms before clipping, in the order samples were added.
    pub norms: Vec<f64>,
    /// Per-sample factors actually applied (`≈ min(1, C/‖g‖)`, slightly below it
    /// when the lattice rounding margin was needed).
    pub clip_factors: Vec<f64>,
    /// The noise-free sum of the clipped, lattice-rounded gradients (for tests
    /// against a reference implementation; private).
    pub clipped_sum: Vec<f64>,
}

/// Clips, sums, noises and scales per-sample gradients of a fixed dimension.
///
/// ```
/// use sphinx_dp::{ClipNorm, DpSgdAggregator, DpSgdConfig, NoiseMultiplier, SampleRate};
/// let config = DpSgdConfig {
///     clip_norm: ClipNorm::new(1.0)?,
///     noise_multiplier: NoiseMultiplier::new(1.1)?,
///     sample_rate: SampleRate::new(0.01)?,
///     dataset_size: 60_000,
/// };
/// let mut agg = DpSgdAggregator::seeded(3, config, 42)?; // `new` seeds from the OS
/// let batch = agg.sample_batch();                         // Poisson, may be empty
/// let per_sample: Vec<Vec<f32>> = batch.iter().map(|_| vec![3.0, 0.0, 4.0]).collect();
/// let out = agg.aggregate(&per_sample)?;
/// assert_eq!(out.gradient.len(), 3);
/// assert_eq!(out.batch_size, batch.len());
/// # Ok::<(), sphinx_dp::DpError>(())
/// ```
///
/// Deliberately not `Clone`: a clone would replay the same noise. `Debug` omits
/// the generator state.
pub struct DpSgdAggregator {
    dim: usize,
    config: DpSgdConfig,
    noise: LatticeGaussian,
    sampler: PoissonSampler,
    /// Clip bound used before rounding: C minus the worst-case rounding error g·√d/2.
    inner_bound: f64,
    /// `(C/g)² = 4^k`: exact bound on a rounded gradient's squared lattice norm.
    max_lattice_sq: u128,
    rng: DpRng,
}

impl std::fmt::Debug for DpSgdAggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpSgdAggregator")
            .field("dim", &self.dim)
            .field("config", &self.config)
            .field("noise", &self.noise)
            .finish_non_exhaustive()
    }
}

impl DpSgdAggregator {
    /// An aggregator for `dim`-dimensional gradients, with a ChaCha20 CSPRNG
    /// seeded from the operating system.
    ///
    /// # Errors
    /// [`DpError::EmptyDataset`] if `config.dataset_size == 0`,
    /// [`DpError::DimensionTooLarge`] if rounding to the noise lattice would use
    /// more than 1% of C (only for enormous `dim` or σ), [`DpError::OsRng`].
    pub fn new(dim: usize, config: DpSgdConfig) -> Result<Self> {
        Self::with_rng(dim, config, os_rng()?)
    }

    /// Like [`new`](Self::new) with a deterministic seed: for tests and
    /// reproducible experiments only.
    ///
    /// # Errors
    /// As [`new`](Self::new), except [`DpError::OsRng`].
    pub fn seeded(dim: usize, config: DpSgdConfig, seed: u64) -> Result<Self> {
        Self::with_rng(dim, config, seeded_rng(seed))
    }

    /// Like [`new`](Self::new) with a caller-provided ChaCha20 generator.
    ///
    /// # Errors
    /// As [`seeded`](Self::seeded).
    pub fn with_rng(dim: usize, config: DpSgdConfig, rng: DpRng) -> Result<Self> {
        let sampler = PoissonSampler::new(config.dataset_size, config.sample_rate)?;
        let noise = LatticeGaussian::new(config.noise_multiplier, config.clip_norm)?;
        let c = config.clip_norm.get();
        let shrink = noise.grid() * (dim as f64).sqrt() / 2.0;
        if shrink > MAX_ROUNDING_SHRINK * c {
            let ratio = 2.0 * MAX_ROUNDING_SHRINK * c / noise.grid();
            return Err(DpError::DimensionTooLarge {
                dim,
                max: (ratio * ratio) as usize,
            });
        }
        let bits = noise.grid_bits().unsigned_abs();
        Ok(Self {
            dim,
            config,
            noise,
            sampler,
            inner_bound: c - shrink,
            max_lattice_sq: 1u128 << (2 * bits),
            rng,
        })
    }

    /// Gradient dimension d.
    #[must_use]
    pub const fn dim(&self) -> usize {
        self.dim
    }

    /// The hyperparameters.
    #[must_use]
    pub const fn config(&self) -> &DpSgdConfig {
        &self.config
    }

    /// The expected batch size `q·N` that sums are divided by.
    #[must_use]
    pub fn expected_batch_size(&self) -> f64 {
        self.sampler.expected_batch_size()
    }

    /// Per-coordinate noise standard deviation on the sum (≥ σ·C, equal up to 1e-12).
    #[must_use]
    pub fn noise_std(&self) -> f64 {
        self.noise.std_dev()
    }

    /// The noise lattice in use.
    #[must_use]
    pub const fn lattice(&self) -> &LatticeGaussian {
        &self.noise
    }

    /// The aggregator's CSPRNG (use it for anything else the step needs to draw).
    pub fn rng_mut(&mut self) -> &mut DpRng {
        &mut self.rng
    }

    /// Draws the next Poisson batch (sorted indices into the dataset, possibly empty).
    pub fn sample_batch(&mut self) -> Vec<usize> {
        self.sampler.sample(&mut self.rng)
    }

    /// Starts a step: feed per-sample gradients with [`DpStep::add`], then
    /// [`DpStep::finish`]. Nothing is released until `finish`.
    pub fn begin_step(&mut self) -> DpStep<'_> {
        DpStep {
            sum: vec![0; self.dim],
            lattice: vec![0; self.dim],
            norms: Vec::new(),
            factors: Vec::new(),
            agg: self,
        }
    }

    /// All phases at once for an iterator of per-sample gradients (`&[f32]`,
    /// `Vec<f32>`, …), e.g. `&Vec<Vec<f32>>` or `rows.chunks(d)`.
    ///
    /// # Errors
    /// [`DpError::DimensionMismatch`], [`DpError::NonFiniteGradient`],
    /// [`DpError::AccumulatorOverflow`]; no noise is drawn on error.
    pub fn aggregate<I>(&mut self, grads: I) -> Result<DpStepOutput>
    where
        I: IntoIterator,
        I::Item: AsRef<[f32]>,
    {
        let mut step = self.begin_step();
        for g in grads {
            step.add(g.as_ref())?;
        }
        Ok(step.finish())
    }

    /// [`aggregate`](Self::aggregate) for a row-major `batch × d` matrix.
    ///
    /// # Errors
    /// [`DpError::DimensionMismatch`] if `rows.len()` is not a multiple of d
    /// (`got` is then `rows.len()`), plus those of [`aggregate`](Self::aggregate).
    pub fn aggregate_rows(&mut self, rows: &[f32]) -> Result<DpStepOutput> {
        if self.dim == 0 {
            return if rows.is_empty() {
                self.aggregate(std::iter::empty::<&[f32]>())
            } else {
                Err(DpError::DimensionMismatch {
                    expected: 0,
                    got: rows.len(),
                })
            };
        }
        if !rows.len().is_multiple_of(self.dim) {
            return Err(DpError::DimensionMismatch {
                expected: self.dim,
                got: rows.len(),
            });
        }
        let dim = self.dim;
        self.aggregate(rows.chunks_exact(dim))
    }
}

/// One step in progress (see [`DpSgdAggregator::begin_step`]).
#[derive(Debug)]
pub struct DpStep<'a> {
    agg: &'a mut DpSgdAggregator,
    sum: Vec<i64>,
    lattice: Vec<i64>,
    norms: Vec<f64>,
    factors: Vec<f64>,
}

impl DpStep<'_> {
    /// Phases 1–2 for one example: clip its gradient, round it to the lattice,
    /// and add it to the exact sum.
    ///
    /// # Errors
    /// [`DpError::DimensionMismatch`], [`DpError::NonFiniteGradient`] (the sum is
    /// then unchanged), [`DpError::AccumulatorOverflow`] after about 2^63/2^k samples.
    pub fn add(&mut self, grad: &[f32]) -> Result<ClipInfo> {
        self.add_parts(&[grad])
    }

    /// Like [`add`](Self::add) for one example whose gradient is split into parts
    /// (e.g. one slice per layer), concatenated in order; the parts are clipped
    /// *jointly* (one norm over all of them), as DESIGN.md §3.1 requires.
    ///
    /// # Errors
    /// As [`add`](Self::add); `DimensionMismatch` compares the total length.
    pub fn add_parts(&mut self, parts: &[&[f32]]) -> Result<ClipInfo> {
        let sample = self.norms.len();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total != self.agg.dim {
            return Err(DpError::DimensionMismatch {
                expected: self.agg.dim,
                got: total,
            });
        }
        let mut sq_norm = 0.0f64;
        let mut offset = 0;
        for part in parts {
            let n = l2_norm(part).map_err(|e| match e {
                DpError::NonFiniteGradient { coordinate, .. } => DpError::NonFiniteGradient {
                    sample,
                    coordinate: offset + coordinate,
                },
                other => other,
            })?;
            sq_norm += n * n;
            offset += part.len();
        }
        let norm = sq_norm.sqrt();
        // Each rounded coordinate is at most 2^k in magnitude, so n samples sum to ≤ n·2^k.
        let per_sample_max = self.agg.max_lattice_sq.isqrt().max(1);
        let headroom = (i64::MAX as u128) / per_sample_max;
        if (sample as u128) + 1 > headroom {
            return Err(DpError::AccumulatorOverflow { samples: sample });
        }
        let grid = self.agg.noise.grid();
        let mut factor = clip_factor(norm, self.agg.inner_bound);
        loop {
            let scale = factor / grid;
            let mut sq: u128 = 0;
            let values = parts.iter().flat_map(|p| p.iter());
            for (dst, &v) in self.lattice.iter_mut().zip(values) {
                // |v·scale| ≤ 2^k(1 + tiny) ≤ 2^41, far inside i64. Rounding half
                // away from zero via a truncating cast: `f64::round` is a libm call
                // on baseline x86-64. Any deterministic rounding is fine, because
                // the exact norm check below bounds the sensitivity.
                let x = f64::from(v) * scale;
                let r = (x + 0.5f64.copysign(x)) as i64;
                *dst = r;
                sq += u128::from(r.unsigned_abs()).pow(2);
            }
            // Exact integer check that the sensitivity is at most C; the margin in
            // `inner_bound` makes a retry practically never happen.
            if sq <= self.agg.max_lattice_sq {
                break;
            }
            factor *= 1.0 - f64::EPSILON.sqrt();
        }
        for (s, &r) in self.sum.iter_mut().zip(&self.lattice) {
            *s += r;
        }
        self.norms.push(norm);
        self.factors.push(factor);
        Ok(ClipInfo { norm, factor })
    }

    /// Number of examples added so far.
    #[must_use]
    pub fn batch_size(&self) -> usize {
        self.norms.len()
    }

    /// Phases 3–4: adds exact lattice Gaussian noise to the sum and divides by the
    /// expected batch size q·N.
    #[must_use]
    pub fn finish(self) -> DpStepOutput {
        let grid = self.agg.noise.grid();
        let scale = grid / self.agg.expected_batch_size();
        let noise = self.agg.noise;
        let gradient = self
            .sum
            .iter()
            .map(|&s| {
                let n = noise.sample_lattice(&mut self.agg.rng);
                let noisy = i128::from(s) + i128::from(n);
                (noisy as f64 * scale) as f32
            })
            .collect();
        DpStepOutput {
            gradient,
            batch_size: self.norms.len(),
            clipped_sum: self.sum.iter().map(|&s| s as f64 * grid).collect(),
            norms: self.norms,
            clip_factors: self.factors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sigma: f64, q: f64, n: usize) -> DpSgdConfig {
        DpSgdConfig {
            clip_norm: ClipNorm::new(1.0).unwrap(),
            noise_multiplier: NoiseMultiplier::new(sigma).unwrap(),
            sample_rate: SampleRate::new(q).unwrap(),
            dataset_size: n,
        }
    }

    #[test]
    fn clipped_sum_matches_reference_semantics() {
        let mut agg = DpSgdAggregator::seeded(3, config(1.0, 0.5, 4), 1).unwrap();
        let grads = vec![vec![3.0f32, 0.0, 4.0], vec![0.1, 0.2, -0.2]];
        let out = agg.aggregate(&grads).unwrap();
        assert_eq!(out.batch_size, 2);
        assert_eq!(
            out.norms,
            vec![
                5.0,
                f64::from(0.1f32).hypot(0.2f32.into()).hypot(0.2f32.into())
            ]
        );
        assert!((out.clip_factors[0] - 0.2).abs() < 1e-6);
        assert!((out.clip_factors[1] - 1.0).abs() < 1e-6);
        let expected = [0.6 + 0.1, 0.2, 0.8 - 0.2];
        for (got, want) in out.clipped_sum.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn noise_and_scaling_have_the_right_distribution() {
        // Expected batch q·N = 2; σ·C = 0.5; the averaged noise has std 0.25.
        let dim = 20_000;
        let mut agg = DpSgdAggregator::seeded(dim, config(0.5, 0.5, 4), 2).unwrap();
        let grad = vec![0.001f32; dim];
        let out = agg.aggregate([&grad[..]]).unwrap();
        let mean_target = f64::from(0.001f32) / 2.0;
        let n = dim as f64;
        let mean = out.gradient.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = out
            .gradient
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        assert!(
            (mean - mean_target).abs() < 5.0 * 0.25 / n.sqrt(),
            "mean {mean}"
        );
        assert!(
            (var / 0.0625 - 1.0).abs() < 5.0 * (2.0 / n).sqrt(),
            "var {var}"
        );
    }

    #[test]
    fn lattice_norm_never_exceeds_clip() {
        let dim = 1000;
        let mut agg = DpSgdAggregator::seeded(dim, config(1.0, 0.1, 100), 3).unwrap();
        let mut step = agg.begin_step();
        let g: Vec<f32> = (0..dim).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        step.add(&g).unwrap();
        let out = step.finish();
        let norm = out.clipped_sum.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(norm <= 1.0, "{norm}");
        assert!(norm > 0.999, "{norm}");
    }

    #[test]
    fn empty_batch_is_pure_noise_and_rows_work() {
        let mut agg = DpSgdAggregator::seeded(4, config(1.0, 0.25, 8), 4).unwrap();
        let out = agg.aggregate(std::iter::empty::<&[f32]>()).unwrap();
        assert_eq!(out.batch_size, 0);
        assert!(out.clipped_sum.iter().all(|&x| x == 0.0));
        assert!(out.gradient.iter().any(|&x| x != 0.0));
        let rows = [1.0f32, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let out = agg.aggregate_rows(&rows).unwrap();
        assert_eq!(out.batch_size, 2);
        assert!(matches!(
            agg.aggregate_rows(&rows[..5]),
            Err(DpError::DimensionMismatch { .. })
        ));
    }

    #[test]
    fn bad_gradients_are_errors_not_panics() {
        let mut agg = DpSgdAggregator::seeded(2, config(1.0, 0.5, 4), 5).unwrap();
        let mut step = agg.begin_step();
        assert!(matches!(
            step.add(&[1.0]),
            Err(DpError::DimensionMismatch {
                expected: 2,
                got: 1
            })
        ));
        step.add(&[1.0, 0.0]).unwrap();
        assert_eq!(
            step.add(&[f32::INFINITY, 0.0]),
            Err(DpError::NonFiniteGradient {
                sample: 1,
                coordinate: 0
            })
        );
        assert_eq!(step.batch_size(), 1);
        assert!(DpSgdAggregator::seeded(2, config(1.0, 0.5, 0), 5).is_err());
    }

    #[test]
    fn parts_are_clipped_jointly() {
        let mut a = DpSgdAggregator::seeded(4, config(1.0, 0.5, 4), 11).unwrap();
        let mut b = DpSgdAggregator::seeded(4, config(1.0, 0.5, 4), 11).unwrap();
        let mut sa = a.begin_step();
        let ia = sa.add_parts(&[&[3.0, 0.0], &[0.0, 4.0]]).unwrap();
        let mut sb = b.begin_step();
        let ib = sb.add(&[3.0, 0.0, 0.0, 4.0]).unwrap();
        assert_eq!(ia, ib);
        assert_eq!(ia.norm, 5.0);
        assert_eq!(sa.finish(), sb.finish());
        let mut c = DpSgdAggregator::seeded(4, config(1.0, 0.5, 4), 11).unwrap();
        let mut sc = c.begin_step();
        assert_eq!(
            sc.add_parts(&[&[1.0], &[2.0, f32::NAN, 0.0]]),
            Err(DpError::NonFiniteGradient {
                sample: 0,
                coordinate: 2
            })
        );
        assert!(sc.add_parts(&[&[1.0], &[2.0]]).is_err());
    }

    #[test]
    fn same_seed_same_output() {
        let grads = vec![vec![0.3f32, -0.4], vec![1.0, 1.0]];
        let a = DpSgdAggregator::seeded(2, config(1.0, 0.5, 4), 9)
            .unwrap()
            .aggregate(&grads)
            .unwrap();
        let b = DpSgdAggregator::seeded(2, config(1.0, 0.5, 4), 9)
            .unwrap()
            .aggregate(&grads)
            .unwrap();
        assert_eq!(a, b);
    }
}
