//! Redoing an interrupted step.
//!
//! When a step is cut off before the server committed it (lost connection, server crash),
//! the server rolls back to its last committed step and the client must redo the step. It
//! redoes it *identically*: [`Client::rewind`] returns both generators (encryption
//! randomness, and the Poisson sampling and noise of the aggregator) to their positions
//! at the step's start, so the redo draws the same batch, encrypts with the same seeds,
//! receives the same (deterministic) server results and releases the very same noisy
//! gradient. A release that may already have reached the server is thus repeated
//! bit for bit, never re-drawn: the server learns nothing new, and the ledger (which keeps
//! any step it recorded) stays an upper bound.

use super::Client;

/// The client's position at the start of a step (see [`Client::mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepMark {
    step: u64,
    rng_pos: u128,
    dp_rng_pos: u128,
}

impl StepMark {
    /// The step this mark starts.
    #[must_use]
    pub fn step(&self) -> u64 {
        self.step
    }
}

impl Client {
    /// Marks the start of the next step; take it before [`Client::start_step`].
    pub fn mark(&mut self) -> StepMark {
        StepMark {
            step: self.step,
            rng_pos: self.rng.get_word_pos(),
            dp_rng_pos: self.agg.rng_mut().get_word_pos(),
        }
    }

    /// Abandons the current step (if any) and returns to `mark`, so that the next
    /// [`Client::start_step`] redoes that step exactly. The privacy ledger keeps any step
    /// already recorded (an over-count, never an under-count).
    pub fn rewind(&mut self, mark: StepMark) {
        self.state = None;
        self.step = mark.step;
        self.rng.set_word_pos(mark.rng_pos);
        self.agg.rng_mut().set_word_pos(mark.dp_rng_pos);
        if self.last.is_some_and(|l| l.step >= mark.step) {
            self.last = None;
        }
    }
}
