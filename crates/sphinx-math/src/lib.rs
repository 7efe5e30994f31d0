//! Lattice arithmetic for Sphinx: word-sized moduli, NTT-friendly primes, the negacyclic NTT,
//! RNS bases and RNS polynomials in `Z_Q[X]/(X^N + 1)`.
//!
//! # What is ours and what is borrowed
//! - The NTT butterflies come from [`tfhe_ntt`] (`prime64::Plan`): vectorized (AVX2 here; AVX-512
//!   and IFMA where the CPU has them), Shoup-twiddled, and maintained for production use by
//!   Zama. The exception is primes below `2^50` on CPUs with AVX2 and FMA but no IFMA path in
//!   use: there a double-precision transform of ours (pulp's safe intrinsics; exact products
//!   from a fused multiply-add instead of a 64-bit multiply emulated from 32-bit ones, values
//!   reduced lazily under worst-case bounds fixed per plan) computes the same map, bit for
//!   bit, about 2.4× as fast at N = 8192; `unsafe` stays banned.
//! - Hand-written here: [`Modulus`] (Barrett reduction of 128-bit products, Shoup multiplication
//!   by fixed operands, branch-free add/sub that the compiler vectorizes), prime generation,
//!   the output-order map that lets automorphisms act directly on NTT values, RNS base
//!   conversion and division by the last prime, and the lazily reduced multiply-accumulate
//!   kernels of [`lazy`] (split residues, vectorized 32-bit products, one reduction per
//!   output), and [`scale`]'s AVX2 `(a − b) · w` Shoup kernel that ends every division by a
//!   prime (pulp's safe intrinsics, with a scalar fallback). These are a few lines each, need constants the
//!   NTT crate does not expose, and their cost is dominated by memory traffic, not the kernel.
//!
//! # Example
//! ```
//! use sphinx_math::{Coeff, Poly, RnsBasis, primes::ntt_primes};
//! let n = 1024;
//! let basis = RnsBasis::new(n, &ntt_primes(&[50, 40], n)?)?;
//! let mut x = vec![0i64; n];
//! x[n - 1] = 1; // X^(n-1)
//! let a = Poly::<Coeff>::from_i64(&basis, &x)?.into_ntt(&basis)?;
//! let mut sq = a.clone();
//! sq.mul_assign(&a, &basis)?; // X^(2n-2) = -X^(n-2) in the negacyclic ring
//! let sq = sq.into_coeff(&basis)?;
//! assert_eq!(sq.limb(0)[n - 2], basis.moduli()[0].value() - 1);
//! # Ok::<(), sphinx_math::MathError>(())
//! ```

pub mod error;
pub mod lazy;
pub mod modulus;
pub mod ntt;
#[cfg(target_arch = "x86_64")]
mod ntt_f64;
pub mod poly;
pub mod primes;
pub mod rns;
pub mod scale;

pub use error::{MathError, Result};
pub use modulus::Modulus;
pub use ntt::NttPlan;
pub use poly::{Coeff, Ntt, Poly, Representation};
pub use rns::{BasisConverter, RnsBasis};
