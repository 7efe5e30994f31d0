//! One private training step in process (`Session`) against the same step as users run
//! it: `sphinx client`'s [`RemoteTrainer`] over loopback TLS to `sphinx-server` (frames, TLS,
//! the server's SQLite commit and the client's progress file included). mlp-30 on the
//! bundled MNIST sample at expected batch 64 (the configuration of `sphinx bench train` in
//! docs/benchmarks.md) unless `NETWORK_STEP_MODEL` and `NETWORK_STEP_BATCH` say otherwise
//! (e.g. the demo's `crop-pool-mlp-40` at 512). Both clients are built from the same record
//! and seeds, so they draw the same batches.
//!
//! Each is measured twice: wall time, and CPU time of the whole process (client, server and
//! TLS all run in it), which is less disturbed by other load on a shared machine and counts
//! the extra work of the network path (serialization, TLS, storage).
//!
//! `cargo bench -p sphinx --bench network_step`
//!
//! With `NETWORK_STEP_PAIRS=n` in the environment it runs instead `n` pairs of steps, one
//! in process and one over TLS, alternating which goes first, and prints each step's CPU
//! and wall time and their medians: both paths then see the same load on a shared machine,
//! which the two criterion groups (run minutes apart) do not.
//!
//! `NETWORK_STEP_PAIRS=16 cargo bench -p sphinx --bench network_step`
//!
//! With `NETWORK_STEP_PROCESSES=r` it runs `r` rounds of two child processes instead, one
//! taking only in-process steps and one only networked steps (`NETWORK_STEP_PAIRS` steps
//! each, default 12), and prints each process's mean step and the median of the rounds'
//! ratios: each path's steady state, as a training run sees it.
//!
//! `NETWORK_STEP_PROCESSES=8 cargo bench -p sphinx --bench network_step`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_client::connection::Connection;
use sphinx_client::remote::{RemoteTrainer, build_client};
use sphinx_client::store::{ClientDir, ModelRecord, ModelSecrets, Profile};
use sphinx_nn::data::{Dataset, bundled_mnist_sample};
use sphinx_protocol::session::Session;
use sphinx_protocol::wire::AccountName;
use sphinx_server::{Registration, ServerConfig, ServerHandle};

/// The model and expected batch: mlp-30 at 64 unless `NETWORK_STEP_MODEL` and
/// `NETWORK_STEP_BATCH` say otherwise.
fn workload() -> (String, usize) {
    let model = std::env::var("NETWORK_STEP_MODEL").unwrap_or_else(|_| "mlp-30".into());
    let batch = std::env::var("NETWORK_STEP_BATCH").map_or(64, |b| b.parse().unwrap());
    (model, batch)
}

/// The record `sphinx client train` would store for the workload (σ fixed at 1, and a
/// budget the run cannot reach: timing only), with its training data.
fn record() -> (ModelRecord, Dataset) {
    let (model, batch) = workload();
    let train = bundled_mnist_sample().unwrap().train;
    let n = train.len();
    let record = ModelRecord {
        name: "bench".into(),
        server_model: 0,
        preset: model,
        data: "bundled".into(),
        train_examples: n,
        data_digest: sphinx_client::data::digest(&train),
        standardize: None,
        batch_size: batch,
        total_steps: 1 << 20,
        learning_rate: 0.1,
        clip: 1.0,
        epsilon: 1e6,
        delta: 1e-5,
        noise_multiplier: 1.0,
        sample_rate: batch as f64 / n as f64,
        init_seed: 1,
        bias_init: 0.01,
        weight_average: 0.0,
    };
    (record, train)
}

fn secrets() -> ModelSecrets {
    ModelSecrets::from_test_seed(1)
}

fn in_process() -> Session {
    let (record, train) = record();
    let (client, setup, _) = build_client(&record, &secrets(), train).unwrap();
    Session::new(client, setup, &mut ChaCha20Rng::seed_from_u64(2)).unwrap()
}

/// A server on loopback TLS in this process and the real client's trainer against it,
/// each with its own directory.
struct Networked {
    _dir: tempfile::TempDir,
    server: ServerHandle,
    trainer: Option<RemoteTrainer>,
}

impl Networked {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("server"));
        config.registration = Registration::Open;
        let server = ServerHandle::spawn(config).unwrap();
        let addr = server.addr().to_string();
        let mut conn = Connection::connect(&addr, server.fingerprint()).unwrap();
        let account = AccountName::new("bench").unwrap();
        let token = conn.register(&account).unwrap();
        let profile = Profile {
            server: addr,
            fingerprint: server.fingerprint().to_owned(),
            account: account.as_str().to_owned(),
        };
        let client_dir = ClientDir::create(&dir.path().join("client"), &profile, &token).unwrap();
        let (record, train) = record();
        let trainer = RemoteTrainer::create(client_dir, conn, record, &secrets(), train).unwrap();
        Self {
            _dir: dir,
            server,
            trainer: Some(trainer),
        }
    }

    fn step(&mut self) {
        self.trainer.as_mut().unwrap().step_once().unwrap();
    }

    fn stop(mut self) {
        drop(self.trainer.take());
        self.server.shutdown().unwrap();
    }
}

/// CPU time of this process (all threads) so far.
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Criterion's `iter_custom` body: `iters` runs of `f`, timed by wall clock or CPU clock.
fn timed(iters: u64, cpu: bool, mut f: impl FnMut()) -> Duration {
    let (wall, cpu0) = (Instant::now(), process_cpu());
    for _ in 0..iters {
        f();
    }
    if cpu {
        process_cpu() - cpu0
    } else {
        wall.elapsed()
    }
}

fn bench(c: &mut Criterion) {
    let (model, batch) = workload();
    let mut group = c.benchmark_group(format!("training_step_{model}_batch{batch}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(20));

    let mut session = in_process();
    for (name, cpu) in [("in_process", false), ("in_process_cpu", true)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed(iters, cpu, || {
                    session.run_step().unwrap();
                })
            })
        });
    }
    drop(session);

    let mut net = Networked::start();
    for (name, cpu) in [("loopback_tls", false), ("loopback_tls_cpu", true)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| timed(iters, cpu, || net.step()))
        });
    }
    group.finish();
    net.stop();
}

/// The step's CPU time and wall time, in seconds.
fn cost_of(f: impl FnOnce()) -> (f64, f64) {
    let (t0, w0) = (process_cpu(), Instant::now());
    f();
    (
        (process_cpu() - t0).as_secs_f64(),
        w0.elapsed().as_secs_f64(),
    )
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn paired(pairs: usize) {
    let (model, batch) = workload();
    println!("{model}, expected batch {batch}");
    let mut session = in_process();
    let mut net = Networked::start();
    let mut local = || {
        cost_of(|| {
            session.run_step().unwrap();
        })
    };
    let mut remote = || cost_of(|| net.step());
    // Warm-up: first allocations, page faults, lazily built tables.
    local();
    remote();
    // [CPU, wall] of each path.
    let (mut l, mut r) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    // `NETWORK_STEP_ONLY=in_process` or `=tls` runs only that path (profiling, and the
    // separate-process mode below).
    let only = std::env::var("NETWORK_STEP_ONLY").ok();
    if let Some(only) = only.as_deref() {
        for i in 0..pairs {
            let (cpu, wall) = if only == "tls" { remote() } else { local() };
            println!("{only} step {i}: {cpu:.3} s CPU {wall:.3} s wall");
        }
        net.stop();
        return;
    }
    for i in 0..pairs {
        let (a, b) = if i % 2 == 0 {
            let a = local();
            (a, remote())
        } else {
            let b = remote();
            (local(), b)
        };
        println!(
            "pair {i}: in process {:.3} s CPU {:.3} s wall, loopback TLS {:.3} s CPU {:.3} s wall",
            a.0, a.1, b.0, b.1
        );
        for (k, (x, y)) in [(a.0, b.0), (a.1, b.1)].into_iter().enumerate() {
            l[k].push(x);
            r[k].push(y);
        }
    }
    for (k, clock) in ["CPU", "wall"].into_iter().enumerate() {
        let (ml, mr) = (median(&l[k]), median(&r[k]));
        let ratios: Vec<f64> = r[k].iter().zip(&l[k]).map(|(b, a)| b / a - 1.0).collect();
        println!(
            "median of {pairs} pairs, {clock}: in process {ml:.3} s, loopback TLS {mr:.3} s, \
             overhead {:+.3} s ({:+.1} %; median of the pairs' ratios {:+.1} %)",
            mr - ml,
            100.0 * (mr / ml - 1.0),
            100.0 * median(&ratios)
        );
    }
    net.stop();
}

/// Mean CPU and wall seconds per step of one child process running only `path`.
fn child_means(path: &str, steps: usize) -> (f64, f64) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("NETWORK_STEP_ONLY", path)
        .env("NETWORK_STEP_PAIRS", steps.to_string())
        .env_remove("NETWORK_STEP_PROCESSES")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        // "<path> step <i>: <cpu> s CPU <wall> s wall"
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [p, "step", _, c, "s", "CPU", w, "s", "wall"] = words.as_slice() {
            assert_eq!(*p, path);
            cpu.push(c.parse::<f64>().unwrap());
            wall.push(w.parse::<f64>().unwrap());
        }
    }
    assert_eq!(cpu.len(), steps);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    (mean(&cpu), mean(&wall))
}

/// `rounds` rounds of two child processes, one running only in-process steps and one only
/// networked steps (`steps` each, the same batches), alternating which goes first: the
/// steady state of each path, as a training run sees it, with neither path's leftovers
/// (freed buffers, the other role's threads) landing in the other's steps. Machine-wide
/// slowdowns that last minutes shift whole processes, so the summary is the median of the
/// rounds' ratios.
fn separate_processes(rounds: usize, steps: usize) {
    let (model, batch) = workload();
    println!("{model}, expected batch {batch}: {rounds} rounds of {steps} steps per process");
    let mut ratios = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let (local, remote) = if round % 2 == 0 {
            let l = child_means("in_process", steps);
            (l, child_means("tls", steps))
        } else {
            let r = child_means("tls", steps);
            (child_means("in_process", steps), r)
        };
        println!(
            "round {round}: in process {:.3} s CPU {:.3} s wall, loopback TLS {:.3} s CPU {:.3} s wall ({:+.1} % CPU, {:+.1} % wall)",
            local.0,
            local.1,
            remote.0,
            remote.1,
            100.0 * (remote.0 / local.0 - 1.0),
            100.0 * (remote.1 / local.1 - 1.0)
        );
        ratios[0].push(remote.0 / local.0 - 1.0);
        ratios[1].push(remote.1 / local.1 - 1.0);
    }
    for (k, clock) in ["CPU", "wall"].into_iter().enumerate() {
        let mut sorted = ratios[k].clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "{clock} overhead: median of {rounds} rounds {:+.1} %, range {:+.1} to {:+.1} %",
            100.0 * median(&ratios[k]),
            100.0 * sorted[0],
            100.0 * sorted[sorted.len() - 1]
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    let var = |name| std::env::var(name).ok().and_then(|v| v.parse().ok());
    if let Some(rounds) = var("NETWORK_STEP_PROCESSES") {
        separate_processes(rounds, var("NETWORK_STEP_PAIRS").unwrap_or(12));
        return;
    }
    if let Some(pairs) = var("NETWORK_STEP_PAIRS") {
        paired(pairs);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
