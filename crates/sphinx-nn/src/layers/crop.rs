//! Cropping the border of an image.

use ndarray::{Array2, ArrayView2, Axis, Zip};

use super::{Nonlinear, Shape, check_cols, check_pair};
use crate::error::Result;

/// Drops `border` rows and columns on each side of every channel.
///
/// MNIST digits are centred in a 20×20 box of the 28×28 frame, so the outer pixels are
/// almost always background: cropping them before the first trainable layer removes
/// weights that under DP-SGD receive noise and hardly any signal, and in the encrypted
/// protocol removes the ciphertexts of those inputs and of their per-sample gradients.
/// It reads only the sample itself, so it spends no privacy; the data owner runs it in
/// the clear with the other parameter-free layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crop {
    input: Shape,
    output: Shape,
    border: usize,
}

impl Crop {
    /// Cropping of inputs of shape `input`.
    ///
    /// # Errors
    /// [`crate::NnError::Architecture`] if nothing would remain of the image.
    pub fn new(input: Shape, border: usize) -> Result<Self> {
        let output = super::LayerSpec::Crop { border }.output_shape(input)?;
        Ok(Self {
            input,
            output,
            border,
        })
    }

    /// Pixels dropped on each side.
    pub fn border(&self) -> usize {
        self.border
    }

    /// Input shape of one sample.
    pub fn input_shape(&self) -> Shape {
        self.input
    }

    /// Output shape of one sample.
    pub fn output_shape(&self) -> Shape {
        self.output
    }

    /// Calls `f(input_index, output_index)` for every kept pixel.
    fn for_each_kept(&self, mut f: impl FnMut(usize, usize)) {
        let (h, w) = (self.input.height, self.input.width);
        let (oh, ow) = (self.output.height, self.output.width);
        for c in 0..self.input.channels {
            for oy in 0..oh {
                let row = (c * h + oy + self.border) * w + self.border;
                let out = (c * oh + oy) * ow;
                for ox in 0..ow {
                    f(row + ox, out + ox);
                }
            }
        }
    }
}

impl Nonlinear for Crop {
    fn in_dim(&self) -> usize {
        self.input.len()
    }

    fn out_dim(&self) -> usize {
        self.output.len()
    }

    fn forward(&self, input: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_cols("Crop::forward", &input, self.in_dim())?;
        let mut out = Array2::zeros((input.nrows(), self.out_dim()));
        Zip::from(out.axis_iter_mut(Axis(0)))
            .and(input.axis_iter(Axis(0)))
            .par_for_each(|mut o, x| self.for_each_kept(|i, j| o[j] = x[i]));
        Ok(out)
    }

    fn backward(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<Array2<f32>> {
        check_pair(
            "Crop::backward",
            &input,
            self.in_dim(),
            &grad_out,
            self.out_dim(),
        )?;
        let mut dx = Array2::zeros((grad_out.nrows(), self.in_dim()));
        Zip::from(dx.axis_iter_mut(Axis(0)))
            .and(grad_out.axis_iter(Axis(0)))
            .par_for_each(|mut d, g| self.for_each_kept(|i, j| d[i] = g[j]));
        Ok(dx)
    }
}
