//! Average pooling.

use ndarray::{Array2, ArrayView2, Axis, Zip};

use super::{Nonlinear, Shape, check_cols, check_pair};
use crate::error::Result;

/// Average pooling over `k × k` windows with stride `s`, per channel, no padding.
///
/// It is linear but parameter-free; the encrypted protocol runs it with the nonlinear
/// steps on the data owner's side, as Sphinx does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvgPool2d {
    input: Shape,
    output: Shape,
    kernel: usize,
    stride: usize,
}

impl AvgPool2d {
    /// Pooling for inputs of shape `input`.
    ///
    /// # Errors
    /// [`crate::NnError::Architecture`] if the window does not fit or is empty.
    pub fn new(input: Shape, kernel: usize, stride: usize) -> Result<Self> {
        let output = super::LayerSpec::AvgPool2d { kernel, stride }.output_shape(input)?;
        Ok(Self {
            input,
            output,
            kernel,
            stride,
        })
    }

    /// Window side.
    pub fn kernel(&self) -> usize {
        self.kernel
    }

    /// Stride.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Input shape of one sample.
    pub fn input_shape(&self) -> Shape {
        self.input
    }

    /// Output shape of one sample.
    pub fn output_shape(&self) -> Shape {
        self.output
    }

    /// Calls `f(input_index, output_index)` for every (input, output) pair of every window.
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize)) {
        let Shape {
            channels,
            height: h,
            width: w,
        } = self.input;
        let (oh, ow) = (self.output.height, self.output.width);
        for c in 0..channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let o = (c * oh + oy) * ow + ox;
                    for ky in 0..self.kernel {
                        let row = (c * h + oy * self.stride + ky) * w + ox * self.stride;
                        for kx in 0..self.kernel {
                            f(row + kx, o);
                        }
                    }
                }
            }
        }
    }
}

impl Nonlinear for AvgPool2d {
    fn in_dim(&self) -> usize {
        self.input.len()
    }

    fn out_dim(&self) -> usize {
        self.output.len()
    }

    fn forward(&self, input: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_cols("AvgPool2d::forward", &input, self.in_dim())?;
        let scale = 1.0 / (self.kernel * self.kernel) as f32;
        let mut out = Array2::zeros((input.nrows(), self.out_dim()));
        Zip::from(out.axis_iter_mut(Axis(0)))
            .and(input.axis_iter(Axis(0)))
            .par_for_each(|mut o, x| {
                self.for_each_tap(|i, j| o[j] += x[i]);
                o *= scale;
            });
        Ok(out)
    }

    fn backward(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<Array2<f32>> {
        check_pair(
            "AvgPool2d::backward",
            &input,
            self.in_dim(),
            &grad_out,
            self.out_dim(),
        )?;
        let scale = 1.0 / (self.kernel * self.kernel) as f32;
        let mut dx = Array2::zeros((grad_out.nrows(), self.in_dim()));
        Zip::from(dx.axis_iter_mut(Axis(0)))
            .and(grad_out.axis_iter(Axis(0)))
            .par_for_each(|mut d, g| {
                self.for_each_tap(|i, j| d[i] += g[j] * scale);
            });
        Ok(dx)
    }
}
