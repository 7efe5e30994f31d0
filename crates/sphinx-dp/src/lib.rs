//! sphinx-dp (see the crate description).
