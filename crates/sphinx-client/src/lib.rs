//! `sphinx-client`: the data owner's side of Sphinx (DESIGN.md §1, §4).
//!
//! - [`store`]: the client directory: keys (0600, zeroized), server profile with the
//!   pinned certificate fingerprint, account token, per-model records and the training
//!   progress that makes training resumable after a crash of either side;
//! - [`connection`]: a TLS 1.3 connection that trusts exactly the pinned certificate, and
//!   the request/response framing of [`sphinx_protocol::wire`];
//! - [`remote`]: the client role of [`sphinx_protocol::client`] driven over a connection:
//!   create a model, run and resume steps, export;
//! - [`remote_infer`]: private inference ([`sphinx_protocol::inference`]) over a connection;
//! - [`data`]: loading and preparing the data owner's examples; [`image`]: PNG and PGM
//!   input images;
//! - [`report`]: summary tables, JSON and PNG plots.
//!
//! Nothing here logs a secret: keys and tokens have redacted `Debug` and are zeroized on
//! drop.

pub mod connection;
pub mod data;
pub mod error;
pub mod image;
pub mod remote;
pub mod remote_infer;
pub mod report;
pub mod store;

pub use error::{ClientError, Result};
