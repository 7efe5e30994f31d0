//! `sphinx-server`: the cloud side of Sphinx as a network service (DESIGN.md §1, §2, §4).
//!
//! It drives [`sphinx_protocol`]'s server role over TLS connections speaking the frames of
//! [`sphinx_protocol::wire`], and persists what the server may hold (accounts, plaintext
//! `W`, encrypted `[b]`, evaluation keys, preprocessing material) in SQLite
//! ([`store`]). It never holds a secret key.
//!
//! - [`bind`] opens the data directory (database, TLS identity: generated on first start)
//!   and the listening socket; [`BoundServer::serve`] runs until a shutdown future resolves.
//!   [`ServerHandle::spawn`] does both on a thread of its own, for an in-process server
//!   (the demo, tests).
//! - Every connection: TLS 1.3 handshake (bounded in time), then `Auth` (or `Register`
//!   where allowed) before anything else; frames are size-checked before allocation
//!   ([`Limits::max_frame`], 4 KiB before authentication); sequence numbers must increase
//!   (a replay is refused); a connection idle for [`Limits::idle_timeout`] is closed.
//! - Training: the first `Train` request for a model takes a lease on it (one training
//!   connection per model; others get `Busy`) and restores its committed state; the
//!   protocol runs on a blocking thread, streaming replies as they are computed; after the
//!   step's `NoisyGradient` the new state is committed in one transaction. A step cut off
//!   before that is rolled back: the in-memory state is dropped with the lease.
//!
//! ```no_run
//! use sphinx_server::{ServerConfig, ServerHandle};
//!
//! let config = ServerConfig::new("127.0.0.1:0".parse()?, "/var/lib/sphinx".into());
//! let server = ServerHandle::spawn(config)?;
//! println!("listening on {}, fingerprint {}", server.addr(), server.fingerprint());
//! server.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sphinx_protocol::ProtocolError;
use sphinx_protocol::inference::messages::{
    InferenceClientMessage, InferenceKind, decode_inference_setup,
};
use sphinx_protocol::inference::{InferenceServer, model_with_weights};
use sphinx_protocol::messages::{ClientMessage, ServerMessage, decode_setup};
use sphinx_protocol::server::Server;
use sphinx_protocol::wire::{
    self, AccountName, ErrorCode, ModelId, ModelInfo, Request, Response, Token,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub mod error;
pub mod store;
pub mod testing;
pub mod tls;

pub use error::{Result, ServerError};
use store::{AccountId, Store};

/// Resource limits of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body accepted after authentication (checked before allocation).
    pub max_frame: usize,
    /// Connections served at once; further ones are answered `TooManyConnections`.
    pub max_connections: usize,
    /// A connection with no complete request for this long is closed.
    pub idle_timeout: Duration,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Bytes an account may store (setups, states, blobs).
    pub account_quota: u64,
    /// Time connections get to finish their current request at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: wire::DEFAULT_MAX_FRAME,
            max_connections: 64,
            idle_timeout: Duration::from_secs(600),
            handshake_timeout: Duration::from_secs(10),
            account_quota: 4 << 30,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Who may create accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Registration {
    /// Only the operator (`sphinx server add-account`, [`Store::add_account`]).
    #[default]
    Closed,
    /// Anyone who can connect may `Register` a new name (a demo or a private network).
    Open,
}

/// What the server needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on (port 0: any free port, see [`BoundServer::local_addr`]).
    pub listen: SocketAddr,
    /// Database and TLS identity live here (created with mode 0700 if missing).
    pub data_dir: PathBuf,
    /// Resource limits.
    pub limits: Limits,
    /// Account creation policy.
    pub registration: Registration,
}

impl ServerConfig {
    /// Default limits, closed registration.
    #[must_use]
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            limits: Limits::default(),
            registration: Registration::Closed,
        }
    }
}

/// Creates the data directory (0700) if needed.
///
/// # Errors
/// [`ServerError::Io`].
pub fn prepare_data_dir(dir: &std::path::Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)?;
    Ok(())
}

struct Shared {
    store: Mutex<Store>,
    leases: Mutex<HashSet<ModelId>>,
    limits: Limits,
    registration: Registration,
    connections: Arc<Semaphore>,
}

fn poisoned<T>(_: T) -> ServerError {
    ServerError::Internal("a lock was poisoned by an earlier failure".into())
}

impl Shared {
    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
        let mut store = self.store.lock().map_err(poisoned)?;
        f(&mut store)
    }

    fn is_leased(&self, model: ModelId) -> Result<bool> {
        Ok(self.leases.lock().map_err(poisoned)?.contains(&model))
    }
}

/// Runs `f` on the blocking pool (storage and HE work), turning a panic into an error.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServerError::Internal(format!("worker failed: {e}")))?
}

/// Exclusive right of one connection to train a model; released on drop.
struct Lease {
    shared: Arc<Shared>,
    model: ModelId,
}

impl Lease {
    fn take(shared: &Arc<Shared>, model: ModelId) -> Result<Self> {
        if !shared.leases.lock().map_err(poisoned)?.insert(model) {
            return Err(ServerError::Busy(model));
        }
        Ok(Self {
            shared: shared.clone(),
            model,
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut l) = self.shared.leases.lock() {
            l.remove(&self.model);
        }
    }
}

/// The model a connection is training.
struct Training {
    model: ModelId,
    _lease: Lease,
    /// `None` after a failure that may have left it inconsistent: restored on next use.
    server: Option<Box<Server>>,
}

/// The model a connection runs private inference on (under the same lease as training:
/// its weights cannot change underneath).
struct Inferring {
    model: ModelId,
    _lease: Lease,
    /// `None` before the client's setup (or a stored snapshot) arrived, or after a failure.
    server: Option<Box<InferenceServer>>,
    /// The snapshot last written to the `blobs` table (skip rewriting identical bytes).
    persisted: Vec<u8>,
}

/// Name of the blob holding an [`InferenceServer::snapshot`].
pub const INFERENCE_BLOB: &str = "inference";

/// A server with its database, TLS identity and listening socket ready.
pub struct BoundServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    addr: SocketAddr,
    fingerprint: String,
    cert_created: bool,
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer")
            .field("addr", &self.addr)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Opens the data directory (database, TLS identity) and binds the listening socket.
///
/// # Errors
/// [`ServerError::Io`] (socket, files), [`ServerError::Store`], [`ServerError::Config`],
/// [`ServerError::Certificate`], [`ServerError::Tls`].
pub async fn bind(config: ServerConfig) -> Result<BoundServer> {
    prepare_data_dir(&config.data_dir)?;
    let dir = config.data_dir.clone();
    let (store, identity) =
        blocking(move || Ok((Store::open(&dir)?, tls::load_or_create(&dir)?))).await?;
    let acceptor = TlsAcceptor::from(identity.server_config()?);
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    Ok(BoundServer {
        listener,
        acceptor,
        addr,
        fingerprint: identity.fingerprint(),
        cert_created: identity.created,
        shared: Arc::new(Shared {
            store: Mutex::new(store),
            leases: Mutex::new(HashSet::new()),
            limits: config.limits,
            registration: config.registration,
            connections: Arc::new(Semaphore::new(config.limits.max_connections)),
        }),
    })
}

/// [`bind`], then [`BoundServer::serve`].
///
/// # Errors
/// As [`bind`].
pub async fn run_server(config: ServerConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    bind(config).await?.serve(shutdown).await
}

impl BoundServer {
    /// The address it listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The SHA-256 fingerprint of its certificate (clients pin it).
    #[must_use]
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether the certificate was generated by this start.
    #[must_use]
    pub fn certificate_created(&self) -> bool {
        self.cert_created
    }

    /// Serves connections until `shutdown` resolves, then stops accepting, lets each
    /// connection finish its current request (up to [`Limits::shutdown_grace`]) and
    /// returns. Uncommitted steps are rolled back.
    ///
    /// # Errors
    /// None today (per-connection failures are answered or logged); the `Result` leaves
    /// room for fatal listener errors.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, _peer)) => {
                        let permit = self.shared.connections.clone().try_acquire_owned().ok();
                        let (shared, acceptor) = (self.shared.clone(), self.acceptor.clone());
                        let stop = stop_rx.clone();
                        tasks.spawn(async move {
                            let _permit = permit.as_ref();
                            connection(shared, acceptor, tcp, permit.is_some(), stop).await;
                        });
                    }
                    // Out of descriptors and the like: back off instead of spinning.
                    Err(e) => {
                        eprintln!("sphinx-server: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        // Receivers may all be gone already; nothing to tell then.
        let _ = stop_tx.send(true);
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.shared.limits.shutdown_grace, drain)
            .await
            .is_err()
        {
            tasks.abort_all();
        }
        Ok(())
    }
}

/// Reads one frame body, refusing an oversized length before allocating and growing the
/// buffer only as bytes arrive. The body comes in two parts: its first
/// [`wire::PAYLOAD_OFFSET`] bytes (header and model id) and the rest, so that a large payload
/// is read into a buffer of its own and passed on without a copy
/// ([`Request::from_split_body`]). `Ok(None)`: clean end of stream before a frame.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut prefix = [0u8; wire::LENGTH_PREFIX_LEN];
    let mut got = 0;
    while got < prefix.len() {
        let n = r.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(ProtocolError::Malformed("stream ended inside a length prefix".into()).into())
            };
        }
        got += n;
    }
    let len = wire::body_len(prefix, max)?;
    let truncated = |got: usize| -> ServerError {
        ProtocolError::Malformed(format!("stream ended after {got} of {len} frame bytes")).into()
    };
    let mut head = vec![0u8; len.min(wire::PAYLOAD_OFFSET)];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]).await? {
            0 => return Err(truncated(got)),
            n => got += n,
        }
    }
    let rest = len - head.len();
    let mut tail = Vec::with_capacity(rest.min(1 << 20));
    r.take(rest as u64).read_to_end(&mut tail).await?;
    if tail.len() != rest {
        return Err(truncated(head.len() + tail.len()));
    }
    Ok(Some((head, tail)))
}

/// The sequence number of a frame body whose payload did not decode, if its header is
/// readable (so the error reply can still be matched).
fn seq_of(body: &[u8]) -> u64 {
    body.get(8..16)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

async fn connection(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    admitted: bool,
    stop: watch::Receiver<bool>,
) {
    // Latency matters more than packet count for the request/response pattern.
    let _ = tcp.set_nodelay(true);
    // Reads buffered (`wire::SOCKET_READ_BUFFER`); writes pass straight through (rustls
    // hands over whole records, vectored).
    let tcp = BufReader::with_capacity(wire::SOCKET_READ_BUFFER, tcp);
    let handshake = tokio::time::timeout(shared.limits.handshake_timeout, acceptor.accept(tcp));
    let Ok(Ok(stream)) = handshake.await else {
        return;
    };
    let mut conn = Conn {
        shared,
        stream,
        account: None,
        last_seq: None,
        training: None,
        inference: None,
    };
    if !admitted {
        let resp = Response::error(ErrorCode::TooManyConnections, "too many connections");
        let _ = conn.send(0, &resp).await;
        return;
    }
    conn.run(stop).await;
    let _ = conn.stream.shutdown().await;
}

/// What to do after a request.
enum Next {
    Continue,
    Close,
}

struct Conn {
    shared: Arc<Shared>,
    stream: tokio_rustls::server::TlsStream<BufReader<TcpStream>>,
    account: Option<AccountId>,
    last_seq: Option<u64>,
    training: Option<Training>,
    inference: Option<Inferring>,
}

impl Conn {
    async fn send(&mut self, seq: u64, resp: &Response) -> Result<()> {
        let frame = resp.to_frame(seq)?;
        self.write(&frame).await
    }

    async fn write(&mut self, frame: &[u8]) -> Result<()> {
        self.stream.write_all(frame).await?;
        self.stream.flush().await?;
        Ok(())
    }

    async fn run(&mut self, mut stop: watch::Receiver<bool>) {
        let limits = self.shared.limits;
        loop {
            if *stop.borrow() {
                let _ = self
                    .send(
                        0,
                        &Response::error(ErrorCode::ShuttingDown, "server shutting down"),
                    )
                    .await;
                return;
            }
            let max = if self.account.is_some() {
                limits.max_frame
            } else {
                wire::PRE_AUTH_MAX_FRAME
            };
            let read = tokio::select! {
                r = tokio::time::timeout(limits.idle_timeout, read_frame(&mut self.stream, max)) => r,
                // A closed channel means the server is gone: stop too.
                changed = stop.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let (head, tail) = match read {
                Err(_idle) => return,
                Ok(Ok(Some(body))) => body,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    // The stream cannot be resynchronized: say why (if it is a frame error)
                    // and close.
                    if matches!(e, ServerError::Protocol(_)) {
                        let _ = self
                            .send(0, &Response::error(e.code(), e.client_message()))
                            .await;
                    }
                    return;
                }
            };
            match self.request(&head, tail).await {
                Ok(Next::Continue) => {}
                Ok(Next::Close) | Err(_) => return,
            }
        }
    }

    /// Handles one frame; `Err` only when the connection is broken.
    async fn request(&mut self, head: &[u8], tail: Vec<u8>) -> Result<Next> {
        let (seq, req) = match Request::from_split_body(head, tail) {
            Ok(r) => r,
            Err(e) => {
                let e = ServerError::from(e);
                self.send(seq_of(head), &Response::error(e.code(), e.client_message()))
                    .await?;
                return Ok(Next::Continue);
            }
        };
        if self.last_seq.is_some_and(|last| seq <= last) {
            let msg = "sequence number did not increase (replayed frame)";
            self.send(seq, &Response::error(ErrorCode::Replay, msg))
                .await?;
            return Ok(Next::Continue);
        }
        self.last_seq = Some(seq);
        let authenticating = matches!(req, Request::Auth { .. } | Request::Register { .. });
        if self.account.is_none() && !authenticating {
            let msg = "authenticate first";
            self.send(seq, &Response::error(ErrorCode::Unauthenticated, msg))
                .await?;
            return Ok(Next::Close);
        }
        if self.account.is_some() && authenticating {
            let msg = "this connection is authenticated already";
            self.send(seq, &Response::error(ErrorCode::Unsupported, msg))
                .await?;
            return Ok(Next::Continue);
        }
        let result = match req {
            Request::Train { model, message } => {
                // Streams its own responses.
                match self.train(seq, model, message).await {
                    Ok(()) => return Ok(Next::Continue),
                    Err(e) => Err(e),
                }
            }
            Request::Inference { model, payload } => match self.infer(seq, model, payload).await {
                Ok(()) => return Ok(Next::Continue),
                Err(e) => Err(e),
            },
            other => self.simple(other).await,
        };
        match result {
            Ok(resp) => {
                self.send(seq, &resp).await?;
                Ok(Next::Continue)
            }
            Err(ServerError::Io(e)) => Err(ServerError::Io(e)),
            Err(e) => {
                if e.code() == ErrorCode::Internal {
                    eprintln!("sphinx-server: {e}");
                }
                self.send(seq, &Response::error(e.code(), e.client_message()))
                    .await?;
                // A failed login ends the connection: no guessing on one connection.
                Ok(if e.code() == ErrorCode::AuthFailed {
                    Next::Close
                } else {
                    Next::Continue
                })
            }
        }
    }

    fn account(&self) -> Result<AccountId> {
        self.account
            .ok_or_else(|| ServerError::Internal("unauthenticated request".into()))
    }

    /// Takes `model`'s lease for this connection. Ownership is checked first, so another
    /// account's model reads as absent, never as busy; a role this connection already
    /// plays on `model` is released first (rolling back an unfinished training step), since
    /// training and inference share the lease.
    async fn claim(&mut self, account: AccountId, model: ModelId) -> Result<Lease> {
        if self.training.as_ref().is_some_and(|t| t.model == model) {
            self.training = None;
        }
        if self.inference.as_ref().is_some_and(|i| i.model == model) {
            self.inference = None;
        }
        let shared = self.shared.clone();
        blocking({
            let shared = shared.clone();
            move || shared.with_store(|s| s.summary(account, model))
        })
        .await?;
        Lease::take(&shared, model)
    }

    /// Requests answered by one response.
    async fn simple(&mut self, req: Request) -> Result<Response> {
        let shared = self.shared.clone();
        match req {
            Request::Register { account } => {
                if shared.registration == Registration::Closed {
                    return Ok(Response::error(
                        ErrorCode::RegistrationClosed,
                        "this server does not allow self-registration; ask its operator",
                    ));
                }
                let name = account.clone();
                let (id, token) = blocking(move || {
                    shared.with_store(|s| {
                        let token = s.add_account(&name)?;
                        Ok((s.authenticate(&name, &token)?, token))
                    })
                })
                .await?;
                self.account = Some(id);
                Ok(Response::Registered { account, token })
            }
            Request::Auth { account, token } => {
                let name = account.clone();
                let id =
                    blocking(move || shared.with_store(|s| s.authenticate(&name, &token))).await?;
                self.account = Some(id);
                Ok(Response::Authenticated { account })
            }
            Request::CreateModel { setup } => {
                let (account, limits) = (self.account()?, shared.limits);
                let model = blocking(move || {
                    let decoded = decode_setup(&setup, limits.max_frame)?;
                    check_architecture(&decoded.model)?;
                    let architecture = serde_json::to_string(&decoded.model)
                        .map_err(|e| ServerError::Internal(e.to_string()))?;
                    let server = Server::new(decoded, &mut rand::rng())?;
                    let state = server.snapshot()?;
                    shared.with_store(|s| {
                        s.create_model(
                            account,
                            &architecture,
                            &setup,
                            &state,
                            server.step(),
                            limits.account_quota,
                        )
                    })
                })
                .await?;
                Ok(Response::ModelCreated { model })
            }
            Request::ListModels => {
                let account = self.account()?;
                let list = blocking({
                    let shared = shared.clone();
                    move || shared.with_store(|s| s.models(account))
                })
                .await?;
                let models = list
                    .into_iter()
                    .map(|m| {
                        Ok(ModelInfo {
                            busy: shared.is_leased(m.id)?,
                            model: m.id,
                            committed_step: m.step,
                            stored_bytes: m.stored_bytes,
                            architecture: m.architecture,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Response::Models { models })
            }
            Request::Status { model } => {
                let account = self.account()?;
                let m = blocking({
                    let shared = shared.clone();
                    move || shared.with_store(|s| s.summary(account, model))
                })
                .await?;
                Ok(Response::Status(ModelInfo {
                    busy: shared.is_leased(m.id)?,
                    model: m.id,
                    committed_step: m.step,
                    stored_bytes: m.stored_bytes,
                    architecture: m.architecture,
                }))
            }
            Request::Export { model } => {
                let account = self.account()?;
                let message = blocking(move || {
                    let stored = shared.with_store(|s| s.load(account, model))?;
                    let server = restore(&stored.setup, &stored.state)?;
                    let mut server = server;
                    for reply in server.handle(ClientMessage::ModelRequest)? {
                        if let ServerMessage::ModelExport(_) = reply {
                            return Ok(reply.encode(server.params())?);
                        }
                    }
                    Err(ServerError::Internal("no model export produced".into()))
                })
                .await?;
                Ok(Response::Exported { model, message })
            }
            Request::Delete { model } => {
                let account = self.account()?;
                // Holding the lease keeps a trainer from starting on a model being deleted.
                let lease = self.claim(account, model).await?;
                blocking(move || shared.with_store(|s| s.delete_model(account, model))).await?;
                drop(lease);
                Ok(Response::Deleted { model })
            }
            // Train is streamed by `train`; new request kinds are refused.
            _ => Ok(Response::error(
                ErrorCode::Unsupported,
                "unsupported request",
            )),
        }
    }

    /// One `Inference` request: decodes the client's message (a setup opens a new
    /// session), runs the inference server role, streams its replies as `Inference` frames
    /// and ends with `InferenceDone`.
    async fn infer(&mut self, seq: u64, model: ModelId, payload: Vec<u8>) -> Result<()> {
        let account = self.account()?;
        let shared = self.shared.clone();
        if self.inference.as_ref().map(|i| i.model) != Some(model) {
            self.inference = None;
            // The lease is shared with training: running inference on the model this
            // connection trains rolls back its unfinished step.
            let lease = self.claim(account, model).await?;
            self.inference = Some(Inferring {
                model,
                _lease: lease,
                server: None,
                persisted: Vec::new(),
            });
        }
        let (current, persisted) = match self.inference.as_mut() {
            Some(i) => (i.server.take(), std::mem::take(&mut i.persisted)),
            None => (None, Vec::new()),
        };
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
        let worker = tokio::task::spawn_blocking(move || {
            let mut state = (current, persisted);
            let result = inference_request(&shared, account, model, seq, &mut state, &payload, &tx);
            (state, result)
        });
        let mut write_error = None;
        while let Some(frame) = rx.recv().await {
            if let Err(e) = self.write(&frame).await {
                write_error = Some(e);
                break;
            }
        }
        drop(rx);
        let ((server, persisted), result) = worker
            .await
            .map_err(|e| ServerError::Internal(format!("inference worker failed: {e}")))?;
        if let Some(i) = self.inference.as_mut() {
            // A failed request may have left a round half done: the role keeps its own
            // consistency (a refused message changes nothing), so it stays in place.
            i.server = server;
            i.persisted = persisted;
        }
        if let Some(e) = write_error {
            return Err(e);
        }
        result?;
        self.send(seq, &Response::InferenceDone { model }).await
    }

    /// One `Train` request: applies the message, streams the replies and the per-sample
    /// gradients as they are computed, commits a finished step, ends with `StepState`.
    async fn train(&mut self, seq: u64, model: ModelId, message: Vec<u8>) -> Result<()> {
        let account = self.account()?;
        let shared = self.shared.clone();
        let load = |shared: Arc<Shared>| {
            blocking(move || {
                let stored = shared.with_store(|s| s.load(account, model))?;
                Ok(Box::new(restore(&stored.setup, &stored.state)?))
            })
        };
        if self.training.as_ref().map(|t| t.model) != Some(model) {
            // Switching models rolls back an unfinished step of the previous one.
            self.training = None;
            let lease = self.claim(account, model).await?;
            let server = load(shared.clone()).await?;
            self.training = Some(Training {
                model,
                _lease: lease,
                server: Some(server),
            });
        }
        let server = match self.training.as_mut().and_then(|t| t.server.take()) {
            Some(s) => s,
            None => load(shared.clone()).await?,
        };
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(2);
        let max = shared.limits.max_frame;
        let worker = tokio::task::spawn_blocking(move || {
            let mut server = server;
            let result = step(
                &shared,
                account,
                model,
                seq,
                &mut server,
                &message,
                max,
                &tx,
            );
            (server, result)
        });
        let mut write_error = None;
        while let Some(frame) = rx.recv().await {
            if let Err(e) = self.write(&frame).await {
                // Dropping the receiver stops the worker at its next message.
                write_error = Some(e);
                break;
            }
        }
        drop(rx);
        let (server, result) = worker
            .await
            .map_err(|e| ServerError::Internal(format!("training worker failed: {e}")))?;
        if let Some(e) = write_error {
            return Err(e);
        }
        match result {
            Ok(committed_step) => {
                if let Some(t) = self.training.as_mut() {
                    t.server = Some(server);
                }
                let done = Response::StepState {
                    model,
                    committed_step,
                };
                self.send(seq, &done).await
            }
            Err(e) => {
                // A refused message leaves the state machine unchanged; anything else may
                // not have, so the committed state is restored on the next request.
                let unchanged = matches!(
                    e,
                    ServerError::Protocol(
                        ProtocolError::UnexpectedMessage { .. }
                            | ProtocolError::InvalidMessage { .. }
                            | ProtocolError::Malformed(_)
                            | ProtocolError::Decode(_)
                            | ProtocolError::FrameTooLarge { .. }
                    )
                );
                if let Some(t) = self.training.as_mut().filter(|_| unchanged) {
                    t.server = Some(server);
                }
                Err(e)
            }
        }
    }
}

/// Largest size parameter of a layer (kernel, stride, padding, channels, image side).
pub const MAX_DIM: usize = 1 << 16;
/// Largest number of scalars in any layer's input or output.
pub const MAX_ACTIVATIONS: usize = 1 << 21;
/// Largest number of weights of a model.
pub const MAX_WEIGHTS: usize = 1 << 25;
/// Largest number of biases (each is one ciphertext, about 130 KB in memory).
pub const MAX_BIASES: usize = 1 << 13;
/// Largest gather plan of a layer (output positions × patch).
pub const MAX_GATHER: usize = 1 << 27;

/// Refuses architectures whose server state would not fit the fixed bounds above, before
/// anything is allocated for them: a hostile `Setup` must not exhaust the server's memory
/// or overflow a size computation. (The paper's MNIST CNN: 784 inputs, 9216 activations,
/// 28 k weights, 142 biases.)
///
/// # Errors
/// [`ServerError::Limit`] naming the bound, [`ServerError::Protocol`] for a layer that does
/// not fit its input.
pub fn check_architecture(spec: &sphinx_nn::model::ModelSpec) -> Result<()> {
    use sphinx_nn::layers::{LayerSpec, Shape};
    let limit = |what: String| ServerError::Limit(what);
    let check_shape = |s: Shape| -> Result<usize> {
        let len = s
            .channels
            .checked_mul(s.height)
            .and_then(|x| x.checked_mul(s.width));
        match len {
            Some(n) if s.channels.max(s.height).max(s.width) <= MAX_DIM && n <= MAX_ACTIVATIONS => {
                Ok(n)
            }
            _ => Err(limit(format!(
                "a layer shape {}×{}×{} exceeds {MAX_DIM} per side or {MAX_ACTIVATIONS} values",
                s.channels, s.height, s.width
            ))),
        }
    };
    let mut cur = spec.input;
    check_shape(cur)?;
    let (mut weights, mut biases) = (0usize, 0usize);
    for (i, layer) in spec.layers.iter().enumerate() {
        let sizes = match *layer {
            LayerSpec::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
            } => [in_channels, out_channels, kernel, stride, padding],
            LayerSpec::Linear {
                in_features,
                out_features,
            } => [in_features.min(MAX_DIM), out_features.min(MAX_DIM), 0, 0, 0],
            LayerSpec::AvgPool2d { kernel, stride } => [kernel, stride, 0, 0, 0],
            _ => [0; 5],
        };
        if sizes.iter().any(|&v| v > MAX_DIM) {
            return Err(limit(format!(
                "layer {i} has a size parameter over {MAX_DIM}"
            )));
        }
        let next = layer
            .output_shape(cur)
            .map_err(|e| ServerError::Protocol(ProtocolError::Nn(e)))?;
        let out_len = check_shape(next)?;
        let (w, b, gather) = match *layer {
            LayerSpec::Linear {
                in_features,
                out_features,
            } => (
                in_features.saturating_mul(out_features),
                out_features,
                in_features,
            ),
            LayerSpec::Conv2d {
                in_channels,
                out_channels,
                kernel,
                ..
            } => {
                let patch = in_channels.saturating_mul(kernel).saturating_mul(kernel);
                let positions = out_len / out_channels.max(1);
                (
                    out_channels.saturating_mul(patch),
                    out_channels,
                    positions.saturating_mul(patch),
                )
            }
            _ => (0, 0, 0),
        };
        if gather > MAX_GATHER {
            return Err(limit(format!(
                "layer {i} gathers over {MAX_GATHER} entries"
            )));
        }
        weights = weights.saturating_add(w);
        biases = biases.saturating_add(b);
        cur = next;
    }
    if weights > MAX_WEIGHTS {
        return Err(limit(format!("{weights} weights exceed {MAX_WEIGHTS}")));
    }
    if biases > MAX_BIASES {
        return Err(limit(format!("{biases} biases exceed {MAX_BIASES}")));
    }
    Ok(())
}

fn restore(setup: &[u8], state: &[u8]) -> Result<Server> {
    // Stored bytes were validated on the way in; the limit only guards a corrupt file.
    let setup = decode_setup(setup, setup.len())?;
    Ok(Server::restore(setup, state, &mut rand::rng())?)
}

/// The blocking part of a `Train` request; returns the committed step count.
#[allow(clippy::too_many_arguments)]
fn step(
    shared: &Shared,
    account: AccountId,
    model: ModelId,
    seq: u64,
    server: &mut Server,
    message: &[u8],
    max: usize,
    tx: &mpsc::Sender<Vec<u8>>,
) -> Result<u64> {
    let params = server.params().clone();
    let msg = ClientMessage::decode(&params, message, max)?;
    let before = server.step();
    let broken = || ServerError::Io(std::io::ErrorKind::BrokenPipe.into());
    // Two stages: this thread computes the next reply while a second one encodes and
    // frames the previous (single-threaded work that would otherwise stall the
    // pipeline between gradient chunks).
    let (enc_tx, enc_rx) = std::sync::mpsc::sync_channel::<ServerMessage>(1);
    std::thread::scope(|scope| {
        let params = &params;
        let encoder = scope.spawn(move || -> Result<()> {
            for reply in enc_rx {
                let frame = Response::training_frame(seq, model, &reply, params)?;
                tx.blocking_send(frame).map_err(|_| broken())?;
            }
            Ok(())
        });
        let computed = (|| -> Result<()> {
            for reply in server.handle(msg)? {
                enc_tx.send(reply).map_err(|_| broken())?;
            }
            while let Some(reply) = server.poll()? {
                enc_tx.send(reply).map_err(|_| broken())?;
            }
            Ok(())
        })();
        drop(enc_tx);
        let encoded = encoder
            .join()
            .map_err(|_| ServerError::Internal("reply encoder panicked".into()))?;
        // A failed send means the encoder failed first: its error is the cause.
        match (computed, encoded) {
            (_, Err(e)) | (Err(e), Ok(())) => Err(e),
            (Ok(()), Ok(())) => Ok(()),
        }
    })?;
    if server.step() > before {
        let state = server.snapshot()?;
        shared.with_store(|s| s.commit_step(account, model, before, server.step(), &state))?;
    }
    Ok(server.step())
}

/// The model's committed weights (the average `W̄` when the setup keeps one) with zero
/// biases: what the inference role computes with.
fn committed_weights(
    shared: &Shared,
    account: AccountId,
    model: ModelId,
) -> Result<sphinx_nn::model::Model> {
    let stored = shared.with_store(|s| s.load(account, model))?;
    let setup = decode_setup(&stored.setup, stored.setup.len())?;
    let spec = setup.model.clone();
    let server = Server::restore(setup, &stored.state, &mut rand::rng())?;
    Ok(model_with_weights(&spec, server.model_weights())?)
}

/// The blocking part of an `Inference` request. `state` is the connection's inference role
/// and the snapshot bytes last persisted; both are updated in place.
fn inference_request(
    shared: &Shared,
    account: AccountId,
    model: ModelId,
    seq: u64,
    state: &mut (Option<Box<InferenceServer>>, Vec<u8>),
    payload: &[u8],
    tx: &mpsc::Sender<Vec<u8>>,
) -> Result<()> {
    let max = shared.limits.max_frame;
    let (slot, persisted) = state;
    let msg = match decode_inference_setup(payload, max) {
        Ok(setup) => {
            // A new setup starts a new session (new client key): earlier rounds are void.
            *slot = None;
            let weights = committed_weights(shared, account, model)?;
            *slot = Some(Box::new(InferenceServer::new(
                &weights,
                setup,
                rand::rng(),
            )?));
            None
        }
        Err(setup_error) => {
            if slot.is_none() {
                // Resume the session persisted by an earlier connection or server process.
                let stored = shared.with_store(|s| s.get_blob(account, model, INFERENCE_BLOB));
                let Ok(bytes) = stored else {
                    return Err(ServerError::Protocol(setup_error));
                };
                let weights = committed_weights(shared, account, model)?;
                *slot = Some(Box::new(InferenceServer::restore(
                    &bytes,
                    bytes.len(),
                    &weights,
                    rand::rng(),
                )?));
                *persisted = bytes;
            }
            let server = slot
                .as_ref()
                .ok_or_else(|| ServerError::Internal("no inference role".into()))?;
            Some(InferenceClientMessage::decode(
                server.params(),
                payload,
                max,
            )?)
        }
    };
    let server = slot
        .as_mut()
        .ok_or_else(|| ServerError::Internal("no inference role".into()))?;
    let online = msg
        .as_ref()
        .is_some_and(|m| m.kind() == InferenceKind::OnlineInput);
    let broken = || ServerError::Io(std::io::ErrorKind::BrokenPipe.into());
    let params = server.params().clone();
    let send = |reply: sphinx_protocol::inference::messages::InferenceServerMessage| {
        let frame = Response::Inference {
            model,
            payload: reply.encode(&params)?,
        }
        .to_frame(seq)?;
        tx.blocking_send(frame).map_err(|_| broken())
    };
    if let Some(msg) = msg {
        for reply in server.handle(msg)? {
            send(reply)?;
        }
        while let Some(reply) = server.poll()? {
            send(reply)?;
        }
    }
    // Online queries are not persisted one by one (a database write per query would
    // dominate the latency); see docs/operations.md for what a restart forgets.
    if !online {
        let snapshot = server.snapshot()?;
        if snapshot != *persisted {
            let quota = shared.limits.account_quota;
            shared.with_store(|s| s.put_blob(account, model, INFERENCE_BLOB, &snapshot, quota))?;
            *persisted = snapshot;
        }
    }
    Ok(())
}

/// A server running on its own thread and runtime: for an in-process server (the demo,
/// tests). Dropping it shuts the server down.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    fingerprint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl ServerHandle {
    /// Binds (see [`bind`]) and serves on a new thread; returns once the socket is bound.
    ///
    /// # Errors
    /// As [`bind`]; [`ServerError::Io`] if the runtime cannot start.
    pub fn spawn(config: ServerConfig) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sphinx-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let bound = match bind(config).await {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    let _ = ready_tx.send(Ok((bound.local_addr(), bound.fingerprint().to_owned())));
                    bound
                        .serve(async {
                            // A dropped sender is a shutdown too.
                            let _ = stop_rx.await;
                        })
                        .await
                })
            })?;
        let (addr, fingerprint) = ready_rx
            .recv()
            .map_err(|_| ServerError::Internal("server thread ended early".into()))??;
        Ok(Self {
            addr,
            fingerprint,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its certificate's fingerprint.
    #[must_use]
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Stops accepting, lets connections finish their current request, and waits.
    ///
    /// # Errors
    /// [`ServerError::Internal`] if the server thread panicked.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| ServerError::Internal("server thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Creates an account in `data_dir`'s database (the operator's registration path).
///
/// # Errors
/// [`ServerError::AccountExists`], [`ServerError::Store`], [`ServerError::Io`].
pub fn add_account(data_dir: &std::path::Path, name: &AccountName) -> Result<Token> {
    prepare_data_dir(data_dir)?;
    Store::open(data_dir)?.add_account(name)
}

/// Runs a server in the foreground until SIGINT (ctrl-c) or SIGTERM, then shuts down
/// gracefully. `on_ready` runs once the socket is bound (to print the address and the
/// fingerprint).
///
/// # Errors
/// As [`bind`]; [`ServerError::Io`] if the runtime cannot start.
pub fn run_until_signal(config: ServerConfig, on_ready: impl FnOnce(&BoundServer)) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let bound = bind(config).await?;
        on_ready(&bound);
        bound.serve(shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    // Without a handler there is no signal to wait for; a failed one ends the server.
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use sphinx_nn::layers::{LayerSpec, Shape};
    use sphinx_nn::model::ModelSpec;
    use sphinx_nn::presets::Preset;

    #[test]
    fn architecture_bounds_accept_the_presets_and_refuse_hostile_specs() {
        for name in ["sphinx-mnist-cnn", "mlp-30"] {
            check_architecture(&name.parse::<Preset>().unwrap().spec()).unwrap();
        }
        let linear = |i, o| ModelSpec {
            input: Shape::flat(i),
            layers: vec![LayerSpec::Linear {
                in_features: i,
                out_features: o,
            }],
        };
        assert!(matches!(
            check_architecture(&linear(1 << 20, 1 << 20)),
            Err(ServerError::Limit(_))
        ));
        assert!(matches!(
            check_architecture(&linear(usize::MAX, 2)),
            Err(ServerError::Limit(_))
        ));
        // Too many biases (ciphertexts) even with few weights.
        assert!(check_architecture(&linear(1, MAX_BIASES + 1)).is_err());
        let conv = |padding, out_channels| ModelSpec {
            input: Shape::image(1, 28, 28),
            layers: vec![
                LayerSpec::Conv2d {
                    in_channels: 1,
                    out_channels,
                    kernel: 5,
                    stride: 1,
                    padding,
                },
                LayerSpec::Flatten,
            ],
        };
        assert!(check_architecture(&conv(usize::MAX / 2, 4)).is_err());
        assert!(check_architecture(&conv(0, 60_000)).is_err());
        assert!(check_architecture(&conv(0, 4)).is_ok());
    }
}
