//! Element-wise activations and the layout-only `Flatten`.

use ndarray::{Array2, ArrayView2, Zip};

use super::{Nonlinear, check_cols, check_pair};
use crate::error::Result;

/// `a = max(0, z)`; derivative `1[z > 0]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relu {
    dim: usize,
}

impl Relu {
    /// ReLU on `dim` scalars per sample.
    pub fn new(dim: usize) -> Self {
        Self { dim }
    }

    /// `f'(z)` element-wise: what the data owner returns alongside `f(z)` in the
    /// encrypted protocol.
    ///
    /// # Errors
    /// [`crate::NnError::Shape`] if `input` is not `(B, dim)`.
    pub fn derivative(&self, input: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_cols("Relu::derivative", &input, self.dim)?;
        Ok(Zip::from(&input).par_map_collect(|&z| if z > 0.0 { 1.0 } else { 0.0 }))
    }
}

impl Nonlinear for Relu {
    fn in_dim(&self) -> usize {
        self.dim
    }

    fn out_dim(&self) -> usize {
        self.dim
    }

    fn forward(&self, input: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_cols("Relu::forward", &input, self.dim)?;
        Ok(Zip::from(&input).par_map_collect(|&z| z.max(0.0)))
    }

    fn backward(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<Array2<f32>> {
        check_pair("Relu::backward", &input, self.dim, &grad_out, self.dim)?;
        Ok(Zip::from(&input)
            .and(&grad_out)
            .par_map_collect(|&z, &g| if z > 0.0 { g } else { 0.0 }))
    }
}

/// `a = z²`; derivative `2z`. The activation of HE-friendly networks (CryptoNets,
/// SEALion), which need polynomials only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Square {
    dim: usize,
}

impl Square {
    /// Square on `dim` scalars per sample.
    pub fn new(dim: usize) -> Self {
        Self { dim }
    }
}

impl Nonlinear for Square {
    fn in_dim(&self) -> usize {
        self.dim
    }

    fn out_dim(&self) -> usize {
        self.dim
    }

    fn forward(&self, input: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_cols("Square::forward", &input, self.dim)?;
        Ok(Zip::from(&input).par_map_collect(|&z| z * z))
    }

    fn backward(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<Array2<f32>> {
        check_pair("Square::backward", &input, self.dim, &grad_out, self.dim)?;
        Ok(Zip::from(&input)
            .and(&grad_out)
            .par_map_collect(|&z, &g| 2.0 * z * g))
    }
}

/// `a = tanh(z)`; derivative `1 − tanh²(z)`. A bounded ("tempered sigmoid")
/// activation, which keeps activations (and so per-sample gradient norms) bounded;
/// Papernot et al. (2021) report better DP-SGD accuracy with it than with ReLU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tanh {
    dim: usize,
}

impl Tanh {
    /// Tanh on `dim` scalars per sample.
    pub fn new(dim: usize) -> Self {
        Self { dim }
    }
}

impl Nonlinear for Tanh {
    fn in_dim(&self) -> usize {
        self.dim
    }

    fn out_dim(&self) -> usize {
        self.dim
    }

    fn forward(&self, input: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_cols("Tanh::forward", &input, self.dim)?;
        Ok(Zip::from(&input).par_map_collect(|&z| z.tanh()))
    }

    fn backward(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<Array2<f32>> {
        check_pair("Tanh::backward", &input, self.dim, &grad_out, self.dim)?;
        Ok(Zip::from(&input).and(&grad_out).par_map_collect(|&z, &g| {
            let t = z.tanh();
            (1.0 - t * t) * g
        }))
    }
}

/// Marks the passage from `C×H×W` to a flat vector. Rows are already stored flattened
/// (channel-major), so the data are copied unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flatten {
    dim: usize,
}

impl Flatten {
    /// Flatten of `dim` scalars per sample.
    pub fn new(dim: usize) -> Self {
        Self { dim }
    }
}

impl Nonlinear for Flatten {
    fn in_dim(&self) -> usize {
        self.dim
    }

    fn out_dim(&self) -> usize {
        self.dim
    }

    fn forward(&self, input: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_cols("Flatten::forward", &input, self.dim)?;
        Ok(input.to_owned())
    }

    fn backward(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<Array2<f32>> {
        check_pair("Flatten::backward", &input, self.dim, &grad_out, self.dim)?;
        Ok(grad_out.to_owned())
    }
}
