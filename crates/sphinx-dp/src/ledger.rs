//! A privacy-budget ledger: refuses any step that would take ε over the budget.
//!
//! The ledger owns an [`RdpAccountant`] and a target (ε, δ). Before a step,
//! [`BudgetLedger::try_record_step`] computes the ε the run *would* have after it;
//! if that exceeds the budget it returns [`DpError::BudgetExceeded`] and leaves
//! the ledger exactly as it was, so the caller must not take the step (DESIGN.md
//! §3.1 step 6). The ledger serializes with its accountant history, so a resumed
//! run keeps counting from where it stopped.
//!
//! ```
//! use sphinx_dp::{BudgetLedger, Delta, DpEvent, Epsilon, NoiseMultiplier, PrivacyBudget, SampleRate};
//! let budget = PrivacyBudget { epsilon: Epsilon::new(1.0)?, delta: Delta::new(1e-5)? };
//! let mut ledger = BudgetLedger::new(budget);
//! let step = DpEvent::poisson_gaussian(SampleRate::new(0.01)?, NoiseMultiplier::new(1.0)?);
//! while ledger.can_take_step(step)? {
//!     ledger.try_record_step(step)?; // … and only then release the noisy gradient
//! }
//! assert!(ledger.spent()?.epsilon.get() <= 1.0);
//! assert!(ledger.try_record_step(step).is_err());
//! # Ok::<(), sphinx_dp::DpError>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::accountant::{DpEvent, EpsilonReport, RdpAccountant};
use crate::error::{DpError, Result};
use crate::params::PrivacyBudget;

/// Tracks spent privacy against a fixed (ε, δ) budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetLedger {
    budget: PrivacyBudget,
    accountant: RdpAccountant,
}

impl BudgetLedger {
    /// An empty ledger on the default order grid.
    #[must_use]
    pub fn new(budget: PrivacyBudget) -> Self {
        Self::with_accountant(budget, RdpAccountant::new())
    }

    /// A ledger that continues from an existing accountant. The accountant may
    /// already be over budget; then every further step is refused.
    #[must_use]
    pub const fn with_accountant(budget: PrivacyBudget, accountant: RdpAccountant) -> Self {
        Self { budget, accountant }
    }

    /// The budget.
    #[must_use]
    pub const fn budget(&self) -> PrivacyBudget {
        self.budget
    }

    /// The underlying accountant (history, RDP curve).
    #[must_use]
    pub const fn accountant(&self) -> &RdpAccountant {
        &self.accountant
    }

    /// ε spent so far at the budget's δ.
    ///
    /// # Errors
    /// [`DpError::InfiniteEpsilon`] if the recorded history has unbounded ε.
    pub fn spent(&self) -> Result<EpsilonReport> {
        self.accountant.epsilon(self.budget.delta)
    }

    /// Whether one more `event` fits in the budget.
    ///
    /// # Errors
    /// As [`spent`](Self::spent).
    pub fn can_take_step(&mut self, event: DpEvent) -> Result<bool> {
        self.can_take_steps(event, 1)
    }

    /// Whether `count` more `event`s fit in the budget.
    ///
    /// # Errors
    /// As [`spent`](Self::spent).
    pub fn can_take_steps(&mut self, event: DpEvent, count: u64) -> Result<bool> {
        match self
            .accountant
            .epsilon_after(event, count, self.budget.delta)
        {
            Ok(r) => Ok(r.epsilon <= self.budget.epsilon),
            Err(DpError::InfiniteEpsilon) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records one `event` if it fits, returning ε spent after it.
    ///
    /// # Errors
    /// [`DpError::BudgetExceeded`] (ledger unchanged) if the step would take ε
    /// over the budget.
    pub fn try_record_step(&mut self, event: DpEvent) -> Result<EpsilonReport> {
        self.try_record_steps(event, 1)
    }

    /// Records `count` repetitions of `event` if they all fit (all or nothing).
    ///
    /// # Errors
    /// [`DpError::BudgetExceeded`] (ledger unchanged) if they would take ε over
    /// the budget.
    pub fn try_record_steps(&mut self, event: DpEvent, count: u64) -> Result<EpsilonReport> {
        let after = match self
            .accountant
            .epsilon_after(event, count, self.budget.delta)
        {
            Ok(r) => r,
            Err(DpError::InfiniteEpsilon) => {
                return Err(DpError::BudgetExceeded {
                    would_spend: f64::INFINITY,
                    budget: self.budget.epsilon.get(),
                });
            }
            Err(e) => return Err(e),
        };
        if after.epsilon > self.budget.epsilon {
            return Err(DpError::BudgetExceeded {
                would_spend: after.epsilon.get(),
                budget: self.budget.epsilon.get(),
            });
        }
        self.accountant.compose(event, count);
        Ok(after)
    }

    /// How many more `event`s fit in the budget (binary search; at most `limit`).
    ///
    /// # Errors
    /// As [`spent`](Self::spent).
    pub fn remaining_steps(&mut self, event: DpEvent, limit: u64) -> Result<u64> {
        if !self.can_take_steps(event, 1)? {
            return Ok(0);
        }
        let (mut ok, mut bad) = (1u64, limit.saturating_add(1));
        if self.can_take_steps(event, limit)? {
            return Ok(limit);
        }
        while bad - ok > 1 {
            let mid = ok + (bad - ok) / 2;
            if self.can_take_steps(event, mid)? {
                ok = mid;
            } else {
                bad = mid;
            }
        }
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Delta, Epsilon, NoiseMultiplier, SampleRate};

    fn budget(eps: f64) -> PrivacyBudget {
        PrivacyBudget {
            epsilon: Epsilon::new(eps).unwrap(),
            delta: Delta::new(1e-5).unwrap(),
        }
    }

    #[test]
    fn refuses_over_budget_and_leaves_state_unchanged() {
        let step = DpEvent::poisson_gaussian(
            SampleRate::new(0.05).unwrap(),
            NoiseMultiplier::new(0.8).unwrap(),
        );
        let mut ledger = BudgetLedger::new(budget(8.0));
        let mut taken = 0u64;
        while ledger.can_take_step(step).unwrap() {
            ledger.try_record_step(step).unwrap();
            taken += 1;
        }
        assert!(taken > 0);
        let before = ledger.clone();
        let err = ledger.try_record_step(step).unwrap_err();
        assert!(
            matches!(err, DpError::BudgetExceeded { would_spend, budget } if would_spend > 8.0 && budget == 8.0)
        );
        assert_eq!(ledger, before);
        assert!(ledger.spent().unwrap().epsilon.get() <= 8.0);
        assert_eq!(ledger.accountant().history().len(), 1);
        assert_eq!(ledger.accountant().steps(), taken);
        // remaining_steps from scratch agrees with the greedy loop.
        let mut fresh = BudgetLedger::new(budget(8.0));
        assert_eq!(fresh.remaining_steps(step, 1_000_000).unwrap(), taken);
        assert!(fresh.try_record_steps(step, taken + 1).is_err());
        assert_eq!(fresh.accountant().steps(), 0);
    }

    #[test]
    fn ledger_round_trips_through_json() {
        let step = DpEvent::poisson_gaussian(
            SampleRate::new(0.01).unwrap(),
            NoiseMultiplier::new(1.0).unwrap(),
        );
        let mut ledger = BudgetLedger::new(budget(3.0));
        ledger.try_record_steps(step, 500).unwrap();
        let json = serde_json::to_string(&ledger).unwrap();
        let mut back: BudgetLedger = serde_json::from_str(&json).unwrap();
        assert_eq!(back.spent().unwrap(), ledger.spent().unwrap());
        assert_eq!(
            back.can_take_step(step).unwrap(),
            ledger.can_take_step(step).unwrap()
        );
    }
}
