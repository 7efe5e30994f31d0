//! Hybrid key switching (RNS digits, special primes `P`), shared by relinearization and
//! Galois automorphisms of every scheme built on this RLWE layer.
//!
//! Given `d` at level `l` (NTT form mod `Q_l`) and a key for `s' -> s`, computes `(k_0, k_1)` mod
//! `Q_l` with `k_0 + k_1 s ≈ d s'`:
//! 1. for each digit `j ≤ l`, lift `[d]_{q_j}` to every prime of `Q_l ∪ P` and NTT it;
//! 2. accumulate `Σ_j digit_j · key_j` (special primes first);
//! 3. divide by `P` with the fast base conversion `P -> Q_l` (mod-down), fused into step 2's
//!    last pass over each prime of `Q_l`.

use std::cell::RefCell;

use sphinx_math::{Ntt, Poly, scale};

use crate::error::{HeError, Result};
use crate::params::Parameters;
use crate::rlwe::keys::KeySwitchingKey;

#[derive(Default)]
struct Scratch {
    d_ntt: Vec<u64>,
    coeff: Vec<u64>,
    digit: Vec<u64>,
    ext_p: [Vec<u64>; 2],
    conv: [Vec<u64>; 2],
    conv_tmp: Vec<u64>,
}

/// The subtrahends `conv` (one limb per output) and `(P^{-1}, its Shoup companion)` of the
/// fused mod-down.
type ModDown<'a> = ([&'a [u64]; 2], (u64, u64));

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
///
/// The special primes are done first: their results, divided back to `Q_l`, are then known
/// before any prime of `Q_l` is, so each `Q_l` limb's inner product ends in the mod-down
/// (`(Σ − conv) · P^{-1}`, added to the output) while its sums are still in registers, and
/// the `Q_l` part of the extended product is never stored.
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
    let nq_all = params.q_primes().len();
    let digit_count = key.b.len().min(key.a.len());
    if digit_count < nl {
        return Err(HeError::Math(sphinx_math::MathError::TooFewLimbs(nl)));
    }
    SCRATCH.with(|cell| -> Result<()> {
        let mut guard = cell.borrow_mut();
        let Scratch {
            d_ntt: d_perm,
            coeff,
            digit,
            ext_p,
            conv,
            conv_tmp,
        } = &mut *guard;
        // Without a permutation `d` is read in place; only a permuted `d` is materialized, and
        // its gather writes the copy that the inverse transforms take as well.
        coeff.resize(nl * n, 0);
        let d_ntt: &[u64] = match perm {
            Some(perm) if perm.len() == n => {
                d_perm.resize(nl * n, 0);
                for ((dst, copy), src) in d_perm
                    .chunks_exact_mut(n)
                    .zip(coeff.chunks_exact_mut(n))
                    .zip(d.limbs())
                {
                    for ((o, c), &p) in dst.iter_mut().zip(copy.iter_mut()).zip(perm) {
                        let v = src[p as usize];
                        *o = v;
                        *c = v;
                    }
                }
                d_perm
            }
            Some(perm) => {
                return Err(HeError::Math(sphinx_math::MathError::ShapeMismatch {
                    expected_limbs: nl,
                    expected_n: n,
                    got_limbs: nl,
                    got_n: perm.len(),
                }));
            }
            None => {
                coeff.copy_from_slice(d.data());
                d.data()
            }
        };
        for (limb, plan) in coeff.chunks_exact_mut(n).zip(q_basis.plans()) {
            plan.inverse(limb);
        }
        digit.resize(nl * n, 0);
        // The extended product in target prime `t` of `Q_l ∪ P` is `Σ_j digit_j · key_j`,
        // every digit lifted and transformed first so that the two inner products run in one
        // pass with one reduction per output. `mod_down = Some((conv_k, P^{-1}))` adds
        // `(product − conv) · P^{-1}` to the outputs instead of storing the product.
        let mut accumulate = |t: usize,
                              key_limb: usize,
                              (acc0, acc1): (&mut [u64], &mut [u64]),
                              mod_down: Option<ModDown<'_>>| {
            let mt = qp.moduli()[t];
            let plan_t = &qp.plans()[t];
            for (j, dj) in digit.chunks_exact_mut(n).enumerate().take(nl) {
                if t != j {
                    // Centered digits: half the noise of [0, q_j) digits, and no bias that
                    // would pile up in the low-frequency slots.
                    mt.lift_centered(dj, &coeff[j * n..(j + 1) * n], q_basis.moduli()[j].value());
                    plan_t.forward(dj);
                }
            }
            // The digit's own prime: `d` is already that digit in NTT form.
            let xs: Vec<&[u64]> = (0..nl)
                .map(|j| {
                    let src: &[u64] = if t == j { d_ntt } else { digit };
                    &src[j * n..(j + 1) * n]
                })
                .collect();
            let ys0: Vec<&[u64]> = key.b[..nl].iter().map(|k| k.limb(key_limb)).collect();
            let ys1: Vec<&[u64]> = key.a[..nl].iter().map(|k| k.limb(key_limb)).collect();
            match mod_down {
                None => plan_t.dot_product_pair(acc0, acc1, &xs, &ys0, &ys1),
                Some(([c0, c1], w)) => {
                    plan_t.dot_product_pair_mod_down((acc0, acc1), &xs, (&ys0, &ys1), (c0, c1), w)
                }
            }
        };
        // 1. The special primes, divided back to `Q_l` (`conv`) before any prime of `Q_l`.
        for e in ext_p.iter_mut() {
            e.resize(np * n, 0);
        }
        for k in 0..np {
            let [e0, e1] = &mut *ext_p;
            let range = k * n..(k + 1) * n;
            accumulate(
                nl + k,
                nq_all + k,
                (&mut e0[range.clone()], &mut e1[range]),
                None,
            );
        }
        for (e, c) in ext_p.iter_mut().zip(conv.iter_mut()) {
            special_to_q(params, level, e, c, conv_tmp)?;
        }
        // 2. Each prime of `Q_l`: its product, and at once `out += (product − conv) · P^{-1}`.
        for i in 0..nl {
            let range = i * n..(i + 1) * n;
            let c = [&conv[0][range.clone()], &conv[1][range]];
            let outs = (out0.limb_mut(i), out1.limb_mut(i));
            accumulate(i, i, outs, Some((c, params.p_inv_mod_q[i])));
        }
        Ok(())
    })
}

/// `conv`: `ext_P`'s centered (rounding) representative brought to `Q_l` in NTT form, the
/// part of `ext` that the division by `P` removes; the mod-down is then
/// `out += (ext_Q − conv) · P^{-1}` limb by limb. `ext_p` (NTT form) is destroyed.
fn special_to_q(
    params: &Parameters,
    level: usize,
    ext_p: &mut [u64],
    conv: &mut Vec<u64>,
    conv_tmp: &mut Vec<u64>,
) -> Result<()> {
    let n = params.n();
    let nl = level + 1;
    let q_basis = params.q_basis(level)?;
    let qp = params.qp_basis(level)?;
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
    for (c, plan) in conv.chunks_exact_mut(n).zip(q_basis.plans()) {
        plan.forward(c);
    }
    Ok(())
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
    let (ext_q, ext_p) = ext.split_at_mut(nl * n);
    special_to_q(params, level, ext_p, conv, conv_tmp)?;
    for i in 0..nl {
        let m = q_basis.moduli()[i];
        let (pinv, pinv_shoup) = params.p_inv_mod_q[i];
        let c = &conv[i * n..(i + 1) * n];
        let e = &ext_q[i * n..(i + 1) * n];
        scale::sub_mul_shoup_add(&m, out.limb_mut(i), e, c, pinv, pinv_shoup);
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
