//! The error type of `sphinx-client`.

use std::path::PathBuf;

use sphinx_protocol::wire::ErrorCode;

/// Everything that can go wrong on the data owner's side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A file or directory of the client's state could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The client directory holds something unexpected (missing file, bad JSON, wrong
    /// permissions, a state that does not fit the model).
    #[error("client state {path}: {reason}")]
    Store {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A network failure (connect, read, write).
    #[error("network: {0}")]
    Network(#[source] std::io::Error),
    /// TLS setup or handshake failed (including a certificate that does not match the pin).
    #[error("TLS: {0}")]
    Tls(String),
    /// The server answered with an error.
    #[error("server refused {request}: {code:?}: {message}")]
    Server {
        /// The request.
        request: &'static str,
        /// The server's code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server answered something the protocol does not allow here.
    #[error("unexpected answer from the server: {0}")]
    UnexpectedResponse(String),
    /// The local state and the server's disagree in a way that resuming cannot fix.
    #[error("cannot resume: {0}")]
    Diverged(String),
    /// A protocol error (decoding, state machine, budget).
    #[error(transparent)]
    Protocol(#[from] sphinx_protocol::ProtocolError),
    /// A differential-privacy error.
    #[error(transparent)]
    Dp(#[from] sphinx_dp::DpError),
    /// A neural-network error (data, model files).
    #[error(transparent)]
    Nn(#[from] sphinx_nn::NnError),
    /// An image or plot could not be read or drawn.
    #[error("image: {0}")]
    Image(String),
    /// An invalid argument.
    #[error("{0}")]
    Invalid(String),
}

/// `Result` with [`ClientError`].
pub type Result<T> = std::result::Result<T, ClientError>;

/// Attaches a path to an I/O error.
pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ClientError {
    let path = path.into();
    move |source| ClientError::Io { path, source }
}
