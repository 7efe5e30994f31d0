//! The crate's one error type.

use thiserror::Error;

/// Everything that can go wrong in `sphinx-dp`.
///
/// Every variant carries the offending values so that a caller (or the CLI) can
/// print an actionable message; nothing in this crate panics on user input.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum DpError {
    /// A DP parameter (σ, q, δ, ε, C, an RDP order, …) was NaN or infinite.
    #[error("{name} must be a finite number, got {value}")]
    NotFinite {
        /// Which parameter.
        name: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// A DP parameter was finite but outside its allowed range.
    #[error("{name} = {value} is out of range: expected {expected}")]
    OutOfRange {
        /// Which parameter.
        name: &'static str,
        /// The rejected value.
        value: f64,
        /// The allowed range, in words (e.g. `"0 < q <= 1"`).
        expected: &'static str,
    },
    /// A per-sample gradient did not have the aggregator's dimension.
    #[error("gradient has {got} coordinates, expected {expected}")]
    DimensionMismatch {
        /// The aggregator's dimension.
        expected: usize,
        /// The length that was passed.
        got: usize,
    },
    /// A per-sample gradient contained NaN or ±∞, so its norm (and clipping) is undefined.
    #[error("per-sample gradient {sample} contains a non-finite value at coordinate {coordinate}")]
    NonFiniteGradient {
        /// Index of the sample within the step.
        sample: usize,
        /// First offending coordinate.
        coordinate: usize,
    },
    /// The gradient dimension is so large that rounding to the noise grid would
    /// eat a noticeable part of the clipping norm (see [`crate::noise`]).
    #[error("gradient dimension {dim} is too large for the noise grid (at most {max})")]
    DimensionTooLarge {
        /// The requested dimension.
        dim: usize,
        /// The largest supported dimension for this σ.
        max: usize,
    },
    /// An integer accumulator would overflow (an absurdly large batch).
    #[error("batch too large: the exact integer sum would overflow after {samples} samples")]
    AccumulatorOverflow {
        /// Samples accumulated when the overflow was detected.
        samples: usize,
    },
    /// The dataset is empty, so the expected batch size q·N is zero.
    #[error("dataset size must be at least 1")]
    EmptyDataset,
    /// An RDP order grid was empty or contained an order ≤ 1.
    #[error("invalid RDP order grid: {reason}")]
    InvalidOrders {
        /// Why the grid was rejected.
        reason: &'static str,
    },
    /// No finite ε exists for the request (e.g. δ too small for every order of the grid).
    #[error("epsilon is infinite for this mechanism and delta on the order grid")]
    InfiniteEpsilon,
    /// Noise calibration could not reach the target ε within the σ search range.
    #[error("no noise multiplier up to {max_sigma} reaches epsilon {target}")]
    CalibrationFailed {
        /// The target ε.
        target: f64,
        /// The largest σ tried.
        max_sigma: f64,
    },
    /// Recording the step would take ε over the budget; the ledger is unchanged.
    #[error(
        "privacy budget exceeded: the step would spend epsilon {would_spend} > budget {budget}"
    )]
    BudgetExceeded {
        /// ε after the refused step.
        would_spend: f64,
        /// The ledger's ε budget.
        budget: f64,
    },
    /// The operating system's entropy source failed while seeding the CSPRNG.
    #[error("could not seed the CSPRNG from the operating system: {0}")]
    OsRng(String),
    /// A serialized accountant or ledger failed validation.
    #[error("invalid accountant state: {0}")]
    InvalidState(String),
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, DpError>;
