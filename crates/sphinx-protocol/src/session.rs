//! An in-process driver: one client and one server exchanging messages by value, with
//! every message's wire size accounted.
//!
//! Level-0 results are compact (switched to `2^k`, [`messages::result_bits`]) as the
//! server produces them, so in-process runs decrypt, measure and cost what networked ones
//! do, less the encoding itself.

use std::collections::VecDeque;

use rand::{CryptoRng, RngCore};
use sphinx_nn::model::Model;

use crate::accounting::{PhaseTimes, Traffic};
use crate::client::{Client, StepOutcome};
use crate::error::{ProtocolError, Result};
use crate::messages::{ClientMessage, MessageKind, ServerMessage};
use crate::server::Server;

/// A client and a server connected in memory.
#[derive(Debug)]
pub struct Session {
    client: Client,
    server: Server,
    traffic: Traffic,
}

impl Session {
    /// Delivers the client's [`ClientMessage::Setup`] to a new server.
    ///
    /// # Errors
    /// [`ProtocolError::UnexpectedMessage`] if `setup` is another message; errors of
    /// [`Server::new`].
    pub fn new<R: RngCore + CryptoRng>(
        client: Client,
        setup: ClientMessage,
        server_rng: &mut R,
    ) -> Result<Self> {
        let ClientMessage::Setup(s) = setup else {
            return Err(ProtocolError::UnexpectedMessage {
                got: setup.kind(),
                expected: "setup",
            });
        };
        let params = s.params.build()?;
        let mut traffic = Traffic::default();
        traffic.record(
            MessageKind::Setup,
            ClientMessage::Setup(s.clone()).wire_len(&params)?,
        );
        let server = Server::new(*s, server_rng)?;
        Ok(Self {
            client,
            server,
            traffic,
        })
    }

    /// The client.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The server.
    #[must_use]
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Bytes per message type so far (setup included).
    #[must_use]
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Client and server phase times so far.
    #[must_use]
    pub fn times(&self) -> PhaseTimes {
        let mut t = self.client.times().clone();
        t.merge(self.server.times());
        t
    }

    fn deliver_to_client(
        &mut self,
        msg: ServerMessage,
        queue: &mut VecDeque<ClientMessage>,
    ) -> Result<()> {
        let params = self.server.params().clone();
        self.traffic.record(msg.kind(), msg.wire_len(&params)?);
        queue.extend(self.client.handle(msg)?);
        Ok(())
    }

    /// Runs one full training step.
    ///
    /// # Errors
    /// [`ProtocolError::BudgetExhausted`] before anything is sent if the budget is spent;
    /// any error of either role.
    pub fn run_step(&mut self) -> Result<StepOutcome> {
        let params = self.server.params().clone();
        let mut queue = VecDeque::from([self.client.start_step()?]);
        while let Some(msg) = queue.pop_front() {
            self.traffic.record(msg.kind(), msg.wire_len(&params)?);
            for reply in self.server.handle(msg)? {
                self.deliver_to_client(reply, &mut queue)?;
            }
            while let Some(reply) = self.server.poll()? {
                self.deliver_to_client(reply, &mut queue)?;
            }
        }
        self.client
            .last_step()
            .filter(|s| s.step + 1 == self.client.step())
            .ok_or(ProtocolError::UnexpectedMessage {
                got: MessageKind::NoisyGradient,
                expected: "a completed step",
            })
    }

    /// Fetches the model from the server and decrypts its biases.
    ///
    /// # Errors
    /// Errors of either role.
    pub fn export_model(&mut self) -> Result<Model> {
        let params = self.server.params().clone();
        let req = ClientMessage::ModelRequest;
        self.traffic.record(req.kind(), req.wire_len(&params)?);
        for reply in self.server.handle(req)? {
            self.traffic.record(reply.kind(), reply.wire_len(&params)?);
            if let ServerMessage::ModelExport(m) = reply {
                return self.client.assemble_model(&m);
            }
        }
        Err(ProtocolError::UnexpectedMessage {
            got: MessageKind::ModelRequest,
            expected: "a model export in reply",
        })
    }
}
