//! Homomorphic encryption for Sphinx: an RNS variant of CKKS on a scheme-neutral RLWE layer.
//!
//! # Layout
//! - [`params`]: [`ParametersLiteral`] → validated, shared [`Parameters`] with security checks
//!   against the HomomorphicEncryption.org table, presets, and [`params::suggest`].
//! - [`rlwe`]: keys ([`SecretKey`], [`PublicKey`], [`RelinearizationKey`], [`GaloisKeys`]),
//!   public-key and seeded symmetric encryption, decryption of 2- and 3-part ciphertexts, and
//!   hybrid key switching. Nothing here knows about CKKS, so an exact (BFV-style) encoding can
//!   reuse it as is.
//! - [`ckks`]: the [`Encoder`] (canonical embedding via a special FFT) and the [`Evaluator`].
//! - [`bfv`]: exact arithmetic mod a prime `t ≈ 2^41` ([`bfv::Bfv`]): SIMD encoding,
//!   plaintext × ciphertext products, additions, and noise flooding for Delphi-style
//!   preprocessing ([`bfv::BfvParametersLiteral::delphi_n8192`]).
//!
//! Every [`Ciphertext`] and [`Plaintext`] carries its parameter id and level; operations on
//! mismatched operands return [`HeError`], never panic.
//!
//! # Presets
//! - [`ParametersLiteral::seal_n8192`]: `N = 8192`, primes `[60, 40, 40 | 60]`, scale `2^40`;
//!   128-bit classical security (200 of 218 bits); depth 2; precision 24.2 bits estimated,
//!   26.3 measured after depth 2 (27 bits fresh).
//! - [`ParametersLiteral::seal_n16384`]: `N = 16384`, `[60, 6×40 | 60]`, scale `2^40`; 128-bit
//!   classical security (360 of 438 bits); depth 6; 22.6 bits estimated, 25.4 measured after
//!   depth 6.
//! - [`params::suggest`] returns the smallest secure set for a depth, scale and slot count.
//!
//! # Operations
//! | what | API |
//! |---|---|
//! | keys | [`SecretKey::generate`], [`PublicKey::new`], [`RelinearizationKey::new`], [`GaloisKeys::new`] |
//! | encode / decode | [`Encoder::encode`], [`Encoder::encode_complex`], [`Encoder::decode`] |
//! | encrypt | [`PublicKey::encrypt`], seeded symmetric [`SecretKey::encrypt`] (half-size `c_1`) |
//! | decrypt | [`SecretKey::decrypt`] (2 or 3 parts) |
//! | add / sub / negate | [`Evaluator::add`], [`Evaluator::sub`], [`Evaluator::negate`], `*_plain`, `*_assign` |
//! | multiply | [`Evaluator::mul_plain`], [`Evaluator::mul_integer`] (no level), [`Evaluator::mul_scalar`], [`Evaluator::multiply`], [`Evaluator::multiply_relin`], [`Evaluator::linear_combination`] |
//! | levels | [`Evaluator::relinearize`], [`Evaluator::rescale`], [`Evaluator::drop_to_level`] |
//! | slots | [`Evaluator::rotate`], [`Evaluator::conjugate`], [`Evaluator::sum_slots`] |
//! | batches | [`Evaluator::par_map`] (rayon) |
//!
//! # Example
//! ```
//! use rand::SeedableRng;
//! use sphinx_he::*;
//!
//! let params = ParametersLiteral::seal_n8192().build()?; // 128-bit secure, depth 2
//! let mut rng = rand_chacha::ChaCha20Rng::from_os_rng();
//! let sk = SecretKey::generate(&params, &mut rng)?;
//! let pk = PublicKey::new(&sk, &mut rng)?;
//! let rlk = RelinearizationKey::new(&sk, &mut rng)?;
//! let encoder = Encoder::new(&params);
//! let eval = Evaluator::new(&params);
//!
//! let x = [1.5, -2.0, 0.25];
//! let pt = encoder.encode(&x, params.scale(), params.max_level())?;
//! let ct = pk.encrypt(&pt, &mut rng)?;
//! let sq = eval.rescale(&eval.multiply_relin(&ct, &ct, &rlk)?)?; // x², one level down
//! let out = encoder.decode(&sk.decrypt(&sq)?)?;
//! assert!((out[1] - 4.0).abs() < 1e-4);
//! # Ok::<(), HeError>(())
//! ```

pub mod bfv;
pub mod ckks;
pub mod error;
pub mod params;
pub mod rlwe;
pub mod serialization;

pub use ckks::{Complex, Encoder, Evaluator};
pub use error::{HeError, InvalidParametersReason, Result};
pub use params::{ParamId, Parameters, ParametersLiteral, SecurityLevel, Suggestion};
pub use rlwe::{
    Ciphertext, GaloisKeys, KeySwitchingKey, Plaintext, PublicKey, RelinearizationKey, SecretKey,
};
pub use serialization::{DecodeError, Serializable};
