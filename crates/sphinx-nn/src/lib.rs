//! sphinx-nn (see the crate description).
