//! The client directory: everything the data owner keeps between runs.
//!
//! ```text
//! DIR/                      mode 0700
//!   config.json             server address, pinned certificate fingerprint, account
//!   token                   the account's bearer token (0600)
//!   models/NAME/            one directory per model (0700)
//!     secret.key            seeds of the CKKS keys and of DP sampling and noise (0600)
//!     model.json            architecture, data, hyperparameters, server model id
//!     state.json            the committed client state, a pending one, step history
//! ```
//!
//! Every file is written to a temporary name, flushed to disk and renamed over the old
//! one, so a crash leaves either the old or the new version, never a torn file. Secret
//! files are created with mode 0600 (never readable by others, not even for an instant),
//! are refused when group or others may read them, live in memory in types that zeroize
//! on drop and redact `Debug`, and are never logged.
//!
//! The CKKS secret key is stored as the 32-byte seed it is generated from: key
//! generation is deterministic in its generator, so the seed *is* the key, a fraction of
//! its size, and rebuilding from it also reproduces the public and Galois keys.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, TryRngCore};
use serde::{Deserialize, Serialize};
use sphinx_dp::BudgetLedger;
use sphinx_protocol::client_state::ClientSnapshot;
use sphinx_protocol::wire::{AccountName, ModelId, Token};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{ClientError, Result, io_at};

const SECRET_MAGIC: &[u8; 4] = b"SPXK";
const SECRET_VERSION: u16 = 1;
const SECRET_LEN: usize = 4 + 2 + 32 + 32;

/// Where and as whom the client talks to its server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// `host:port` of the `sphinx server`.
    pub server: String,
    /// SHA-256 of the server's certificate (64 hex digits): the only certificate accepted.
    pub fingerprint: String,
    /// The account on that server.
    pub account: String,
}

/// The seeds a model's client role is built from. Zeroized on drop; `Debug` redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ModelSecrets {
    key_seed: [u8; 32],
    dp_seed: [u8; 32],
}

impl std::fmt::Debug for ModelSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModelSecrets(<redacted>)")
    }
}

impl ModelSecrets {
    /// Fresh seeds from the operating system.
    ///
    /// # Errors
    /// [`ClientError::Invalid`] if the OS entropy source fails.
    pub fn generate() -> Result<Self> {
        let mut s = Self {
            key_seed: [0; 32],
            dp_seed: [0; 32],
        };
        let mut os = OsRng;
        os.try_fill_bytes(&mut s.key_seed)
            .and_then(|()| os.try_fill_bytes(&mut s.dp_seed))
            .map_err(|e| ClientError::Invalid(format!("OS entropy: {e}")))?;
        Ok(s)
    }

    /// Seeds for reproducible experiments and tests (no secrecy against anyone who knows
    /// `seed`).
    #[must_use]
    pub fn from_test_seed(seed: u64) -> Self {
        let mut s = Self {
            key_seed: [0; 32],
            dp_seed: [0; 32],
        };
        s.key_seed[..8].copy_from_slice(&seed.to_le_bytes());
        s.dp_seed[..8].copy_from_slice(&seed.to_le_bytes());
        s.dp_seed[31] = 1;
        s
    }

    /// Seed of the CKKS key generation and encryption randomness.
    #[must_use]
    pub fn key_seed(&self) -> [u8; 32] {
        self.key_seed
    }

    /// Seed of Poisson sampling and DP noise.
    #[must_use]
    pub fn dp_seed(&self) -> [u8; 32] {
        self.dp_seed
    }
}

/// What the client records about one of its models (public hyperparameters and where the
/// model lives; no secrets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The model's local name.
    pub name: String,
    /// Its id on the server.
    pub server_model: u64,
    /// Architecture preset.
    pub preset: String,
    /// Data source (`bundled`, `fashion-mnist` or a directory).
    pub data: String,
    /// Training examples used (the first `train_examples` of the source).
    pub train_examples: usize,
    /// [`crate::data::digest`] of those examples (after standardization).
    pub data_digest: String,
    /// Whether inputs are standardized with the dataset's mean and deviation.
    pub standardize: Option<[f32; 2]>,
    /// Expected batch size.
    pub batch_size: usize,
    /// Planned steps.
    pub total_steps: u64,
    /// SGD learning rate.
    pub learning_rate: f32,
    /// Per-sample clipping norm.
    pub clip: f64,
    /// The ε budget.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// Noise multiplier σ.
    pub noise_multiplier: f64,
    /// Poisson rate q.
    pub sample_rate: f64,
    /// Seed of `W⁰` (public: the server initializes it).
    pub init_seed: u64,
    /// Initial bias value.
    pub bias_init: f32,
    /// Decay of the server's average of `W` that export and inference use (0: the last
    /// iterate; records from before the field read as 0).
    #[serde(default)]
    pub weight_average: f32,
}

impl ModelRecord {
    /// The server-side id.
    #[must_use]
    pub fn model_id(&self) -> ModelId {
        ModelId(self.server_model)
    }
}

/// A [`ClientSnapshot`] in storable form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// Completed steps.
    pub step: u64,
    /// Key/encryption generator position (decimal `u128`).
    pub rng_word_pos: String,
    /// Sampling/noise generator position (decimal `u128`).
    pub dp_rng_word_pos: String,
    /// The ledger.
    pub ledger: BudgetLedger,
}

impl From<&ClientSnapshot> for StoredSnapshot {
    fn from(s: &ClientSnapshot) -> Self {
        Self {
            step: s.step,
            rng_word_pos: s.rng_word_pos.to_string(),
            dp_rng_word_pos: s.dp_rng_word_pos.to_string(),
            ledger: s.ledger.clone(),
        }
    }
}

impl StoredSnapshot {
    /// Back to a [`ClientSnapshot`].
    ///
    /// # Errors
    /// [`ClientError::Store`] (against `path`) for unparsable positions.
    pub fn to_snapshot(&self, path: &Path) -> Result<ClientSnapshot> {
        let pos = |s: &str| {
            s.parse::<u128>().map_err(|_| ClientError::Store {
                path: path.to_path_buf(),
                reason: format!("bad generator position {s:?}"),
            })
        };
        Ok(ClientSnapshot {
            step: self.step,
            rng_word_pos: pos(&self.rng_word_pos)?,
            dp_rng_word_pos: pos(&self.dp_rng_word_pos)?,
            ledger: self.ledger.clone(),
        })
    }
}

/// What the client saw in one committed step (private to the client).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step index (0-based).
    pub step: u64,
    /// Realized batch size.
    pub batch_size: usize,
    /// Mean loss over the batch, before the update.
    pub loss: f64,
    /// Batch accuracy before the update.
    pub accuracy: f64,
    /// ε spent after the step.
    pub epsilon: f64,
    /// Wall seconds of the step.
    pub seconds: f64,
    /// Bytes sent in the step (frames, before TLS).
    pub bytes_up: u64,
    /// Bytes received in the step.
    pub bytes_down: u64,
}

/// The persisted training progress of a model.
///
/// `committed` is the client state after the server's last confirmed step. Just before
/// the client releases a noisy gradient it records the state after that step as
/// `pending`: if the server confirms, `pending` becomes `committed`; after a crash, the
/// server's committed step says which of the two to resume from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// State after the last step both sides committed.
    pub committed: StoredSnapshot,
    /// State after the step whose gradient is being released, if any.
    pub pending: Option<StoredSnapshot>,
    /// What the client saw in the pending step.
    pub pending_record: Option<StepRecord>,
    /// One record per committed step.
    pub history: Vec<StepRecord>,
}

/// A client directory (see the module docs).
#[derive(Debug, Clone)]
pub struct ClientDir {
    root: PathBuf,
}

fn bad(path: &Path, reason: impl Into<String>) -> ClientError {
    ClientError::Store {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn make_private_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_at(path))?;
    // An existing directory keeps its mode; tighten it.
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io_at(path))
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync of the
/// directory), creating the file with `mode`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_at(&tmp))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_at(&tmp))?;
        f.write_all(bytes).map_err(io_at(&tmp))?;
        f.sync_all().map_err(io_at(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_at(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(dir))?;
    }
    Ok(())
}

/// Reads a secret file, refusing one that group or others can read.
fn read_secret(path: &Path, max: usize) -> Result<Vec<u8>> {
    let f = File::open(path).map_err(io_at(path))?;
    let mode = f.metadata().map_err(io_at(path))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(bad(
            path,
            format!(
                "mode {:o} lets others read a secret; chmod 600 it",
                mode & 0o777
            ),
        ));
    }
    let mut out = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(io_at(path))?;
    if out.len() > max {
        out.zeroize();
        return Err(bad(path, "larger than expected"));
    }
    Ok(out)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(io_at(path))?;
    serde_json::from_slice(&bytes).map_err(|e| bad(path, e.to_string()))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| bad(path, e.to_string()))?;
    write_atomic(path, &bytes, 0o600)
}

/// Model names become directory names: keep them to a safe alphabet.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ClientError::Invalid(format!(
            "model name {name:?}: use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with .)"
        )))
    }
}

impl ClientDir {
    /// Creates (or re-initializes) a client directory with its profile and token.
    ///
    /// # Errors
    /// [`ClientError::Io`].
    pub fn create(root: &Path, profile: &Profile, token: &Token) -> Result<Self> {
        make_private_dir(root)?;
        make_private_dir(&root.join("models"))?;
        let dir = Self {
            root: root.to_path_buf(),
        };
        let mut hex = token.to_hex();
        let written = write_atomic(&dir.token_path(), hex.as_bytes(), 0o600);
        hex.zeroize();
        written?;
        write_json(&dir.root.join("config.json"), profile)?;
        Ok(dir)
    }

    /// Opens an existing client directory.
    ///
    /// # Errors
    /// [`ClientError::Store`] if it has no `config.json` (run `sphinx client init`).
    pub fn open(root: &Path) -> Result<Self> {
        let config = root.join("config.json");
        if !config.is_file() {
            return Err(bad(
                &config,
                "no client here; run `sphinx client init` first",
            ));
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn token_path(&self) -> PathBuf {
        self.root.join("token")
    }

    /// The server profile.
    ///
    /// # Errors
    /// [`ClientError::Io`], [`ClientError::Store`].
    pub fn profile(&self) -> Result<Profile> {
        read_json(&self.root.join("config.json"))
    }

    /// The account name and token.
    ///
    /// # Errors
    /// [`ClientError::Io`], [`ClientError::Store`] (bad token, readable by others).
    pub fn credentials(&self) -> Result<(AccountName, Token)> {
        let profile = self.profile()?;
        let path = self.token_path();
        let mut raw = read_secret(&path, 128)?;
        let token = std::str::from_utf8(&raw)
            .map_err(|_| bad(&path, "not a hex token"))
            .and_then(|s| Token::from_hex(s).map_err(|e| bad(&path, e.to_string())));
        raw.zeroize();
        let account =
            AccountName::new(&profile.account).map_err(|e| bad(&self.root, e.to_string()))?;
        Ok((account, token?))
    }

    /// The directory of model `name`.
    ///
    /// # Errors
    /// [`ClientError::Invalid`] for a name outside the safe alphabet.
    pub fn model_dir(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.root.join("models").join(name))
    }

    /// Whether model `name` exists locally.
    #[must_use]
    pub fn has_model(&self, name: &str) -> bool {
        self.model_dir(name)
            .map(|d| d.join("model.json").is_file())
            .unwrap_or(false)
    }

    /// Local model names, sorted.
    ///
    /// # Errors
    /// [`ClientError::Io`].
    pub fn models(&self) -> Result<Vec<String>> {
        let dir = self.root.join("models");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let entry = entry.map_err(io_at(&dir))?;
            if let Some(name) = entry.file_name().to_str()
                && self.has_model(name)
            {
                out.push(name.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Stores a new model's secrets (first, 0600) and record.
    ///
    /// # Errors
    /// [`ClientError::Invalid`] if the model exists; [`ClientError::Io`].
    pub fn create_model(&self, record: &ModelRecord, secrets: &ModelSecrets) -> Result<()> {
        let dir = self.model_dir(&record.name)?;
        if dir.join("model.json").exists() {
            return Err(ClientError::Invalid(format!(
                "model {:?} exists in {}",
                record.name,
                self.root.display()
            )));
        }
        make_private_dir(&dir)?;
        let mut bytes = Vec::with_capacity(SECRET_LEN);
        bytes.extend_from_slice(SECRET_MAGIC);
        bytes.extend_from_slice(&SECRET_VERSION.to_le_bytes());
        bytes.extend_from_slice(&secrets.key_seed);
        bytes.extend_from_slice(&secrets.dp_seed);
        let written = write_atomic(&dir.join("secret.key"), &bytes, 0o600);
        bytes.zeroize();
        written?;
        write_json(&dir.join("model.json"), record)
    }

    /// Updates a model's record (e.g. after the server assigned its id).
    ///
    /// # Errors
    /// [`ClientError::Io`].
    pub fn save_record(&self, record: &ModelRecord) -> Result<()> {
        write_json(&self.model_dir(&record.name)?.join("model.json"), record)
    }

    /// A model's record.
    ///
    /// # Errors
    /// [`ClientError::Io`], [`ClientError::Store`].
    pub fn record(&self, name: &str) -> Result<ModelRecord> {
        let path = self.model_dir(name)?.join("model.json");
        if !path.is_file() {
            return Err(ClientError::Invalid(format!(
                "no model {name:?} in {}",
                self.root.display()
            )));
        }
        read_json(&path)
    }

    /// A model's secrets.
    ///
    /// # Errors
    /// [`ClientError::Io`]; [`ClientError::Store`] for a malformed or exposed file.
    pub fn secrets(&self, name: &str) -> Result<ModelSecrets> {
        let path = self.model_dir(name)?.join("secret.key");
        let mut raw = read_secret(&path, SECRET_LEN)?;
        let parsed = if raw.len() == SECRET_LEN
            && raw.starts_with(SECRET_MAGIC)
            && raw[4..6] == SECRET_VERSION.to_le_bytes()
        {
            let mut s = ModelSecrets {
                key_seed: [0; 32],
                dp_seed: [0; 32],
            };
            s.key_seed.copy_from_slice(&raw[6..38]);
            s.dp_seed.copy_from_slice(&raw[38..70]);
            Ok(s)
        } else {
            Err(bad(&path, "not a sphinx secret-key file (version 1)"))
        };
        raw.zeroize();
        parsed
    }

    /// A model's progress, if it has any.
    ///
    /// # Errors
    /// [`ClientError::Io`], [`ClientError::Store`].
    pub fn progress(&self, name: &str) -> Result<Option<Progress>> {
        let path = self.model_dir(name)?.join("state.json");
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    /// Replaces a model's progress atomically.
    ///
    /// # Errors
    /// [`ClientError::Io`].
    pub fn save_progress(&self, name: &str, progress: &Progress) -> Result<()> {
        write_json(&self.model_dir(name)?.join("state.json"), progress)
    }

    /// The path of `state.json` (for error messages).
    ///
    /// # Errors
    /// [`ClientError::Invalid`] for a bad name.
    pub fn progress_path(&self, name: &str) -> Result<PathBuf> {
        Ok(self.model_dir(name)?.join("state.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile {
            server: "127.0.0.1:1".into(),
            fingerprint: "ab".repeat(32),
            account: "alice".into(),
        }
    }

    #[test]
    fn secrets_are_private_and_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("c");
        let token = Token::from_bytes([7; 32]);
        let dir = ClientDir::create(&root, &profile(), &token).unwrap();
        let record = ModelRecord {
            name: "m".into(),
            server_model: 3,
            preset: "mlp-30".into(),
            data: "bundled".into(),
            train_examples: 10,
            data_digest: String::new(),
            standardize: None,
            batch_size: 2,
            total_steps: 5,
            learning_rate: 0.1,
            clip: 1.0,
            epsilon: 8.0,
            delta: 1e-5,
            noise_multiplier: 1.0,
            sample_rate: 0.2,
            init_seed: 9,
            bias_init: 0.01,
            weight_average: 0.0,
        };
        let secrets = ModelSecrets::generate().unwrap();
        dir.create_model(&record, &secrets).unwrap();
        let key = root.join("models/m/secret.key");
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(root.join("token"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&root).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let back = dir.secrets("m").unwrap();
        assert_eq!(back.key_seed(), secrets.key_seed());
        assert_eq!(back.dp_seed(), secrets.dp_seed());
        assert_eq!(format!("{back:?}"), "ModelSecrets(<redacted>)");
        assert_eq!(dir.record("m").unwrap(), record);
        let (account, tok) = dir.credentials().unwrap();
        assert_eq!((account.as_str(), tok), ("alice", token));
        assert!(dir.create_model(&record, &secrets).is_err());
        assert_eq!(dir.models().unwrap(), vec!["m".to_owned()]);

        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(dir.secrets("m"), Err(ClientError::Store { .. })));
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&key, b"SPXK").unwrap();
        assert!(matches!(dir.secrets("m"), Err(ClientError::Store { .. })));
    }

    #[test]
    fn names_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ClientDir::create(tmp.path(), &profile(), &Token::from_bytes([1; 32])).unwrap();
        assert!(dir.model_dir("../x").is_err());
        assert!(dir.model_dir(".hidden").is_err());
        assert!(dir.model_dir("ok-name_1.2").is_ok());
        assert!(ClientDir::open(&tmp.path().join("none")).is_err());
    }
}
