//! `sphinx-dp`: the differential-privacy half of DP-SGD for Sphinx.
//!
//! One DP-SGD step on a dataset of N examples (Abadi et al., "Deep Learning with
//! Differential Privacy", CCS 2016) draws a Poisson batch `B` (each example with
//! probability q), and releases
//!
//! ```text
//! ĝ = ( Σ_{i∈B} clip_C(g_i) + N(0, σ²C²·I) ) / (q·N),   clip_C(x) = x·min(1, C/‖x‖₂).
//! ```
//!
//! Each step is the Poisson-subsampled Gaussian mechanism with noise multiplier σ
//! and rate q; a run of T steps is accounted with Rényi DP (Mironov 2017;
//! Mironov, Talwar and Zhang 2019) and converted to (ε, δ)-DP with the tight
//! conversion of Balle et al. 2020.
//!
//! | module | implements |
//! |---|---|
//! | [`params`] | validated newtypes σ, q, δ, ε, C |
//! | [`sampler`] | Poisson sampling |
//! | [`clip`] | per-sample L2 clipping |
//! | [`noise`] | exact discrete Gaussian on a fine lattice (Canonne–Kamath–Steinke 2020), immune to floating-point attacks (Mironov 2012) |
//! | [`aggregate`] | the DP-SGD aggregation: clip → sum → noise → divide by q·N |
//! | [`rng`] | ChaCha20 CSPRNG, OS-seeded or seeded for tests |
//!
//! ```
//! use sphinx_dp::{ClipNorm, DpSgdAggregator, DpSgdConfig, NoiseMultiplier, SampleRate};
//! let config = DpSgdConfig {
//!     clip_norm: ClipNorm::new(1.0)?,
//!     noise_multiplier: NoiseMultiplier::new(1.0)?,
//!     sample_rate: SampleRate::new(0.5)?,
//!     dataset_size: 4,
//! };
//! let mut agg = DpSgdAggregator::new(2, config)?; // ChaCha20 seeded from the OS
//! let mut step = agg.begin_step();
//! step.add(&[3.0, 4.0])?;        // clipped to norm 1
//! let out = step.finish();       // noise N(0, 1) per coordinate, then / (0.5·4)
//! assert_eq!(out.clip_factors.len(), 1);
//! # Ok::<(), sphinx_dp::DpError>(())
//! ```

pub mod accountant;
pub mod aggregate;
pub mod calibrate;
pub mod clip;
pub mod error;
pub mod ledger;
pub mod noise;
pub mod params;
pub mod rdp;
pub mod rng;
pub mod sampler;

pub use accountant::{
    DpEvent, EpsilonReport, Mechanism, RdpAccountant, Sampler, StepRecord, epsilon_for,
};
pub use aggregate::{DpSgdAggregator, DpSgdConfig, DpStep, DpStepOutput};
pub use calibrate::{Calibration, calibrate_noise};
pub use clip::{ClipInfo, clip_factor, clip_in_place, l2_norm};
pub use error::{DpError, Result};
pub use ledger::BudgetLedger;
pub use noise::{DiscreteGaussian, LatticeGaussian};
pub use params::{ClipNorm, Delta, Epsilon, NoiseMultiplier, PrivacyBudget, SampleRate};
pub use rng::{DpRng, os_rng, seeded_rng};
pub use sampler::PoissonSampler;
