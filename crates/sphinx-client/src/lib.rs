//! `sphinx-client`: the data owner's side of Sphinx (DESIGN.md §1, §4).
//!
//! It keeps the client's state on disk (keys, accountant ledger, masks), drives
//! [`sphinx_protocol`]'s client role over the network, and writes reports.
