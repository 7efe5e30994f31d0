#!/usr/bin/env python3
"""Known-answer vectors for sphinx-dp's RDP accountant, from Google's dp-accounting.

Usage (writes rdp_kat.json and pld_kat.json next to this script; pass `rdp` or
`pld` to regenerate only one of them):

    python3 -m venv /tmp/dpvenv && /tmp/dpvenv/bin/pip install dp-accounting mpmath
    /tmp/dpvenv/bin/python crates/sphinx-dp/tests/data/gen_rdp_kat.py [rdp|pld]

What it records:
  * epsilon_cases: epsilon (and the optimal order) of `steps` compositions of the
    Poisson-subsampled Gaussian mechanism, from dp_accounting.rdp.RdpAccountant,
    on two order grids: sphinx-dp's default grid ("sphinx") and dp-accounting's
    own default ("dp_accounting").
  * calibration_cases: the noise multiplier reaching a target epsilon, from
    dp_accounting.calibrate_dp_mechanism with an RdpAccountant on sphinx-dp's grid.
  * dp_accounting_excluded_orders: per (q, sigma, grid), the orders at which
    dp-accounting's fractional series did not converge (it returns inf there and
    leaves them out of the minimum).
  * pld_kat.json: epsilon from dp_accounting.pld.PLDAccountant (connect-the-dots,
    value_discretization_interval 1e-4) for a few (q, sigma, steps, delta).
  * log_a_quadrature: log A_alpha (Mironov-Talwar-Zhang 2019) by 40-digit numerical
    integration with mpmath, an accountant-independent reference for fractional
    orders.
"""

import json
import math
import os
import sys

import dp_accounting as dpa
from dp_accounting.rdp import rdp_privacy_accountant as rdp_mod
import mpmath

HERE = os.path.dirname(os.path.abspath(__file__))


def sphinx_orders():
    """sphinx_dp::rdp::default_orders(), written out independently."""
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]
    j = 0
    while True:
        a = math.floor(64 * 2 ** (j / 4))
        if a >= 10000:
            break
        orders.append(a)
        j += 1
    orders.append(10000)
    return sorted(set(float(o) for o in orders))


def event(q, sigma):
    return dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma))


def one_step_rdp(q, sigma, orders):
    acc = dpa.rdp.RdpAccountant(orders=orders)
    acc.compose(event(q, sigma), 1)
    return acc.rdp


def epsilon(rdp, steps, delta, orders):
    # RdpAccountant.compose(event, steps) multiplies the one-step RDP by `steps`,
    # and get_epsilon_and_optimal_order is compute_epsilon on the result; doing
    # it here once per (q, sigma) saves recomputing the RDP curve.
    eps, order = rdp_mod.compute_epsilon(orders, rdp * steps, delta)
    return (None if math.isinf(eps) else float(eps)), float(order)


def log_a_quadrature(q, sigma, alpha):
    mpmath.mp.dps = 40
    q, s, a = mpmath.mpf(q), mpmath.mpf(sigma), mpmath.mpf(alpha)

    def integrand(z):
        mu0 = mpmath.exp(-z * z / (2 * s * s)) / mpmath.sqrt(2 * mpmath.pi * s * s)
        return mu0 * ((1 - q) + q * mpmath.exp((2 * z - 1) / (2 * s * s))) ** a

    z0 = s * s * mpmath.log(1 / q - 1) + mpmath.mpf(1) / 2
    pts = [-mpmath.inf, -20 * s, 0, z0, z0 + 20 * s, mpmath.inf]
    return float(mpmath.log(mpmath.quad(integrand, pts)))


def pld_cases():
    """epsilon from dp_accounting.pld.PLDAccountant (connect-the-dots, interval 1e-4)."""
    out = []
    for q, sigma, steps, delta in ((0.01, 1.1, 1000, 1e-5), (0.1, 2.0, 100, 1e-6),
                                   (0.004, 1.5, 1000, 1e-5), (0.02, 1.0, 300, 1e-5),
                                   (1.0, 4.0, 10, 1e-5), (0.05, 0.8, 50, 1e-5)):
        acc = dpa.pld.PLDAccountant(value_discretization_interval=1e-4)
        ev = dpa.GaussianDpEvent(sigma) if q == 1.0 else event(q, sigma)
        acc.compose(ev, steps)
        out.append(dict(q=q, sigma=sigma, steps=steps, delta=delta, interval=1e-4,
                        epsilon=float(acc.get_epsilon(delta))))
    with open(os.path.join(HERE, "pld_kat.json"), "w") as f:
        json.dump(dict(generator="crates/sphinx-dp/tests/data/gen_rdp_kat.py",
                       dp_accounting_version=getattr(dpa, "__version__", "0.6.0"),
                       pld_cases=out), f, indent=0)
        f.write("\n")


def main():
    which = sys.argv[1:] or ["rdp", "pld"]
    if "pld" in which:
        pld_cases()
    if "rdp" in which:
        rdp_cases()


def rdp_cases():
    ours = sphinx_orders()
    theirs = [float(o) for o in rdp_mod.DEFAULT_RDP_ORDERS]
    cases = []
    excluded = []
    grid = [
        (q, sigma)
        for q in (0.001, 0.004, 0.01, 0.02, 0.05, 0.1)
        for sigma in (0.5, 0.7, 0.8, 1.0, 1.1, 1.5, 2.0, 4.0, 10.0)
    ]
    for q, sigma in grid:
        curves = [(name, orders, one_step_rdp(q, sigma, orders))
                  for name, orders in (("sphinx", ours), ("dp_accounting", theirs))]
        for name, orders, rdp in curves:
            # Orders whose fractional series did not converge in dp-accounting are
            # set to inf there (and so excluded from the minimum).
            bad = [float(a) for a, r in zip(orders, rdp) if math.isinf(r)]
            if bad:
                excluded.append(dict(q=q, sigma=sigma, grid=name, orders=bad))
        for steps in (1, 100, 1000, 10_000, 100_000):
            for delta in (1e-5, 1e-6):
                for name, orders, rdp in curves:
                    eps, order = epsilon(rdp, steps, delta, orders)
                    cases.append(dict(q=q, sigma=sigma, steps=steps, delta=delta,
                                      grid=name, epsilon=eps, order=order))
        print(f"q={q} sigma={sigma} done", file=sys.stderr)

    calibrations = []
    for q, steps in ((0.004, 10_000), (0.01, 1_000), (0.01, 10_000), (0.02, 5_000)):
        for target in (0.5, 2.0):
            sigma = dpa.calibrate_dp_mechanism(
                lambda: dpa.rdp.RdpAccountant(orders=ours),
                lambda s, q=q, steps=steps: dpa.SelfComposedDpEvent(event(q, s), steps),
                target, 1e-5,
                bracket_interval=dpa.ExplicitBracketInterval(0.1, 100.0),
                tol=1e-7,
            )
            calibrations.append(dict(q=q, steps=steps, delta=1e-5,
                                     target_epsilon=target, noise_multiplier=float(sigma)))
        print(f"calibration q={q} steps={steps} done", file=sys.stderr)

    quadrature = [
        dict(q=q, sigma=sigma, alpha=alpha, log_a=log_a_quadrature(q, sigma, alpha))
        for q, sigma, alpha in ((0.01, 0.5, 2.5), (0.01, 1.1, 4.7), (0.01, 0.5, 3.5),
                                (0.004, 0.8, 6.3), (0.05, 2.0, 10.9), (0.1, 1.0, 1.5),
                                (0.1, 1.5, 1.2), (0.1, 0.5, 1.1), (0.05, 0.8, 1.3))
    ]

    out = dict(
        generator="crates/sphinx-dp/tests/data/gen_rdp_kat.py",
        dp_accounting_version=getattr(dpa, "__version__", "0.6.0"),
        sphinx_orders=ours,
        dp_accounting_orders=theirs,
        epsilon_cases=cases,
        dp_accounting_excluded_orders=excluded,
        calibration_cases=calibrations,
        log_a_quadrature=quadrature,
    )
    with open(os.path.join(HERE, "rdp_kat.json"), "w") as f:
        json.dump(out, f, indent=0)
        f.write("\n")


if __name__ == "__main__":
    main()
