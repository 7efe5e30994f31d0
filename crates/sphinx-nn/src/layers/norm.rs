//! Group normalization without learned scale or shift.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use super::{Nonlinear, Shape, check_cols, check_pair, chunk_rows};
use crate::error::{NnError, Result, shape_err};

/// Added to the variance before the square root (PyTorch's default).
pub const GROUP_NORM_EPS: f32 = 1e-5;

/// Group normalization (Wu & He 2018) with no affine part: each sample's channels are
/// split into `groups` consecutive groups, and each group (its channels × height × width
/// values) is shifted and scaled to mean 0 and variance 1 (`ε` = [`GROUP_NORM_EPS`]).
///
/// Every statistic comes from the sample itself, never from other samples, so the layer
/// spends no privacy: it is the data-independent normalization Tramèr & Boneh (2021) use
/// for scattering features under DP-SGD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupNorm {
    shape: Shape,
    groups: usize,
}

impl GroupNorm {
    /// Normalization of inputs of shape `shape` in `groups` groups.
    ///
    /// # Errors
    /// [`NnError::Architecture`] if `groups` is zero or does not divide the channels.
    pub fn new(shape: Shape, groups: usize) -> Result<Self> {
        if groups == 0 || !shape.channels.is_multiple_of(groups) || shape.is_empty() {
            return Err(NnError::Architecture(format!(
                "group_norm: {groups} groups do not divide the {} channels of {shape}",
                shape.channels
            )));
        }
        Ok(Self { shape, groups })
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.groups
    }

    fn group_len(&self) -> usize {
        self.shape.len() / self.groups
    }

    /// Runs `f(group input, group output gradient or none, group output)` on every group
    /// of every sample, in parallel over chunks of samples.
    fn map_groups(
        &self,
        context: &'static str,
        input: ArrayView2<'_, f32>,
        grad_out: Option<ArrayView2<'_, f32>>,
        f: impl Fn(&[f32], Option<&[f32]>, &mut [f32]) + Sync,
    ) -> Result<Array2<f32>> {
        let dim = self.shape.len();
        let input = input.as_standard_layout();
        let xs = input
            .as_slice()
            .ok_or_else(|| shape_err(context, "contiguous", "strided"))?;
        let grad_out = grad_out.map(|g| g.as_standard_layout().into_owned());
        let gs = match &grad_out {
            Some(g) => Some(
                g.as_slice()
                    .ok_or_else(|| shape_err(context, "contiguous", "strided"))?,
            ),
            None => None,
        };
        let batch = input.nrows();
        let mut out = vec![0.0f32; batch * dim];
        let rows = chunk_rows(batch);
        let n = self.group_len();
        out.par_chunks_mut(dim * rows)
            .enumerate()
            .for_each(|(chunk, os)| {
                let start = chunk * dim * rows;
                let x = &xs[start..start + os.len()];
                let g = gs.map(|g| &g[start..start + os.len()]);
                for (i, o) in os.chunks_exact_mut(n).enumerate() {
                    f(&x[i * n..(i + 1) * n], g.map(|g| &g[i * n..(i + 1) * n]), o);
                }
            });
        Array2::from_shape_vec((batch, dim), out).map_err(|e| shape_err(context, "output", e))
    }
}

/// Mean and `1/√(var + ε)` of a group.
fn moments(x: &[f32]) -> (f32, f32) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (
        mean as f32,
        (1.0 / (var + f64::from(GROUP_NORM_EPS)).sqrt()) as f32,
    )
}

impl Nonlinear for GroupNorm {
    fn in_dim(&self) -> usize {
        self.shape.len()
    }

    fn out_dim(&self) -> usize {
        self.shape.len()
    }

    fn forward(&self, input: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_cols("GroupNorm::forward", &input, self.shape.len())?;
        self.map_groups("GroupNorm::forward", input, None, |x, _, o| {
            let (mean, inv) = moments(x);
            for (o, &v) in o.iter_mut().zip(x) {
                *o = (v - mean) * inv;
            }
        })
    }

    /// With `x̂` the normalized group and `g` its output gradient, the input gradient is
    /// `(g − mean(g) − x̂·mean(g·x̂)) / √(var + ε)`.
    fn backward(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<Array2<f32>> {
        let dim = self.shape.len();
        check_pair("GroupNorm::backward", &input, dim, &grad_out, dim)?;
        self.map_groups("GroupNorm::backward", input, Some(grad_out), |x, g, o| {
            let Some(g) = g else { return };
            let (mean, inv) = moments(x);
            let n = x.len().max(1) as f64;
            let (mut gm, mut gx) = (0.0f64, 0.0f64);
            for (&v, &d) in x.iter().zip(g) {
                gm += f64::from(d);
                gx += f64::from(d) * f64::from((v - mean) * inv);
            }
            let (gm, gx) = ((gm / n) as f32, (gx / n) as f32);
            for ((o, &v), &d) in o.iter_mut().zip(x).zip(g) {
                *o = (d - gm - (v - mean) * inv * gx) * inv;
            }
        })
    }
}
