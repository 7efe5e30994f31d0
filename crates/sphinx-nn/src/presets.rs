//! Named architectures.
//!
//! | name | input | layers | parameters |
//! |---|---|---|---|
//! | `sphinx-mnist-cnn` | 1×28×28 | conv 5×5 16 → ReLU → avgpool 2 → conv 5×5 16 → ReLU → avgpool 2 → FC 100 → ReLU → FC 10 | 33,542 |
//! | `sphinx-mnist-cnn-tanh` | 1×28×28 | `sphinx-mnist-cnn` with tanh instead of ReLU | 33,542 |
//! | `sphinx-cifar10-cnn` | 3×32×32 | conv 5×5 16 → ReLU → avgpool 2 → conv 5×5 32 → ReLU → avgpool 2 → FC 100 → ReLU → FC 10 | 95,158 |
//! | `mlp-30` | 1×28×28 | FC 30 → ReLU → FC 10 | 23,860 |
//! | `mlp-100` | 1×28×28 | FC 100 → ReLU → FC 10 | 79,510 |
//! | `mlp-30-square` | 1×28×28 | FC 30 → Square → FC 10 | 23,860 |
//! | `mlp-100-square` | 1×28×28 | FC 100 → Square → FC 10 | 79,510 |
//! | `pool-mlp-30` | 1×28×28 | avgpool 2 → FC 30 → ReLU → FC 10 | 6,220 |
//! | `pool-mlp-40` | 1×28×28 | avgpool 2 → FC 40 → ReLU → FC 10 | 8,290 |
//! | `crop-pool-mlp-40` | 1×28×28 | crop 4 → avgpool 2 → FC 40 → ReLU → FC 10 | 4,450 |
//! | `lenet5` | 1×28×28 | conv 5×5 6 pad 2 → ReLU → avgpool 2 → conv 5×5 16 → ReLU → avgpool 2 → FC 120 → ReLU → FC 84 → ReLU → FC 10 | 61,706 |
//! | `scatternet-linear` | 1×28×28 | scattering J = 2, L = 8 (81×7×7) → group norm 27 → FC 10 | 39,700 |
//!
//! Convolutions have stride 1 and no padding unless stated; pooling windows are 2×2
//! with stride 2; a Flatten precedes the first fully connected layer.
//!
//! Choices:
//! - `sphinx-mnist-cnn` is the network of the Sphinx paper (DESIGN.md §6), exactly.
//! - `sphinx-mnist-cnn-tanh` is the same network with a bounded activation, which the
//!   literature reports DP-SGD trains better (Papernot et al., "Tempered sigmoid
//!   activations for deep learning with differential privacy", AAAI 2021); in our one
//!   Fashion-MNIST run at ε = 2 it did not beat ReLU (docs/benchmarks.md). The data owner
//!   evaluates activations in the clear in Sphinx, so tanh costs the protocol nothing.
//! - `sphinx-cifar10-cnn` keeps that network's pattern (two 5×5 conv + ReLU + 2×2 average
//!   pool blocks, FC 100, FC 10) and widens only the second convolution to 32 channels
//!   for the three-channel 32×32 input: about 2.3 M multiply-adds per image, so the
//!   encrypted protocol stays affordable (a VGG-style net would be 100× more).
//! - `mlp-30`/`mlp-100` are SEALion's DNN-30/DNN-100 shapes (784-30-10, 784-100-10) with
//!   ReLU, because in Sphinx the data owner evaluates activations in the clear, so exact
//!   ReLU costs nothing extra and trains better. SEALion's own non-interactive HE
//!   inference needs a polynomial; `mlp-30-square`/`mlp-100-square` are those variants
//!   with the square activation.
//! - `pool-mlp-30` is `mlp-30` on the 14×14 average-pooled image: the data owner pools
//!   in the clear before encrypting (a parameter-free first layer runs on the client), so
//!   the encrypted first layer has 196 inputs instead of 784: about a quarter of the
//!   ciphertexts per step, and under DP-SGD a quarter of the weights to add noise to.
//!   `pool-mlp-40` is the same with 40 hidden units: under DP-SGD on the 8,000-digit
//!   sample it is about 0.3 points more accurate than `pool-mlp-30` for 1.4× the
//!   encrypted step.
//! - `crop-pool-mlp-40`, the default model of `sphinx demo` (README, "Why this default"),
//!   first drops the 4-pixel border ([`LayerSpec::Crop`]): MNIST digits are centred in a
//!   20×20 box, so the border is nearly always background. The encrypted first layer
//!   then has 100 inputs instead of 196, which halves the per-sample-gradient
//!   ciphertexts of a step, and DP-SGD adds noise to 4,400 weights instead of 8,240; the
//!   saving buys more steps, which under DP on the 8,000-digit sample gain more than the
//!   border pixels lose.
//! - `lenet5` is LeCun et al.'s LeNet-5 layout (6 and 16 channels, FC 120-84-10, the first
//!   convolution padded so 28×28 behaves like the original 32×32 input), with ReLU and
//!   average pooling instead of the scaled tanh and trainable subsampling.
//! - `scatternet-linear` is the "ScatterNet + linear" model of Tramèr & Boneh,
//!   "Differentially private learning needs better features (or much more data)",
//!   ICLR 2021: a fixed scattering transform ([`crate::layers::scatter`], 2 scales,
//!   8 angles: 81 channels of 7×7), group normalization in 27 groups of 3 channels
//!   (per sample, no learned scale, so it spends no privacy), and one linear layer. Only
//!   the linear layer is trained, which is what makes it the strongest of our models
//!   under DP-SGD (docs/benchmarks.md); `sphinx baseline train` computes the fixed
//!   features once per run. In the encrypted protocol the transform would be the data
//!   owner's (it precedes every trainable layer), and the server sees a linear model.

use std::str::FromStr;

use crate::error::NnError;
use crate::layers::{LayerSpec, Shape};
use crate::model::ModelSpec;

/// A named architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Preset {
    /// The Sphinx paper's MNIST CNN.
    SphinxMnistCnn,
    /// The same with tanh activations (for DP-SGD).
    SphinxMnistCnnTanh,
    /// Small CNN for CIFAR-10 in the same style.
    SphinxCifar10Cnn,
    /// 784-30-10, ReLU.
    Mlp30,
    /// 784-100-10, ReLU.
    Mlp100,
    /// 784-30-10, square activation.
    Mlp30Square,
    /// 784-100-10, square activation.
    Mlp100Square,
    /// LeNet-5 (ReLU, average pooling).
    Lenet5,
    /// 2×2 average pooling of the 28×28 input, then 196-30-10, ReLU.
    PoolMlp30,
    /// 2×2 average pooling of the 28×28 input, then 196-40-10, ReLU.
    PoolMlp40,
    /// The central 20×20 pixels, 2×2 average pooling, then 100-40-10, ReLU.
    CropPoolMlp40,
    /// Scattering features, group norm, linear classifier (Tramèr & Boneh 2021).
    ScatternetLinear,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 12] = [
        Self::SphinxMnistCnn,
        Self::SphinxMnistCnnTanh,
        Self::SphinxCifar10Cnn,
        Self::Mlp30,
        Self::Mlp100,
        Self::Mlp30Square,
        Self::Mlp100Square,
        Self::Lenet5,
        Self::PoolMlp30,
        Self::PoolMlp40,
        Self::CropPoolMlp40,
        Self::ScatternetLinear,
    ];

    /// Every preset's name, in [`Self::ALL`] order.
    pub const NAMES: [&'static str; 12] = [
        "sphinx-mnist-cnn",
        "sphinx-mnist-cnn-tanh",
        "sphinx-cifar10-cnn",
        "mlp-30",
        "mlp-100",
        "mlp-30-square",
        "mlp-100-square",
        "lenet5",
        "pool-mlp-30",
        "pool-mlp-40",
        "crop-pool-mlp-40",
        "scatternet-linear",
    ];

    /// The preset's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::SphinxMnistCnn => "sphinx-mnist-cnn",
            Self::SphinxMnistCnnTanh => "sphinx-mnist-cnn-tanh",
            Self::SphinxCifar10Cnn => "sphinx-cifar10-cnn",
            Self::Mlp30 => "mlp-30",
            Self::Mlp100 => "mlp-100",
            Self::Mlp30Square => "mlp-30-square",
            Self::Mlp100Square => "mlp-100-square",
            Self::Lenet5 => "lenet5",
            Self::PoolMlp30 => "pool-mlp-30",
            Self::PoolMlp40 => "pool-mlp-40",
            Self::CropPoolMlp40 => "crop-pool-mlp-40",
            Self::ScatternetLinear => "scatternet-linear",
        }
    }

    /// The architecture.
    pub fn spec(self) -> ModelSpec {
        use LayerSpec::{AvgPool2d, Flatten, Relu, Square};
        if self == Self::SphinxMnistCnnTanh {
            let mut spec = Self::SphinxMnistCnn.spec();
            for layer in &mut spec.layers {
                if *layer == Relu {
                    *layer = LayerSpec::Tanh;
                }
            }
            return spec;
        }
        let conv = |in_channels, out_channels, padding| LayerSpec::Conv2d {
            in_channels,
            out_channels,
            kernel: 5,
            stride: 1,
            padding,
        };
        let fc = |in_features, out_features| LayerSpec::Linear {
            in_features,
            out_features,
        };
        let pool = AvgPool2d {
            kernel: 2,
            stride: 2,
        };
        let mnist = Shape::image(1, 28, 28);
        let (input, layers) = match self {
            Self::SphinxMnistCnn | Self::SphinxMnistCnnTanh => (
                mnist,
                vec![
                    conv(1, 16, 0),
                    Relu,
                    pool.clone(),
                    conv(16, 16, 0),
                    Relu,
                    pool,
                    Flatten,
                    fc(256, 100),
                    Relu,
                    fc(100, 10),
                ],
            ),
            Self::SphinxCifar10Cnn => (
                Shape::image(3, 32, 32),
                vec![
                    conv(3, 16, 0),
                    Relu,
                    pool.clone(),
                    conv(16, 32, 0),
                    Relu,
                    pool,
                    Flatten,
                    fc(800, 100),
                    Relu,
                    fc(100, 10),
                ],
            ),
            Self::Mlp30 => (mnist, vec![Flatten, fc(784, 30), Relu, fc(30, 10)]),
            Self::PoolMlp30 => (
                mnist,
                vec![pool.clone(), Flatten, fc(196, 30), Relu, fc(30, 10)],
            ),
            Self::PoolMlp40 => (
                mnist,
                vec![pool.clone(), Flatten, fc(196, 40), Relu, fc(40, 10)],
            ),
            Self::CropPoolMlp40 => (
                mnist,
                vec![
                    LayerSpec::Crop { border: 4 },
                    pool.clone(),
                    Flatten,
                    fc(100, 40),
                    Relu,
                    fc(40, 10),
                ],
            ),
            Self::Mlp100 => (mnist, vec![Flatten, fc(784, 100), Relu, fc(100, 10)]),
            Self::Mlp30Square => (mnist, vec![Flatten, fc(784, 30), Square, fc(30, 10)]),
            Self::Mlp100Square => (mnist, vec![Flatten, fc(784, 100), Square, fc(100, 10)]),
            Self::Lenet5 => (
                mnist,
                vec![
                    conv(1, 6, 2),
                    Relu,
                    pool.clone(),
                    conv(6, 16, 0),
                    Relu,
                    pool,
                    Flatten,
                    fc(400, 120),
                    Relu,
                    fc(120, 84),
                    Relu,
                    fc(84, 10),
                ],
            ),
            Self::ScatternetLinear => (
                mnist,
                vec![
                    LayerSpec::Scattering {
                        scales: 2,
                        angles: 8,
                    },
                    LayerSpec::GroupNorm { groups: 27 },
                    Flatten,
                    fc(81 * 7 * 7, 10),
                ],
            ),
        };
        ModelSpec { input, layers }
    }
}

impl FromStr for Preset {
    type Err = NnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| NnError::UnknownPreset(s.to_owned()))
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
