//! `sphinx bench train` end to end on the smallest MNIST preset: the JSON report has the
//! keys the issue names, with consistent figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn bench_train_writes_the_documented_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("train.json");
    let out = Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args([
            "bench",
            "train",
            "--model",
            "mlp-30",
            "--batch-size",
            "8",
            "--steps",
            "1",
            "--pure-he-reps",
            "2",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("speedup"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let num = |p: &str| v.pointer(p).and_then(serde_json::Value::as_f64).unwrap();
    let secs = num("/sphinx/seconds_per_batch");
    assert!(secs > 0.0);
    assert!(num("/sphinx/bytes_up_per_image") > 0.0);
    // Both directions carry ciphertexts (which is larger depends on the model and batch:
    // results travel two per ciphertext, uploads one value per slot).
    assert!(num("/sphinx/bytes_down_per_image") > 0.0);
    let phases = v
        .pointer("/sphinx/phases")
        .and_then(|p| p.as_object())
        .unwrap();
    for p in [
        "client_encrypt",
        "server_forward",
        "client_nonlinear",
        "server_backward",
        "client_decrypt_clip_noise",
        "server_update",
    ] {
        assert!(phases.contains_key(p), "missing phase {p}");
    }
    let phase_sum: f64 = phases.values().filter_map(serde_json::Value::as_f64).sum();
    assert!(
        phase_sum <= secs * 1.01,
        "phases {phase_sum} within the wall time {secs}"
    );
    assert!(num("/pure_he/seconds_per_sample") > 0.0);
    let speedup = num("/speedup");
    let pure_batch = num("/pure_he/seconds_per_batch");
    assert!((speedup - pure_batch / secs).abs() <= 1e-9 * speedup);
}

#[test]
fn baseline_train_mode_sphinx_runs_the_encrypted_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    // q = 1 on a 40-example subset: one encrypted step.
    let out = Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args([
            "baseline",
            "train",
            "--mode",
            "sphinx",
            "--model",
            "mlp-30",
            "--train-subset",
            "40",
            "--test-subset",
            "100",
            "--batch-size",
            "40",
            "--noise-multiplier",
            "1.0",
            "--seed",
            "5",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["mode"], "sphinx");
    assert_eq!(v["steps"], 1);
    let eps = v["epsilon"].as_f64().unwrap();
    assert!(eps > 0.0 && eps.is_finite());
    let acc = v["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
}
