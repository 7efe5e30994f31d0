//! Poisson sampling: each example joins a batch independently with probability q.
//!
//! This is the sampler the subsampled-Gaussian RDP analysis assumes (Mironov,
//! Talwar and Zhang 2019; Abadi et al. 2016). Batch sizes are random,
//! `Binomial(N, q)`, and may be empty; DP-SGD divides by the *expected* size
//! `q·N`, never the realized one, because the realized size is private.

use rand::CryptoRng;
use rand::distr::{Bernoulli, Distribution};

use crate::error::{DpError, Result};
use crate::params::SampleRate;

/// Draws Poisson-subsampled batches of indices `0..dataset_size`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoissonSampler {
    dataset_size: usize,
    rate: SampleRate,
    coin: Bernoulli,
}

impl PoissonSampler {
    /// A sampler over `dataset_size` examples with rate q.
    ///
    /// # Errors
    /// [`DpError::EmptyDataset`] if `dataset_size == 0`.
    pub fn new(dataset_size: usize, rate: SampleRate) -> Result<Self> {
        if dataset_size == 0 {
            return Err(DpError::EmptyDataset);
        }
        let coin = Bernoulli::new(rate.get()).map_err(|_| DpError::OutOfRange {
            name: "sample rate (q)",
            value: rate.get(),
            expected: "0 < q <= 1",
        })?;
        Ok(Self {
            dataset_size,
            rate,
            coin,
        })
    }

    /// Number of examples N.
    #[must_use]
    pub const fn dataset_size(&self) -> usize {
        self.dataset_size
    }

    /// The sampling rate q.
    #[must_use]
    pub const fn rate(&self) -> SampleRate {
        self.rate
    }

    /// The expected batch size `q·N`.
    #[must_use]
    pub fn expected_batch_size(&self) -> f64 {
        self.rate.get() * self.dataset_size as f64
    }

    /// One batch: the sorted indices of the examples that were drawn. It may be
    /// empty; callers must still apply the (pure-noise) update for an empty batch,
    /// or the realized batch size would leak.
    pub fn sample<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> Vec<usize> {
        (0..self.dataset_size)
            .filter(|_| self.coin.sample(rng))
            .collect()
    }

    /// Draws a batch into `out` (cleared first), reusing its allocation.
    pub fn sample_into<R: CryptoRng + ?Sized>(&self, rng: &mut R, out: &mut Vec<usize>) {
        out.clear();
        out.extend((0..self.dataset_size).filter(|_| self.coin.sample(rng)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded_rng;

    #[test]
    fn batch_sizes_are_binomial() {
        let n = 2_000;
        let q = 0.01;
        let sampler = PoissonSampler::new(n, SampleRate::new(q).unwrap()).unwrap();
        let mut rng = seeded_rng(7);
        let reps = 2_000;
        let sizes: Vec<f64> = (0..reps)
            .map(|_| sampler.sample(&mut rng).len() as f64)
            .collect();
        let mean = sizes.iter().sum::<f64>() / reps as f64;
        let var = sizes.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (reps as f64 - 1.0);
        let exp_mean = n as f64 * q;
        let exp_var = n as f64 * q * (1.0 - q);
        assert!((mean - exp_mean).abs() < 5.0 * (exp_var / reps as f64).sqrt());
        assert!((var / exp_var - 1.0).abs() < 0.2);
        assert!((sampler.expected_batch_size() - 20.0).abs() < 1e-12);
    }

    #[test]
    fn indices_are_sorted_unique_and_in_range() {
        let sampler = PoissonSampler::new(100, SampleRate::new(0.3).unwrap()).unwrap();
        let mut rng = seeded_rng(8);
        let mut batch = Vec::new();
        sampler.sample_into(&mut rng, &mut batch);
        assert!(batch.windows(2).all(|w| w[0] < w[1]));
        assert!(batch.iter().all(|&i| i < 100));
        let counts: Vec<usize> = (0..100)
            .map(|i| {
                let mut r = seeded_rng(100 + i);
                usize::from(sampler.sample(&mut r).contains(&5))
            })
            .collect();
        assert!(counts.iter().sum::<usize>() > 10);
    }

    #[test]
    fn empty_batches_happen_and_full_rate_takes_all() {
        let tiny = PoissonSampler::new(3, SampleRate::new(0.01).unwrap()).unwrap();
        let mut rng = seeded_rng(9);
        assert!((0..50).any(|_| tiny.sample(&mut rng).is_empty()));
        let all = PoissonSampler::new(5, SampleRate::new(1.0).unwrap()).unwrap();
        assert_eq!(all.sample(&mut rng), vec![0, 1, 2, 3, 4]);
        assert_eq!(
            PoissonSampler::new(0, SampleRate::new(0.5).unwrap()),
            Err(DpError::EmptyDataset)
        );
    }
}
