//! Bounds-checked reading of little-endian bodies, shared by every decoder of this crate
//! (training and inference messages, network frames, stored server state), so that one
//! audited implementation decides what "truncated" and "trailing bytes" mean.
//!
//! Each decoder adds its own typed readers (`impl Cursor` blocks in its module) on top of
//! these primitives.

use crate::error::{ProtocolError, Result};

/// A [`ProtocolError::Malformed`] with `reason`.
pub(crate) fn malformed(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::Malformed(reason.into())
}

/// A bounds-checked cursor over a body: every read either succeeds or returns
/// [`ProtocolError::Malformed`], never panics.
pub(crate) struct Cursor<'a> {
    pub(crate) bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.bytes.len() {
            return Err(malformed(format!(
                "truncated: {n} bytes needed, {} left",
                self.bytes.len()
            )));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A `u32` count of items of at least `min_item` bytes each, refused when the bytes
    /// left cannot hold them (so no caller allocates for a count it cannot fill).
    pub(crate) fn count(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.bytes.len() {
            return Err(malformed(format!("count {n} exceeds the bytes left")));
        }
        Ok(n)
    }

    /// A `u32`-length-prefixed object.
    pub(crate) fn object(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// Refuses trailing bytes.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(malformed(format!("{} trailing bytes", self.bytes.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_refuses_truncation_and_trailing_bytes() {
        let bytes = [1u8, 2, 0, 3, 0, 0, 0, 9];
        let mut c = Cursor::new(&bytes);
        assert_eq!(c.u8().unwrap(), 1);
        assert_eq!(c.u16().unwrap(), 2);
        assert_eq!(c.u32().unwrap(), 3);
        assert!(c.finish().is_err());
        assert!(c.u16().is_err());
        assert_eq!(c.u8().unwrap(), 9);
        c.finish().unwrap();
        let huge = 1_000u32.to_le_bytes();
        assert!(Cursor::new(&huge).count(1).is_err());
        assert!(Cursor::new(&huge).object().is_err());
    }
}
