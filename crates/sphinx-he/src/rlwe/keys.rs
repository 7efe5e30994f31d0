//! Keys: the ternary secret key, the public key, and key-switching keys (relinearization and
//! Galois) for hybrid key switching.
//!
//! Key-switching keys follow SEAL's digit decomposition: one digit per ciphertext prime `q_j`
//! (the residue `[d]_{q_j}`), and the key for digit `j` encrypts `P · [(Q/q_j)·(Q/q_j)^{-1}]·s'`,
//! which in RNS form is `[P]_{q_j} s'` in limb `j` and zero elsewhere, over the basis `Q ∪ P`.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::{CryptoRng, RngCore};
use sphinx_math::{Coeff, Ntt, Poly, RnsBasis};
use zeroize::Zeroize;

use crate::error::{HeError, Result};
use crate::params::{ParamId, Parameters};
use crate::rlwe::sampler;

/// Samples a small polynomial (ternary or Gaussian) and returns it in NTT form over `basis`.
pub(crate) fn small_ntt(basis: &RnsBasis, mut coeffs: Vec<i64>) -> Result<Poly<Ntt>> {
    let p = Poly::<Coeff>::from_small_i64(basis, &coeffs).and_then(|p| p.into_ntt(basis));
    coeffs.zeroize();
    Ok(p?)
}

/// The secret key `s`, uniform ternary, stored in NTT form over all primes (`Q` then `P`).
///
/// Zeroized on drop; `Debug` prints no key material; deliberately no serialization.
pub struct SecretKey {
    pub(crate) params: Arc<Parameters>,
    pub(crate) s: Poly<Ntt>,
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.s.data_mut().zeroize();
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({}, <redacted>)", self.params.id())
    }
}

impl SecretKey {
    /// Samples a fresh secret key.
    ///
    /// # Errors
    /// Only on an internal shape error (none expected).
    pub fn generate<R: RngCore + CryptoRng>(params: &Arc<Parameters>, rng: &mut R) -> Result<Self> {
        let basis = params.full_basis();
        let s = small_ntt(basis, sampler::ternary(params.n(), rng))?;
        Ok(Self {
            params: Arc::clone(params),
            s,
        })
    }

    /// The parameters of this key.
    pub fn params(&self) -> &Arc<Parameters> {
        &self.params
    }

    /// Identity of the parameters.
    pub fn param_id(&self) -> ParamId {
        self.params.id()
    }

    /// The ternary coefficients of `s`, for a caller that must persist the key (e.g. a client
    /// writing it to a 0600 file). Deliberately loud: this is the whole secret. The buffer is
    /// zeroized when dropped.
    ///
    /// # Errors
    /// Only on an internal shape error.
    pub fn expose_secret_coefficients(&self) -> Result<zeroize::Zeroizing<Vec<i8>>> {
        let basis = self.params.q_basis(0)?;
        let mut limb0 =
            Poly::<Ntt>::from_data(basis, self.s.limb(0).to_vec())?.into_coeff(basis)?;
        let m = basis.moduli()[0];
        let out: Vec<i8> = limb0.limb(0).iter().map(|&x| m.center(x) as i8).collect();
        limb0.data_mut().zeroize();
        Ok(zeroize::Zeroizing::new(out))
    }

    /// Rebuilds a secret key from [`expose_secret_coefficients`](Self::expose_secret_coefficients).
    ///
    /// # Errors
    /// [`HeError::InvalidSecretKey`] unless there are exactly `N` coefficients in {-1, 0, 1}.
    pub fn from_secret_coefficients(params: &Arc<Parameters>, coeffs: &[i8]) -> Result<Self> {
        if coeffs.len() != params.n() || coeffs.iter().any(|c| !(-1..=1).contains(c)) {
            return Err(HeError::InvalidSecretKey);
        }
        let wide: Vec<i64> = coeffs.iter().map(|&c| c as i64).collect();
        let s = small_ntt(params.full_basis(), wide)?;
        Ok(Self {
            params: Arc::clone(params),
            s,
        })
    }

    /// Limbs `0..=level` of `s` (NTT form).
    pub(crate) fn s_q(&self, level: usize) -> &[u64] {
        &self.s.data()[..(level + 1) * self.params.n()]
    }
}

/// The public key `(b, a) = (-a s + e, a)` over all primes (`Q` then `P`), NTT form.
///
/// Encryption works modulo `Q_l · P` and divides by `P` at the end (as SEAL does), which
/// shrinks the encryption noise from `≈ u·e` to a rounding error.
#[derive(Clone, Debug)]
pub struct PublicKey {
    pub(crate) params: Arc<Parameters>,
    pub(crate) b: Poly<Ntt>,
    pub(crate) a: Poly<Ntt>,
    /// The seed `a` expands from ([`expand_seed`](crate::rlwe::sampler::expand_seed)), so a
    /// serializer can send 32 bytes instead of `a`.
    pub(crate) seed: Option<[u8; 32]>,
}

/// A fresh 32-byte seed from `rng`.
fn fresh_seed<R: RngCore + CryptoRng>(rng: &mut R) -> [u8; 32] {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    seed
}

impl PublicKey {
    /// Derives a public key from `sk`.
    ///
    /// # Errors
    /// Only on an internal shape error.
    pub fn new<R: RngCore + CryptoRng>(sk: &SecretKey, rng: &mut R) -> Result<Self> {
        let params = &sk.params;
        let basis = params.full_basis();
        let seed = fresh_seed(rng);
        let a = sampler::expand_seed(basis, &seed);
        let mut b = small_ntt(basis, sampler::gaussian(params.n(), rng))?;
        let n = params.n();
        for (i, m) in basis.moduli().iter().enumerate() {
            let s = &sk.s.data()[i * n..(i + 1) * n];
            let (bl, al) = (b.limb_mut(i), a.limb(i));
            for ((x, &y), &z) in bl.iter_mut().zip(al).zip(s) {
                *x = m.sub(*x, m.mul(y, z));
            }
        }
        Ok(Self {
            params: Arc::clone(params),
            b,
            a,
            seed: Some(seed),
        })
    }

    /// Assembles a public key from `b` and the seed of `a` (the compact form).
    ///
    /// # Errors
    /// Shape mismatch against the full basis (all primes).
    pub fn from_seeded_parts(
        params: &Arc<Parameters>,
        b: Poly<Ntt>,
        seed: [u8; 32],
    ) -> Result<Self> {
        let a = sampler::expand_seed(params.full_basis(), &seed);
        let mut pk = Self::from_parts(params, b, a)?;
        pk.seed = Some(seed);
        Ok(pk)
    }

    /// The seed `a` was expanded from, if known.
    pub fn seed(&self) -> Option<&[u8; 32]> {
        self.seed.as_ref()
    }

    /// Assembles a public key from its polynomials (for deserialization).
    ///
    /// # Errors
    /// Shape mismatch against the full basis (all primes).
    pub fn from_parts(params: &Arc<Parameters>, b: Poly<Ntt>, a: Poly<Ntt>) -> Result<Self> {
        let basis = params.full_basis();
        b.check(basis)?;
        a.check(basis)?;
        Ok(Self {
            params: Arc::clone(params),
            b,
            a,
            seed: None,
        })
    }

    /// Identity of the parameters.
    pub fn param_id(&self) -> ParamId {
        self.params.id()
    }

    /// The parameters of this key.
    pub fn params(&self) -> &Arc<Parameters> {
        &self.params
    }

    /// `(b, a)`.
    pub fn polys(&self) -> (&Poly<Ntt>, &Poly<Ntt>) {
        (&self.b, &self.a)
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.params.id() == other.params.id() && self.b == other.b && self.a == other.a
    }
}

/// A key that switches a ciphertext component from secret `s'` to `s` (hybrid, one digit per
/// ciphertext prime). `b[j], a[j]` are over all primes (`Q` then `P`), NTT form.
#[derive(Clone, Debug)]
pub struct KeySwitchingKey {
    pub(crate) param_id: ParamId,
    pub(crate) b: Vec<Poly<Ntt>>,
    pub(crate) a: Vec<Poly<Ntt>>,
    /// Seeds the `a_j` expand from, so a serializer can send 32 bytes per digit instead.
    pub(crate) seeds: Option<Vec<[u8; 32]>>,
}

impl KeySwitchingKey {
    /// Generates the key switching `s_from` (NTT form over all primes) to `sk`.
    ///
    /// # Errors
    /// [`HeError::NoSpecialPrimes`] if the parameters have no special prime.
    pub fn new<R: RngCore + CryptoRng>(
        sk: &SecretKey,
        s_from: &Poly<Ntt>,
        rng: &mut R,
    ) -> Result<Self> {
        let params = &sk.params;
        if params.p_primes().is_empty() {
            return Err(HeError::NoSpecialPrimes);
        }
        let basis = params.full_basis();
        s_from.check(basis)?;
        let n = params.n();
        let digits = params.q_primes().len();
        let mut bs = Vec::with_capacity(digits);
        let mut as_ = Vec::with_capacity(digits);
        let mut seeds = Vec::with_capacity(digits);
        for j in 0..digits {
            let seed = fresh_seed(rng);
            let a = sampler::expand_seed(basis, &seed);
            seeds.push(seed);
            let mut b = small_ntt(basis, sampler::gaussian(n, rng))?;
            for (i, m) in basis.moduli().iter().enumerate() {
                let s = sk.s.limb(i);
                let al = a.limb(i);
                let bl = b.limb_mut(i);
                for ((x, &y), &z) in bl.iter_mut().zip(al).zip(s) {
                    *x = m.sub(*x, m.mul(y, z));
                }
                if i == j {
                    let pm = params.p_mod_q[j];
                    let w = m.shoup(pm);
                    for (x, &f) in bl.iter_mut().zip(s_from.limb(i)) {
                        *x = m.add(*x, m.mul_shoup(f, pm, w));
                    }
                }
            }
            bs.push(b);
            as_.push(a);
        }
        Ok(Self {
            param_id: params.id(),
            b: bs,
            a: as_,
            seeds: Some(seeds),
        })
    }

    /// Assembles a key from the `b_j` and the seeds of the `a_j` (the compact form).
    ///
    /// # Errors
    /// As [`from_parts`](Self::from_parts).
    pub fn from_seeded_parts(
        params: &Parameters,
        b: Vec<Poly<Ntt>>,
        seeds: Vec<[u8; 32]>,
    ) -> Result<Self> {
        let a = seeds
            .iter()
            .map(|s| sampler::expand_seed(params.full_basis(), s))
            .collect();
        let mut key = Self::from_parts(params, b, a)?;
        key.seeds = Some(seeds);
        Ok(key)
    }

    /// The seeds the `a_j` were expanded from, if known.
    pub fn seeds(&self) -> Option<&[[u8; 32]]> {
        self.seeds.as_deref()
    }

    /// Assembles a key from its polynomials (for deserialization).
    ///
    /// # Errors
    /// Shape mismatch, or a digit count different from the number of ciphertext primes.
    pub fn from_parts(params: &Parameters, b: Vec<Poly<Ntt>>, a: Vec<Poly<Ntt>>) -> Result<Self> {
        let digits = params.q_primes().len();
        if b.len() != digits || a.len() != digits {
            return Err(HeError::UnsupportedCiphertextSize {
                got: b.len().min(a.len()),
                supported: "one pair per ciphertext prime",
            });
        }
        for p in b.iter().chain(&a) {
            p.check(params.full_basis())?;
        }
        Ok(Self {
            param_id: params.id(),
            b,
            a,
            seeds: None,
        })
    }

    /// Identity of the parameters.
    pub fn param_id(&self) -> ParamId {
        self.param_id
    }

    /// The digit keys `(b_j, a_j)`.
    pub fn polys(&self) -> (&[Poly<Ntt>], &[Poly<Ntt>]) {
        (&self.b, &self.a)
    }
}

impl PartialEq for KeySwitchingKey {
    /// Keys are equal when their polynomials are; whether the seeds are known does not matter.
    fn eq(&self, other: &Self) -> bool {
        self.param_id == other.param_id && self.b == other.b && self.a == other.a
    }
}

/// Relinearization key: switches `s²` to `s`.
#[derive(Clone, Debug, PartialEq)]
pub struct RelinearizationKey(pub KeySwitchingKey);

impl RelinearizationKey {
    /// Generates the relinearization key of `sk`.
    ///
    /// # Errors
    /// [`HeError::NoSpecialPrimes`].
    pub fn new<R: RngCore + CryptoRng>(sk: &SecretKey, rng: &mut R) -> Result<Self> {
        let mut s2 = sk.s.clone();
        s2.mul_assign(&sk.s, sk.params.full_basis())?;
        let key = KeySwitchingKey::new(sk, &s2, rng);
        s2.data_mut().zeroize();
        Ok(Self(key?))
    }
}

/// Galois element of a left rotation by `steps` slots: `5^steps mod 2N` (negative steps
/// rotate right).
///
/// # Errors
/// [`HeError::InvalidRotation`] if `|steps| >= N/2`.
pub fn rotation_element(steps: i64, n: usize) -> Result<u64> {
    let slots = (n / 2) as i64;
    if steps.unsigned_abs() >= slots as u64 {
        return Err(HeError::InvalidRotation {
            steps,
            slots: slots as usize,
        });
    }
    let two_n = 2 * n as u64;
    let r = steps.rem_euclid(slots) as u64;
    let mut g = 1u64;
    for _ in 0..r {
        g = g * 5 % two_n;
    }
    Ok(g)
}

/// Galois element of complex conjugation: `2N - 1`.
pub fn conjugation_element(n: usize) -> u64 {
    2 * n as u64 - 1
}

/// Galois keys: one key-switching key per Galois element `k`, switching `s(X^k)` to `s`.
#[derive(Clone, Debug, PartialEq)]
pub struct GaloisKeys {
    pub(crate) param_id: ParamId,
    pub(crate) keys: BTreeMap<u64, KeySwitchingKey>,
    /// NTT-domain permutation of each element, precomputed once.
    pub(crate) perms: BTreeMap<u64, Vec<u32>>,
}

impl GaloisKeys {
    /// Keys for the given rotation steps, plus conjugation if asked.
    ///
    /// # Errors
    /// [`HeError::NoSpecialPrimes`], [`HeError::InvalidRotation`].
    pub fn new<R: RngCore + CryptoRng>(
        sk: &SecretKey,
        steps: &[i64],
        conjugate: bool,
        rng: &mut R,
    ) -> Result<Self> {
        let n = sk.params.n();
        let mut elements = steps
            .iter()
            .map(|&s| rotation_element(s, n))
            .collect::<Result<Vec<_>>>()?;
        if conjugate {
            elements.push(conjugation_element(n));
        }
        Self::for_elements(sk, &elements, rng)
    }

    /// Keys for explicit Galois elements (odd residues mod `2N`).
    ///
    /// # Errors
    /// [`HeError::NoSpecialPrimes`], or an even element.
    pub fn for_elements<R: RngCore + CryptoRng>(
        sk: &SecretKey,
        elements: &[u64],
        rng: &mut R,
    ) -> Result<Self> {
        let basis = sk.params.full_basis();
        let mut keys = BTreeMap::new();
        for &k in elements {
            if k == 1 || keys.contains_key(&k) {
                continue;
            }
            let mut sk_k = sk.s.automorphism(k, basis)?;
            let key = KeySwitchingKey::new(sk, &sk_k, rng);
            sk_k.data_mut().zeroize();
            keys.insert(k, key?);
        }
        Self::from_parts(&sk.params, keys)
    }

    /// Steps `±1, ±2, ±4, …, ±N/4`: enough for any rotation (by composition) and for
    /// [`sum_slots`](crate::ckks::Evaluator::sum_slots).
    pub fn power_of_two_steps(params: &Parameters) -> Vec<i64> {
        let slots = params.slots() as i64;
        let mut steps = Vec::new();
        let mut s = 1;
        while s < slots {
            steps.push(s);
            steps.push(-s);
            s *= 2;
        }
        steps
    }

    /// Assembles Galois keys from parts (for deserialization).
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`] if a key belongs to other parameters.
    pub fn from_parts(params: &Parameters, keys: BTreeMap<u64, KeySwitchingKey>) -> Result<Self> {
        let mut perms = BTreeMap::new();
        for (&k, key) in &keys {
            params.check_id(key.param_id)?;
            perms.insert(k, params.full_basis().galois_permutation(k)?);
        }
        Ok(Self {
            param_id: params.id(),
            keys,
            perms,
        })
    }

    /// Identity of the parameters.
    pub fn param_id(&self) -> ParamId {
        self.param_id
    }

    /// The key of Galois element `k`, if generated.
    pub fn get(&self, k: u64) -> Option<&KeySwitchingKey> {
        self.keys.get(&k)
    }

    /// All keys by Galois element.
    pub fn keys(&self) -> &BTreeMap<u64, KeySwitchingKey> {
        &self.keys
    }
}
