//! `sphinx client` against a real `sphinx server` child process over loopback TLS:
//! init with a pinned certificate, train a few steps, resume, budget, export, private
//! inference (`infer`, `eval`), budget refusal, a wrong pin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

fn sphinx(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env_remove("SPHINX_TOKEN")
        .env_remove("SPHINX_CLIENT_DIR")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sphinx server` on a free port; returns it with its address and fingerprint.
fn start(data: &Path) -> (Server, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut addr, mut fingerprint) = (None, None);
    while fingerprint.is_none() {
        let line = lines.next().expect("server output").unwrap();
        if let Some(a) = line.strip_prefix("sphinx server listening on ") {
            addr = Some(a.to_owned());
        }
        if let Some(f) = line.strip_prefix("certificate fingerprint (sha256): ") {
            fingerprint = Some(f.to_owned());
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    (Server(child), addr.unwrap(), fingerprint.unwrap())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

const TRAIN: &[&str] = &[
    "client",
    "train",
    "--name",
    "m",
    "--train-subset",
    "256",
    "--batch-size",
    "64",
    "--epochs",
    "2",
    "--insecure-seed",
    "5",
];

#[test]
fn init_train_resume_budget_export_and_refusal_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let out = Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args(["server", "add-account", "alice", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap()
        .to_owned();
    let (_server, addr, fp) = start(&data);
    let dir = tmp.path().join("client");

    // A wrong pin: the handshake fails and nothing is written.
    let wrong = "00".repeat(32);
    let o = sphinx(
        &[
            "client",
            "init",
            "--server",
            &addr,
            "--fingerprint",
            &wrong,
            "--account",
            "alice",
            "--token",
            &token,
        ],
        &dir,
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("pinned fingerprint"), "{}", text(&o));
    assert!(!dir.join("config.json").exists());

    let o = sphinx(
        &[
            "client",
            "init",
            "--server",
            &addr,
            "--fingerprint",
            &fp,
            "--account",
            "alice",
            "--token",
            &token,
        ],
        &dir,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(mode(&dir.join("token")), 0o600);
    assert_eq!(mode(&dir), 0o700);

    // Two steps, then one more: the second run resumes.
    let mut args = TRAIN.to_vec();
    args.extend(["--steps", "2"]);
    let o = sphinx(&args, &dir);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(mode(&dir.join("models/m/secret.key")), 0o600);
    let mut args = TRAIN.to_vec();
    args.extend(["--steps", "1"]);
    let o = sphinx(&args, &dir);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("step 2/8"), "{}", text(&o));

    let o = sphinx(&["client", "budget", "--name", "m", "--json"], &dir);
    assert!(o.status.success(), "{}", text(&o));
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["steps"], 3);
    assert_eq!(b["planned_steps"], 8);
    let spent = b["epsilon_spent"].as_f64().unwrap();
    assert!(spent > 0.0 && spent < 8.0, "{b}");
    assert!(b["steps_left"].as_u64().unwrap() >= 5, "{b}");

    let export = tmp.path().join("export");
    let o = sphinx(
        &[
            "client",
            "export",
            "--name",
            "m",
            "--out",
            export.to_str().unwrap(),
        ],
        &dir,
    );
    assert!(o.status.success(), "{}", text(&o));
    let model = sphinx_nn::io::load_dir(&export).unwrap();
    assert_eq!(model.num_params(), 4450, "the default crop-pool-mlp-40");
    assert!(
        model
            .param_layers()
            .all(|p| p.bias().iter().all(|b| b.is_finite()))
    );
    assert!(export.join("preprocessing.json").is_file());

    // Private inference over the connection: one held-out example, then a small set.
    let o = sphinx(
        &["client", "infer", "--name", "m", "--index", "0", "--json"],
        &dir,
    );
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["class"].as_u64().unwrap() < 10, "{r}");
    let p: Vec<f64> = r["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(p.len(), 10);
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-3, "{r}");
    let o = sphinx(
        &["client", "eval", "--name", "m", "--limit", "20", "--json"],
        &dir,
    );
    assert!(o.status.success(), "{}", text(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let acc = e["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{e}");
    assert_eq!(e["queries"], 20);
    let confusion = e["confusion"].as_array().unwrap();
    assert_eq!(confusion.len(), 10);
    let cells: Vec<u64> = confusion
        .iter()
        .flat_map(|row| {
            let row = row.as_array().unwrap();
            assert_eq!(row.len(), 10);
            row.iter().map(|v| v.as_u64().unwrap()).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(cells.iter().sum::<u64>(), 20);
    let diagonal: u64 = (0..10).map(|i| cells[i * 11]).sum();
    assert!((acc - diagonal as f64 / 20.0).abs() < 1e-9, "{e}");
    assert!(e["online_latency_ms"].as_f64().unwrap() > 0.0, "{e}");

    // Clear refusals, before anything is sent.
    let o = sphinx(
        &["client", "infer", "--name", "m", "--index", "99999"],
        &dir,
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("out of range"), "{}", text(&o));
    let pgm = tmp.path().join("wide.pgm");
    std::fs::write(&pgm, [b"P5 30 20 255\n".as_slice(), &[0u8; 600]].concat()).unwrap();
    let o = sphinx(
        &["client", "infer", "--name", "m", pgm.to_str().unwrap()],
        &dir,
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("cannot be scaled"), "{}", text(&o));
    let o = sphinx(&["client", "eval", "--name", "nope", "--limit", "5"], &dir);
    assert!(!o.status.success());
    assert!(text(&o).contains("train one first"), "{}", text(&o));

    // A budget that one step would exceed: refused before anything is sent.
    let o = sphinx(
        &[
            "client",
            "train",
            "--name",
            "tight",
            "--train-subset",
            "256",
            "--batch-size",
            "64",
            "--epsilon",
            "0.5",
            "--noise-multiplier",
            "0.3",
            "--insecure-seed",
            "6",
        ],
        &dir,
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("would exceed"), "{}", text(&o));
    let o = sphinx(&["client", "budget", "--name", "tight", "--json"], &dir);
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["steps"], 0);
    assert_eq!(b["epsilon_spent"], 0.0);
}

/// `sphinx client train` killed with SIGKILL in the middle of training, then run again:
/// it resumes and ends with the weights of an uninterrupted run with the same seed.
#[test]
fn a_killed_client_resumes_to_the_uninterrupted_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let mut tokens = Vec::new();
    for name in ["a", "b"] {
        let out = Command::new(env!("CARGO_BIN_EXE_sphinx"))
            .args(["server", "add-account", name, "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        let token = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find(|l| l.len() == 64)
            .unwrap()
            .to_owned();
        tokens.push(token);
    }
    let (_server, addr, fp) = start(&data);
    let dirs = [tmp.path().join("ca"), tmp.path().join("cb")];
    for ((dir, name), token) in dirs.iter().zip(["a", "b"]).zip(&tokens) {
        let o = sphinx(
            &[
                "client",
                "init",
                "--server",
                &addr,
                "--fingerprint",
                &fp,
                "--account",
                name,
                "--token",
                token,
            ],
            dir,
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    let mut args = TRAIN.to_vec();
    args.extend(["--steps", "4"]);

    // Uninterrupted.
    let o = sphinx(&args, &dirs[0]);
    assert!(o.status.success(), "{}", text(&o));

    // Killed once at least one step has been committed, then resumed.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args(&args)
        .arg("--dir")
        .arg(&dirs[1])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = dirs[1].join("models/m/state.json");
    let started = std::time::Instant::now();
    loop {
        let steps = std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["committed"]["step"].as_u64())
            .unwrap_or(0);
        if steps >= 1 || started.elapsed().as_secs() > 120 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = |dir: &Path| {
        let o = sphinx(&["client", "budget", "--name", "m", "--json"], dir);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["steps"].as_u64().unwrap()
    };
    let killed_at = done(&dirs[1]);
    assert!(
        (1..4).contains(&killed_at),
        "killed after {killed_at} steps"
    );
    let mut rest = TRAIN.to_vec();
    let left = (4 - killed_at).to_string();
    rest.extend(["--steps", &left]);
    let o = sphinx(&rest, &dirs[1]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(done(&dirs[1]), 4);

    let export = |dir: &Path, out: &str| {
        let path = tmp.path().join(out);
        let o = sphinx(
            &[
                "client",
                "export",
                "--name",
                "m",
                "--out",
                path.to_str().unwrap(),
            ],
            dir,
        );
        assert!(o.status.success(), "{}", text(&o));
        sphinx_nn::io::load_dir(&path).unwrap()
    };
    // The two servers encrypted with different randomness, so each value carries different
    // CKKS and compact-switch rounding (≈ 10⁻⁴): a pre-activation that close to 0 may take
    // the other ReLU derivative in one run, which moves that sample's gradient (at most
    // lr·C/(qN) per entry and step) in one unit's row and the biases. A different batch or
    // noise draw after the resume would instead move every entry by ≈ lr·σC/(qN) ≈ 0.1.
    let (a, b) = (export(&dirs[0], "ea"), export(&dirs[1], "eb"));
    let (mut total, mut off) = (0usize, 0usize);
    for (la, lb) in a.param_layers().zip(b.param_layers()) {
        let pairs = la
            .weight()
            .iter()
            .zip(lb.weight())
            .chain(la.bias().iter().zip(lb.bias()));
        for (x, y) in pairs {
            total += 1;
            if (x - y).abs() > 1e-3 {
                off += 1;
            }
        }
    }
    assert!(
        off * 100 <= total,
        "resumed model: {off} of {total} entries differ by more than 1e-3"
    );
}
