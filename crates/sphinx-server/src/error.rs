//! The error type of `sphinx-server`.

use sphinx_protocol::ProtocolError;
use sphinx_protocol::wire::{AccountName, ErrorCode, ModelId};

/// Everything that can go wrong in the service. [`ServerError::code`] maps each to the
/// [`ErrorCode`] a client sees; the `Display` text is what it reads (never a secret).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Reading or writing files or sockets.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// TLS configuration or handshake.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// Certificate generation.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The database.
    #[error("storage: {0}")]
    Store(#[from] rusqlite::Error),
    /// Bytes from the network that are not a valid frame or message, or a message the
    /// training state machine refused.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Bad configuration or data directory.
    #[error("configuration: {0}")]
    Config(String),
    /// Unknown account or wrong token.
    #[error("authentication failed")]
    AuthFailed,
    /// The account exists already.
    #[error("account {0} exists")]
    AccountExists(AccountName),
    /// No such account.
    #[error("no account {0}")]
    UnknownAccount(AccountName),
    /// No such model for this account.
    #[error("no model {0} for this account")]
    NotFound(ModelId),
    /// The model is being trained on another connection.
    #[error("model {0} is being trained on another connection")]
    Busy(ModelId),
    /// The storage quota would be exceeded.
    #[error("storage quota exceeded: {need} bytes needed, {quota} allowed")]
    QuotaExceeded {
        /// Bytes the account would store.
        need: u64,
        /// The quota.
        quota: u64,
    },
    /// A request beyond the service's fixed limits (e.g. an oversized architecture).
    #[error("over the server's limits: {0}")]
    Limit(String),
    /// An error response from the server (client side, see [`crate::testing`]).
    #[error("server error {code:?}: {message}")]
    Remote {
        /// The code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// A worker task failed (a bug: it is logged and answered as an internal error).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServerError {
    /// The wire code a client receives for this error.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Protocol(ProtocolError::FrameTooLarge { .. }) => ErrorCode::FrameTooLarge,
            Self::Protocol(
                ProtocolError::Malformed(_) | ProtocolError::Decode(_) | ProtocolError::He(_),
            ) => ErrorCode::Malformed,
            Self::Protocol(_) => ErrorCode::Protocol,
            Self::AuthFailed => ErrorCode::AuthFailed,
            Self::AccountExists(_) => ErrorCode::AccountExists,
            Self::UnknownAccount(_) => ErrorCode::AuthFailed,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Busy(_) => ErrorCode::Busy,
            Self::QuotaExceeded { .. } | Self::Limit(_) => ErrorCode::QuotaExceeded,
            Self::Remote { code, .. } => *code,
            Self::Io(_)
            | Self::Tls(_)
            | Self::Certificate(_)
            | Self::Store(_)
            | Self::Config(_)
            | Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The message a client receives: storage and I/O details stay in the server's log.
    #[must_use]
    pub fn client_message(&self) -> String {
        match self.code() {
            ErrorCode::Internal => "internal server error (see the server log)".to_owned(),
            _ => self.to_string(),
        }
    }
}

/// `Result` with [`ServerError`].
pub type Result<T> = std::result::Result<T, ServerError>;
