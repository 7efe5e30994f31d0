//! `sphinx bench infer` end to end on the smallest MNIST preset: the JSON report has the
//! Table V rows and keys the issue names, with consistent figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn bench_infer_writes_table_v_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("infer.json");
    let out = Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args([
            "bench",
            "infer",
            "--model",
            "mlp-30",
            "--queries",
            "8",
            "--pure-he-reps",
            "2",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("| Sphinx |"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["queries"], 8);
    let rows = v["rows"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["framework"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Pure-HE", "Sphinx-FP", "Sphinx"]);
    for r in rows {
        for key in [
            "preprocessing_s",
            "online_s",
            "latency_s",
            "preprocessing_bytes",
            "online_bytes",
            "accuracy_plaintext",
        ] {
            let x = r[key].as_f64().unwrap_or_else(|| panic!("{key} in {r}"));
            assert!(x.is_finite() && x >= 0.0, "{key} = {x}");
        }
        assert!(r.get("accuracy_private").is_some());
        let acc = r["accuracy_plaintext"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&acc));
    }
    let sphinx = &rows[2];
    let num = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    // Online: 784 + 30 values up, 30 + 10 down at 37 bits, plus 4 envelopes.
    let online = num(sphinx, "online_bytes");
    let expected = ((814.0f64 * 37.0) / 8.0).ceil()
        + ((30.0f64 * 37.0) / 8.0).ceil()
        + ((10.0f64 * 37.0) / 8.0).ceil();
    assert!(
        online > expected && online < expected + 4.0 * 40.0,
        "{online}"
    );
    assert!(num(sphinx, "preprocessing_bytes") > 100.0 * online);
    assert!(num(sphinx, "online_s") < num(&rows[1], "online_s"));
    // A packed baseline answers one query no faster than its whole batch.
    assert!(num(&rows[1], "latency_s") >= num(&rows[1], "online_s"));
    // Exact arithmetic: the private path answers like the plaintext model.
    assert_eq!(
        num(sphinx, "accuracy_private"),
        num(sphinx, "accuracy_plaintext")
    );
    assert!(
        v["sphinx"]["max_logit_error_vs_plaintext"]
            .as_f64()
            .unwrap()
            < 0.05
    );
    assert!(rows[0]["accuracy_private"].is_null());
    assert!(num(&rows[0], "online_s") > num(&rows[2], "online_s"));
}
