//! The server's durable state between steps, as bytes: what a network service stores after
//! each committed step and restores after a restart.
//!
//! Between steps the server holds, beyond what the [`Setup`] fixes, only the step counter,
//! the plaintext `W` and the encrypted `[b]` (the stored layer inputs and pending gradient
//! jobs are empty). Format (little-endian): magic `SPXS`, `u16` version, `u64` step, `u32`
//! layers, then per parameterized layer `u32` rows, `u32` columns, `f32` weights row-major,
//! `u32` bias count and that many `u32`-length-prefixed ciphertexts in `sphinx-he`'s
//! serialization (from version 3 the biases two per ciphertext, as the server keeps them:
//! `⌈units/2⌉` ciphertexts; up to version 2 one per unit, which a restore packs); then, from
//! version 2 and only when the setup asks for a weight average, the average `W̄` of every
//! layer as `f32` row-major (same shapes). A version-1 state restored under such a setup
//! restarts the average from the stored `W`.

use rand::{CryptoRng, RngCore};
use sphinx_he::Ciphertext;
use sphinx_he::serialization::Serializable;

use super::{Expect, Server};
use crate::codec::Cursor;
use crate::error::{ProtocolError, Result};
use crate::messages::Setup;

/// Magic of a stored server state.
pub const STATE_MAGIC: [u8; 4] = *b"SPXS";

/// Version of the stored server state format.
pub const STATE_VERSION: u16 = 3;

fn malformed(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::Malformed(format!("server state: {}", reason.into()))
}

fn u32_of(v: usize) -> Result<[u8; 4]> {
    u32::try_from(v)
        .map(u32::to_le_bytes)
        .map_err(|_| malformed(format!("{v} does not fit u32")))
}

impl Server {
    /// Whether the server is between steps (no step in progress): the only time its state
    /// can be [`snapshot`](Self::snapshot)ted.
    #[must_use]
    pub fn is_between_steps(&self) -> bool {
        self.expect == Expect::Forward(0) && self.jobs.is_empty()
    }

    /// The state to store after a committed step (see the module docs for the format).
    ///
    /// # Errors
    /// [`ProtocolError::UnexpectedMessage`]-free: [`ProtocolError::InvalidMessage`] if a step
    /// is in progress; [`ProtocolError::He`] from serialization.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        if !self.is_between_steps() {
            return Err(ProtocolError::InvalidMessage {
                kind: crate::messages::MessageKind::NoisyGradient,
                reason: "a snapshot is taken only between steps".into(),
            });
        }
        let mut out = Vec::new();
        out.extend_from_slice(&STATE_MAGIC);
        out.extend_from_slice(&STATE_VERSION.to_le_bytes());
        out.extend_from_slice(&self.step.to_le_bytes());
        out.extend_from_slice(&u32_of(self.weights.len())?);
        for (w, b) in self.weights.iter().zip(&self.biases) {
            out.extend_from_slice(&u32_of(w.nrows())?);
            out.extend_from_slice(&u32_of(w.ncols())?);
            for v in w {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&u32_of(b.len())?);
            for ct in b {
                let bytes = ct.to_bytes(&self.params)?;
                out.extend_from_slice(&u32_of(bytes.len())?);
                out.extend_from_slice(&bytes);
            }
        }
        for a in &self.averaged {
            for v in a {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Ok(out)
    }

    /// A server for `setup` at the stored `state`: validates the setup as [`Server::new`]
    /// does (`rng` encrypts initial biases that the stored ones then replace), then the
    /// state against it: shapes, finite weights, and every bias ciphertext's parameters,
    /// level, size and scale.
    ///
    /// # Errors
    /// Those of [`Server::new`]; [`ProtocolError::Malformed`] / [`ProtocolError::Decode`]
    /// for a state that does not fit the setup.
    pub fn restore<R: RngCore + CryptoRng>(
        setup: Setup,
        state: &[u8],
        rng: &mut R,
    ) -> Result<Self> {
        let mut server = Self::new(setup, rng)?;
        let mut r = Cursor::new(state);
        if r.array::<4>()? != STATE_MAGIC {
            return Err(malformed("magic"));
        }
        let version = u16::from_le_bytes(r.array()?);
        if !(1..=STATE_VERSION).contains(&version) {
            return Err(malformed(format!(
                "version {version}; this build reads {STATE_VERSION}"
            )));
        }
        let step = u64::from_le_bytes(r.array()?);
        if (r.u32()? as usize) != server.weights.len() {
            return Err(malformed("layer count differs from the setup"));
        }
        let params = server.params.clone();
        for ((w, b), plan) in server
            .weights
            .iter_mut()
            .zip(server.biases.iter_mut())
            .zip(&server.plans)
        {
            if ((r.u32()? as usize), (r.u32()? as usize)) != w.dim() {
                return Err(malformed("weight shape differs from the setup"));
            }
            let raw = r.take(4 * w.len())?;
            for (dst, c) in w.iter_mut().zip(raw.chunks_exact(4)) {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if !v.is_finite() {
                    return Err(malformed("non-finite weight"));
                }
                *dst = v;
            }
            // Up to version 2 one ciphertext per unit, packed in pairs now; from version 3
            // as the server keeps them.
            let units = plan.units();
            let stored = if version < 3 { units } else { b.len() };
            if (r.u32()? as usize) != stored {
                return Err(malformed("bias count differs from the setup"));
            }
            let fresh = b
                .first()
                .cloned()
                .ok_or_else(|| malformed("a layer without biases"))?;
            let read = (0..stored)
                .map(|_| {
                    let len = r.u32()? as usize;
                    let obj = r.take(len)?;
                    let ct = Ciphertext::from_bytes(&params, obj, obj.len())?;
                    let ratio = ct.scale() / fresh.scale();
                    if ct.level() != fresh.level()
                        || ct.size() != fresh.size()
                        || !(0.999_999..=1.000_001).contains(&ratio)
                    {
                        return Err(malformed("bias ciphertext level, size or scale"));
                    }
                    Ok(ct)
                })
                .collect::<Result<Vec<_>>>()?;
            *b = if version < 3 {
                super::pack_pairs(&server.eval, read)?
            } else {
                read
            };
        }
        if version == 1 {
            if !server.averaged.is_empty() {
                server.averaged.clone_from(&server.weights);
            }
        } else {
            for a in &mut server.averaged {
                let raw = r.take(4 * a.len())?;
                for (dst, c) in a.iter_mut().zip(raw.chunks_exact(4)) {
                    let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    if !v.is_finite() {
                        return Err(malformed("non-finite averaged weight"));
                    }
                    *dst = v;
                }
            }
        }
        if !r.bytes.is_empty() {
            return Err(malformed("trailing bytes"));
        }
        server.step = step;
        // The packed weights are derived from W: drop any built from the initial one.
        server.packed.fill(None);
        Ok(server)
    }
}
