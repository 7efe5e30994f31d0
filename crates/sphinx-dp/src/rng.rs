//! The crate's randomness: ChaCha20, a cryptographically secure PRNG.
//!
//! Production code seeds it from the operating system ([`os_rng`]); tests and
//! reproducible experiments seed it explicitly ([`seeded_rng`]). A seeded
//! generator gives *no* privacy against anyone who knows the seed.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::error::{DpError, Result};

/// The CSPRNG type used for sampling and noise.
pub type DpRng = ChaCha20Rng;

/// A ChaCha20 generator seeded with 256 bits from the operating system.
///
/// # Errors
/// [`DpError::OsRng`] if the OS entropy source fails.
pub fn os_rng() -> Result<DpRng> {
    ChaCha20Rng::try_from_os_rng().map_err(|e| DpError::OsRng(e.to_string()))
}

/// A deterministic ChaCha20 generator for tests and reproducible runs.
#[must_use]
pub fn seeded_rng(seed: u64) -> DpRng {
    ChaCha20Rng::seed_from_u64(seed)
}
