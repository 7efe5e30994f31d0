//! Training steps: plaintext SGD and DP-SGD (the reference semantics of DESIGN.md §3.1).

use ndarray::{Array2, ArrayView2, Axis, s};
use rand::Rng;
use rand::seq::SliceRandom;
use sphinx_dp::DpSgdAggregator;

use crate::data::Dataset;
use crate::error::{NnError, Result, shape_err};
use crate::loss::softmax_cross_entropy;
use crate::model::{Gradients, Model, Trace};
use crate::optim::Sgd;

/// What one step saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Sum of per-sample losses over the batch (before the update).
    pub loss_sum: f64,
    /// Correctly classified samples of the batch (before the update).
    pub correct: usize,
    /// Samples in the batch.
    pub batch_size: usize,
    /// Samples whose gradient norm exceeded the clip bound (DP-SGD only, else 0).
    pub clipped: usize,
}

/// One plaintext minibatch SGD step on the mean loss of `(input, labels)`.
///
/// # Errors
/// Shape and label errors of [`Model::loss_and_grads`]; [`NnError::Shape`] for an
/// empty batch.
pub fn sgd_step(
    model: &mut Model,
    opt: &mut Sgd,
    input: ArrayView2<'_, f32>,
    labels: &[u8],
) -> Result<StepStats> {
    if labels.is_empty() {
        return Err(shape_err("sgd_step", "a non-empty batch", 0));
    }
    let (loss, mut grads) = model.loss_and_grads(input, labels)?;
    grads.scale(1.0 / labels.len() as f32);
    opt.step(model, &grads)?;
    Ok(StepStats {
        loss_sum: loss.loss_sum,
        correct: loss.correct,
        batch_size: labels.len(),
        clipped: 0,
    })
}

/// A random partition of `0..n` into batches of `batch` indices (the last may be
/// shorter): one plaintext epoch.
pub fn shuffled_batches<R: Rng + ?Sized>(n: usize, batch: usize, rng: &mut R) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(rng);
    idx.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
}

/// Per-sample gradients of all parameters for samples `rows` of a traced batch, one row
/// per sample in [`Gradients::to_flat`] layout (per layer `W` row-major, then `b`).
///
/// # Errors
/// [`NnError::Shape`] if the trace, `deltas` and `rows` do not fit the model.
pub fn per_sample_flat_grads(
    model: &Model,
    trace: &Trace,
    deltas: &[Array2<f32>],
    rows: std::ops::Range<usize>,
) -> Result<Array2<f32>> {
    let indices = model.param_layer_indices();
    let batch = trace.values.first().map_or(0, Array2::nrows);
    if deltas.len() != indices.len() || rows.end > batch || rows.start > rows.end {
        return Err(shape_err(
            "per_sample_flat_grads",
            format!("{} deltas, rows ≤ {batch}", indices.len()),
            format!("{} deltas, rows {rows:?}", deltas.len()),
        ));
    }
    let mut flat = Array2::zeros((rows.len(), model.num_params()));
    let mut offset = 0;
    for (&i, d) in indices.iter().zip(deltas) {
        let (Some(layer), Some(input)) = (
            model.layers().get(i).and_then(|l| l.as_param()),
            trace.values.get(i),
        ) else {
            return Err(shape_err("per_sample_flat_grads", "a parameter layer", i));
        };
        let (wlen, blen) = (layer.weight().len(), layer.bias().len());
        layer.per_sample_grads_into(
            input.slice(s![rows.clone(), ..]),
            d.slice(s![rows.clone(), ..]),
            flat.slice_mut(s![.., offset..offset + wlen + blen]),
        )?;
        offset += wlen + blen;
    }
    Ok(flat)
}

/// Samples per chunk of materialized per-sample gradients in [`dp_sgd_step`]: bounds
/// memory to `CHUNK × num_params` floats.
const CHUNK: usize = 64;

/// One DP-SGD step (Abadi et al. 2016; DESIGN.md §3.1 semantics, in plaintext): draws a
/// Poisson batch with the aggregator's sampler, computes every sample's gradient of all
/// parameters, lets [`DpSgdAggregator`] clip each jointly to C, sum, add Gaussian noise
/// of standard deviation σC and divide by the expected batch size, then applies the
/// noisy gradient with `opt`. An empty batch still applies a pure-noise update.
///
/// The caller records the step with its accountant.
///
/// # Errors
/// [`NnError::Dp`] if the aggregator rejects a gradient (wrong dimension, non-finite
/// values); shape errors if `data` does not fit the model.
pub fn dp_sgd_step(
    model: &mut Model,
    opt: &mut Sgd,
    agg: &mut DpSgdAggregator,
    data: &Dataset,
) -> Result<StepStats> {
    let dim = model.num_params();
    if agg.dim() != dim {
        return Err(NnError::Dp(format!(
            "aggregator dimension {} is not the model's {dim} parameters",
            agg.dim()
        )));
    }
    let batch = agg.sample_batch();
    let (mut loss_sum, mut correct, mut clipped) = (0.0, 0, 0);
    let output = if batch.is_empty() {
        agg.begin_step().finish()
    } else {
        let clip = agg.config().clip_norm.get();
        let model_ref: &Model = model;
        // Per-sample gradients do not interact, so the batch is processed in
        // micro-batches (bounded memory, allocations small enough to be reused), and the
        // aggregator's sequential clipping of one micro-batch overlaps with computing the
        // gradients of the next.
        let compute = |idx: &[usize]| -> Result<(Array2<f32>, f64, usize)> {
            let (x, y) = data.batch(idx)?;
            let trace = model_ref.forward_trace(x.view())?;
            let loss = softmax_cross_entropy(trace.logits()?, &y)?;
            let deltas = model_ref.backward(&trace, loss.grad.view())?;
            let flat = per_sample_flat_grads(model_ref, &trace, &deltas, 0..idx.len())?;
            Ok((flat, loss.loss_sum, loss.correct))
        };
        let add = |step: &mut sphinx_dp::DpStep<'_>, flat: &Array2<f32>| -> Result<usize> {
            let mut clipped = 0;
            for row in flat.axis_iter(Axis(0)) {
                let row = row
                    .as_slice()
                    .ok_or_else(|| shape_err("dp_sgd_step", "contiguous rows", "strided"))?;
                let info = step.add(row).map_err(|e| NnError::Dp(e.to_string()))?;
                clipped += usize::from(info.norm > clip);
            }
            Ok(clipped)
        };
        let mut step = agg.begin_step();
        let mut pending: Option<Array2<f32>> = None;
        for idx in batch.chunks(CHUNK) {
            let (next, added) = rayon::join(
                || compute(idx),
                || pending.as_ref().map_or(Ok(0), |flat| add(&mut step, flat)),
            );
            clipped += added?;
            let (flat, l, c) = next?;
            (loss_sum, correct) = (loss_sum + l, correct + c);
            pending = Some(flat);
        }
        if let Some(flat) = &pending {
            clipped += add(&mut step, flat)?;
        }
        step.finish()
    };
    let mut grads = Gradients::zeros_like(model);
    grads.copy_from_flat(&output.gradient)?;
    opt.step(model, &grads)?;
    Ok(StepStats {
        loss_sum,
        correct,
        batch_size: batch.len(),
        clipped,
    })
}
