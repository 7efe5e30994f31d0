//! The RLWE layer shared by every encoding: keys, encryption, ciphertexts of NTT-form
//! polynomials, and hybrid key switching. Nothing here depends on how messages are encoded.

pub mod ciphertext;
pub mod encrypt;
pub mod keys;
pub(crate) mod keyswitch;
pub mod sampler;

pub use ciphertext::{Ciphertext, Plaintext};
pub use keys::{
    GaloisKeys, KeySwitchingKey, PublicKey, RelinearizationKey, SecretKey, conjugation_element,
    rotation_element,
};
