//! The two inference baselines of Table V.
//!
//! - **Sphinx-FP** ([`sphinx_fp`]): inference by the CKKS forward pass of training
//!   (the training parameters, `N = 4096`, batch-axis packing): per parameterized layer the
//!   client uploads `[a]`, the server returns `[W a + b]` (plaintext-weight linear
//!   combination, one rescale, the encrypted bias added), the client decrypts and applies
//!   the nonlinearities. Its "preprocessing" is the client's precomputation of public-key
//!   encryptions of zero (and of `[b]`), so an online encryption is an encode and an add.
//!   Run end to end, for real.
//! - **Pure-HE** ([`pure_he_inference`]): `W` encrypted too, so every multiply-accumulate
//!   is a ciphertext × ciphertext product and every output one relinearization and
//!   rescale; the client still does the nonlinearities (one round trip per layer). It is
//!   **measured per operation and extrapolated** from exact operation counts (like the
//!   training baseline, [`crate::pure_he`]) on `N = 16384`, where the full network would
//!   take hours on two cores.
//!
//! Both pack queries along the slot axis like Sphinx, and the reported per-query figures
//! divide a batch's cost by the number of queries actually in it.

use std::time::Instant;

use ndarray::{Array2, ArrayView2, Axis};
use rand::{CryptoRng, RngCore};
use rayon::prelude::*;
use sphinx_he::serialization::Serializable;
use sphinx_he::{
    Ciphertext, Encoder, Evaluator, Parameters, ParametersLiteral, PublicKey, RelinearizationKey,
    SecretKey,
};
use sphinx_nn::layers::Layer;
use sphinx_nn::model::{Model, ModelSpec};

use crate::error::{ProtocolError, Result};
use crate::plan::LayerPlan;

/// Costs of one baseline run over a set of queries (totals, not per query).
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineRun {
    /// Queries answered.
    pub queries: usize,
    /// Queries per batch (the slot count).
    pub slots: usize,
    /// Wall time before the inputs are known.
    pub preprocessing_s: f64,
    /// Bytes exchanged before the inputs are known.
    pub preprocessing_bytes: u64,
    /// Wall time of the online phase, both roles, all queries.
    pub online_s: f64,
    /// Online bytes, both directions, all queries.
    pub online_bytes: u64,
    /// The outputs, one row per query.
    pub logits: Array2<f32>,
}

/// Outputs per parallel chunk of server work (bounds memory).
const FP_CHUNK: usize = 256;

/// Runs Sphinx-FP on every row of `inputs` (batches of up to the slot count) with the
/// training parameters; `progress` is called with the number of queries done.
///
/// # Errors
/// [`ProtocolError::He`] from the engine, [`ProtocolError::Nn`] for inputs that do not fit
/// the model, [`ProtocolError::UnsupportedModel`] for a model without parameterized layers.
pub fn sphinx_fp<R: RngCore + CryptoRng>(
    model: &Model,
    inputs: ArrayView2<'_, f32>,
    rng: &mut R,
    progress: &dyn Fn(usize),
) -> Result<BaselineRun> {
    let params = crate::params::build_training_parameters()?;
    let sk = SecretKey::generate(&params, rng)?;
    let pk = PublicKey::new(&sk, rng)?;
    let encoder = Encoder::new(&params);
    let eval = Evaluator::new(&params);
    let slots = params.slots();
    let top = params.max_level();
    let mut run = BaselineRun {
        queries: inputs.nrows(),
        slots,
        preprocessing_s: 0.0,
        preprocessing_bytes: 0,
        online_s: 0.0,
        online_bytes: 0,
        logits: Array2::zeros((0, model.num_classes())),
    };
    let layers = model.layers();
    let param_layers: Vec<usize> = model.param_layer_indices();
    if param_layers.is_empty() {
        return Err(ProtocolError::UnsupportedModel(
            "no parameterized layer".into(),
        ));
    }
    let plans = param_layers
        .iter()
        .map(|&i| LayerPlan::of(&layers[i]))
        .collect::<Result<Vec<_>>>()?;

    // Client precomputation: [b] (it holds b in the clear after training; the server
    // keeps the ciphertexts) and, per batch, one encryption of zero per uploaded scalar.
    let t = Instant::now();
    let biases = param_layers
        .iter()
        .map(|&i| {
            let p = layers[i].as_param().ok_or_else(|| {
                ProtocolError::UnsupportedModel("not a parameterized layer".into())
            })?;
            p.bias()
                .iter()
                .map(|&b| {
                    let pt = encoder.encode(&vec![f64::from(b); slots], params.scale(), 0)?;
                    Ok(pk.encrypt(&pt, rng)?)
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    run.preprocessing_s += t.elapsed().as_secs_f64();

    let mut rows = Vec::new();
    for start in (0..inputs.nrows()).step_by(slots) {
        let batch = inputs.slice(ndarray::s![start..(start + slots).min(inputs.nrows()), ..]);
        let t = Instant::now();
        let zeros = plans
            .iter()
            .map(|plan| {
                (0..plan.in_dim())
                    .map(|_| Ok(pk.encrypt_zero(top, params.scale(), rng)?))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        run.preprocessing_s += t.elapsed().as_secs_f64();

        let t = Instant::now();
        let mut a = batch.to_owned();
        let mut li = 0;
        for layer in layers {
            if layer.as_param().is_none() {
                a = layer.forward(a.view())?;
                continue;
            }
            let plan = &plans[li];
            let cts = a
                .axis_iter(Axis(1))
                .into_par_iter()
                .zip(zeros[li].par_iter())
                .map(|(col, zero)| {
                    let v: Vec<f64> = col.iter().map(|&x| f64::from(x)).collect();
                    Ok(eval.add_plain(zero, &encoder.encode(&v, params.scale(), top)?)?)
                })
                .collect::<Result<Vec<_>>>()?;
            run.online_bytes += cts_bytes(&cts, &params)?;
            let w = layer
                .as_param()
                .map(|p| p.weight())
                .ok_or_else(|| ProtocolError::UnsupportedModel("layer".into()))?;
            let mut z = Array2::<f32>::zeros((a.nrows(), plan.out_dim()));
            for chunk_start in (0..plan.out_dim()).step_by(FP_CHUNK) {
                let end = (chunk_start + FP_CHUNK).min(plan.out_dim());
                let out = (chunk_start..end)
                    .into_par_iter()
                    .map(|idx| {
                        let (o, pos) = (idx / plan.positions(), idx % plan.positions());
                        let mut refs = Vec::with_capacity(plan.patch());
                        let mut ws = Vec::with_capacity(plan.patch());
                        for p in 0..plan.patch() {
                            if let Some(q) = plan.input_at(p, pos) {
                                refs.push(&cts[q]);
                                ws.push(f64::from(w[[o, p]]));
                            }
                        }
                        let mut zc = eval.linear_combination(&refs, &ws)?;
                        eval.rescale_assign(&mut zc)?;
                        eval.add_assign(&mut zc, &biases[li][o])?;
                        Ok(zc)
                    })
                    .collect::<Result<Vec<_>>>()?;
                run.online_bytes += cts_bytes(&out, &params)?;
                let decoded = out
                    .par_iter()
                    .map(|ct| Ok(encoder.decode(&sk.decrypt(ct)?)?))
                    .collect::<Result<Vec<_>>>()?;
                for (k, vals) in decoded.iter().enumerate() {
                    for (r, v) in vals.iter().take(a.nrows()).enumerate() {
                        z[[r, chunk_start + k]] = *v as f32;
                    }
                }
            }
            a = z;
            li += 1;
        }
        run.online_s += t.elapsed().as_secs_f64();
        rows.push(a);
        progress((start + slots).min(inputs.nrows()));
    }
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    run.logits = ndarray::concatenate(Axis(0), &views)
        .map_err(|e| ProtocolError::UnsupportedModel(e.to_string()))?;
    Ok(run)
}

fn cts_bytes(cts: &[Ciphertext], params: &Parameters) -> Result<u64> {
    let mut total = 0;
    for ct in cts {
        total += ct.serialized_len(params)? as u64;
    }
    Ok(total)
}

/// Operation counts of one Pure-HE inference batch and the per-operation costs measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PureHeInference {
    /// The parameter set measured.
    pub params: ParametersLiteral,
    /// Queries one batch carries (the slot count).
    pub slots: usize,
    /// Ciphertext × ciphertext products (one per multiply-accumulate of `W·a`).
    pub products: u64,
    /// Relinearize-and-rescale operations (one per layer output).
    pub relin_rescales: u64,
    /// Seconds per product (with its accumulation), parallel throughput.
    pub product_s: f64,
    /// Seconds per relinearize-and-rescale, parallel throughput.
    pub relin_rescale_s: f64,
    /// Online bytes of one batch: fresh `[a]` up and `[z]` down per layer.
    pub online_bytes_per_batch: u64,
    /// Bytes of the encrypted weights the server stores (setup, not per query).
    pub encrypted_weight_bytes: u64,
}

impl PureHeInference {
    /// Server seconds for one batch (any number of queries up to [`Self::slots`]).
    #[must_use]
    pub fn seconds_per_batch(&self) -> f64 {
        self.products as f64 * self.product_s + self.relin_rescales as f64 * self.relin_rescale_s
    }
}

/// Counts the operations of one Pure-HE inference of `spec` and times them (`reps`
/// operations per kind, at least 2, in parallel on the current rayon pool) on
/// `ParametersLiteral::seal_n16384()`.
///
/// # Errors
/// [`ProtocolError::He`] from the engine, [`ProtocolError::Nn`] for a bad architecture.
pub fn pure_he_inference<R: RngCore + CryptoRng>(
    spec: &ModelSpec,
    reps: usize,
    rng: &mut R,
) -> Result<PureHeInference> {
    let literal = ParametersLiteral::seal_n16384();
    let params = literal.build()?;
    let sk = SecretKey::generate(&params, rng)?;
    let rlk = RelinearizationKey::new(&sk, rng)?;
    let encoder = Encoder::new(&params);
    let eval = Evaluator::new(&params);
    let top = params.max_level();
    let values: Vec<f64> = (0..params.slots()).map(|i| (i % 5) as f64 / 5.0).collect();
    let pt = encoder.encode(&values, params.scale(), top)?;
    let reps = reps.max(2);
    let cts = (0..reps)
        .map(|_| Ok(sk.encrypt(&pt, rng)?))
        .collect::<Result<Vec<_>>>()?;
    let t = Instant::now();
    let products = cts
        .par_iter()
        .zip(cts.par_iter().rev())
        .map(|(a, b)| {
            let mut acc = eval.multiply(a, b)?;
            let again = eval.multiply(b, a)?;
            eval.add_assign(&mut acc, &again)?;
            Ok(acc)
        })
        .collect::<Result<Vec<_>>>()?;
    let product_s = t.elapsed().as_secs_f64() / (2 * reps) as f64;
    let t = Instant::now();
    let outs = products
        .par_iter()
        .map(|c| Ok(eval.rescale(&eval.relinearize(c, &rlk)?)?))
        .collect::<Result<Vec<_>>>()?;
    let relin_rescale_s = t.elapsed().as_secs_f64() / reps as f64;
    let fresh_len = cts.first().map_or(Ok(0), |c| c.serialized_len(&params))? as u64;
    let out_len = outs.first().map_or(Ok(0), |c| c.serialized_len(&params))? as u64;
    // A weight ciphertext is a full (unseeded) top-level encryption.
    let full_len = {
        let pk = PublicKey::new(&sk, rng)?;
        pk.encrypt(&pt, rng)?.serialized_len(&params)? as u64
    };
    let model = Model::zeros(spec.clone())?;
    let (mut products_n, mut relin, mut bytes, mut weights) = (0u64, 0u64, 0u64, 0u64);
    for layer in model.layers() {
        if let Layer::Linear(_) | Layer::Conv2d(_) = layer {
            let plan = LayerPlan::of(layer)?;
            let mut taps = 0u64;
            for p in 0..plan.patch() {
                for pos in 0..plan.positions() {
                    taps += u64::from(plan.input_at(p, pos).is_some());
                }
            }
            products_n += taps * plan.units() as u64;
            relin += plan.out_dim() as u64;
            bytes += plan.in_dim() as u64 * fresh_len + plan.out_dim() as u64 * out_len;
            weights += plan.weights() as u64 * full_len;
        }
    }
    Ok(PureHeInference {
        params: literal,
        slots: params.slots(),
        products: products_n,
        relin_rescales: relin,
        product_s,
        relin_rescale_s,
        online_bytes_per_batch: bytes,
        encrypted_weight_bytes: weights,
    })
}
