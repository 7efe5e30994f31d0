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
    coeff: Vec<u64>,
    digits: Vec<u64>,
    ext: [Vec<u64>; 2],
    acc: Vec<(u128, u128)>,
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
        s.coeff.resize(nl * n, 0);
        s.coeff.copy_from_slice(d.data());
        for (limb, plan) in s.coeff.chunks_exact_mut(n).zip(q_basis.plans()) {
            plan.inverse(limb);
        }
        s.digits.resize(nl * n, 0);
        for e in s.ext.iter_mut() {
            e.resize(nt * n, 0);
        }
        let [ext0, ext1] = &mut s.ext;
        for t in 0..nt {
            let mt = qp.moduli()[t];
            let plan_t = &qp.plans()[t];
            let key_limb = if t < nl { t } else { nq_all + (t - nl) };
            for j in 0..nl {
                let dst = &mut s.digits[j * n..(j + 1) * n];
                if t == j {
                    dst.copy_from_slice(d.limb(j));
                } else {
                    // Centered digits: half the noise of [0, q_j) digits, and no bias that
                    // would pile up in the low-frequency slots.
                    let src = &s.coeff[j * n..(j + 1) * n];
                    let qj = q_basis.moduli()[j].value();
                    let (half, qj_mod_t) = (qj >> 1, mt.reduce(qj));
                    for (o, &v) in dst.iter_mut().zip(src) {
                        let r = mt.reduce(v);
                        *o = if v > half { mt.sub(r, qj_mod_t) } else { r };
                    }
                    plan_t.forward(dst);
                }
            }
            // Lazy accumulation: products < 2^120, at most 64 digits, so no overflow.
            s.acc.clear();
            s.acc.resize(n, (0, 0));
            for j in 0..nl {
                let dig = &s.digits[j * n..(j + 1) * n];
                let (kb, ka) = (key.b[j].limb(key_limb), key.a[j].limb(key_limb));
                for (((acc, &x), &b), &a) in s.acc.iter_mut().zip(dig).zip(kb).zip(ka) {
                    acc.0 += x as u128 * b as u128;
                    acc.1 += x as u128 * a as u128;
                }
            }
            let o0 = &mut ext0[t * n..(t + 1) * n];
            let o1 = &mut ext1[t * n..(t + 1) * n];
            for ((x0, x1), acc) in o0.iter_mut().zip(o1.iter_mut()).zip(&s.acc) {
                *x0 = mt.reduce_u128(acc.0);
                *x1 = mt.reduce_u128(acc.1);
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
    // Adding floor(P/2) before the floor division makes it round to nearest; a floor bias
    // would multiply into s and pile up in the low-frequency slots.
    for (k, limb) in ext_p.chunks_exact_mut(n).enumerate() {
        let plan = &qp.plans()[nl + k];
        plan.inverse(limb);
        let m = plan.modulus();
        let h = params.p_half_mod_p[k];
        for x in limb.iter_mut() {
            *x = m.add(*x, h);
        }
    }
    conv.resize(nl * n, 0);
    params.ks[level].p_to_q.convert(ext_p, conv, n, conv_tmp)?;
    for i in 0..nl {
        let m = q_basis.moduli()[i];
        let q = m.value();
        let (pinv, pinv_shoup) = params.p_inv_mod_q[i];
        let c = &mut conv[i * n..(i + 1) * n];
        let h = params.p_half_mod_q[i];
        for x in c.iter_mut() {
            *x = m.sub(*x, h);
        }
        q_basis.plans()[i].forward(c);
        let e = &ext_q[i * n..(i + 1) * n];
        for ((o, &x), &cv) in out.limb_mut(i).iter_mut().zip(e).zip(c.iter()) {
            *o = m.add(*o, m.mul_shoup(x + q - cv, pinv, pinv_shoup));
        }
    }
    Ok(())
}
