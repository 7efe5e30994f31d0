//! CKKS: approximate arithmetic on vectors of real or complex numbers, on the shared RLWE layer.

pub mod encoder;
pub mod evaluator;
pub mod fft;

pub use encoder::Encoder;
pub use evaluator::Evaluator;
pub use fft::Complex;
