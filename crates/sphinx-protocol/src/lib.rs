//! `sphinx-protocol`: the Sphinx private-training protocol (DESIGN.md §3.1) as two
//! transport-agnostic state machines.
//!
//! - [`client::Client`] holds the secret key, the data and the DP state (Poisson sampler,
//!   clipping and noise in a [`sphinx_dp::DpSgdAggregator`], a [`sphinx_dp::BudgetLedger`]).
//! - [`server::Server`] holds only public material: the public and Galois keys, the
//!   plaintext weights `W` and the encrypted biases `[b]`.
//! - [`messages`]: typed, versioned messages with exact wire sizes; [`accounting`]: bytes
//!   per message type and direction, wall time per phase.
//! - [`plan`]: the public gather structure of linear and convolutional layers.
//! - [`reference::ReferenceTrainer`]: the same DP-SGD in plaintext, for exactness tests.
//! - [`session::Session`]: an in-process driver; [`wire`]: the network frames that carry
//!   these messages between `sphinx-client` and `sphinx-server`; [`client_state`]:
//!   snapshots that let a restarted client resume training exactly.
//! - [`update`]: iterate averaging of `W` (what a run exports).
//! - [`pure_he`]: the Pure-HE baseline's operation counts and measured unit costs.
//! - [`inference`]: private inference (preprocessing, online phase, refresh) and its
//!   baselines.
//!
//! One step, with batch-axis packing (slot `j` of every ciphertext holds sample `j`):
//! 1. the client checks its budget, draws a Poisson batch and sends `[x]`;
//! 2. per parameterized layer the server returns `[z] = W[a] + [b]` (scalar × ciphertext
//!    multiply-adds, one rescale, level 0), the client decrypts, applies ReLU / pooling
//!    and sends `[a]` of the next layer;
//! 3. the client computes the loss gradient and sends `[δ]` of the last layer; per layer
//!    the server updates `[b]` with the slot-summed bias gradient, returns `[Wᵀδ]` (the
//!    client applies the activation derivatives and sends the next `[δ]`) and streams the
//!    per-sample weight gradients `[δ]·[a]` (relinearized, level 0);
//! 4. the client decrypts them, clips each sample's whole W-gradient to C, sums, adds
//!    Gaussian noise, divides by `q·N`, records the step and sends the noisy gradient; the
//!    server updates `W`.
//!
//! ```
//! use rand::SeedableRng;
//! use sphinx_dp::*;
//! use sphinx_nn::{layers::{LayerSpec, Shape}, model::ModelSpec};
//! use sphinx_protocol::{client::{Client, ClientConfig}, session::Session};
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
//! let (client, setup) = Client::new(params, spec, data, DpSgdAggregator::seeded(12, dp, 3)?,
//!     config, rand_chacha::ChaCha20Rng::seed_from_u64(4))?;
//! let mut session = Session::new(client, setup, &mut rand_chacha::ChaCha20Rng::seed_from_u64(5))?;
//! let outcome = session.run_step()?;
//! assert!(outcome.epsilon > 0.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod accounting;
pub mod client;
pub mod client_state;
mod codec;
pub mod error;
pub mod inference;
pub mod messages;
pub mod params;
pub mod plan;
pub mod pure_he;
pub mod reference;
pub mod server;
pub mod session;
pub mod update;
pub mod wire;

pub use error::{ProtocolError, Result};
