//! A TLS connection to a `sphinx server` that trusts exactly one certificate: the one
//! whose SHA-256 fingerprint the data owner pinned at `sphinx client init`.
//!
//! The server's certificate is self-signed, so no certificate authority vouches for it;
//! instead [`PinnedCert`] accepts the end-entity certificate iff its SHA-256 equals the
//! pin (compared in constant time), and then checks the handshake signatures with that
//! certificate's key as usual, so a man in the middle without the server's private key
//! cannot complete the handshake. TLS 1.3 only, `ring` provider.
//!
//! Framing follows [`sphinx_protocol::wire`]: one request at a time, each frame's length
//! checked against a limit before its body is read.

use std::io::{BufReader, IoSlice, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use sphinx_he::Parameters;
use sphinx_protocol::messages::{ClientMessage, ServerMessage};
use sphinx_protocol::wire::{
    self, AccountName, DEFAULT_MAX_FRAME, LENGTH_PREFIX_LEN, ModelId, Request, Response, Token,
};

use crate::error::{ClientError, Result};

/// The SHA-256 fingerprint of a DER certificate: 64 lowercase hex digits.
#[must_use]
pub fn fingerprint(cert_der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, cert_der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Normalizes a fingerprint as users may paste it (`AB:CD:…`, spaces, upper case) to 64
/// lowercase hex digits.
///
/// # Errors
/// [`ClientError::Invalid`] unless it is 32 bytes of hex.
pub fn parse_fingerprint(text: &str) -> Result<String> {
    let hex: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(ClientError::Invalid(format!(
            "a certificate fingerprint is 64 hex digits (SHA-256), got {text:?}"
        )))
    }
}

/// `ring`'s provider with AES-128-GCM preferred, as the server prefers it (fewer rounds
/// per byte of ciphertext traffic than AES-256, at the CKKS parameters' 128-bit level).
fn provider() -> CryptoProvider {
    use rustls::crypto::ring::cipher_suite;
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    }
}

/// Accepts exactly the certificate with the pinned SHA-256 fingerprint.
#[derive(Debug)]
pub struct PinnedCert {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl PinnedCert {
    /// A verifier for `fingerprint` (see [`parse_fingerprint`]).
    ///
    /// # Errors
    /// [`ClientError::Invalid`] for a malformed fingerprint.
    pub fn new(fingerprint: &str) -> Result<Self> {
        let hex = parse_fingerprint(fingerprint)?;
        let mut pin = [0u8; 32];
        for (i, out) in pin.iter_mut().enumerate() {
            *out = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16)
                .map_err(|_| ClientError::Invalid("fingerprint".into()))?;
        }
        Ok(Self {
            pin,
            provider: Arc::new(provider()),
        })
    }
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let got = ring::digest::digest(&ring::digest::SHA256, end_entity);
        // Constant time: the comparison must not tell an attacker how many bytes matched.
        let diff = got
            .as_ref()
            .iter()
            .zip(&self.pin)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 && got.as_ref().len() == self.pin.len() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
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

/// A TLS connection speaking the wire protocol, with byte counters.
pub struct Connection {
    stream: StreamOwned<ClientConnection, BufferedTcp>,
    seq: u64,
    max_frame: usize,
    bytes_up: u64,
    bytes_down: u64,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("seq", &self.seq)
            .field("bytes_up", &self.bytes_up)
            .field("bytes_down", &self.bytes_down)
            .finish_non_exhaustive()
    }
}

fn tls_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Tls(e.to_string())
}

fn net_err(e: std::io::Error) -> ClientError {
    // rustls reports a failed certificate check through the I/O error of the handshake.
    if let Some(inner) = e.get_ref()
        && let Some(tls) = inner.downcast_ref::<rustls::Error>()
    {
        return match tls {
            rustls::Error::InvalidCertificate(_) => ClientError::Tls(
                "the server's certificate does not match the pinned fingerprint".into(),
            ),
            other => ClientError::Tls(other.to_string()),
        };
    }
    ClientError::Network(e)
}

/// The TCP socket under TLS: reads buffered ([`wire::SOCKET_READ_BUFFER`]), writes straight through (rustls hands over
/// whole records, vectored).
struct BufferedTcp(BufReader<TcpStream>);

impl BufferedTcp {
    fn new(tcp: TcpStream) -> Self {
        Self(BufReader::with_capacity(wire::SOCKET_READ_BUFFER, tcp))
    }
}

impl Read for BufferedTcp {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for BufferedTcp {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.get_mut().write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        self.0.get_mut().write_vectored(bufs)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.get_mut().flush()
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`) and completes a TLS 1.3 handshake that accepts
    /// only the certificate with `fingerprint`.
    ///
    /// # Errors
    /// [`ClientError::Network`] if the server cannot be reached; [`ClientError::Tls`] if
    /// the handshake fails (a different certificate included).
    pub fn connect(addr: &str, fingerprint: &str) -> Result<Self> {
        let verifier = Arc::new(PinnedCert::new(fingerprint)?);
        let config = ClientConfig::builder_with_provider(verifier.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        // The pin, not the name, authenticates the server; the name only goes into SNI.
        let name = ServerName::try_from(host.to_owned())
            .or_else(|_| ServerName::try_from("sphinx-server".to_owned()))
            .map_err(tls_err)?;
        let conn = ClientConnection::new(Arc::new(config), name).map_err(tls_err)?;
        let sock_addr = addr
            .to_socket_addrs()
            .map_err(ClientError::Network)?
            .next()
            .ok_or_else(|| ClientError::Invalid(format!("{addr}: no address")))?;
        let tcp = TcpStream::connect_timeout(&sock_addr, Duration::from_secs(10))
            .map_err(ClientError::Network)?;
        tcp.set_nodelay(true).map_err(ClientError::Network)?;
        let mut stream = StreamOwned::new(conn, BufferedTcp::new(tcp));
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).map_err(net_err)?;
        }
        Ok(Self {
            stream,
            seq: 0,
            max_frame: DEFAULT_MAX_FRAME,
            bytes_up: 0,
            bytes_down: 0,
        })
    }

    /// Frame bytes sent and received so far (what the wire protocol carries, before TLS
    /// records).
    #[must_use]
    pub fn traffic(&self) -> (u64, u64) {
        (self.bytes_up, self.bytes_down)
    }

    fn send(&mut self, req: &Request) -> Result<u64> {
        self.send_frame(|seq| Ok(req.to_frame(seq)?))
    }

    /// Sends the frame `build` makes for the next sequence number; returns that number.
    fn send_frame(&mut self, build: impl FnOnce(u64) -> Result<Vec<u8>>) -> Result<u64> {
        self.seq += 1;
        let frame = build(self.seq)?;
        self.write_frame(&frame)?;
        Ok(self.seq)
    }

    fn write_frame(&mut self, frame: &[u8]) -> Result<()> {
        self.stream.write_all(frame).map_err(net_err)?;
        self.stream.flush().map_err(net_err)?;
        self.bytes_up += frame.len() as u64;
        Ok(())
    }

    fn receive(&mut self, seq: u64) -> Result<Response> {
        let mut prefix = [0u8; LENGTH_PREFIX_LEN];
        self.stream.read_exact(&mut prefix).map_err(net_err)?;
        let len = wire::body_len(prefix, self.max_frame)?;
        // Header and model id apart: a training reply is decoded from the buffer it was
        // read into, not from a copy (`Response::from_split_body`).
        let mut head = vec![0u8; len.min(wire::PAYLOAD_OFFSET)];
        self.stream.read_exact(&mut head).map_err(net_err)?;
        // Read into spare capacity: zeroing a buffer of tens of megabytes first would be a
        // pass over memory for nothing (the length was checked against the limit above).
        let rest = len - head.len();
        let mut tail = Vec::with_capacity(rest);
        (&mut self.stream)
            .take(rest as u64)
            .read_to_end(&mut tail)
            .map_err(net_err)?;
        if tail.len() != rest {
            return Err(net_err(std::io::ErrorKind::UnexpectedEof.into()));
        }
        self.bytes_down += (LENGTH_PREFIX_LEN + len) as u64;
        let (got, resp) = Response::from_split_body(&head, tail)?;
        if got != seq {
            return Err(ClientError::UnexpectedResponse(format!(
                "answer to request {got} while waiting for {seq}"
            )));
        }
        Ok(resp)
    }

    /// Sends `req` and hands every non-final response (streamed training replies) to
    /// `each`, returning the final one.
    ///
    /// # Errors
    /// [`ClientError::Server`] for an error response; network and decoding errors; those
    /// of `each`.
    pub fn stream<F>(&mut self, req: &Request, mut each: F) -> Result<Response>
    where
        F: FnMut(Response) -> Result<()>,
    {
        let seq = self.send(req)?;
        loop {
            let resp = self.receive(seq)?;
            if let Response::Error { code, message } = resp {
                return Err(ClientError::Server {
                    request: req.name(),
                    code,
                    message,
                });
            }
            if resp.is_final() {
                return Ok(resp);
            }
            each(resp)?;
        }
    }

    /// Sends one `Train` request carrying `message` (encoded straight into its frame) and
    /// hands each decoded training reply to `handle`; returns the final response.
    ///
    /// A reader thread receives and decodes the next reply (TLS, unpacking, lifting the
    /// compact results) while this thread runs `handle` on the previous one (decryption), so
    /// that the network work overlaps the client's as the server's computing does.
    ///
    /// # Errors
    /// [`ClientError::Server`] for an error response; network and decoding errors; those
    /// of `handle` (which stop the reading; the connection should then be dropped).
    pub fn train<F>(
        &mut self,
        model: ModelId,
        message: &ClientMessage,
        params: &Arc<Parameters>,
        handle: F,
    ) -> Result<Response>
    where
        F: FnMut(ServerMessage) -> Result<()>,
    {
        self.train_while(model, message, params, handle, || ())
            .map(|(response, ())| response)
    }

    /// [`train`](Self::train), running `meanwhile` on this thread once the request is sent
    /// and before any reply is handled, so that it overlaps the server's work (the trainer
    /// prepares the next step while the server commits this one); returns its result too.
    ///
    /// # Errors
    /// As [`train`](Self::train).
    pub fn train_while<F, W, T>(
        &mut self,
        model: ModelId,
        message: &ClientMessage,
        params: &Arc<Parameters>,
        mut handle: F,
        meanwhile: W,
    ) -> Result<(Response, T)>
    where
        F: FnMut(ServerMessage) -> Result<()>,
        W: FnOnce() -> T,
    {
        let seq = self.send_frame(|seq| Ok(Request::train_frame(seq, model, message, params)?))?;
        let max = self.max_frame;
        let (tx, rx) = std::sync::mpsc::sync_channel::<ServerMessage>(1);
        std::thread::scope(|scope| {
            let reader = scope.spawn(move || -> Result<Option<Response>> {
                loop {
                    match self.receive(seq)? {
                        Response::Error { code, message } => {
                            return Err(ClientError::Server {
                                request: "Train",
                                code,
                                message,
                            });
                        }
                        Response::Training { message, .. } => {
                            // The results keep slices of the frame: no copy of its bytes.
                            let reply = ServerMessage::decode_shared(params, &message.into(), max)?;
                            if tx.send(reply).is_err() {
                                // `handle` failed; its error is the one reported.
                                return Ok(None);
                            }
                        }
                        resp if resp.is_final() => return Ok(Some(resp)),
                        other => {
                            return Err(ClientError::UnexpectedResponse(format!(
                                "{other:?} inside a training answer"
                            )));
                        }
                    }
                }
            });
            let done = meanwhile();
            let mut handled = Ok(());
            for reply in rx {
                if let Err(e) = handle(reply) {
                    handled = Err(e);
                    break;
                }
            }
            let read = reader
                .join()
                .map_err(|_| ClientError::Invalid("the reply reader panicked".into()))?;
            handled?;
            let response =
                read?.ok_or_else(|| ClientError::UnexpectedResponse("no final response".into()))?;
            Ok((response, done))
        })
    }

    /// Sends `req` and returns its single response.
    ///
    /// # Errors
    /// As [`stream`](Self::stream); [`ClientError::UnexpectedResponse`] if the server
    /// streams.
    pub fn call(&mut self, req: &Request) -> Result<Response> {
        self.stream(req, |r| {
            Err(ClientError::UnexpectedResponse(format!("a streamed {r:?}")))
        })
    }

    /// Authenticates the connection.
    ///
    /// # Errors
    /// As [`call`](Self::call) ([`ClientError::Server`] with `AuthFailed` for a wrong
    /// token).
    pub fn auth(&mut self, account: &AccountName, token: &Token) -> Result<()> {
        match self.call(&Request::Auth {
            account: account.clone(),
            token: token.clone(),
        })? {
            Response::Authenticated { .. } => Ok(()),
            other => Err(ClientError::UnexpectedResponse(format!("{other:?}"))),
        }
    }

    /// Registers a new account (servers that allow self-registration) and returns its
    /// token.
    ///
    /// # Errors
    /// As [`call`](Self::call) (`RegistrationClosed`, `AccountExists`).
    pub fn register(&mut self, account: &AccountName) -> Result<Token> {
        match self.call(&Request::Register {
            account: account.clone(),
        })? {
            Response::Registered { token, .. } => Ok(token),
            other => Err(ClientError::UnexpectedResponse(format!("{other:?}"))),
        }
    }
}
