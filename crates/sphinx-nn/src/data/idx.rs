//! IDX files (the MNIST container): big-endian header `0x00 0x00 type ndims`, then one
//! big-endian `u32` per dimension, then the data. Only unsigned-byte data (type 0x08) is
//! used by MNIST-family datasets and only that is accepted.

use std::io::Read;
use std::path::Path;

use crate::error::{DatasetFault, NnError, Result};

/// Magic of an unsigned-byte IDX file with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of an unsigned-byte IDX file with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Largest decompressed file accepted (a gzip bomb must not exhaust memory); full
/// MNIST-family training images are 47 MB.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Decoded IDX images: `count` row-major `rows × cols` byte images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count · rows · cols` bytes.
    pub pixels: Vec<u8>,
}

fn fault(path: &Path, reason: DatasetFault) -> NnError {
    NnError::Dataset {
        path: path.to_path_buf(),
        reason,
    }
}

/// Reads a file, gunzipping it when it starts with the gzip magic `1f 8b`.
///
/// # Errors
/// [`NnError::Io`] if it cannot be read; [`NnError::Dataset`] with
/// [`DatasetFault::Gzip`] for a corrupt stream or one larger than [`MAX_FILE_BYTES`].
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| NnError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decompress_if_gz(raw, path)
}

pub(crate) fn decompress_if_gz(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| fault(path, DatasetFault::Gzip(e.to_string())))?;
    if out.len() as u64 > MAX_FILE_BYTES {
        return Err(fault(
            path,
            DatasetFault::Gzip(format!("decompresses to more than {MAX_FILE_BYTES} bytes")),
        ));
    }
    Ok(out)
}

/// Splits off the header and checks magic, dimensions and the exact data length.
fn parse<'a>(bytes: &'a [u8], path: &Path, magic: u32) -> Result<(Vec<u32>, &'a [u8])> {
    let word = |i: usize| -> Option<u32> {
        bytes
            .get(4 * i..4 * i + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    let found = word(0).ok_or_else(|| {
        fault(
            path,
            DatasetFault::Truncated {
                expected: 4,
                found: bytes.len() as u64,
            },
        )
    })?;
    if found != magic {
        return Err(fault(
            path,
            DatasetFault::BadMagic {
                expected: magic,
                found,
            },
        ));
    }
    let ndims = (magic & 0xff) as usize;
    let header = 4 * (1 + ndims);
    let dims: Vec<u32> = (1..=ndims)
        .map(|i| {
            word(i).ok_or_else(|| {
                fault(
                    path,
                    DatasetFault::Truncated {
                        expected: header as u64,
                        found: bytes.len() as u64,
                    },
                )
            })
        })
        .collect::<Result<_>>()?;
    if dims.contains(&0) {
        return Err(fault(path, DatasetFault::BadDimensions(dims)));
    }
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)));
    let Some(expected) = expected.filter(|&e| e <= MAX_FILE_BYTES) else {
        return Err(fault(path, DatasetFault::BadDimensions(dims)));
    };
    let data = bytes.get(header..).unwrap_or_default();
    let found = data.len() as u64;
    if found < expected {
        return Err(fault(path, DatasetFault::Truncated { expected, found }));
    }
    if found > expected {
        return Err(fault(
            path,
            DatasetFault::TrailingBytes {
                extra: found - expected,
            },
        ));
    }
    Ok((dims, data))
}

/// Parses an (uncompressed) IDX image file. `path` only labels errors.
///
/// # Errors
/// [`NnError::Dataset`]: [`DatasetFault::BadMagic`], [`DatasetFault::Truncated`],
/// [`DatasetFault::TrailingBytes`], [`DatasetFault::BadDimensions`].
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<IdxImages> {
    let (dims, data) = parse(bytes, path, IMAGES_MAGIC)?;
    let [count, rows, cols] = dims[..] else {
        return Err(fault(path, DatasetFault::BadDimensions(dims)));
    };
    Ok(IdxImages {
        count: count as usize,
        rows: rows as usize,
        cols: cols as usize,
        pixels: data.to_vec(),
    })
}

/// Parses an (uncompressed) IDX label file. `path` only labels errors.
///
/// # Errors
/// As [`parse_images`].
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    Ok(parse(bytes, path, LABELS_MAGIC)?.1.to_vec())
}
