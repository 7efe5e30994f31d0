//! sphinx-math (see the crate description).
