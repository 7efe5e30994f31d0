//! `sphinx privacy`: runs the real binary and checks its answers and its errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn sphinx(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args(args)
        .output()
        .expect("run sphinx")
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = sphinx(args);
    assert!(
        out.status.success(),
        "sphinx {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

#[test]
fn epsilon_json_matches_dp_accounting() {
    // dp-accounting 0.6 RdpAccountant on our grid: 5.632010670 at order 4.7
    // (tests/data/rdp_kat.json in sphinx-dp holds the full grid).
    let v = json(&[
        "privacy",
        "epsilon",
        "--sample-rate",
        "0.01",
        "--noise-multiplier",
        "1.1",
        "--steps",
        "10000",
        "--delta",
        "1e-5",
        "--accountant",
        "rdp",
        "--json",
    ]);
    let eps = v["epsilon"].as_f64().unwrap();
    assert!((eps / 5.632_010_670 - 1.0).abs() < 5e-3, "{eps}");
    assert_eq!(v["order"].as_f64(), Some(4.7));
    assert_eq!(v["accountant"], "rdp");
    assert_eq!(v["noise_multiplier"].as_f64(), Some(1.1));
}

#[test]
fn signed_accountant_is_tighter_for_small_sigma() {
    let run = |acc: &str| {
        json(&[
            "privacy",
            "epsilon",
            "--sample-rate",
            "0.01",
            "--noise-multiplier",
            "0.5",
            "--steps",
            "1000",
            "--delta",
            "1e-5",
            "--accountant",
            acc,
            "--json",
        ])
    };
    let (rdp, signed) = (run("rdp"), run("rdp-signed"));
    assert_eq!(signed["accountant"], "rdp-signed");
    let (a, b) = (
        rdp["epsilon"].as_f64().unwrap(),
        signed["epsilon"].as_f64().unwrap(),
    );
    assert!(b < a, "{b} vs {a}");
}

#[test]
fn pld_accountant_matches_dp_accounting_and_has_no_order() {
    // dp-accounting 0.6 PLDAccountant (interval 1e-4): 2.6750357401 (pld_kat.json).
    let v = json(&[
        "privacy",
        "epsilon",
        "--sample-rate",
        "0.1",
        "--noise-multiplier",
        "2",
        "--steps",
        "100",
        "--delta",
        "1e-6",
        "--accountant",
        "pld",
        "--json",
    ]);
    assert_eq!(v["accountant"], "pld");
    let eps = v["epsilon"].as_f64().unwrap();
    assert!((eps / 2.675_035_740 - 1.0).abs() < 1e-6, "{eps}");
    assert!(v.get("order").is_none());
    let out = sphinx(&[
        "privacy",
        "noise",
        "--sample-rate",
        "0.1",
        "--epsilon",
        "2",
        "--steps",
        "100",
        "--delta",
        "1e-6",
        "--accountant",
        "pld",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rdp"));
}

#[test]
fn noise_reproduces_the_target_epsilon() {
    let v = json(&[
        "privacy",
        "noise",
        "--sample-rate",
        "0.004",
        "--epsilon",
        "2",
        "--steps",
        "10000",
        "--delta",
        "1e-5",
        "--json",
    ]);
    let sigma = v["noise_multiplier"].as_f64().unwrap();
    assert_eq!(v["accountant"], "rdp");
    assert!(v["order"].as_f64().unwrap() > 1.0);
    let back = json(&[
        "privacy",
        "epsilon",
        "--sample-rate",
        "0.004",
        "--noise-multiplier",
        &sigma.to_string(),
        "--steps",
        "10000",
        "--delta",
        "1e-5",
        "--json",
    ]);
    let eps = back["epsilon"].as_f64().unwrap();
    assert!(eps <= 2.0 && eps > 2.0 * (1.0 - 1e-5), "{eps}");
    assert_eq!(back["epsilon"], v["epsilon"]);
}

#[test]
fn text_output_names_epsilon_and_order() {
    let out = sphinx(&[
        "privacy",
        "epsilon",
        "--sample-rate",
        "0.01",
        "--noise-multiplier",
        "1.0",
        "--steps",
        "1000",
        "--delta",
        "1e-5",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("epsilon = 2.10"), "{text}");
    assert!(text.contains("optimal order 7.8"), "{text}");
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "epsilon",
                "--sample-rate",
                "1.5",
                "--noise-multiplier",
                "1",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "0 < q <= 1",
        ),
        (
            &[
                "epsilon",
                "--sample-rate",
                "0",
                "--noise-multiplier",
                "1",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "0 < q <= 1",
        ),
        (
            &[
                "epsilon",
                "--sample-rate",
                "0.1",
                "--noise-multiplier",
                "-1",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "sigma",
        ),
        (
            &[
                "epsilon",
                "--sample-rate",
                "0.1",
                "--noise-multiplier",
                "1",
                "--steps",
                "10",
                "--delta",
                "1",
            ],
            "delta < 1",
        ),
        (
            &[
                "epsilon",
                "--sample-rate",
                "0.1",
                "--noise-multiplier",
                "1",
                "--steps",
                "0",
                "--delta",
                "1e-5",
            ],
            "steps",
        ),
        (
            &[
                "epsilon",
                "--sample-rate",
                "abc",
                "--noise-multiplier",
                "1",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "not a number",
        ),
        (
            &[
                "epsilon",
                "--sample-rate",
                "0.1",
                "--noise-multiplier",
                "inf",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "finite",
        ),
        (
            &[
                "noise",
                "--sample-rate",
                "0.1",
                "--epsilon",
                "0",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "greater than 0",
        ),
        (
            &[
                "noise",
                "--sample-rate",
                "0.1",
                "--epsilon",
                "-2",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "epsilon",
        ),
        (
            &[
                "epsilon",
                "--sample-rate",
                "0.1",
                "--noise-multiplier",
                "1",
                "--steps",
                "10",
                "--delta",
                "1e-5",
                "--accountant",
                "magic",
            ],
            "accountant",
        ),
    ];
    for (args, needle) in cases {
        let mut full = vec!["privacy"];
        full.extend_from_slice(args);
        let out = sphinx(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{full:?} succeeded");
        assert!(
            err.contains(needle),
            "{full:?}: stderr {err:?} lacks {needle:?}"
        );
        assert!(!err.contains("panicked"), "{full:?} panicked: {err}");
    }
}

#[test]
fn unreachable_target_fails_cleanly() {
    // One full-batch step can never reach ε = 1e-9 with σ ≤ 10⁶ at δ = 1e-10.
    let out = sphinx(&[
        "privacy",
        "noise",
        "--sample-rate",
        "1",
        "--epsilon",
        "1e-9",
        "--steps",
        "100000",
        "--delta",
        "1e-10",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no noise multiplier"), "{err}");
    assert!(!err.contains("panicked"));
}
