//! The data owner's examples: loading a source, keeping a prefix, standardizing, and a
//! digest that ties a model's progress to the exact data it was trained on.

use sphinx_nn::data::{DataSource, Dataset, Split};

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
