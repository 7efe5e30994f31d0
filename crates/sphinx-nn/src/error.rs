//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in `sphinx-nn`.
///
/// Variants carry the data a user needs to fix the problem (which file, which field,
/// expected versus found); none of them is ever produced by a panic path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NnError {
    /// An array did not have the shape an operation requires.
    #[error("shape mismatch in {context}: expected {expected}, found {found}")]
    Shape {
        /// Where the mismatch was detected.
        context: &'static str,
        /// The shape that was required.
        expected: String,
        /// The shape that was given.
        found: String,
    },
    /// A layer or model description is not valid (zero sizes, kernel larger than input...).
    #[error("invalid architecture: {0}")]
    Architecture(String),
    /// A model preset name is unknown.
    #[error("unknown model preset `{0}` (known: {known})", known = crate::presets::Preset::NAMES.join(", "))]
    UnknownPreset(String),
    /// A label is outside `0..num_classes`.
    #[error("label {label} out of range for {classes} classes")]
    Label {
        /// The offending label.
        label: u8,
        /// The number of classes of the model.
        classes: usize,
    },
    /// A hyperparameter is out of its valid range.
    #[error("invalid hyperparameter {name}: {reason}")]
    Hyperparameter {
        /// Its name.
        name: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A dataset file is malformed.
    #[error("malformed dataset file {path}: {reason}")]
    Dataset {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: DatasetFault,
    },
    /// A dataset directory holds no recognised dataset.
    #[error("no dataset found in {path}: {reason}")]
    DatasetNotFound {
        /// The directory.
        path: PathBuf,
        /// What was looked for.
        reason: String,
    },
    /// A saved model (architecture JSON or safetensors weights) is malformed or does not
    /// match its architecture.
    #[error("malformed model file {path}: {reason}")]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The differential-privacy layer rejected an operation.
    #[error("differential privacy: {0}")]
    Dp(String),
}

/// What is wrong with a dataset file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetFault {
    /// The IDX magic number is not the one expected for this file.
    #[error("bad IDX magic 0x{found:08x} (expected 0x{expected:08x})")]
    BadMagic {
        /// Expected magic (0x00000803 for images, 0x00000801 for labels).
        expected: u32,
        /// Magic found in the file.
        found: u32,
    },
    /// The file ends before the data its header announces.
    #[error("truncated: header announces {expected} bytes of data, file has {found}")]
    Truncated {
        /// Bytes announced.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// The file holds more bytes than its header announces.
    #[error("{extra} trailing bytes after the announced data")]
    TrailingBytes {
        /// Surplus bytes.
        extra: u64,
    },
    /// Images and labels disagree on the number of examples.
    #[error("{images} images but {labels} labels")]
    CountMismatch {
        /// Number of images.
        images: usize,
        /// Number of labels.
        labels: usize,
    },
    /// A label is not a valid class.
    #[error("label {label} at index {index} is not below {classes}")]
    BadLabel {
        /// Position of the label.
        index: usize,
        /// The label.
        label: u8,
        /// Number of classes.
        classes: usize,
    },
    /// A dimension is zero or the data are implausibly large.
    #[error("bad dimensions {0:?}")]
    BadDimensions(Vec<u32>),
    /// The gzip stream is corrupt.
    #[error("corrupt gzip stream: {0}")]
    Gzip(String),
    /// A CIFAR-10 binary file's length is not a whole number of records.
    #[error("length {len} is not a multiple of the {record}-byte CIFAR-10 record")]
    CifarLength {
        /// File length.
        len: u64,
        /// Record size.
        record: usize,
    },
}

/// The crate's result type.
pub type Result<T, E = NnError> = std::result::Result<T, E>;

pub(crate) fn shape_err(
    context: &'static str,
    expected: impl ToString,
    found: impl ToString,
) -> NnError {
    NnError::Shape {
        context,
        expected: expected.to_string(),
        found: found.to_string(),
    }
}
