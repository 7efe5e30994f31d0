//! sphinx-he (see the crate description).
