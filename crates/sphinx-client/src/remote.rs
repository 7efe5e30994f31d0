//! Drives [`sphinx_protocol::client::Client`] over a [`Connection`]: creating a model on
//! the server, running and resuming training steps, exporting the model.
//!
//! Each client message goes out as one `Train` request; the server's replies stream back
//! and are handled as they arrive (the client decrypts gradient chunks while the server
//! computes the next ones); messages the client produces meanwhile wait until the request
//! is answered, since a connection serves one request at a time. While the server commits
//! a step (it answers the release of the noisy gradient only then), the client draws and
//! encrypts the next step's first message.
//!
//! Crash safety: before the client releases a step's noisy gradient it stores the state
//! *after* that step as pending ([`Progress`]); when the server confirms the commit the
//! pending state becomes the committed one. On [`RemoteTrainer::resume`] the server's
//! committed step decides: equal to the local committed step, the client redoes the
//! interrupted step from there (drawing and releasing exactly the same values, see
//! [`sphinx_protocol::client_state`]); equal to the pending step, the server got the
//! gradient and the client continues from the pending state.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_dp::{
    ClipNorm, Delta, DpEvent, DpSgdAggregator, DpSgdConfig, Epsilon, NoiseMultiplier,
    PrivacyBudget, SampleRate,
};
use sphinx_he::Parameters;
use sphinx_nn::data::Dataset;
use sphinx_nn::model::{Model, ModelSpec};
use sphinx_protocol::ProtocolError;
use sphinx_protocol::client::{Client, ClientConfig};
use sphinx_protocol::messages::{ClientMessage, ServerMessage};
use sphinx_protocol::params::build_training_parameters;
use sphinx_protocol::wire::{DEFAULT_MAX_FRAME, ModelId, Request, Response};

use crate::connection::Connection;
use crate::error::{ClientError, Result};
use crate::store::{ClientDir, ModelRecord, ModelSecrets, Progress, StepRecord, StoredSnapshot};

/// The architecture of a record's preset.
///
/// # Errors
/// [`ClientError::Nn`] for an unknown preset.
pub fn model_spec(record: &ModelRecord) -> Result<ModelSpec> {
    Ok(record.preset.parse::<sphinx_nn::presets::Preset>()?.spec())
}

/// The DP event of one step of `record`'s training.
///
/// # Errors
/// [`ClientError::Dp`] for invalid q or σ.
pub fn dp_event(record: &ModelRecord) -> Result<DpEvent> {
    Ok(DpEvent::poisson_gaussian(
        SampleRate::new(record.sample_rate)?,
        NoiseMultiplier::new(record.noise_multiplier)?,
    ))
}

/// Builds the client role of `record` from its secrets: the same secrets, record and data
/// always give the same keys and the same draws.
///
/// # Errors
/// [`ClientError::Invalid`] if `data` does not have the record's size; DP, model and key
/// generation errors.
pub fn build_client(
    record: &ModelRecord,
    secrets: &ModelSecrets,
    data: Dataset,
) -> Result<(Client, ClientMessage, Arc<Parameters>)> {
    if data.len() != record.train_examples {
        return Err(ClientError::Invalid(format!(
            "model {:?} trains on {} examples, the data given has {}",
            record.name,
            record.train_examples,
            data.len()
        )));
    }
    if crate::data::digest(&data) != record.data_digest {
        return Err(ClientError::Invalid(format!(
            "model {:?} was trained on other data (its digest differs): use the same --data and subset",
            record.name
        )));
    }
    let spec = model_spec(record)?;
    let weights: usize = Model::zeros(spec.clone())?
        .param_layers()
        .map(|p| p.weight().len())
        .sum();
    let config = DpSgdConfig {
        clip_norm: ClipNorm::new(record.clip)?,
        noise_multiplier: NoiseMultiplier::new(record.noise_multiplier)?,
        sample_rate: SampleRate::new(record.sample_rate)?,
        dataset_size: record.train_examples,
    };
    let agg =
        DpSgdAggregator::with_rng(weights, config, ChaCha20Rng::from_seed(secrets.dp_seed()))?;
    let params = build_training_parameters()?;
    let (client, setup) = Client::new(
        params.clone(),
        spec,
        data,
        agg,
        ClientConfig {
            learning_rate: record.learning_rate,
            init_seed: record.init_seed,
            bias_init: record.bias_init,
            weight_average: record.weight_average,
            budget: PrivacyBudget {
                epsilon: Epsilon::new(record.epsilon)?,
                delta: Delta::new(record.delta)?,
            },
        },
        ChaCha20Rng::from_seed(secrets.key_seed()),
    )?;
    Ok((client, setup, params))
}

/// The server's committed step of `model`.
///
/// # Errors
/// Network and server errors.
pub fn committed_step(conn: &mut Connection, model: ModelId) -> Result<u64> {
    match conn.call(&Request::Status { model })? {
        Response::Status(info) => Ok(info.committed_step),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(r: &Response) -> ClientError {
    let what = match r {
        Response::Training { .. } => "a training reply".to_owned(),
        other => format!("{other:?}"),
    };
    ClientError::UnexpectedResponse(what)
}

/// A model being trained on a server.
#[derive(Debug)]
pub struct RemoteTrainer {
    dir: ClientDir,
    record: ModelRecord,
    client: Client,
    params: Arc<Parameters>,
    conn: Connection,
    progress: Progress,
    /// The next step's first message (or the error it met), made while the server
    /// committed the previous step.
    prepared: Option<std::result::Result<ClientMessage, ProtocolError>>,
}

impl RemoteTrainer {
    /// Creates the model on the server (sending only public material: the public and
    /// Galois keys, the architecture and the public hyperparameters) and stores the
    /// record, with the server's id, and the initial progress.
    ///
    /// # Errors
    /// [`ClientError::Invalid`] if the model exists locally; network, server and protocol
    /// errors.
    pub fn create(
        dir: ClientDir,
        mut conn: Connection,
        mut record: ModelRecord,
        secrets: &ModelSecrets,
        data: Dataset,
    ) -> Result<Self> {
        let (mut client, setup, params) = build_client(&record, secrets, data)?;
        dir.create_model(&record, secrets)?;
        let setup = setup.encode(&params)?;
        record.server_model = match conn.call(&Request::CreateModel { setup })? {
            Response::ModelCreated { model } => model.0,
            other => return Err(unexpected(&other)),
        };
        dir.save_record(&record)?;
        let progress = Progress {
            committed: StoredSnapshot::from(&client.snapshot()?),
            pending: None,
            pending_record: None,
            history: Vec::new(),
        };
        dir.save_progress(&record.name, &progress)?;
        Ok(Self {
            dir,
            record,
            client,
            params,
            conn,
            progress,
            prepared: None,
        })
    }

    /// Reopens model `name`, reconciling the local state with the server's committed step
    /// (see the module docs).
    ///
    /// # Errors
    /// [`ClientError::Diverged`] if neither local state matches the server's step;
    /// storage, network and protocol errors.
    pub fn resume(dir: ClientDir, mut conn: Connection, name: &str, data: Dataset) -> Result<Self> {
        let record = dir.record(name)?;
        let secrets = dir.secrets(name)?;
        let (mut client, _setup, params) = build_client(&record, &secrets, data)?;
        drop(secrets);
        let path = dir.progress_path(name)?;
        let mut progress = dir
            .progress(name)?
            .ok_or_else(|| ClientError::Diverged(format!("{} is missing", path.display())))?;
        let server = committed_step(&mut conn, record.model_id())?;
        if server == progress.committed.step {
            progress.pending = None;
            progress.pending_record = None;
        } else if let Some(p) = progress.pending.take().filter(|p| p.step == server) {
            progress.committed = p;
            if let Some(r) = progress.pending_record.take() {
                progress.history.push(r);
            }
        } else {
            return Err(ClientError::Diverged(format!(
                "the server has committed {server} steps of model {name:?}, the client {} (pending: {:?})",
                progress.committed.step,
                progress.pending.as_ref().map(|p| p.step)
            )));
        }
        client.restore(&progress.committed.to_snapshot(&path)?)?;
        dir.save_progress(name, &progress)?;
        Ok(Self {
            dir,
            record,
            client,
            params,
            conn,
            progress,
            prepared: None,
        })
    }

    /// The model's record.
    #[must_use]
    pub fn record(&self) -> &ModelRecord {
        &self.record
    }

    /// The progress so far.
    #[must_use]
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The client role.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The connection (for its byte counters).
    #[must_use]
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Completed (committed) steps.
    #[must_use]
    pub fn step(&self) -> u64 {
        self.client.step()
    }

    /// Runs one training step and commits it on both sides.
    ///
    /// # Errors
    /// [`ClientError::Protocol`] with [`ProtocolError::BudgetExhausted`] before anything
    /// is sent if one more step would exceed ε; network, server and protocol errors (the
    /// step is then redone by [`resume`](Self::resume)).
    pub fn step_once(&mut self) -> Result<StepRecord> {
        let started = Instant::now();
        let (up0, down0) = self.conn.traffic();
        let before = self.client.step();
        let model = self.record.model_id();
        let first = match self.prepared.take() {
            Some(prepared) => prepared?,
            None => self.client.start_step()?,
        };
        let mut queue = VecDeque::from([first]);
        let mut committed = None;
        let Self {
            dir,
            record,
            client,
            params,
            conn,
            progress,
            prepared,
        } = self;
        while let Some(msg) = queue.pop_front() {
            let release = matches!(msg, ClientMessage::NoisyGradient(_));
            if release {
                let outcome = client.last_step().ok_or_else(|| {
                    ClientError::UnexpectedResponse("a release without a finished step".into())
                })?;
                let (up, down) = conn.traffic();
                progress.pending = Some(StoredSnapshot::from(&client.snapshot()?));
                progress.pending_record = Some(StepRecord {
                    step: outcome.step,
                    batch_size: outcome.batch_size,
                    loss: outcome.loss_sum / outcome.batch_size.max(1) as f64,
                    accuracy: outcome.correct as f64 / outcome.batch_size.max(1) as f64,
                    epsilon: outcome.epsilon,
                    seconds: started.elapsed().as_secs_f64(),
                    bytes_up: up - up0,
                    bytes_down: down - down0,
                });
                dir.save_progress(&record.name, progress)?;
            }
            let last = if release {
                // The server answers a release only once the step is durably committed; the
                // next step's draws and encryptions (the same whenever they are made: the
                // stored state is the one before them) fill that wait.
                let no_replies = |_| {
                    Err(ClientError::UnexpectedResponse(
                        "a training reply to a gradient release".into(),
                    ))
                };
                let more = client.step() < record.total_steps;
                let (last, next) = conn.train_while(model, &msg, params, no_replies, || {
                    more.then(|| client.start_step())
                })?;
                *prepared = next;
                last
            } else {
                conn.train(model, &msg, params, |reply| {
                    queue.extend(client.handle(reply)?);
                    Ok(())
                })?
            };
            match last {
                Response::StepState { committed_step, .. } => committed = Some(committed_step),
                other => return Err(unexpected(&other)),
            }
        }
        if committed != Some(before + 1) || client.step() != before + 1 {
            return Err(ClientError::Diverged(format!(
                "after step {before} the server reports {committed:?} committed steps"
            )));
        }
        let (up, down) = conn.traffic();
        let mut rec = progress.pending_record.take().ok_or_else(|| {
            ClientError::UnexpectedResponse("a step committed without a release".into())
        })?;
        rec.seconds = started.elapsed().as_secs_f64();
        rec.bytes_up = up - up0;
        rec.bytes_down = down - down0;
        if let Some(p) = progress.pending.take() {
            progress.committed = p;
        }
        progress.history.push(rec);
        dir.save_progress(&record.name, progress)?;
        Ok(rec)
    }

    /// Whether the budget allows one more step.
    ///
    /// # Errors
    /// Accountant errors.
    pub fn can_step(&mut self) -> Result<bool> {
        let event = dp_event(&self.record)?;
        let mut ledger = self.client.ledger().clone();
        Ok(ledger.can_take_step(event)?)
    }

    /// The model as of the last committed step: the server's `W` and the decrypted biases.
    ///
    /// # Errors
    /// Network, server and protocol errors.
    pub fn export(&mut self) -> Result<Model> {
        export_model(
            &mut self.conn,
            &self.client,
            &self.params,
            self.record.model_id(),
        )
    }

    /// Gives back the connection.
    #[must_use]
    pub fn into_connection(self) -> Connection {
        self.conn
    }
}

/// Fetches `model` and decrypts its biases with `client`'s key.
///
/// # Errors
/// Network, server and protocol errors.
pub fn export_model(
    conn: &mut Connection,
    client: &Client,
    params: &Arc<Parameters>,
    model: ModelId,
) -> Result<Model> {
    match conn.call(&Request::Export { model })? {
        Response::Exported { message, .. } => {
            match ServerMessage::decode(params, &message, DEFAULT_MAX_FRAME)? {
                ServerMessage::ModelExport(m) => Ok(client.assemble_model(&m)?),
                other => Err(ClientError::Protocol(ProtocolError::UnexpectedMessage {
                    got: other.kind(),
                    expected: "a model export",
                })),
            }
        }
        other => Err(unexpected(&other)),
    }
}
