//! The client (data owner) role: the secret key, the data and the DP state.

use std::sync::Arc;
use std::time::Instant;

use ndarray::{Array2, ArrayView2};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use sphinx_dp::{BudgetLedger, DpEvent, DpSgdAggregator, PrivacyBudget};
use sphinx_he::serialization::CompactCiphertext;
use sphinx_he::{
    Ciphertext, Encoder, GaloisKeys, Parameters, PublicKey, RelinearizationKey, SecretKey,
};
use sphinx_nn::data::Dataset;
use sphinx_nn::layers::Layer;
use sphinx_nn::loss::softmax_cross_entropy;
use sphinx_nn::model::{Model, ModelSpec};

use crate::accounting::{Phase, PhaseTimes};
use crate::error::{ProtocolError, Result};
use crate::messages::{
    ClientMessage, CtBatch, MessageKind, ModelExport, NoisyGradient, ResultBatch, ServerMessage,
    Setup, TrainingConfig, WeightGradients,
};
use crate::plan::LayerPlan;

mod rewind;
pub use rewind::StepMark;

/// Standard deviations above the expected batch size that a slot block leaves room for:
/// a Poisson batch beyond `q·N + 6·√(q·N) + 8` is refused (probability below 10⁻⁸).
const BLOCK_SIGMAS: f64 = 6.0;

/// The client's training settings (the DP hyperparameters live in the aggregator).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientConfig {
    /// SGD learning rate (public: the server applies it).
    pub learning_rate: f32,
    /// Seed of the model initialization (public: the server initializes `W⁰`).
    pub init_seed: u64,
    /// Initial value of every bias (public; see [`TrainingConfig::bias_init`]).
    pub bias_init: f32,
    /// Decay of the exported average of `W` (public; see
    /// [`TrainingConfig::weight_average`]; 0: the last iterate).
    pub weight_average: f32,
    /// The (ε, δ) the run may never exceed.
    pub budget: PrivacyBudget,
}

/// What the client saw in one completed step (private to the client).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// Step index.
    pub step: u64,
    /// Realized Poisson batch size.
    pub batch_size: usize,
    /// Sum of per-sample losses before the update.
    pub loss_sum: f64,
    /// Correctly classified batch samples before the update.
    pub correct: usize,
    /// Samples whose W-gradient norm exceeded C.
    pub clipped: usize,
    /// ε spent after this step (at the budget's δ).
    pub epsilon: f64,
}

struct StepState {
    batch_len: usize,
    labels: Vec<u8>,
    /// Per parameterized layer, the inputs of the parameter-free layers that follow it.
    stacks: Vec<Vec<Array2<f32>>>,
    /// `(batch, Σ |W_l|)`: decrypted per-sample weight gradients.
    grads: Array2<f32>,
    received: usize,
    backward_done: bool,
    loss_sum: f64,
    correct: usize,
}

/// The data-owner side of Sphinx training.
pub struct Client {
    params: Arc<Parameters>,
    sk: SecretKey,
    encoder: Encoder,
    model: Model,
    param_idx: Vec<usize>,
    plans: Vec<LayerPlan>,
    w_offsets: Vec<usize>,
    w_total: usize,
    /// Per-sample gradient ciphertexts of a step.
    g_total: usize,
    /// Slots per replica block (the largest batch accepted).
    block: usize,
    /// `R`: replicas of the batch per ciphertext.
    replicas: usize,
    data: Dataset,
    agg: DpSgdAggregator,
    ledger: BudgetLedger,
    event: DpEvent,
    rng: ChaCha20Rng,
    state: Option<StepState>,
    step: u64,
    times: PhaseTimes,
    last: Option<StepOutcome>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("params", &self.params.id())
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

fn unexpected(got: MessageKind, expected: &'static str) -> ProtocolError {
    ProtocolError::UnexpectedMessage { got, expected }
}

impl Client {
    /// A client for `data`, generating fresh keys with `rng` (which also supplies all later
    /// encryption randomness), and the [`Setup`] message to send first. `aggregator` holds
    /// the DP configuration and the CSPRNG of Poisson sampling and noise; its dimension must
    /// be the number of weights (biases are not released, so not clipped).
    ///
    /// # Errors
    /// [`ProtocolError::UnsupportedModel`] if the model has no parameterized layer or the
    /// aggregator's dimension is wrong; [`ProtocolError::Malformed`] for a weight-average
    /// decay outside `[0, 1)`; [`ProtocolError::He`] from key generation.
    pub fn new(
        params: Arc<Parameters>,
        spec: ModelSpec,
        data: Dataset,
        aggregator: DpSgdAggregator,
        config: ClientConfig,
        mut rng: ChaCha20Rng,
    ) -> Result<(Self, ClientMessage)> {
        crate::update::WeightAverage {
            decay: config.weight_average,
        }
        .validate()?;
        let model = Model::zeros(spec.clone())?;
        let param_idx = model.param_layer_indices();
        if param_idx.is_empty() {
            return Err(ProtocolError::UnsupportedModel(
                "no parameterized layer".into(),
            ));
        }
        let expected = aggregator.expected_batch_size();
        let block = ((expected + BLOCK_SIGMAS * expected.sqrt() + 8.0).ceil() as usize)
            .clamp(1, params.slots());
        let replicas = (params.slots() / block).max(1);
        let plans = param_idx
            .iter()
            .map(|&i| LayerPlan::of(&model.layers()[i]))
            .collect::<Result<Vec<_>>>()?;
        let mut w_offsets = Vec::new();
        let (mut w_total, mut g_total) = (0, 0);
        for plan in &plans {
            w_offsets.push(w_total);
            w_total += plan.weights();
            g_total += plan.units().div_ceil(replicas) * plan.patch();
        }
        if aggregator.dim() != w_total {
            return Err(ProtocolError::UnsupportedModel(format!(
                "aggregator dimension {} is not the model's {w_total} weights",
                aggregator.dim()
            )));
        }
        let sk = SecretKey::generate(&params, &mut rng)?;
        let pk = PublicKey::new(&sk, &mut rng)?;
        let steps: Vec<i64> = std::iter::successors(Some(1i64), |s| Some(s * 2))
            .take_while(|&s| (s as usize) < params.slots())
            .collect();
        let galois = GaloisKeys::new(&sk, &steps, false, &mut rng)?;
        let relinearization_key = RelinearizationKey::new(&sk, &mut rng)?;
        let dp = *aggregator.config();
        let setup = Setup {
            params: params.literal().clone(),
            public_key: pk,
            galois_keys: galois,
            relinearization_key,
            model: spec,
            training: TrainingConfig {
                learning_rate: config.learning_rate,
                expected_batch_size: aggregator.expected_batch_size(),
                init_seed: config.init_seed,
                bias_init: config.bias_init,
                replicas: replicas as u32,
                block: block as u32,
                weight_average: config.weight_average,
            },
        };
        let client = Self {
            encoder: Encoder::new(&params),
            params,
            sk,
            model,
            param_idx,
            plans,
            w_offsets,
            w_total,
            g_total,
            block,
            replicas,
            data,
            agg: aggregator,
            ledger: BudgetLedger::new(config.budget),
            event: DpEvent::poisson_gaussian(dp.sample_rate, dp.noise_multiplier),
            rng,
            state: None,
            step: 0,
            times: PhaseTimes::default(),
            last: None,
        };
        Ok((client, ClientMessage::Setup(Box::new(setup))))
    }

    /// The privacy ledger (ε spent, history).
    #[must_use]
    pub fn ledger(&self) -> &BudgetLedger {
        &self.ledger
    }

    /// Time spent per client phase so far.
    #[must_use]
    pub fn times(&self) -> &PhaseTimes {
        &self.times
    }

    /// The last completed step.
    #[must_use]
    pub fn last_step(&self) -> Option<StepOutcome> {
        self.last
    }

    /// Completed steps.
    #[must_use]
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The state that [`crate::client_state`] snapshots and restores.
    pub(crate) fn resumable(&mut self) -> crate::client_state::Resumable<'_> {
        crate::client_state::Resumable {
            step: &mut self.step,
            rng: &mut self.rng,
            agg: &mut self.agg,
            ledger: &mut self.ledger,
            last: &mut self.last,
            in_step: self.state.is_some(),
        }
    }

    /// Starts a step: refuses if one more step would exceed the budget, then draws a
    /// Poisson batch and returns the encrypted input of the first parameterized layer.
    ///
    /// # Errors
    /// [`ProtocolError::BudgetExhausted`] (nothing drawn, nothing sent),
    /// [`ProtocolError::BatchTooLarge`], [`ProtocolError::UnexpectedMessage`] while a step
    /// is in progress.
    pub fn start_step(&mut self) -> Result<ClientMessage> {
        if self.state.is_some() {
            return Err(unexpected(
                MessageKind::ForwardInput,
                "the current step to finish first",
            ));
        }
        if !self.ledger.can_take_step(self.event)? {
            return Err(ProtocolError::BudgetExhausted {
                budget: self.ledger.budget().epsilon.get(),
            });
        }
        let t = Instant::now();
        let batch = self.agg.sample_batch();
        if batch.len() > self.block {
            return Err(ProtocolError::BatchTooLarge {
                batch: batch.len(),
                slots: self.block,
            });
        }
        let (mut x, labels) = self.data.batch(&batch)?;
        for layer in &self.model.layers()[..self.param_idx[0]] {
            x = layer.forward(x.view())?;
        }
        let k = self.param_idx.len();
        self.state = Some(StepState {
            batch_len: batch.len(),
            labels,
            stacks: vec![Vec::new(); k],
            grads: Array2::zeros((batch.len(), self.w_total)),
            received: 0,
            backward_done: false,
            loss_sum: 0.0,
            correct: 0,
        });
        self.times.add(Phase::ClientNonlinear, t.elapsed());
        let cts = self.encrypt_columns(x.view())?;
        Ok(ClientMessage::ForwardInput(CtBatch {
            step: self.step,
            layer: 0,
            cts,
        }))
    }

    /// Handles one server message and returns the replies.
    ///
    /// # Errors
    /// [`ProtocolError::UnexpectedMessage`] / [`ProtocolError::InvalidMessage`] for a
    /// message that does not fit the step; errors of decryption and of the DP aggregation.
    pub fn handle(&mut self, msg: ServerMessage) -> Result<Vec<ClientMessage>> {
        match msg {
            ServerMessage::ForwardOutput(b) => self.on_forward(b).map(|m| vec![m]),
            ServerMessage::BackwardOutput(b) => self.on_backward(b).map(|m| vec![m]),
            ServerMessage::WeightGradients(g) => Ok(self.on_gradients(g)?.into_iter().collect()),
            other => Err(unexpected(other.kind(), "a training message")),
        }
    }

    /// The trained model: the server's `W` with the decrypted biases.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidMessage`] if the export does not fit the architecture.
    pub fn assemble_model(&self, export: &ModelExport) -> Result<Model> {
        let bad = |r: &str| ProtocolError::InvalidMessage {
            kind: MessageKind::ModelExport,
            reason: r.to_owned(),
        };
        let mut model = Model::zeros(self.model.spec().clone())?;
        if export.weights.len() != self.param_idx.len()
            || export.biases.len() != self.param_idx.len()
        {
            return Err(bad("wrong number of layers"));
        }
        for (k, &i) in self.param_idx.iter().enumerate() {
            let layer = model.layers_mut()[i]
                .as_param_mut()
                .ok_or_else(|| bad("not a parameterized layer"))?;
            let w = &export.weights[k];
            if w.len() != layer.weight().len()
                || export.biases[k].len() != layer.bias().len().div_ceil(2)
            {
                return Err(bad("layer size mismatch"));
            }
            for (dst, &v) in layer.weight_mut().iter_mut().zip(w) {
                *dst = v;
            }
            // Two biases per ciphertext, each in every slot: read the first slot's parts.
            let (sk, encoder) = (&self.sk, &self.encoder);
            let pairs = export.biases[k]
                .par_iter()
                .map(|ct| {
                    let slots = encoder.decode_complex(&sk.decrypt(ct)?)?;
                    let first = slots.first().ok_or_else(|| bad("no slots"))?;
                    Ok([first.re as f32, first.im as f32])
                })
                .collect::<Result<Vec<_>>>()?;
            for (dst, v) in layer.bias_mut().iter_mut().zip(pairs.into_iter().flatten()) {
                *dst = v;
            }
        }
        Ok(model)
    }

    fn state_mut(&mut self, kind: MessageKind) -> Result<&mut StepState> {
        self.state
            .as_mut()
            .ok_or_else(|| unexpected(kind, "no message outside a step"))
    }

    fn check_batch(&self, b: &ResultBatch, kind: MessageKind, count: usize) -> Result<()> {
        if b.step != self.step || b.cts.len() != count {
            return Err(ProtocolError::InvalidMessage {
                kind,
                reason: format!(
                    "step {} with {} ciphertexts; expected step {} with {count}",
                    b.step,
                    b.cts.len(),
                    self.step
                ),
            });
        }
        Ok(())
    }

    /// The parameter-free layers after parameterized layer `k`.
    fn stack(&self, k: usize) -> &[Layer] {
        let start = self.param_idx[k] + 1;
        let end = self
            .param_idx
            .get(k + 1)
            .copied()
            .unwrap_or(self.model.layers().len());
        &self.model.layers()[start..end]
    }

    fn on_forward(&mut self, b: ResultBatch) -> Result<ClientMessage> {
        let kind = MessageKind::ForwardOutput;
        let k = usize::from(b.layer);
        let batch_len = self.state_mut(kind)?.batch_len;
        let Some(plan) = self.plans.get(k) else {
            return Err(unexpected(kind, "a known layer"));
        };
        let (units, positions) = (plan.units(), plan.positions());
        let packed_len = units.div_ceil(self.replicas) * positions;
        self.check_batch(&b, kind, packed_len.div_ceil(2) + units.div_ceil(2))?;
        let t = Instant::now();
        let mut cur = self.decrypt_forward(&b.cts, units, positions, batch_len)?;
        let mut stack = Vec::new();
        for layer in self.stack(k) {
            let next = layer.forward(cur.view())?;
            stack.push(std::mem::replace(&mut cur, next));
        }
        let last = k + 1 == self.param_idx.len();
        let to_send = if last {
            let state = self.state_mut(kind)?;
            let loss = softmax_cross_entropy(cur.view(), &state.labels)?;
            state.loss_sum = loss.loss_sum;
            state.correct = loss.correct;
            let mut grad = loss.grad;
            for (layer, input) in self.stack(k).iter().zip(&stack).rev() {
                grad = backward_nonlinear(layer, input.view(), grad.view())?;
            }
            grad
        } else {
            cur
        };
        self.state_mut(kind)?.stacks[k] = stack;
        self.times.add(Phase::ClientNonlinear, t.elapsed());
        if last {
            let cts = self.encrypt_packed(k, to_send.view())?;
            if k == 0 {
                self.state_mut(kind)?.backward_done = true;
            }
            Ok(ClientMessage::BackwardDelta(CtBatch {
                step: self.step,
                layer: k as u16,
                cts,
            }))
        } else {
            Ok(ClientMessage::ForwardInput(CtBatch {
                step: self.step,
                layer: (k + 1) as u16,
                cts: self.encrypt_columns(to_send.view())?,
            }))
        }
    }

    fn on_backward(&mut self, b: ResultBatch) -> Result<ClientMessage> {
        let kind = MessageKind::BackwardOutput;
        let k = usize::from(b.layer);
        let batch_len = self.state_mut(kind)?.batch_len;
        if k == 0 || k >= self.param_idx.len() {
            return Err(unexpected(
                kind,
                "the input gradient of a layer above the first",
            ));
        }
        let in_dim = self.model.layers()[self.param_idx[k]].in_dim();
        self.check_batch(&b, kind, in_dim.div_ceil(2))?;
        let t = Instant::now();
        let mut grad = self.decrypt_block_sums(&b.cts, in_dim, batch_len)?;
        let stack = std::mem::take(&mut self.state_mut(kind)?.stacks[k - 1]);
        for (layer, input) in self.stack(k - 1).iter().zip(&stack).rev() {
            grad = backward_nonlinear(layer, input.view(), grad.view())?;
        }
        self.times.add(Phase::ClientNonlinear, t.elapsed());
        let cts = self.encrypt_packed(k - 1, grad.view())?;
        if k == 1 {
            self.state_mut(kind)?.backward_done = true;
        }
        Ok(ClientMessage::BackwardDelta(CtBatch {
            step: self.step,
            layer: (k - 1) as u16,
            cts,
        }))
    }

    fn on_gradients(&mut self, g: WeightGradients) -> Result<Option<ClientMessage>> {
        let kind = MessageKind::WeightGradients;
        let k = usize::from(g.layer);
        let (Some(&offset), Some(plan)) = (self.w_offsets.get(k), self.plans.get(k)) else {
            return Err(unexpected(kind, "a known layer"));
        };
        let (units, patch, r_count, block) =
            (plan.units(), plan.patch(), self.replicas, self.block);
        let first = g.first as usize;
        // The chunk's results, two per ciphertext, from an even index: all that are left
        // of the layer or two per ciphertext, whichever is fewer.
        let count = (units.div_ceil(r_count) * patch)
            .checked_sub(first)
            .map_or(0, |left| left.min(2 * g.cts.len()));
        if g.step != self.step
            || !first.is_multiple_of(2)
            || count == 0
            || count.div_ceil(2) != g.cts.len()
        {
            return Err(ProtocolError::InvalidMessage {
                kind,
                reason: "gradient chunk outside the layer or the step".into(),
            });
        }
        let batch_len = self.state_mut(kind)?.batch_len;
        let t = Instant::now();
        let slots = self.decrypt_results(&g.cts, count)?;
        let g_total = self.g_total;
        let state = self.state_mut(kind)?;
        for (i, values) in slots.iter().enumerate() {
            let (group, p) = ((first + i) / patch, (first + i) % patch);
            for r in 0..r_count {
                let o = group * r_count + r;
                if o >= units {
                    break;
                }
                let col = offset + o * patch + p;
                for j in 0..batch_len {
                    state.grads[[j, col]] = values[r * block + j] as f32;
                }
            }
        }
        state.received += count;
        let done = state.received == g_total && state.backward_done;
        let out = if done {
            Some(self.finish_step()?)
        } else {
            None
        };
        self.times.add(Phase::ClientGradients, t.elapsed());
        Ok(out)
    }

    /// Clip each sample's whole W-gradient to C, sum, add N(0, σ²C²), divide by q·N,
    /// record the step, release.
    fn finish_step(&mut self) -> Result<ClientMessage> {
        let state = self
            .state
            .take()
            .ok_or_else(|| unexpected(MessageKind::WeightGradients, "a step in progress"))?;
        let clip = self.agg.config().clip_norm.get();
        let mut step = self.agg.begin_step();
        let mut clipped = 0;
        for row in state.grads.rows() {
            let row = row.to_vec();
            let info = step.add(&row)?;
            clipped += usize::from(info.norm > clip);
        }
        let out = step.finish();
        let spent = self.ledger.try_record_step(self.event)?;
        self.last = Some(StepOutcome {
            step: self.step,
            batch_size: state.batch_len,
            loss_sum: state.loss_sum,
            correct: state.correct,
            clipped,
            epsilon: spent.epsilon.get(),
        });
        let msg = ClientMessage::NoisyGradient(NoisyGradient {
            step: self.step,
            gradient: out.gradient,
        });
        self.step += 1;
        Ok(msg)
    }

    /// One ciphertext per column of `m` (`batch × dim`): slot `r·block + j` holds row `j`
    /// for every replica `r`. Fresh seeded symmetric encryptions at the top level.
    fn encrypt_columns(&mut self, m: ArrayView2<'_, f32>) -> Result<Vec<Ciphertext>> {
        let (replicas, block) = (self.replicas, self.block);
        self.encrypt_with(m.ncols(), |i, values| {
            for r in 0..replicas {
                for (j, &v) in m.column(i).iter().enumerate() {
                    values[r * block + j] = f64::from(v);
                }
            }
        })
    }

    /// `δ` of parameterized layer `k` packed `R` units per ciphertext: ciphertext
    /// `G · positions + pos` holds, in block `r`, `δ[·, (G·R + r) · positions + pos]`.
    fn encrypt_packed(&mut self, k: usize, delta: ArrayView2<'_, f32>) -> Result<Vec<Ciphertext>> {
        let plan = self
            .plans
            .get(k)
            .ok_or_else(|| ProtocolError::UnsupportedModel("layer index".into()))?;
        let (units, positions) = (plan.units(), plan.positions());
        let (replicas, block) = (self.replicas, self.block);
        let count = units.div_ceil(replicas) * positions;
        self.encrypt_with(count, |c, values| {
            let (group, pos) = (c / positions, c % positions);
            for r in 0..replicas {
                let o = group * replicas + r;
                if o >= units {
                    break;
                }
                for (j, &v) in delta.column(o * positions + pos).iter().enumerate() {
                    values[r * block + j] = f64::from(v);
                }
            }
        })
    }

    /// `count` fresh encryptions; ciphertext `i` encrypts the slot values that
    /// `fill(i, ·)` writes into zeros.
    fn encrypt_with<F>(&mut self, count: usize, fill: F) -> Result<Vec<Ciphertext>>
    where
        F: Fn(usize, &mut [f64]) + Sync,
    {
        let t = Instant::now();
        let seeds: Vec<[u8; 32]> = (0..count)
            .map(|_| {
                let mut s = [0u8; 32];
                self.rng.fill_bytes(&mut s);
                s
            })
            .collect();
        let (sk, encoder, params) = (&self.sk, &self.encoder, &self.params);
        let used = (self.replicas * self.block).min(params.slots());
        let out = seeds
            .into_par_iter()
            .enumerate()
            .map(|(i, seed)| {
                let mut rng = ChaCha20Rng::from_seed(seed);
                let mut values = vec![0.0; used];
                fill(i, &mut values);
                let pt = encoder.encode(&values, params.scale(), params.max_level())?;
                Ok(sk.encrypt(&pt, &mut rng)?)
            })
            .collect::<Result<Vec<_>>>();
        self.times.add(Phase::ClientEncrypt, t.elapsed());
        out
    }

    /// The first `count` results of compact ciphertexts that carry them in pairs (result
    /// `2j` in the real parts of ciphertext `j`, `2j + 1` in its imaginary parts), each as
    /// its slot values; decrypted in the coefficient domain they arrive in.
    fn decrypt_results(&self, cts: &[CompactCiphertext], count: usize) -> Result<Vec<Vec<f64>>> {
        let (sk, encoder) = (&self.sk, &self.encoder);
        let pairs = cts
            .par_iter()
            .map(|ct| {
                let slots =
                    encoder.decode_coeffs_complex(&sk.decrypt_compact(ct)?, 0, ct.scale())?;
                Ok([
                    slots.iter().map(|z| z.re).collect::<Vec<f64>>(),
                    slots.iter().map(|z| z.im).collect(),
                ])
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(pairs.into_iter().flatten().take(count).collect())
    }

    /// A layer's pre-activations `z = Wa + b` (`rows × units·positions`) from a forward
    /// output: the packed products (ciphertext `G · positions + pos` holds unit `G·R + r`
    /// in block `r`), then `[b_o]` per unit, whose decryption the client adds.
    fn decrypt_forward(
        &self,
        cts: &[CompactCiphertext],
        units: usize,
        positions: usize,
        rows: usize,
    ) -> Result<Array2<f32>> {
        let (replicas, block) = (self.replicas, self.block);
        let packed_len = units.div_ceil(replicas) * positions;
        let (packed, biases) = cts.split_at(packed_len.div_ceil(2).min(cts.len()));
        let slots = self.decrypt_results(packed, packed_len)?;
        // Every slot of [b_o] holds b_o: their mean averages the encryption noise away.
        let biases: Vec<f64> = self
            .decrypt_results(biases, units)?
            .iter()
            .map(|v| v.iter().sum::<f64>() / v.len().max(1) as f64)
            .collect();
        let mut out = Array2::zeros((rows, units * positions));
        for (i, values) in slots.iter().enumerate() {
            let (group, pos) = (i / positions, i % positions);
            for r in 0..replicas {
                let o = group * replicas + r;
                let Some(&bias) = biases.get(o) else { break };
                let block_values = values.get(r * block..r * block + rows).unwrap_or(&[]);
                for (j, &v) in block_values.iter().enumerate() {
                    out[[j, o * positions + pos]] = (v + bias) as f32;
                }
            }
        }
        Ok(out)
    }

    /// A backward output `[Wᵀδ]` (one result per input scalar whose `R` blocks hold
    /// partial sums over the units of each block): the sum of the blocks, `rows × inputs`.
    fn decrypt_block_sums(
        &self,
        cts: &[CompactCiphertext],
        inputs: usize,
        rows: usize,
    ) -> Result<Array2<f32>> {
        let (replicas, block) = (self.replicas, self.block);
        let cols = self.decrypt_results(cts, inputs)?;
        let mut out = Array2::zeros((rows, inputs));
        for (i, col) in cols.iter().enumerate() {
            for j in 0..rows {
                let v: f64 = (0..replicas).filter_map(|r| col.get(r * block + j)).sum();
                out[[j, i]] = v as f32;
            }
        }
        Ok(out)
    }
}

fn backward_nonlinear(
    layer: &Layer,
    input: ArrayView2<'_, f32>,
    grad: ArrayView2<'_, f32>,
) -> Result<Array2<f32>> {
    let nl = layer.as_nonlinear().ok_or_else(|| {
        ProtocolError::UnsupportedModel("two parameterized layers in a row".into())
    })?;
    Ok(nl.backward(input, grad)?)
}
