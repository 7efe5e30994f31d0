//! A stateful RDP accountant: composes heterogeneous steps, serializes its history.
//!
//! Rényi DP composes additively: if step `t` is `(α, ρ_t(α))`-RDP for every order
//! α, then the whole run is `(α, Σ_t ρ_t(α))`-RDP (Mironov 2017, Proposition 1).
//! The accountant keeps that sum on its order grid, plus the history of what
//! was composed, as `(event, count)` records: consecutive identical steps are one
//! record, so a run of 10⁵ identical steps is one line of JSON. (ε, δ) is obtained
//! with [`crate::rdp::epsilon_from_rdp`] (Balle et al. 2020).
//!
//! ```
//! use sphinx_dp::{Delta, DpEvent, NoiseMultiplier, RdpAccountant, SampleRate};
//! let mut acc = RdpAccountant::new();
//! let step = DpEvent::poisson_gaussian(SampleRate::new(0.01)?, NoiseMultiplier::new(1.1)?);
//! acc.compose(step, 10_000);
//! let report = acc.epsilon(Delta::new(1e-5)?)?;
//! assert!((report.epsilon.get() - 5.632).abs() < 1e-3); // dp-accounting: 5.63201
//! let json = serde_json::to_string(&acc).unwrap();
//! let back: RdpAccountant = serde_json::from_str(&json).unwrap();
//! assert_eq!(back.epsilon(Delta::new(1e-5)?)?, report);
//! # Ok::<(), sphinx_dp::DpError>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{DpError, Result};
use crate::params::{Delta, Epsilon, NoiseMultiplier, SampleRate};
use crate::rdp::{
    FractionalSeries, default_orders, epsilon_from_rdp, rdp_curve_with, rdp_gaussian,
    validate_orders,
};

/// How a step's batch was drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Sampler {
    /// Poisson sampling: each example independently with probability q.
    Poisson {
        /// The rate q.
        sample_rate: SampleRate,
    },
    /// No sampling: every example, every step.
    Full,
}

/// The noise mechanism applied to the (clipped) sum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Mechanism {
    /// Gaussian noise with standard deviation σ × (L2 sensitivity).
    Gaussian {
        /// σ.
        noise_multiplier: NoiseMultiplier,
    },
}

/// One private release: a mechanism applied to a sampled batch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpEvent {
    /// The noise mechanism.
    pub mechanism: Mechanism,
    /// The batch sampler.
    pub sampler: Sampler,
}

impl DpEvent {
    /// A DP-SGD step: the Gaussian mechanism on a Poisson batch.
    #[must_use]
    pub const fn poisson_gaussian(
        sample_rate: SampleRate,
        noise_multiplier: NoiseMultiplier,
    ) -> Self {
        Self {
            mechanism: Mechanism::Gaussian { noise_multiplier },
            sampler: Sampler::Poisson { sample_rate },
        }
    }

    /// The Gaussian mechanism on the whole dataset.
    #[must_use]
    pub const fn gaussian(noise_multiplier: NoiseMultiplier) -> Self {
        Self {
            mechanism: Mechanism::Gaussian { noise_multiplier },
            sampler: Sampler::Full,
        }
    }

    /// This event's RDP at each order (default fractional series).
    #[must_use]
    pub fn rdp(&self, orders: &[f64]) -> Vec<f64> {
        self.rdp_with(orders, FractionalSeries::default())
    }

    /// This event's RDP at each order, with a choice of fractional series.
    #[must_use]
    pub fn rdp_with(&self, orders: &[f64], series: FractionalSeries) -> Vec<f64> {
        let Mechanism::Gaussian { noise_multiplier } = self.mechanism;
        match self.sampler {
            Sampler::Poisson { sample_rate } => {
                rdp_curve_with(sample_rate, noise_multiplier, orders, series)
            }
            Sampler::Full => orders
                .iter()
                .map(|&a| rdp_gaussian(noise_multiplier, a))
                .collect(),
        }
    }
}

/// A run of identical consecutive steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// What each step did.
    pub event: DpEvent,
    /// How many times in a row.
    pub count: u64,
}

/// ε at a given δ, with the Rényi order that attains it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpsilonReport {
    /// ε.
    pub epsilon: Epsilon,
    /// δ.
    pub delta: Delta,
    /// The optimal order α on the grid.
    pub order: f64,
}

/// The accountant's serialized form (validated and re-derived on load).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountantState {
    format: String,
    version: u32,
    orders: Vec<f64>,
    #[serde(default)]
    series: FractionalSeries,
    history: Vec<StepRecord>,
}

const STATE_FORMAT: &str = "sphinx-dp/rdp-accountant";
const STATE_VERSION: u32 = 1;

/// RDP accountant for compositions of (subsampled) Gaussian mechanisms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AccountantState", into = "AccountantState")]
pub struct RdpAccountant {
    orders: Vec<f64>,
    series: FractionalSeries,
    history: Vec<StepRecord>,
    total: Vec<f64>,
    /// RDP curve of the most recent event, so per-step composition costs O(orders).
    cache: Option<(DpEvent, Vec<f64>)>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An empty accountant on [`default_orders`].
    #[must_use]
    pub fn new() -> Self {
        let orders = default_orders();
        Self {
            total: vec![0.0; orders.len()],
            orders,
            series: FractionalSeries::default(),
            history: Vec::new(),
            cache: None,
        }
    }

    /// An empty accountant on a custom order grid.
    ///
    /// # Errors
    /// [`DpError::InvalidOrders`] unless every order is finite and > 1.
    pub fn with_orders(orders: Vec<f64>) -> Result<Self> {
        Self::with_series(orders, FractionalSeries::default())
    }

    /// An empty accountant on a custom grid and fractional-series mode
    /// ([`FractionalSeries::Signed`] is exact and tighter).
    ///
    /// # Errors
    /// [`DpError::InvalidOrders`] unless every order is finite and > 1.
    pub fn with_series(orders: Vec<f64>, series: FractionalSeries) -> Result<Self> {
        validate_orders(&orders)?;
        Ok(Self {
            total: vec![0.0; orders.len()],
            orders,
            series,
            history: Vec::new(),
            cache: None,
        })
    }

    /// The order grid.
    #[must_use]
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// How fractional orders are evaluated.
    #[must_use]
    pub const fn series(&self) -> FractionalSeries {
        self.series
    }

    /// The composed RDP at each order.
    #[must_use]
    pub fn rdp(&self) -> &[f64] {
        &self.total
    }

    /// Everything composed so far, consecutive identical events merged.
    #[must_use]
    pub fn history(&self) -> &[StepRecord] {
        &self.history
    }

    /// Total number of steps composed.
    #[must_use]
    pub fn steps(&self) -> u64 {
        self.history.iter().map(|r| r.count).sum()
    }

    /// Composes `count` repetitions of `event`.
    pub fn compose(&mut self, event: DpEvent, count: u64) {
        if count == 0 {
            return;
        }
        let curve = cached_rdp(&mut self.cache, &self.orders, self.series, event);
        for (t, r) in self.total.iter_mut().zip(curve) {
            *t += count as f64 * r;
        }
        match self.history.last_mut() {
            Some(last) if last.event == event => last.count = last.count.saturating_add(count),
            _ => self.history.push(StepRecord { event, count }),
        }
    }

    /// ε at δ for everything composed so far.
    ///
    /// # Errors
    /// [`DpError::InfiniteEpsilon`] if no order of the grid gives a finite ε.
    pub fn epsilon(&self, delta: Delta) -> Result<EpsilonReport> {
        report(&self.orders, &self.total, delta)
    }

    /// ε at δ if `count` more steps of `event` were composed; `self` is unchanged
    /// (apart from its RDP cache).
    ///
    /// # Errors
    /// As [`epsilon`](Self::epsilon).
    pub fn epsilon_after(
        &mut self,
        event: DpEvent,
        count: u64,
        delta: Delta,
    ) -> Result<EpsilonReport> {
        let curve = cached_rdp(&mut self.cache, &self.orders, self.series, event);
        let total: Vec<f64> = self
            .total
            .iter()
            .zip(curve)
            .map(|(t, r)| t + count as f64 * r)
            .collect();
        report(&self.orders, &total, delta)
    }
}

/// The RDP curve of `event`, recomputed only when the event changes.
fn cached_rdp<'c>(
    cache: &'c mut Option<(DpEvent, Vec<f64>)>,
    orders: &[f64],
    series: FractionalSeries,
    event: DpEvent,
) -> &'c [f64] {
    let fresh = !matches!(cache, Some((e, _)) if *e == event);
    if fresh {
        *cache = Some((event, event.rdp_with(orders, series)));
    }
    match cache {
        Some((_, curve)) => curve,
        None => &[],
    }
}

fn report(orders: &[f64], rdp: &[f64], delta: Delta) -> Result<EpsilonReport> {
    let (eps, order) = epsilon_from_rdp(orders, rdp, delta)?;
    Ok(EpsilonReport {
        epsilon: Epsilon::new(eps)?,
        delta,
        order,
    })
}

/// ε and the optimal order after `steps` DP-SGD steps with rate q and noise σ,
/// on [`default_orders`].
///
/// ```
/// use sphinx_dp::{epsilon_for, Delta, NoiseMultiplier, SampleRate};
/// let r = epsilon_for(SampleRate::new(0.01)?, NoiseMultiplier::new(1.0)?, 1_000, Delta::new(1e-5)?)?;
/// assert!((r.epsilon.get() - 2.1014).abs() < 1e-3); // dp-accounting: 2.10137
/// assert_eq!(r.order, 7.8);
/// # Ok::<(), sphinx_dp::DpError>(())
/// ```
///
/// # Errors
/// [`DpError::InfiniteEpsilon`] if ε is unbounded on the grid.
pub fn epsilon_for(
    sample_rate: SampleRate,
    noise_multiplier: NoiseMultiplier,
    steps: u64,
    delta: Delta,
) -> Result<EpsilonReport> {
    let mut acc = RdpAccountant::new();
    acc.compose(
        DpEvent::poisson_gaussian(sample_rate, noise_multiplier),
        steps,
    );
    acc.epsilon(delta)
}

impl From<RdpAccountant> for AccountantState {
    fn from(acc: RdpAccountant) -> Self {
        Self {
            format: STATE_FORMAT.to_owned(),
            version: STATE_VERSION,
            orders: acc.orders,
            series: acc.series,
            history: acc.history,
        }
    }
}

impl TryFrom<AccountantState> for RdpAccountant {
    type Error = DpError;

    fn try_from(state: AccountantState) -> Result<Self> {
        if state.format != STATE_FORMAT || state.version != STATE_VERSION {
            return Err(DpError::InvalidState(format!(
                "expected {STATE_FORMAT} version {STATE_VERSION}, found {} version {}",
                state.format, state.version
            )));
        }
        if state.history.iter().any(|r| r.count == 0) {
            return Err(DpError::InvalidState("a history record has count 0".into()));
        }
        let mut acc = Self::with_series(state.orders, state.series)?;
        for record in state.history {
            acc.compose(record.event, record.count);
        }
        Ok(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(q: f64, s: f64) -> DpEvent {
        DpEvent::poisson_gaussian(
            SampleRate::new(q).unwrap(),
            NoiseMultiplier::new(s).unwrap(),
        )
    }

    #[test]
    fn composition_is_additive_and_history_is_compressed() {
        let d = Delta::new(1e-5).unwrap();
        let mut a = RdpAccountant::new();
        for _ in 0..100 {
            a.compose(ev(0.01, 1.0), 1);
        }
        a.compose(ev(0.02, 2.0), 50);
        a.compose(ev(0.01, 1.0), 10);
        assert_eq!(a.history().len(), 3);
        assert_eq!(a.history()[0].count, 100);
        assert_eq!(a.steps(), 160);
        let mut b = RdpAccountant::new();
        b.compose(ev(0.01, 1.0), 110);
        b.compose(ev(0.02, 2.0), 50);
        for (x, y) in a.rdp().iter().zip(b.rdp()) {
            assert!((x - y).abs() <= 1e-12 * x.abs().max(1.0));
        }
        let ea = a.epsilon(d).unwrap();
        let eb = b.epsilon(d).unwrap();
        assert!((ea.epsilon.get() - eb.epsilon.get()).abs() < 1e-9);
        // Heterogeneous composition costs more than either part alone.
        let mut c = RdpAccountant::new();
        c.compose(ev(0.01, 1.0), 110);
        assert!(c.epsilon(d).unwrap().epsilon < ea.epsilon);
    }

    #[test]
    fn epsilon_after_does_not_mutate() {
        let d = Delta::new(1e-5).unwrap();
        let mut a = RdpAccountant::new();
        a.compose(ev(0.01, 1.0), 100);
        let before = a.epsilon(d).unwrap();
        let after = a.epsilon_after(ev(0.01, 1.0), 100, d).unwrap();
        assert_eq!(a.epsilon(d).unwrap(), before);
        assert!(after.epsilon > before.epsilon);
        a.compose(ev(0.01, 1.0), 100);
        assert_eq!(a.epsilon(d).unwrap(), after);
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let mut a = RdpAccountant::new();
        a.compose(ev(0.004, 1.1), 1000);
        a.compose(DpEvent::gaussian(NoiseMultiplier::new(5.0).unwrap()), 2);
        let json = serde_json::to_string(&a).unwrap();
        assert!(
            json.contains("\"poisson\"")
                && json.contains("\"full\"")
                && json.contains("\"gaussian\"")
        );
        let back: RdpAccountant = serde_json::from_str(&json).unwrap();
        assert_eq!(back.history(), a.history());
        assert_eq!(back.rdp(), a.rdp());
        let bad_q = json.replace("0.004", "1.5");
        assert!(serde_json::from_str::<RdpAccountant>(&bad_q).is_err());
        let bad_version = json.replace("\"version\":1", "\"version\":9");
        assert!(serde_json::from_str::<RdpAccountant>(&bad_version).is_err());
        let zero = json.replace("\"count\":1000", "\"count\":0");
        assert!(serde_json::from_str::<RdpAccountant>(&zero).is_err());
    }

    #[test]
    fn empty_accountant_has_zero_epsilon() {
        let a = RdpAccountant::new();
        assert_eq!(
            a.epsilon(Delta::new(1e-5).unwrap()).unwrap().epsilon.get(),
            0.0
        );
        assert!(RdpAccountant::with_orders(vec![]).is_err());
        assert!(RdpAccountant::with_orders(vec![1.0]).is_err());
    }

    #[test]
    fn full_batch_gaussian_matches_closed_form() {
        // One Gaussian release with σ = 5: RDP α/(2σ²) = α/50 at every order.
        let mut a = RdpAccountant::with_orders(vec![2.0, 10.0]).unwrap();
        a.compose(DpEvent::gaussian(NoiseMultiplier::new(5.0).unwrap()), 1);
        assert!((a.rdp()[0] - 0.04).abs() < 1e-15);
        assert!((a.rdp()[1] - 0.2).abs() < 1e-15);
    }
}
