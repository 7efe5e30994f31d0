//! Exact (BFV-style) encoding on the shared RLWE layer, for Delphi-style preprocessing.
//!
//! Messages are `N` slot values modulo a prime `t ≡ 1 (mod 2N)` (41 bits in
//! [`BfvParametersLiteral::delphi_n8192`]); the NTT modulo `t` maps slots to a polynomial
//! `m(X)`, so slot-wise products and sums mod `t` are ring operations. A ciphertext is an
//! ordinary RLWE [`Ciphertext`](crate::Ciphertext) (top level, scale 1) decrypting to
//! `Δ·m + e` with `Δ = ⌊Q/t⌋`; keys are the RLWE keys of [`BfvParameters::rlwe`].
//!
//! # Preprocessing
//! The client sends `[r]` ([`Bfv::encrypt_sk`], seeded); the server computes
//! `[W ⊙ r − s]` with [`Bfv::mul_plain`] and [`Bfv::sub_plain`] for a fresh uniform `s`, then
//! [`Bfv::flood`]s it before returning it; the client decrypts `W ⊙ r − s` exactly.
//!
//! # Noise flooding
//! The noise of `W·[r] − Δ·s` depends on `W` (through `W·e` and the carry of `W·r` past `t`).
//! [`Bfv::flood`] adds a fresh public-key encryption of zero, which replaces `c_1` by a
//! pseudorandom polynomial (RLWE), and adds to `c_0` integers uniform on `[−2^f, 2^f)` with
//! `f = ⌈log2 E⌉ + λ + log2 N`, where `E` is the worst-case noise bound of the preprocessing
//! result ([`NoiseBounds`]) and `λ =` [`FLOODING_STATISTICAL_SECURITY`] `= 40`. Shifting a
//! uniform variable on an interval of `2^(f+1)` integers by `|e| ≤ E` changes it by statistical
//! distance `|e|/2^(f+1)`; over `N` coefficients this is at most `2^-(λ+1)`. The bound is a true
//! worst case, not a tail estimate: errors come from a Gaussian cut at `⌈6σ⌉ = 20` and secrets
//! are ternary. It assumes a semi-honest client (honestly generated `[r]`, as in Delphi).
//! [`BfvParameters::new`] refuses any `Q` for which the flooded noise could break exact
//! decryption (`Q/(2t) − t`).
//!
//! For `delphi_n8192` (`N = 2^13`, `Q ≈ 2^210`, `t ≈ 2^41`): `E ≈ 2^93` (dominated by
//! `t·(N·t/4)`), `f = 147`, flooded noise `≤ 2^147.0`, decryption tolerates `2^168`: 21 bits
//! of margin. `log2 Q = 210 ≤ 218`, the 128-bit bound for `N = 8192`.
//!
//! # Example
//! ```
//! use rand::SeedableRng;
//! use sphinx_he::bfv::{Bfv, BfvParametersLiteral};
//! use sphinx_he::{PublicKey, SecretKey};
//!
//! let params = BfvParametersLiteral::delphi_n8192().build()?;
//! let mut rng = rand_chacha::ChaCha20Rng::from_os_rng();
//! let sk = SecretKey::generate(params.rlwe(), &mut rng)?; // client
//! let pk = PublicKey::new(&sk, &mut rng)?;
//! let bfv = Bfv::new(&params);
//! let t = params.t();
//!
//! let r = bfv.encode(&[5, t - 1, 7])?;
//! let ct_r = bfv.encrypt_sk(&sk, &r, &mut rng)?; // client → server
//! let w = bfv.encode(&[3, 2, 0])?;
//! let s = bfv.encode(&[1, 1, 1])?;
//! let out = bfv.flood(&pk, &bfv.sub_plain(&bfv.mul_plain(&ct_r, &w)?, &s)?, &mut rng)?;
//! let got = bfv.decode(&bfv.decrypt(&sk, &out)?)?; // W r − s mod t
//! assert_eq!(&got[..3], &[14, t - 3, t - 1]);
//! # Ok::<(), sphinx_he::HeError>(())
//! ```

mod params;
mod scheme;

pub use params::{BfvParameters, BfvParametersLiteral, FLOODING_STATISTICAL_SECURITY, NoiseBounds};
pub use scheme::{Bfv, BfvPlaintext};
