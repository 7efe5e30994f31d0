//! Softmax cross-entropy.

use ndarray::{Array2, ArrayView2, Axis, Zip};

use crate::error::{NnError, Result, shape_err};

/// Loss, gradient and hit count of a batch.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// Sum over the batch of `−log softmax(z_i)[y_i]`.
    pub loss_sum: f64,
    /// `∂ℓ_i/∂z_i = softmax(z_i) − onehot(y_i)`, one row per sample: the gradient of each
    /// sample's own loss (not divided by the batch size), the input of per-sample clipping.
    pub grad: Array2<f32>,
    /// Samples whose arg-max logit is the label.
    pub correct: usize,
}

/// Softmax cross-entropy of `logits` `(B, classes)` against `labels` (length `B`),
/// computed stably (max-shifted, log-sum-exp in `f64`).
///
/// # Errors
/// [`NnError::Shape`] if `labels.len() != B`; [`NnError::Label`] for a label
/// `≥ classes`.
pub fn softmax_cross_entropy(logits: ArrayView2<'_, f32>, labels: &[u8]) -> Result<LossOutput> {
    if logits.nrows() != labels.len() {
        return Err(shape_err(
            "softmax_cross_entropy",
            logits.nrows(),
            labels.len(),
        ));
    }
    let classes = logits.ncols();
    if let Some(&label) = labels.iter().find(|&&l| usize::from(l) >= classes) {
        return Err(NnError::Label { label, classes });
    }
    let mut grad = Array2::zeros(logits.raw_dim());
    let mut losses = vec![0.0f64; labels.len()];
    let mut hits = vec![false; labels.len()];
    Zip::from(grad.axis_iter_mut(Axis(0)))
        .and(logits.axis_iter(Axis(0)))
        .and(&ndarray::ArrayView1::from(labels))
        .and(&mut ndarray::ArrayViewMut1::from(&mut losses[..]))
        .and(&mut ndarray::ArrayViewMut1::from(&mut hits[..]))
        .par_for_each(|mut g, z, &y, loss, hit| {
            let y = usize::from(y);
            let (arg, max) =
                z.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |(ai, am), (i, &v)| {
                        if v > am { (i, v) } else { (ai, am) }
                    });
            let mut sum = 0.0f64;
            for (gi, &zi) in g.iter_mut().zip(z.iter()) {
                let e = f64::from(zi - max).exp();
                *gi = e as f32;
                sum += e;
            }
            let zy = z.get(y).copied().unwrap_or(max);
            *loss = sum.ln() - f64::from(zy - max);
            g.mapv_inplace(|e| (f64::from(e) / sum) as f32);
            if let Some(gy) = g.get_mut(y) {
                *gy -= 1.0;
            }
            *hit = arg == y;
        });
    Ok(LossOutput {
        loss_sum: losses.iter().sum(),
        grad,
        correct: hits.iter().filter(|&&h| h).count(),
    })
}
