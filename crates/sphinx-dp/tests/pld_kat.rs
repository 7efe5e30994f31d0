//! Known answers for the optional PLD accountant, from `dp-accounting`'s
//! `PLDAccountant` (connect-the-dots, interval 1e-4; `data/gen_rdp_kat.py pld`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use sphinx_dp::pld::pld_epsilon;
use sphinx_dp::{Delta, NoiseMultiplier, SampleRate, epsilon_for};

const KAT: &str = include_str!("data/pld_kat.json");

fn check(range: std::ops::Range<usize>) {
    let k: Value = serde_json::from_str(KAT).unwrap();
    let cases = k["pld_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in &cases[range] {
        let g = |key: &str| case[key].as_f64().unwrap();
        let q = SampleRate::new(g("q")).unwrap();
        let s = NoiseMultiplier::new(g("sigma")).unwrap();
        let d = Delta::new(g("delta")).unwrap();
        let steps = case["steps"].as_u64().unwrap();
        let ours = pld_epsilon(q, s, steps, d, g("interval")).unwrap().get();
        let theirs = g("epsilon");
        let rel = (ours / theirs - 1.0).abs();
        println!("{case}: ours {ours}, relative deviation {rel:.2e}");
        assert!(rel < 1e-6, "{case}: ours {ours}");
        // PLD accounting is tighter than RDP.
        assert!(ours < epsilon_for(q, s, steps, d).unwrap().epsilon.get());
    }
}

#[test]
fn pld_matches_dp_accounting_first_half() {
    check(0..3);
}

#[test]
fn pld_matches_dp_accounting_second_half() {
    check(3..6);
}
