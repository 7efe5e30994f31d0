//! CIFAR-10 "binary version": files of 3,073-byte records, one label byte (0–9) then
//! 1,024 red, 1,024 green and 1,024 blue bytes of a 32×32 image (channel-major, the
//! layout our layers use).

use std::path::Path;

use crate::error::{DatasetFault, NnError, Result};

/// Image side.
pub const SIDE: usize = 32;
/// Bytes per image.
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
/// Bytes per record (label + image).
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Classes.
pub const CLASSES: usize = 10;

/// Parses one CIFAR-10 binary file into `(pixels, labels)`. `path` only labels errors.
///
/// # Errors
/// [`NnError::Dataset`]: [`DatasetFault::CifarLength`] if the length is not a positive
/// multiple of [`RECORD_BYTES`], [`DatasetFault::BadLabel`] for a label ≥ 10.
pub fn parse_batch(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(NnError::Dataset {
            path: path.to_path_buf(),
            reason: DatasetFault::CifarLength {
                len: bytes.len() as u64,
                record: RECORD_BYTES,
            },
        });
    }
    let n = bytes.len() / RECORD_BYTES;
    let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for (index, rec) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let (label, img) = rec.split_first().unwrap_or((&0, &[]));
        if usize::from(*label) >= CLASSES {
            return Err(NnError::Dataset {
                path: path.to_path_buf(),
                reason: DatasetFault::BadLabel {
                    index,
                    label: *label,
                    classes: CLASSES,
                },
            });
        }
        labels.push(*label);
        pixels.extend_from_slice(img);
    }
    Ok((pixels, labels))
}
