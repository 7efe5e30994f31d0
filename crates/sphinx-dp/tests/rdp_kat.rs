//! Known-answer tests for the RDP accountant.
//!
//! `data/rdp_kat.json` is produced by `data/gen_rdp_kat.py` from Google's
//! `dp-accounting` (see the script for the exact calls). The target is
//! agreement within 0.5 % relative on ε; the test also prints the largest
//! deviation it saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use serde_json::Value;
use sphinx_dp::rdp::{
    FractionalSeries, default_orders, dp_accounting_default_orders, epsilon_from_rdp,
    epsilon_from_rdp_classic, rdp_curve, rdp_curve_with, rdp_subsampled_gaussian,
    rdp_subsampled_gaussian_with,
};
use sphinx_dp::{
    Delta, DpError, Epsilon, NoiseMultiplier, RdpAccountant, SampleRate, calibrate_noise,
    epsilon_for,
};

const KAT: &str = include_str!("data/rdp_kat.json");
const REL_TOL: f64 = 5e-3;

fn kat() -> Value {
    serde_json::from_str(KAT).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap()
}

#[test]
fn grids_match_the_generator() {
    let k = kat();
    assert_eq!(floats(&k["sphinx_orders"]), default_orders());
    assert_eq!(
        floats(&k["dp_accounting_orders"]),
        dp_accounting_default_orders()
    );
}

struct Deviation {
    cases: usize,
    max_rel: f64,
    worst: String,
    same_order: usize,
}

/// Compares our ε with every recorded dp-accounting ε, evaluating fractional
/// orders with `series`; `check(case, ours, theirs)` adds per-case assertions.
fn compare(series: FractionalSeries, check: impl Fn(&Value, f64, f64)) -> Deviation {
    let k = kat();
    let grids = [
        ("sphinx", default_orders()),
        ("dp_accounting", dp_accounting_default_orders()),
    ];
    let mut curves: HashMap<(u64, u64, String), Vec<f64>> = HashMap::new();
    let mut dev = Deviation {
        cases: 0,
        max_rel: 0.0,
        worst: String::new(),
        same_order: 0,
    };
    for case in k["epsilon_cases"].as_array().unwrap() {
        let (q, sigma) = (f(case, "q"), f(case, "sigma"));
        let delta = Delta::new(f(case, "delta")).unwrap();
        let steps = case["steps"].as_u64().unwrap() as f64;
        let grid = case["grid"].as_str().unwrap();
        let orders = &grids.iter().find(|(name, _)| *name == grid).unwrap().1;
        let curve = curves
            .entry((q.to_bits(), sigma.to_bits(), grid.to_owned()))
            .or_insert_with(|| {
                let q = SampleRate::new(q).unwrap();
                rdp_curve_with(q, NoiseMultiplier::new(sigma).unwrap(), orders, series)
            });
        let total: Vec<f64> = curve.iter().map(|r| r * steps).collect();
        let ours = epsilon_from_rdp(orders, &total, delta);
        let Some(theirs) = case["epsilon"].as_f64() else {
            assert_eq!(ours, Err(DpError::InfiniteEpsilon), "{case}");
            continue;
        };
        let (eps, order) = ours.unwrap();
        check(case, eps, theirs);
        dev.cases += 1;
        dev.same_order += usize::from(order == f(case, "order"));
        let rel = if theirs == 0.0 {
            eps
        } else {
            (eps - theirs).abs() / theirs
        };
        if rel > dev.max_rel {
            dev.max_rel = rel;
            dev.worst = format!("{case} -> ours {eps} at order {order}");
        }
    }
    println!(
        "{series:?}: {} cases, max relative deviation {:.3e}, same optimal order in {}; worst: {}",
        dev.cases, dev.max_rel, dev.same_order, dev.worst
    );
    dev
}

#[test]
fn default_accountant_reproduces_dp_accounting() {
    // The default series is dp-accounting's (absolute terms, 1000-term cap), so
    // everything (integer orders, grid, conversion, composition) must agree.
    assert_eq!(FractionalSeries::default(), FractionalSeries::AbsoluteTerms);
    let dev = compare(FractionalSeries::default(), |_, _, _| {});
    assert!(dev.cases >= 1000, "{}", dev.cases);
    assert!(dev.max_rel <= REL_TOL, "{}", dev.worst);
}

#[test]
fn signed_series_is_never_looser_than_dp_accounting() {
    // The signed series is the exact A_α (see the quadrature test), so it can only
    // be tighter; in the DP-SGD regime σ ≥ 1, q ≤ 0.01 it agrees within 0.5 %.
    let dev = compare(FractionalSeries::Signed, |case, ours, theirs| {
        assert!(ours <= theirs * (1.0 + 1e-6) + 1e-12, "{case}: ours {ours}");
        if f(case, "sigma") >= 1.0 && f(case, "q") <= 0.01 {
            let rel = (ours - theirs).abs() / theirs.max(1e-300);
            assert!(rel <= REL_TOL || theirs == 0.0, "{case}: ours {ours}");
        }
    });
    assert!(dev.cases >= 1000, "{}", dev.cases);
}

#[test]
fn calibration_agrees_with_dp_accounting() {
    let k = kat();
    let template = RdpAccountant::new();
    for case in k["calibration_cases"].as_array().unwrap() {
        let q = SampleRate::new(f(case, "q")).unwrap();
        let steps = case["steps"].as_u64().unwrap();
        let delta = Delta::new(f(case, "delta")).unwrap();
        let target = f(case, "target_epsilon");
        let c = calibrate_noise(&template, q, steps, Epsilon::new(target).unwrap(), delta).unwrap();
        let theirs = f(case, "noise_multiplier");
        let rel = (c.noise_multiplier.get() / theirs - 1.0).abs();
        assert!(rel < REL_TOL, "{case}: ours {}", c.noise_multiplier);
        // The calibrated σ reproduces the target ε.
        let again = epsilon_for(q, c.noise_multiplier, steps, delta).unwrap();
        assert!(again.epsilon.get() <= target && again.epsilon.get() > target * (1.0 - 1e-5));
    }
}

#[test]
fn fractional_orders_match_high_precision_quadrature() {
    // log A_α by 40-digit integration (mpmath): the signed series matches it.
    let k = kat();
    for case in k["log_a_quadrature"].as_array().unwrap() {
        let alpha = f(case, "alpha");
        let q = SampleRate::new(f(case, "q")).unwrap();
        let sigma = NoiseMultiplier::new(f(case, "sigma")).unwrap();
        let r = rdp_subsampled_gaussian_with(q, sigma, alpha, FractionalSeries::Signed);
        // The default (dp-accounting's absolute-term bound) is never below it.
        let bound = rdp_subsampled_gaussian(q, sigma, alpha);
        assert!(bound >= r * (1.0 - 1e-12), "{case}: {bound} < {r}");
        let want = f(case, "log_a");
        let got = r * (alpha - 1.0);
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1e-12),
            "{case}: {got}"
        );
    }
}

#[test]
fn tf_privacy_tutorial_table() {
    // TF-Privacy tutorials/README.md, "Select Parameters": MNIST, N = 60000,
    // batch 256, δ = 1e-5, reported ε: σ = 1.12 for 60 epochs → 2.92 and
    // σ = 1.2 for 10 epochs → 1.20. Those figures used the classic conversion
    // (Mironov 2017, Prop. 3) on the orders 1.1…10.9, 12…63.
    let orders: Vec<f64> = (1..100)
        .map(|x| 1.0 + f64::from(x) / 10.0)
        .chain((12..64).map(f64::from))
        .collect();
    let q = SampleRate::new(256.0 / 60_000.0).unwrap();
    let delta = Delta::new(1e-5).unwrap();
    for (sigma, epochs, published) in [(1.12, 60.0, 2.92), (1.2, 10.0, 1.20)] {
        let steps = (epochs * 60_000.0 / 256.0f64).ceil();
        let curve = rdp_curve(q, NoiseMultiplier::new(sigma).unwrap(), &orders);
        let total: Vec<f64> = curve.iter().map(|r| r * steps).collect();
        let (eps, _) = epsilon_from_rdp_classic(&orders, &total, delta).unwrap();
        assert!(
            (eps - published).abs() < 0.005,
            "σ={sigma}: {eps} vs {published}"
        );
        // The tight conversion is strictly better.
        let (tight, _) = epsilon_from_rdp(&orders, &total, delta).unwrap();
        assert!(tight < eps);
    }
}
