//! The data owner's examples: loading a source, keeping a prefix, standardizing, and a
//! digest that ties a model's progress to the exact data it was trained on.

use sphinx_nn::data::{DataSource, Dataset, Split};
use sphinx_nn::layers::{Crop, LayerSpec, Nonlinear};
use sphinx_nn::model::ModelSpec;

use crate::error::{ClientError, Result};

/// Loads `source` (`bundled`, `fashion-mnist` or a directory of IDX / CIFAR-10 files),
/// keeping the first `train` training and `test` held-out examples when given.
///
/// # Errors
/// [`ClientError::Nn`] from the loader; [`ClientError::Invalid`] for an empty split.
pub fn load(source: &str, train: Option<usize>, test: Option<usize>) -> Result<Split> {
    let Ok(src) = source.parse::<DataSource>();
    let mut split = src.load()?;
    if let Some(n) = train {
        split.train = split.train.head(n);
    }
    if let Some(n) = test {
        split.test = split.test.head(n);
    }
    if split.train.is_empty() || split.test.is_empty() {
        return Err(ClientError::Invalid(format!(
            "{source}: empty training or held-out split"
        )));
    }
    Ok(split)
}

/// Mean and standard deviation of all pixels of `data`.
#[must_use]
pub fn pixel_stats(data: &Dataset) -> [f32; 2] {
    let n = data.images.len().max(1) as f64;
    let mean = data.images.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = data
        .images
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    [mean as f32, var.sqrt().max(1e-6) as f32]
}

/// Mean and standard deviation of the pixels `spec` reads: a leading
/// [`LayerSpec::Crop`] drops the border before anything is learned, so its background
/// pixels must not dilute the statistics (with them, the standardized digits of
/// `crop-pool-mlp-40` are 1.26× larger and shifted, and the plaintext reference loses
/// 0.16 points of held-out accuracy over 16 seeds; docs/benchmarks.md).
///
/// # Errors
/// [`ClientError::Nn`] if `data` does not have `spec`'s input shape.
pub fn input_stats(data: &Dataset, spec: &ModelSpec) -> Result<[f32; 2]> {
    match spec.layers.first() {
        Some(&LayerSpec::Crop { border }) => {
            let crop = Crop::new(spec.input, border)?;
            let images = crop.forward(data.images.view())?;
            Ok(pixel_stats(&Dataset {
                images,
                labels: Vec::new(),
                shape: crop.output_shape(),
                num_classes: data.num_classes,
            }))
        }
        _ => Ok(pixel_stats(data)),
    }
}

/// `(x − mean) / std` on every pixel: centred inputs let plain SGD, the only optimizer
/// the server applies, take larger steps. The data owner applies the same map before
/// inference.
pub fn standardize(data: &mut Dataset, stats: Option<[f32; 2]>) {
    if let Some([mean, std]) = stats {
        data.images.mapv_inplace(|v| (v - mean) / std);
    }
}

/// SHA-256 of the images' bytes and the labels: a model's progress is valid only for the
/// data it was computed on.
#[must_use]
pub fn digest(data: &Dataset) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for v in &data.images {
        ctx.update(&v.to_le_bytes());
    }
    ctx.update(&data.labels);
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use sphinx_nn::layers::Shape;

    /// 4×4 images whose 1-pixel border is 0 and whose inner 2×2 holds 1, 3, 1, 3.
    fn framed() -> Dataset {
        let mut images = Array2::zeros((2, 16));
        for n in 0..2 {
            for (k, &j) in [5usize, 6, 9, 10].iter().enumerate() {
                images[[n, j]] = if k % 2 == 0 { 1.0 } else { 3.0 };
            }
        }
        Dataset {
            images,
            labels: vec![0, 1],
            shape: Shape::image(1, 4, 4),
            num_classes: 2,
        }
    }

    #[test]
    fn input_stats_ignore_a_cropped_border() {
        let data = framed();
        let cropped = ModelSpec {
            input: data.shape,
            layers: vec![LayerSpec::Crop { border: 1 }, LayerSpec::Flatten],
        };
        assert_eq!(input_stats(&data, &cropped).unwrap(), [2.0, 1.0]);
        // All 16 pixels: the zeros pull the mean down to 0.5.
        let whole = ModelSpec {
            input: data.shape,
            layers: vec![LayerSpec::Flatten],
        };
        assert_eq!(input_stats(&data, &whole).unwrap(), [0.5, 1.0]);
    }
}
