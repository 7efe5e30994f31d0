//! Fully connected layer `z = W·a + b`.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use super::{ParamGrads, ParamLayer, PerSampleGrads, check_cols, check_pair, chunk_rows};
use crate::error::{NnError, Result, shape_err};

/// Fully connected layer: `W` is `(out_features, in_features)`, `b` has `out_features`
/// entries. The input must be flat (put a [`super::Flatten`] after spatial layers).
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    weight: Array2<f32>,
    bias: Array1<f32>,
}

impl Linear {
    /// A zero-initialized layer.
    ///
    /// # Errors
    /// [`NnError::Architecture`] if a dimension is zero.
    pub fn new(in_features: usize, out_features: usize) -> Result<Self> {
        if in_features == 0 || out_features == 0 {
            return Err(NnError::Architecture(
                "linear layer with a zero dimension".into(),
            ));
        }
        Ok(Self {
            weight: Array2::zeros((out_features, in_features)),
            bias: Array1::zeros(out_features),
        })
    }

    /// A layer with the given parameters.
    ///
    /// # Errors
    /// [`NnError::Shape`] if `bias` does not have one entry per row of `weight`, or a
    /// dimension is zero.
    pub fn from_params(weight: Array2<f32>, bias: Array1<f32>) -> Result<Self> {
        if weight.nrows() != bias.len() || weight.is_empty() {
            return Err(shape_err(
                "Linear::from_params",
                format!("bias of {}", weight.nrows()),
                bias.len(),
            ));
        }
        Ok(Self { weight, bias })
    }
}

impl ParamLayer for Linear {
    fn in_dim(&self) -> usize {
        self.weight.ncols()
    }

    fn out_dim(&self) -> usize {
        self.weight.nrows()
    }

    fn weight(&self) -> &Array2<f32> {
        &self.weight
    }

    fn bias(&self) -> &Array1<f32> {
        &self.bias
    }

    fn weight_mut(&mut self) -> &mut Array2<f32> {
        &mut self.weight
    }

    fn bias_mut(&mut self) -> &mut Array1<f32> {
        &mut self.bias
    }

    fn forward(&self, input: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_cols("Linear::forward", &input, self.in_dim())?;
        let mut out = Array2::zeros((input.nrows(), self.out_dim()));
        let rows = chunk_rows(input.nrows());
        out.axis_chunks_iter_mut(Axis(0), rows)
            .into_par_iter()
            .zip(input.axis_chunks_iter(Axis(0), rows))
            .for_each(|(mut o, x)| {
                for mut row in o.rows_mut() {
                    row.assign(&self.bias);
                }
                general_mat_mul(1.0, &x, &self.weight.t(), 1.0, &mut o);
            });
        Ok(out)
    }

    fn backward_input(&self, grad_out: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_cols("Linear::backward_input", &grad_out, self.out_dim())?;
        let mut out = Array2::zeros((grad_out.nrows(), self.in_dim()));
        let rows = chunk_rows(grad_out.nrows());
        out.axis_chunks_iter_mut(Axis(0), rows)
            .into_par_iter()
            .zip(grad_out.axis_chunks_iter(Axis(0), rows))
            .for_each(|(mut o, g)| general_mat_mul(1.0, &g, &self.weight, 0.0, &mut o));
        Ok(out)
    }

    fn grads(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<ParamGrads> {
        check_pair(
            "Linear::grads",
            &input,
            self.in_dim(),
            &grad_out,
            self.out_dim(),
        )?;
        let rows = chunk_rows(input.nrows());
        let zero = || ParamGrads::zeros_like(self);
        let total = input
            .axis_chunks_iter(Axis(0), rows)
            .into_par_iter()
            .zip(grad_out.axis_chunks_iter(Axis(0), rows))
            .fold(zero, |mut acc, (x, g)| {
                general_mat_mul(1.0, &g.t(), &x, 1.0, &mut acc.weight);
                acc.bias += &g.sum_axis(Axis(0));
                acc
            })
            .reduce(zero, |mut a, b| {
                a.weight += &b.weight;
                a.bias += &b.bias;
                a
            });
        Ok(total)
    }

    fn per_sample_grads(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<PerSampleGrads> {
        check_pair(
            "Linear::per_sample_grads",
            &input,
            self.in_dim(),
            &grad_out,
            self.out_dim(),
        )?;
        let mut weight = Array3::zeros((input.nrows(), self.out_dim(), self.in_dim()));
        weight
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(input.axis_iter(Axis(0)))
            .zip(grad_out.axis_iter(Axis(0)))
            .for_each(|((mut w, x), g)| {
                // Outer product δ ⊗ a: the per-sample gradient of a linear map.
                for (mut row, &gj) in w.axis_iter_mut(Axis(0)).zip(g.iter()) {
                    row.zip_mut_with(&x, |r, &xi| *r = gj * xi);
                }
            });
        Ok(PerSampleGrads {
            weight,
            bias: grad_out.to_owned(),
        })
    }

    fn per_sample_grads_into(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
        mut out: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        check_pair(
            "Linear::per_sample_grads_into",
            &input,
            self.in_dim(),
            &grad_out,
            self.out_dim(),
        )?;
        let (n_in, wlen) = (self.in_dim(), self.weight.len());
        if out.dim() != (input.nrows(), wlen + self.bias.len()) {
            return Err(shape_err(
                "Linear::per_sample_grads_into",
                "(B, params)",
                format!("{:?}", out.dim()),
            ));
        }
        out.axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(input.axis_iter(Axis(0)))
            .zip(grad_out.axis_iter(Axis(0)))
            .for_each(|((mut row, x), g)| {
                for (j, &gj) in g.iter().enumerate() {
                    let mut dst = row.slice_mut(ndarray::s![j * n_in..(j + 1) * n_in]);
                    dst.zip_mut_with(&x, |d, &xi| *d = gj * xi);
                }
                row.slice_mut(ndarray::s![wlen..]).assign(&g);
            });
        Ok(())
    }

    fn per_sample_sq_norms(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<Array1<f64>> {
        check_pair(
            "Linear::per_sample_sq_norms",
            &input,
            self.in_dim(),
            &grad_out,
            self.out_dim(),
        )?;
        // ‖δ aᵀ‖²_F = ‖δ‖²‖a‖², so no outer product is formed.
        let norms: Vec<f64> = input
            .axis_iter(Axis(0))
            .into_par_iter()
            .zip(grad_out.axis_iter(Axis(0)))
            .map(|(x, g)| {
                let gx = super::sq_sum(g.iter());
                gx * super::sq_sum(x.iter()) + gx
            })
            .collect();
        Ok(Array1::from(norms))
    }
}
