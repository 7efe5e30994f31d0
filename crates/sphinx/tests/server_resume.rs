//! `sphinx server` killed with SIGKILL in the middle of a step, restarted on the same data
//! directory: the client resumes from the last committed step and reaches the model of an
//! uninterrupted run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_dp::{
    ClipNorm, Delta, DpSgdAggregator, DpSgdConfig, Epsilon, NoiseMultiplier, PrivacyBudget,
    SampleRate,
};
use sphinx_he::Parameters;
use sphinx_nn::data::Dataset;
use sphinx_nn::layers::{LayerSpec, Shape};
use sphinx_nn::model::{Model, ModelSpec};
use sphinx_protocol::client::{Client, ClientConfig};
use sphinx_protocol::messages::ClientMessage;
use sphinx_protocol::session::Session;
use sphinx_protocol::wire::{AccountName, Token};
use sphinx_server::testing::Connection;

const STEPS: u64 = 4;

/// A 4 → 3 → 3 MLP on 24 samples, fixed seeds.
fn client() -> (Client, ClientMessage, std::sync::Arc<Parameters>) {
    let spec = ModelSpec {
        input: Shape::flat(4),
        layers: vec![
            LayerSpec::Linear {
                in_features: 4,
                out_features: 3,
            },
            LayerSpec::Relu,
            LayerSpec::Linear {
                in_features: 3,
                out_features: 3,
            },
        ],
    };
    let images = ndarray::Array2::from_shape_fn((24, 4), |(i, j)| ((i * 7 + j) % 5) as f32 / 4.0);
    let data = Dataset {
        images,
        labels: (0..24).map(|i| (i % 3) as u8).collect(),
        shape: Shape::flat(4),
        num_classes: 3,
    };
    let dp = DpSgdConfig {
        clip_norm: ClipNorm::new(1.0).unwrap(),
        noise_multiplier: NoiseMultiplier::new(1.0).unwrap(),
        sample_rate: SampleRate::new(0.25).unwrap(),
        dataset_size: 24,
    };
    let config = ClientConfig {
        learning_rate: 0.2,
        init_seed: 3,
        bias_init: 0.01,
        weight_average: 0.0,
        budget: PrivacyBudget {
            epsilon: Epsilon::new(50.0).unwrap(),
            delta: Delta::new(1e-5).unwrap(),
        },
    };
    let params = sphinx_protocol::params::build_training_parameters().unwrap();
    let (client, setup) = Client::new(
        params.clone(),
        spec,
        data,
        DpSgdAggregator::seeded(21, dp, 77).unwrap(),
        config,
        ChaCha20Rng::seed_from_u64(78),
    )
    .unwrap();
    (client, setup, params)
}

fn sphinx(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Starts `sphinx server` on a free port; returns it with its address and fingerprint.
fn start(dir: &Path) -> (Child, SocketAddr, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut addr, mut fingerprint) = (None, None);
    while fingerprint.is_none() {
        let line = lines.next().expect("server output").unwrap();
        if let Some(a) = line.strip_prefix("sphinx server listening on ") {
            addr = Some(a.parse().unwrap());
        }
        if let Some(f) = line.strip_prefix("certificate fingerprint (sha256): ") {
            fingerprint = Some(f.to_owned());
        }
    }
    // Keep draining so the server never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr.unwrap(), fingerprint.unwrap())
}

fn max_diff(a: &Model, b: &Model) -> f32 {
    let mut d = 0f32;
    for (x, y) in a.layers().iter().zip(b.layers()) {
        if let (Some(p), Some(q)) = (x.as_param(), y.as_param()) {
            for (u, v) in p
                .weight()
                .iter()
                .zip(q.weight())
                .chain(p.bias().iter().zip(q.bias()))
            {
                d = d.max((u - v).abs());
            }
        }
    }
    d
}

#[test]
fn killed_server_resumes_from_the_last_committed_step() {
    let (reference, setup, _) = client();
    let mut session = Session::new(reference, setup, &mut ChaCha20Rng::seed_from_u64(1)).unwrap();
    for _ in 0..STEPS {
        session.run_step().unwrap();
    }
    let uninterrupted = session.export_model().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = sphinx(&[
        "server",
        "add-account",
        "alice",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let token = Token::from_hex(out.lines().last().unwrap()).unwrap();
    let alice = AccountName::new("alice").unwrap();

    let (mut server, addr, fingerprint) = start(&data);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = std::fs::metadata(data.join("tls/key.pem")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
    }
    let (mut client, setup, params) = client();
    let mut conn = Connection::connect(addr, &fingerprint).unwrap();
    conn.auth(&alice, &token).unwrap();
    let model = conn.create_model(&setup, &params).unwrap();
    for _ in 0..2 {
        conn.train_step(model, &mut client, &params).unwrap();
    }
    // Step 2 up to its per-sample gradients (the server has updated [b] in memory), then
    // SIGKILL before the noisy gradient arrives.
    let mark = client.mark();
    assert_eq!(
        conn.train_requests(model, &mut client, &params, 3).unwrap(),
        2
    );
    server.kill().unwrap();
    server.wait().unwrap();
    drop(conn);

    let (mut server, addr, again) = start(&data);
    assert_eq!(
        again, fingerprint,
        "the certificate persists across restarts"
    );
    let mut conn = Connection::connect(addr, &fingerprint).unwrap();
    conn.auth(&alice, &token).unwrap();
    let committed = conn.committed_step(model).unwrap();
    assert_eq!(committed, 2);
    client.rewind(mark);
    while client.step() < STEPS {
        conn.train_step(model, &mut client, &params).unwrap();
    }
    assert_eq!(conn.committed_step(model).unwrap(), STEPS);
    let resumed = conn.export(model, &client, &params).unwrap();
    // Same batches and noise; only the rounding differs (the servers' encryption
    // randomness), which the compact results make ≈ 10⁻⁴ per value. A different batch or
    // noise draw would move entries by ≈ lr·σC/(qN) ≈ 0.03.
    let d = max_diff(&uninterrupted, &resumed);
    assert!(d < 1e-3, "max |Δ| = {d}");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn account_commands_manage_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = data.to_str().unwrap();
    let first = sphinx(&["server", "add-account", "bob", "--data-dir", d]);
    let token = first.lines().last().unwrap().to_owned();
    assert_eq!(token.len(), 64);
    let again = Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args(["server", "add-account", "bob", "--data-dir", d])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    let rotated = sphinx(&["server", "rotate-token", "bob", "--data-dir", d]);
    assert_ne!(rotated.lines().last().unwrap(), token);
    assert!(sphinx(&["server", "accounts", "--data-dir", d]).contains("| bob | 0 | 0 |"));
    sphinx(&["server", "remove-account", "bob", "--data-dir", d]);
    assert!(!sphinx(&["server", "accounts", "--data-dir", d]).contains("bob"));
    let bad = Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args(["server", "add-account", "no spaces", "--data-dir", d])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let no_dir = Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args(["server", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!no_dir.status.success());
    assert!(String::from_utf8_lossy(&no_dir.stderr).contains("--data-dir"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
