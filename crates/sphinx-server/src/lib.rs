//! `sphinx-server`: the cloud side of Sphinx as a network service (DESIGN.md §1, §2, §4).
//!
//! It drives [`sphinx_protocol`]'s server role over TLS connections and persists what the
//! server may hold (accounts, plaintext `W`, encrypted `[b]`, evaluation keys,
//! preprocessing material). It never holds a secret key.
