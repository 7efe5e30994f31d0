//! Sphinx private inference (DESIGN.md §3.2), built the way Delphi builds it: all
//! homomorphic work moves into a preprocessing phase, the online phase is plaintext
//! arithmetic mod a prime `p`.
//!
//! - [`InferenceClient`] holds the BFV secret key, the seeds of its masks `r`, its
//!   decrypted shares `W r − s`, the (decrypted) biases `b`, and which mask slots are used.
//! - [`InferenceServer`] holds public material only: the client's public key, the
//!   quantized plaintext weights `W`, the model version, and per round the secret seed its
//!   masks `s` are derived from. It never names a secret-key type (a source-scan test
//!   checks `server.rs`, `messages.rs` and this file).
//! - [`messages`]: typed, versioned messages with exact wire sizes.
//! - [`InferenceSession`]: an in-process driver with byte and time accounting.
//! - [`baselines`]: Sphinx-FP (the CKKS training forward pass) and Pure-HE inference.
//!
//! # Protocol
//! Batch-axis packing: slot `j` of every BFV ciphertext belongs to future query `j`, so
//! one preprocessing round serves up to `N = 8192` queries.
//!
//! 1. **Preprocessing**, per parameterized layer `l`: the client sends `[r_l]`, one seeded
//!    ciphertext per input scalar (`r` uniform in `Z_p`); per output scalar the server
//!    computes `Σ W·[r] − s` (integer weights × ciphertexts, the im2col gather of
//!    [`crate::plan::LayerPlan`] for convolutions) with fresh uniform `s`, floods it
//!    ([`sphinx_he::bfv::Bfv::flood`]) and returns it; the client decrypts its share
//!    `c = W r − s`.
//! 2. **Online**, per query and layer: the client sends `x − r mod p`; the server returns
//!    `W(x − r) + s mod p`; the client adds `c` and `b` and gets `W x + b` exactly (mod `p`),
//!    rescales it to real numbers, applies ReLU / pooling / flatten and continues with the
//!    next layer's mask. Each `(round, query)` mask is used once, layer by layer; both
//!    sides refuse reuse.
//! 3. **Refresh**: the server versions its weights per layer; a query against material
//!    computed for older weights is answered with [`messages::Stale`] (the client raises
//!    [`ProtocolError::StaleModel`]) and [`InferenceClient::start_refresh`] recomputes only
//!    the stale layers, reusing the same `r` with fresh `s`.
//!
//! # Fixed point
//! Activations are encoded as `round(a·2^A)`, weights as `round(w·2^B)`, biases as
//! `round(b·2^(A+B))` ([`FixedPoint`], default `A = B = 12`); a layer's output is exact in
//! `Z_p` and decodes correctly while `|W x + b| < p / 2^(A+B+1)` (with the default
//! 37-bit `p`: 2048). The client rescales to real numbers after every linear layer, so the
//! error never compounds beyond one rounding per layer.
//!
//! # Example
//! ```
//! use rand::SeedableRng;
//! use rand_chacha::ChaCha20Rng;
//! use sphinx_he::bfv::BfvParametersLiteral;
//! use sphinx_nn::{layers::{LayerSpec, Shape}, model::{Model, ModelSpec}};
//! use sphinx_protocol::inference::{FixedPoint, InferenceClient, InferenceSession};
//!
//! let spec = ModelSpec {
//!     input: Shape::flat(6),
//!     layers: vec![
//!         LayerSpec::Linear { in_features: 6, out_features: 4 },
//!         LayerSpec::Relu,
//!         LayerSpec::Linear { in_features: 4, out_features: 3 },
//!     ],
//! };
//! let model = Model::new(spec.clone(), 7)?;
//! // INSECURE toy ring for a fast example; deployments use `inference_parameters()`.
//! let params = BfvParametersLiteral::insecure_for_tests(10, &[60, 60, 60], 37).build()?;
//! let biases = sphinx_protocol::inference::biases_of(&model);
//! let (client, setup) = InferenceClient::new(
//!     params, spec, biases, FixedPoint::default(), ChaCha20Rng::seed_from_u64(1))?;
//! // The server side: `InferenceServer::new(&model, setup, rng)` behind a transport; here
//! // the in-process driver builds it and carries the messages.
//! let mut session = InferenceSession::new(client, setup, &model, ChaCha20Rng::seed_from_u64(2))?;
//! session.preprocess(4)?; // masks for 4 future queries
//! let x = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
//! let private = session.query(&x)?;
//! let plain = model.forward(ndarray::ArrayView2::from_shape((1, 6), &x)?)?;
//! for (a, b) in private.iter().zip(plain.iter()) {
//!     assert!((a - b).abs() < 1e-2);
//! }
//! assert_eq!(session.client().fresh_queries(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod baselines;
mod client;
pub mod messages;
mod server;
mod session;

use ndarray::Array1;
use rand::RngCore;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use sphinx_he::bfv::BfvParametersLiteral;
use sphinx_nn::model::Model;

pub use client::{InferenceClient, QueryResult};
pub use server::InferenceServer;
pub use session::{InferenceSession, InferenceTraffic};

use crate::error::{ProtocolError, Result};

/// Ciphertexts per [`messages::PreprocessInput`] / [`messages::PreprocessOutput`]: bounds
/// the memory of a chunk in flight (about 16 MiB at `N = 8192`).
pub const CHUNK: usize = 32;

/// The inference parameter set: [`BfvParametersLiteral::delphi_n8192`] (`N = 8192`,
/// `Q = 210` bits, 128-bit security, flooding at `2^-40`) with a 37-bit `p`. A 41-bit `p`
/// would cost 11% more online bytes (every online value is one residue) and buys range the
/// default fixed point does not need; see `docs/protocol.md`.
#[must_use]
pub fn inference_parameters() -> BfvParametersLiteral {
    let mut literal = BfvParametersLiteral::delphi_n8192();
    literal.t_bits = 37;
    literal
}

/// Fixed-point scales: activations are `round(a·2^activation_bits)`, weights
/// `round(w·2^weight_bits)` mod `p`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedPoint {
    /// Fractional bits of activations (and inputs).
    pub activation_bits: u8,
    /// Fractional bits of weights.
    pub weight_bits: u8,
}

impl Default for FixedPoint {
    fn default() -> Self {
        Self {
            activation_bits: 12,
            weight_bits: 12,
        }
    }
}

impl FixedPoint {
    /// Fractional bits of a layer output `W x + b`.
    #[must_use]
    pub fn output_bits(self) -> u32 {
        u32::from(self.activation_bits) + u32::from(self.weight_bits)
    }

    /// Refuses scales that leave less than 4 bits of integer range below `p/2`.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidInference`].
    pub fn check(self, p: u64) -> Result<()> {
        let p_bits = messages::value_bits(p);
        if self.output_bits() + 5 > p_bits {
            return Err(ProtocolError::InvalidInference {
                kind: messages::InferenceKind::Setup,
                reason: format!(
                    "fixed point 2^{} leaves no range below p/2 = 2^{}",
                    self.output_bits(),
                    p_bits - 1
                ),
            });
        }
        Ok(())
    }
}

/// `round(v·2^bits)`, refusing non-finite values and magnitudes that do not fit `limit`.
pub(crate) fn quantize(v: f64, bits: u32, limit: i64) -> Result<i64> {
    let q = (v * f64::from(bits).exp2()).round();
    if !q.is_finite() || q.abs() >= limit as f64 {
        return Err(ProtocolError::UnsupportedModel(format!(
            "value {v} does not fit the fixed point 2^{bits} below {limit}"
        )));
    }
    Ok(q as i64)
}

/// The biases of every parameterized layer of `model`, in layer order (what the client
/// passes to [`InferenceClient::new`] after decrypting the model export of training).
#[must_use]
pub fn biases_of(model: &Model) -> Vec<Vec<f32>> {
    model
        .param_layers()
        .map(|p| p.bias().iter().copied().collect())
        .collect()
}

/// A model of architecture `spec` with the given weights (one matrix per parameterized
/// layer, e.g. the training server's `Server::weights`) and zero biases: what
/// [`InferenceServer::new`] and [`InferenceServer::update_model`] need on the server, which
/// never holds the biases in the clear.
///
/// # Errors
/// [`ProtocolError::UnsupportedModel`] if the count or shapes of `weights` do not match.
pub fn model_with_weights(
    spec: &sphinx_nn::model::ModelSpec,
    weights: &[ndarray::Array2<f32>],
) -> Result<Model> {
    let mut model = Model::zeros(spec.clone())?;
    let mut it = weights.iter();
    for layer in model.layers_mut() {
        if let Some(p) = layer.as_param_mut() {
            let w = it
                .next()
                .filter(|w| w.dim() == p.weight().dim())
                .ok_or_else(|| {
                    ProtocolError::UnsupportedModel("weights do not match the architecture".into())
                })?;
            p.weight_mut().assign(w);
        }
    }
    if it.next().is_some() {
        return Err(ProtocolError::UnsupportedModel(
            "more weight matrices than parameterized layers".into(),
        ));
    }
    Ok(model)
}

/// A pseudorandom function of a 32-byte key: ChaCha20 with the stream id as nonce and the
/// word position as counter, so any value is reachable without generating the ones before.
/// Value `i` of stream `s` is a 128-bit word reduced mod `p` (statistical distance from
/// uniform below `2^-90` for `p < 2^38`).
pub(crate) struct Prf {
    rng: ChaCha20Rng,
}

impl Prf {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        Self {
            rng: ChaCha20Rng::from_seed(key),
        }
    }

    /// Values `first..first + out.len()` of stream `stream`, reduced mod `p`.
    pub(crate) fn fill(&mut self, stream: u64, first: usize, p: u64, out: &mut [u64]) {
        self.rng.set_stream(stream);
        self.rng.set_word_pos(4 * first as u128);
        let p = u128::from(p);
        for v in out {
            let hi = u128::from(self.rng.next_u64());
            let lo = u128::from(self.rng.next_u64());
            *v = (((hi << 64) | lo) % p) as u64;
        }
    }

    /// A derived 32-byte key (stream `u64::MAX − label`, position `8·index`).
    pub(crate) fn derive(&mut self, label: u64, index: u64) -> [u8; 32] {
        self.rng.set_stream(u64::MAX - label);
        self.rng.set_word_pos(8 * u128::from(index));
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        key
    }
}

/// The PRF stream of query `query` at layer `layer` (mask values of one query are one
/// contiguous stream, so the online phase reads them sequentially).
pub(crate) fn stream_of(layer: usize, query: usize) -> u64 {
    ((layer as u64) << 32) | query as u64
}

/// `v·2^-bits` for a centered residue.
pub(crate) fn dequantize(v: i64, bits: u32) -> f32 {
    (v as f64 * (-f64::from(bits)).exp2()) as f32
}

/// Applies `layers` (parameter-free) to one sample.
pub(crate) fn apply_nonlinear(
    layers: &[sphinx_nn::layers::Layer],
    a: Vec<f32>,
) -> Result<Vec<f32>> {
    let mut x = Array1::from(a).insert_axis(ndarray::Axis(0));
    for layer in layers {
        x = layer.forward(x.view())?;
    }
    Ok(x.into_iter().collect())
}
