//! A minimal blocking client of the service, for tests and benchmarks (the data owner's
//! real client is `sphinx-client`): TLS 1.3 with the server's certificate pinned by its
//! fingerprint, raw frame access (to send malformed ones), and a driver that runs one
//! training step of a [`Client`] over the network.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use sphinx_he::Parameters;
use sphinx_nn::model::Model;
use sphinx_protocol::ProtocolError;
use sphinx_protocol::client::{Client, StepOutcome};
use sphinx_protocol::messages::{ClientMessage, MessageKind, ServerMessage};
use sphinx_protocol::wire::{self, AccountName, ModelId, Request, Response, Token};

use crate::error::{Result, ServerError};
use crate::tls::{fingerprint, provider};

/// Accepts exactly the certificate with a given SHA-256 fingerprint (names, issuers and
/// validity dates are not consulted: the pin replaces the PKI), and checks the handshake
/// signatures with the `ring` provider.
#[derive(Debug)]
pub struct PinnedVerifier {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PinnedVerifier {
    /// A verifier for `fingerprint` (64 hex digits, any case).
    #[must_use]
    pub fn new(fingerprint: &str) -> Self {
        Self {
            fingerprint: fingerprint.trim().to_ascii_lowercase(),
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "server certificate does not match the pinned fingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// One TLS connection to a server.
pub struct Connection {
    stream: StreamOwned<ClientConnection, TcpStream>,
    seq: u64,
    max_frame: usize,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

fn remote(resp: Response) -> ServerError {
    match resp {
        Response::Error { code, message } => ServerError::Remote { code, message },
        other => ServerError::Internal(format!("unexpected response {other:?}")),
    }
}

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

fn read_response(stream: &mut TlsStream, max_frame: usize) -> Result<Option<(u64, Response)>> {
    let mut prefix = [0u8; wire::LENGTH_PREFIX_LEN];
    match stream.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    let len = wire::body_len(prefix, max_frame)?;
    // Header and model id apart, so a large payload is decoded from the buffer it was
    // read into (`Response::from_split_body`).
    let mut head = vec![0u8; len.min(wire::PAYLOAD_OFFSET)];
    stream.read_exact(&mut head).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            ServerError::from(ProtocolError::Malformed("truncated response".into()))
        }
        _ => e.into(),
    })?;
    let rest = len - head.len();
    let mut tail = Vec::with_capacity(rest.min(1 << 20));
    stream.take(rest as u64).read_to_end(&mut tail)?;
    if tail.len() != rest {
        return Err(ProtocolError::Malformed("truncated response".into()).into());
    }
    Ok(Some(Response::from_split_body(&head, tail)?))
}

impl Connection {
    /// Connects and completes the TLS handshake, accepting only the pinned certificate.
    ///
    /// # Errors
    /// [`ServerError::Io`], [`ServerError::Tls`] (a certificate mismatch included).
    pub fn connect(addr: SocketAddr, fingerprint: &str) -> Result<Self> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(fingerprint)))
            .with_no_client_auth();
        let name = ServerName::try_from("sphinx-server")
            .map_err(|e| ServerError::Config(e.to_string()))?;
        let conn = ClientConnection::new(Arc::new(config), name)?;
        let tcp = TcpStream::connect(addr)?;
        tcp.set_nodelay(true)?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Self {
            stream,
            seq: 0,
            max_frame: wire::DEFAULT_MAX_FRAME,
        })
    }

    /// Sets the sequence number the next request uses minus one (to replay on purpose).
    pub fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }

    /// Writes raw bytes (a frame or anything else).
    ///
    /// # Errors
    /// [`ServerError::Io`].
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()?;
        Ok(())
    }

    /// The TLS cipher suite the handshake chose.
    #[must_use]
    pub fn negotiated_suite(&self) -> Option<rustls::CipherSuite> {
        self.stream
            .conn
            .negotiated_cipher_suite()
            .map(|s| s.suite())
    }

    /// Reads one response frame; `None` when the server closed the connection.
    ///
    /// # Errors
    /// [`ServerError::Io`], [`ServerError::Protocol`] for a malformed frame.
    pub fn read_response(&mut self) -> Result<Option<(u64, Response)>> {
        read_response(&mut self.stream, self.max_frame)
    }

    /// Sends `req` with the next sequence number and returns every response up to the
    /// final one.
    ///
    /// # Errors
    /// [`ServerError::Io`] (also when the server closes before the final response),
    /// [`ServerError::Protocol`].
    pub fn request(&mut self, req: &Request) -> Result<Vec<Response>> {
        self.seq += 1;
        let frame = req.to_frame(self.seq)?;
        self.send_raw(&frame)?;
        let mut out = Vec::new();
        loop {
            let Some((_, resp)) = self.read_response()? else {
                return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            };
            let last = resp.is_final();
            out.push(resp);
            if last {
                return Ok(out);
            }
        }
    }

    /// [`request`](Self::request) for a single final response; an `Error` response becomes
    /// [`ServerError::Remote`].
    ///
    /// # Errors
    /// As [`request`](Self::request); [`ServerError::Remote`].
    pub fn call(&mut self, req: &Request) -> Result<Response> {
        let resp = self
            .request(req)?
            .pop()
            .ok_or_else(|| ServerError::Internal("no response".into()))?;
        match resp {
            Response::Error { .. } => Err(remote(resp)),
            other => Ok(other),
        }
    }

    /// Authenticates the connection.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn auth(&mut self, account: &AccountName, token: &Token) -> Result<()> {
        match self.call(&Request::Auth {
            account: account.clone(),
            token: token.clone(),
        })? {
            Response::Authenticated { .. } => Ok(()),
            other => Err(remote(other)),
        }
    }

    /// Sends a client's `Setup` and returns the new model's id.
    ///
    /// # Errors
    /// As [`call`](Self::call); [`ServerError::Protocol`] if `setup` cannot be encoded.
    pub fn create_model(&mut self, setup: &ClientMessage, params: &Parameters) -> Result<ModelId> {
        match self.call(&Request::CreateModel {
            setup: setup.encode(params)?,
        })? {
            Response::ModelCreated { model } => Ok(model),
            other => Err(remote(other)),
        }
    }

    /// The model's committed step.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn committed_step(&mut self, model: ModelId) -> Result<u64> {
        match self.call(&Request::Status { model })? {
            Response::Status(info) => Ok(info.committed_step),
            other => Err(remote(other)),
        }
    }

    /// Runs one training step of `client` on `model`. On an error the step may be half
    /// done: reconnect, [`Client::rewind`] to a mark taken before, and call again.
    ///
    /// # Errors
    /// As [`call`](Self::call); errors of the client role.
    pub fn train_step(
        &mut self,
        model: ModelId,
        client: &mut Client,
        params: &Arc<Parameters>,
    ) -> Result<StepOutcome> {
        self.train_requests(model, client, params, usize::MAX)?;
        client
            .last_step()
            .filter(|s| s.step + 1 == client.step())
            .ok_or_else(|| {
                ProtocolError::UnexpectedMessage {
                    got: MessageKind::NoisyGradient,
                    expected: "a completed step",
                }
                .into()
            })
    }

    /// Starts a step and sends at most `limit` of its `Train` requests (a test hook to stop
    /// mid-step); returns the committed step reported last.
    ///
    /// # Errors
    /// As [`train_step`](Self::train_step).
    pub fn train_requests(
        &mut self,
        model: ModelId,
        client: &mut Client,
        params: &Arc<Parameters>,
        limit: usize,
    ) -> Result<u64> {
        let mut queue = std::collections::VecDeque::from([client.start_step()?]);
        let mut committed = 0;
        let mut sent = 0;
        while let Some(msg) = queue.pop_front() {
            if sent == limit {
                break;
            }
            sent += 1;
            self.seq += 1;
            let frame = Request::train_frame(self.seq, model, &msg, params)?;
            self.send_raw(&frame)?;
            // A reader thread receives and decodes the next reply while this one hands the
            // previous to the client (decryption).
            let (stream, max) = (&mut self.stream, self.max_frame);
            let (tx, rx) = std::sync::mpsc::sync_channel::<ServerMessage>(1);
            let handled = std::thread::scope(|scope| {
                let reader = scope.spawn(move || -> Result<u64> {
                    loop {
                        let Some((_, resp)) = read_response(stream, max)? else {
                            return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                        };
                        match resp {
                            Response::Training { message, .. } => {
                                let reply = ServerMessage::decode(params, &message, max)?;
                                if tx.send(reply).is_err() {
                                    // The client failed; its error is reported.
                                    return Ok(0);
                                }
                            }
                            Response::StepState { committed_step, .. } => {
                                return Ok(committed_step);
                            }
                            other => return Err(remote(other)),
                        }
                    }
                });
                let mut handled = Ok(());
                for reply in rx {
                    match client.handle(reply) {
                        Ok(next) => queue.extend(next),
                        Err(e) => {
                            handled = Err(ServerError::from(e));
                            break;
                        }
                    }
                }
                let read = reader
                    .join()
                    .map_err(|_| ServerError::Internal("reader panicked".into()))?;
                handled.and(read)
            })?;
            committed = handled;
        }
        Ok(committed)
    }

    /// The model of the last committed step, biases decrypted by `client`.
    ///
    /// # Errors
    /// As [`call`](Self::call); errors of the client role.
    pub fn export(
        &mut self,
        model: ModelId,
        client: &Client,
        params: &Arc<Parameters>,
    ) -> Result<Model> {
        match self.call(&Request::Export { model })? {
            Response::Exported { message, .. } => {
                match ServerMessage::decode(params, &message, self.max_frame)? {
                    ServerMessage::ModelExport(m) => Ok(client.assemble_model(&m)?),
                    other => Err(ServerError::Internal(format!(
                        "export carried {:?}",
                        other.kind()
                    ))),
                }
            }
            other => Err(remote(other)),
        }
    }
}
