//! An in-process driver of private inference: one client and one server exchanging
//! messages by value, every message's wire size accounted by type.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rand::{CryptoRng, RngCore};
use sphinx_nn::model::Model;

use crate::accounting::KindTraffic;
use crate::error::{ProtocolError, Result};
use crate::inference::messages::{
    Direction, InferenceClientMessage, InferenceKind, InferenceServerMessage,
};
use crate::inference::{InferenceClient, InferenceServer};

/// Messages and bytes per inference message type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InferenceTraffic {
    by_kind: BTreeMap<InferenceKind, KindTraffic>,
}

impl InferenceTraffic {
    /// Records one message of `bytes` bytes.
    pub fn record(&mut self, kind: InferenceKind, bytes: usize) {
        let e = self.by_kind.entry(kind).or_default();
        e.messages += 1;
        e.bytes += bytes as u64;
    }

    /// Traffic of one type.
    #[must_use]
    pub fn kind(&self, kind: InferenceKind) -> KindTraffic {
        self.by_kind.get(&kind).copied().unwrap_or_default()
    }

    /// Bytes of the online phase (both directions, stale refusals included).
    #[must_use]
    pub fn online_bytes(&self) -> u64 {
        self.by_kind
            .iter()
            .filter(|(k, _)| k.is_online())
            .map(|(_, t)| t.bytes)
            .sum()
    }

    /// Bytes of setup, status and preprocessing (both directions).
    #[must_use]
    pub fn offline_bytes(&self) -> u64 {
        self.by_kind
            .iter()
            .filter(|(k, _)| !k.is_online())
            .map(|(_, t)| t.bytes)
            .sum()
    }

    /// Bytes of preprocessing messages only (start, `[r]` up, `[W r − s]` down).
    #[must_use]
    pub fn preprocessing_bytes(&self) -> u64 {
        [
            InferenceKind::PreprocessStart,
            InferenceKind::PreprocessInput,
            InferenceKind::PreprocessOutput,
        ]
        .into_iter()
        .map(|k| self.kind(k).bytes)
        .sum()
    }

    /// Total bytes in one direction.
    #[must_use]
    pub fn bytes(&self, direction: Direction) -> u64 {
        self.by_kind
            .iter()
            .filter(|(k, _)| k.direction() == direction)
            .map(|(_, t)| t.bytes)
            .sum()
    }
}

/// A client and a server connected in memory.
#[derive(Debug)]
pub struct InferenceSession {
    client: InferenceClient,
    server: InferenceServer,
    traffic: InferenceTraffic,
    preprocessing_time: Duration,
    online_time: Duration,
}

impl InferenceSession {
    /// Delivers the client's setup to a new server for `model` (weights only) and asks the
    /// server for its versions.
    ///
    /// # Errors
    /// [`ProtocolError::UnexpectedInference`] if `setup` is another message; errors of
    /// [`InferenceServer::new`].
    pub fn new<R: RngCore + CryptoRng>(
        client: InferenceClient,
        setup: InferenceClientMessage,
        model: &Model,
        server_rng: R,
    ) -> Result<Self> {
        let InferenceClientMessage::Setup(s) = setup else {
            return Err(ProtocolError::UnexpectedInference {
                got: setup.kind(),
                expected: "inference setup",
            });
        };
        let mut traffic = InferenceTraffic::default();
        let len = InferenceClientMessage::Setup(s.clone()).wire_len(client.params())?;
        traffic.record(InferenceKind::Setup, len);
        let server = InferenceServer::new(model, *s, server_rng)?;
        let mut session = Self {
            client,
            server,
            traffic,
            preprocessing_time: Duration::ZERO,
            online_time: Duration::ZERO,
        };
        session.exchange(InferenceClientMessage::StatusRequest, &mut |_| {})?;
        Ok(session)
    }

    /// The client.
    #[must_use]
    pub fn client(&self) -> &InferenceClient {
        &self.client
    }

    /// Mutable access to the client (e.g. to install new biases).
    pub fn client_mut(&mut self) -> &mut InferenceClient {
        &mut self.client
    }

    /// The server.
    #[must_use]
    pub fn server(&self) -> &InferenceServer {
        &self.server
    }

    /// Mutable access to the server (e.g. to install new weights).
    pub fn server_mut(&mut self) -> &mut InferenceServer {
        &mut self.server
    }

    /// Bytes per message type so far.
    #[must_use]
    pub fn traffic(&self) -> &InferenceTraffic {
        &self.traffic
    }

    /// Wall time spent in preprocessing and refreshes (both roles, in-process).
    #[must_use]
    pub fn preprocessing_time(&self) -> Duration {
        self.preprocessing_time
    }

    /// Wall time spent in online queries (both roles, in-process).
    #[must_use]
    pub fn online_time(&self) -> Duration {
        self.online_time
    }

    /// Sends one client message and runs both roles until neither has anything to send.
    fn exchange(
        &mut self,
        first: InferenceClientMessage,
        progress: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let params = self.client.params().clone();
        let mut up = VecDeque::from([first]);
        loop {
            while let Some(msg) = up.pop_front() {
                self.traffic.record(msg.kind(), msg.wire_len(&params)?);
                let mut down = VecDeque::from(self.server.handle(msg)?);
                loop {
                    while let Some(reply) = down.pop_front() {
                        self.traffic.record(reply.kind(), reply.wire_len(&params)?);
                        if let InferenceServerMessage::PreprocessOutput(c) = &reply {
                            progress(c.cts.len());
                        }
                        up.extend(self.client.handle(reply)?);
                    }
                    match self.server.poll()? {
                        Some(reply) => down.push_back(reply),
                        None => break,
                    }
                }
            }
            match self.client.poll()? {
                Some(msg) => up.push_back(msg),
                None => return Ok(()),
            }
        }
    }

    /// Runs a preprocessing round for `queries` future queries.
    ///
    /// # Errors
    /// Errors of either role.
    pub fn preprocess(&mut self, queries: usize) -> Result<()> {
        self.preprocess_with(queries, &mut |_| {})
    }

    /// [`preprocess`](Self::preprocess), calling `progress` with the number of output
    /// ciphertexts of every [`PreprocessOutput`](super::messages::PreprocessOutput) received
    /// (the round has [`InferenceClient::preprocessing_outputs`] in all).
    ///
    /// # Errors
    /// Errors of either role.
    pub fn preprocess_with(
        &mut self,
        queries: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let t = Instant::now();
        let start = self.client.start_preprocessing(queries)?;
        let out = self.exchange(start, progress);
        self.preprocessing_time += t.elapsed();
        out
    }

    /// Asks the server for its versions and recomputes whatever the client's fresh masks
    /// need; returns whether anything was refreshed.
    ///
    /// # Errors
    /// Errors of either role.
    pub fn refresh(&mut self) -> Result<bool> {
        let t = Instant::now();
        let out = (|| {
            self.exchange(InferenceClientMessage::StatusRequest, &mut |_| {})?;
            match self.client.start_refresh()? {
                Some(start) => self.exchange(start, &mut |_| {}).map(|()| true),
                None => Ok(false),
            }
        })();
        self.preprocessing_time += t.elapsed();
        out
    }

    /// One private query: the model's output for `input`.
    ///
    /// # Errors
    /// [`ProtocolError::StaleModel`] if the masks were computed for older weights
    /// ([`refresh`](Self::refresh) and retry), [`ProtocolError::MasksExhausted`], errors
    /// of either role.
    pub fn query(&mut self, input: &[f32]) -> Result<Vec<f32>> {
        let t = Instant::now();
        let out = (|| {
            let first = self.client.start_query(input)?;
            self.exchange(first, &mut |_| {})?;
            self.client
                .take_result()
                .map(|r| r.logits)
                .ok_or(ProtocolError::UnexpectedInference {
                    got: InferenceKind::OnlineInput,
                    expected: "a finished query",
                })
        })();
        self.online_time += t.elapsed();
        out
    }
}
