//! Typed, versioned inference messages and their exact wire sizes.
//!
//! Same envelope as the training messages ([`crate::messages`]): magic `SPXP`, `u16`
//! [`PROTOCOL_VERSION`], `u8` type, `u8` reserved (0), `u64` body length, body; all integers
//! little-endian. Inference type codes start at 32 so they never collide with training
//! codes (1–9). BFV ciphertexts are `u32`-length-prefixed `sphinx-he` objects (the client's
//! `[r]` in seeded, half-size form). Online values are residues mod `p` bit-packed at
//! `⌈log2 p⌉` bits each (LSB first, padded to a byte).
//!
//! | message | direction | body |
//! |---|---|---|
//! | [`InferenceSetup`] | client → server | BFV literal (log N, Q bits, t bits, security), public key, fixed-point bits |
//! | [`PreprocessStart`] | client → server | round, query count, layers to (re)compute |
//! | [`PreprocessInput`] | client → server | round, layer, first index, `[r]` ciphertexts (seeded) |
//! | status request | client → server | empty |
//! | [`OnlineValues`] (input) | client → server | round, query, layer, `x − r mod p` packed |
//! | [`Ready`] | server → client | model version, per-layer versions |
//! | [`PreprocessOutput`] | server → client | round, layer, layer version, first index, flooded `[W r − s]` |
//! | [`OnlineValues`] (output) | server → client | round, query, layer, `W(x − r) + s mod p` packed |
//! | [`Stale`] | server → client | round, model version, per-layer versions |
//!
//! Decoding takes a body-size limit checked before anything is allocated, validates every
//! embedded ciphertext against the session's parameters (two parts, top level, scale 1),
//! checks every packed value is below `p`, and rejects trailing bytes.

use std::sync::Arc;

use sphinx_he::bfv::{BfvParameters, BfvParametersLiteral};
use sphinx_he::serialization::Serializable;
use sphinx_he::{Ciphertext, PublicKey, SecurityLevel};

use crate::codec::{Cursor, malformed};
use crate::error::{ProtocolError, Result};
use crate::inference::FixedPoint;
use crate::messages::{ENVELOPE_LEN, MAGIC, PROTOCOL_VERSION};

/// Who sends an inference message.
pub use crate::messages::Direction;

/// The inference message types, with their wire codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum InferenceKind {
    /// [`InferenceSetup`].
    Setup = 32,
    /// [`PreprocessStart`].
    PreprocessStart = 33,
    /// [`PreprocessInput`].
    PreprocessInput = 34,
    /// Online `x − r`.
    OnlineInput = 35,
    /// Asks for [`Ready`].
    StatusRequest = 36,
    /// [`Ready`].
    Ready = 40,
    /// [`PreprocessOutput`].
    PreprocessOutput = 41,
    /// Online `W(x − r) + s`.
    OnlineOutput = 42,
    /// [`Stale`].
    Stale = 43,
}

impl InferenceKind {
    /// Every kind, in code order.
    pub const ALL: [Self; 9] = [
        Self::Setup,
        Self::PreprocessStart,
        Self::PreprocessInput,
        Self::OnlineInput,
        Self::StatusRequest,
        Self::Ready,
        Self::PreprocessOutput,
        Self::OnlineOutput,
        Self::Stale,
    ];

    /// Who sends it.
    #[must_use]
    pub fn direction(self) -> Direction {
        if (self as u8) < 40 {
            Direction::ClientToServer
        } else {
            Direction::ServerToClient
        }
    }

    /// Whether it belongs to the online phase (the rest is setup and preprocessing).
    #[must_use]
    pub fn is_online(self) -> bool {
        matches!(self, Self::OnlineInput | Self::OnlineOutput | Self::Stale)
    }

    /// A stable snake-case name (for reports and JSON).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Setup => "inference_setup",
            Self::PreprocessStart => "preprocess_start",
            Self::PreprocessInput => "preprocess_input",
            Self::OnlineInput => "online_input",
            Self::StatusRequest => "status_request",
            Self::Ready => "ready",
            Self::PreprocessOutput => "preprocess_output",
            Self::OnlineOutput => "online_output",
            Self::Stale => "stale",
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == code)
    }
}

/// The client's opening message for inference: public material only.
#[derive(Debug, Clone)]
pub struct InferenceSetup {
    /// The BFV parameters.
    pub params: BfvParametersLiteral,
    /// For the server's noise flooding (fresh encryptions of zero).
    pub public_key: PublicKey,
    /// The fixed-point scales (the server quantizes `W` at `2^weight_bits`).
    pub fixed: FixedPoint,
}

/// Opens (or refreshes) a preprocessing round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreprocessStart {
    /// Round identifier chosen by the client (unique per client).
    pub round: u64,
    /// Queries the round serves (slots `0..queries` of every ciphertext).
    pub queries: u32,
    /// Parameterized layers to compute, increasing; the client then sends their `[r]` in
    /// this order.
    pub layers: Vec<u16>,
}

/// A chunk of the client's encrypted masks `[r]` of one layer: ciphertext `i` is input
/// index `first + i`, its slot `j` the mask of query `j`.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessInput {
    /// The round.
    pub round: u64,
    /// Parameterized layer.
    pub layer: u16,
    /// Input index of the first ciphertext.
    pub first: u32,
    /// Seeded fresh encryptions.
    pub cts: Vec<Ciphertext>,
}

/// A chunk of flooded `[W r − s]` of one layer: ciphertext `i` is output index
/// `first + i` (`unit · positions + position`).
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessOutput {
    /// The round.
    pub round: u64,
    /// Parameterized layer.
    pub layer: u16,
    /// Version of the layer's weights these shares were computed with.
    pub layer_version: u64,
    /// Output index of the first ciphertext.
    pub first: u32,
    /// Flooded ciphertexts.
    pub cts: Vec<Ciphertext>,
}

/// Residues mod `p` of one query at one layer: `x − r` (up) or `W(x − r) + s` (down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineValues {
    /// The preprocessing round whose masks are used.
    pub round: u64,
    /// The query slot within the round.
    pub query: u32,
    /// Parameterized layer.
    pub layer: u16,
    /// Values in `[0, p)`.
    pub values: Vec<u64>,
}

/// The server's model versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// Bumped whenever any layer's quantized weights change.
    pub model_version: u64,
    /// Per parameterized layer, the model version in which its weights last changed.
    pub layer_versions: Vec<u64>,
}

/// Refusal of an online input whose round was preprocessed for other weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    /// The round.
    pub round: u64,
    /// The query whose input was refused (its mask is burned on the client).
    pub query: u32,
    /// Current versions.
    pub versions: Ready,
}

/// Inference messages from the client.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum InferenceClientMessage {
    /// See [`InferenceSetup`].
    Setup(Box<InferenceSetup>),
    /// See [`PreprocessStart`].
    PreprocessStart(PreprocessStart),
    /// See [`PreprocessInput`].
    PreprocessInput(PreprocessInput),
    /// `x − r mod p`.
    OnlineInput(OnlineValues),
    /// Asks for [`Ready`].
    StatusRequest,
}

/// Inference messages from the server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum InferenceServerMessage {
    /// See [`Ready`].
    Ready(Ready),
    /// See [`PreprocessOutput`].
    PreprocessOutput(PreprocessOutput),
    /// `W(x − r) + s mod p`.
    OnlineOutput(OnlineValues),
    /// See [`Stale`].
    Stale(Stale),
}

fn invalid(kind: InferenceKind, reason: impl Into<String>) -> ProtocolError {
    ProtocolError::InvalidInference {
        kind,
        reason: reason.into(),
    }
}

/// Bits per packed residue: `⌈log2 p⌉`.
#[must_use]
pub fn value_bits(p: u64) -> u32 {
    64 - p.saturating_sub(1).leading_zeros()
}

/// Bytes of `count` packed residues mod `p`.
#[must_use]
pub fn packed_len(count: usize, p: u64) -> usize {
    (count * value_bits(p) as usize).div_ceil(8)
}

fn pack(values: &[u64], bits: u32, out: &mut Vec<u8>) {
    let mut acc: u128 = 0;
    let mut fill = 0u32;
    for &v in values {
        acc |= u128::from(v) << fill;
        fill += bits;
        while fill >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            fill -= 8;
        }
    }
    if fill > 0 {
        out.push(acc as u8);
    }
}

fn unpack(bytes: &[u8], count: usize, p: u64) -> Result<Vec<u64>> {
    let bits = value_bits(p);
    let mask = (1u64 << bits) - 1;
    let mut out = Vec::with_capacity(count);
    let mut acc: u128 = 0;
    let mut fill = 0u32;
    let mut it = bytes.iter();
    for _ in 0..count {
        while fill < bits {
            let b = it
                .next()
                .ok_or_else(|| malformed("packed values truncated"))?;
            acc |= u128::from(*b) << fill;
            fill += 8;
        }
        let v = (acc as u64) & mask;
        if v >= p {
            return Err(malformed(format!("packed value {v} is not below p = {p}")));
        }
        out.push(v);
        acc >>= bits;
        fill -= bits;
    }
    if acc != 0 || it.next().is_some() {
        return Err(malformed("nonzero padding after packed values"));
    }
    Ok(out)
}

fn put_u32(out: &mut Vec<u8>, v: usize, kind: InferenceKind) -> Result<()> {
    let v = u32::try_from(v).map_err(|_| invalid(kind, format!("{v} does not fit u32")))?;
    out.extend_from_slice(&v.to_le_bytes());
    Ok(())
}

fn cts_len(cts: &[Ciphertext], params: &BfvParameters) -> Result<usize> {
    let mut total = 4;
    for ct in cts {
        total += 4 + ct.serialized_len(params.rlwe())?;
    }
    Ok(total)
}

fn put_cts(
    out: &mut Vec<u8>,
    cts: &[Ciphertext],
    params: &BfvParameters,
    kind: InferenceKind,
) -> Result<()> {
    put_u32(out, cts.len(), kind)?;
    for ct in cts {
        let bytes = ct.to_bytes(params.rlwe())?;
        put_u32(out, bytes.len(), kind)?;
        out.extend_from_slice(&bytes);
    }
    Ok(())
}

fn literal_len(l: &BfvParametersLiteral) -> usize {
    1 + 1 + l.q_bits.len() + 1 + 2
}

fn put_literal(out: &mut Vec<u8>, l: &BfvParametersLiteral) {
    let small = |x: u32| u8::try_from(x).unwrap_or(u8::MAX);
    out.push(small(l.log_n));
    out.push(small(l.q_bits.len() as u32));
    out.extend(l.q_bits.iter().map(|&b| small(b)));
    out.push(small(l.t_bits));
    let sec = l.security.bits().map_or(0u16, |b| b as u16);
    out.extend_from_slice(&sec.to_le_bytes());
}

fn versions_len(v: &Ready) -> usize {
    8 + 4 + 8 * v.layer_versions.len()
}

fn put_versions(out: &mut Vec<u8>, v: &Ready, kind: InferenceKind) -> Result<()> {
    out.extend_from_slice(&v.model_version.to_le_bytes());
    put_u32(out, v.layer_versions.len(), kind)?;
    for x in &v.layer_versions {
        out.extend_from_slice(&x.to_le_bytes());
    }
    Ok(())
}

fn online_len(v: &OnlineValues, p: u64) -> usize {
    8 + 4 + 2 + 4 + packed_len(v.values.len(), p)
}

fn put_online(out: &mut Vec<u8>, v: &OnlineValues, p: u64, kind: InferenceKind) -> Result<()> {
    if let Some(&bad) = v.values.iter().find(|&&x| x >= p) {
        return Err(invalid(kind, format!("value {bad} is not below p")));
    }
    out.extend_from_slice(&v.round.to_le_bytes());
    out.extend_from_slice(&v.query.to_le_bytes());
    out.extend_from_slice(&v.layer.to_le_bytes());
    put_u32(out, v.values.len(), kind)?;
    pack(&v.values, value_bits(p), out);
    Ok(())
}

fn envelope(kind: InferenceKind, body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.push(kind as u8);
    out.push(0);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

impl InferenceClientMessage {
    /// The message type.
    #[must_use]
    pub fn kind(&self) -> InferenceKind {
        match self {
            Self::Setup(_) => InferenceKind::Setup,
            Self::PreprocessStart(_) => InferenceKind::PreprocessStart,
            Self::PreprocessInput(_) => InferenceKind::PreprocessInput,
            Self::OnlineInput(_) => InferenceKind::OnlineInput,
            Self::StatusRequest => InferenceKind::StatusRequest,
        }
    }

    /// Bytes on the wire, envelope included, without encoding.
    ///
    /// # Errors
    /// [`sphinx_he::HeError::ParamMismatch`] for an object of other parameters.
    pub fn wire_len(&self, params: &BfvParameters) -> Result<usize> {
        let body = match self {
            Self::Setup(s) => {
                literal_len(&s.params) + 4 + s.public_key.serialized_len(params.rlwe())? + 2
            }
            Self::PreprocessStart(s) => 8 + 4 + 4 + 2 * s.layers.len(),
            Self::PreprocessInput(c) => 8 + 2 + 4 + cts_len(&c.cts, params)?,
            Self::OnlineInput(v) => online_len(v, params.t()),
            Self::StatusRequest => 0,
        };
        Ok(ENVELOPE_LEN + body)
    }

    /// The message's bytes.
    ///
    /// # Errors
    /// As [`wire_len`](Self::wire_len); [`ProtocolError::InvalidInference`] for a count that
    /// does not fit its field or a value not below `p`.
    pub fn encode(&self, params: &BfvParameters) -> Result<Vec<u8>> {
        let kind = self.kind();
        let mut out = Vec::new();
        match self {
            Self::Setup(s) => {
                put_literal(&mut out, &s.params);
                let pk = s.public_key.to_bytes(params.rlwe())?;
                put_u32(&mut out, pk.len(), kind)?;
                out.extend_from_slice(&pk);
                out.push(s.fixed.activation_bits);
                out.push(s.fixed.weight_bits);
            }
            Self::PreprocessStart(s) => {
                out.extend_from_slice(&s.round.to_le_bytes());
                out.extend_from_slice(&s.queries.to_le_bytes());
                put_u32(&mut out, s.layers.len(), kind)?;
                for l in &s.layers {
                    out.extend_from_slice(&l.to_le_bytes());
                }
            }
            Self::PreprocessInput(c) => {
                out.extend_from_slice(&c.round.to_le_bytes());
                out.extend_from_slice(&c.layer.to_le_bytes());
                out.extend_from_slice(&c.first.to_le_bytes());
                put_cts(&mut out, &c.cts, params, kind)?;
            }
            Self::OnlineInput(v) => put_online(&mut out, v, params.t(), kind)?,
            Self::StatusRequest => {}
        }
        Ok(envelope(kind, out))
    }

    /// Decodes a message of the session with `params` (setup: [`decode_inference_setup`]),
    /// refusing a body over `limit` bytes before allocating.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for bytes that are not exactly one valid message,
    /// [`ProtocolError::Decode`] for an invalid or foreign ciphertext.
    pub fn decode(params: &Arc<BfvParameters>, bytes: &[u8], limit: usize) -> Result<Self> {
        let (kind, mut c) = open_envelope(bytes, limit)?;
        let msg = match kind {
            InferenceKind::PreprocessStart => {
                let round = c.u64()?;
                let queries = c.u32()?;
                let n = c.count(2)?;
                let layers = (0..n).map(|_| c.u16()).collect::<Result<Vec<_>>>()?;
                Self::PreprocessStart(PreprocessStart {
                    round,
                    queries,
                    layers,
                })
            }
            InferenceKind::PreprocessInput => {
                let round = c.u64()?;
                let layer = c.u16()?;
                let first = c.u32()?;
                let cts = c.bfv_cts(params)?;
                Self::PreprocessInput(PreprocessInput {
                    round,
                    layer,
                    first,
                    cts,
                })
            }
            InferenceKind::OnlineInput => Self::OnlineInput(c.online(params.t())?),
            InferenceKind::StatusRequest => Self::StatusRequest,
            other => {
                return Err(malformed(format!(
                    "{} is not a client message after setup",
                    other.name()
                )));
            }
        };
        c.finish()?;
        Ok(msg)
    }
}

impl InferenceServerMessage {
    /// The message type.
    #[must_use]
    pub fn kind(&self) -> InferenceKind {
        match self {
            Self::Ready(_) => InferenceKind::Ready,
            Self::PreprocessOutput(_) => InferenceKind::PreprocessOutput,
            Self::OnlineOutput(_) => InferenceKind::OnlineOutput,
            Self::Stale(_) => InferenceKind::Stale,
        }
    }

    /// Bytes on the wire, envelope included, without encoding.
    ///
    /// # Errors
    /// [`sphinx_he::HeError::ParamMismatch`] for an object of other parameters.
    pub fn wire_len(&self, params: &BfvParameters) -> Result<usize> {
        let body = match self {
            Self::Ready(v) => versions_len(v),
            Self::PreprocessOutput(c) => 8 + 2 + 8 + 4 + cts_len(&c.cts, params)?,
            Self::OnlineOutput(v) => online_len(v, params.t()),
            Self::Stale(s) => 8 + 4 + versions_len(&s.versions),
        };
        Ok(ENVELOPE_LEN + body)
    }

    /// The message's bytes.
    ///
    /// # Errors
    /// As [`InferenceClientMessage::encode`].
    pub fn encode(&self, params: &BfvParameters) -> Result<Vec<u8>> {
        let kind = self.kind();
        let mut out = Vec::new();
        match self {
            Self::Ready(v) => put_versions(&mut out, v, kind)?,
            Self::PreprocessOutput(c) => {
                out.extend_from_slice(&c.round.to_le_bytes());
                out.extend_from_slice(&c.layer.to_le_bytes());
                out.extend_from_slice(&c.layer_version.to_le_bytes());
                out.extend_from_slice(&c.first.to_le_bytes());
                put_cts(&mut out, &c.cts, params, kind)?;
            }
            Self::OnlineOutput(v) => put_online(&mut out, v, params.t(), kind)?,
            Self::Stale(s) => {
                out.extend_from_slice(&s.round.to_le_bytes());
                out.extend_from_slice(&s.query.to_le_bytes());
                put_versions(&mut out, &s.versions, kind)?;
            }
        }
        Ok(envelope(kind, out))
    }

    /// Decodes a server message of the session with `params`, refusing a body over `limit`
    /// bytes before allocating.
    ///
    /// # Errors
    /// As [`InferenceClientMessage::decode`].
    pub fn decode(params: &Arc<BfvParameters>, bytes: &[u8], limit: usize) -> Result<Self> {
        let (kind, mut c) = open_envelope(bytes, limit)?;
        let msg = match kind {
            InferenceKind::Ready => Self::Ready(c.versions()?),
            InferenceKind::PreprocessOutput => {
                let round = c.u64()?;
                let layer = c.u16()?;
                let layer_version = c.u64()?;
                let first = c.u32()?;
                let cts = c.bfv_cts(params)?;
                Self::PreprocessOutput(PreprocessOutput {
                    round,
                    layer,
                    layer_version,
                    first,
                    cts,
                })
            }
            InferenceKind::OnlineOutput => Self::OnlineOutput(c.online(params.t())?),
            InferenceKind::Stale => {
                let round = c.u64()?;
                let query = c.u32()?;
                let versions = c.versions()?;
                Self::Stale(Stale {
                    round,
                    query,
                    versions,
                })
            }
            other => {
                return Err(malformed(format!(
                    "{} is not a server message",
                    other.name()
                )));
            }
        };
        c.finish()?;
        Ok(msg)
    }
}

/// Decodes an [`InferenceSetup`] (before any parameters are agreed): validates the BFV
/// literal (security and flooding budget included) and the public key against it.
///
/// # Errors
/// [`ProtocolError::Malformed`], [`ProtocolError::Decode`], [`ProtocolError::He`] for an
/// insecure or invalid literal.
pub fn decode_inference_setup(bytes: &[u8], limit: usize) -> Result<InferenceSetup> {
    let (kind, mut c) = open_envelope(bytes, limit)?;
    if kind != InferenceKind::Setup {
        return Err(malformed(format!(
            "{} where inference setup was expected",
            kind.name()
        )));
    }
    let log_n = u32::from(c.u8()?);
    let nq = usize::from(c.u8()?);
    let q_bits = c.take(nq)?.iter().map(|&b| u32::from(b)).collect();
    let t_bits = u32::from(c.u8()?);
    let security = SecurityLevel::from_bits(u32::from(c.u16()?))
        .ok_or_else(|| malformed("unknown security level"))?;
    let literal = BfvParametersLiteral {
        log_n,
        q_bits,
        t_bits,
        security,
    };
    let params = literal.build()?;
    let pk = c.object()?;
    let public_key = PublicKey::from_bytes(params.rlwe(), pk, pk.len())?;
    let fixed = FixedPoint {
        activation_bits: c.u8()?,
        weight_bits: c.u8()?,
    };
    c.finish()?;
    fixed.check(params.t())?;
    Ok(InferenceSetup {
        params: literal,
        public_key,
        fixed,
    })
}

impl<'a> Cursor<'a> {
    fn bfv_cts(&mut self, params: &Arc<BfvParameters>) -> Result<Vec<Ciphertext>> {
        let n = self.count(4)?;
        let rlwe = params.rlwe();
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let obj = self.object()?;
            let ct = Ciphertext::from_bytes(rlwe, obj, obj.len())?;
            if ct.size() != 2 || ct.level() != rlwe.max_level() || ct.scale() != 1.0 {
                return Err(malformed(
                    "BFV ciphertexts must have two parts, the top level and scale 1",
                ));
            }
            out.push(ct);
        }
        Ok(out)
    }

    fn online(&mut self, p: u64) -> Result<OnlineValues> {
        let round = self.u64()?;
        let query = self.u32()?;
        let layer = self.u16()?;
        let n = self.u32()? as usize;
        let len = n
            .checked_mul(value_bits(p) as usize)
            .map(|b| b.div_ceil(8))
            .ok_or_else(|| malformed("value count overflows"))?;
        let values = unpack(self.take(len)?, n, p)?;
        Ok(OnlineValues {
            round,
            query,
            layer,
            values,
        })
    }

    fn versions(&mut self) -> Result<Ready> {
        let model_version = self.u64()?;
        let n = self.count(8)?;
        let layer_versions = (0..n).map(|_| self.u64()).collect::<Result<Vec<_>>>()?;
        Ok(Ready {
            model_version,
            layer_versions,
        })
    }
}

fn open_envelope(bytes: &[u8], limit: usize) -> Result<(InferenceKind, Cursor<'_>)> {
    let (code, c) = crate::messages::open_envelope(bytes, limit)?;
    let kind = InferenceKind::from_code(code)
        .ok_or_else(|| malformed(format!("type {code} is not an inference message")))?;
    Ok((kind, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_at_odd_widths() {
        for p in [3u64, 257, (1 << 37) - 25, (1 << 41) - 21] {
            let vals: Vec<u64> = (0..37)
                .map(|i| (i * 0x9E37_79B9_7F4A_7C15u64) % p)
                .collect();
            let mut out = Vec::new();
            pack(&vals, value_bits(p), &mut out);
            assert_eq!(out.len(), packed_len(vals.len(), p));
            assert_eq!(unpack(&out, vals.len(), p).unwrap(), vals);
        }
    }
}
