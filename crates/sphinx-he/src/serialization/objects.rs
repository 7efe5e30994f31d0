//! Payload codecs of the serializable objects; the layouts are in the module docs.

use std::collections::BTreeMap;
use std::sync::Arc;

use sphinx_math::{Ntt, Poly, RnsBasis};

use super::envelope::{HEADER_LEN, Header, ObjectType, Reader};
use super::{DecodeError, poly_len, read_poly_into, write_poly};
use crate::error::Result;
use crate::params::Parameters;
use crate::rlwe::{
    Ciphertext, GaloisKeys, KeySwitchingKey, Plaintext, PublicKey, RelinearizationKey,
};

/// A generous default size limit for [`Serializable::from_bytes`]: 1 GiB, above
/// the Galois keys of every 128-bit-secure preset. Callers reading from the
/// network should pass the size of the object they expect instead.
pub const DEFAULT_SIZE_LIMIT: usize = 1 << 30;

/// Objects with a compact, validated binary form.
///
/// Implemented for [`Ciphertext`], [`Plaintext`], [`PublicKey`],
/// [`RelinearizationKey`] and [`GaloisKeys`]; deliberately not for
/// [`SecretKey`](crate::SecretKey):
///
/// ```compile_fail
/// use sphinx_he::{ParametersLiteral, SecretKey, serialization::Serializable};
/// use rand::SeedableRng;
/// let params = ParametersLiteral::seal_n8192().build().unwrap();
/// let sk = SecretKey::generate(&params, &mut rand_chacha::ChaCha20Rng::seed_from_u64(1)).unwrap();
/// let _ = sk.to_bytes(&params);
/// ```
///
/// # Example
/// ```
/// use rand::SeedableRng;
/// use sphinx_he::serialization::{DEFAULT_SIZE_LIMIT, Serializable};
/// use sphinx_he::*;
///
/// let params = ParametersLiteral::seal_n8192().build()?;
/// let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
/// let sk = SecretKey::generate(&params, &mut rng)?;
/// let pt = Encoder::new(&params).encode(&[0.5, -1.0], params.scale(), params.max_level())?;
///
/// // A fresh symmetric encryption travels as c0 plus a 32-byte seed.
/// let ct = sk.encrypt(&pt, &mut rng)?;
/// let bytes = ct.to_bytes(&params)?;
/// assert!(bytes.len() < 150_000); // a full ciphertext takes about 287 kB
/// let back = Ciphertext::from_bytes(&params, &bytes, DEFAULT_SIZE_LIMIT)?;
/// assert_eq!(back, ct);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Serializable: Sized {
    /// The bytes of this object under `params`.
    ///
    /// # Errors
    /// [`HeError::ParamMismatch`](crate::HeError::ParamMismatch) if the object belongs to other parameters.
    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>>;

    /// Appends [`to_bytes`](Self::to_bytes) to `out`: types that hold their wire form
    /// override it to write straight into a frame being built.
    ///
    /// # Errors
    /// As [`to_bytes`](Self::to_bytes).
    fn write_into(&self, params: &Parameters, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(&self.to_bytes(params)?);
        Ok(())
    }

    /// The exact length [`to_bytes`](Self::to_bytes) returns.
    ///
    /// # Errors
    /// As [`to_bytes`](Self::to_bytes).
    fn serialized_len(&self, params: &Parameters) -> Result<usize>;

    /// Decodes an object that must belong to `params`, refusing payloads over
    /// `limit` bytes before allocating.
    ///
    /// # Errors
    /// A [`DecodeError`] for any input that is not exactly a valid encoding of
    /// this type under `params`.
    fn from_bytes(
        params: &Arc<Parameters>,
        bytes: &[u8],
        limit: usize,
    ) -> std::result::Result<Self, DecodeError>;
}

pub(super) fn write_header(
    out: &mut Vec<u8>,
    object: ObjectType,
    params: &Parameters,
    level: usize,
    payload_len: usize,
) {
    Header {
        object,
        params_id: params.id().0,
        // Levels are < 64 (the parameters refuse longer chains).
        level: level as u16,
        payload_len: payload_len as u64,
    }
    .write(out);
}

/// Parses the header, then checks type, parameter id and level for `params`.
pub(super) fn open<'a>(
    params: &Parameters,
    bytes: &'a [u8],
    limit: usize,
    accept: &[ObjectType],
) -> std::result::Result<(Header, Reader<'a>), DecodeError> {
    let header = Header::parse(bytes, limit)?;
    if !accept.contains(&header.object) {
        return Err(DecodeError::WrongObjectType {
            expected: accept[0],
            found: header.object,
        });
    }
    if header.params_id != params.id().0 {
        return Err(DecodeError::ParamsMismatch {
            expected: params.id().0,
            found: header.params_id,
        });
    }
    if usize::from(header.level) > params.max_level() {
        return Err(DecodeError::InvalidLevel {
            found: header.level,
            allowed: "0 ..= the parameters' top level",
        });
    }
    let mut r = Reader::new(bytes);
    r.take(HEADER_LEN)?;
    Ok((header, r))
}

pub(super) fn expect_payload(
    header: &Header,
    expected: usize,
) -> std::result::Result<(), DecodeError> {
    if header.payload_len != expected as u64 {
        return Err(DecodeError::PayloadSize {
            expected: expected as u64,
            found: header.payload_len,
        });
    }
    Ok(())
}

pub(super) fn read_scale(r: &mut Reader<'_>) -> std::result::Result<f64, DecodeError> {
    let scale = r.f64()?;
    if !(scale.is_finite() && scale > 0.0) {
        return Err(DecodeError::Malformed(
            "scale is not a positive finite number",
        ));
    }
    Ok(scale)
}

fn moduli(basis: &RnsBasis) -> Vec<u64> {
    basis.moduli().iter().map(|m| m.value()).collect()
}

fn q_moduli(params: &Parameters, level: usize) -> Result<Vec<u64>> {
    Ok(moduli(params.q_basis(level)?))
}

fn read_ntt_poly(
    r: &mut Reader<'_>,
    basis: &RnsBasis,
    moduli: &[u64],
    component: usize,
) -> std::result::Result<Poly<Ntt>, DecodeError> {
    // Unpacking checks every residue against its prime: the zero polynomial it fills
    // needs no second validation pass (`Poly::from_data` would repeat the range check).
    let mut poly = Poly::<Ntt>::zero(basis);
    read_poly_into(r, basis.n(), moduli, component, poly.data_mut())?;
    Ok(poly)
}

fn basis_or_internal(
    params: &Parameters,
    level: usize,
) -> std::result::Result<&RnsBasis, DecodeError> {
    params.q_basis(level).map_err(DecodeError::Rejected)
}

impl Serializable for Ciphertext {
    /// A fresh symmetric encryption (one that still carries its seed) is written
    /// as a seeded ciphertext, about half the size; anything else in full.
    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>> {
        params.check_id(self.param_id)?;
        let len = self.serialized_len(params)?;
        let mut out = Vec::with_capacity(len);
        let q = q_moduli(params, self.level)?;
        match (self.seed, self.polys.as_slice()) {
            (Some(seed), [c0, _c1]) => {
                write_header(
                    &mut out,
                    ObjectType::SeededCiphertext,
                    params,
                    self.level,
                    len - HEADER_LEN,
                );
                out.extend_from_slice(&self.scale.to_bits().to_le_bytes());
                out.extend_from_slice(&seed);
                write_poly(&mut out, c0.limbs(), &q);
            }
            _ => {
                write_header(
                    &mut out,
                    ObjectType::Ciphertext,
                    params,
                    self.level,
                    len - HEADER_LEN,
                );
                out.push(self.polys.len() as u8);
                out.extend_from_slice(&self.scale.to_bits().to_le_bytes());
                for p in &self.polys {
                    write_poly(&mut out, p.limbs(), &q);
                }
            }
        }
        debug_assert_eq!(out.len(), len);
        Ok(out)
    }

    fn serialized_len(&self, params: &Parameters) -> Result<usize> {
        params.check_id(self.param_id)?;
        let poly = poly_len(params.n(), &q_moduli(params, self.level)?);
        Ok(HEADER_LEN
            + match (self.seed, self.polys.len()) {
                (Some(_), 2) => 8 + 32 + poly,
                (_, size) => 1 + 8 + size * poly,
            })
    }

    /// Accepts both the full and the seeded form; a seeded one comes back with
    /// its seed, so it re-serializes seeded.
    fn from_bytes(
        params: &Arc<Parameters>,
        bytes: &[u8],
        limit: usize,
    ) -> std::result::Result<Self, DecodeError> {
        let (header, mut r) = open(
            params,
            bytes,
            limit,
            &[ObjectType::Ciphertext, ObjectType::SeededCiphertext],
        )?;
        let level = usize::from(header.level);
        let basis = basis_or_internal(params, level)?;
        let q = moduli(basis);
        let poly = poly_len(params.n(), &q);
        let ct = if header.object == ObjectType::SeededCiphertext {
            expect_payload(&header, 8 + 32 + poly)?;
            let scale = read_scale(&mut r)?;
            let seed = r.array::<32>()?;
            let c0 = read_ntt_poly(&mut r, basis, &q, 0)?;
            Ciphertext::from_seeded(params, c0, seed, level, scale)
                .map_err(DecodeError::Rejected)?
        } else {
            let size = r.u8()?;
            if !(2..=3).contains(&size) {
                return Err(DecodeError::Malformed("ciphertext size must be 2 or 3"));
            }
            expect_payload(&header, 1 + 8 + usize::from(size) * poly)?;
            let scale = read_scale(&mut r)?;
            let polys = (0..usize::from(size))
                .map(|c| read_ntt_poly(&mut r, basis, &q, c))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ciphertext::from_parts(params, polys, level, scale).map_err(DecodeError::Rejected)?
        };
        r.finish()?;
        Ok(ct)
    }
}

impl Serializable for Plaintext {
    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>> {
        let len = self.serialized_len(params)?;
        let mut out = Vec::with_capacity(len);
        write_header(
            &mut out,
            ObjectType::Plaintext,
            params,
            self.level,
            len - HEADER_LEN,
        );
        out.extend_from_slice(&self.scale.to_bits().to_le_bytes());
        write_poly(&mut out, self.poly.limbs(), &q_moduli(params, self.level)?);
        Ok(out)
    }

    fn serialized_len(&self, params: &Parameters) -> Result<usize> {
        params.check_id(self.param_id)?;
        Ok(HEADER_LEN + 8 + poly_len(params.n(), &q_moduli(params, self.level)?))
    }

    fn from_bytes(
        params: &Arc<Parameters>,
        bytes: &[u8],
        limit: usize,
    ) -> std::result::Result<Self, DecodeError> {
        let (header, mut r) = open(params, bytes, limit, &[ObjectType::Plaintext])?;
        let level = usize::from(header.level);
        let basis = basis_or_internal(params, level)?;
        let q = moduli(basis);
        expect_payload(&header, 8 + poly_len(params.n(), &q))?;
        let scale = read_scale(&mut r)?;
        let poly = read_ntt_poly(&mut r, basis, &q, 0)?;
        r.finish()?;
        Plaintext::from_poly(params, poly, level, scale).map_err(DecodeError::Rejected)
    }
}

fn require_top_level(params: &Parameters, header: &Header) -> std::result::Result<(), DecodeError> {
    if usize::from(header.level) != params.max_level() {
        return Err(DecodeError::InvalidLevel {
            found: header.level,
            allowed: "keys live at the top level only",
        });
    }
    Ok(())
}

impl Serializable for PublicKey {
    /// A key that knows the seed of `a` (every freshly generated one) is written
    /// in the seeded form, about half the size.
    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>> {
        let len = self.serialized_len(params)?;
        let mut out = Vec::with_capacity(len);
        let object = match self.seed {
            Some(_) => ObjectType::SeededPublicKey,
            None => ObjectType::PublicKey,
        };
        write_header(
            &mut out,
            object,
            params,
            params.max_level(),
            len - HEADER_LEN,
        );
        let qp = moduli(params.full_basis());
        write_poly(&mut out, self.b.limbs(), &qp);
        match &self.seed {
            Some(seed) => out.extend_from_slice(seed),
            None => write_poly(&mut out, self.a.limbs(), &qp),
        }
        Ok(out)
    }

    fn serialized_len(&self, params: &Parameters) -> Result<usize> {
        params.check_id(self.params.id())?;
        let poly = poly_len(params.n(), &moduli(params.full_basis()));
        Ok(HEADER_LEN + poly + if self.seed.is_some() { 32 } else { poly })
    }

    fn from_bytes(
        params: &Arc<Parameters>,
        bytes: &[u8],
        limit: usize,
    ) -> std::result::Result<Self, DecodeError> {
        let accept = [ObjectType::PublicKey, ObjectType::SeededPublicKey];
        let (header, mut r) = open(params, bytes, limit, &accept)?;
        require_top_level(params, &header)?;
        let basis = params.full_basis();
        let qp = moduli(basis);
        let poly = poly_len(params.n(), &qp);
        let seeded = header.object == ObjectType::SeededPublicKey;
        expect_payload(&header, poly + if seeded { 32 } else { poly })?;
        let b = read_ntt_poly(&mut r, basis, &qp, 0)?;
        let key = if seeded {
            let seed = r.array::<32>()?;
            PublicKey::from_seeded_parts(params, b, seed)
        } else {
            let a = read_ntt_poly(&mut r, basis, &qp, 1)?;
            PublicKey::from_parts(params, b, a)
        };
        r.finish()?;
        key.map_err(DecodeError::Rejected)
    }
}

/// Bytes of one key-switching key's digits (without the digit count): per digit
/// `b_j` and either `a_j` or its 32-byte seed.
fn ksk_len(params: &Parameters, seeded: bool) -> usize {
    let poly = poly_len(params.n(), &moduli(params.full_basis()));
    params.q_primes().len() * (poly + if seeded { 32 } else { poly })
}

fn write_ksk(out: &mut Vec<u8>, params: &Parameters, key: &KeySwitchingKey, seeded: bool) {
    let qp = moduli(params.full_basis());
    match (seeded, key.seeds()) {
        (true, Some(seeds)) => {
            for (b, seed) in key.b.iter().zip(seeds) {
                write_poly(out, b.limbs(), &qp);
                out.extend_from_slice(seed);
            }
        }
        _ => {
            for (b, a) in key.b.iter().zip(&key.a) {
                write_poly(out, b.limbs(), &qp);
                write_poly(out, a.limbs(), &qp);
            }
        }
    }
}

fn read_ksk(
    r: &mut Reader<'_>,
    params: &Parameters,
    seeded: bool,
) -> std::result::Result<KeySwitchingKey, DecodeError> {
    let basis = params.full_basis();
    let qp = moduli(basis);
    let digits = params.q_primes().len();
    let mut bs = Vec::with_capacity(digits);
    let mut as_ = Vec::with_capacity(if seeded { 0 } else { digits });
    let mut seeds = Vec::with_capacity(if seeded { digits } else { 0 });
    for j in 0..digits {
        bs.push(read_ntt_poly(r, basis, &qp, 2 * j)?);
        if seeded {
            seeds.push(r.array::<32>()?);
        } else {
            as_.push(read_ntt_poly(r, basis, &qp, 2 * j + 1)?);
        }
    }
    let key = if seeded {
        KeySwitchingKey::from_seeded_parts(params, bs, seeds)
    } else {
        KeySwitchingKey::from_parts(params, bs, as_)
    };
    key.map_err(DecodeError::Rejected)
}

fn check_digits(params: &Parameters, found: u16) -> std::result::Result<(), DecodeError> {
    if usize::from(found) != params.q_primes().len() {
        return Err(DecodeError::Malformed(
            "digit count differs from the number of ciphertext primes",
        ));
    }
    Ok(())
}

impl Serializable for RelinearizationKey {
    /// Seeded form when the key knows the seeds of its `a_j`.
    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>> {
        let len = self.serialized_len(params)?;
        let seeded = self.0.seeds().is_some();
        let object = if seeded {
            ObjectType::SeededRelinKey
        } else {
            ObjectType::RelinKey
        };
        let mut out = Vec::with_capacity(len);
        write_header(
            &mut out,
            object,
            params,
            params.max_level(),
            len - HEADER_LEN,
        );
        out.extend_from_slice(&(params.q_primes().len() as u16).to_le_bytes());
        write_ksk(&mut out, params, &self.0, seeded);
        Ok(out)
    }

    fn serialized_len(&self, params: &Parameters) -> Result<usize> {
        params.check_id(self.0.param_id)?;
        Ok(HEADER_LEN + 2 + ksk_len(params, self.0.seeds().is_some()))
    }

    fn from_bytes(
        params: &Arc<Parameters>,
        bytes: &[u8],
        limit: usize,
    ) -> std::result::Result<Self, DecodeError> {
        let accept = [ObjectType::RelinKey, ObjectType::SeededRelinKey];
        let (header, mut r) = open(params, bytes, limit, &accept)?;
        require_top_level(params, &header)?;
        let seeded = header.object == ObjectType::SeededRelinKey;
        expect_payload(&header, 2 + ksk_len(params, seeded))?;
        check_digits(params, r.u16()?)?;
        let key = read_ksk(&mut r, params, seeded)?;
        r.finish()?;
        Ok(RelinearizationKey(key))
    }
}

impl Serializable for GaloisKeys {
    /// Seeded form when every key knows its seeds.
    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>> {
        let len = self.serialized_len(params)?;
        let seeded = galois_seeded(self);
        let object = if seeded {
            ObjectType::SeededGaloisKeys
        } else {
            ObjectType::GaloisKeys
        };
        let mut out = Vec::with_capacity(len);
        write_header(
            &mut out,
            object,
            params,
            params.max_level(),
            len - HEADER_LEN,
        );
        out.extend_from_slice(&(self.keys.len() as u32).to_le_bytes());
        out.extend_from_slice(&(params.q_primes().len() as u16).to_le_bytes());
        // BTreeMap iteration is by increasing element: the canonical order.
        for (&k, key) in &self.keys {
            out.extend_from_slice(&k.to_le_bytes());
            write_ksk(&mut out, params, key, seeded);
        }
        Ok(out)
    }

    fn serialized_len(&self, params: &Parameters) -> Result<usize> {
        params.check_id(self.param_id)?;
        let per_key = 8 + ksk_len(params, galois_seeded(self));
        Ok(HEADER_LEN + 4 + 2 + self.keys.len() * per_key)
    }

    fn from_bytes(
        params: &Arc<Parameters>,
        bytes: &[u8],
        limit: usize,
    ) -> std::result::Result<Self, DecodeError> {
        let accept = [ObjectType::GaloisKeys, ObjectType::SeededGaloisKeys];
        let (header, mut r) = open(params, bytes, limit, &accept)?;
        require_top_level(params, &header)?;
        let seeded = header.object == ObjectType::SeededGaloisKeys;
        let count = r.u32()?;
        let per_key = 8 + ksk_len(params, seeded) as u64;
        // u64 arithmetic: a hostile count cannot overflow before the comparison.
        let expected = 4 + 2 + u64::from(count) * per_key;
        if header.payload_len != expected {
            return Err(DecodeError::PayloadSize {
                expected,
                found: header.payload_len,
            });
        }
        check_digits(params, r.u16()?)?;
        let two_n = 2 * params.n() as u64;
        let mut keys = BTreeMap::new();
        let mut previous = 1u64;
        for _ in 0..count {
            let k = r.u64()?;
            // Odd, below 2N, not the identity, strictly increasing (one encoding per set).
            if k % 2 == 0 || k >= two_n || k <= previous {
                return Err(DecodeError::Malformed(
                    "Galois elements must be odd, in (1, 2N) and increasing",
                ));
            }
            previous = k;
            keys.insert(k, read_ksk(&mut r, params, seeded)?);
        }
        r.finish()?;
        GaloisKeys::from_parts(params, keys).map_err(DecodeError::Rejected)
    }
}

/// A Galois key set travels seeded when every key in it knows its seeds.
fn galois_seeded(gk: &GaloisKeys) -> bool {
    !gk.keys.is_empty() && gk.keys.values().all(|k| k.seeds().is_some())
}
