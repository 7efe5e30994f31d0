//! Hybrid key switching (RNS digits, special primes `P`), shared by relinearization and
//! Galois automorphisms of every scheme built on this RLWE layer.
//!
//! Given `d` at level `l` (NTT form mod `Q_l`) and a key for `s' -> s`, computes `(k_0, k_1)` mod
//! `Q_l` with `k_0 + k_1 s ≈ d s'`:
//! 1. for each digit `j ≤ l`, lift `[d]_{q_j}` to every prime of `Q_l ∪ P` and NTT it;
//! 2. accumulate `Σ_j digit_j · key_j` lazily in 128 bits, reducing once per coefficient;
//! 3. divide by `P` with the fast base conversion `P -> Q_l` (mod-down).

use std::cell::RefCell;

use sphinx_math::{Ntt, Poly};

use crate::error::{HeError, Result};
use crate::params::Parameters;
use crate::rlwe::keys::KeySwitchingKey;

#[derive(Default)]
struct Scratch {
    d_ntt: Vec<u64>,
    coeff: Vec<u64>,
    digits: Vec<u64>,
    ext: [Vec<u64>; 2],
    conv: Vec<u64>,
    conv_tmp: Vec<u64>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Adds `key_switch(d)` into `(out0, out1)`, all at `level`.
pub(crate) fn key_switch_add(
    params: &Parameters,
    level: usize,
    d: &Poly<Ntt>,
    key: &KeySwitchingKey,
    out0: &mut Poly<Ntt>,
    out1: &mut Poly<Ntt>,
) -> Result<()> {
    key_switch_add_permuted(params, level, d, None, key, out0, out1)
}

/// As [`key_switch_add`] on `d` permuted by `perm` (an NTT-domain automorphism), without
/// materializing the permuted polynomial.
pub(crate) fn key_switch_add_permuted(
    params: &Parameters,
    level: usize,
    d: &Poly<Ntt>,
    perm: Option<&[u32]>,
    key: &KeySwitchingKey,
    out0: &mut Poly<Ntt>,
    out1: &mut Poly<Ntt>,
) -> Result<()> {
    params.check_id(key.param_id)?;
    let np = params.p_primes().len();
    if np == 0 {
        return Err(HeError::NoSpecialPrimes);
    }
    let q_basis = params.q_basis(level)?;
    let qp = params.qp_basis(level)?;
    d.check(q_basis)?;
    out0.check(q_basis)?;
    out1.check(q_basis)?;
    let n = params.n();
    let nl = level + 1;
    let nt = nl + np;
    let nq_all = params.q_primes().len();
    SCRATCH.with(|cell| -> Result<()> {
        let mut guard = cell.borrow_mut();
        let s = &mut *guard;
        // Without a permutation `d` is read in place; only a permuted `d` is materialized.
        let d_ntt: &[u64] = match perm {
            Some(perm) if perm.len() == n => {
                s.d_ntt.resize(nl * n, 0);
                for (dst, src) in s.d_ntt.chunks_exact_mut(n).zip(d.limbs()) {
                    for (o, &p) in dst.iter_mut().zip(perm) {
                        *o = src[p as usize];
                    }
                }
                &s.d_ntt
            }
            Some(perm) => {
                return Err(HeError::Math(sphinx_math::MathError::ShapeMismatch {
                    expected_limbs: nl,
                    expected_n: n,
                    got_limbs: nl,
                    got_n: perm.len(),
                }));
            }
            None => d.data(),
        };
        s.coeff.resize(nl * n, 0);
        s.coeff.copy_from_slice(d_ntt);
        for (limb, plan) in s.coeff.chunks_exact_mut(n).zip(q_basis.plans()) {
            plan.inverse(limb);
        }
        s.digits.resize(n, 0);
        for e in s.ext.iter_mut() {
            e.resize(nt * n, 0);
        }
        let [ext0, ext1] = &mut s.ext;
        for t in 0..nt {
            let mt = qp.moduli()[t];
            let plan_t = &qp.plans()[t];
            let key_limb = if t < nl { t } else { nq_all + (t - nl) };
            let o0 = &mut ext0[t * n..(t + 1) * n];
            let o1 = &mut ext1[t * n..(t + 1) * n];
            o0.fill(0);
            o1.fill(0);
            let dst = &mut s.digits[..n];
            for j in 0..nl {
                let digit: &[u64] = if t == j {
                    &d_ntt[j * n..(j + 1) * n]
                } else {
                    // Centered digits: half the noise of [0, q_j) digits, and no bias that
                    // would pile up in the low-frequency slots.
                    mt.lift_centered(
                        dst,
                        &s.coeff[j * n..(j + 1) * n],
                        q_basis.moduli()[j].value(),
                    );
                    plan_t.forward(dst);
                    dst
                };
                plan_t.mul_accumulate(o0, digit, key.b[j].limb(key_limb));
                plan_t.mul_accumulate(o1, digit, key.a[j].limb(key_limb));
            }
        }
        for (ext, out) in [(ext0, out0), (ext1, out1)] {
            mod_down_add(params, level, ext, out, &mut s.conv, &mut s.conv_tmp)?;
        }
        Ok(())
    })
}

/// `out += round(ext / P)` where `ext` holds `Q_l ∪ P` limbs in NTT form (destroyed).
pub(crate) fn mod_down_add(
    params: &Parameters,
    level: usize,
    ext: &mut [u64],
    out: &mut Poly<Ntt>,
    conv: &mut Vec<u64>,
    conv_tmp: &mut Vec<u64>,
) -> Result<()> {
    let n = params.n();
    let nl = level + 1;
    let q_basis = params.q_basis(level)?;
    let qp = params.qp_basis(level)?;
    let (ext_q, ext_p) = ext.split_at_mut(nl * n);
    conv.resize(nl * n, 0);
    if let [p] = params.p_primes() {
        // One special prime: lift its centered residue (rounding division, no floor bias that
        // would multiply into s and pile up in the low-frequency slots).
        qp.plans()[nl].inverse(ext_p);
        for (i, m) in q_basis.moduli().iter().enumerate() {
            m.lift_centered(&mut conv[i * n..(i + 1) * n], ext_p, *p);
        }
    } else {
        round_convert(params, level, ext_p, conv, conv_tmp)?;
    }
    for i in 0..nl {
        let m = q_basis.moduli()[i];
        let q = m.value();
        let (pinv, pinv_shoup) = params.p_inv_mod_q[i];
        let c = &mut conv[i * n..(i + 1) * n];
        q_basis.plans()[i].forward(c);
        let e = &ext_q[i * n..(i + 1) * n];
        for ((o, &x), &cv) in out.limb_mut(i).iter_mut().zip(e).zip(c.iter()) {
            *o = m.add(*o, m.mul_shoup(x + q - cv, pinv, pinv_shoup));
        }
    }
    Ok(())
}

/// `conv = [ext_P + floor(P/2)]_P` converted to `Q_l`, minus `floor(P/2)`: with the division by
/// `P` that follows, a rounding (not floor) division.
fn round_convert(
    params: &Parameters,
    level: usize,
    ext_p: &mut [u64],
    conv: &mut [u64],
    conv_tmp: &mut Vec<u64>,
) -> Result<()> {
    let n = params.n();
    let nl = level + 1;
    let qp = params.qp_basis(level)?;
    for (k, limb) in ext_p.chunks_exact_mut(n).enumerate() {
        let plan = &qp.plans()[nl + k];
        plan.inverse(limb);
        let m = plan.modulus();
        let h = params.p_half_mod_p[k];
        for x in limb.iter_mut() {
            *x = m.add(*x, h);
        }
    }
    params.ks[level].p_to_q.convert(ext_p, conv, n, conv_tmp)?;
    for (i, m) in params.q_basis(level)?.moduli().iter().enumerate() {
        let h = params.p_half_mod_q[i];
        for x in conv[i * n..(i + 1) * n].iter_mut() {
            *x = m.sub(*x, h);
        }
    }
    Ok(())
}
