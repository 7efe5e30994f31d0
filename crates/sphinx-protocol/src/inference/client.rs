//! The client (data owner) role of private inference: the BFV secret key, the seeds of the
//! masks `r`, the decrypted shares `W r − s`, the biases, and which masks are used.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use sphinx_he::bfv::{Bfv, BfvParameters};
use sphinx_he::{PublicKey, SecretKey};
use sphinx_nn::layers::Layer;
use sphinx_nn::model::{Model, ModelSpec};
use zeroize::Zeroize;

use crate::error::{ProtocolError, Result};
use crate::inference::messages::{
    InferenceClientMessage, InferenceKind, InferenceServerMessage, InferenceSetup, OnlineValues,
    PreprocessInput, PreprocessOutput, PreprocessStart, Ready,
};
use crate::inference::{CHUNK, FixedPoint, Prf, apply_nonlinear, dequantize, quantize, stream_of};
use crate::plan::LayerPlan;

/// One parameterized layer as the client sees it: sizes, its bias, and the parameter-free
/// layers that follow it (up to the next parameterized layer or the end).
struct ClientLayer {
    in_dim: usize,
    out_dim: usize,
    positions: usize,
    /// `b[o]` at `2^(activation_bits + weight_bits)`.
    bias: Vec<i64>,
    after: Vec<Layer>,
}

/// Client-side state of one preprocessing round.
struct ClientRound {
    id: u64,
    /// Key of the masks `r` (PRF stream `(layer, query)`); zeroized on drop.
    seed: [u8; 32],
    queries: u32,
    /// Next unused query slot: slots below it are burned (sent at least once).
    next_query: u32,
    /// Per layer, `W r − s` of every query: `shares[l][j · out_dim + o]`.
    shares: Vec<Vec<u64>>,
    /// Per layer, the server's layer version of the shares (`None`: not complete).
    done: Vec<Option<u64>>,
}

impl Drop for ClientRound {
    fn drop(&mut self) {
        self.seed.zeroize();
    }
}

struct ClientJob {
    round: u64,
    layers: VecDeque<usize>,
    /// Next input index of the front layer to encrypt.
    next_input: usize,
    /// Outputs of the front layer received.
    received: usize,
}

/// The logits of one private query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// The preprocessing round whose masks served it.
    pub round: u64,
    /// The query slot.
    pub query: u32,
    /// The model output (after any trailing parameter-free layers).
    pub logits: Vec<f32>,
}

/// The data owner's side of Sphinx private inference.
///
/// Preprocessing: [`start_preprocessing`](Self::start_preprocessing) (or
/// [`start_refresh`](Self::start_refresh)), then send everything [`poll`](Self::poll)
/// yields and feed every server reply to [`handle`](Self::handle). Online:
/// [`start_query`](Self::start_query), feed replies to [`handle`](Self::handle) and send
/// what it returns until [`take_result`](Self::take_result) has the logits.
pub struct InferenceClient {
    params: Arc<BfvParameters>,
    bfv: Bfv,
    sk: SecretKey,
    fixed: FixedPoint,
    before: Vec<Layer>,
    layers: Vec<ClientLayer>,
    rounds: Vec<ClientRound>,
    job: Option<ClientJob>,
    inflight: BTreeMap<(u64, u32), usize>,
    results: VecDeque<QueryResult>,
    versions: Option<Ready>,
    next_round: u64,
    rng: ChaCha20Rng,
}

impl std::fmt::Debug for InferenceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceClient")
            .field("params", &self.params.id())
            .field("layers", &self.layers.len())
            .field("rounds", &self.rounds.len())
            .field("fresh_queries", &self.fresh_queries())
            .finish_non_exhaustive()
    }
}

fn unexpected(got: InferenceKind, expected: &'static str) -> ProtocolError {
    ProtocolError::UnexpectedInference { got, expected }
}

fn invalid(kind: InferenceKind, reason: impl Into<String>) -> ProtocolError {
    ProtocolError::InvalidInference {
        kind,
        reason: reason.into(),
    }
}

impl InferenceClient {
    /// A client for a model of architecture `spec` with biases `biases` (per parameterized
    /// layer, as decrypted from the training export: see [`super::biases_of`]). Generates
    /// a BFV key pair and returns the [`InferenceSetup`] message (public key only).
    ///
    /// # Errors
    /// [`ProtocolError::Nn`] / [`ProtocolError::UnsupportedModel`] for an unusable
    /// architecture or biases that do not match it or the fixed point;
    /// [`ProtocolError::He`] from key generation.
    pub fn new(
        params: Arc<BfvParameters>,
        spec: ModelSpec,
        biases: Vec<Vec<f32>>,
        fixed: FixedPoint,
        mut rng: ChaCha20Rng,
    ) -> Result<(Self, InferenceClientMessage)> {
        fixed.check(params.t())?;
        let model = Model::zeros(spec)?;
        let half = (params.t() / 2) as i64;
        let mut before = Vec::new();
        let mut layers: Vec<ClientLayer> = Vec::new();
        let mut biases = biases.into_iter();
        for layer in model.layers() {
            if layer.as_param().is_some() {
                let plan = LayerPlan::of(layer)?;
                let b = biases.next().ok_or_else(|| {
                    ProtocolError::UnsupportedModel("fewer biases than layers".into())
                })?;
                if b.len() != plan.units() {
                    return Err(ProtocolError::UnsupportedModel(format!(
                        "{} biases for {} units",
                        b.len(),
                        plan.units()
                    )));
                }
                let bias = b
                    .iter()
                    .map(|&v| quantize(f64::from(v), fixed.output_bits(), half / 2))
                    .collect::<Result<Vec<_>>>()?;
                layers.push(ClientLayer {
                    in_dim: plan.in_dim(),
                    out_dim: plan.out_dim(),
                    positions: plan.positions(),
                    bias,
                    after: Vec::new(),
                });
            } else if let Some(last) = layers.last_mut() {
                last.after.push(layer.clone());
            } else {
                before.push(layer.clone());
            }
        }
        if layers.is_empty() || biases.next().is_some() {
            return Err(ProtocolError::UnsupportedModel(
                "biases must match the parameterized layers (at least one)".into(),
            ));
        }
        let sk = SecretKey::generate(params.rlwe(), &mut rng)?;
        let public_key = PublicKey::new(&sk, &mut rng)?;
        let setup = InferenceSetup {
            params: params.literal().clone(),
            public_key,
            fixed,
        };
        let client = Self {
            bfv: Bfv::new(&params),
            params,
            sk,
            fixed,
            before,
            layers,
            rounds: Vec::new(),
            job: None,
            inflight: BTreeMap::new(),
            results: VecDeque::new(),
            versions: None,
            next_round: 0,
            rng,
        };
        Ok((client, InferenceClientMessage::Setup(Box::new(setup))))
    }

    /// Replaces the biases (after training steps: the client decrypts the new `[b]`).
    /// Biases are added locally, so no preprocessing is needed for them.
    ///
    /// # Errors
    /// [`ProtocolError::UnsupportedModel`] if they do not match the layers or the fixed
    /// point; the old biases stay then.
    pub fn set_biases(&mut self, biases: Vec<Vec<f32>>) -> Result<()> {
        if biases.len() != self.layers.len() {
            return Err(ProtocolError::UnsupportedModel(format!(
                "{} bias vectors for {} layers",
                biases.len(),
                self.layers.len()
            )));
        }
        let half = (self.params.t() / 2) as i64;
        let bits = self.fixed.output_bits();
        let quantized = biases
            .iter()
            .zip(&self.layers)
            .map(|(b, l)| {
                if b.len() * l.positions != l.out_dim {
                    return Err(ProtocolError::UnsupportedModel("bias length".into()));
                }
                b.iter()
                    .map(|&v| quantize(f64::from(v), bits, half / 2))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        for (l, b) in self.layers.iter_mut().zip(quantized) {
            l.bias = b;
        }
        Ok(())
    }

    /// The session's BFV parameters.
    #[must_use]
    pub fn params(&self) -> &Arc<BfvParameters> {
        &self.params
    }

    /// The fixed-point scales.
    #[must_use]
    pub fn fixed_point(&self) -> FixedPoint {
        self.fixed
    }

    /// The server's model version as last reported (a [`Ready`] or [`super::messages::Stale`]
    /// reply), or the newest layer version seen in preprocessing outputs.
    #[must_use]
    pub fn model_version(&self) -> Option<u64> {
        self.versions.as_ref().map(|v| v.model_version).or_else(|| {
            self.rounds
                .iter()
                .flat_map(|r| r.done.iter().flatten())
                .copied()
                .max()
        })
    }

    /// Fresh (never sent) query slots of completely preprocessed rounds that are not
    /// known to be stale.
    #[must_use]
    pub fn fresh_queries(&self) -> usize {
        self.rounds
            .iter()
            .filter(|r| self.round_usable(r))
            .map(|r| (r.queries - r.next_query) as usize)
            .sum()
    }

    /// Output ciphertexts of a full preprocessing round: the output scalars of all layers.
    #[must_use]
    pub fn preprocessing_outputs(&self) -> usize {
        self.layers.iter().map(|l| l.out_dim).sum()
    }

    /// Input ciphertexts of a full preprocessing round: the input scalars of all layers.
    #[must_use]
    pub fn preprocessing_inputs(&self) -> usize {
        self.layers.iter().map(|l| l.in_dim).sum()
    }

    /// Whether preprocessing (or a refresh) is in progress.
    #[must_use]
    pub fn preprocessing(&self) -> bool {
        self.job.is_some()
    }

    fn stale_layers(&self, r: &ClientRound) -> Vec<usize> {
        (0..self.layers.len())
            .filter(|&l| match (r.done[l], &self.versions) {
                (None, _) => true,
                (Some(v), Some(cur)) => cur.layer_versions.get(l) != Some(&v),
                (Some(_), None) => false,
            })
            .collect()
    }

    fn round_usable(&self, r: &ClientRound) -> bool {
        self.stale_layers(r).is_empty()
    }

    /// Abandons the running preprocessing (e.g. the connection dropped; the server does the
    /// same with [`super::InferenceServer::cancel_preprocessing`]). Layers already complete
    /// stay; the rest of the round is redone by [`start_refresh`](Self::start_refresh).
    pub fn cancel_preprocessing(&mut self) {
        self.job = None;
    }

    /// Opens a preprocessing round for `queries` future queries (at most the slot count
    /// `N`): returns the [`PreprocessStart`] message; then send what [`poll`](Self::poll)
    /// yields. The amortized cost per query is the round's cost over `queries`.
    ///
    /// # Errors
    /// [`ProtocolError::UnexpectedInference`] while another preprocessing runs;
    /// [`ProtocolError::InvalidInference`] for a query count outside `1..=N`.
    pub fn start_preprocessing(&mut self, queries: usize) -> Result<InferenceClientMessage> {
        let kind = InferenceKind::PreprocessStart;
        if self.job.is_some() {
            return Err(unexpected(kind, "the end of the running preprocessing"));
        }
        if queries == 0 || queries > self.params.n() {
            return Err(invalid(
                kind,
                format!("{queries} queries do not fit the {} slots", self.params.n()),
            ));
        }
        let id = self.next_round;
        self.next_round += 1;
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let n = self.layers.len();
        self.rounds.push(ClientRound {
            id,
            seed,
            queries: queries as u32,
            next_query: 0,
            shares: vec![Vec::new(); n],
            done: vec![None; n],
        });
        self.begin(id, queries as u32, (0..n).collect())
    }

    /// Recomputes the layers of the newest round that still has fresh masks whose material
    /// is missing or stale (per the versions last reported by the server): same masks `r`,
    /// fresh `s` on the server. Returns `None` if nothing needs a refresh. Cost: the
    /// preprocessing of those layers only (their `[r]` up, `[W r − s]` down).
    ///
    /// # Errors
    /// As [`start_preprocessing`](Self::start_preprocessing).
    pub fn start_refresh(&mut self) -> Result<Option<InferenceClientMessage>> {
        if self.job.is_some() {
            return Err(unexpected(
                InferenceKind::PreprocessStart,
                "the end of the running preprocessing",
            ));
        }
        let target = self
            .rounds
            .iter()
            .rev()
            .filter(|r| r.next_query < r.queries)
            .map(|r| (r.id, r.queries, self.stale_layers(r)))
            .find(|(_, _, stale)| !stale.is_empty());
        match target {
            Some((id, queries, layers)) => Ok(Some(self.begin(id, queries, layers)?)),
            None => Ok(None),
        }
    }

    fn begin(
        &mut self,
        round: u64,
        queries: u32,
        layers: Vec<usize>,
    ) -> Result<InferenceClientMessage> {
        if let Some(r) = self.rounds.iter_mut().find(|r| r.id == round) {
            for &l in &layers {
                r.done[l] = None;
            }
        }
        let msg = PreprocessStart {
            round,
            queries,
            layers: layers.iter().map(|&l| l as u16).collect(),
        };
        self.job = Some(ClientJob {
            round,
            layers: layers.into(),
            next_input: 0,
            received: 0,
        });
        Ok(InferenceClientMessage::PreprocessStart(msg))
    }

    /// The next chunk of encrypted masks `[r]` to send, or `None` if nothing can be sent
    /// now (a layer's inputs go out only after the previous layer's outputs arrived).
    ///
    /// # Errors
    /// [`ProtocolError::He`] from encryption.
    pub fn poll(&mut self) -> Result<Option<InferenceClientMessage>> {
        let Some(job) = self.job.as_mut() else {
            return Ok(None);
        };
        let Some(&layer) = job.layers.front() else {
            return Ok(None);
        };
        let in_dim = self.layers[layer].in_dim;
        if job.next_input >= in_dim {
            return Ok(None);
        }
        let round = self
            .rounds
            .iter()
            .find(|r| r.id == job.round)
            .ok_or(unexpected(InferenceKind::PreprocessOutput, "a known round"))?;
        let (start, end) = (job.next_input, (job.next_input + CHUNK).min(in_dim));
        let n = self.params.n();
        let p = self.params.t();
        let mut slots = vec![0u64; (end - start) * n];
        let mut prf = Prf::new(round.seed);
        let mut buf = vec![0u64; end - start];
        for j in 0..round.queries as usize {
            prf.fill(stream_of(layer, j), start, p, &mut buf);
            for (i, &v) in buf.iter().enumerate() {
                slots[i * n + j] = v;
            }
        }
        buf.zeroize();
        let seeds: Vec<[u8; 32]> = (start..end)
            .map(|_| {
                let mut s = [0u8; 32];
                self.rng.fill_bytes(&mut s);
                s
            })
            .collect();
        let (bfv, sk) = (&self.bfv, &self.sk);
        let cts = slots
            .par_chunks(n)
            .zip(seeds.into_par_iter())
            .map(|(r, seed)| {
                let mut rng = ChaCha20Rng::from_seed(seed);
                Ok(bfv.encrypt_sk(sk, &bfv.encode(r)?, &mut rng)?)
            })
            .collect::<Result<Vec<_>>>()?;
        slots.zeroize();
        job.next_input = end;
        Ok(Some(InferenceClientMessage::PreprocessInput(
            PreprocessInput {
                round: job.round,
                layer: layer as u16,
                first: start as u32,
                cts,
            },
        )))
    }

    /// Starts a private query on `input` (one sample, the model's input size) with the
    /// next fresh mask slot, which is burned from now on. Returns the first online message.
    ///
    /// # Errors
    /// [`ProtocolError::StaleModel`] if the only fresh masks are known to be stale,
    /// [`ProtocolError::MasksExhausted`] if none are left; [`ProtocolError::Nn`] for a
    /// wrong input size; [`ProtocolError::UnsupportedModel`] for an input outside the
    /// fixed-point range.
    pub fn start_query(&mut self, input: &[f32]) -> Result<InferenceClientMessage> {
        let idx =
            match self
                .rounds
                .iter()
                .position(|r| r.next_query < r.queries && self.round_usable(r))
            {
                Some(i) => i,
                None => {
                    return Err(
                        match self.rounds.iter().find(|r| {
                            r.next_query < r.queries && r.done.iter().all(Option::is_some)
                        }) {
                            Some(r) => ProtocolError::StaleModel {
                                round: r.id,
                                layers: self.stale_layers(r),
                                model_version: self.model_version().unwrap_or(0),
                            },
                            None => ProtocolError::MasksExhausted,
                        },
                    );
                }
            };
        let a = apply_nonlinear(&self.before, input.to_vec())?;
        let round = &mut self.rounds[idx];
        let query = round.next_query;
        round.next_query += 1;
        let (id, values) = (round.id, self.masked(idx, 0, query, &a)?);
        self.inflight.insert((id, query), 0);
        Ok(InferenceClientMessage::OnlineInput(OnlineValues {
            round: id,
            query,
            layer: 0,
            values,
        }))
    }

    /// `quantize(a) − r mod p` for layer `layer` of query `query`.
    fn masked(&self, round: usize, layer: usize, query: u32, a: &[f32]) -> Result<Vec<u64>> {
        let l = &self.layers[layer];
        if a.len() != l.in_dim {
            return Err(ProtocolError::UnsupportedModel(format!(
                "layer {layer} takes {} values, got {}",
                l.in_dim,
                a.len()
            )));
        }
        let p = self.params.t();
        let mut r = vec![0u64; l.in_dim];
        Prf::new(self.rounds[round].seed).fill(stream_of(layer, query as usize), 0, p, &mut r);
        let limit = (p / 4) as i64;
        let bits = u32::from(self.fixed.activation_bits);
        let out = a
            .iter()
            .zip(&r)
            .map(|(&x, &m)| {
                let q = quantize(f64::from(x), bits, limit)?;
                let q = if q < 0 {
                    p - q.unsigned_abs()
                } else {
                    q as u64
                };
                Ok(if q >= m { q - m } else { q + (p - m) })
            })
            .collect::<Result<Vec<_>>>();
        r.zeroize();
        out
    }

    /// Handles one server message; returns the messages to send next.
    ///
    /// # Errors
    /// [`ProtocolError::StaleModel`] when the server refuses a query for stale material
    /// (refresh with [`start_refresh`](Self::start_refresh)); unexpected or invalid messages;
    /// [`ProtocolError::He`] from decryption.
    pub fn handle(&mut self, msg: InferenceServerMessage) -> Result<Vec<InferenceClientMessage>> {
        match msg {
            InferenceServerMessage::Ready(v) => {
                self.versions = Some(v);
                Ok(Vec::new())
            }
            InferenceServerMessage::PreprocessOutput(c) => {
                self.output(c)?;
                Ok(Vec::new())
            }
            InferenceServerMessage::OnlineOutput(v) => Ok(self.online(v)?.into_iter().collect()),
            InferenceServerMessage::Stale(s) => {
                self.inflight.remove(&(s.round, s.query));
                self.versions = Some(s.versions);
                let (layers, model_version) = match self.rounds.iter().find(|r| r.id == s.round) {
                    Some(r) => (self.stale_layers(r), self.model_version().unwrap_or(0)),
                    None => (Vec::new(), 0),
                };
                Err(ProtocolError::StaleModel {
                    round: s.round,
                    layers,
                    model_version,
                })
            }
        }
    }

    fn output(&mut self, c: PreprocessOutput) -> Result<()> {
        let kind = InferenceKind::PreprocessOutput;
        let job = self
            .job
            .as_mut()
            .filter(|j| j.round == c.round)
            .ok_or(unexpected(kind, "outputs of the running preprocessing"))?;
        let layer = job.layers.front().copied().unwrap_or(usize::MAX);
        let l = self
            .layers
            .get(layer)
            .filter(|l| usize::from(c.layer) == layer && job.next_input >= l.in_dim)
            .ok_or_else(|| invalid(kind, format!("layer {} is not awaiting outputs", c.layer)))?;
        let out_dim = l.out_dim;
        if c.first as usize != job.received
            || job.received + c.cts.len() > out_dim
            || c.cts.is_empty()
        {
            return Err(invalid(kind, "outputs out of order or beyond the layer"));
        }
        let round = self
            .rounds
            .iter_mut()
            .find(|r| r.id == c.round)
            .ok_or(unexpected(kind, "a known round"))?;
        let queries = round.queries as usize;
        let (bfv, sk) = (&self.bfv, &self.sk);
        let decrypted = c
            .cts
            .par_iter()
            .map(|ct| Ok(bfv.decrypt(sk, ct)?))
            .collect::<Result<Vec<_>>>()?;
        let shares = &mut round.shares[layer];
        if shares.len() != queries * out_dim {
            *shares = vec![0; queries * out_dim];
        }
        for (i, pt) in decrypted.iter().enumerate() {
            let o = c.first as usize + i;
            for (j, &v) in pt.slots()[..queries].iter().enumerate() {
                shares[j * out_dim + o] = v;
            }
        }
        job.received += c.cts.len();
        if job.received == out_dim {
            round.done[layer] = Some(c.layer_version);
            job.layers.pop_front();
            job.next_input = 0;
            job.received = 0;
            if job.layers.is_empty() {
                self.job = None;
            }
        }
        Ok(())
    }

    fn online(&mut self, v: OnlineValues) -> Result<Option<InferenceClientMessage>> {
        let kind = InferenceKind::OnlineOutput;
        let layer = usize::from(v.layer);
        if self.inflight.get(&(v.round, v.query)) != Some(&layer) {
            return Err(unexpected(
                kind,
                "the output of a query in flight, at its layer",
            ));
        }
        let idx = self
            .rounds
            .iter()
            .position(|r| r.id == v.round)
            .ok_or(unexpected(kind, "a known round"))?;
        let l = &self.layers[layer];
        let round = &self.rounds[idx];
        let p = self.params.t();
        let half = p / 2;
        let base = v.query as usize * l.out_dim;
        let share = round
            .shares
            .get(layer)
            .and_then(|s| s.get(base..base + l.out_dim))
            .filter(|_| v.values.len() == l.out_dim)
            .ok_or_else(|| invalid(kind, "value count or missing share"))?;
        let bits = self.fixed.output_bits();
        let z: Vec<f32> = v
            .values
            .iter()
            .zip(share)
            .enumerate()
            .map(|(i, (&y, &c))| {
                let s = (y + c) % p;
                let centered = if s > half {
                    s as i64 - p as i64
                } else {
                    s as i64
                };
                dequantize(centered + l.bias[i / l.positions], bits)
            })
            .collect();
        let a = apply_nonlinear(&l.after, z)?;
        if layer + 1 == self.layers.len() {
            self.inflight.remove(&(v.round, v.query));
            let round = &self.rounds[idx];
            let busy = self.inflight.keys().any(|&(r, _)| r == v.round)
                || self.job.as_ref().is_some_and(|j| j.round == v.round);
            if round.next_query == round.queries && !busy {
                // Every slot is burned: the shares are dead weight.
                self.rounds.remove(idx);
            }
            self.results.push_back(QueryResult {
                round: v.round,
                query: v.query,
                logits: a,
            });
            return Ok(None);
        }
        let values = self.masked(idx, layer + 1, v.query, &a)?;
        self.inflight.insert((v.round, v.query), layer + 1);
        Ok(Some(InferenceClientMessage::OnlineInput(OnlineValues {
            round: v.round,
            query: v.query,
            layer: (layer + 1) as u16,
            values,
        })))
    }

    /// The next finished query, oldest first.
    pub fn take_result(&mut self) -> Option<QueryResult> {
        self.results.pop_front()
    }
}
