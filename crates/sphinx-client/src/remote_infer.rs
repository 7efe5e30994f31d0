//! The client role of [`sphinx_protocol::inference`] driven over a [`Connection`]: private
//! inference against a model the account trained on the server.
//!
//! The server computes with its committed plaintext `W`; the biases (decrypted from the
//! training export) and the BFV secret key stay here. Each [`RemoteInference`] generates a
//! fresh key pair and opens a new inference session on the server (its masks are never
//! written to disk: a new session preprocesses again), so nothing secret is persisted
//! beyond what [`crate::store`] already keeps.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use sphinx_nn::model::Model;
use sphinx_protocol::inference::messages::{InferenceClientMessage, InferenceServerMessage};
use sphinx_protocol::inference::{FixedPoint, InferenceClient, biases_of, inference_parameters};
use sphinx_protocol::wire::{self, ModelId, Request, Response};

use crate::connection::Connection;
use crate::error::{ClientError, Result};

/// Bytes up and down of one phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseTraffic {
    /// Client → server (frames, TLS excluded).
    pub up: u64,
    /// Server → client.
    pub down: u64,
}

impl PhaseTraffic {
    /// Both directions.
    #[must_use]
    pub fn total(self) -> u64 {
        self.up + self.down
    }
}

/// Private inference over the network (one server session).
#[derive(Debug)]
pub struct RemoteInference {
    conn: Connection,
    model: ModelId,
    client: InferenceClient,
    preprocessing_time: Duration,
    online_time: Duration,
    preprocessing: PhaseTraffic,
    online: PhaseTraffic,
    queries: u64,
}

impl RemoteInference {
    /// Opens an inference session on the server for `model`, the server id of `trained`
    /// (the model as exported by training: its biases are used here, its weights only for
    /// the architecture; the server uses its own committed `W`).
    ///
    /// # Errors
    /// [`ClientError::Server`] (`NotFound` for a model of another account, `Busy` while it
    /// trains elsewhere); [`ClientError::Protocol`].
    pub fn new(
        conn: Connection,
        model: ModelId,
        trained: &Model,
        rng: ChaCha20Rng,
    ) -> Result<Self> {
        let params = inference_parameters()
            .build()
            .map_err(sphinx_protocol::ProtocolError::from)?;
        let (client, setup) = InferenceClient::new(
            params,
            trained.spec().clone(),
            biases_of(trained),
            FixedPoint::default(),
            rng,
        )?;
        let mut this = Self {
            conn,
            model,
            client,
            preprocessing_time: Duration::ZERO,
            online_time: Duration::ZERO,
            preprocessing: PhaseTraffic::default(),
            online: PhaseTraffic::default(),
            queries: 0,
        };
        let t = Instant::now();
        let before = this.conn.traffic();
        this.exchange(setup)?;
        this.exchange(InferenceClientMessage::StatusRequest)?;
        this.account(before, t, false);
        Ok(this)
    }

    fn account(&mut self, before: (u64, u64), t: Instant, online: bool) {
        let (up, down) = self.conn.traffic();
        let (phase, time) = if online {
            (&mut self.online, &mut self.online_time)
        } else {
            (&mut self.preprocessing, &mut self.preprocessing_time)
        };
        phase.up += up.saturating_sub(before.0);
        phase.down += down.saturating_sub(before.1);
        *time += t.elapsed();
    }

    /// Sends `first`, then everything the client role answers or polls, until it has
    /// nothing more to send.
    fn exchange(&mut self, first: InferenceClientMessage) -> Result<()> {
        let params = self.client.params().clone();
        let mut up = VecDeque::from([first]);
        loop {
            while let Some(msg) = up.pop_front() {
                let req = Request::Inference {
                    model: self.model,
                    payload: msg.encode(&params)?,
                };
                let client = &mut self.client;
                let end = self.conn.stream(&req, |resp| match resp {
                    Response::Inference { payload, .. } => {
                        let reply = InferenceServerMessage::decode(
                            &params,
                            &payload,
                            wire::DEFAULT_MAX_FRAME,
                        )?;
                        up.extend(client.handle(reply)?);
                        Ok(())
                    }
                    other => Err(ClientError::UnexpectedResponse(format!("{other:?}"))),
                })?;
                if !matches!(end, Response::InferenceDone { .. }) {
                    return Err(ClientError::UnexpectedResponse(format!("{end:?}")));
                }
            }
            match self.client.poll()? {
                Some(msg) => up.push_back(msg),
                None => return Ok(()),
            }
        }
    }

    /// Preprocesses masks for `queries` future queries (the expensive, input-independent
    /// phase).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn preprocess(&mut self, queries: usize) -> Result<()> {
        let (t, before) = (Instant::now(), self.conn.traffic());
        let out = self
            .client
            .start_preprocessing(queries)
            .map_err(ClientError::from)
            .and_then(|start| self.exchange(start));
        self.account(before, t, false);
        out
    }

    /// One private query: the model's logits for `input`.
    ///
    /// # Errors
    /// [`ClientError::Protocol`] (`MasksExhausted`: preprocess more; `StaleModel`: the
    /// weights changed since preprocessing), [`ClientError::Server`].
    pub fn query(&mut self, input: &[f32]) -> Result<Vec<f32>> {
        let (t, before) = (Instant::now(), self.conn.traffic());
        let out = (|| {
            let first = self.client.start_query(input)?;
            self.exchange(first)?;
            self.client
                .take_result()
                .map(|r| r.logits)
                .ok_or_else(|| ClientError::UnexpectedResponse("no query result".into()))
        })();
        self.account(before, t, true);
        self.queries += 1;
        out
    }

    /// Queries answered so far (including failed ones).
    #[must_use]
    pub fn queries(&self) -> u64 {
        self.queries
    }

    /// Wall time of setup and preprocessing (network included).
    #[must_use]
    pub fn preprocessing_time(&self) -> Duration {
        self.preprocessing_time
    }

    /// Wall time of online queries (network included).
    #[must_use]
    pub fn online_time(&self) -> Duration {
        self.online_time
    }

    /// Frame bytes of setup and preprocessing.
    #[must_use]
    pub fn preprocessing_traffic(&self) -> PhaseTraffic {
        self.preprocessing
    }

    /// Frame bytes of online queries.
    #[must_use]
    pub fn online_traffic(&self) -> PhaseTraffic {
        self.online
    }

    /// The connection back (e.g. to export or train again).
    #[must_use]
    pub fn into_connection(self) -> Connection {
        self.conn
    }
}

/// Softmax of logits: class probabilities.
#[must_use]
pub fn probabilities(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|&e| e / sum).collect()
}

/// The index of the largest value (0 for an empty slice).
#[must_use]
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}
