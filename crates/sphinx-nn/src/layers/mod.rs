//! Layers: the parameterized linear ones ([`Conv2d`], [`Linear`]) and the parameter-free
//! ones ([`Relu`], [`Tanh`], [`Square`], [`AvgPool2d`], [`Crop`], [`Flatten`],
//! [`GroupNorm`], and the fixed [`Scattering`] feature extractor).
//!
//! # Data layout
//! Every layer maps a batch `x` of shape `(B, in_dim)` to `(B, out_dim)`: one row per
//! sample, spatial tensors flattened channel-major (`C × H × W`, row-major within a
//! channel, as in PyTorch). Keeping the batch on the first axis and every feature on the
//! second is the layout the encrypted protocol packs along (slot *j* = sample *j*), and
//! it lets the layers stay stateless: a layer never caches its input, the caller passes
//! `(input activation, output gradient)` pairs to the backward functions.
//!
//! # The split the encrypted protocol relies on
//! - [`ParamLayer`] (Conv2d, Linear) is affine, `z = W·a + b`: the part the server
//!   evaluates homomorphically. It exposes `W` as a matrix (rows = output units or output
//!   channels, columns = fan-in, for convolutions in the im2col order `(c_in, ky, kx)`) and
//!   `b`, and computes gradients from `(input, output gradient)` pairs: summed over the
//!   batch, per sample, or just per-sample squared norms (for clipping).
//! - [`Nonlinear`] (ReLU, tanh, Square, average pooling, cropping, flatten) has no parameters: the part
//!   the client evaluates in the clear, forward and backward, separately from the linear
//!   layers.

mod activation;
mod conv;
mod crop;
mod linear;
mod norm;
mod pool;
pub mod scatter;

use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayViewMut2, Axis};
use serde::{Deserialize, Serialize};

pub use activation::{Flatten, Relu, Square, Tanh};
pub use conv::Conv2d;
pub use crop::Crop;
pub use linear::Linear;
pub use norm::{GROUP_NORM_EPS, GroupNorm};
pub use pool::AvgPool2d;
pub use scatter::Scattering;

use crate::error::{NnError, Result, shape_err};

/// The shape of one sample: channels × height × width. Flat feature vectors are
/// `n × 1 × 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shape {
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
}

impl Shape {
    /// An image shape.
    pub const fn image(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
        }
    }

    /// A flat vector of `n` features.
    pub const fn flat(n: usize) -> Self {
        Self {
            channels: n,
            height: 1,
            width: 1,
        }
    }

    /// Number of scalars per sample.
    pub const fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether the shape holds no scalar.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is a flat vector (`height == width == 1`).
    pub const fn is_flat(&self) -> bool {
        self.height == 1 && self.width == 1
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}×{}×{}", self.channels, self.height, self.width)
    }
}

/// Gradients of one parameterized layer, summed (or averaged) over a batch, or of one
/// sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamGrads {
    /// Gradient of `W`, same shape as [`ParamLayer::weight`].
    pub weight: Array2<f32>,
    /// Gradient of `b`, same shape as [`ParamLayer::bias`].
    pub bias: Array1<f32>,
}

impl ParamGrads {
    /// All-zero gradients for a layer.
    pub fn zeros_like(layer: &dyn ParamLayer) -> Self {
        Self {
            weight: Array2::zeros(layer.weight().raw_dim()),
            bias: Array1::zeros(layer.bias().len()),
        }
    }

    /// Squared L2 norm of weight and bias gradients together.
    pub fn sq_norm(&self) -> f64 {
        sq_sum(self.weight.iter()) + sq_sum(self.bias.iter())
    }
}

/// Per-sample gradients of one parameterized layer for a batch of `B` samples.
#[derive(Debug, Clone, PartialEq)]
pub struct PerSampleGrads {
    /// `(B, rows, cols)`: sample `i`'s gradient of `W` is `weight[i]`.
    pub weight: Array3<f32>,
    /// `(B, rows)`: sample `i`'s gradient of `b` is `bias[i]`.
    pub bias: Array2<f32>,
}

impl PerSampleGrads {
    /// Number of samples.
    pub fn batch_size(&self) -> usize {
        self.bias.nrows()
    }

    /// Sample `i`'s gradients, or `None` if `i` is out of range.
    pub fn sample(&self, i: usize) -> Option<ParamGrads> {
        (i < self.batch_size()).then(|| ParamGrads {
            weight: self.weight.index_axis(Axis(0), i).to_owned(),
            bias: self.bias.index_axis(Axis(0), i).to_owned(),
        })
    }
}

/// An affine layer `z = W·a + b` with trainable `W` and `b` (Conv2d, Linear).
///
/// All batch functions take `(B, in_dim)` / `(B, out_dim)` arrays and return
/// [`NnError::Shape`] when the dimensions disagree. Gradients are those of the *sum* of
/// the per-sample losses whose output gradients are passed in.
pub trait ParamLayer: Send + Sync {
    /// Scalars per input sample.
    fn in_dim(&self) -> usize;
    /// Scalars per output sample.
    fn out_dim(&self) -> usize;
    /// The weight matrix `W`: `(out_features, in_features)` for Linear,
    /// `(out_channels, in_channels·k·k)` for Conv2d.
    fn weight(&self) -> &Array2<f32>;
    /// The bias `b`: one entry per output unit (Linear) or output channel (Conv2d).
    fn bias(&self) -> &Array1<f32>;
    /// Mutable `W` (shape must be kept).
    fn weight_mut(&mut self) -> &mut Array2<f32>;
    /// Mutable `b` (shape must be kept).
    fn bias_mut(&mut self) -> &mut Array1<f32>;
    /// `z = W·a + b` for every sample.
    fn forward(&self, input: ArrayView2<'_, f32>) -> Result<Array2<f32>>;
    /// Gradient with respect to the input, `Wᵀ·δ`, for every sample.
    fn backward_input(&self, grad_out: ArrayView2<'_, f32>) -> Result<Array2<f32>>;
    /// Gradients of `W` and `b` summed over the batch.
    fn grads(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<ParamGrads>;
    /// Gradients of `W` and `b` for every sample separately.
    fn per_sample_grads(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<PerSampleGrads>;
    /// Writes each sample's gradient into the matching row of `out`
    /// `(B, weight.len() + bias.len())`: `W` row-major, then `b` (the layout of
    /// [`crate::model::Gradients::to_flat`]), without intermediate arrays.
    ///
    /// # Errors
    /// [`NnError::Shape`] if the arrays do not fit the layer.
    fn per_sample_grads_into(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
        out: ArrayViewMut2<'_, f32>,
    ) -> Result<()>;
    /// Squared L2 norm of each sample's gradient (`W` and `b` together), without
    /// materializing all per-sample gradients at once.
    fn per_sample_sq_norms(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<Array1<f64>>;
}

/// A parameter-free layer: evaluated by the data owner in the encrypted protocol.
pub trait Nonlinear: Send + Sync {
    /// Scalars per input sample.
    fn in_dim(&self) -> usize;
    /// Scalars per output sample.
    fn out_dim(&self) -> usize;
    /// `a = f(z)` for every sample.
    fn forward(&self, input: ArrayView2<'_, f32>) -> Result<Array2<f32>>;
    /// Gradient with respect to the input given the input `z` and the output gradient.
    fn backward(
        &self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<Array2<f32>>;
}

/// Serializable description of one layer (the architecture JSON lists these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// 2-D convolution with a square kernel, zero padding.
    Conv2d {
        /// Input channels (must match the incoming shape).
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel side.
        kernel: usize,
        /// Stride (both axes).
        stride: usize,
        /// Zero padding (each side, both axes).
        padding: usize,
    },
    /// Fully connected layer (input must be flat).
    Linear {
        /// Input features (must match the incoming shape).
        in_features: usize,
        /// Output features.
        out_features: usize,
    },
    /// `max(0, z)`.
    Relu,
    /// `z²` (HE-friendly activation).
    Square,
    /// `tanh(z)` (bounded activation, for DP-SGD).
    Tanh,
    /// Average pooling with a square window.
    AvgPool2d {
        /// Window side.
        kernel: usize,
        /// Stride (both axes).
        stride: usize,
    },
    /// Drops `border` rows and columns on each side of every channel.
    Crop {
        /// Pixels dropped on each side.
        border: usize,
    },
    /// `C×H×W → (C·H·W)×1×1` (the data layout is unchanged).
    Flatten,
    /// Group normalization without affine part (per sample, spends no privacy).
    GroupNorm {
        /// Number of channel groups (must divide the channels).
        groups: usize,
    },
    /// The scattering transform ([`scatter`]): a fixed feature extractor, allowed only
    /// before every trainable layer (it has no backward pass).
    Scattering {
        /// Number of scales `J` (output subsampled by `2^J`).
        scales: usize,
        /// Number of wavelet angles `L`.
        angles: usize,
    },
}

impl LayerSpec {
    /// Whether the layer has trainable parameters.
    pub fn is_param(&self) -> bool {
        matches!(self, Self::Conv2d { .. } | Self::Linear { .. })
    }

    /// Output shape for a given input shape.
    ///
    /// # Errors
    /// [`NnError::Architecture`] if the layer cannot take that input.
    pub fn output_shape(&self, input: Shape) -> Result<Shape> {
        match *self {
            Self::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
            } => {
                if in_channels != input.channels {
                    return Err(NnError::Architecture(format!(
                        "conv2d expects {in_channels} input channels, got shape {input}"
                    )));
                }
                let (h, w) = conv_out(input, kernel, stride, padding, "conv2d")?;
                if out_channels == 0 {
                    return Err(NnError::Architecture(
                        "conv2d with 0 output channels".into(),
                    ));
                }
                Ok(Shape::image(out_channels, h, w))
            }
            Self::Linear {
                in_features,
                out_features,
            } => {
                if !input.is_flat() || input.len() != in_features {
                    return Err(NnError::Architecture(format!(
                        "linear expects a flat input of {in_features} features, got shape {input}"
                    )));
                }
                if out_features == 0 {
                    return Err(NnError::Architecture(
                        "linear with 0 output features".into(),
                    ));
                }
                Ok(Shape::flat(out_features))
            }
            Self::Relu | Self::Square | Self::Tanh => Ok(input),
            Self::AvgPool2d { kernel, stride } => {
                let (h, w) = conv_out(input, kernel, stride, 0, "avg_pool2d")?;
                Ok(Shape::image(input.channels, h, w))
            }
            Self::Crop { border } => {
                let keep = |side: usize| {
                    border
                        .checked_mul(2)
                        .and_then(|b| side.checked_sub(b))
                        .filter(|&k| k > 0)
                };
                match (keep(input.height), keep(input.width)) {
                    (Some(h), Some(w)) if input.channels > 0 => {
                        Ok(Shape::image(input.channels, h, w))
                    }
                    _ => Err(NnError::Architecture(format!(
                        "crop: a border of {border} leaves nothing of input {input}"
                    ))),
                }
            }
            Self::Flatten => Ok(Shape::flat(input.len())),
            Self::GroupNorm { groups } => {
                GroupNorm::new(input, groups)?;
                Ok(input)
            }
            Self::Scattering { scales, angles } => scatter::output_shape(input, scales, angles),
        }
    }
}

fn conv_out(
    input: Shape,
    kernel: usize,
    stride: usize,
    padding: usize,
    what: &str,
) -> Result<(usize, usize)> {
    if kernel == 0 || stride == 0 {
        return Err(NnError::Architecture(format!(
            "{what}: kernel and stride must be positive"
        )));
    }
    let (h, w) = (input.height + 2 * padding, input.width + 2 * padding);
    if kernel > h || kernel > w || input.channels == 0 {
        return Err(NnError::Architecture(format!(
            "{what}: kernel {kernel} (padding {padding}) does not fit input {input}"
        )));
    }
    Ok(((h - kernel) / stride + 1, (w - kernel) / stride + 1))
}

/// A built layer with its parameters.
#[derive(Debug, Clone)]
pub enum Layer {
    /// See [`Conv2d`].
    Conv2d(Conv2d),
    /// See [`Linear`].
    Linear(Linear),
    /// See [`Relu`].
    Relu(Relu),
    /// See [`Square`].
    Square(Square),
    /// See [`Tanh`].
    Tanh(Tanh),
    /// See [`AvgPool2d`].
    AvgPool2d(AvgPool2d),
    /// See [`Crop`].
    Crop(Crop),
    /// See [`Flatten`].
    Flatten(Flatten),
    /// See [`GroupNorm`].
    GroupNorm(GroupNorm),
    /// See [`Scattering`].
    Scattering(Scattering),
}

impl Layer {
    /// Builds a zero-initialized layer from its description and input shape.
    ///
    /// # Errors
    /// [`NnError::Architecture`] if the description does not fit the input shape.
    pub fn from_spec(spec: &LayerSpec, input: Shape) -> Result<Self> {
        let out = spec.output_shape(input)?;
        Ok(match *spec {
            LayerSpec::Conv2d {
                out_channels,
                kernel,
                stride,
                padding,
                ..
            } => Self::Conv2d(Conv2d::new(input, out_channels, kernel, stride, padding)?),
            LayerSpec::Linear {
                in_features,
                out_features,
            } => Self::Linear(Linear::new(in_features, out_features)?),
            LayerSpec::Relu => Self::Relu(Relu::new(input.len())),
            LayerSpec::Square => Self::Square(Square::new(input.len())),
            LayerSpec::Tanh => Self::Tanh(Tanh::new(input.len())),
            LayerSpec::AvgPool2d { kernel, stride } => {
                Self::AvgPool2d(AvgPool2d::new(input, kernel, stride)?)
            }
            LayerSpec::Crop { border } => Self::Crop(Crop::new(input, border)?),
            LayerSpec::Flatten => Self::Flatten(Flatten::new(out.len())),
            LayerSpec::GroupNorm { groups } => Self::GroupNorm(GroupNorm::new(input, groups)?),
            LayerSpec::Scattering { scales, angles } => {
                Self::Scattering(Scattering::new(input, scales, angles)?)
            }
        })
    }

    /// The description of this layer.
    pub fn spec(&self) -> LayerSpec {
        match self {
            Self::Conv2d(c) => LayerSpec::Conv2d {
                in_channels: c.input_shape().channels,
                out_channels: c.out_channels(),
                kernel: c.kernel(),
                stride: c.stride(),
                padding: c.padding(),
            },
            Self::Linear(l) => LayerSpec::Linear {
                in_features: l.in_dim(),
                out_features: l.out_dim(),
            },
            Self::Relu(_) => LayerSpec::Relu,
            Self::Square(_) => LayerSpec::Square,
            Self::Tanh(_) => LayerSpec::Tanh,
            Self::AvgPool2d(p) => LayerSpec::AvgPool2d {
                kernel: p.kernel(),
                stride: p.stride(),
            },
            Self::Crop(c) => LayerSpec::Crop { border: c.border() },
            Self::Flatten(_) => LayerSpec::Flatten,
            Self::GroupNorm(g) => LayerSpec::GroupNorm { groups: g.groups() },
            Self::Scattering(s) => LayerSpec::Scattering {
                scales: s.scales(),
                angles: s.angles(),
            },
        }
    }

    /// The layer as a parameterized (linear) layer, if it is one.
    pub fn as_param(&self) -> Option<&dyn ParamLayer> {
        match self {
            Self::Conv2d(c) => Some(c),
            Self::Linear(l) => Some(l),
            _ => None,
        }
    }

    /// Mutable access to a parameterized layer.
    pub fn as_param_mut(&mut self) -> Option<&mut dyn ParamLayer> {
        match self {
            Self::Conv2d(c) => Some(c),
            Self::Linear(l) => Some(l),
            _ => None,
        }
    }

    /// The layer as a parameter-free layer, if it is one.
    pub fn as_nonlinear(&self) -> Option<&dyn Nonlinear> {
        match self {
            Self::Relu(l) => Some(l),
            Self::Square(l) => Some(l),
            Self::Tanh(l) => Some(l),
            Self::AvgPool2d(l) => Some(l),
            Self::Crop(l) => Some(l),
            Self::Flatten(l) => Some(l),
            Self::GroupNorm(l) => Some(l),
            Self::Scattering(l) => Some(l),
            _ => None,
        }
    }

    /// Scalars per input sample.
    pub fn in_dim(&self) -> usize {
        match (self.as_param(), self.as_nonlinear()) {
            (Some(p), _) => p.in_dim(),
            (_, Some(n)) => n.in_dim(),
            _ => 0,
        }
    }

    /// Scalars per output sample.
    pub fn out_dim(&self) -> usize {
        match (self.as_param(), self.as_nonlinear()) {
            (Some(p), _) => p.out_dim(),
            (_, Some(n)) => n.out_dim(),
            _ => 0,
        }
    }

    /// Forward pass for a batch.
    ///
    /// # Errors
    /// [`NnError::Shape`] if `input` is not `(B, in_dim)`.
    pub fn forward(&self, input: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        match (self.as_param(), self.as_nonlinear()) {
            (Some(p), _) => p.forward(input),
            (_, Some(n)) => n.forward(input),
            _ => Err(NnError::Architecture(
                "layer is neither linear nor nonlinear".into(),
            )),
        }
    }
}

pub(crate) fn check_cols(context: &'static str, x: &ArrayView2<'_, f32>, dim: usize) -> Result<()> {
    if x.ncols() != dim {
        return Err(shape_err(
            context,
            format!("(B, {dim})"),
            format!("{:?}", x.shape()),
        ));
    }
    Ok(())
}

pub(crate) fn check_pair(
    context: &'static str,
    input: &ArrayView2<'_, f32>,
    in_dim: usize,
    grad_out: &ArrayView2<'_, f32>,
    out_dim: usize,
) -> Result<()> {
    check_cols(context, input, in_dim)?;
    check_cols(context, grad_out, out_dim)?;
    if input.nrows() != grad_out.nrows() {
        return Err(shape_err(
            context,
            format!("{} gradient rows", input.nrows()),
            format!("{} rows", grad_out.nrows()),
        ));
    }
    Ok(())
}

/// Rows per rayon task: a few tasks per thread balance load without drowning small
/// batches in scheduling overhead.
pub(crate) fn chunk_rows(batch: usize) -> usize {
    let tasks = rayon::current_num_threads().max(1) * 4;
    batch.div_ceil(tasks).max(1)
}

pub(crate) fn sq_sum<'a>(it: impl Iterator<Item = &'a f32>) -> f64 {
    it.map(|&v| f64::from(v) * f64::from(v)).sum()
}
