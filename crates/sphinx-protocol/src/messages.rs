//! Typed, versioned protocol messages and their wire sizes.
//!
//! Every message travels in an envelope: magic `SPXP`, `u16` protocol version, `u8`
//! message type, `u8` reserved (0), `u64` body length, then the body. Ciphertexts and keys
//! inside a body are `u32`-length-prefixed objects in `sphinx-he`'s compact serialization
//! (bit-packed limbs; fresh client encryptions in seeded, half-size form). All integers are
//! little-endian.
//!
//! | message | direction | body |
//! |---|---|---|
//! | [`Setup`] | client → server | parameter literal, public key, Galois keys, model JSON, training config |
//! | forward input `[a_l]` | client → server | step, layer, ciphertexts (seeded, top level) |
//! | forward output `[z_l]` | server → client | step, layer, compact ciphertexts (level 0 at `2^k`, [`result_bits`]): `W a` packed `R` units per ciphertext (`⌈units/R⌉ · positions`; block `r` of ciphertext `G · positions + pos` holds unit `G·R + r`), then `[b_o]` per unit, which the client adds |
//! | backward delta `[δ_l]` | client → server | step, layer, ciphertexts (seeded, top level): `δ` packed `R` units per ciphertext, as the forward output |
//! | backward output `[Wᵀδ_l]` | server → client | step, layer, compact ciphertexts (level 0 at `2^k`), one per input scalar: block `r` holds the sum over the units `G·R + r`; the client adds the `R` blocks |
//! | [`WeightGradients`] | server → client | step, layer, first weight, relinearized compact ciphertexts (level 0 at `2^k`) |
//! | [`NoisyGradient`] | client → server | step, `f32` noisy averaged W-gradient |
//! | model request | client → server | empty |
//! | [`ModelExport`] | server → client | `f32` weights, bias ciphertexts |
//!
//! Decoding ([`ClientMessage::decode`], [`ServerMessage::decode`], [`decode_setup`]) takes a
//! size limit that is checked before anything is allocated, validates every embedded HE
//! object against the session's parameters, and rejects trailing bytes.
//!
//! The in-process driver passes messages by value and accounts [`ClientMessage::wire_len`] /
//! [`ServerMessage::wire_len`], which tests pin to the length of [`ClientMessage::encode`] /
//! [`ServerMessage::encode`].

use std::sync::Arc;

use bytes::Bytes;
use rayon::prelude::*;
use sphinx_he::serialization::compact::compact_len;
use sphinx_he::serialization::{CompactCiphertext, Serializable};
use sphinx_he::{
    Ciphertext, GaloisKeys, Parameters, ParametersLiteral, PublicKey, RelinearizationKey,
    SecurityLevel,
};
use sphinx_nn::model::ModelSpec;

use crate::codec::{Cursor, malformed};
use crate::error::{ProtocolError, Result};

/// The wire-format version this crate speaks. Version 2 packs `R` units per forward
/// output, uploads only the packed `δ` and sends level-0 results compact; version 3 sends
/// results two per ciphertext, in the real and imaginary parts of the slots
/// (docs/protocol.md). A peer of another version is refused by the envelope check.
pub const PROTOCOL_VERSION: u16 = 3;

/// The oldest version of `Setup` that [`decode_setup`] still reads: its layout has not
/// changed since version 1, so models a server stored under version 1 stay trainable.
pub const OLDEST_SETUP_VERSION: u16 = 1;

/// Envelope magic.
pub const MAGIC: [u8; 4] = *b"SPXP";

/// Bytes of the envelope before the body.
pub const ENVELOPE_LEN: usize = 4 + 2 + 1 + 1 + 8;

/// Who sends a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Data owner to cloud ("up").
    ClientToServer,
    /// Cloud to data owner ("down").
    ServerToClient,
}

/// The message types, with their wire codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum MessageKind {
    /// [`Setup`].
    Setup = 1,
    /// Encrypted input of a parameterized layer.
    ForwardInput = 2,
    /// Encrypted pre-activation of a parameterized layer.
    ForwardOutput = 3,
    /// Encrypted output gradient `δ` of a parameterized layer.
    BackwardDelta = 4,
    /// Encrypted input gradient `Wᵀδ` of a parameterized layer.
    BackwardOutput = 5,
    /// [`WeightGradients`].
    WeightGradients = 6,
    /// [`NoisyGradient`].
    NoisyGradient = 7,
    /// Request for the current model.
    ModelRequest = 8,
    /// [`ModelExport`].
    ModelExport = 9,
}

impl MessageKind {
    /// Every kind, in code order.
    pub const ALL: [Self; 9] = [
        Self::Setup,
        Self::ForwardInput,
        Self::ForwardOutput,
        Self::BackwardDelta,
        Self::BackwardOutput,
        Self::WeightGradients,
        Self::NoisyGradient,
        Self::ModelRequest,
        Self::ModelExport,
    ];

    /// Who sends it.
    #[must_use]
    pub fn direction(self) -> Direction {
        match self {
            Self::Setup
            | Self::ForwardInput
            | Self::BackwardDelta
            | Self::NoisyGradient
            | Self::ModelRequest => Direction::ClientToServer,
            Self::ForwardOutput
            | Self::BackwardOutput
            | Self::WeightGradients
            | Self::ModelExport => Direction::ServerToClient,
        }
    }

    /// A stable snake-case name (for reports and JSON).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::ForwardInput => "forward_input",
            Self::ForwardOutput => "forward_output",
            Self::BackwardDelta => "backward_delta",
            Self::BackwardOutput => "backward_output",
            Self::WeightGradients => "weight_gradients",
            Self::NoisyGradient => "noisy_gradient",
            Self::ModelRequest => "model_request",
            Self::ModelExport => "model_export",
        }
    }
}

/// Public training hyperparameters the server needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainingConfig {
    /// SGD learning rate applied to `W` and `[b]`.
    pub learning_rate: f32,
    /// The expected batch size `q·N` that the bias gradient sum is divided by (the
    /// realized batch size stays with the client).
    pub expected_batch_size: f64,
    /// Seed of the server's initialization of `W⁰`.
    pub init_seed: u64,
    /// Every bias starts at this constant. A small positive value keeps ReLU inputs of
    /// all-zero patches (image background) off the tie at exactly 0, where the plaintext
    /// derivative is 0 but CKKS noise would decide it at random.
    pub bias_init: f32,
    /// `R`: the batch is replicated in `R` blocks of slots, so that a per-sample gradient
    /// ciphertext carries `R` weights (one per block). Public: it bounds the batch size
    /// only as loosely as the public `q·N` does.
    pub replicas: u32,
    /// Slots per replica block (`R · block ≤ slots`): block `r` is slots
    /// `r·block .. (r+1)·block`.
    pub block: u32,
    /// Decay of the average `W̄` that export and inference use
    /// ([`WeightAverage`](crate::update::WeightAverage); 0: the last iterate). A trailing
    /// field: a Setup without it (older clients) means 0.
    pub weight_average: f32,
}

/// The client's opening message: public material only.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The CKKS parameters.
    pub params: ParametersLiteral,
    /// For the server's encryption of `b⁰`.
    pub public_key: PublicKey,
    /// Rotations by powers of two, for summing bias gradients over the batch slots.
    pub galois_keys: GaloisKeys,
    /// For relinearizing the per-sample gradients (3 → 2 parts, a third fewer bytes)
    /// before they are sent.
    pub relinearization_key: RelinearizationKey,
    /// The architecture.
    pub model: ModelSpec,
    /// Hyperparameters.
    pub training: TrainingConfig,
}

/// One ciphertext per scalar of a layer's input, output or gradient (slot `j` = sample `j`).
#[derive(Debug, Clone, PartialEq)]
pub struct CtBatch {
    /// Training step.
    pub step: u64,
    /// Index among the parameterized layers.
    pub layer: u16,
    /// The ciphertexts.
    pub cts: Vec<Ciphertext>,
}

/// Level-0 results of a layer, compact (switched to `2^k`, `k` = [`result_bits`]): what
/// the server sends and the client decrypts straight from the coefficient domain. Results
/// travel two per ciphertext: result `2j` in the real parts of ciphertext `j`'s slots,
/// `2j + 1` in their imaginary parts (a forward output packs its products and its biases
/// separately, each list from its own first ciphertext).
#[derive(Debug, Clone, PartialEq)]
pub struct ResultBatch {
    /// Training step.
    pub step: u64,
    /// Index among the parameterized layers.
    pub layer: u16,
    /// The results.
    pub cts: Vec<CompactCiphertext>,
}

/// A chunk of per-sample weight gradients of one layer, two per ciphertext as in
/// [`ResultBatch`]: gradient number `k = first + 2i` is the real part of ciphertext `i`
/// and `k + 1` its imaginary part (`first` is even). Gradient `k = G · patch + p`: its slot
/// block `r` holds the gradient of
/// `W[G·R + r, p]` for every sample (`R` = [`TrainingConfig::replicas`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightGradients {
    /// Training step.
    pub step: u64,
    /// Index among the parameterized layers.
    pub layer: u16,
    /// Index of the first gradient of this chunk within the layer (even).
    pub first: u32,
    /// Relinearized two-part ciphertexts at level 0, compact.
    pub cts: Vec<CompactCiphertext>,
}

/// The DP-protected, averaged W-gradient of one step, in layer order, each `W` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NoisyGradient {
    /// Training step.
    pub step: u64,
    /// `(Σ clip_C(g_i) + N(0, σ²C²)) / (q·N)`.
    pub gradient: Vec<f32>,
}

/// The server's model: `W` in plaintext, `b` encrypted (two bias entries per ciphertext,
/// each in every slot: `b_{2j}` in the real parts of ciphertext `j`, `b_{2j+1}` in the
/// imaginary parts).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelExport {
    /// Per parameterized layer, `W` row-major.
    pub weights: Vec<Vec<f32>>,
    /// Per parameterized layer, `[b_{2j} + i·b_{2j+1}]` (`⌈units/2⌉` ciphertexts).
    pub biases: Vec<Vec<Ciphertext>>,
}

/// Messages from the client.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientMessage {
    /// See [`Setup`].
    Setup(Box<Setup>),
    /// `[a_l]`.
    ForwardInput(CtBatch),
    /// `[δ_l]` packed `R` units per ciphertext.
    BackwardDelta(CtBatch),
    /// See [`NoisyGradient`].
    NoisyGradient(NoisyGradient),
    /// Asks for a [`ModelExport`].
    ModelRequest,
}

/// Messages from the server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ServerMessage {
    /// `[W_l a_l]` packed `R` units per ciphertext, then `[b_l]` (see the module docs).
    ForwardOutput(ResultBatch),
    /// `[Wᵀ δ_l]`, one partial sum per slot block.
    BackwardOutput(ResultBatch),
    /// See [`WeightGradients`].
    WeightGradients(WeightGradients),
    /// See [`ModelExport`].
    ModelExport(Box<ModelExport>),
}

fn cts_len(cts: &[Ciphertext], params: &Parameters) -> Result<usize> {
    let mut total = 4;
    for ct in cts {
        total += 4 + ct.serialized_len(params)?;
    }
    Ok(total)
}

fn put_u32(out: &mut Vec<u8>, v: usize, kind: MessageKind) -> Result<()> {
    let v = u32::try_from(v).map_err(|_| ProtocolError::InvalidMessage {
        kind,
        reason: format!("{v} does not fit the u32 length field"),
    })?;
    out.extend_from_slice(&v.to_le_bytes());
    Ok(())
}

fn put_object(out: &mut Vec<u8>, bytes: &[u8], kind: MessageKind) -> Result<()> {
    put_u32(out, bytes.len(), kind)?;
    out.extend_from_slice(bytes);
    Ok(())
}

fn put_cts(
    out: &mut Vec<u8>,
    cts: &[Ciphertext],
    params: &Parameters,
    kind: MessageKind,
) -> Result<()> {
    put_u32(out, cts.len(), kind)?;
    // Serialized on every core: a seeded upload's polynomial is packed bit by bit, and an
    // activation upload carries hundreds of ciphertexts.
    let objects = cts
        .par_iter()
        .map(|ct| ct.to_bytes(params))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    for o in &objects {
        put_object(out, o, kind)?;
    }
    Ok(())
}

/// The exponent `k` of the power-of-two modulus `2^k` that the level-0 results of `kind`
/// travel at (`None` for messages that carry no such results).
///
/// The switch adds an error of standard deviation `≈ 2^{22.4−k}` per slot of a two-part
/// result at these parameters, whatever the value: the range `±2048` that `q_0/Δ` leaves is
/// kept at every `k` (see `sphinx_he::serialization::compact`). So `k` is chosen by the
/// precision each result needs, not by its range:
/// - forward outputs `z` (pre-activations up to ±2048) and `Wᵀδ`: 36 bits, `≈ 2^{-13.6}`
///   added to a value that already carries the CKKS noise of the product (`≈ 2^{-10}` to
///   `2^{-14}` measured for a 576-term sum), decided by ReLU's sign and carried into the
///   next layer. With `R` units packed per ciphertext the client adds two switched results
///   per value (`W a` and the bias; `R` partial sums of `Wᵀδ`), so these get 2 bits more
///   than the gradients: at 34 bits the CNN exactness test had 68 of its 550 weights
///   beyond 10⁻⁴ after step 2 (it allows 55); at 36 it passes;
/// - per-sample weight gradients: 34 bits: each sample's error enters the
///   clipped sum once, averaged by `q·N`. Measured with `tests/exactness.rs`: at 28 bits
///   (error 64× larger) most weights drift beyond its 10⁻⁴ after one step; at 34 all
///   three exactness tests pass with their tolerances unchanged.
#[must_use]
pub fn result_bits(kind: MessageKind) -> Option<u32> {
    match kind {
        MessageKind::ForwardOutput | MessageKind::BackwardOutput => Some(36),
        MessageKind::WeightGradients => Some(34),
        _ => None,
    }
}

pub(crate) fn wire_bits(kind: MessageKind) -> Result<u32> {
    result_bits(kind).ok_or_else(|| ProtocolError::InvalidMessage {
        kind,
        reason: "carries no level-0 results".into(),
    })
}

/// Bytes of a counted list of compact level-0 results.
fn results_len(cts: &[CompactCiphertext], params: &Parameters, kind: MessageKind) -> Result<usize> {
    let bits = wire_bits(kind)?;
    Ok(4 + cts
        .iter()
        .map(|ct| 4 + compact_len(params, ct.size(), bits))
        .sum::<usize>())
}

/// A level-0 result in the compact form a message of `kind` carries (no secret key
/// involved): for results the server holds at level 0 (the biases it adds to forward
/// outputs); results at level 1 are rescaled straight into it by
/// [`Evaluator::rescale_to_compact`](sphinx_he::Evaluator::rescale_to_compact) at
/// [`result_bits`].
///
/// # Errors
/// [`ProtocolError::InvalidMessage`] for a kind without results; [`sphinx_he::HeError`]
/// for a ciphertext that is not at level 0 of `params`.
pub fn compact_result(
    ct: &Ciphertext,
    params: &Parameters,
    kind: MessageKind,
) -> Result<CompactCiphertext> {
    Ok(CompactCiphertext::from_ciphertext(
        params,
        ct,
        wire_bits(kind)?,
    )?)
}

/// Appends compact level-0 results, refusing any not at this kind's [`result_bits`].
fn put_results(
    out: &mut Vec<u8>,
    cts: &[CompactCiphertext],
    params: &Parameters,
    kind: MessageKind,
) -> Result<()> {
    let bits = wire_bits(kind)?;
    put_u32(out, cts.len(), kind)?;
    // Written straight into the frame: a result is kept in its wire form, so this is the
    // one copy of its bytes on the way out.
    for ct in cts {
        if ct.bits() != bits {
            return Err(ProtocolError::InvalidMessage {
                kind,
                reason: format!("result at 2^{} where 2^{bits} is expected", ct.bits()),
            });
        }
        put_u32(out, ct.serialized_len(params)?, kind)?;
        ct.write_into(params, out)?;
    }
    Ok(())
}

fn put_f32s(out: &mut Vec<u8>, v: &[f32], kind: MessageKind) -> Result<()> {
    put_u32(out, v.len(), kind)?;
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    Ok(())
}

fn literal_len(l: &ParametersLiteral) -> usize {
    // log N, count + bits of Q, count + bits of P, scale bits, security bits.
    1 + 1 + l.q_bits.len() + 1 + l.p_bits.len() + 1 + 2
}

fn put_literal(out: &mut Vec<u8>, l: &ParametersLiteral) {
    let small = |x: u32| u8::try_from(x).unwrap_or(u8::MAX);
    out.push(small(l.log_n));
    out.push(small(l.q_bits.len() as u32));
    out.extend(l.q_bits.iter().map(|&b| small(b)));
    out.push(small(l.p_bits.len() as u32));
    out.extend(l.p_bits.iter().map(|&b| small(b)));
    out.push(small(l.scale_bits));
    let sec = l.security.bits().map_or(0u16, |b| b as u16);
    out.extend_from_slice(&sec.to_le_bytes());
}

const TRAINING_CONFIG_LEN: usize = 4 + 8 + 8 + 4 + 4 + 4 + 4;

/// Appends an envelope head for `kind` whose body length is patched in by [`end_envelope`]
/// once the body has been appended; returns where the head starts.
fn begin_envelope(out: &mut Vec<u8>, kind: MessageKind) -> usize {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.push(kind as u8);
    out.push(0);
    out.extend_from_slice(&0u64.to_le_bytes());
    start
}

fn end_envelope(out: &mut [u8], start: usize) {
    let body = (out.len() - start - ENVELOPE_LEN) as u64;
    out[start + ENVELOPE_LEN - 8..start + ENVELOPE_LEN].copy_from_slice(&body.to_le_bytes());
}

fn put_batch(out: &mut Vec<u8>, b: &CtBatch, params: &Parameters, kind: MessageKind) -> Result<()> {
    out.extend_from_slice(&b.step.to_le_bytes());
    out.extend_from_slice(&b.layer.to_le_bytes());
    put_cts(out, &b.cts, params, kind)
}

fn model_json(spec: &ModelSpec, kind: MessageKind) -> Result<Vec<u8>> {
    serde_json::to_vec(spec).map_err(|e| ProtocolError::InvalidMessage {
        kind,
        reason: e.to_string(),
    })
}

impl ClientMessage {
    /// The message type.
    #[must_use]
    pub fn kind(&self) -> MessageKind {
        match self {
            Self::Setup(_) => MessageKind::Setup,
            Self::ForwardInput(_) => MessageKind::ForwardInput,
            Self::BackwardDelta(_) => MessageKind::BackwardDelta,
            Self::NoisyGradient(_) => MessageKind::NoisyGradient,
            Self::ModelRequest => MessageKind::ModelRequest,
        }
    }

    /// Bytes on the wire, envelope included, without encoding.
    ///
    /// # Errors
    /// [`sphinx_he::HeError::ParamMismatch`] if an object belongs to other parameters.
    pub fn wire_len(&self, params: &Parameters) -> Result<usize> {
        let kind = self.kind();
        let body = match self {
            Self::Setup(s) => {
                literal_len(&s.params)
                    + 4
                    + s.public_key.serialized_len(params)?
                    + 4
                    + s.galois_keys.serialized_len(params)?
                    + 4
                    + s.relinearization_key.serialized_len(params)?
                    + 4
                    + model_json(&s.model, kind)?.len()
                    + TRAINING_CONFIG_LEN
            }
            Self::ForwardInput(b) | Self::BackwardDelta(b) => 8 + 2 + cts_len(&b.cts, params)?,
            Self::NoisyGradient(g) => 8 + 4 + 4 * g.gradient.len(),
            Self::ModelRequest => 0,
        };
        Ok(ENVELOPE_LEN + body)
    }

    /// The message's bytes: envelope and body.
    ///
    /// # Errors
    /// As [`wire_len`](Self::wire_len); [`ProtocolError::InvalidMessage`] if a count does
    /// not fit its field.
    pub fn encode(&self, params: &Parameters) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.wire_len(params)?);
        self.encode_into(params, &mut out)?;
        Ok(out)
    }

    /// Appends the message's bytes ([`encode`](Self::encode)) to `out`: a frame writer
    /// builds the message in place instead of copying an encoded buffer.
    ///
    /// # Errors
    /// As [`encode`](Self::encode); `out` may then hold part of the message.
    pub fn encode_into(&self, params: &Parameters, out: &mut Vec<u8>) -> Result<()> {
        let kind = self.kind();
        let start = begin_envelope(out, kind);
        match self {
            Self::Setup(s) => {
                put_literal(out, &s.params);
                put_object(out, &s.public_key.to_bytes(params)?, kind)?;
                put_object(out, &s.galois_keys.to_bytes(params)?, kind)?;
                put_object(out, &s.relinearization_key.to_bytes(params)?, kind)?;
                put_object(out, &model_json(&s.model, kind)?, kind)?;
                out.extend_from_slice(&s.training.learning_rate.to_le_bytes());
                out.extend_from_slice(&s.training.expected_batch_size.to_le_bytes());
                out.extend_from_slice(&s.training.init_seed.to_le_bytes());
                out.extend_from_slice(&s.training.bias_init.to_le_bytes());
                out.extend_from_slice(&s.training.replicas.to_le_bytes());
                out.extend_from_slice(&s.training.block.to_le_bytes());
                out.extend_from_slice(&s.training.weight_average.to_le_bytes());
            }
            Self::ForwardInput(b) | Self::BackwardDelta(b) => put_batch(out, b, params, kind)?,
            Self::NoisyGradient(g) => {
                out.extend_from_slice(&g.step.to_le_bytes());
                put_f32s(out, &g.gradient, kind)?;
            }
            Self::ModelRequest => {}
        }
        end_envelope(out, start);
        Ok(())
    }
}

impl ServerMessage {
    /// The message type.
    #[must_use]
    pub fn kind(&self) -> MessageKind {
        match self {
            Self::ForwardOutput(_) => MessageKind::ForwardOutput,
            Self::BackwardOutput(_) => MessageKind::BackwardOutput,
            Self::WeightGradients(_) => MessageKind::WeightGradients,
            Self::ModelExport(_) => MessageKind::ModelExport,
        }
    }

    /// Bytes on the wire, envelope included, without encoding.
    ///
    /// # Errors
    /// [`sphinx_he::HeError::ParamMismatch`] if an object belongs to other parameters.
    pub fn wire_len(&self, params: &Parameters) -> Result<usize> {
        let body = match self {
            Self::ForwardOutput(b) | Self::BackwardOutput(b) => {
                8 + 2 + results_len(&b.cts, params, self.kind())?
            }
            Self::WeightGradients(g) => 8 + 2 + 4 + results_len(&g.cts, params, self.kind())?,
            Self::ModelExport(m) => {
                let mut n = 4;
                for (w, b) in m.weights.iter().zip(&m.biases) {
                    n += 4 + 4 * w.len() + cts_len(b, params)?;
                }
                n
            }
        };
        Ok(ENVELOPE_LEN + body)
    }

    /// The message's bytes: envelope and body.
    ///
    /// # Errors
    /// As [`wire_len`](Self::wire_len); [`ProtocolError::InvalidMessage`] if a count does
    /// not fit its field.
    pub fn encode(&self, params: &Parameters) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.wire_len(params)?);
        self.encode_into(params, &mut out)?;
        Ok(out)
    }

    /// Appends the message's bytes ([`encode`](Self::encode)) to `out`: a frame writer
    /// builds the message in place instead of copying an encoded buffer.
    ///
    /// # Errors
    /// As [`encode`](Self::encode); `out` may then hold part of the message.
    pub fn encode_into(&self, params: &Parameters, out: &mut Vec<u8>) -> Result<()> {
        let kind = self.kind();
        let start = begin_envelope(out, kind);
        match self {
            Self::ForwardOutput(b) | Self::BackwardOutput(b) => {
                out.extend_from_slice(&b.step.to_le_bytes());
                out.extend_from_slice(&b.layer.to_le_bytes());
                put_results(out, &b.cts, params, kind)?;
            }
            Self::WeightGradients(g) => {
                out.extend_from_slice(&g.step.to_le_bytes());
                out.extend_from_slice(&g.layer.to_le_bytes());
                out.extend_from_slice(&g.first.to_le_bytes());
                put_results(out, &g.cts, params, kind)?;
            }
            Self::ModelExport(m) => {
                put_u32(out, m.weights.len(), kind)?;
                for (w, b) in m.weights.iter().zip(&m.biases) {
                    put_f32s(out, w, kind)?;
                    put_cts(out, b, params, kind)?;
                }
            }
        }
        end_envelope(out, start);
        Ok(())
    }
}

impl<'a> Cursor<'a> {
    fn f32s(&mut self) -> Result<Vec<f32>> {
        let n = self.count(4)?;
        let raw = self.take(4 * n)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn cts(&mut self, params: &Arc<Parameters>) -> Result<Vec<Ciphertext>> {
        let n = self.count(4)?;
        let mut objs = Vec::with_capacity(n);
        for _ in 0..n {
            objs.push(self.object()?);
        }
        // Decoded on every core: each seeded ciphertext expands its seed (a ChaCha20
        // stream as long as the polynomial), the largest part of receiving an upload.
        objs.into_par_iter()
            .map(|obj| Ok(Ciphertext::from_bytes(params, obj, obj.len())?))
            .collect()
    }

    /// Compact level-0 results (see [`result_bits`]); slices of `shared` (no copy) when
    /// this cursor reads those bytes.
    fn results(
        &mut self,
        params: &Arc<Parameters>,
        kind: MessageKind,
        shared: Option<&Bytes>,
    ) -> Result<Vec<CompactCiphertext>> {
        let bits = wire_bits(kind)?;
        let n = self.count(4)?;
        let mut objs = Vec::with_capacity(n);
        for _ in 0..n {
            objs.push(self.object()?);
        }
        objs.into_par_iter()
            .map(|obj| {
                let c = match shared {
                    Some(frame) => {
                        CompactCiphertext::from_shared(params, &frame.slice_ref(obj), obj.len())?
                    }
                    None => CompactCiphertext::from_bytes(params, obj, obj.len())?,
                };
                if c.bits() != bits {
                    return Err(malformed(format!(
                        "{} result at 2^{} where 2^{bits} is expected",
                        kind.name(),
                        c.bits()
                    )));
                }
                Ok(c)
            })
            .collect()
    }

    fn result_batch(
        &mut self,
        params: &Arc<Parameters>,
        kind: MessageKind,
        shared: Option<&Bytes>,
    ) -> Result<ResultBatch> {
        let step = self.u64()?;
        let layer = self.u16()?;
        let cts = self.results(params, kind, shared)?;
        Ok(ResultBatch { step, layer, cts })
    }

    fn batch(&mut self, params: &Arc<Parameters>) -> Result<CtBatch> {
        let step = self.u64()?;
        let layer = self.u16()?;
        let cts = self.cts(params)?;
        Ok(CtBatch { step, layer, cts })
    }
}

/// Checks the envelope (magic, version, length within `limit` and exact) and returns the
/// message type code and the body.
pub(crate) fn open_envelope(bytes: &[u8], limit: usize) -> Result<(u8, Cursor<'_>)> {
    open_envelope_since(bytes, limit, PROTOCOL_VERSION)
}

/// [`open_envelope`], accepting every version from `oldest` to [`PROTOCOL_VERSION`].
fn open_envelope_since(bytes: &[u8], limit: usize, oldest: u16) -> Result<(u8, Cursor<'_>)> {
    let mut c = Cursor { bytes };
    if c.array::<4>()? != MAGIC {
        return Err(malformed("not a Sphinx protocol message (magic)"));
    }
    let version = c.u16()?;
    if !(oldest..=PROTOCOL_VERSION).contains(&version) {
        return Err(malformed(format!(
            "protocol version {version}; this build speaks {PROTOCOL_VERSION}"
        )));
    }
    let kind = c.u8()?;
    if c.u8()? != 0 {
        return Err(malformed("reserved byte is not 0"));
    }
    let len = c.u64()?;
    if len > limit as u64 {
        return Err(malformed(format!(
            "body of {len} bytes exceeds the limit {limit}"
        )));
    }
    if len != c.bytes.len() as u64 {
        return Err(malformed(format!(
            "body length {len} but {} bytes follow",
            c.bytes.len()
        )));
    }
    Ok((kind, c))
}

/// Decodes a [`Setup`] (the first message, before any parameters are agreed): validates the
/// parameter literal (security included) and the keys against it.
///
/// # Errors
/// [`ProtocolError::Malformed`], [`ProtocolError::Decode`], [`ProtocolError::He`] for an
/// insecure or invalid parameter literal.
pub fn decode_setup(bytes: &[u8], limit: usize) -> Result<Setup> {
    let (kind, mut c) = open_envelope_since(bytes, limit, OLDEST_SETUP_VERSION)?;
    if kind != MessageKind::Setup as u8 {
        return Err(malformed(format!("type {kind} where setup was expected")));
    }
    let log_n = u32::from(c.u8()?);
    let nq = usize::from(c.u8()?);
    let q_bits = c.take(nq)?.iter().map(|&b| u32::from(b)).collect();
    let np = usize::from(c.u8()?);
    let p_bits = c.take(np)?.iter().map(|&b| u32::from(b)).collect();
    let scale_bits = u32::from(c.u8()?);
    let security = SecurityLevel::from_bits(u32::from(c.u16()?))
        .ok_or_else(|| malformed("unknown security level"))?;
    let literal = ParametersLiteral {
        log_n,
        q_bits,
        p_bits,
        scale_bits,
        security,
    };
    let params = literal.build()?;
    let pk = c.object()?;
    let public_key = PublicKey::from_bytes(&params, pk, pk.len())?;
    let gk = c.object()?;
    let galois_keys = GaloisKeys::from_bytes(&params, gk, gk.len())?;
    let rk = c.object()?;
    let relinearization_key = RelinearizationKey::from_bytes(&params, rk, rk.len())?;
    let model =
        serde_json::from_slice(c.object()?).map_err(|e| malformed(format!("model JSON: {e}")))?;
    let learning_rate = f32::from_le_bytes(c.array()?);
    let expected_batch_size = f64::from_le_bytes(c.array()?);
    let init_seed = c.u64()?;
    let bias_init = f32::from_le_bytes(c.array()?);
    let replicas = c.u32()?;
    let block = c.u32()?;
    let weight_average = if c.bytes.is_empty() {
        0.0
    } else {
        f32::from_le_bytes(c.array()?)
    };
    c.finish()?;
    crate::update::WeightAverage {
        decay: weight_average,
    }
    .validate()?;
    if !(learning_rate.is_finite() && expected_batch_size.is_finite() && bias_init.is_finite())
        || expected_batch_size <= 0.0
    {
        return Err(malformed(
            "non-finite or non-positive training configuration",
        ));
    }
    Ok(Setup {
        params: literal,
        public_key,
        galois_keys,
        relinearization_key,
        model,
        training: TrainingConfig {
            learning_rate,
            expected_batch_size,
            init_seed,
            bias_init,
            replicas,
            block,
            weight_average,
        },
    })
}

impl ClientMessage {
    /// Decodes a training-phase message of the session with `params`, refusing a body over
    /// `limit` bytes before allocating. Setup is decoded by [`decode_setup`].
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for bytes that are not exactly one valid message,
    /// [`ProtocolError::Decode`] for an invalid or foreign ciphertext.
    pub fn decode(params: &Arc<Parameters>, bytes: &[u8], limit: usize) -> Result<Self> {
        let (kind, mut c) = open_envelope(bytes, limit)?;
        let msg = match kind {
            k if k == MessageKind::ForwardInput as u8 => Self::ForwardInput(c.batch(params)?),
            k if k == MessageKind::BackwardDelta as u8 => Self::BackwardDelta(c.batch(params)?),
            k if k == MessageKind::NoisyGradient as u8 => {
                let step = c.u64()?;
                let gradient = c.f32s()?;
                Self::NoisyGradient(NoisyGradient { step, gradient })
            }
            k if k == MessageKind::ModelRequest as u8 => Self::ModelRequest,
            other => return Err(malformed(format!("type {other} is not a client message"))),
        };
        c.finish()?;
        Ok(msg)
    }
}

impl ServerMessage {
    /// Decodes a server message of the session with `params`, refusing a body over
    /// `limit` bytes before allocating.
    ///
    /// # Errors
    /// As [`ClientMessage::decode`].
    pub fn decode(params: &Arc<Parameters>, bytes: &[u8], limit: usize) -> Result<Self> {
        Self::decode_from(params, bytes, limit, None)
    }

    /// [`decode`](Self::decode) of a message held in shared bytes: its results keep slices
    /// of `bytes` instead of copies (the client receives tens of megabytes of them per
    /// training step).
    ///
    /// # Errors
    /// As [`decode`](Self::decode).
    pub fn decode_shared(params: &Arc<Parameters>, bytes: &Bytes, limit: usize) -> Result<Self> {
        Self::decode_from(params, bytes, limit, Some(bytes))
    }

    fn decode_from(
        params: &Arc<Parameters>,
        bytes: &[u8],
        limit: usize,
        shared: Option<&Bytes>,
    ) -> Result<Self> {
        let (kind, mut c) = open_envelope(bytes, limit)?;
        let msg = match kind {
            k if k == MessageKind::ForwardOutput as u8 => {
                Self::ForwardOutput(c.result_batch(params, MessageKind::ForwardOutput, shared)?)
            }
            k if k == MessageKind::BackwardOutput as u8 => {
                Self::BackwardOutput(c.result_batch(params, MessageKind::BackwardOutput, shared)?)
            }
            k if k == MessageKind::WeightGradients as u8 => {
                let step = c.u64()?;
                let layer = c.u16()?;
                let first = c.u32()?;
                let cts = c.results(params, MessageKind::WeightGradients, shared)?;
                Self::WeightGradients(WeightGradients {
                    step,
                    layer,
                    first,
                    cts,
                })
            }
            k if k == MessageKind::ModelExport as u8 => {
                let layers = c.count(8)?;
                let mut weights = Vec::with_capacity(layers);
                let mut biases = Vec::with_capacity(layers);
                for _ in 0..layers {
                    weights.push(c.f32s()?);
                    biases.push(c.cts(params)?);
                }
                Self::ModelExport(Box::new(ModelExport { weights, biases }))
            }
            other => return Err(malformed(format!("type {other} is not a server message"))),
        };
        c.finish()?;
        Ok(msg)
    }
}
