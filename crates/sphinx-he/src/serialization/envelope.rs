//! The envelope every serialized object starts with (layout in the module docs),
//! and a bounds-checked reader. The header is parsed and checked (magic, version,
//! type, size limit, exact length) before any payload-sized allocation happens.

use super::DecodeError;

/// The four bytes every serialized object starts with.
pub const MAGIC: [u8; 4] = *b"SPHE";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes in the envelope header.
pub const HEADER_LEN: usize = 28;

/// What a serialized object is; the decoder for one type refuses the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ObjectType {
    /// A ciphertext with every component stored.
    Ciphertext,
    /// A fresh symmetric ciphertext: c0 and the 32-byte seed that regenerates c1.
    SeededCiphertext,
    /// An encoded CKKS plaintext.
    Plaintext,
    /// The public encryption key.
    PublicKey,
    /// The relinearization (key-switching) key.
    RelinKey,
    /// A set of Galois (rotation and conjugation) keys.
    GaloisKeys,
    /// The public key with `a` replaced by its 32-byte seed.
    SeededPublicKey,
    /// The relinearization key with each `a_j` replaced by its seed.
    SeededRelinKey,
    /// Galois keys with each `a_j` replaced by its seed.
    SeededGaloisKeys,
    /// A level-0 ciphertext switched to a power-of-two modulus `2^k`, in coefficient form
    /// (`serialization::compact`).
    CompactCiphertext,
}

impl ObjectType {
    /// The byte stored in the header.
    pub const fn code(self) -> u8 {
        match self {
            Self::Ciphertext => 1,
            Self::SeededCiphertext => 2,
            Self::Plaintext => 3,
            Self::PublicKey => 4,
            Self::RelinKey => 5,
            Self::GaloisKeys => 6,
            Self::SeededPublicKey => 7,
            Self::SeededRelinKey => 8,
            Self::SeededGaloisKeys => 9,
            Self::CompactCiphertext => 10,
        }
    }

    /// The type for a header byte, if it names one.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Ciphertext,
            2 => Self::SeededCiphertext,
            3 => Self::Plaintext,
            4 => Self::PublicKey,
            5 => Self::RelinKey,
            6 => Self::GaloisKeys,
            7 => Self::SeededPublicKey,
            8 => Self::SeededRelinKey,
            9 => Self::SeededGaloisKeys,
            10 => Self::CompactCiphertext,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ObjectType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ciphertext => "ciphertext",
            Self::SeededCiphertext => "seeded ciphertext",
            Self::Plaintext => "plaintext",
            Self::PublicKey => "public key",
            Self::RelinKey => "relinearization key",
            Self::GaloisKeys => "Galois keys",
            Self::SeededPublicKey => "seeded public key",
            Self::SeededRelinKey => "seeded relinearization key",
            Self::SeededGaloisKeys => "seeded Galois keys",
            Self::CompactCiphertext => "compact level-0 ciphertext",
        })
    }
}

/// A parsed, checked envelope header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the payload holds.
    pub object: ObjectType,
    /// Fingerprint of the parameter set the object belongs to.
    pub params_id: u64,
    /// Index of the highest ciphertext prime in use (0 = only the first prime).
    pub level: u16,
    /// Bytes after the header.
    pub payload_len: u64,
}

impl Header {
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.push(self.object.code());
        out.push(0);
        out.extend_from_slice(&self.params_id.to_le_bytes());
        out.extend_from_slice(&self.level.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.payload_len.to_le_bytes());
    }

    /// Parses and checks the header of `bytes`: magic, version, known type, zero
    /// reserved fields, `payload_len <= limit`, and that exactly `payload_len`
    /// bytes follow. Nothing is allocated.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`], [`DecodeError::BadMagic`],
    /// [`DecodeError::UnsupportedVersion`], [`DecodeError::UnknownObjectType`],
    /// [`DecodeError::Malformed`] for nonzero reserved fields,
    /// [`DecodeError::TooLarge`] and [`DecodeError::LengthMismatch`].
    pub fn parse(bytes: &[u8], limit: usize) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let magic = r.array::<4>()?;
        if magic != MAGIC {
            return Err(DecodeError::BadMagic { found: magic });
        }
        let version = r.u16()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let code = r.u8()?;
        let object =
            ObjectType::from_code(code).ok_or(DecodeError::UnknownObjectType { found: code })?;
        if r.u8()? != 0 {
            return Err(DecodeError::Malformed("nonzero header flags"));
        }
        let params_id = r.u64()?;
        let level = r.u16()?;
        if r.u16()? != 0 {
            return Err(DecodeError::Malformed("nonzero reserved header field"));
        }
        let payload_len = r.u64()?;
        if payload_len > limit as u64 {
            return Err(DecodeError::TooLarge {
                len: payload_len,
                limit,
            });
        }
        let actual = r.remaining() as u64;
        if actual != payload_len {
            return Err(DecodeError::LengthMismatch {
                header: payload_len,
                actual,
            });
        }
        Ok(Self {
            object,
            params_id,
            level,
            payload_len,
        })
    }
}

/// A cursor over untrusted bytes: every read is bounds-checked and fails with
/// [`DecodeError::Truncated`] instead of panicking.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(DecodeError::Truncated {
                needed: self.pos.saturating_add(n),
                got: self.bytes.len(),
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn array<const K: usize>(&mut self) -> Result<[u8; K], DecodeError> {
        let mut a = [0u8; K];
        a.copy_from_slice(self.take(K)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }

    /// Fails unless every byte has been consumed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { extra }),
        }
    }
}
