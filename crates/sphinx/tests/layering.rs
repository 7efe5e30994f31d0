//! The workspace's crates form layers (DESIGN.md §4) and imports point down only.
//! This test reads `cargo metadata` and fails if any crate of ours depends on a
//! crate of ours that its layer may not know about.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// For each crate of ours, the crates of ours it may depend on (normal, dev or build).
fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let rules: &[(&str, &[&str])] = &[
        ("sphinx-math", &[]),
        ("sphinx-he", &["sphinx-math"]),
        ("sphinx-dp", &[]),
        ("sphinx-nn", &["sphinx-dp"]),
        (
            "sphinx-protocol",
            &["sphinx-math", "sphinx-he", "sphinx-dp", "sphinx-nn"],
        ),
        (
            "sphinx-server",
            &[
                "sphinx-math",
                "sphinx-he",
                "sphinx-dp",
                "sphinx-nn",
                "sphinx-protocol",
            ],
        ),
        (
            "sphinx-client",
            &[
                "sphinx-math",
                "sphinx-he",
                "sphinx-dp",
                "sphinx-nn",
                "sphinx-protocol",
            ],
        ),
        (
            "sphinx",
            &[
                "sphinx-math",
                "sphinx-he",
                "sphinx-dp",
                "sphinx-nn",
                "sphinx-protocol",
                "sphinx-server",
                "sphinx-client",
            ],
        ),
    ];
    rules
        .iter()
        .map(|(name, deps)| (*name, deps.iter().copied().collect()))
        .collect()
}

#[test]
fn workspace_dependencies_point_down_only() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata failed: {output:?}");
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    let rules = allowed();
    let packages = meta["packages"].as_array().expect("packages array");
    let ours: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    assert!(ours.contains("sphinx-math") && ours.contains("sphinx-he"));
    let mut violations = Vec::new();
    for package in packages {
        let name = package["name"].as_str().expect("package name");
        let Some(may) = rules.get(name) else {
            violations.push(format!(
                "{name} is not placed in a layer; add it to allowed()"
            ));
            continue;
        };
        for dep in package["dependencies"].as_array().expect("dependencies") {
            let dep_name = dep["name"].as_str().expect("dependency name");
            if ours.contains(dep_name) && !may.contains(dep_name) {
                violations.push(format!("{name} must not depend on {dep_name}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations: {violations:#?}"
    );
}

#[test]
fn the_rule_table_rejects_an_upward_import() {
    // Guard against a table that allows everything.
    let rules = allowed();
    assert!(!rules["sphinx-math"].contains("sphinx-he"));
    assert!(!rules["sphinx-he"].contains("sphinx-nn"));
    assert!(!rules["sphinx-dp"].contains("sphinx-he"));
    assert!(!rules["sphinx-protocol"].contains("sphinx-server"));
}
