//! Datasets: IDX (MNIST, Fashion-MNIST) and CIFAR-10 binary readers, the bundled MNIST
//! sample, and discovery of a dataset in a directory.
//!
//! Images become rows of an `(N, C·H·W)` `f32` matrix with values in `[0, 1]`
//! (byte / 255), channel-major, the layout of [`crate::layers`].

pub mod cifar;
pub mod idx;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use ndarray::{Array2, Axis};

use crate::error::{DatasetFault, NnError, Result};
use crate::layers::Shape;

/// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Number of classes of MNIST, Fashion-MNIST and CIFAR-10.
pub const CLASSES: usize = 10;

/// Labelled images.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `(N, C·H·W)`, values in `[0, 1]`.
    pub images: Array2<f32>,
    /// `N` labels in `0..num_classes`.
    pub labels: Vec<u8>,
    /// Shape of one image.
    pub shape: Shape,
    /// Number of classes.
    pub num_classes: usize,
}

impl Dataset {
    /// Builds a dataset from bytes, checking sizes and labels.
    ///
    /// # Errors
    /// [`NnError::Dataset`] with [`DatasetFault::CountMismatch`] or
    /// [`DatasetFault::BadLabel`], attributed to `path`.
    pub fn from_bytes(
        pixels: &[u8],
        labels: Vec<u8>,
        shape: Shape,
        num_classes: usize,
        path: &Path,
    ) -> Result<Self> {
        let per = shape.len().max(1);
        let images = pixels.len() / per;
        if !pixels.len().is_multiple_of(per) || images != labels.len() {
            return Err(NnError::Dataset {
                path: path.to_path_buf(),
                reason: DatasetFault::CountMismatch {
                    images,
                    labels: labels.len(),
                },
            });
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| usize::from(l) >= num_classes)
        {
            return Err(NnError::Dataset {
                path: path.to_path_buf(),
                reason: DatasetFault::BadLabel {
                    index,
                    label,
                    classes: num_classes,
                },
            });
        }
        let data: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
        let images = Array2::from_shape_vec((images, per), data)
            .map_err(|e| crate::error::shape_err("Dataset::from_bytes", per, e))?;
        Ok(Self {
            images,
            labels,
            shape,
            num_classes,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The first `n` examples (all if `n ≥ len`).
    pub fn head(&self, n: usize) -> Self {
        let n = n.min(self.len());
        Self {
            images: self.images.slice(ndarray::s![..n, ..]).to_owned(),
            labels: self.labels[..n].to_vec(),
            shape: self.shape,
            num_classes: self.num_classes,
        }
    }

    /// Gathers the examples at `indices` into a batch.
    ///
    /// # Errors
    /// [`NnError::Shape`] if an index is out of range.
    pub fn batch(&self, indices: &[usize]) -> Result<(Array2<f32>, Vec<u8>)> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(crate::error::shape_err(
                "Dataset::batch",
                format!("index < {}", self.len()),
                bad,
            ));
        }
        let x = self.images.select(Axis(0), indices);
        let y = indices.iter().map(|&i| self.labels[i]).collect();
        Ok((x, y))
    }
}

/// A training split and a held-out test split.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// A short description (`"bundled MNIST sample"`, a directory...).
    pub name: String,
    /// Training examples.
    pub train: Dataset,
    /// Held-out examples.
    pub test: Dataset,
}

fn idx_dataset(images: &[u8], labels: &[u8], ipath: &Path, lpath: &Path) -> Result<Dataset> {
    let img = idx::parse_images(images, ipath)?;
    let lab = idx::parse_labels(labels, lpath)?;
    if img.count != lab.len() {
        return Err(NnError::Dataset {
            path: lpath.to_path_buf(),
            reason: DatasetFault::CountMismatch {
                images: img.count,
                labels: lab.len(),
            },
        });
    }
    Dataset::from_bytes(
        &img.pixels,
        lab,
        Shape::image(1, img.rows, img.cols),
        CLASSES,
        ipath,
    )
}

/// Loads an IDX image file and its label file (each gzipped or raw).
///
/// # Errors
/// [`NnError::Io`] and [`NnError::Dataset`] for unreadable or malformed files.
pub fn load_idx(images: &Path, labels: &Path) -> Result<Dataset> {
    idx_dataset(
        &idx::read_maybe_gz(images)?,
        &idx::read_maybe_gz(labels)?,
        images,
        labels,
    )
}

/// Finds `<prefix>-<kind>-idx<d>-ubyte` (also `.` instead of the last `-`, optionally
/// `.gz`) in `dir`.
fn find_idx(dir: &Path, prefix: &str, kind: &str, d: u8) -> Option<PathBuf> {
    [
        format!("{prefix}-{kind}-idx{d}-ubyte"),
        format!("{prefix}-{kind}.idx{d}-ubyte"),
    ]
    .into_iter()
    .flat_map(|n| [format!("{n}.gz"), n])
    .map(|n| dir.join(n))
    .find(|p| p.is_file())
}

/// Loads the dataset in `dir`: either the four MNIST-style IDX files
/// (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-…`) or
/// CIFAR-10 binary batches (`data_batch_*.bin` and `test_batch.bin`, directly in `dir`
/// or in its `cifar-10-batches-bin/`).
///
/// # Errors
/// [`NnError::DatasetNotFound`] if neither layout is present, otherwise as the readers.
pub fn load_dir(dir: &Path) -> Result<Split> {
    let name = dir.display().to_string();
    let idx_files =
        ["train", "t10k"].map(|p| (find_idx(dir, p, "images", 3), find_idx(dir, p, "labels", 1)));
    if let [(Some(tri), Some(trl)), (Some(tei), Some(tel))] = idx_files {
        return Ok(Split {
            name,
            train: load_idx(&tri, &trl)?,
            test: load_idx(&tei, &tel)?,
        });
    }
    for d in [dir.to_path_buf(), dir.join("cifar-10-batches-bin")] {
        if d.join("test_batch.bin").is_file() {
            return load_cifar_dir(&d).map(|s| Split {
                name: name.clone(),
                ..s
            });
        }
    }
    Err(NnError::DatasetNotFound {
        path: dir.to_path_buf(),
        reason: "expected train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], \
                 t10k-labels-idx1-ubyte[.gz] (MNIST/Fashion-MNIST) or data_batch_N.bin + test_batch.bin (CIFAR-10)"
            .into(),
    })
}

fn load_cifar_files(paths: &[PathBuf]) -> Result<Dataset> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for p in paths {
        let bytes = std::fs::read(p).map_err(|source| NnError::Io {
            path: p.clone(),
            source,
        })?;
        let (px, lb) = cifar::parse_batch(&bytes, p)?;
        pixels.extend(px);
        labels.extend(lb);
    }
    let first = paths.first().cloned().unwrap_or_default();
    Dataset::from_bytes(
        &pixels,
        labels,
        Shape::image(3, cifar::SIDE, cifar::SIDE),
        cifar::CLASSES,
        &first,
    )
}

fn load_cifar_dir(dir: &Path) -> Result<Split> {
    let train: Vec<PathBuf> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .filter(|p| p.is_file())
        .collect();
    if train.is_empty() {
        return Err(NnError::DatasetNotFound {
            path: dir.to_path_buf(),
            reason: "test_batch.bin without any data_batch_N.bin".into(),
        });
    }
    Ok(Split {
        name: dir.display().to_string(),
        train: load_cifar_files(&train)?,
        test: load_cifar_files(&[dir.join("test_batch.bin")])?,
    })
}

const SAMPLE_TRAIN_IMAGES: &[u8] =
    include_bytes!("../../../../data/mnist-sample/train-images-idx3-ubyte.gz");
const SAMPLE_TRAIN_LABELS: &[u8] =
    include_bytes!("../../../../data/mnist-sample/train-labels-idx1-ubyte.gz");
const SAMPLE_TEST_IMAGES: &[u8] =
    include_bytes!("../../../../data/mnist-sample/t10k-images-idx3-ubyte.gz");
const SAMPLE_TEST_LABELS: &[u8] =
    include_bytes!("../../../../data/mnist-sample/t10k-labels-idx1-ubyte.gz");

/// The bundled sample of 10,000 real MNIST digits (compiled into the library from
/// `data/mnist-sample/`): 8,000 training and 2,000 held-out images; provenance, split
/// and licence in `data/README.md`.
///
/// # Errors
/// Only if the embedded files were corrupted at build time ([`NnError::Dataset`]).
pub fn bundled_mnist_sample() -> Result<Split> {
    let load = |img: &[u8], lab: &[u8], name: &str| -> Result<Dataset> {
        let ip = PathBuf::from(format!("<bundled>/{name}-images-idx3-ubyte.gz"));
        let lp = PathBuf::from(format!("<bundled>/{name}-labels-idx1-ubyte.gz"));
        idx_dataset(
            &idx::decompress_if_gz(img.to_vec(), &ip)?,
            &idx::decompress_if_gz(lab.to_vec(), &lp)?,
            &ip,
            &lp,
        )
    };
    Ok(Split {
        name: "bundled MNIST sample".into(),
        train: load(SAMPLE_TRAIN_IMAGES, SAMPLE_TRAIN_LABELS, "train")?,
        test: load(SAMPLE_TEST_IMAGES, SAMPLE_TEST_LABELS, "t10k")?,
    })
}

/// Full Fashion-MNIST from Debian's `dataset-fashion-mnist` ([`FASHION_MNIST_DIR`]).
///
/// # Errors
/// [`NnError::DatasetNotFound`] (with the install command) if it is not installed.
pub fn fashion_mnist() -> Result<Split> {
    let dir = Path::new(FASHION_MNIST_DIR);
    if !dir.is_dir() {
        return Err(NnError::DatasetNotFound {
            path: dir.to_path_buf(),
            reason: "install it with `apt-get install dataset-fashion-mnist`, or pass --data DIR"
                .into(),
        });
    }
    load_dir(dir).map(|s| Split {
        name: "Fashion-MNIST".into(),
        ..s
    })
}

/// Where to get data: `bundled`, `fashion-mnist`, or a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// [`bundled_mnist_sample`].
    Bundled,
    /// [`fashion_mnist`].
    FashionMnist,
    /// [`load_dir`].
    Dir(PathBuf),
}

impl DataSource {
    /// Loads the data.
    ///
    /// # Errors
    /// As the loader it selects.
    pub fn load(&self) -> Result<Split> {
        match self {
            Self::Bundled => bundled_mnist_sample(),
            Self::FashionMnist => fashion_mnist(),
            Self::Dir(d) => load_dir(d),
        }
    }
}

impl FromStr for DataSource {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "bundled" => Self::Bundled,
            "fashion-mnist" => Self::FashionMnist,
            dir => Self::Dir(PathBuf::from(dir)),
        })
    }
}

/// Data augmentation: translates each image of the batch `images` `(B, C·H·W)` by an
/// independent random offset in `[-max_shift, max_shift]²` pixels, filling with zeros
/// (the background of MNIST-style images).
///
/// # Errors
/// [`NnError::Shape`] if the rows do not hold `shape.len()` values.
pub fn random_shift<R: rand::Rng + ?Sized>(
    images: &mut Array2<f32>,
    shape: Shape,
    max_shift: usize,
    rng: &mut R,
) -> Result<()> {
    if images.ncols() != shape.len() {
        return Err(crate::error::shape_err(
            "random_shift",
            shape.len(),
            images.ncols(),
        ));
    }
    if max_shift == 0 {
        return Ok(());
    }
    let m = max_shift as i64;
    let (h, w) = (shape.height as i64, shape.width as i64);
    for mut row in images.axis_iter_mut(Axis(0)) {
        let (dy, dx) = (rng.random_range(-m..=m), rng.random_range(-m..=m));
        if dy == 0 && dx == 0 {
            continue;
        }
        let src = row.to_owned();
        for c in 0..shape.channels as i64 {
            for y in 0..h {
                for x in 0..w {
                    let (sy, sx) = (y - dy, x - dx);
                    let v = if (0..h).contains(&sy) && (0..w).contains(&sx) {
                        src[((c * h + sy) * w + sx) as usize]
                    } else {
                        0.0
                    };
                    row[((c * h + y) * w + x) as usize] = v;
                }
            }
        }
    }
    Ok(())
}
