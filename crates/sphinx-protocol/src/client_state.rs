//! Snapshots of the client's resumable state, so that training survives a crash of the
//! client process.
//!
//! A [`Client`] is a deterministic function of its two generator seeds (key generation
//! and encryption randomness; Poisson sampling and noise), its configuration, and four
//! values that change each step: the step counter, the two generators' positions and the
//! privacy ledger. A [`ClientSnapshot`] holds those four. To resume, the data owner rebuilds
//! the client from the same seeds (the same secret key comes out of key generation) and
//! calls [`Client::restore`]; the next step then draws exactly what an uninterrupted run
//! would have drawn.
//!
//! Redoing a step that the server never committed is safe: the restored client draws the
//! same batch, encrypts with the same randomness, receives the same (deterministic) server
//! results and releases the very same noisy gradient, so the server learns nothing it
//! could not have learned already, and the ledger counts that release once.
//!
//! ```
//! use rand::SeedableRng;
//! use sphinx_dp::*;
//! use sphinx_nn::{layers::{LayerSpec, Shape}, model::ModelSpec};
//! use sphinx_protocol::client::{Client, ClientConfig};
//!
//! let spec = ModelSpec {
//!     input: Shape::flat(4),
//!     layers: vec![LayerSpec::Linear { in_features: 4, out_features: 3 }],
//! };
//! let images = ndarray::Array2::from_shape_fn((20, 4), |(i, j)| ((i + j) % 3) as f32 / 2.0);
//! let data = sphinx_nn::data::Dataset {
//!     images, labels: (0..20).map(|i| (i % 3) as u8).collect(),
//!     shape: Shape::flat(4), num_classes: 3,
//! };
//! let dp = DpSgdConfig {
//!     clip_norm: ClipNorm::new(1.0)?, noise_multiplier: NoiseMultiplier::new(1.0)?,
//!     sample_rate: SampleRate::new(0.25)?, dataset_size: 20,
//! };
//! let config = ClientConfig {
//!     learning_rate: 0.1, init_seed: 1, bias_init: 0.01, weight_average: 0.0,
//!     budget: PrivacyBudget { epsilon: Epsilon::new(10.0)?, delta: Delta::new(1e-5)? },
//! };
//! let params = sphinx_protocol::params::build_training_parameters()?;
//! let make = || Client::new(params.clone(), spec.clone(), data.clone(),
//!     DpSgdAggregator::seeded(12, dp, 3).expect("dimension"),
//!     config, rand_chacha::ChaCha20Rng::seed_from_u64(4));
//! let (mut client, _setup) = make()?;
//! let snapshot = client.snapshot()?;
//!
//! // A new process: the same seeds give the same keys; the snapshot gives the position.
//! let (mut resumed, _setup) = make()?;
//! resumed.restore(&snapshot)?;
//! assert_eq!(resumed.step(), snapshot.step);
//! assert_eq!(resumed.ledger(), &snapshot.ledger);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use rand_chacha::ChaCha20Rng;
use sphinx_dp::{BudgetLedger, DpSgdAggregator};

use crate::client::{Client, StepOutcome};
use crate::error::{ProtocolError, Result};
use crate::messages::MessageKind;

/// The state of a [`Client`] between two steps, beyond what its seeds determine.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSnapshot {
    /// Completed steps.
    pub step: u64,
    /// Word position of the key and encryption generator.
    pub rng_word_pos: u128,
    /// Word position of the sampling and noise generator.
    pub dp_rng_word_pos: u128,
    /// The privacy ledger (budget and recorded steps).
    pub ledger: BudgetLedger,
}

/// Borrowed pieces of a [`Client`] that a snapshot reads and a restore writes (built by
/// `Client::resumable`).
pub(crate) struct Resumable<'a> {
    pub(crate) step: &'a mut u64,
    pub(crate) rng: &'a mut ChaCha20Rng,
    pub(crate) agg: &'a mut DpSgdAggregator,
    pub(crate) ledger: &'a mut BudgetLedger,
    pub(crate) last: &'a mut Option<StepOutcome>,
    pub(crate) in_step: bool,
}

fn mid_step() -> ProtocolError {
    ProtocolError::UnexpectedMessage {
        got: MessageKind::ForwardInput,
        expected: "no step in progress for a snapshot or restore",
    }
}

impl Client {
    /// The state to persist after a step (or before the first one).
    ///
    /// # Errors
    /// [`ProtocolError::UnexpectedMessage`] while a step is in progress (its partial state
    /// is not resumable; redo it from the snapshot taken before it).
    pub fn snapshot(&mut self) -> Result<ClientSnapshot> {
        let parts = self.resumable();
        if parts.in_step {
            return Err(mid_step());
        }
        Ok(ClientSnapshot {
            step: *parts.step,
            rng_word_pos: parts.rng.get_word_pos(),
            dp_rng_word_pos: parts.agg.rng_mut().get_word_pos(),
            ledger: parts.ledger.clone(),
        })
    }

    /// Returns this client to `snapshot`. The client must have been built from the same
    /// seeds, model, data and configuration as the one that took the snapshot.
    ///
    /// # Errors
    /// [`ProtocolError::UnexpectedMessage`] while a step is in progress;
    /// [`ProtocolError::UnsupportedModel`] if the snapshot's budget is not this client's.
    pub fn restore(&mut self, snapshot: &ClientSnapshot) -> Result<()> {
        let parts = self.resumable();
        if parts.in_step {
            return Err(mid_step());
        }
        if parts.ledger.budget() != snapshot.ledger.budget() {
            return Err(ProtocolError::UnsupportedModel(
                "the snapshot was taken under another privacy budget".into(),
            ));
        }
        *parts.step = snapshot.step;
        parts.rng.set_word_pos(snapshot.rng_word_pos);
        parts.agg.rng_mut().set_word_pos(snapshot.dp_rng_word_pos);
        *parts.ledger = snapshot.ledger.clone();
        *parts.last = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use sphinx_dp::{
        ClipNorm, Delta, DpSgdAggregator, DpSgdConfig, Epsilon, NoiseMultiplier, PrivacyBudget,
        SampleRate,
    };
    use sphinx_nn::data::Dataset;
    use sphinx_nn::layers::{LayerSpec, Shape};
    use sphinx_nn::model::ModelSpec;

    use super::*;
    use crate::client::ClientConfig;
    use crate::messages::{ClientMessage, ServerMessage};
    use crate::server::Server;

    fn client() -> (Client, ClientMessage) {
        let spec = ModelSpec {
            input: Shape::flat(6),
            layers: vec![
                LayerSpec::Linear {
                    in_features: 6,
                    out_features: 4,
                },
                LayerSpec::Relu,
                LayerSpec::Linear {
                    in_features: 4,
                    out_features: 3,
                },
            ],
        };
        let images =
            ndarray::Array2::from_shape_fn((30, 6), |(i, j)| ((i * 7 + j) % 5) as f32 / 4.0);
        let data = Dataset {
            images,
            labels: (0..30).map(|i| (i % 3) as u8).collect(),
            shape: Shape::flat(6),
            num_classes: 3,
        };
        let dp = DpSgdConfig {
            clip_norm: ClipNorm::new(1.0).unwrap(),
            noise_multiplier: NoiseMultiplier::new(1.0).unwrap(),
            sample_rate: SampleRate::new(0.3).unwrap(),
            dataset_size: 30,
        };
        let config = ClientConfig {
            learning_rate: 0.1,
            init_seed: 1,
            bias_init: 0.01,
            weight_average: 0.0,
            budget: PrivacyBudget {
                epsilon: Epsilon::new(50.0).unwrap(),
                delta: Delta::new(1e-5).unwrap(),
            },
        };
        Client::new(
            crate::params::build_training_parameters().unwrap(),
            spec,
            data,
            DpSgdAggregator::seeded(36, dp, 3).unwrap(),
            config,
            ChaCha20Rng::seed_from_u64(4),
        )
        .unwrap()
    }

    fn server(setup: ClientMessage) -> Server {
        let ClientMessage::Setup(s) = setup else {
            panic!("not a setup")
        };
        Server::new(*s, &mut ChaCha20Rng::seed_from_u64(5)).unwrap()
    }

    /// Runs one step; returns the released noisy gradient.
    fn step(client: &mut Client, server: &mut Server) -> Vec<f32> {
        let mut queue = VecDeque::from([client.start_step().unwrap()]);
        let mut released = Vec::new();
        while let Some(msg) = queue.pop_front() {
            if let ClientMessage::NoisyGradient(g) = &msg {
                released = g.gradient.clone();
            }
            let mut replies: Vec<ServerMessage> = server.handle(msg).unwrap();
            while let Some(r) = server.poll().unwrap() {
                replies.push(r);
            }
            for r in replies {
                queue.extend(client.handle(r).unwrap());
            }
        }
        released
    }

    #[test]
    fn a_restored_client_releases_what_an_uninterrupted_one_does() {
        let (mut a, setup_a) = client();
        let mut server_a = server(setup_a);
        step(&mut a, &mut server_a);
        let expected = step(&mut a, &mut server_a);

        let (mut b, setup_b) = client();
        let mut server_b = server(setup_b);
        step(&mut b, &mut server_b);
        let snapshot = b.snapshot().unwrap();
        drop(b);
        let (mut resumed, _) = client();
        resumed.restore(&snapshot).unwrap();
        assert_eq!(resumed.step(), 1);
        let got = step(&mut resumed, &mut server_b);
        assert!(!expected.is_empty());
        assert_eq!(got, expected);
        assert_eq!(resumed.ledger(), a.ledger());
        assert_eq!(server_b.weights(), server_a.weights());
    }

    #[test]
    fn no_snapshot_mid_step() {
        let (mut c, _) = client();
        c.start_step().unwrap();
        assert!(c.snapshot().is_err());
        let fresh = client().0.snapshot();
        assert!(c.restore(&fresh.unwrap()).is_err());
    }
}
