//! The network wire protocol: length-delimited, versioned frames that carry requests from a
//! client to a `sphinx server` and its responses. Pure bytes: this module knows nothing of
//! sockets or TLS (the `sphinx-server` and `sphinx-client` crates move the frames).
//!
//! # Frame
//!
//! ```text
//! u32 length L | magic "SPXW" | u16 version | u8 kind | u8 flags = 0 | u64 seq | payload
//!              \______________________ L bytes (the frame body) ______________________/
//! ```
//!
//! All integers are little-endian. `L` counts the 16-byte header and the payload; a reader
//! checks `L` against its limit ([`body_len`]) *before* allocating anything for the body.
//! `seq` is chosen by the client, strictly increasing on each connection (a repeated or
//! smaller `seq` is a replay and is refused with [`ErrorCode::Replay`]); every response
//! echoes the `seq` of the request it answers.
//!
//! Payloads use a fixed hand-written layout, like the training messages of
//! [`crate::messages`]: a handful of integers, short UTF-8 strings (`u16` length) and raw
//! byte tails. Opaque payloads (a [`Setup`](crate::messages::Setup), a training
//! [`ClientMessage`](crate::messages::ClientMessage) or
//! [`ServerMessage`](crate::messages::ServerMessage), inference messages) run to the end of
//! the frame, so a message's own `encode()` bytes pass through unchanged and are decoded,
//! with their own validation and limits, by the receiver that knows the session's
//! parameters.
//!
//! # Contract between client and server
//!
//! | request (client → server) | payload | responses (server → client) |
//! |---|---|---|
//! | [`Request::Register`] | account name | [`Response::Registered`] (the token, shown once) |
//! | [`Request::Auth`] | account name, 32-byte token | [`Response::Authenticated`] |
//! | [`Request::CreateModel`] | encoded `Setup` | [`Response::ModelCreated`] |
//! | [`Request::ListModels`] | — | [`Response::Models`] |
//! | [`Request::Train`] | model id, encoded `ClientMessage` | zero or more [`Response::Training`] (each an encoded `ServerMessage`, streamed as the server computes them), then [`Response::StepState`] |
//! | [`Request::Status`] | model id | [`Response::Status`] |
//! | [`Request::Export`] | model id | [`Response::Exported`] (an encoded `ServerMessage::ModelExport` of the last committed step) |
//! | [`Request::Delete`] | model id | [`Response::Deleted`] |
//! | [`Request::Inference`] | model id, opaque inference message | zero or more [`Response::Inference`] (the inference role's replies, streamed), then [`Response::InferenceDone`] |
//!
//! Any request may instead be answered by [`Response::Error`] (a code and a message that
//! never carries secrets); `Error`, like every response but `Training`, ends the answer to
//! its request (`Inference` does not end it either). The first request on a connection must be `Auth` or `Register`; a
//! connection serves one request at a time.
//!
//! Training over the network: the client sends `CreateModel` once, then for each message
//! its `sphinx_protocol::client::Client` produces, one `Train` request; the server applies
//! it to the model's [`Server`](crate::server::Server), returns the replies and drains
//! `poll()`, then ends with `StepState { committed_step, .. }`. A step is committed (stored
//! atomically) when the server has applied its `NoisyGradient`; a step interrupted before
//! that (lost connection, server crash) is rolled back, and the client redoes it from
//! `committed_step`. An unfinished step lives only as long as its connection: to abandon
//! one, reconnect.
//!
//! ```
//! use sphinx_protocol::wire::{AccountName, FrameDecoder, ModelId, Request, Response, Token};
//!
//! // Client: authenticate, then ask for the status of model 7.
//! let account = AccountName::new("clinic-a")?;
//! let token = Token::from_hex(&"ab".repeat(32))?;
//! let mut stream = Request::Auth { account, token }.to_frame(1)?;
//! stream.extend(Request::Status { model: ModelId(7) }.to_frame(2)?);
//!
//! // Server: cut the byte stream into frames, refusing oversized ones before allocating.
//! let mut decoder = FrameDecoder::new(1 << 20);
//! decoder.push(&stream);
//! let (seq, first) = Request::from_body(&decoder.next_frame()?.expect("a whole frame"))?;
//! assert_eq!(seq, 1);
//! assert!(matches!(first, Request::Auth { .. }));
//! let (seq, second) = Request::from_body(&decoder.next_frame()?.expect("a whole frame"))?;
//! assert_eq!((seq, second), (2, Request::Status { model: ModelId(7) }));
//!
//! // Server → client: responses echo the request's sequence number.
//! let reply = Response::Deleted { model: ModelId(7) }.to_frame(2)?;
//! let mut decoder = FrameDecoder::new(1 << 20);
//! decoder.push(&reply);
//! let (seq, resp) = Response::from_body(&decoder.next_frame()?.expect("a whole frame"))?;
//! assert_eq!((seq, resp), (2, Response::Deleted { model: ModelId(7) }));
//! # Ok::<(), sphinx_protocol::ProtocolError>(())
//! ```

use rand::{CryptoRng, RngCore};
use zeroize::Zeroize;

use sphinx_he::Parameters;

use crate::codec::{Cursor, malformed};
use crate::error::{ProtocolError, Result};
use crate::messages::{ClientMessage, ServerMessage};

/// Frame magic.
pub const WIRE_MAGIC: [u8; 4] = *b"SPXW";

/// The wire version this crate speaks.
pub const WIRE_VERSION: u16 = 1;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Bytes of the frame header (magic, version, kind, flags, seq).
pub const HEADER_LEN: usize = 4 + 2 + 1 + 1 + 8;

/// Bytes of a frame body before the raw payload of a `Train`, `Inference`, `Training`,
/// `Exported` or `Inference` reply frame (the header and the model id). A reader may read
/// these apart from the rest so that the payload lands in a buffer of its own and is never
/// copied ([`Request::from_split_body`], [`Response::from_split_body`]).
pub const PAYLOAD_OFFSET: usize = HEADER_LEN + 8;

/// Default limit on a frame body (header and payload): the largest training message of the
/// paper's MNIST CNN, the second convolution's backward delta (1024 replicated and 384 packed
/// seeded ciphertexts at batch 500), is about 51 MB.
pub const DEFAULT_MAX_FRAME: usize = 128 << 20;

/// Bytes a peer reads from its socket ahead of TLS: rustls asks for at most 4 KiB per
/// read, so without a buffer a training reply of tens of megabytes costs thousands of
/// `recv` calls (and, on the server, task wake-ups) per step. Nothing on the wire depends
/// on it.
pub const SOCKET_READ_BUFFER: usize = 256 * 1024;

/// Limit on a frame body before the connection has authenticated.
pub const PRE_AUTH_MAX_FRAME: usize = 4 << 10;

/// Longest account name, in bytes.
pub const MAX_ACCOUNT_LEN: usize = 64;

/// Longest error message, in bytes (longer ones are cut at a character boundary).
pub const MAX_ERROR_LEN: usize = 1024;

/// Bytes of an access token.
pub const TOKEN_LEN: usize = 32;

/// A model's identifier, unique on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelId(pub u64);

impl std::fmt::Display for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An account name: 1 to [`MAX_ACCOUNT_LEN`] bytes of ASCII letters, digits, `.`, `_`, `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountName(String);

impl AccountName {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for an empty, too long or non-conforming name.
    pub fn new(name: &str) -> Result<Self> {
        let ok = !name.is_empty()
            && name.len() <= MAX_ACCOUNT_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(malformed(format!(
                "account names are 1 to {MAX_ACCOUNT_LEN} characters of A-Z a-z 0-9 . _ -"
            )))
        }
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AccountName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A bearer token: 32 uniformly random bytes, written as 64 lowercase hex digits. The
/// server stores only its SHA-256. `Debug` is redacted and the bytes are zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Token([u8; TOKEN_LEN]);

impl Token {
    /// A fresh token from a cryptographic generator.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut t = [0u8; TOKEN_LEN];
        rng.fill_bytes(&mut t);
        Self(t)
    }

    /// The token's bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; TOKEN_LEN]) -> Self {
        Self(bytes)
    }

    /// The token's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; TOKEN_LEN] {
        &self.0
    }

    /// Parses 64 hex digits (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for anything else.
    pub fn from_hex(hex: &str) -> Result<Self> {
        let hex = hex.trim().as_bytes();
        if hex.len() != 2 * TOKEN_LEN {
            return Err(malformed(format!(
                "a token is {} hex digits",
                2 * TOKEN_LEN
            )));
        }
        let digit = |c: u8| -> Result<u8> {
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(malformed("a token is hex digits only")),
            }
        };
        let mut t = [0u8; TOKEN_LEN];
        for (out, pair) in t.iter_mut().zip(hex.chunks_exact(2)) {
            *out = (digit(pair[0])? << 4) | digit(pair[1])?;
        }
        Ok(Self(t))
    }

    /// 64 lowercase hex digits.
    #[must_use]
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Why a request failed, as carried by [`Response::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame or its payload is not valid (includes an unknown wire version).
    Malformed,
    /// The frame exceeds the server's limit; the connection is closed.
    FrameTooLarge,
    /// A request other than `Auth` / `Register` before authentication.
    Unauthenticated,
    /// Unknown account or wrong token.
    AuthFailed,
    /// The sequence number did not increase.
    Replay,
    /// No such model for this account (also for other accounts' models).
    NotFound,
    /// The model is being trained on another connection.
    Busy,
    /// The training state machine rejected the message (wrong step, layer, size, …).
    Protocol,
    /// The account's storage quota would be exceeded.
    QuotaExceeded,
    /// `Register` for a name that exists.
    AccountExists,
    /// `Register` on a server that does not allow it.
    RegistrationClosed,
    /// A request this server does not support.
    Unsupported,
    /// The server is shutting down.
    ShuttingDown,
    /// Too many connections; try later.
    TooManyConnections,
    /// A server-side failure (storage); details are in the server's log.
    Internal,
    /// A code this build does not know.
    Unknown(u16),
}

impl ErrorCode {
    /// The code on the wire.
    #[must_use]
    pub fn code(self) -> u16 {
        match self {
            Self::Malformed => 1,
            Self::FrameTooLarge => 2,
            Self::Unauthenticated => 3,
            Self::AuthFailed => 4,
            Self::Replay => 5,
            Self::NotFound => 6,
            Self::Busy => 7,
            Self::Protocol => 8,
            Self::QuotaExceeded => 9,
            Self::AccountExists => 10,
            Self::RegistrationClosed => 11,
            Self::Unsupported => 12,
            Self::ShuttingDown => 13,
            Self::TooManyConnections => 14,
            Self::Internal => 15,
            Self::Unknown(c) => c,
        }
    }

    /// The code for a wire value.
    #[must_use]
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => Self::Malformed,
            2 => Self::FrameTooLarge,
            3 => Self::Unauthenticated,
            4 => Self::AuthFailed,
            5 => Self::Replay,
            6 => Self::NotFound,
            7 => Self::Busy,
            8 => Self::Protocol,
            9 => Self::QuotaExceeded,
            10 => Self::AccountExists,
            11 => Self::RegistrationClosed,
            12 => Self::Unsupported,
            13 => Self::ShuttingDown,
            14 => Self::TooManyConnections,
            15 => Self::Internal,
            c => Self::Unknown(c),
        }
    }
}

/// What the server tells about one of the account's models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model.
    pub model: ModelId,
    /// Committed training steps.
    pub committed_step: u64,
    /// Bytes the model occupies in the server's storage (counted against the quota).
    pub stored_bytes: u64,
    /// Whether a connection is training it now.
    pub busy: bool,
    /// The architecture (`sphinx_nn::model::ModelSpec` as JSON).
    pub architecture: String,
}

/// Client → server.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Request {
    /// Create an account (only where the server allows self-registration).
    Register {
        /// The new account.
        account: AccountName,
    },
    /// Authenticate this connection.
    Auth {
        /// The account.
        account: AccountName,
        /// Its token.
        token: Token,
    },
    /// Create a model from an encoded [`Setup`](crate::messages::Setup) message.
    CreateModel {
        /// `ClientMessage::Setup(..).encode()` bytes.
        setup: Vec<u8>,
    },
    /// List this account's models.
    ListModels,
    /// Deliver one training message.
    Train {
        /// The model.
        model: ModelId,
        /// `ClientMessage::encode()` bytes (not `Setup`).
        message: Vec<u8>,
    },
    /// A model's committed step.
    Status {
        /// The model.
        model: ModelId,
    },
    /// The model as of its last committed step.
    Export {
        /// The model.
        model: ModelId,
    },
    /// Delete a model and everything stored for it.
    Delete {
        /// The model.
        model: ModelId,
    },
    /// A private-inference message (opaque to the wire layer).
    Inference {
        /// The model.
        model: ModelId,
        /// The inference protocol's bytes.
        payload: Vec<u8>,
    },
}

/// Server → client.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Response {
    /// The account was created; the token is shown only here.
    Registered {
        /// The account.
        account: AccountName,
        /// Its token.
        token: Token,
    },
    /// The connection is authenticated.
    Authenticated {
        /// The account.
        account: AccountName,
    },
    /// The model was created (step 0).
    ModelCreated {
        /// Its id.
        model: ModelId,
    },
    /// The account's models.
    Models {
        /// One entry per model, by id.
        models: Vec<ModelInfo>,
    },
    /// One training reply (more follow until [`Response::StepState`]).
    Training {
        /// The model.
        model: ModelId,
        /// `ServerMessage::encode()` bytes.
        message: Vec<u8>,
    },
    /// Ends the answer to a `Train` request.
    StepState {
        /// The model.
        model: ModelId,
        /// Steps committed to storage.
        committed_step: u64,
    },
    /// Answer to `Status`.
    Status(ModelInfo),
    /// Answer to `Export`.
    Exported {
        /// The model.
        model: ModelId,
        /// `ServerMessage::ModelExport(..).encode()` bytes.
        message: Vec<u8>,
    },
    /// The model is gone.
    Deleted {
        /// The model.
        model: ModelId,
    },
    /// One private-inference reply (opaque to the wire layer; more follow until
    /// [`Response::InferenceDone`]).
    Inference {
        /// The model.
        model: ModelId,
        /// The inference protocol's bytes.
        payload: Vec<u8>,
    },
    /// Ends the answer to an `Inference` request.
    InferenceDone {
        /// The model.
        model: ModelId,
    },
    /// The request failed.
    Error {
        /// Why.
        code: ErrorCode,
        /// For humans; never contains secrets.
        message: String,
    },
}

/// Checks a frame's length prefix against `max` (bytes of header and payload) and returns
/// the body length. Call it before allocating the body.
///
/// # Errors
/// [`ProtocolError::FrameTooLarge`] over `max`; [`ProtocolError::Malformed`] for a body
/// shorter than the header.
pub fn body_len(prefix: [u8; LENGTH_PREFIX_LEN], max: usize) -> Result<usize> {
    let len = u32::from_le_bytes(prefix);
    if u64::from(len) > max as u64 {
        return Err(ProtocolError::FrameTooLarge {
            len: u64::from(len),
            limit: max,
        });
    }
    let len = len as usize;
    if len < HEADER_LEN {
        return Err(malformed(format!(
            "frame of {len} bytes is shorter than its {HEADER_LEN}-byte header"
        )));
    }
    Ok(len)
}

/// Cuts a byte stream into frame bodies, checking each length prefix before buffering the
/// body: for transports that deliver arbitrary chunks.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: usize,
}

impl FrameDecoder {
    /// A decoder that refuses bodies over `max` bytes.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
        }
    }

    /// Changes the limit (e.g. after authentication).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Appends received bytes. Call [`next_frame`](Self::next_frame) after each push so an
    /// oversized length is refused before its body accumulates.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame body (header and payload), or `None` until more bytes arrive.
    ///
    /// # Errors
    /// As [`body_len`]; the decoder should then be dropped (the stream cannot resync).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(prefix) = self.buf.first_chunk::<LENGTH_PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = body_len(*prefix, self.max)?;
        let end = LENGTH_PREFIX_LEN + len;
        if self.buf.len() < end {
            return Ok(None);
        }
        let rest = self.buf.split_off(end);
        let mut frame = std::mem::replace(&mut self.buf, rest);
        frame.drain(..LENGTH_PREFIX_LEN);
        Ok(Some(frame))
    }
}

/// Request and response kinds on the wire (disjoint ranges, so a frame sent the wrong way is
/// refused as malformed).
mod kind {
    pub const REGISTER: u8 = 1;
    pub const AUTH: u8 = 2;
    pub const CREATE_MODEL: u8 = 3;
    pub const LIST_MODELS: u8 = 4;
    pub const TRAIN: u8 = 5;
    pub const STATUS: u8 = 6;
    pub const EXPORT: u8 = 7;
    pub const DELETE: u8 = 8;
    pub const INFERENCE: u8 = 9;

    pub const REGISTERED: u8 = 129;
    pub const AUTHENTICATED: u8 = 130;
    pub const MODEL_CREATED: u8 = 131;
    pub const MODELS: u8 = 132;
    pub const TRAINING: u8 = 133;
    pub const STEP_STATE: u8 = 134;
    pub const STATUS_REPLY: u8 = 135;
    pub const EXPORTED: u8 = 136;
    pub const DELETED: u8 = 137;
    pub const INFERENCE_REPLY: u8 = 138;
    pub const INFERENCE_DONE: u8 = 139;
    pub const ERROR: u8 = 255;
}

/// Builds one frame: prefix, header, payload.
struct FrameWriter {
    out: Vec<u8>,
}

impl FrameWriter {
    fn new(kind: u8, seq: u64, payload_hint: usize) -> Self {
        let mut out = Vec::with_capacity(LENGTH_PREFIX_LEN + HEADER_LEN + payload_hint);
        out.extend_from_slice(&[0; LENGTH_PREFIX_LEN]);
        out.extend_from_slice(&WIRE_MAGIC);
        out.extend_from_slice(&WIRE_VERSION.to_le_bytes());
        out.push(kind);
        out.push(0);
        out.extend_from_slice(&seq.to_le_bytes());
        Self { out }
    }

    fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }

    fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.out.extend_from_slice(v);
        self
    }

    /// A string of at most `u16::MAX` bytes (callers bound it further).
    fn short_str(&mut self, s: &str) -> Result<&mut Self> {
        let len = u16::try_from(s.len()).map_err(|_| malformed("string over 65535 bytes"))?;
        Ok(self.u16(len).bytes(s.as_bytes()))
    }

    fn long_str(&mut self, s: &str) -> Result<&mut Self> {
        let len = u32::try_from(s.len()).map_err(|_| malformed("string over 4 GiB"))?;
        self.out.extend_from_slice(&len.to_le_bytes());
        Ok(self.bytes(s.as_bytes()))
    }

    fn finish(mut self) -> Result<Vec<u8>> {
        let len = self.out.len() - LENGTH_PREFIX_LEN;
        let len = u32::try_from(len)
            .map_err(|_| malformed(format!("frame body of {len} bytes exceeds the u32 length")))?;
        self.out[..LENGTH_PREFIX_LEN].copy_from_slice(&len.to_le_bytes());
        Ok(self.out)
    }
}

impl Cursor<'_> {
    fn model(&mut self) -> Result<ModelId> {
        Ok(ModelId(self.u64()?))
    }

    fn utf8(bytes: &[u8]) -> Result<String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| malformed("string is not UTF-8"))
    }

    fn short_str(&mut self, max: usize) -> Result<String> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(malformed(format!("string of {n} bytes exceeds {max}")));
        }
        Self::utf8(self.take(n)?)
    }

    fn long_str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        Self::utf8(self.take(n)?)
    }

    fn account(&mut self) -> Result<AccountName> {
        AccountName::new(&self.short_str(MAX_ACCOUNT_LEN)?)
    }

    fn rest(&mut self) -> Vec<u8> {
        let out = self.bytes.to_vec();
        self.bytes = &[];
        out
    }
}

/// Checks the header of a frame body; returns the kind, the sequence number and the payload.
fn open(body: &[u8]) -> Result<(u8, u64, Cursor<'_>)> {
    let mut r = Cursor::new(body);
    if r.array::<4>()? != WIRE_MAGIC {
        return Err(malformed("not a Sphinx wire frame (magic)"));
    }
    let version = r.u16()?;
    if version != WIRE_VERSION {
        return Err(malformed(format!(
            "wire version {version}; this build speaks {WIRE_VERSION}"
        )));
    }
    let kind = r.u8()?;
    if r.u8()? != 0 {
        return Err(malformed("flags must be 0"));
    }
    let seq = r.u64()?;
    Ok((kind, seq, r))
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The frame of a message kind whose body is a model id and a raw payload, the payload
/// written in place by `encode` (`payload_len` bytes).
fn model_frame(
    kind: u8,
    seq: u64,
    model: ModelId,
    payload_len: usize,
    encode: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<Vec<u8>> {
    let mut w = FrameWriter::new(kind, seq, 8 + payload_len);
    w.u64(model.0);
    encode(&mut w.out)?;
    w.finish()
}

/// Kind, sequence number and model of a split body's `head` when it is exactly the part
/// before the payload of one of `kinds` (whose payload is then the tail as it is).
fn model_head(head: &[u8], kinds: &[u8]) -> Result<Option<(u8, u64, ModelId)>> {
    if head.len() != PAYLOAD_OFFSET {
        return Ok(None);
    }
    let (k, seq, mut r) = open(head)?;
    if !kinds.contains(&k) {
        return Ok(None);
    }
    let model = r.model()?;
    r.finish()?;
    Ok(Some((k, seq, model)))
}

/// A body read in two parts, whole again (for frames whose payload is small).
fn joined(head: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(head.len() + tail.len());
    body.extend_from_slice(head);
    body.extend_from_slice(tail);
    body
}

impl Request {
    /// The whole frame (length prefix included) with sequence number `seq`.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] if the frame would exceed the `u32` length field.
    pub fn to_frame(&self, seq: u64) -> Result<Vec<u8>> {
        let w = match self {
            Self::Register { account } => {
                let mut w = FrameWriter::new(kind::REGISTER, seq, 2 + MAX_ACCOUNT_LEN);
                w.short_str(account.as_str())?;
                w
            }
            Self::Auth { account, token } => {
                let mut w = FrameWriter::new(kind::AUTH, seq, 2 + MAX_ACCOUNT_LEN + TOKEN_LEN);
                w.short_str(account.as_str())?.bytes(token.as_bytes());
                w
            }
            Self::CreateModel { setup } => {
                let mut w = FrameWriter::new(kind::CREATE_MODEL, seq, setup.len());
                w.bytes(setup);
                w
            }
            Self::ListModels => FrameWriter::new(kind::LIST_MODELS, seq, 0),
            Self::Train { model, message } => {
                let mut w = FrameWriter::new(kind::TRAIN, seq, 8 + message.len());
                w.u64(model.0).bytes(message);
                w
            }
            Self::Status { model } => {
                let mut w = FrameWriter::new(kind::STATUS, seq, 8);
                w.u64(model.0);
                w
            }
            Self::Export { model } => {
                let mut w = FrameWriter::new(kind::EXPORT, seq, 8);
                w.u64(model.0);
                w
            }
            Self::Delete { model } => {
                let mut w = FrameWriter::new(kind::DELETE, seq, 8);
                w.u64(model.0);
                w
            }
            Self::Inference { model, payload } => {
                let mut w = FrameWriter::new(kind::INFERENCE, seq, 8 + payload.len());
                w.u64(model.0).bytes(payload);
                w
            }
        };
        w.finish()
    }

    /// Decodes a frame body (as returned by [`FrameDecoder::next_frame`]): the sequence
    /// number and the request.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for a bad header, an unknown or server-side kind,
    /// truncation, an invalid account name or string, or trailing bytes.
    pub fn from_body(body: &[u8]) -> Result<(u64, Self)> {
        let (k, seq, mut r) = open(body)?;
        let req = match k {
            kind::REGISTER => Self::Register {
                account: r.account()?,
            },
            kind::AUTH => Self::Auth {
                account: r.account()?,
                token: Token(r.array()?),
            },
            kind::CREATE_MODEL => Self::CreateModel { setup: r.rest() },
            kind::LIST_MODELS => Self::ListModels,
            kind::TRAIN => Self::Train {
                model: r.model()?,
                message: r.rest(),
            },
            kind::STATUS => Self::Status { model: r.model()? },
            kind::EXPORT => Self::Export { model: r.model()? },
            kind::DELETE => Self::Delete { model: r.model()? },
            kind::INFERENCE => Self::Inference {
                model: r.model()?,
                payload: r.rest(),
            },
            other => return Err(malformed(format!("kind {other} is not a request"))),
        };
        r.finish()?;
        Ok((seq, req))
    }

    /// The frame of `Request::Train { model, message: message.encode(params)? }` with
    /// sequence number `seq`, the message encoded in place (no intermediate buffer).
    ///
    /// # Errors
    /// As [`ClientMessage::encode`] and [`to_frame`](Self::to_frame).
    pub fn train_frame(
        seq: u64,
        model: ModelId,
        message: &ClientMessage,
        params: &Parameters,
    ) -> Result<Vec<u8>> {
        model_frame(kind::TRAIN, seq, model, message.wire_len(params)?, |out| {
            message.encode_into(params, out)
        })
    }

    /// [`from_body`](Self::from_body) of a body read in two parts: `head`, its first
    /// [`PAYLOAD_OFFSET`] bytes (or all of a shorter body), and `tail`, the rest. The same
    /// result as decoding `head` followed by `tail`, but the payload of a `Train` or
    /// `Inference` request is `tail` itself, not a copy.
    ///
    /// # Errors
    /// As [`from_body`](Self::from_body).
    pub fn from_split_body(head: &[u8], tail: Vec<u8>) -> Result<(u64, Self)> {
        if let Some((k, seq, model)) = model_head(head, &[kind::TRAIN, kind::INFERENCE])? {
            let req = if k == kind::TRAIN {
                Self::Train {
                    model,
                    message: tail,
                }
            } else {
                Self::Inference {
                    model,
                    payload: tail,
                }
            };
            return Ok((seq, req));
        }
        Self::from_body(&joined(head, &tail))
    }

    /// A short name for logs (never the payload).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Register { .. } => "register",
            Self::Auth { .. } => "auth",
            Self::CreateModel { .. } => "create_model",
            Self::ListModels => "list_models",
            Self::Train { .. } => "train",
            Self::Status { .. } => "status",
            Self::Export { .. } => "export",
            Self::Delete { .. } => "delete",
            Self::Inference { .. } => "inference",
        }
    }
}

fn put_info(w: &mut FrameWriter, m: &ModelInfo) -> Result<()> {
    w.u64(m.model.0)
        .u64(m.committed_step)
        .u64(m.stored_bytes)
        .u8(u8::from(m.busy))
        .long_str(&m.architecture)?;
    Ok(())
}

fn get_info(r: &mut Cursor<'_>) -> Result<ModelInfo> {
    let model = r.model()?;
    let committed_step = r.u64()?;
    let stored_bytes = r.u64()?;
    let busy = match r.u8()? {
        0 => false,
        1 => true,
        b => return Err(malformed(format!("boolean byte {b}"))),
    };
    let architecture = r.long_str()?;
    Ok(ModelInfo {
        model,
        committed_step,
        stored_bytes,
        busy,
        architecture,
    })
}

/// Smallest encoded [`ModelInfo`]: bounds a model count by the bytes present.
const MIN_INFO_LEN: usize = 8 + 8 + 8 + 1 + 4;

impl Response {
    /// An error response, its message cut to [`MAX_ERROR_LEN`] bytes.
    #[must_use]
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        let message: String = message.into();
        Self::Error {
            code,
            message: truncate_utf8(&message, MAX_ERROR_LEN).to_owned(),
        }
    }

    /// Whether this response ends the answer to its request (all but `Training` and
    /// `Inference`).
    #[must_use]
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::Training { .. } | Self::Inference { .. })
    }

    /// The whole frame (length prefix included) with sequence number `seq`.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] if the frame would exceed the `u32` length field.
    pub fn to_frame(&self, seq: u64) -> Result<Vec<u8>> {
        let w = match self {
            Self::Registered { account, token } => {
                let mut w = FrameWriter::new(kind::REGISTERED, seq, 2 + MAX_ACCOUNT_LEN + 32);
                w.short_str(account.as_str())?.bytes(token.as_bytes());
                w
            }
            Self::Authenticated { account } => {
                let mut w = FrameWriter::new(kind::AUTHENTICATED, seq, 2 + MAX_ACCOUNT_LEN);
                w.short_str(account.as_str())?;
                w
            }
            Self::ModelCreated { model } => {
                let mut w = FrameWriter::new(kind::MODEL_CREATED, seq, 8);
                w.u64(model.0);
                w
            }
            Self::Models { models } => {
                let mut w = FrameWriter::new(kind::MODELS, seq, 4 + models.len() * 64);
                let n = u32::try_from(models.len()).map_err(|_| malformed("too many models"))?;
                w.bytes(&n.to_le_bytes());
                for m in models {
                    put_info(&mut w, m)?;
                }
                w
            }
            Self::Training { model, message } => {
                let mut w = FrameWriter::new(kind::TRAINING, seq, 8 + message.len());
                w.u64(model.0).bytes(message);
                w
            }
            Self::StepState {
                model,
                committed_step,
            } => {
                let mut w = FrameWriter::new(kind::STEP_STATE, seq, 16);
                w.u64(model.0).u64(*committed_step);
                w
            }
            Self::Status(info) => {
                let mut w = FrameWriter::new(kind::STATUS_REPLY, seq, 64);
                put_info(&mut w, info)?;
                w
            }
            Self::Exported { model, message } => {
                let mut w = FrameWriter::new(kind::EXPORTED, seq, 8 + message.len());
                w.u64(model.0).bytes(message);
                w
            }
            Self::Deleted { model } => {
                let mut w = FrameWriter::new(kind::DELETED, seq, 8);
                w.u64(model.0);
                w
            }
            Self::Inference { model, payload } => {
                let mut w = FrameWriter::new(kind::INFERENCE_REPLY, seq, 8 + payload.len());
                w.u64(model.0).bytes(payload);
                w
            }
            Self::InferenceDone { model } => {
                let mut w = FrameWriter::new(kind::INFERENCE_DONE, seq, 8);
                w.u64(model.0);
                w
            }
            Self::Error { code, message } => {
                let mut w = FrameWriter::new(kind::ERROR, seq, 4 + message.len());
                w.u16(code.code())
                    .short_str(truncate_utf8(message, MAX_ERROR_LEN))?;
                w
            }
        };
        w.finish()
    }

    /// The frame of `Response::Training { model, message: message.encode(params)? }` with
    /// sequence number `seq`, the message encoded in place (no intermediate buffer).
    ///
    /// # Errors
    /// As [`ServerMessage::encode`] and [`to_frame`](Self::to_frame).
    pub fn training_frame(
        seq: u64,
        model: ModelId,
        message: &ServerMessage,
        params: &Parameters,
    ) -> Result<Vec<u8>> {
        model_frame(
            kind::TRAINING,
            seq,
            model,
            message.wire_len(params)?,
            |out| message.encode_into(params, out),
        )
    }

    /// [`from_body`](Self::from_body) of a body read in two parts, as
    /// [`Request::from_split_body`]: the payload of a `Training`, `Exported` or `Inference`
    /// response is `tail` itself, not a copy.
    ///
    /// # Errors
    /// As [`from_body`](Self::from_body).
    pub fn from_split_body(head: &[u8], tail: Vec<u8>) -> Result<(u64, Self)> {
        if let Some((k, seq, model)) = model_head(
            head,
            &[kind::TRAINING, kind::EXPORTED, kind::INFERENCE_REPLY],
        )? {
            let resp = match k {
                kind::TRAINING => Self::Training {
                    model,
                    message: tail,
                },
                kind::EXPORTED => Self::Exported {
                    model,
                    message: tail,
                },
                _ => Self::Inference {
                    model,
                    payload: tail,
                },
            };
            return Ok((seq, resp));
        }
        Self::from_body(&joined(head, &tail))
    }

    /// Decodes a frame body: the sequence number and the response.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for a bad header, an unknown or client-side kind,
    /// truncation, an invalid string, a model count beyond the bytes present, or trailing
    /// bytes.
    pub fn from_body(body: &[u8]) -> Result<(u64, Self)> {
        let (k, seq, mut r) = open(body)?;
        let resp = match k {
            kind::REGISTERED => Self::Registered {
                account: r.account()?,
                token: Token(r.array()?),
            },
            kind::AUTHENTICATED => Self::Authenticated {
                account: r.account()?,
            },
            kind::MODEL_CREATED => Self::ModelCreated { model: r.model()? },
            kind::MODELS => {
                let n = r.u32()? as usize;
                if n.saturating_mul(MIN_INFO_LEN) > r.bytes.len() {
                    return Err(malformed(format!("{n} models exceed the bytes left")));
                }
                let models = (0..n)
                    .map(|_| get_info(&mut r))
                    .collect::<Result<Vec<_>>>()?;
                Self::Models { models }
            }
            kind::TRAINING => Self::Training {
                model: r.model()?,
                message: r.rest(),
            },
            kind::STEP_STATE => Self::StepState {
                model: r.model()?,
                committed_step: r.u64()?,
            },
            kind::STATUS_REPLY => Self::Status(get_info(&mut r)?),
            kind::EXPORTED => Self::Exported {
                model: r.model()?,
                message: r.rest(),
            },
            kind::DELETED => Self::Deleted { model: r.model()? },
            kind::INFERENCE_REPLY => Self::Inference {
                model: r.model()?,
                payload: r.rest(),
            },
            kind::INFERENCE_DONE => Self::InferenceDone { model: r.model()? },
            kind::ERROR => Self::Error {
                code: ErrorCode::from_code(r.u16()?),
                message: r.short_str(MAX_ERROR_LEN)?,
            },
            other => return Err(malformed(format!("kind {other} is not a response"))),
        };
        r.finish()?;
        Ok((seq, resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn token() -> Token {
        Token::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(1))
    }

    fn requests() -> Vec<Request> {
        let account = AccountName::new("clinic_a-1.x").unwrap();
        vec![
            Request::Register {
                account: account.clone(),
            },
            Request::Auth {
                account,
                token: token(),
            },
            Request::CreateModel {
                setup: vec![1, 2, 3, 4, 5],
            },
            Request::ListModels,
            Request::Train {
                model: ModelId(3),
                message: b"SPXP...".to_vec(),
            },
            Request::Train {
                model: ModelId(3),
                message: Vec::new(),
            },
            Request::Status { model: ModelId(9) },
            Request::Export {
                model: ModelId(u64::MAX),
            },
            Request::Delete { model: ModelId(0) },
            Request::Inference {
                model: ModelId(2),
                payload: vec![0; 100],
            },
        ]
    }

    fn responses() -> Vec<Response> {
        let info = ModelInfo {
            model: ModelId(4),
            committed_step: 17,
            stored_bytes: 1 << 33,
            busy: true,
            architecture: r#"{"input":[1,4]}"#.into(),
        };
        vec![
            Response::Registered {
                account: AccountName::new("a").unwrap(),
                token: token(),
            },
            Response::Authenticated {
                account: AccountName::new("b").unwrap(),
            },
            Response::ModelCreated { model: ModelId(1) },
            Response::Models { models: vec![] },
            Response::Models {
                models: vec![info.clone(), info.clone()],
            },
            Response::Training {
                model: ModelId(1),
                message: vec![7; 33],
            },
            Response::StepState {
                model: ModelId(1),
                committed_step: 5,
            },
            Response::Status(info),
            Response::Exported {
                model: ModelId(1),
                message: vec![1],
            },
            Response::Deleted { model: ModelId(1) },
            Response::Inference {
                model: ModelId(1),
                payload: vec![2, 3],
            },
            Response::InferenceDone { model: ModelId(1) },
            Response::error(ErrorCode::Busy, "model 1 is being trained"),
            Response::error(ErrorCode::Unknown(999), "é".repeat(600)),
        ]
    }

    fn body(frame: &[u8]) -> &[u8] {
        let len = body_len(frame[..4].try_into().unwrap(), usize::MAX).unwrap();
        assert_eq!(len + 4, frame.len());
        &frame[4..]
    }

    #[test]
    fn requests_round_trip_and_refuse_truncation_and_trailing_bytes() {
        for (i, req) in requests().into_iter().enumerate() {
            let frame = req.to_frame(i as u64 + 10).unwrap();
            let b = body(&frame);
            assert_eq!(Request::from_body(b).unwrap(), (i as u64 + 10, req.clone()));
            // A request is never a response.
            assert!(Response::from_body(b).is_err());
            for cut in 0..b.len() {
                let ok = Request::from_body(&b[..cut]);
                // Raw tails make a shorter tail a valid (different) message; anything else
                // truncated is refused.
                if let Ok((_, r)) = ok {
                    assert!(matches!(
                        r,
                        Request::CreateModel { .. }
                            | Request::Train { .. }
                            | Request::Inference { .. }
                    ));
                    assert_ne!(r, req);
                }
            }
            if !matches!(
                req,
                Request::CreateModel { .. } | Request::Train { .. } | Request::Inference { .. }
            ) {
                let mut long = b.to_vec();
                long.push(0);
                assert!(Request::from_body(&long).is_err(), "{req:?}");
            }
        }
    }

    #[test]
    fn responses_round_trip() {
        for (i, resp) in responses().into_iter().enumerate() {
            let frame = resp.to_frame(i as u64).unwrap();
            let b = body(&frame);
            let (seq, back) = Response::from_body(b).unwrap();
            assert_eq!(seq, i as u64);
            assert_eq!(back, resp);
            assert!(Request::from_body(b).is_err());
            assert_eq!(
                resp.is_final(),
                !matches!(resp, Response::Training { .. } | Response::Inference { .. })
            );
        }
    }

    #[test]
    fn split_bodies_decode_as_whole_ones() {
        // Every split of every frame body, whole or truncated, decodes as the body does.
        let requests = requests().into_iter().map(|r| r.to_frame(3).unwrap());
        let responses = responses().into_iter().map(|r| r.to_frame(4).unwrap());
        for frame in requests.chain(responses) {
            let whole = body(&frame);
            for end in [whole.len(), PAYLOAD_OFFSET, PAYLOAD_OFFSET - 1] {
                let b = &whole[..end.min(whole.len())];
                for cut in 0..=b.len() {
                    let (head, tail) = (&b[..cut], b[cut..].to_vec());
                    assert_eq!(
                        Request::from_split_body(head, tail.clone()).ok(),
                        Request::from_body(b).ok()
                    );
                    assert_eq!(
                        Response::from_split_body(head, tail).ok(),
                        Response::from_body(b).ok()
                    );
                }
            }
        }
    }

    #[test]
    fn long_error_messages_are_cut_at_a_char_boundary() {
        let Response::Error { message, .. } = Response::error(ErrorCode::Internal, "é".repeat(600))
        else {
            unreachable!()
        };
        assert!(message.len() <= MAX_ERROR_LEN);
        assert_eq!(message.chars().count(), MAX_ERROR_LEN / 2);
    }

    #[test]
    fn header_fields_are_checked() {
        let frame = Request::ListModels.to_frame(1).unwrap();
        // magic, version (two bytes), kind, flags.
        for (pos, value) in [(4, b'X'), (8, 2), (9, 1), (10, 200), (11, 1)] {
            let mut f = frame.clone();
            f[pos] = value;
            assert!(Request::from_body(&f[4..]).is_err(), "byte {pos}");
        }
    }

    #[test]
    fn oversized_and_undersized_lengths_are_refused_before_buffering() {
        let mut d = FrameDecoder::new(100);
        d.push(&101u32.to_le_bytes());
        assert!(matches!(
            d.next_frame(),
            Err(ProtocolError::FrameTooLarge {
                len: 101,
                limit: 100
            })
        ));
        let mut d = FrameDecoder::new(100);
        d.push(&3u32.to_le_bytes());
        assert!(matches!(d.next_frame(), Err(ProtocolError::Malformed(_))));
        assert!(body_len(u32::MAX.to_le_bytes(), DEFAULT_MAX_FRAME).is_err());
    }

    #[test]
    fn decoder_reassembles_frames_from_single_bytes() {
        let frames: Vec<Vec<u8>> = requests()
            .iter()
            .enumerate()
            .map(|(i, r)| r.to_frame(i as u64).unwrap())
            .collect();
        let stream: Vec<u8> = frames.concat();
        let mut d = FrameDecoder::new(1 << 16);
        let mut out = Vec::new();
        for b in stream {
            d.push(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(d.buffered(), 0);
        assert_eq!(out.len(), frames.len());
        for (f, req) in out.iter().zip(requests()) {
            assert_eq!(Request::from_body(f).unwrap().1, req);
        }
    }

    #[test]
    fn tokens_parse_hex_and_redact_debug() {
        let t = token();
        assert_eq!(Token::from_hex(&t.to_hex()).unwrap(), t);
        assert_eq!(Token::from_hex(&t.to_hex().to_uppercase()).unwrap(), t);
        assert!(Token::from_hex("abc").is_err());
        assert!(Token::from_hex(&"zz".repeat(32)).is_err());
        assert!(!format!("{t:?}").contains(&t.to_hex()[..8]));
    }

    #[test]
    fn account_names_are_validated() {
        for bad in ["", "a b", "ü", "x/y", &"a".repeat(65)] {
            assert!(AccountName::new(bad).is_err(), "{bad:?}");
        }
        assert!(AccountName::new(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn error_codes_round_trip() {
        for c in 0..=20u16 {
            assert_eq!(ErrorCode::from_code(c).code(), c);
        }
    }

    proptest! {
        /// Arbitrary bytes never panic either decoder.
        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Request::from_body(&bytes);
            let _ = Response::from_body(&bytes);
            let mut d = FrameDecoder::new(64);
            d.push(&bytes);
            while let Ok(Some(f)) = d.next_frame() {
                let _ = Request::from_body(&f);
            }
        }

        /// Corrupting one byte of a valid frame body never panics, and decoding either
        /// fails or yields a frame that encodes back to the corrupted bytes.
        #[test]
        fn corrupted_frames_are_refused_or_consistent(
            which in 0usize..10, pos in any::<prop::sample::Index>(), value in any::<u8>()
        ) {
            let frame = requests()[which].to_frame(5).unwrap();
            let mut b = frame[4..].to_vec();
            let i = pos.index(b.len());
            b[i] = value;
            if let Ok((seq, req)) = Request::from_body(&b) {
                let again = req.to_frame(seq).unwrap();
                prop_assert_eq!(&again[4..], &b[..]);
            }
        }

        /// Responses survive any sequence number and any payload.
        #[test]
        fn training_payloads_pass_through(seq in any::<u64>(), model in any::<u64>(),
                                          message in proptest::collection::vec(any::<u8>(), 0..300)) {
            let r = Response::Training { model: ModelId(model), message };
            let f = r.to_frame(seq).unwrap();
            prop_assert_eq!(Response::from_body(&f[4..]).unwrap(), (seq, r));
        }
    }
}
