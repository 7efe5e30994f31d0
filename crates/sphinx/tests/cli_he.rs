//! `sphinx params` and `sphinx bench ckks`, run as the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use serde_json::Value;

fn sphinx(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args(args)
        .output()
        .expect("run sphinx")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "{}\n{}",
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

fn bits(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn suggest_gives_seals_set_for_depth_two() {
    let v = json(&sphinx(&[
        "params",
        "suggest",
        "--depth",
        "2",
        "--scale-bits",
        "40",
        "--slots",
        "4096",
        "--json",
    ]));
    assert_eq!(v["log_n"], 13);
    assert_eq!(bits(&v["moduli_bits"]), [60, 40, 40, 60]);
    assert_eq!(v["scale_bits"], 40);
    assert_eq!(v["security"], 128);
    let p = v["precision_bits"].as_f64().unwrap();
    assert!(p > 10.0 && p < 40.0, "{p}");
}

#[test]
fn suggest_without_key_switching_drops_the_special_prime() {
    let args = [
        "params",
        "suggest",
        "--depth",
        "1",
        "--scale-bits",
        "30",
        "--slots",
        "2048",
        "--json",
    ];
    let with = json(&sphinx(&args));
    let without = json(&sphinx(&[&args[..], &["--no-key-switching"]].concat()));
    assert_eq!(without["p_bits"].as_array().unwrap().len(), 0);
    assert!(without["log_n"].as_u64().unwrap() <= with["log_n"].as_u64().unwrap());
    let moduli: Vec<String> = bits(&without["moduli_bits"])
        .iter()
        .map(u64::to_string)
        .collect();
    let log_n = without["log_n"].to_string();
    let check = sphinx(&[
        "params",
        "check",
        "--log-n",
        &log_n,
        "--moduli-bits",
        &moduli.join(","),
        "--special-primes",
        "0",
    ]);
    assert!(check.status.success(), "{}", stdout(&check));
}

#[test]
fn suggest_grows_the_ring_with_depth_and_security() {
    let deep = json(&sphinx(&[
        "params",
        "suggest",
        "--depth",
        "6",
        "--scale-bits",
        "40",
        "--json",
    ]));
    assert_eq!(deep["log_n"], 14);
    assert_eq!(
        bits(&deep["moduli_bits"]).len(),
        8,
        "q0, six 40-bit primes, one special"
    );
    let strong = json(&sphinx(&[
        "params",
        "suggest",
        "--depth",
        "2",
        "--scale-bits",
        "40",
        "--security",
        "256",
        "--json",
    ]));
    let total: u64 = bits(&strong["moduli_bits"]).iter().sum();
    // 256-bit security needs a larger ring for the same 200-bit modulus.
    assert!(strong["log_n"].as_u64().unwrap() > 13, "{strong}");
    assert_eq!(total, 200);
    let text = sphinx(&["params", "suggest", "--depth", "1", "--scale-bits", "30"]);
    assert!(text.status.success());
    assert!(stdout(&text).contains("moduli_bits"));
}

#[test]
fn check_accepts_secure_and_refuses_insecure_sets() {
    let ok = sphinx(&[
        "params",
        "check",
        "--log-n",
        "13",
        "--moduli-bits",
        "60,40,40,60",
    ]);
    assert!(ok.status.success(), "{}", stdout(&ok));
    assert!(stdout(&ok).contains("SECURE"));

    let bad = sphinx(&[
        "params",
        "check",
        "--log-n",
        "13",
        "--moduli-bits",
        "60,40,40,40,60",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let text = stdout(&bad);
    assert!(text.contains("240") && text.contains("218"), "{text}");

    let strict = sphinx(&[
        "params",
        "check",
        "--log-n",
        "13",
        "--moduli-bits",
        "60,40,40,60",
        "--security",
        "192",
    ]);
    assert_eq!(strict.status.code(), Some(1));

    let v = sphinx(&[
        "params",
        "check",
        "--log-n",
        "12",
        "--moduli-bits",
        "30,30,30,30",
        "--json",
    ]);
    assert!(!v.status.success());
    let v: Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v["secure"], false);
    assert!(v["reason"].as_str().unwrap().contains("bound"));

    // Not a security level, and no ciphertext prime left: usage errors, not verdicts.
    assert!(
        !sphinx(&[
            "params",
            "check",
            "--log-n",
            "13",
            "--moduli-bits",
            "60,60",
            "--security",
            "100"
        ])
        .status
        .success()
    );
    assert!(
        !sphinx(&["params", "check", "--log-n", "13", "--moduli-bits", "60"])
            .status
            .success()
    );
}

const OPS: [&str; 13] = [
    "encode",
    "encrypt_pk",
    "encrypt_sk",
    "decrypt_decode",
    "add",
    "mul_plain",
    "mul_scalar",
    "mul",
    "relinearize",
    "rescale",
    "mul_relin_rescale",
    "rotate",
    "ntt_forward",
];

#[test]
fn quick_bench_writes_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ours.json");
    let run = sphinx(&["bench", "ckks", "--quick", "--json", out.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout(&run).contains("| mul_relin_rescale |"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["log_n"], 13);
    assert_eq!(bits(&v["moduli_bits"]), [60, 40, 40, 60]);
    assert_eq!(v["threads"], 1);
    let ns = |k: &str| {
        v["ops_ns"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("ops_ns.{k}"))
    };
    for k in OPS {
        assert!(ns(k) > 0, "{k}");
        let p10 = v["ops_ns_p10"][k].as_u64().unwrap();
        assert!(
            p10 > 0 && p10 <= ns(k),
            "{k}: 10th percentile above the median"
        );
    }
    // Sanity of magnitudes, not performance claims: a product with relinearization and
    // rescaling does strictly more work than an addition or a bare product.
    assert!(ns("add") < ns("mul_relin_rescale"));
    assert!(ns("mul") < ns("mul_relin_rescale"));
    let bytes = |k: &str| v["ciphertext_bytes"][k].as_u64().unwrap();
    // Packed to 60+40+40 bits per coefficient, two polynomials (plus a small header).
    let fresh = 2 * 8192 * 140 / 8;
    assert!(bytes("fresh") >= fresh && bytes("fresh") < fresh + 64);
    assert!(
        bytes("seeded") * 2 < bytes("fresh") + 128,
        "seeded is about half"
    );
    assert!(bytes("level0") < bytes("seeded"));
    let key = |k: &str| {
        v["key_bytes"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("key_bytes.{k}"))
    };
    // Fresh keys travel seeded: per polynomial pair, `b` over all primes (200 bits per
    // coefficient) and a 32-byte seed for `a`; switching keys have one pair per
    // ciphertext prime.
    let seeded_pair = 8192 * 200 / 8 + 32;
    assert!(key("public_key") >= seeded_pair && key("public_key") < seeded_pair + 64);
    assert!(key("relin_key") >= 3 * seeded_pair && key("relin_key") < 3 * seeded_pair + 64);
    assert!(key("galois_key") >= key("relin_key"));

    // The same run compared with a peer file: ratios are ours / peer.
    let peer = dir.path().join("peer.json");
    let peer_ops: serde_json::Map<String, Value> = OPS
        .iter()
        .map(|k| (k.to_string(), Value::from(1_000_000u64)))
        .collect();
    let peer_json = serde_json::json!({
        "engine": "test peer", "log_n": 13, "moduli_bits": [60, 40, 40, 60], "scale_bits": 40,
        "ops_ns": peer_ops, "ciphertext_bytes": {"fresh": 300000, "seeded": 150000, "level0": 130000}
    });
    std::fs::write(&peer, peer_json.to_string()).unwrap();
    let run = sphinx(&[
        "bench",
        "ckks",
        "--reps",
        "2",
        "--peer",
        peer.to_str().unwrap(),
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout(&run).contains("ours / SEAL"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for k in OPS {
        let ratio = v["peer"]["time_ratio"][k].as_f64().unwrap();
        let ours = v["ops_ns"][k].as_u64().unwrap() as f64;
        assert!((ratio - ours / 1e6).abs() < 1e-9, "{k}");
    }
    let size_ratio = v["peer"]["size_ratio"]["fresh"].as_f64().unwrap();
    assert!(
        (size_ratio - v["ciphertext_bytes"]["fresh"].as_f64().unwrap() / 300000.0).abs() < 1e-9
    );

    // A peer measured on other parameters is refused before any timing.
    let wrong = serde_json::json!({
        "log_n": 14, "moduli_bits": [60, 40, 60], "scale_bits": 40, "ops_ns": {}, "ciphertext_bytes": {}
    });
    std::fs::write(&peer, wrong.to_string()).unwrap();
    let run = sphinx(&["bench", "ckks", "--quick", "--peer", peer.to_str().unwrap()]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("measured on"));
}

#[test]
fn bench_runs_on_a_two_thread_pool_in_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ours.json");
    let run = sphinx(&[
        "bench",
        "ckks",
        "--reps",
        "1",
        "--threads",
        "2",
        "--rounds",
        "2",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("2 thread(s)"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["rounds"], 2);
    assert_eq!(v["threads"], 2);
    assert_eq!(v["reps"]["add"], 2, "one timed run per round");
    assert_eq!(v["clock"], "wall");
    // The thread CPU clock times one thread only.
    assert!(
        !sphinx(&[
            "bench",
            "ckks",
            "--reps",
            "1",
            "--threads",
            "2",
            "--clock",
            "thread-cpu"
        ])
        .status
        .success()
    );
    let run = sphinx(&[
        "bench",
        "ckks",
        "--reps",
        "1",
        "--clock",
        "thread-cpu",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["clock"], "thread-cpu");
    assert!(
        v["ops_ns"]["mul_relin_rescale"].as_u64().unwrap() > v["ops_ns"]["add"].as_u64().unwrap()
    );
    // A peer timed with the wall clock cannot be compared with a thread-CPU run.
    let peer = dir.path().join("peer.json");
    let wall_peer = serde_json::json!({
        "log_n": 13, "moduli_bits": [60, 40, 40, 60], "scale_bits": 40, "ops_ns": {}, "ciphertext_bytes": {}
    });
    std::fs::write(&peer, wall_peer.to_string()).unwrap();
    let run = sphinx(&[
        "bench",
        "ckks",
        "--quick",
        "--clock",
        "thread-cpu",
        "--peer",
        peer.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("clock"));
    assert!(
        !sphinx(&["bench", "ckks", "--threads", "0"])
            .status
            .success()
    );
    assert!(!sphinx(&["bench", "ckks", "--log-n", "12"]).status.success());
}
