//! `sphinx baseline train` end to end on the bundled MNIST sample (small subsets, so
//! each run takes well under a second).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn sphinx(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args(args)
        .output()
        .unwrap()
}

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

const SMALL: [&str; 10] = [
    "--model",
    "mlp-30",
    "--data",
    "bundled",
    "--train-subset",
    "2000",
    "--test-subset",
    "500",
    "--seed",
    "7",
];

#[test]
fn plaintext_run_reports_accuracy_and_writes_json_and_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let saved = dir.path().join("model");
    let mut args = vec![
        "baseline",
        "train",
        "--mode",
        "plaintext",
        "--epochs",
        "2",
        "--batch-size",
        "32",
    ];
    args.extend(SMALL);
    args.extend([
        "--lr",
        "0.1",
        "--momentum",
        "0.9",
        "--json",
        out.to_str().unwrap(),
        "--save",
        saved.to_str().unwrap(),
    ]);
    let o = sphinx(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("test accuracy:") && stdout.contains("wall time:"),
        "{stdout}"
    );
    let r = json(&out);
    for key in [
        "test_accuracy",
        "epsilon",
        "delta",
        "epochs",
        "steps",
        "seconds",
    ] {
        assert!(r.get(key).is_some(), "missing {key}");
    }
    assert!(r["test_accuracy"].as_f64().unwrap() > 0.8, "{r}");
    assert!(r["epsilon"].is_null() && r["delta"].is_null());
    assert_eq!(r["epochs"], 2);
    assert_eq!(r["steps"], 2 * 2000usize.div_ceil(32));
    let model = sphinx_nn::io::load_dir(&saved).unwrap();
    assert_eq!(model.num_params(), 23_860);
}

#[test]
fn dp_sgd_run_spends_at_most_the_target_epsilon() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dp.json");
    let mut args = vec![
        "baseline",
        "train",
        "--mode",
        "dp-sgd",
        "--epochs",
        "1",
        "--batch-size",
        "100",
    ];
    args.extend(SMALL);
    args.extend([
        "--lr",
        "0.5",
        "--epsilon",
        "2",
        "--delta",
        "1e-5",
        "--clip",
        "1",
        "--json",
        out.to_str().unwrap(),
    ]);
    let o = sphinx(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&out);
    let eps = r["epsilon"].as_f64().unwrap();
    assert!(eps <= 2.0 && eps > 1.9, "{r}");
    assert_eq!(r["delta"].as_f64(), Some(1e-5));
    assert_eq!(r["steps"], 20);
    assert!(r["noise_multiplier"].as_f64().unwrap() > 0.3);
    assert!(r["test_accuracy"].as_f64().unwrap() > 0.3, "{r}");

    // With σ given instead, ε is reported by the accountant.
    let mut args = vec![
        "baseline",
        "train",
        "--mode",
        "dp-sgd",
        "--epochs",
        "1",
        "--batch-size",
        "100",
    ];
    args.extend(SMALL);
    args.extend(["--noise-multiplier", "1.0", "--json", out.to_str().unwrap()]);
    let o = sphinx(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let eps = json(&out)["epsilon"].as_f64().unwrap();
    assert!(eps > 0.0 && eps.is_finite());
}

#[test]
fn bad_requests_fail_with_clear_messages() {
    let err = |args: &[&str]| {
        let o = sphinx(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(err(&["baseline", "train", "--model", "resnet"]).contains("unknown model preset"));
    assert!(
        err(&["baseline", "train", "--model", "mlp-30", "--mode", "dp-sgd"])
            .contains("--epsilon or --noise-multiplier")
    );
    assert!(
        err(&[
            "baseline",
            "train",
            "--model",
            "sphinx-cifar10-cnn",
            "--epochs",
            "0"
        ])
        .contains("expects 3×32×32")
    );
    let empty = tempfile::tempdir().unwrap();
    assert!(
        err(&[
            "baseline",
            "train",
            "--data",
            empty.path().to_str().unwrap()
        ])
        .contains("no dataset found")
    );
}

#[test]
fn scatternet_dp_run_on_a_validation_split_saves_the_whole_model() {
    // The fixed scattering front is computed once and the saved model still holds it;
    // --holdout evaluates on the last training examples, never on the test set.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let saved = dir.path().join("model");
    let o = sphinx(&[
        "baseline",
        "train",
        "--mode",
        "dp-sgd",
        "--model",
        "scatternet-linear",
        "--data",
        "bundled",
        "--train-subset",
        "400",
        "--holdout",
        "100",
        "--epochs",
        "2",
        "--batch-size",
        "100",
        "--lr",
        "1",
        "--momentum",
        "0.9",
        "--clip",
        "0.1",
        "--epsilon",
        "4",
        "--seed",
        "3",
        "--json",
        out.to_str().unwrap(),
        "--save",
        saved.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("validation accuracy:"), "{stdout}");
    assert!(stderr.contains("fixed features 3969×1×1"), "{stderr}");
    let r = json(&out);
    assert_eq!(r["evaluated_on"], "validation");
    assert_eq!(r["train_examples"], 300);
    assert_eq!(r["test_examples"], 100);
    assert!(r["epsilon"].as_f64().unwrap() <= 4.0 + 1e-9);
    // Far above chance (10%) after 6 noisy steps on 300 digits.
    assert!(r["test_accuracy"].as_f64().unwrap() > 0.3, "{r}");
    let model = sphinx_nn::io::load_dir(&saved).unwrap();
    assert_eq!(
        model.spec(),
        &sphinx_nn::presets::Preset::ScatternetLinear.spec()
    );
}
