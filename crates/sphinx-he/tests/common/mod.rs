//! Shared by the integration tests and benches of `sphinx-he`.

use std::sync::Arc;

use sphinx_he::{Parameters, ParametersLiteral, SecurityLevel};

/// The training protocol's parameters (`sphinx_protocol::params`, which this crate may not
/// depend on): N = 4096, q = 41 + 29 bits, P = 39, Δ = 2^29, 128-bit security. Their primes
/// take the lazily reduced kernels (≤ 42 bits).
pub fn protocol_params() -> Arc<Parameters> {
    ParametersLiteral {
        log_n: 12,
        q_bits: vec![41, 29],
        p_bits: vec![39],
        scale_bits: 29,
        security: SecurityLevel::Classical128,
    }
    .build()
    .expect("the protocol's parameters are valid")
}
