//! The server (cloud) role of private inference: quantized plaintext weights, the client's
//! public key, and per preprocessing round the secret seed of its masks `s`. Only public
//! HE types appear here.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rand::{CryptoRng, RngCore};
use rayon::prelude::*;
use sphinx_he::bfv::{Bfv, BfvParameters};
use sphinx_he::{Ciphertext, Evaluator};
use sphinx_nn::layers::Layer;
use sphinx_nn::model::Model;

use crate::codec::Cursor;
use crate::error::{ProtocolError, Result};
use crate::inference::messages::{
    InferenceClientMessage, InferenceKind, InferenceServerMessage, InferenceSetup, OnlineValues,
    PreprocessInput, PreprocessOutput, PreprocessStart, Ready, Stale,
};
use crate::inference::{CHUNK, FixedPoint, Prf, quantize, stream_of};
use crate::plan::LayerPlan;

const PAD: u32 = u32::MAX;

/// One parameterized layer as the server evaluates it.
#[derive(Clone)]
struct ServerLayer {
    in_dim: usize,
    units: usize,
    patch: usize,
    positions: usize,
    /// `gather[pos · patch + p]`: the input index `W[·, p]` meets at `pos`, or [`PAD`].
    gather: Vec<u32>,
    /// `W[o, p]` at `2^weight_bits`, row-major.
    weights: Vec<i64>,
    /// Largest `Σ_p |W[o, p]|` over rows.
    max_row_l1: u64,
    version: u64,
    hash: u64,
}

impl ServerLayer {
    fn out_dim(&self) -> usize {
        self.units * self.positions
    }

    fn build(layer: &Layer, fixed: FixedPoint, params: &BfvParameters) -> Result<Self> {
        let plan = LayerPlan::of(layer)?;
        let Some(p) = layer.as_param() else {
            return Err(ProtocolError::UnsupportedModel(
                "not a parameterized layer".into(),
            ));
        };
        let (patch, positions) = (plan.patch(), plan.positions());
        let mut gather = vec![PAD; patch * positions];
        for pos in 0..positions {
            for q in 0..patch {
                if let Some(i) = plan.input_at(q, pos) {
                    gather[pos * patch + q] = i as u32;
                }
            }
        }
        let weights = p
            .weight()
            .iter()
            .map(|&w| quantize(f64::from(w), u32::from(fixed.weight_bits), 1 << 30))
            .collect::<Result<Vec<_>>>()?;
        let max_row_l1 = weights
            .chunks_exact(patch.max(1))
            .map(|row| row.iter().map(|w| w.unsigned_abs()).sum::<u64>())
            .max()
            .unwrap_or(0);
        // The noise of Σ w·[r] − s is at most L1·B + t·(L1/2 + 1) + t (the carries of
        // Σ w·r past t cost (Q mod t) < t each); flooding hides noise up to the bound the
        // parameters were sized for, so larger weights are refused, not leaked.
        let bounds = params.noise_bounds();
        let t = params.t() as f64;
        let l1 = max_row_l1 as f64;
        let noise = l1 * bounds.fresh.exp2() + t * (l1 / 2.0 + 1.0) + t;
        if noise.log2() > bounds.before_flooding {
            return Err(ProtocolError::UnsupportedModel(format!(
                "weights too large for the flooding bound (row L1 norm {max_row_l1})"
            )));
        }
        let hash = weights.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &w| {
            (h ^ w as u64).wrapping_mul(0x0000_0100_0000_01b3)
        });
        Ok(Self {
            in_dim: plan.in_dim(),
            units: plan.units(),
            patch,
            positions,
            gather,
            weights,
            max_row_l1,
            version: 1,
            hash,
        })
    }

    /// `W·v + s mod p` for one query: exact integer dot products (i64 while the bound
    /// allows, else i128), one reduction per output.
    fn online(&self, v: &[u64], s: &[u64], p: u64) -> Vec<u64> {
        let fast = u128::from(self.max_row_l1) * u128::from(p) < (1u128 << 62);
        let mut out = vec![0u64; self.out_dim()];
        let mut col = vec![0u64; self.patch];
        let pi = i128::from(p);
        for pos in 0..self.positions {
            for (c, &g) in col
                .iter_mut()
                .zip(&self.gather[pos * self.patch..(pos + 1) * self.patch])
            {
                *c = if g == PAD { 0 } else { v[g as usize] };
            }
            for o in 0..self.units {
                let row = &self.weights[o * self.patch..(o + 1) * self.patch];
                let acc: i128 = if fast {
                    i128::from(
                        row.iter()
                            .zip(&col)
                            .map(|(&w, &x)| w * x as i64)
                            .sum::<i64>(),
                    )
                } else {
                    row.iter()
                        .zip(&col)
                        .map(|(&w, &x)| i128::from(w) * i128::from(x))
                        .sum()
                };
                let idx = o * self.positions + pos;
                out[idx] = (acc + i128::from(s[idx])).rem_euclid(pi) as u64;
            }
        }
        out
    }
}

/// Weights below this magnitude take [`small_combination`]'s fast path.
const SMALL_WEIGHT: u64 = 1 << 20;

/// `Σ k_i · cts[i]` for integer weights, like [`Evaluator::linear_combination_integer`],
/// but for small weights (`|k| < 2^20`, at most 4096 terms) without a modular product per
/// term: each 60-bit residue is split into 30-bit halves and `|k|·half` (a 32 × 32-bit
/// product, which vectorizes) is accumulated exactly in `u64` per sign, then reduced once.
fn small_combination(eval: &Evaluator, cts: &[&Ciphertext], ks: &[i64]) -> Result<Ciphertext> {
    let fits = cts.len() <= 4096 && ks.iter().all(|k| k.unsigned_abs() < SMALL_WEIGHT);
    let Some(first) = cts.first().filter(|_| fits && cts.len() == ks.len()) else {
        return Ok(eval.linear_combination_integer(cts, ks)?);
    };
    let params = eval.params();
    let level = first.level();
    let basis = params.q_basis(level)?;
    let n = params.n();
    for ct in cts {
        params.check_id(ct.param_id())?;
        if ct.level() != level
            || ct.size() != 2
            || ct
                .polys()
                .iter()
                .any(|p| p.num_limbs() != basis.moduli().len())
        {
            return Ok(eval.linear_combination_integer(cts, ks)?);
        }
    }
    const MASK: u32 = (1 << 30) - 1;
    let mut polys = vec![
        sphinx_math::Poly::zero(basis),
        sphinx_math::Poly::zero(basis),
    ];
    let mut acc = vec![0u64; 4 * n];
    for (i, m) in basis.moduli().iter().enumerate() {
        let two30 = m.reduce(1 << 30);
        for (part, out) in polys.iter_mut().enumerate() {
            acc.fill(0);
            let (pos, neg) = acc.split_at_mut(2 * n);
            for (ct, &k) in cts.iter().zip(ks) {
                if k == 0 {
                    continue;
                }
                let (lo, hi) = if k > 0 {
                    pos.split_at_mut(n)
                } else {
                    neg.split_at_mut(n)
                };
                let w = u64::from(k.unsigned_abs() as u32);
                for ((l, h), &c) in lo
                    .iter_mut()
                    .zip(hi.iter_mut())
                    .zip(ct.polys()[part].limb(i))
                {
                    *l += w * u64::from(c as u32 & MASK);
                    *h += w * u64::from((c >> 30) as u32);
                }
            }
            let (lo_p, hi_p) = pos.split_at(n);
            let (lo_n, hi_n) = neg.split_at(n);
            for (k, x) in out.limb_mut(i).iter_mut().enumerate() {
                let hi = m.sub(m.reduce(hi_p[k]), m.reduce(hi_n[k]));
                let lo = m.sub(m.reduce(lo_p[k]), m.reduce(lo_n[k]));
                *x = m.add(m.mul(hi, two30), lo);
            }
        }
    }
    Ok(Ciphertext::from_parts(params, polys, level, first.scale())?)
}

/// Coefficients per cache block of [`chunk_combinations`].
const BLOCK: usize = 512;

/// `Σ_(q, k) k · inputs[q]` for every output's term list. The outputs of a chunk share
/// most inputs (neighbouring convolution windows, or all inputs of a fully connected
/// layer), so the work runs per (part, limb, block of coefficients): an input block read
/// for one output is still in cache for the next. Falls back to one
/// [`small_combination`] per output outside its bounds.
fn chunk_combinations(
    eval: &Evaluator,
    inputs: &[&Ciphertext],
    terms: &[Vec<(u32, i64)>],
) -> Result<Vec<Ciphertext>> {
    let params = eval.params();
    let Some(first) = inputs.first() else {
        return Err(ProtocolError::UnsupportedModel(
            "a layer without inputs".into(),
        ));
    };
    let level = first.level();
    let basis = params.q_basis(level)?;
    let (n, limbs) = (params.n(), basis.moduli().len());
    let fits = terms.iter().all(|t| {
        t.len() <= 4096
            && t.iter()
                .all(|&(q, k)| (q as usize) < inputs.len() && k.unsigned_abs() < SMALL_WEIGHT)
    }) && inputs.iter().all(|ct| {
        ct.param_id() == first.param_id()
            && ct.level() == level
            && ct.size() == 2
            && ct.polys().iter().all(|p| p.num_limbs() == limbs)
    });
    if !fits {
        return terms
            .iter()
            .map(|t| {
                let (refs, ks): (Vec<&Ciphertext>, Vec<i64>) = if t.is_empty() {
                    (vec![*first], vec![0])
                } else {
                    t.iter()
                        .filter_map(|&(q, k)| inputs.get(q as usize).map(|c| (*c, k)))
                        .unzip()
                };
                small_combination(eval, &refs, &ks)
            })
            .collect();
    }
    let block = BLOCK.min(n);
    let tasks: Vec<(usize, usize, usize)> = (0..2)
        .flat_map(|part| {
            (0..limbs).flat_map(move |limb| (0..n / block).map(move |b| (part, limb, b)))
        })
        .collect();
    const MASK: u32 = (1 << 30) - 1;
    let blocks: Vec<Vec<u64>> = tasks
        .par_iter()
        .map(|&(part, limb, b)| {
            let m = &basis.moduli()[limb];
            let two30 = m.reduce(1 << 30);
            let range = b * block..(b + 1) * block;
            let mut out = vec![0u64; terms.len() * block];
            let mut acc = vec![0u64; 4 * block];
            for (t, dst) in terms.iter().zip(out.chunks_exact_mut(block)) {
                acc.fill(0);
                let (pos, neg) = acc.split_at_mut(2 * block);
                for &(q, k) in t {
                    if k == 0 {
                        continue;
                    }
                    let (lo, hi) = if k > 0 {
                        pos.split_at_mut(block)
                    } else {
                        neg.split_at_mut(block)
                    };
                    let w = u64::from(k.unsigned_abs() as u32);
                    let src = &inputs[q as usize].polys()[part].limb(limb)[range.clone()];
                    for ((l, h), &c) in lo.iter_mut().zip(hi.iter_mut()).zip(src) {
                        *l += w * u64::from(c as u32 & MASK);
                        *h += w * u64::from((c >> 30) as u32);
                    }
                }
                let (lo_p, hi_p) = pos.split_at(block);
                let (lo_n, hi_n) = neg.split_at(block);
                for (k, x) in dst.iter_mut().enumerate() {
                    let hi = m.sub(m.reduce(hi_p[k]), m.reduce(hi_n[k]));
                    let lo = m.sub(m.reduce(lo_p[k]), m.reduce(lo_n[k]));
                    *x = m.add(m.mul(hi, two30), lo);
                }
            }
            out
        })
        .collect();
    let mut polys: Vec<[sphinx_math::Poly<sphinx_math::Ntt>; 2]> = terms
        .iter()
        .map(|_| {
            [
                sphinx_math::Poly::zero(basis),
                sphinx_math::Poly::zero(basis),
            ]
        })
        .collect();
    for (&(part, limb, b), data) in tasks.iter().zip(&blocks) {
        for (p, src) in polys.iter_mut().zip(data.chunks_exact(block)) {
            p[part].limb_mut(limb)[b * block..(b + 1) * block].copy_from_slice(src);
        }
    }
    polys
        .into_iter()
        .map(|p| {
            Ok(Ciphertext::from_parts(
                params,
                p.into(),
                level,
                first.scale(),
            )?)
        })
        .collect()
}

/// Server-side state of one preprocessing round.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Round {
    /// Secret: the masks `s` of every layer derive from it.
    seed: [u8; 32],
    queries: u32,
    /// Per layer, the layer version its shares were computed with (`None`: not yet).
    done: Vec<Option<u64>>,
    /// Per query, the layers consumed so far (masks are used once, in order).
    progress: Vec<u16>,
}

/// The layer whose outputs are being computed.
struct OutputJob {
    layer: usize,
    weights: ServerLayer,
    key: [u8; 32],
    next: usize,
}

struct Job {
    round: u64,
    layers: VecDeque<usize>,
    inputs: Vec<Option<Ciphertext>>,
    received: usize,
    outputs: Option<OutputJob>,
}

/// The cloud side of Sphinx private inference.
///
/// Drive it with [`handle`](Self::handle) for every client message, then drain
/// [`poll`](Self::poll) (preprocessing outputs are computed on demand, a chunk at a time).
pub struct InferenceServer {
    params: Arc<BfvParameters>,
    bfv: Bfv,
    eval: Evaluator,
    setup: InferenceSetup,
    layers: Vec<ServerLayer>,
    model_version: u64,
    rounds: BTreeMap<u64, Round>,
    job: Option<Job>,
    rng: rand_chacha::ChaCha20Rng,
}

impl std::fmt::Debug for InferenceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceServer")
            .field("params", &self.params.id())
            .field("layers", &self.layers.len())
            .field("model_version", &self.model_version)
            .field("rounds", &self.rounds.len())
            .finish_non_exhaustive()
    }
}

fn invalid(kind: InferenceKind, reason: impl Into<String>) -> ProtocolError {
    ProtocolError::InvalidInference {
        kind,
        reason: reason.into(),
    }
}

fn unexpected(got: InferenceKind, expected: &'static str) -> ProtocolError {
    ProtocolError::UnexpectedInference { got, expected }
}

/// Rounds a server keeps at once (a round whose every query went through every layer is
/// dropped); bounds the state a client can make the server hold.
pub const MAX_ROUNDS: usize = 64;

/// Magic of a server snapshot.
const SNAPSHOT_MAGIC: [u8; 4] = *b"SPXS";
const SNAPSHOT_VERSION: u16 = 1;

impl InferenceServer {
    /// Accepts a client's [`InferenceSetup`] for `model` (only its weights are used: the
    /// biases stay with the client). Every layer starts at model version 1.
    ///
    /// # Errors
    /// [`ProtocolError::He`] for invalid parameters or a foreign key;
    /// [`ProtocolError::UnsupportedModel`] for a model without parameterized layers or
    /// weights that do not fit the fixed point or the flooding bound.
    pub fn new<R: RngCore + CryptoRng>(
        model: &Model,
        setup: InferenceSetup,
        mut rng: R,
    ) -> Result<Self> {
        let params = setup.params.build()?;
        params.rlwe().check_id(setup.public_key.param_id())?;
        setup.fixed.check(params.t())?;
        let layers = model
            .layers()
            .iter()
            .filter(|l| l.as_param().is_some())
            .map(|l| ServerLayer::build(l, setup.fixed, &params))
            .collect::<Result<Vec<_>>>()?;
        if layers.is_empty() {
            return Err(ProtocolError::UnsupportedModel(
                "no parameterized layer".into(),
            ));
        }
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Ok(Self {
            bfv: Bfv::new(&params),
            eval: Evaluator::new(params.rlwe()),
            params,
            setup,
            layers,
            model_version: 1,
            rounds: BTreeMap::new(),
            job: None,
            rng: rand::SeedableRng::from_seed(seed),
        })
    }

    /// The session's BFV parameters.
    #[must_use]
    pub fn params(&self) -> &Arc<BfvParameters> {
        &self.params
    }

    /// The current model version (bumped whenever any layer's quantized weights change).
    #[must_use]
    pub fn model_version(&self) -> u64 {
        self.model_version
    }

    /// Per parameterized layer, the model version in which its weights last changed.
    #[must_use]
    pub fn layer_versions(&self) -> Vec<u64> {
        self.layers.iter().map(|l| l.version).collect()
    }

    /// Rounds the server holds material for.
    #[must_use]
    pub fn rounds(&self) -> usize {
        self.rounds.len()
    }

    fn ready(&self) -> Ready {
        Ready {
            model_version: self.model_version,
            layer_versions: self.layer_versions(),
        }
    }

    /// Installs new weights (after training steps): layers whose quantized weights changed
    /// get the next model version, so preprocessed material for them becomes stale.
    /// Returns the changed layers. A preprocessing layer already being computed keeps the
    /// weights it started with (and records their version).
    ///
    /// # Errors
    /// [`ProtocolError::UnsupportedModel`] for another architecture or unfit weights.
    pub fn update_model(&mut self, model: &Model) -> Result<Vec<usize>> {
        let fresh = model
            .layers()
            .iter()
            .filter(|l| l.as_param().is_some())
            .map(|l| ServerLayer::build(l, self.setup.fixed, &self.params))
            .collect::<Result<Vec<_>>>()?;
        if fresh.len() != self.layers.len()
            || fresh
                .iter()
                .zip(&self.layers)
                .any(|(a, b)| a.gather != b.gather || a.units != b.units)
        {
            return Err(ProtocolError::UnsupportedModel(
                "the new model has another architecture".into(),
            ));
        }
        let changed: Vec<usize> = (0..fresh.len())
            .filter(|&i| {
                fresh[i].hash != self.layers[i].hash || fresh[i].weights != self.layers[i].weights
            })
            .collect();
        if !changed.is_empty() {
            self.model_version += 1;
            for &i in &changed {
                let mut l = fresh[i].clone();
                l.version = self.model_version;
                self.layers[i] = l;
            }
        }
        Ok(changed)
    }

    /// Abandons the running preprocessing (its inputs are dropped; layers already sent stay
    /// valid, the rest of the round reads as missing until the client refreshes it).
    pub fn cancel_preprocessing(&mut self) {
        self.job = None;
    }

    /// Handles one client message and returns the immediate replies; afterwards drain
    /// [`poll`](Self::poll). A rejected message leaves the state unchanged.
    ///
    /// # Errors
    /// [`ProtocolError::UnexpectedInference`] / [`ProtocolError::InvalidInference`] for a
    /// message that does not fit the state; [`ProtocolError::MaskReused`] for an online
    /// input whose mask was already consumed; [`ProtocolError::He`] from the engine.
    pub fn handle(&mut self, msg: InferenceClientMessage) -> Result<Vec<InferenceServerMessage>> {
        match msg {
            InferenceClientMessage::StatusRequest => {
                Ok(vec![InferenceServerMessage::Ready(self.ready())])
            }
            InferenceClientMessage::PreprocessStart(s) => {
                self.start(s)?;
                Ok(Vec::new())
            }
            InferenceClientMessage::PreprocessInput(c) => {
                self.input(c)?;
                Ok(Vec::new())
            }
            InferenceClientMessage::OnlineInput(v) => Ok(vec![self.online(v)?]),
            other => Err(unexpected(other.kind(), "a message after setup")),
        }
    }

    fn start(&mut self, s: PreprocessStart) -> Result<()> {
        let kind = InferenceKind::PreprocessStart;
        if self.job.is_some() {
            return Err(unexpected(kind, "the inputs of the running preprocessing"));
        }
        let n_layers = self.layers.len();
        if s.layers.is_empty()
            || s.layers.windows(2).any(|w| w[0] >= w[1])
            || s.layers.iter().any(|&l| usize::from(l) >= n_layers)
        {
            return Err(invalid(
                kind,
                "layers must be increasing, valid and non-empty",
            ));
        }
        if s.queries == 0 || s.queries as usize > self.params.n() {
            return Err(invalid(
                kind,
                format!("{} queries do not fit the slots", s.queries),
            ));
        }
        match self.rounds.get(&s.round) {
            Some(r) if r.queries != s.queries => {
                return Err(invalid(kind, "a refresh must keep the round's query count"));
            }
            Some(_) => {}
            None if self.rounds.len() >= MAX_ROUNDS => {
                return Err(invalid(
                    kind,
                    format!("{MAX_ROUNDS} rounds are open already"),
                ));
            }
            None => {
                let mut seed = [0u8; 32];
                self.rng.fill_bytes(&mut seed);
                self.rounds.insert(
                    s.round,
                    Round {
                        seed,
                        queries: s.queries,
                        done: vec![None; n_layers],
                        progress: vec![0; s.queries as usize],
                    },
                );
            }
        }
        let layers: VecDeque<usize> = s.layers.iter().map(|&l| usize::from(l)).collect();
        let first = layers.front().copied().unwrap_or(0);
        if let Some(r) = self.rounds.get_mut(&s.round) {
            for &l in &layers {
                r.done[l] = None;
            }
        }
        self.job = Some(Job {
            round: s.round,
            inputs: vec![None; self.layers[first].in_dim],
            received: 0,
            layers,
            outputs: None,
        });
        Ok(())
    }

    fn input(&mut self, c: PreprocessInput) -> Result<()> {
        let kind = InferenceKind::PreprocessInput;
        let top = self.params.rlwe().max_level();
        let job = self
            .job
            .as_mut()
            .filter(|j| j.outputs.is_none() && j.round == c.round)
            .ok_or(unexpected(
                kind,
                "inputs of the round being preprocessed, outputs drained",
            ))?;
        let layer = job.layers.front().copied().unwrap_or(usize::MAX);
        if usize::from(c.layer) != layer {
            return Err(invalid(
                kind,
                format!("layer {} while layer {layer} is open", c.layer),
            ));
        }
        let first = c.first as usize;
        let end = first.saturating_add(c.cts.len());
        if c.cts.is_empty()
            || end > job.inputs.len()
            || job.inputs[first..end].iter().any(Option::is_some)
        {
            return Err(invalid(kind, "input indices out of range or repeated"));
        }
        for ct in &c.cts {
            self.params.rlwe().check_id(ct.param_id())?;
            if ct.size() != 2 || ct.level() != top || ct.scale() != 1.0 {
                return Err(invalid(kind, "ciphertexts must be fresh BFV encryptions"));
            }
        }
        for (slot, ct) in job.inputs[first..end].iter_mut().zip(c.cts) {
            *slot = Some(ct);
        }
        job.received += end - first;
        if job.received == job.inputs.len() {
            let weights = self.layers[layer].clone();
            let round = self
                .rounds
                .get(&job.round)
                .ok_or(unexpected(kind, "a known round"))?;
            let key = Prf::new(round.seed).derive(layer as u64, weights.version);
            job.outputs = Some(OutputJob {
                layer,
                weights,
                key,
                next: 0,
            });
        }
        Ok(())
    }

    /// The next chunk of flooded preprocessing outputs, computed now, or `None` when none
    /// is pending.
    ///
    /// # Errors
    /// [`ProtocolError::He`] from the engine.
    pub fn poll(&mut self) -> Result<Option<InferenceServerMessage>> {
        let Some(job) = self.job.as_mut() else {
            return Ok(None);
        };
        let Some(out) = job.outputs.as_mut() else {
            return Ok(None);
        };
        let round = self
            .rounds
            .get_mut(&job.round)
            .ok_or(unexpected(InferenceKind::PreprocessInput, "a known round"))?;
        let w = &out.weights;
        let total = w.out_dim();
        let (start, end) = (out.next, (out.next + CHUNK).min(total));
        let queries = round.queries as usize;
        let n = self.params.n();
        let p = self.params.t();
        // s for outputs start..end: query j's masks are PRF stream j, so read each
        // stream's window and transpose into one slot vector per output.
        let mut s = vec![0u64; (end - start) * n];
        let mut prf = Prf::new(out.key);
        let mut buf = vec![0u64; end - start];
        for j in 0..queries {
            prf.fill(stream_of(0, j), start, p, &mut buf);
            for (i, &v) in buf.iter().enumerate() {
                s[i * n + j] = v;
            }
        }
        let seeds: Vec<[u8; 32]> = (start..end)
            .map(|_| {
                let mut seed = [0u8; 32];
                self.rng.fill_bytes(&mut seed);
                seed
            })
            .collect();
        let inputs: Vec<&Ciphertext> = job.inputs.iter().flatten().collect();
        let (bfv, eval, pk) = (&self.bfv, &self.eval, &self.setup.public_key);
        let terms: Vec<Vec<(u32, i64)>> = (start..end)
            .map(|idx| {
                let (o, pos) = (idx / w.positions, idx % w.positions);
                (0..w.patch)
                    .filter_map(|q| {
                        let g = w.gather[pos * w.patch + q];
                        (g != PAD).then(|| (g, w.weights[o * w.patch + q]))
                    })
                    .collect()
            })
            .collect();
        let products = chunk_combinations(eval, &inputs, &terms)?;
        let cts = products
            .into_par_iter()
            .zip(s.par_chunks(n))
            .zip(seeds.into_par_iter())
            .map(|((wr, s), seed)| {
                let masked = bfv.sub_plain(&wr, &bfv.encode(s)?)?;
                let mut rng: rand_chacha::ChaCha20Rng = rand::SeedableRng::from_seed(seed);
                Ok(bfv.flood(pk, &masked, &mut rng)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let msg = InferenceServerMessage::PreprocessOutput(PreprocessOutput {
            round: job.round,
            layer: out.layer as u16,
            layer_version: w.version,
            first: start as u32,
            cts,
        });
        out.next = end;
        if end >= total {
            round.done[out.layer] = Some(w.version);
            job.layers.pop_front();
            let next = job.layers.front().copied();
            match next {
                Some(next) => {
                    job.inputs = vec![None; self.layers[next].in_dim];
                    job.received = 0;
                    job.outputs = None;
                }
                None => self.job = None,
            }
        }
        Ok(Some(msg))
    }

    fn online(&mut self, v: OnlineValues) -> Result<InferenceServerMessage> {
        let kind = InferenceKind::OnlineInput;
        let p = self.params.t();
        let layer = usize::from(v.layer);
        let ready = self.ready();
        let round = self
            .rounds
            .get_mut(&v.round)
            .ok_or_else(|| invalid(kind, format!("unknown round {}", v.round)))?;
        let l = self
            .layers
            .get(layer)
            .ok_or_else(|| invalid(kind, format!("no layer {layer}")))?;
        let q = v.query as usize;
        if q >= round.queries as usize {
            return Err(invalid(kind, format!("query {q} beyond the round")));
        }
        if usize::from(round.progress[q]) != layer {
            return Err(ProtocolError::MaskReused {
                round: v.round,
                query: v.query,
                layer,
            });
        }
        if v.values.len() != l.in_dim || v.values.iter().any(|&x| x >= p) {
            return Err(invalid(
                kind,
                format!("expected {} values below p", l.in_dim),
            ));
        }
        // A query starts only when every layer's material matches the current weights.
        let stale = if layer == 0 {
            round
                .done
                .iter()
                .zip(&self.layers)
                .any(|(d, l)| *d != Some(l.version))
        } else {
            round.done[layer] != Some(l.version)
        };
        if stale {
            return Ok(InferenceServerMessage::Stale(Stale {
                round: v.round,
                query: v.query,
                versions: ready,
            }));
        }
        let key = Prf::new(round.seed).derive(layer as u64, l.version);
        let mut s = vec![0u64; l.out_dim()];
        Prf::new(key).fill(stream_of(0, q), 0, p, &mut s);
        let values = l.online(&v.values, &s, p);
        round.progress[q] += 1;
        let n_layers = self.layers.len();
        if round.progress.iter().all(|&g| usize::from(g) == n_layers)
            && self.job.as_ref().is_none_or(|j| j.round != v.round)
        {
            self.rounds.remove(&v.round);
        }
        Ok(InferenceServerMessage::OnlineOutput(OnlineValues {
            values,
            ..v
        }))
    }

    /// The persistent state as bytes: the setup (public key, parameters, fixed point),
    /// model and layer versions with a hash of each layer's quantized weights, and every
    /// round's mask seed, query count, per-layer versions and per-query progress. A
    /// preprocessing layer in progress is not saved (the client refreshes it).
    ///
    /// The bytes hold the seeds of the server's masks: store them as the server's secrets.
    ///
    /// # Errors
    /// [`ProtocolError::He`] if the key fails to serialize.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        let setup =
            InferenceClientMessage::Setup(Box::new(self.setup.clone())).encode(&self.params)?;
        out.extend_from_slice(&(setup.len() as u64).to_le_bytes());
        out.extend_from_slice(&setup);
        out.extend_from_slice(&self.model_version.to_le_bytes());
        out.extend_from_slice(&(self.layers.len() as u32).to_le_bytes());
        for l in &self.layers {
            out.extend_from_slice(&l.version.to_le_bytes());
            out.extend_from_slice(&l.hash.to_le_bytes());
        }
        out.extend_from_slice(&(self.rounds.len() as u32).to_le_bytes());
        for (id, r) in &self.rounds {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&r.seed);
            out.extend_from_slice(&r.queries.to_le_bytes());
            for d in &r.done {
                out.extend_from_slice(&d.unwrap_or(u64::MAX).to_le_bytes());
            }
            for g in &r.progress {
                out.extend_from_slice(&g.to_le_bytes());
            }
        }
        Ok(out)
    }

    /// Rebuilds a server from [`snapshot`](Self::snapshot) bytes (at most `limit`) and the
    /// current `model`. Layers whose quantized weights differ from the snapshot's get a new
    /// model version, so their stored material reads as stale.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for bytes that are not a valid snapshot (oversized,
    /// truncated, trailing data, inconsistent counts); errors of [`new`](Self::new).
    pub fn restore<R: RngCore + CryptoRng>(
        bytes: &[u8],
        limit: usize,
        model: &Model,
        rng: R,
    ) -> Result<Self> {
        let bad = |r: &str| ProtocolError::Malformed(format!("server snapshot: {r}"));
        if bytes.len() > limit {
            return Err(bad("over the size limit"));
        }
        let mut c = Cursor { bytes };
        if c.array::<4>()? != SNAPSHOT_MAGIC || c.u16()? != SNAPSHOT_VERSION {
            return Err(bad("magic or version"));
        }
        let setup_len = usize::try_from(c.u64()?).map_err(|_| bad("setup length"))?;
        let setup = crate::inference::messages::decode_inference_setup(c.take(setup_len)?, limit)?;
        let mut server = Self::new(model, setup, rng)?;
        let model_version = c.u64()?;
        let n_layers = c.count(16)?;
        if n_layers != server.layers.len() {
            return Err(bad("layer count differs from the model"));
        }
        let mut changed = Vec::new();
        for (i, l) in server.layers.iter_mut().enumerate() {
            l.version = c.u64()?;
            if c.u64()? != l.hash {
                changed.push(i);
            }
            if l.version > model_version {
                return Err(bad("layer version above the model version"));
            }
        }
        server.model_version = model_version;
        if !changed.is_empty() {
            server.model_version += 1;
            for i in changed {
                server.layers[i].version = server.model_version;
            }
        }
        let n_rounds = c.count(44)?;
        if n_rounds > MAX_ROUNDS {
            return Err(bad("too many rounds"));
        }
        for _ in 0..n_rounds {
            let id = c.u64()?;
            let seed = c.array::<32>()?;
            let queries = c.u32()?;
            if queries == 0 || queries as usize > server.params.n() {
                return Err(bad("round query count"));
            }
            let done = (0..n_layers)
                .map(|_| c.u64().map(|v| (v != u64::MAX).then_some(v)))
                .collect::<Result<Vec<_>>>()?;
            let progress = (0..queries).map(|_| c.u16()).collect::<Result<Vec<_>>>()?;
            if progress.iter().any(|&g| usize::from(g) > n_layers) {
                return Err(bad("query progress beyond the layers"));
            }
            if server
                .rounds
                .insert(
                    id,
                    Round {
                        seed,
                        queries,
                        done,
                        progress,
                    },
                )
                .is_some()
            {
                return Err(bad("repeated round"));
            }
        }
        c.finish()?;
        Ok(server)
    }
}

// Unit tests hold a decryption key to build inputs: they live in `server/tests.rs`.
#[cfg(test)]
mod tests;
