//! The server (cloud) role.
//!
//! It holds the public material the client sent in [`Setup`], the plaintext weights `W`
//! and the encrypted biases `[b]`. This module imports only public types; a test
//! (`tests/server_has_no_secrets.rs`) fails if its source ever names a decryption key or
//! the client module.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use ndarray::Array2;
use rand::{CryptoRng, RngCore};
use rayon::prelude::*;
use sphinx_he::serialization::CompactCiphertext;
use sphinx_he::{
    Ciphertext, Encoder, Evaluator, GaloisKeys, Parameters, Plaintext, RelinearizationKey,
};
use sphinx_nn::model::Model;

use crate::accounting::{Phase, PhaseTimes};
use crate::error::{ProtocolError, Result};
use crate::messages::{
    ClientMessage, CtBatch, MessageKind, ModelExport, NoisyGradient, ResultBatch, ServerMessage,
    Setup, TrainingConfig, WeightGradients, compact_result, wire_bits,
};
use crate::plan::LayerPlan;
use crate::update::WeightAverage;

mod state;
pub use state::{STATE_MAGIC, STATE_VERSION};

/// Per-sample weight gradients per [`WeightGradients`] message: bounds the server's memory
/// for results in flight.
pub const GRADIENT_CHUNK: usize = 256;

/// Outputs per fused linear combination: enough to read each input block once for many
/// outputs, few enough to leave parallel tasks when a layer has a single position.
const UNIT_BLOCK: usize = 8;

// Gradient chunks and tasks start at even indices, so pairs of results never straddle them.
const _: () = assert!(GRADIENT_CHUNK.is_multiple_of(2) && UNIT_BLOCK.is_multiple_of(2));

/// Places `(index, ciphertext)` pieces computed in parallel at their indices.
fn in_order<T: Clone>(len: usize, pieces: Vec<Vec<(usize, T)>>) -> Result<Vec<T>> {
    let mut out: Vec<Option<T>> = vec![None; len];
    for (i, ct) in pieces.into_iter().flatten() {
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(ct);
        }
    }
    out.into_iter()
        .map(|c| {
            c.ok_or_else(|| ProtocolError::UnsupportedModel("an output no input reaches".into()))
        })
        .collect()
}

/// Items `2j` and `2j + 1` together; an odd last item alone.
fn in_pairs<T>(items: Vec<T>) -> Vec<(T, Option<T>)> {
    let mut pairs = Vec::with_capacity(items.len().div_ceil(2));
    let mut items = items.into_iter();
    while let Some(first) = items.next() {
        pairs.push((first, items.next()));
    }
    pairs
}

/// Results packed two per ciphertext, as every result message carries them: result `2j`
/// in the real parts of ciphertext `j`, result `2j + 1` in its imaginary parts
/// ([`Evaluator::add_imaginary_assign`]); an odd last result travels alone. The client
/// reads both halves of each slot, so the results cost half the bytes, half the rescales
/// and half the decryptions, for almost no added error (docs/protocol.md).
fn pack_pairs(eval: &Evaluator, cts: Vec<Ciphertext>) -> Result<Vec<Ciphertext>> {
    in_pairs(cts)
        .into_par_iter()
        .map(|pair| join_pair(eval, pair))
        .collect()
}

/// One pair of [`in_pairs`] as one ciphertext: `re + i·im`, or `re` alone.
fn join_pair(
    eval: &Evaluator,
    (mut re, im): (Ciphertext, Option<Ciphertext>),
) -> Result<Ciphertext> {
    if let Some(im) = im {
        eval.add_imaginary_assign(&mut re, &im)?;
    }
    Ok(re)
}

/// Where the server is within a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// `ForwardInput` of this layer (layer 0 starts a step).
    Forward(usize),
    /// `BackwardDelta` of this layer.
    Backward(usize),
    /// The `NoisyGradient` that ends the step.
    Update,
}

/// Per-sample gradients of one layer still to be sent.
struct GradientJob {
    layer: usize,
    /// `[δ]` packed `R` units per ciphertext: index `G · positions + pos`.
    delta: Vec<Ciphertext>,
    input: Vec<Ciphertext>,
    next: usize,
}

/// The cloud side of Sphinx training.
pub struct Server {
    params: Arc<Parameters>,
    eval: Evaluator,
    galois: GaloisKeys,
    relin: RelinearizationKey,
    config: TrainingConfig,
    plans: Vec<LayerPlan>,
    weights: Vec<Array2<f32>>,
    /// `W̄`, the average that export and inference use (`update.rs`); empty when the
    /// setup asks for none.
    averaged: Vec<Array2<f32>>,
    /// Per layer, `[b]` two units per ciphertext ([`pack_pairs`]: `b_{2j}` in the real parts
    /// of ciphertext `j`, `b_{2j+1}` in the imaginary parts, in every slot), so a pair is
    /// updated with one slot sum and stored and sent as one ciphertext.
    biases: Vec<Vec<Ciphertext>>,
    /// Per replica block `r`: `-lr/(qN)` on the block's slots, 0 elsewhere (top level,
    /// encoded at the scale `q_1` that the rescale divides out).
    bias_masks: Vec<Plaintext>,
    /// Per replica block `r`: the unscaled encoding coefficients of the block's indicator,
    /// from which the packed weights are combined (encoding is linear before rounding).
    block_coeffs: Vec<Vec<f64>>,
    /// Per layer, the packed weights of the current `W` (built on first use after an
    /// update): plaintext `G · patch + p` holds `W[G·R + r, p]` on block `r`'s slots, at the
    /// top level and the scale `q_1` that the rescale divides out.
    packed: Vec<Option<Arc<Vec<Plaintext>>>>,
    inputs: Vec<Option<Vec<Ciphertext>>>,
    jobs: VecDeque<GradientJob>,
    expect: Expect,
    step: u64,
    times: PhaseTimes,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("params", &self.params.id())
            .field("layers", &self.plans.len())
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

fn invalid(kind: MessageKind, reason: impl Into<String>) -> ProtocolError {
    ProtocolError::InvalidMessage {
        kind,
        reason: reason.into(),
    }
}

impl Server {
    /// Accepts a client's [`Setup`]: validates the parameters and keys, initializes
    /// `W⁰` from the configured seed and `b⁰` to the configured constant and encrypts `b⁰` under the client's public
    /// key (`rng` supplies the encryption randomness).
    ///
    /// # Errors
    /// [`ProtocolError::He`] for insecure or mismatched parameters and keys,
    /// [`ProtocolError::Nn`] / [`ProtocolError::UnsupportedModel`] for an unusable model.
    pub fn new<R: RngCore + CryptoRng>(setup: Setup, rng: &mut R) -> Result<Self> {
        let params = setup.params.build()?;
        params.check_id(setup.public_key.param_id())?;
        params.check_id(setup.galois_keys.param_id())?;
        params.check_id(setup.relinearization_key.0.param_id())?;
        let mut model = Model::new(setup.model.clone(), setup.training.init_seed)?;
        for layer in model.layers_mut() {
            if let Some(p) = layer.as_param_mut() {
                p.bias_mut().fill(setup.training.bias_init);
            }
        }
        let encoder = Encoder::new(&params);
        let eval = Evaluator::new(&params);
        let (mut plans, mut weights, mut biases) = (Vec::new(), Vec::new(), Vec::new());
        for layer in model.layers() {
            let Some(p) = layer.as_param() else { continue };
            plans.push(LayerPlan::of(layer)?);
            weights.push(p.weight().clone());
            let b = p
                .bias()
                .iter()
                .map(|&v| {
                    let pt =
                        encoder.encode(&vec![f64::from(v); params.slots()], params.scale(), 0)?;
                    Ok(setup.public_key.encrypt(&pt, rng)?)
                })
                .collect::<Result<Vec<_>>>()?;
            biases.push(pack_pairs(&eval, b)?);
        }
        if plans.is_empty() {
            return Err(ProtocolError::UnsupportedModel(
                "no parameterized layer".into(),
            ));
        }
        let (replicas, block) = (
            setup.training.replicas as usize,
            setup.training.block as usize,
        );
        if replicas == 0 || block == 0 || replicas.saturating_mul(block) > params.slots() {
            return Err(invalid(
                MessageKind::Setup,
                "replica blocks must be non-empty and fit the slots",
            ));
        }
        let factor = -f64::from(setup.training.learning_rate) / setup.training.expected_batch_size;
        if !factor.is_finite() {
            return Err(invalid(
                MessageKind::Setup,
                "learning rate / q·N not finite",
            ));
        }
        let top = params.max_level();
        let bias_masks = (0..replicas)
            .map(|r| {
                let mut v = vec![0.0; replicas * block];
                v[r * block..(r + 1) * block].fill(factor);
                Ok(encoder.encode(&v, eval.scalar_scale(top), top)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let block_coeffs = (0..replicas)
            .map(|r| {
                let mut v = vec![0.0; replicas * block];
                v[r * block..(r + 1) * block].fill(1.0);
                Ok(encoder.to_coefficients(&v)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let average = WeightAverage {
            decay: setup.training.weight_average,
        };
        average.validate()?;
        let averaged = if average.is_enabled() {
            weights.clone()
        } else {
            Vec::new()
        };
        let n = plans.len();
        Ok(Self {
            averaged,
            eval,
            bias_masks,
            block_coeffs,
            packed: vec![None; n],
            params,
            galois: setup.galois_keys,
            relin: setup.relinearization_key,
            config: setup.training,
            plans,
            weights,
            biases,
            inputs: vec![None; n],
            jobs: VecDeque::new(),
            expect: Expect::Forward(0),
            step: 0,
            times: PhaseTimes::default(),
        })
    }

    /// The session's parameters.
    #[must_use]
    pub fn params(&self) -> &Arc<Parameters> {
        &self.params
    }

    /// The plaintext weights, one matrix per parameterized layer.
    #[must_use]
    pub fn weights(&self) -> &[Array2<f32>] {
        &self.weights
    }

    /// The weights that export and inference use: the average `W̄` when the setup asks
    /// for one, else the training weights.
    #[must_use]
    pub fn model_weights(&self) -> &[Array2<f32>] {
        if self.averaged.is_empty() {
            &self.weights
        } else {
            &self.averaged
        }
    }

    /// Completed steps.
    #[must_use]
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Time spent per server phase so far.
    #[must_use]
    pub fn times(&self) -> &PhaseTimes {
        &self.times
    }

    /// Handles one client message and returns the immediate replies; afterwards, drain
    /// [`poll`](Self::poll) for per-sample gradients.
    ///
    /// # Errors
    /// [`ProtocolError::UnexpectedMessage`] / [`ProtocolError::InvalidMessage`] for a
    /// message that does not fit the state or the session, [`ProtocolError::He`] from the
    /// evaluator. The state is unchanged on a rejected message.
    pub fn handle(&mut self, msg: ClientMessage) -> Result<Vec<ServerMessage>> {
        let kind = msg.kind();
        match msg {
            ClientMessage::ForwardInput(b) => {
                let t = Instant::now();
                let out = self.forward(b)?;
                self.times.add(Phase::ServerForward, t.elapsed());
                Ok(vec![out])
            }
            ClientMessage::BackwardDelta(b) => {
                let t = Instant::now();
                let out = self.backward(b)?;
                self.times.add(Phase::ServerBackward, t.elapsed());
                Ok(out.into_iter().collect())
            }
            ClientMessage::NoisyGradient(g) => {
                let t = Instant::now();
                self.update(g)?;
                self.times.add(Phase::ServerUpdate, t.elapsed());
                Ok(Vec::new())
            }
            ClientMessage::ModelRequest => {
                Ok(vec![ServerMessage::ModelExport(Box::new(ModelExport {
                    weights: self
                        .model_weights()
                        .iter()
                        .map(|w| w.iter().copied().collect())
                        .collect(),
                    biases: self.biases.clone(),
                }))])
            }
            _ => Err(ProtocolError::UnexpectedMessage {
                got: kind,
                expected: "a training message after setup",
            }),
        }
    }

    /// The next chunk of per-sample weight gradients, computed on demand, or `None` when
    /// none is pending.
    ///
    /// # Errors
    /// [`ProtocolError::He`] from the evaluator.
    pub fn poll(&mut self) -> Result<Option<ServerMessage>> {
        let t = Instant::now();
        let Some(layer) = self.jobs.front().map(|j| j.layer) else {
            return Ok(None);
        };
        let total = self.gradient_cts(layer);
        let Some(job) = self.jobs.front_mut() else {
            return Ok(None);
        };
        let plan = &self.plans[job.layer];
        let end = (job.next + GRADIENT_CHUNK).min(total);
        let (eval, relin) = (&self.eval, &self.relin);
        let bits = wire_bits(MessageKind::WeightGradients)?;
        let (delta, input) = (&job.delta, &job.input);
        // Tasks of up to UNIT_BLOCK consecutive weights, starting at an even index so that
        // each task holds whole pairs of results (chunks start at even indices too). The
        // weights of one δ group meet the same δ at every position, which the fused kernel
        // then reads once for all of them; a task that crosses into the next group makes
        // one call per group.
        let mut tasks = Vec::new();
        let mut w = job.next;
        while w < end {
            let stop = (w + UNIT_BLOCK).min(end);
            tasks.push(w..stop);
            w = stop;
        }
        let pieces = tasks
            .into_par_iter()
            .map(|ws| {
                let mut sums = Vec::with_capacity(ws.len());
                let mut start = ws.start;
                while start < ws.end {
                    let group = start / plan.patch();
                    let run = start..((group + 1) * plan.patch()).min(ws.end);
                    let lhs: Vec<&Ciphertext> = (0..plan.positions())
                        .map(|pos| &delta[group * plan.positions() + pos])
                        .collect();
                    let rhs: Vec<Vec<Option<&Ciphertext>>> = run
                        .clone()
                        .map(|w| {
                            let p = w % plan.patch();
                            (0..plan.positions())
                                .map(|pos| plan.input_at(p, pos).map(|q| &input[q]))
                                .collect()
                        })
                        .collect();
                    // Inputs were checked to be fresh two-part ciphertexts at the top level
                    // and the default scale; a weight that only meets padding gets a zero
                    // gradient.
                    sums.extend(eval.multiply_sums_shared(&lhs, &rhs)?);
                    start = run.end;
                }
                // Packing a pair before relinearizing it key-switches and rescales the two
                // results once; relinearizing at level 1, before the rescale, divides the
                // key-switching noise by q_1 too.
                let first = (ws.start - job.next) / 2;
                in_pairs(sums)
                    .into_iter()
                    .enumerate()
                    .map(|(i, pair)| {
                        let mut ct = join_pair(eval, pair)?;
                        eval.relinearize_assign(&mut ct, relin)?;
                        Ok((first + i, eval.rescale_to_compact(&ct, bits)?))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let cts = in_order((end - job.next).div_ceil(2), pieces)?;
        let msg = ServerMessage::WeightGradients(WeightGradients {
            step: self.step,
            layer: job.layer as u16,
            first: job.next as u32,
            cts,
        });
        job.next = end;
        if job.next >= total {
            self.jobs.pop_front();
        }
        self.times.add(Phase::ServerBackward, t.elapsed());
        Ok(Some(msg))
    }

    /// The packed weights of layer `l` (see [`Server::packed`]), encoded now if `W` changed
    /// since they were last built.
    fn packed_weights(&mut self, layer: usize) -> Result<Arc<Vec<Plaintext>>> {
        if let Some(p) = &self.packed[layer] {
            return Ok(Arc::clone(p));
        }
        let (replicas, top) = (self.replicas(), self.params.max_level());
        let scale = self.eval.scalar_scale(top);
        let encoder = Encoder::new(&self.params);
        let (w, coeffs) = (&self.weights[layer], &self.block_coeffs);
        let (units, patch) = (w.nrows(), w.ncols());
        let pts = (0..self.groups(layer) * patch)
            .into_par_iter()
            .map(|i| {
                let (g, p) = (i / patch, i % patch);
                let mut c = vec![0.0; self.params.n()];
                for (r, block) in coeffs.iter().enumerate() {
                    let o = g * replicas + r;
                    if o >= units {
                        break;
                    }
                    let v = f64::from(w[[o, p]]);
                    for (dst, &x) in c.iter_mut().zip(block) {
                        *dst += v * x;
                    }
                }
                Ok(encoder.encode_coefficients(&c, scale, top)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let pts = Arc::new(pts);
        self.packed[layer] = Some(Arc::clone(&pts));
        Ok(pts)
    }

    /// `Σ_(i, k) ∈ terms[j] pts[k] ⊙ cts[i]` for every `j`, packed in pairs
    /// ([`pack_pairs`]) and rescaled to level 0 straight into the compact form of a `kind`
    /// message.
    fn plain_layer(
        &self,
        cts: &[Ciphertext],
        pts: &[Plaintext],
        terms: &[Vec<(u32, u32)>],
        kind: MessageKind,
    ) -> Result<Vec<CompactCiphertext>> {
        let bits = wire_bits(kind)?;
        let refs: Vec<&Ciphertext> = cts.iter().collect();
        let pts: Vec<&Plaintext> = pts.iter().collect();
        let terms: Vec<&[(u32, u32)]> = terms.iter().map(Vec::as_slice).collect();
        let out = self.eval.plain_dot_products(&refs, &pts, &terms)?;
        pack_pairs(&self.eval, out)?
            .par_iter()
            .map(|ct| Ok(self.eval.rescale_to_compact(ct, bits)?))
            .collect()
    }

    /// `R`.
    fn replicas(&self) -> usize {
        self.config.replicas as usize
    }

    /// Unit groups of `R` in layer `l`.
    fn groups(&self, layer: usize) -> usize {
        self.plans[layer].units().div_ceil(self.replicas())
    }

    /// Per-sample gradient ciphertexts of layer `l`: `groups · patch`.
    fn gradient_cts(&self, layer: usize) -> usize {
        self.groups(layer) * self.plans[layer].patch()
    }

    fn check_batch(&self, b: &CtBatch, kind: MessageKind, count: usize) -> Result<()> {
        if b.step != self.step {
            return Err(invalid(
                kind,
                format!("step {} during step {}", b.step, self.step),
            ));
        }
        if b.cts.len() != count {
            return Err(invalid(
                kind,
                format!("{} ciphertexts, expected {count}", b.cts.len()),
            ));
        }
        let top = self.params.max_level();
        for ct in &b.cts {
            self.params.check_id(ct.param_id())?;
            if ct.level() != top || ct.size() != 2 {
                return Err(invalid(
                    kind,
                    "ciphertexts must be fresh (two parts, top level)",
                ));
            }
            let ratio = ct.scale() / self.params.scale();
            if !(0.999_999..=1.000_001).contains(&ratio) {
                return Err(invalid(kind, "ciphertexts must be at the default scale"));
            }
        }
        Ok(())
    }

    fn forward(&mut self, b: CtBatch) -> Result<ServerMessage> {
        let kind = MessageKind::ForwardInput;
        let layer = usize::from(b.layer);
        if self.expect != Expect::Forward(layer) || !self.jobs.is_empty() {
            return Err(ProtocolError::UnexpectedMessage {
                got: kind,
                expected: "the input of the next layer, with no gradients pending",
            });
        }
        let plan = &self.plans[layer];
        self.check_batch(&b, kind, plan.in_dim())?;
        let packed = self.packed_weights(layer)?;
        let plan = &self.plans[layer];
        let (groups, patch, positions) = (self.groups(layer), plan.patch(), plan.positions());
        // Output G · positions + pos = Σ_p packed[G · patch + p] ⊙ a[map(p, pos)]; the
        // evaluator computes the whole layer one coefficient block at a time, so each input
        // and packed weight is read from memory once for all outputs.
        let terms: Vec<Vec<(u32, u32)>> = (0..groups * positions)
            .map(|i| {
                let (g, pos) = (i / positions, i % positions);
                (0..patch)
                    .filter_map(|p| {
                        let q = plan.input_at(p, pos)?;
                        Some((q as u32, (g * patch + p) as u32))
                    })
                    .collect()
            })
            .collect();
        let out_kind = MessageKind::ForwardOutput;
        let mut cts = self.plain_layer(&b.cts, &packed, &terms, out_kind)?;
        // The client adds the biases itself: the server cannot pack [b_o] into block r
        // without a second multiplicative level.
        for bias in &self.biases[layer] {
            cts.push(compact_result(bias, &self.params, out_kind)?);
        }
        self.inputs[layer] = Some(b.cts);
        self.expect = if layer + 1 < self.plans.len() {
            Expect::Forward(layer + 1)
        } else {
            Expect::Backward(layer)
        };
        Ok(ServerMessage::ForwardOutput(ResultBatch {
            step: self.step,
            layer: layer as u16,
            cts,
        }))
    }

    fn backward(&mut self, b: CtBatch) -> Result<Option<ServerMessage>> {
        let kind = MessageKind::BackwardDelta;
        let layer = usize::from(b.layer);
        if self.expect != Expect::Backward(layer) {
            return Err(ProtocolError::UnexpectedMessage {
                got: kind,
                expected: "the output gradient of the current layer",
            });
        }
        let packed_len = self.groups(layer) * self.plans[layer].positions();
        self.check_batch(&b, kind, packed_len)?;
        let weights = if layer > 0 {
            Some(self.packed_weights(layer)?)
        } else {
            None
        };
        let plan = &self.plans[layer];
        let delta = b.cts;
        let packed = delta.as_slice();
        let eval = &self.eval;
        let replicas = self.replicas();
        let groups_n = self.groups(layer);
        // [b_o] -= lr/(qN) · Σ_slots Σ_pos [δ_{o,pos}], from the packed δ: unit o sits in
        // block o mod R of group o div R, selected by that block's mask. The averaged bias
        // gradient is never decrypted by the server.
        let group_sums = (0..groups_n)
            .into_par_iter()
            .map(|g| {
                let row = &packed[g * plan.positions()..(g + 1) * plan.positions()];
                let mut sum = row[0].clone();
                for ct in &row[1..] {
                    eval.add_assign(&mut sum, ct)?;
                }
                Ok(sum)
            })
            .collect::<Result<Vec<_>>>()?;
        let units = plan.units();
        let masked =
            |o: usize| eval.mul_plain(&group_sums[o / replicas], &self.bias_masks[o % replicas]);
        let updates = (0..units.div_ceil(2))
            .into_par_iter()
            .map(|j| {
                // Units 2j and 2j + 1 share one slot sum, as they share a stored ciphertext.
                let mut pair = masked(2 * j)?;
                if 2 * j + 1 < units {
                    eval.add_imaginary_assign(&mut pair, &masked(2 * j + 1)?)?;
                }
                // Rotating before the rescale divides the key-switching noise by q_1 too.
                let mut total = eval.sum_slots(&pair, &self.galois)?;
                eval.rescale_assign(&mut total)?;
                Ok(total)
            })
            .collect::<Result<Vec<_>>>()?;
        let reply = if let Some(weights) = weights.as_deref() {
            // [Wᵀδ] from the packed δ and the packed weights: block r of input q's result
            // sums Σ_G Σ_(p,pos) W[G·R + r, p] · δ[G·R + r, pos] over the (p, pos) that read
            // q, and the client adds the R blocks.
            let (patch, positions) = (plan.patch(), plan.positions());
            let terms: Vec<Vec<(u32, u32)>> = (0..plan.in_dim())
                .map(|q| {
                    (0..groups_n)
                        .flat_map(|g| {
                            plan.readers(q).iter().map(move |&(p, pos)| {
                                (
                                    (g * positions + pos as usize) as u32,
                                    (g * patch + p as usize) as u32,
                                )
                            })
                        })
                        .collect()
                })
                .collect();
            let cts = self.plain_layer(packed, weights, &terms, MessageKind::BackwardOutput)?;
            Some(ServerMessage::BackwardOutput(ResultBatch {
                step: self.step,
                layer: layer as u16,
                cts,
            }))
        } else {
            None
        };
        for (bias, u) in self.biases[layer].iter_mut().zip(&updates) {
            eval.add_assign(bias, u)?;
        }
        let input = self.inputs[layer]
            .take()
            .ok_or_else(|| invalid(kind, "no stored layer input (forward pass incomplete)"))?;
        self.jobs.push_back(GradientJob {
            layer,
            delta,
            input,
            next: 0,
        });
        self.expect = match layer {
            0 => Expect::Update,
            l => Expect::Backward(l - 1),
        };
        Ok(reply)
    }

    fn update(&mut self, g: NoisyGradient) -> Result<()> {
        let kind = MessageKind::NoisyGradient;
        if self.expect != Expect::Update || !self.jobs.is_empty() {
            return Err(ProtocolError::UnexpectedMessage {
                got: kind,
                expected: "the noisy gradient after all per-sample gradients were sent",
            });
        }
        let total: usize = self.weights.iter().map(Array2::len).sum();
        if g.step != self.step || g.gradient.len() != total {
            return Err(invalid(
                kind,
                format!(
                    "step {} with {} entries; expected step {} with {total}",
                    g.step,
                    g.gradient.len(),
                    self.step
                ),
            ));
        }
        if g.gradient.iter().any(|v| !v.is_finite()) {
            return Err(invalid(kind, "non-finite gradient entry"));
        }
        let lr = self.config.learning_rate;
        self.packed.fill(None);
        let mut it = g.gradient.iter();
        for w in &mut self.weights {
            for (x, d) in w.iter_mut().zip(&mut it) {
                *x -= lr * d;
            }
        }
        if !self.averaged.is_empty() {
            WeightAverage {
                decay: self.config.weight_average,
            }
            .update(&mut self.averaged, &self.weights);
        }
        self.step += 1;
        self.expect = Expect::Forward(0);
        Ok(())
    }
}
