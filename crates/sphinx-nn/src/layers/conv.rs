//! 2-D convolution by im2col + GEMM, parallel over the batch.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::{ParamGrads, ParamLayer, PerSampleGrads, Shape, check_cols, check_pair, chunk_rows};
use crate::error::{NnError, Result, shape_err};

/// 2-D convolution (cross-correlation, as in every deep-learning library) with a square
/// `k × k` kernel, stride `s` and zero padding `p` on every side.
///
/// `W` is stored as the `(C_out, C_in·k·k)` matrix whose column index is
/// `(c_in·k + ky)·k + kx`; for one sample the layer is `Z = W · cols(a) + b·1ᵀ`, where
/// [`Conv2d::im2col`] lays the input patches out as a `(C_in·k·k, H_out·W_out)` matrix.
/// That makes a convolution a plain matrix product the encrypted protocol can reuse, and
/// a sample's weight gradient `δ · cols(a)ᵀ`.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    input: Shape,
    output: Shape,
    kernel: usize,
    stride: usize,
    padding: usize,
    weight: Array2<f32>,
    bias: Array1<f32>,
}

impl Conv2d {
    /// A zero-initialized convolution for inputs of shape `input`.
    ///
    /// # Errors
    /// [`NnError::Architecture`] if the kernel does not fit or a size is zero.
    pub fn new(
        input: Shape,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let spec = super::LayerSpec::Conv2d {
            in_channels: input.channels,
            out_channels,
            kernel,
            stride,
            padding,
        };
        let output = spec.output_shape(input)?;
        let fan_in = input.channels * kernel * kernel;
        Ok(Self {
            input,
            output,
            kernel,
            stride,
            padding,
            weight: Array2::zeros((out_channels, fan_in)),
            bias: Array1::zeros(out_channels),
        })
    }

    /// Input shape of one sample.
    pub fn input_shape(&self) -> Shape {
        self.input
    }

    /// Output shape of one sample.
    pub fn output_shape(&self) -> Shape {
        self.output
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.output.channels
    }

    /// Kernel side.
    pub fn kernel(&self) -> usize {
        self.kernel
    }

    /// Stride.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Zero padding per side.
    pub fn padding(&self) -> usize {
        self.padding
    }

    fn patch_len(&self) -> usize {
        self.weight.ncols()
    }

    fn positions(&self) -> usize {
        self.output.height * self.output.width
    }

    /// The patch matrix of one sample: `(C_in·k·k, H_out·W_out)`, zero where the window
    /// overlaps the padding.
    ///
    /// # Errors
    /// [`NnError::Shape`] if `sample` does not hold `C_in·H·W` values.
    pub fn im2col(&self, sample: ArrayView1<'_, f32>) -> Result<Array2<f32>> {
        if sample.len() != self.input.len() {
            return Err(shape_err("Conv2d::im2col", self.input.len(), sample.len()));
        }
        let x = sample.to_vec();
        let mut cols = vec![0.0; self.patch_len() * self.positions()];
        self.im2col_into(&x, &mut cols);
        Array2::from_shape_vec((self.patch_len(), self.positions()), cols)
            .map_err(|e| shape_err("Conv2d::im2col", "patch matrix", e))
    }

    /// Each `(c, ky, kx)` row is a strided copy of one input plane; the stride-1,
    /// unpadded case (both convolutions of the MNIST CNN) is a run of `copy_from_slice`.
    fn im2col_into(&self, x: &[f32], cols: &mut [f32]) {
        let Shape {
            channels,
            height: h,
            width: w,
        } = self.input;
        let (oh, ow) = (self.output.height, self.output.width);
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let l = oh * ow;
        for c in 0..channels {
            let plane = &x[c * h * w..(c + 1) * h * w];
            for ky in 0..k {
                for kx in 0..k {
                    let row = (c * k + ky) * k + kx;
                    let dst = &mut cols[row * l..(row + 1) * l];
                    for (oy, drow) in dst.chunks_exact_mut(ow).enumerate() {
                        let iy = oy * s + ky;
                        if iy < p || iy - p >= h {
                            drow.fill(0.0);
                            continue;
                        }
                        let src = &plane[(iy - p) * w..(iy - p + 1) * w];
                        if s == 1 && p == 0 {
                            drow.copy_from_slice(&src[kx..kx + ow]);
                        } else {
                            for (ox, d) in drow.iter_mut().enumerate() {
                                let ix = ox * s + kx;
                                *d = if ix < p || ix - p >= w {
                                    0.0
                                } else {
                                    src[ix - p]
                                };
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adjoint of [`Self::im2col_into`]: scatters patch gradients back onto the input,
    /// accumulating where windows overlap.
    fn col2im_add(&self, cols: &[f32], dx: &mut [f32]) {
        let Shape {
            channels,
            height: h,
            width: w,
        } = self.input;
        let (oh, ow) = (self.output.height, self.output.width);
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let l = oh * ow;
        for c in 0..channels {
            let plane = &mut dx[c * h * w..(c + 1) * h * w];
            for ky in 0..k {
                for kx in 0..k {
                    let row = (c * k + ky) * k + kx;
                    let src = &cols[row * l..(row + 1) * l];
                    for (oy, srow) in src.chunks_exact(ow).enumerate() {
                        let iy = oy * s + ky;
                        if iy < p || iy - p >= h {
                            continue;
                        }
                        let drow = &mut plane[(iy - p) * w..(iy - p + 1) * w];
                        if s == 1 && p == 0 {
                            for (d, &g) in drow[kx..kx + ow].iter_mut().zip(srow) {
                                *d += g;
                            }
                        } else {
                            for (ox, &g) in srow.iter().enumerate() {
                                let ix = ox * s + kx;
                                if ix >= p && ix - p < w {
                                    drow[ix - p] += g;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn view<'a>(&self, rows: usize, cols: usize, data: &'a [f32]) -> Result<ArrayView2<'a, f32>> {
        ArrayView2::from_shape((rows, cols), data)
            .map_err(|e| shape_err("Conv2d", format!("({rows}, {cols})"), e))
    }

    fn view_mut<'a>(
        &self,
        rows: usize,
        cols: usize,
        data: &'a mut [f32],
    ) -> Result<ArrayViewMut2<'a, f32>> {
        ArrayViewMut2::from_shape((rows, cols), data)
            .map_err(|e| shape_err("Conv2d", format!("({rows}, {cols})"), e))
    }

    /// Runs `f(sample_index_in_chunk, input_i, grad_i, cols_i, acc)` over the batch in
    /// parallel chunks, with one reusable patch buffer per chunk, folding into `A`.
    fn fold_samples<A, Z, F, R>(
        &self,
        input: &[f32],
        grad_out: &[f32],
        batch: usize,
        zero: Z,
        f: F,
        reduce: R,
    ) -> Result<A>
    where
        A: Send,
        Z: Fn() -> A + Sync + Send,
        F: Fn(&mut A, &[f32], &[f32]) -> Result<()> + Sync + Send,
        R: Fn(A, A) -> A + Sync + Send,
    {
        let (din, dout) = (self.input.len(), self.output.len());
        let rows = chunk_rows(batch);
        input
            .par_chunks(din * rows)
            .zip(grad_out.par_chunks(dout * rows))
            .try_fold(
                || (zero(), vec![0.0f32; self.patch_len() * self.positions()]),
                |(mut acc, mut cols), (xs, gs)| {
                    for (x, g) in xs.chunks_exact(din).zip(gs.chunks_exact(dout)) {
                        self.im2col_into(x, &mut cols);
                        f(&mut acc, &cols, g)?;
                    }
                    Ok::<_, NnError>((acc, cols))
                },
            )
            .map(|r| r.map(|(acc, _)| acc))
            .try_reduce(&zero, |a, b| Ok(reduce(a, b)))
    }
}

fn contiguous<'a>(
    context: &'static str,
    a: &'a ndarray::CowArray<'a, f32, ndarray::Ix2>,
) -> Result<&'a [f32]> {
    a.as_slice()
        .ok_or_else(|| shape_err(context, "contiguous array", "strided array"))
}

/// Maps every sample (a row of `in_len` values) to a row of `out_len` values with `f`,
/// in parallel over chunks of rows; each chunk gets one zeroed output block and one
/// scratch buffer of `scratch_len` values that `f` may reuse across its samples.
fn per_sample(
    context: &'static str,
    input: &[f32],
    in_len: usize,
    out_len: usize,
    scratch_len: usize,
    f: impl Fn(&[f32], &mut [f32], &mut [f32]) -> Result<()> + Sync,
) -> Result<Array2<f32>> {
    let batch = input.len() / in_len.max(1);
    let mut out = vec![0.0f32; batch * out_len];
    let rows = chunk_rows(batch);
    out.par_chunks_mut(out_len * rows)
        .zip(input.par_chunks(in_len * rows))
        .try_for_each(|(os, xs)| {
            let mut scratch = vec![0.0f32; scratch_len];
            for (o, x) in os.chunks_exact_mut(out_len).zip(xs.chunks_exact(in_len)) {
                f(x, o, &mut scratch)?;
            }
            Ok::<_, NnError>(())
        })?;
    Array2::from_shape_vec((batch, out_len), out).map_err(|e| shape_err(context, "output", e))
}

impl ParamLayer for Conv2d {
    fn in_dim(&self) -> usize {
        self.input.len()
    }

    fn out_dim(&self) -> usize {
        self.output.len()
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
        check_cols("Conv2d::forward", &input, self.in_dim())?;
        let x = input.as_standard_layout();
        let xs = contiguous("Conv2d::forward", &x)?;
        let (din, dout, kk, l, co) = (
            self.in_dim(),
            self.out_dim(),
            self.patch_len(),
            self.positions(),
            self.out_channels(),
        );
        per_sample("Conv2d::forward", xs, din, dout, kk * l, |x, o, cols| {
            self.im2col_into(x, cols);
            let mut z = self.view_mut(co, l, o)?;
            for (mut row, &b) in z.rows_mut().into_iter().zip(self.bias.iter()) {
                row.fill(b);
            }
            general_mat_mul(1.0, &self.weight, &self.view(kk, l, cols)?, 1.0, &mut z);
            Ok(())
        })
    }

    fn backward_input(&self, grad_out: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_cols("Conv2d::backward_input", &grad_out, self.out_dim())?;
        let g = grad_out.as_standard_layout();
        let gs = contiguous("Conv2d::backward_input", &g)?;
        let (din, dout, kk, l, co) = (
            self.in_dim(),
            self.out_dim(),
            self.patch_len(),
            self.positions(),
            self.out_channels(),
        );
        per_sample(
            "Conv2d::backward_input",
            gs,
            dout,
            din,
            kk * l,
            |g, d, gcols| {
                let mut gc = self.view_mut(kk, l, gcols)?;
                general_mat_mul(1.0, &self.weight.t(), &self.view(co, l, g)?, 0.0, &mut gc);
                self.col2im_add(gcols, d);
                Ok(())
            },
        )
    }

    fn grads(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<ParamGrads> {
        check_pair(
            "Conv2d::grads",
            &input,
            self.in_dim(),
            &grad_out,
            self.out_dim(),
        )?;
        let (x, g) = (input.as_standard_layout(), grad_out.as_standard_layout());
        let (kk, l, co) = (self.patch_len(), self.positions(), self.out_channels());
        self.fold_samples(
            contiguous("Conv2d::grads", &x)?,
            contiguous("Conv2d::grads", &g)?,
            input.nrows(),
            || ParamGrads::zeros_like(self),
            |acc, cols, g| {
                let gv = self.view(co, l, g)?;
                general_mat_mul(1.0, &gv, &self.view(kk, l, cols)?.t(), 1.0, &mut acc.weight);
                acc.bias += &gv.sum_axis(ndarray::Axis(1));
                Ok(())
            },
            |mut a, b| {
                a.weight += &b.weight;
                a.bias += &b.bias;
                a
            },
        )
    }

    fn per_sample_grads(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<PerSampleGrads> {
        check_pair(
            "Conv2d::per_sample_grads",
            &input,
            self.in_dim(),
            &grad_out,
            self.out_dim(),
        )?;
        let (x, g) = (input.as_standard_layout(), grad_out.as_standard_layout());
        let (xs, gs) = (
            contiguous("Conv2d::per_sample_grads", &x)?,
            contiguous("Conv2d::per_sample_grads", &g)?,
        );
        let (din, dout, kk, l, co) = (
            self.in_dim(),
            self.out_dim(),
            self.patch_len(),
            self.positions(),
            self.out_channels(),
        );
        let batch = input.nrows();
        let mut w = vec![0.0f32; batch * co * kk];
        let mut b = vec![0.0f32; batch * co];
        let rows = chunk_rows(batch);
        w.par_chunks_mut(co * kk * rows)
            .zip(b.par_chunks_mut(co * rows))
            .zip(xs.par_chunks(din * rows).zip(gs.par_chunks(dout * rows)))
            .try_for_each(|((ws, bs), (xs, gs))| {
                let mut cols = vec![0.0f32; kk * l];
                for (((wi, bi), x), g) in ws
                    .chunks_exact_mut(co * kk)
                    .zip(bs.chunks_exact_mut(co))
                    .zip(xs.chunks_exact(din))
                    .zip(gs.chunks_exact(dout))
                {
                    self.im2col_into(x, &mut cols);
                    let gv = self.view(co, l, g)?;
                    general_mat_mul(
                        1.0,
                        &gv,
                        &self.view(kk, l, &cols)?.t(),
                        0.0,
                        &mut self.view_mut(co, kk, wi)?,
                    );
                    for (bj, grow) in bi.iter_mut().zip(gv.rows()) {
                        *bj = grow.sum();
                    }
                }
                Ok::<_, NnError>(())
            })?;
        Ok(PerSampleGrads {
            weight: Array3::from_shape_vec((batch, co, kk), w)
                .map_err(|e| shape_err("Conv2d", "grads", e))?,
            bias: Array2::from_shape_vec((batch, co), b)
                .map_err(|e| shape_err("Conv2d", "grads", e))?,
        })
    }

    fn per_sample_grads_into(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
        mut out: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        check_pair(
            "Conv2d::per_sample_grads_into",
            &input,
            self.in_dim(),
            &grad_out,
            self.out_dim(),
        )?;
        let (kk, l, co) = (self.patch_len(), self.positions(), self.out_channels());
        let wlen = co * kk;
        if out.dim() != (input.nrows(), wlen + co) {
            return Err(shape_err(
                "Conv2d::per_sample_grads_into",
                "(B, params)",
                format!("{:?}", out.dim()),
            ));
        }
        let (x, g) = (input.as_standard_layout(), grad_out.as_standard_layout());
        out.axis_iter_mut(ndarray::Axis(0))
            .into_par_iter()
            .zip(x.axis_iter(ndarray::Axis(0)))
            .zip(g.axis_iter(ndarray::Axis(0)))
            .try_for_each_init(
                || vec![0.0f32; kk * l],
                |cols, ((mut row, xi), gi)| {
                    let xs = xi
                        .as_slice()
                        .ok_or_else(|| shape_err("Conv2d", "contiguous input", "strided"))?;
                    let gs = gi
                        .as_slice()
                        .ok_or_else(|| shape_err("Conv2d", "contiguous gradient", "strided"))?;
                    self.im2col_into(xs, cols);
                    let gv = self.view(co, l, gs)?;
                    let dst = row
                        .as_slice_mut()
                        .ok_or_else(|| shape_err("Conv2d", "contiguous output row", "strided"))?;
                    let (w, b) = dst.split_at_mut(wlen);
                    general_mat_mul(
                        1.0,
                        &gv,
                        &self.view(kk, l, cols)?.t(),
                        0.0,
                        &mut self.view_mut(co, kk, w)?,
                    );
                    for (bj, grow) in b.iter_mut().zip(gv.rows()) {
                        *bj = grow.sum();
                    }
                    Ok::<_, NnError>(())
                },
            )
    }

    fn per_sample_sq_norms(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<Array1<f64>> {
        check_pair(
            "Conv2d::per_sample_sq_norms",
            &input,
            self.in_dim(),
            &grad_out,
            self.out_dim(),
        )?;
        let (x, g) = (input.as_standard_layout(), grad_out.as_standard_layout());
        let (xs, gs) = (
            contiguous("Conv2d::per_sample_sq_norms", &x)?,
            contiguous("Conv2d::per_sample_sq_norms", &g)?,
        );
        let (din, dout, kk, l, co) = (
            self.in_dim(),
            self.out_dim(),
            self.patch_len(),
            self.positions(),
            self.out_channels(),
        );
        let batch = input.nrows();
        let mut norms = vec![0.0f64; batch];
        let rows = chunk_rows(batch);
        norms
            .par_chunks_mut(rows)
            .zip(xs.par_chunks(din * rows).zip(gs.par_chunks(dout * rows)))
            .try_for_each(|(ns, (xs, gs))| {
                let mut cols = vec![0.0f32; kk * l];
                let mut wi = Array2::<f32>::zeros((co, kk));
                for ((n, x), g) in ns
                    .iter_mut()
                    .zip(xs.chunks_exact(din))
                    .zip(gs.chunks_exact(dout))
                {
                    self.im2col_into(x, &mut cols);
                    let gv = self.view(co, l, g)?;
                    general_mat_mul(1.0, &gv, &self.view(kk, l, &cols)?.t(), 0.0, &mut wi);
                    let bias_sq: f64 = gv
                        .rows()
                        .into_iter()
                        .map(|r| f64::from(r.sum()).powi(2))
                        .sum();
                    *n = super::sq_sum(wi.iter()) + bias_sq;
                }
                Ok::<_, NnError>(())
            })?;
        Ok(Array1::from(norms))
    }
}
