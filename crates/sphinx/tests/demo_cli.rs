//! `sphinx demo` with a tiny configuration: the JSON keys and the report files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn demo_writes_json_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let json = tmp.path().join("demo.json");
    let out = Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args([
            "demo",
            "--train-subset",
            "512",
            "--test-subset",
            "40",
            "--batch-size",
            "64",
            "--steps",
            "2",
            "--insecure-seed",
            "3",
            "--report",
        ])
        .arg(&report)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("held-out accuracy (private inference)"),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for key in [
        "test_accuracy",
        "epsilon",
        "delta",
        "train_seconds",
        "bytes_up",
        "bytes_down",
        "online_latency_ms",
    ] {
        assert!(v[key].is_number(), "{key} missing in {v}");
    }
    let acc = v["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    let eps = v["epsilon"].as_f64().unwrap();
    assert!(eps > 0.0 && eps <= 8.0, "{v}");
    assert_eq!(v["delta"].as_f64().unwrap(), 1e-5);
    assert!(v["bytes_up"].as_u64().unwrap() > 0 && v["bytes_down"].as_u64().unwrap() > 0);
    for png in [
        "training_loss_accuracy.png",
        "training_epsilon.png",
        "confusion_matrix.png",
    ] {
        let bytes = std::fs::read(report.join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{png}");
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 2);
    assert_eq!(summary["test_examples"], 40);
    // The default exports the server's moving average of W (docs/protocol.md).
    let decay = summary["weight_average"].as_f64().unwrap();
    assert!((decay - 0.9).abs() < 1e-6, "{summary}");
    assert!(report.join("model/model.safetensors").is_file());
    // The default model crops a 4-pixel border first: inputs are standardized with the
    // statistics of the 20×20 pixels it reads, not of the background frame as well.
    let pre: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("model/preprocessing.json")).unwrap())
            .unwrap();
    let train = sphinx_nn::data::bundled_mnist_sample()
        .unwrap()
        .train
        .head(512);
    let inner: Vec<f64> = train
        .images
        .rows()
        .into_iter()
        .flat_map(|r| {
            (4..24)
                .flat_map(|y| (4..24).map(move |x| y * 28 + x))
                .map(|j| f64::from(r[j]))
                .collect::<Vec<_>>()
        })
        .collect();
    let mean = inner.iter().sum::<f64>() / inner.len() as f64;
    let std = (inner.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / inner.len() as f64).sqrt();
    let got = [
        pre["standardize"][0].as_f64().unwrap(),
        pre["standardize"][1].as_f64().unwrap(),
    ];
    assert!(
        (got[0] - mean).abs() < 1e-4 && (got[1] - std).abs() < 1e-4,
        "{pre} against mean {mean} and deviation {std} of the cropped pixels"
    );
}
