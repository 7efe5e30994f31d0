//! `sphinx-nn`: tensors, layers with per-sample gradients, model presets, plaintext
//! (DP-)SGD and datasets.
//!
//! The plaintext half of Sphinx: the same layers run here as the reference semantics
//! the encrypted protocol is tested against.
//!
//! - [`layers`]: [`layers::Conv2d`] and [`layers::Linear`] (the affine
//!   [`layers::ParamLayer`]s, with `W`, `b`, batch and per-sample gradients) and the
//!   parameter-free [`layers::Nonlinear`]s (ReLU, tanh, Square, average pooling, flatten,
//!   group normalization, and the fixed [`layers::scatter`] feature extractor).
//!   Batches are `ndarray` matrices `(B, features)`; heavy loops run on rayon.
//! - [`model::Model`]: a sequence of layers with traced forward, backward, summed and
//!   per-sample gradients, and its split into a fixed [`model::FeatureMap`] front and a
//!   trainable rest; [`presets::Preset`] names the architectures (table there);
//!   [`io`] saves and loads models (safetensors + JSON architecture).
//! - [`loss`]: softmax cross-entropy; [`optim::Sgd`]: SGD with momentum.
//! - [`train`]: one plaintext SGD step and one DP-SGD step (Poisson batch, joint
//!   per-sample clipping, Gaussian noise, division by the expected batch size).
//! - [`data`]: IDX (MNIST, Fashion-MNIST) and CIFAR-10 binary readers, the bundled MNIST
//!   sample, dataset discovery.
//!
//! ```
//! use sphinx_nn::{model::Model, presets::Preset, loss::softmax_cross_entropy};
//! let model = Model::new(Preset::Mlp30.spec(), 7)?;
//! let x = ndarray::Array2::<f32>::zeros((4, model.input_dim()));
//! let (loss, grads) = model.loss_and_grads(x.view(), &[0, 1, 2, 3])?;
//! assert_eq!(grads.len(), model.num_params());
//! assert!(loss.loss_sum > 0.0);
//! # Ok::<(), sphinx_nn::NnError>(())
//! ```

pub mod data;
pub mod error;
pub mod io;
pub mod layers;
pub mod loss;
pub mod model;
pub mod optim;
pub mod presets;
pub mod train;

pub use error::{DatasetFault, NnError, Result};
