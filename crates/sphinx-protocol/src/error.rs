//! The error type of `sphinx-protocol`.

use crate::inference::messages::InferenceKind;
use crate::messages::MessageKind;

/// Everything that can go wrong in a protocol run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An error of the homomorphic-encryption engine.
    #[error(transparent)]
    He(#[from] sphinx_he::HeError),
    /// An error of the differential-privacy layer.
    #[error(transparent)]
    Dp(#[from] sphinx_dp::DpError),
    /// An error of the neural-network layer.
    #[error(transparent)]
    Nn(#[from] sphinx_nn::NnError),
    /// The next step would take ε over the client's budget; nothing was sent.
    #[error("privacy budget exhausted: one more step would exceed ε = {budget}")]
    BudgetExhausted {
        /// The budget's ε.
        budget: f64,
    },
    /// A message arrived that the receiver's state does not expect.
    #[error("unexpected {got:?} message: expected {expected}")]
    UnexpectedMessage {
        /// What arrived.
        got: MessageKind,
        /// What the state machine waits for.
        expected: &'static str,
    },
    /// A message's content does not fit the session (wrong layer, count, level, step).
    #[error("invalid {kind:?} message: {reason}")]
    InvalidMessage {
        /// The message type.
        kind: MessageKind,
        /// What is wrong.
        reason: String,
    },
    /// The sampled batch does not fit in one ciphertext's slots.
    #[error("batch of {batch} samples exceeds the {slots} slots of a ciphertext")]
    BatchTooLarge {
        /// Realized batch size.
        batch: usize,
        /// Slots per ciphertext.
        slots: usize,
    },
    /// Bytes that are not a valid message (truncated, oversized, wrong magic or version,
    /// trailing data, bad counts).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A network frame's length prefix exceeds the receiver's limit (checked before
    /// anything is allocated; see [`crate::wire`]).
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// The announced body length.
        len: u64,
        /// The receiver's limit.
        limit: usize,
    },
    /// An embedded HE object failed `sphinx-he`'s validating decoder.
    #[error(transparent)]
    Decode(#[from] sphinx_he::DecodeError),
    /// The model cannot run in this protocol (e.g. no parameterized layer).
    #[error("unsupported model: {0}")]
    UnsupportedModel(String),
    /// An inference message arrived that the receiver's state does not expect.
    #[error("unexpected {got:?} message: expected {expected}")]
    UnexpectedInference {
        /// What arrived.
        got: InferenceKind,
        /// What the state machine waits for.
        expected: &'static str,
    },
    /// An inference message's content does not fit the session.
    #[error("invalid {kind:?} message: {reason}")]
    InvalidInference {
        /// The message type.
        kind: InferenceKind,
        /// What is wrong.
        reason: String,
    },
    /// Preprocessed inference material was computed for weights that have since changed:
    /// the listed layers of the round must be refreshed (nothing was consumed by the
    /// server; the client's mask slot is burned).
    #[error(
        "preprocessing round {round} is stale for layers {layers:?} (model version {model_version})"
    )]
    StaleModel {
        /// The preprocessing round.
        round: u64,
        /// Parameterized layers whose material is stale or missing.
        layers: Vec<usize>,
        /// The server's current model version.
        model_version: u64,
    },
    /// A one-time inference mask was offered for a second use (or out of order).
    #[error("mask of round {round}, query {query}, layer {layer} already used or out of order")]
    MaskReused {
        /// The preprocessing round.
        round: u64,
        /// The query slot.
        query: u32,
        /// The parameterized layer.
        layer: usize,
    },
    /// No fresh preprocessed masks are left: run another preprocessing round.
    #[error("no fresh preprocessed masks left; run preprocessing")]
    MasksExhausted,
}

/// `Result` with [`ProtocolError`].
pub type Result<T> = std::result::Result<T, ProtocolError>;
