//! The CKKS parameters of the training protocol.
//!
//! Every server computation of a step has multiplicative depth one: a plaintext-weight
//! linear combination of fresh ciphertexts, or a sum of slot-wise ciphertext products,
//! each followed by one rescale to level 0 (the result the client decrypts). Only the
//! homomorphic bias update rotates (summing a layer's bias gradient over the batch slots),
//! so one special prime `P` for key switching is needed.
//!
//! [`training_parameters`] is `N = 4096`, `Q = q_0·q_1` with `q_0` of 41 bits and `q_1` of
//! 29 bits, `P` of 39 bits, scale `2^29`: `log2(QP) = 109`, exactly the
//! HomomorphicEncryption.org bound for 128-bit classical security at `N = 4096` (checked
//! by [`ParametersLiteral::build`]). `q_0 / Δ = 2^12` leaves room for decrypted values up
//! to `±2048`; 2048 slots hold a batch of up to 2048 samples. `N = 2048` allows only 54
//! bits of `QP`: a depth-one chain plus a key-switching prime does not fit with a useful
//! scale. See `docs/protocol.md` for the measurements behind the choice.

use std::sync::Arc;

use sphinx_he::{Parameters, ParametersLiteral, SecurityLevel};

use crate::error::Result;

/// The protocol's parameter literal (128-bit classical security).
#[must_use]
pub fn training_parameters() -> ParametersLiteral {
    ParametersLiteral {
        log_n: 12,
        q_bits: vec![41, 29],
        p_bits: vec![39],
        scale_bits: 29,
        security: SecurityLevel::Classical128,
    }
}

/// Validated [`training_parameters`].
///
/// # Errors
/// [`sphinx_he::HeError`] if the set fails validation (it does not).
pub fn build_training_parameters() -> Result<Arc<Parameters>> {
    Ok(training_parameters().build()?)
}
