//! Persistence: one SQLite database (`sphinx.db` in the data directory).
//!
//! | table | rows | columns |
//! |---|---|---|
//! | `accounts` | one per account | name, SHA-256 of the token, creation time |
//! | `models` | one per model | owner, architecture JSON, the server state of the last committed step (`W`, `[b]`, step; `sphinx_protocol::server` state format), its format version, step, times |
//! | `model_setups` | one per model | the client's encoded `Setup` (parameters, public key, Galois keys = the evaluation keys, architecture, public hyperparameters) |
//! | `blobs` | named opaque blobs per model | inference preprocessing material |
//!
//! Every model query names its owner (`WHERE id = ? AND account = ?`), so one account can
//! never reach another's rows. A step commit is one `UPDATE` in a transaction, in WAL mode
//! with `synchronous = FULL`: after a crash the row holds either the previous or the new
//! step, never a mix. The setup has a table of its own because SQLite rewrites a whole row
//! on `UPDATE` (and reads the old one's overflow pages to free them): in the model's row
//! it would be read and written again at every step, 1.4 MB for nothing. Pages are 64 KiB
//! (set when the file is created) so that a megabyte-sized state is a few pages, not
//! hundreds. `PRAGMA user_version` holds the schema version; a database of schema 1 (the
//! setup in `models`) is migrated when opened, one written by a newer schema is refused.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sphinx_protocol::wire::{AccountName, ModelId, Token};

use crate::error::{Result, ServerError};

/// Schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 2;

/// Page size of a new database file (bytes).
const PAGE_SIZE: i64 = 64 * 1024;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "sphinx.db";

/// An account's row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccountId(pub i64);

/// A model's stored row.
#[derive(Debug, Clone)]
pub struct StoredModel {
    /// The model.
    pub id: ModelId,
    /// Architecture JSON.
    pub architecture: String,
    /// The encoded `Setup` message.
    pub setup: Vec<u8>,
    /// The server state of the last committed step.
    pub state: Vec<u8>,
    /// The committed step.
    pub step: u64,
}

/// A model's summary (no blobs loaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSummary {
    /// The model.
    pub id: ModelId,
    /// Committed step.
    pub step: u64,
    /// Bytes of setup, state and blobs.
    pub stored_bytes: u64,
    /// Architecture JSON.
    pub architecture: String,
}

/// The SHA-256 of a token: what the database keeps. Tokens carry 256 bits of entropy, so a
/// fast hash suffices (no password stretching needed).
#[must_use]
pub fn token_hash(token: &Token) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn step_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn id_of(model: ModelId) -> Result<i64> {
    i64::try_from(model.0).map_err(|_| ServerError::NotFound(model))
}

/// Equal-time comparison of two hashes.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`.
    ///
    /// # Errors
    /// [`ServerError::Store`]; [`ServerError::Config`] for a database of a newer schema.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let conn = Connection::open(data_dir.join(DB_FILE))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Takes effect only before the file's first table (an existing file keeps its own).
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        match version {
            0 => {
                conn.execute_batch(
                    "BEGIN;
                     CREATE TABLE IF NOT EXISTS accounts (
                         id INTEGER PRIMARY KEY AUTOINCREMENT,
                         name TEXT NOT NULL UNIQUE,
                         token_sha256 BLOB NOT NULL,
                         created INTEGER NOT NULL);
                     CREATE TABLE IF NOT EXISTS models (
                         id INTEGER PRIMARY KEY AUTOINCREMENT,
                         account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                         architecture TEXT NOT NULL,
                         state BLOB NOT NULL,
                         state_version INTEGER NOT NULL,
                         step INTEGER NOT NULL,
                         created INTEGER NOT NULL,
                         updated INTEGER NOT NULL);
                     CREATE INDEX IF NOT EXISTS models_by_account ON models(account);
                     CREATE TABLE IF NOT EXISTS model_setups (
                         model INTEGER PRIMARY KEY REFERENCES models(id) ON DELETE CASCADE,
                         setup BLOB NOT NULL);
                     CREATE TABLE IF NOT EXISTS blobs (
                         model INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
                         name TEXT NOT NULL,
                         data BLOB NOT NULL,
                         PRIMARY KEY (model, name));
                     PRAGMA user_version = 2;
                     COMMIT;",
                )?;
            }
            1 => {
                // Schema 1 kept the setup in the model's row; all or nothing.
                conn.execute_batch(
                    "BEGIN IMMEDIATE;
                     CREATE TABLE model_setups (
                         model INTEGER PRIMARY KEY REFERENCES models(id) ON DELETE CASCADE,
                         setup BLOB NOT NULL);
                     INSERT INTO model_setups (model, setup) SELECT id, setup FROM models;
                     ALTER TABLE models DROP COLUMN setup;
                     PRAGMA user_version = 2;
                     COMMIT;",
                )?;
            }
            SCHEMA_VERSION => {}
            newer => {
                return Err(ServerError::Config(format!(
                    "the database has schema version {newer}; this build reads up to \
                     {SCHEMA_VERSION} (upgrade sphinx)"
                )));
            }
        }
        Ok(Self { conn })
    }

    /// Creates an account and returns its token (shown once; only its hash is stored).
    ///
    /// # Errors
    /// [`ServerError::AccountExists`], [`ServerError::Store`].
    pub fn add_account(&mut self, name: &AccountName) -> Result<Token> {
        let token = Token::generate(&mut rand::rng());
        let changed = self.conn.execute(
            "INSERT INTO accounts (name, token_sha256, created) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO NOTHING",
            params![name.as_str(), &token_hash(&token)[..], now()],
        )?;
        if changed == 0 {
            return Err(ServerError::AccountExists(name.clone()));
        }
        Ok(token)
    }

    /// Replaces an account's token (the old one stops working) and returns the new one.
    ///
    /// # Errors
    /// [`ServerError::UnknownAccount`], [`ServerError::Store`].
    pub fn rotate_token(&mut self, name: &AccountName) -> Result<Token> {
        let token = Token::generate(&mut rand::rng());
        let changed = self.conn.execute(
            "UPDATE accounts SET token_sha256 = ?2 WHERE name = ?1",
            params![name.as_str(), &token_hash(&token)[..]],
        )?;
        if changed == 0 {
            return Err(ServerError::UnknownAccount(name.clone()));
        }
        Ok(token)
    }

    /// Deletes an account with all its models.
    ///
    /// # Errors
    /// [`ServerError::UnknownAccount`], [`ServerError::Store`].
    pub fn remove_account(&mut self, name: &AccountName) -> Result<()> {
        let changed = self
            .conn
            .execute("DELETE FROM accounts WHERE name = ?1", [name.as_str()])?;
        if changed == 0 {
            return Err(ServerError::UnknownAccount(name.clone()));
        }
        Ok(())
    }

    /// Account names with their model count and stored bytes.
    ///
    /// # Errors
    /// [`ServerError::Store`].
    pub fn accounts(&self) -> Result<Vec<(String, u64, u64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT a.name, COUNT(m.id), COALESCE(SUM(LENGTH(s.setup) + LENGTH(m.state)), 0)
             FROM accounts a LEFT JOIN models m ON m.account = a.id
                  LEFT JOIN model_setups s ON s.model = m.id
             GROUP BY a.id ORDER BY a.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        rows.map(|r| {
            let (n, c, b) = r?;
            Ok((n, step_of(c), step_of(b)))
        })
        .collect()
    }

    /// The account of `name` if `token` is its token.
    ///
    /// # Errors
    /// [`ServerError::AuthFailed`] for an unknown name or a wrong token (indistinguishable),
    /// [`ServerError::Store`].
    pub fn authenticate(&self, name: &AccountName, token: &Token) -> Result<AccountId> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT id, token_sha256 FROM accounts WHERE name = ?1",
                [name.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let presented = token_hash(token);
        match row {
            Some((id, stored)) if same(&stored, &presented) => Ok(AccountId(id)),
            _ => Err(ServerError::AuthFailed),
        }
    }

    /// Bytes the account stores (setups, states, blobs).
    ///
    /// # Errors
    /// [`ServerError::Store`].
    pub fn usage(&self, account: AccountId) -> Result<u64> {
        let v: i64 = self.conn.query_row(
            "SELECT COALESCE(SUM(LENGTH(s.setup) + LENGTH(m.state)), 0)
                  + (SELECT COALESCE(SUM(LENGTH(b.data)), 0) FROM blobs b
                     JOIN models m2 ON b.model = m2.id WHERE m2.account = ?1)
             FROM models m JOIN model_setups s ON s.model = m.id WHERE m.account = ?1",
            [account.0],
            |r| r.get(0),
        )?;
        Ok(step_of(v))
    }

    /// Stores a new model at step 0 if the account stays within `quota` bytes.
    ///
    /// # Errors
    /// [`ServerError::QuotaExceeded`], [`ServerError::Store`].
    pub fn create_model(
        &mut self,
        account: AccountId,
        architecture: &str,
        setup: &[u8],
        state: &[u8],
        step: u64,
        quota: u64,
    ) -> Result<ModelId> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let used: i64 = tx.query_row(
            "SELECT COALESCE(SUM(LENGTH(s.setup) + LENGTH(m.state)), 0)
                  + (SELECT COALESCE(SUM(LENGTH(b.data)), 0) FROM blobs b
                     JOIN models m2 ON b.model = m2.id WHERE m2.account = ?1)
             FROM models m JOIN model_setups s ON s.model = m.id WHERE m.account = ?1",
            [account.0],
            |r| r.get(0),
        )?;
        let need = step_of(used) + (setup.len() + state.len()) as u64;
        if need > quota {
            return Err(ServerError::QuotaExceeded { need, quota });
        }
        tx.execute(
            "INSERT INTO models (account, architecture, state, state_version, step, created,
                                 updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![
                account.0,
                architecture,
                state,
                sphinx_protocol::server::STATE_VERSION,
                i64::try_from(step).unwrap_or(i64::MAX),
                now()
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO model_setups (model, setup) VALUES (?1, ?2)",
            params![id, setup],
        )?;
        tx.commit()?;
        Ok(ModelId(step_of(id)))
    }

    /// The account's models, by id.
    ///
    /// # Errors
    /// [`ServerError::Store`].
    pub fn models(&self, account: AccountId) -> Result<Vec<ModelSummary>> {
        let mut stmt = self.conn.prepare(
            "SELECT m.id, m.step, LENGTH(s.setup) + LENGTH(m.state)
                    + (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM blobs WHERE model = m.id),
                    m.architecture
             FROM models m JOIN model_setups s ON s.model = m.id
             WHERE m.account = ?1 ORDER BY m.id",
        )?;
        let rows = stmt.query_map([account.0], |r| {
            Ok(ModelSummary {
                id: ModelId(step_of(r.get(0)?)),
                step: step_of(r.get(1)?),
                stored_bytes: step_of(r.get(2)?),
                architecture: r.get(3)?,
            })
        })?;
        rows.map(|r| r.map_err(ServerError::from)).collect()
    }

    /// One model's summary.
    ///
    /// # Errors
    /// [`ServerError::NotFound`] if the account has no such model, [`ServerError::Store`].
    pub fn summary(&self, account: AccountId, model: ModelId) -> Result<ModelSummary> {
        self.models(account)?
            .into_iter()
            .find(|m| m.id == model)
            .ok_or(ServerError::NotFound(model))
    }

    /// One model with its blobs.
    ///
    /// # Errors
    /// [`ServerError::NotFound`] if the account has no such model (whoever owns it),
    /// [`ServerError::Config`] for a state format this build cannot read,
    /// [`ServerError::Store`].
    pub fn load(&self, account: AccountId, model: ModelId) -> Result<StoredModel> {
        let row = self
            .conn
            .query_row(
                "SELECT m.architecture, s.setup, m.state, m.state_version, m.step
                 FROM models m JOIN model_setups s ON s.model = m.id
                 WHERE m.id = ?1 AND m.account = ?2",
                params![id_of(model)?, account.0],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()?
            .ok_or(ServerError::NotFound(model))?;
        let (architecture, setup, state, version, step) = row;
        // The state's own header carries its version too and `Server::restore` reads
        // every older one (version 1: no averaged W), so older rows need no migration.
        if !(1..=i64::from(sphinx_protocol::server::STATE_VERSION)).contains(&version) {
            return Err(ServerError::Config(format!(
                "model {model} is stored in state format {version}; this build reads 1 to {}",
                sphinx_protocol::server::STATE_VERSION
            )));
        }
        Ok(StoredModel {
            id: model,
            architecture,
            setup,
            state,
            step: step_of(step),
        })
    }

    /// Commits a step: replaces the model's state if its stored step is `from` (so a
    /// stale writer cannot overwrite a newer commit).
    ///
    /// # Errors
    /// [`ServerError::NotFound`] if the model is gone or not at step `from`,
    /// [`ServerError::Store`].
    pub fn commit_step(
        &mut self,
        account: AccountId,
        model: ModelId,
        from: u64,
        to: u64,
        state: &[u8],
    ) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE models SET state = ?1, step = ?2, updated = ?3, state_version = ?7
             WHERE id = ?4 AND account = ?5 AND step = ?6",
            params![
                state,
                i64::try_from(to).unwrap_or(i64::MAX),
                now(),
                id_of(model)?,
                account.0,
                i64::try_from(from).unwrap_or(i64::MAX),
                sphinx_protocol::server::STATE_VERSION
            ],
        )?;
        if changed != 1 {
            return Err(ServerError::NotFound(model));
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes a model and its blobs.
    ///
    /// # Errors
    /// [`ServerError::NotFound`], [`ServerError::Store`].
    pub fn delete_model(&mut self, account: AccountId, model: ModelId) -> Result<()> {
        let changed = self.conn.execute(
            "DELETE FROM models WHERE id = ?1 AND account = ?2",
            params![id_of(model)?, account.0],
        )?;
        if changed == 0 {
            return Err(ServerError::NotFound(model));
        }
        Ok(())
    }

    /// Stores a named blob for a model (replacing one of the same name) within `quota`.
    ///
    /// # Errors
    /// [`ServerError::NotFound`], [`ServerError::QuotaExceeded`], [`ServerError::Store`].
    pub fn put_blob(
        &mut self,
        account: AccountId,
        model: ModelId,
        name: &str,
        data: &[u8],
        quota: u64,
    ) -> Result<()> {
        self.summary(account, model)?;
        let old: i64 = self.conn.query_row(
            "SELECT COALESCE(SUM(LENGTH(data)), 0) FROM blobs WHERE model = ?1 AND name = ?2",
            params![id_of(model)?, name],
            |r| r.get(0),
        )?;
        let need = (self.usage(account)? + data.len() as u64).saturating_sub(step_of(old));
        if need > quota {
            return Err(ServerError::QuotaExceeded { need, quota });
        }
        self.conn.execute(
            "INSERT INTO blobs (model, name, data) VALUES (?1, ?2, ?3)
             ON CONFLICT(model, name) DO UPDATE SET data = excluded.data",
            params![id_of(model)?, name, data],
        )?;
        Ok(())
    }

    /// A named blob of a model.
    ///
    /// # Errors
    /// [`ServerError::NotFound`] for another account's model or a missing blob,
    /// [`ServerError::Store`].
    pub fn get_blob(&self, account: AccountId, model: ModelId, name: &str) -> Result<Vec<u8>> {
        self.conn
            .query_row(
                "SELECT b.data FROM blobs b JOIN models m ON b.model = m.id
                 WHERE m.id = ?1 AND m.account = ?2 AND b.name = ?3",
                params![id_of(model)?, account.0, name],
                |r| r.get(0),
            )
            .optional()?
            .ok_or(ServerError::NotFound(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> AccountName {
        AccountName::new(s).unwrap()
    }

    #[test]
    fn accounts_authenticate_only_with_their_token() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let ta = s.add_account(&name("a")).unwrap();
        let tb = s.add_account(&name("b")).unwrap();
        assert!(matches!(
            s.add_account(&name("a")),
            Err(ServerError::AccountExists(_))
        ));
        let a = s.authenticate(&name("a"), &ta).unwrap();
        assert!(s.authenticate(&name("a"), &tb).is_err());
        assert!(s.authenticate(&name("c"), &ta).is_err());
        let ta2 = s.rotate_token(&name("a")).unwrap();
        assert!(s.authenticate(&name("a"), &ta).is_err());
        assert_eq!(s.authenticate(&name("a"), &ta2).unwrap(), a);
        // Only the hash is stored.
        let raw: Vec<u8> = s
            .conn
            .query_row(
                "SELECT token_sha256 FROM accounts WHERE name = 'a'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_ne!(&raw[..], &ta2.as_bytes()[..]);
    }

    #[test]
    fn models_are_isolated_committed_and_bounded_by_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let ta = s.add_account(&name("a")).unwrap();
        let tb = s.add_account(&name("b")).unwrap();
        let a = s.authenticate(&name("a"), &ta).unwrap();
        let b = s.authenticate(&name("b"), &tb).unwrap();
        let m = s.create_model(a, "{}", &[1; 10], &[2; 5], 0, 100).unwrap();
        assert!(matches!(
            s.create_model(a, "{}", &[1; 80], &[2; 6], 0, 100),
            Err(ServerError::QuotaExceeded { need: 101, .. })
        ));
        assert_eq!(s.usage(a).unwrap(), 15);
        assert!(matches!(s.load(b, m), Err(ServerError::NotFound(_))));
        assert!(matches!(
            s.delete_model(b, m),
            Err(ServerError::NotFound(_))
        ));
        assert!(s.commit_step(b, m, 0, 1, &[3; 5]).is_err());
        assert!(s.put_blob(b, m, "pre", &[1], 100).is_err());
        s.commit_step(a, m, 0, 1, &[3; 5]).unwrap();
        // A stale writer (from the old step) cannot overwrite.
        assert!(s.commit_step(a, m, 0, 1, &[4; 5]).is_err());
        let row = s.load(a, m).unwrap();
        assert_eq!((row.step, row.state), (1, vec![3; 5]));
        s.put_blob(a, m, "pre", &[9; 20], 100).unwrap();
        assert_eq!(s.get_blob(a, m, "pre").unwrap(), vec![9; 20]);
        assert!(s.get_blob(b, m, "pre").is_err());
        assert_eq!(s.summary(a, m).unwrap().stored_bytes, 35);
        assert!(s.models(b).unwrap().is_empty());
        drop(s);
        // Reopening keeps everything; deletion cascades.
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.load(a, m).unwrap().step, 1);
        s.delete_model(a, m).unwrap();
        assert_eq!(s.usage(a).unwrap(), 0);
        s.remove_account(&name("b")).unwrap();
        assert_eq!(s.accounts().unwrap().len(), 1);
    }

    #[test]
    fn a_schema_1_database_is_migrated_with_its_models() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        // Schema 1 as it was created, with one account and one model.
        conn.execute_batch(
            "CREATE TABLE accounts (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 name TEXT NOT NULL UNIQUE,
                 token_sha256 BLOB NOT NULL,
                 created INTEGER NOT NULL);
             CREATE TABLE models (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                 architecture TEXT NOT NULL,
                 setup BLOB NOT NULL,
                 state BLOB NOT NULL,
                 state_version INTEGER NOT NULL,
                 step INTEGER NOT NULL,
                 created INTEGER NOT NULL,
                 updated INTEGER NOT NULL);
             CREATE INDEX models_by_account ON models(account);
             CREATE TABLE blobs (
                 model INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
                 name TEXT NOT NULL,
                 data BLOB NOT NULL,
                 PRIMARY KEY (model, name));
             INSERT INTO accounts (name, token_sha256, created) VALUES ('a', x'00', 0);
             INSERT INTO models (account, architecture, setup, state, state_version, step,
                                 created, updated)
                 VALUES (1, '{}', x'0102030405', x'0909', 3, 7, 0, 0);
             INSERT INTO blobs (model, name, data) VALUES (1, 'pre', x'aa');
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(conn);
        let mut s = Store::open(dir.path()).unwrap();
        let version: i64 = s
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let (a, m) = (AccountId(1), ModelId(1));
        let row = s.load(a, m).unwrap();
        assert_eq!(
            (row.setup, row.state, row.step),
            (vec![1, 2, 3, 4, 5], vec![9, 9], 7)
        );
        assert_eq!(s.usage(a).unwrap(), 5 + 2 + 1);
        assert_eq!(s.summary(a, m).unwrap().stored_bytes, 8);
        s.commit_step(a, m, 7, 8, &[4; 2]).unwrap();
        drop(s);
        // Reopening at the new schema keeps the migrated rows; deletion cascades.
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.load(a, m).unwrap().state, vec![4; 2]);
        s.delete_model(a, m).unwrap();
        let setups: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM model_setups", [], |r| r.get(0))
            .unwrap();
        assert_eq!((setups, s.usage(a).unwrap()), (0, 0));
    }

    #[test]
    fn a_new_database_has_large_pages_and_the_setup_apart() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let page: i64 = s
            .conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap();
        assert_eq!(page, PAGE_SIZE);
        let t = s.add_account(&name("a")).unwrap();
        let a = s.authenticate(&name("a"), &t).unwrap();
        let m = s.create_model(a, "{}", &[1; 3], &[2; 4], 0, 100).unwrap();
        // A step rewrites the model's row, which no longer holds the setup.
        let in_row: i64 = s
            .conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('models') WHERE name = 'setup'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(in_row, 0);
        s.commit_step(a, m, 0, 1, &[5; 4]).unwrap();
        assert_eq!(s.load(a, m).unwrap().setup, vec![1; 3]);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(dir.path()),
            Err(ServerError::Config(_))
        ));
    }
}
