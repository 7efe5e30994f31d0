//! One private training step in process (`Session`) against the same step over loopback
//! TLS through `sphinx-server` (frames, TLS, SQLite commit included): mlp-30 on the bundled
//! MNIST sample, expected batch 64, the configuration of `sphinx bench train` in
//! docs/benchmarks.md.
//!
//! Each is measured twice: wall time, and CPU time of the whole process (client, server and
//! TLS all run in it), which is less disturbed by other load on a shared machine and counts
//! the extra work of the network path (serialization, TLS, storage).
//!
//! `cargo bench -p sphinx-server --bench network_step`
//!
//! With `NETWORK_STEP_PAIRS=n` in the environment it runs instead `n` pairs of steps, one
//! in process and one over TLS, alternating which goes first, and prints each step's CPU
//! and wall time and their medians: both paths then see the same load on a shared machine, which the
//! two criterion groups (run minutes apart) do not.
//!
//! `NETWORK_STEP_PAIRS=8 cargo bench -p sphinx-server --bench network_step`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_dp::{
    ClipNorm, Delta, DpSgdAggregator, DpSgdConfig, Epsilon, NoiseMultiplier, PrivacyBudget,
    SampleRate,
};
use sphinx_nn::data::bundled_mnist_sample;
use sphinx_nn::model::Model;
use sphinx_nn::presets::Preset;
use sphinx_protocol::client::{Client, ClientConfig};
use sphinx_protocol::messages::ClientMessage;
use sphinx_protocol::session::Session;
use sphinx_protocol::wire::AccountName;
use sphinx_server::testing::Connection;
use sphinx_server::{ServerConfig, ServerHandle};

/// The model and expected batch: mlp-30 at 64 unless `NETWORK_STEP_MODEL` and
/// `NETWORK_STEP_BATCH` say otherwise (e.g. the demo's `crop-pool-mlp-40` at 512).
fn workload() -> (String, f64) {
    let model = std::env::var("NETWORK_STEP_MODEL").unwrap_or_else(|_| "mlp-30".into());
    let batch = std::env::var("NETWORK_STEP_BATCH").map_or(64.0, |b| b.parse().unwrap());
    (model, batch)
}

fn client(seed: u64) -> (Client, ClientMessage) {
    let (model, batch) = workload();
    let spec = model.parse::<Preset>().unwrap().spec();
    let train = bundled_mnist_sample().unwrap().train;
    let n = train.len();
    let weights: usize = Model::zeros(spec.clone())
        .unwrap()
        .param_layers()
        .map(|p| p.weight().len())
        .sum();
    let dp = DpSgdConfig {
        clip_norm: ClipNorm::new(1.0).unwrap(),
        noise_multiplier: NoiseMultiplier::new(1.0).unwrap(),
        sample_rate: SampleRate::new(batch / n as f64).unwrap(),
        dataset_size: n,
    };
    let params = sphinx_protocol::params::build_training_parameters().unwrap();
    Client::new(
        params,
        spec,
        train,
        DpSgdAggregator::seeded(weights, dp, seed).unwrap(),
        ClientConfig {
            learning_rate: 0.1,
            init_seed: seed,
            bias_init: 0.01,
            weight_average: 0.0,
            // Timing only: a budget the run cannot reach.
            budget: PrivacyBudget {
                epsilon: Epsilon::new(1e6).unwrap(),
                delta: Delta::new(1e-5).unwrap(),
            },
        },
        ChaCha20Rng::seed_from_u64(seed + 1),
    )
    .unwrap()
}

/// A server on loopback TLS in this process, with an account and a model, and the
/// client that trains it (the same seed as the in-process session's client).
struct Networked {
    _dir: tempfile::TempDir,
    server: ServerHandle,
    conn: Connection,
    model: sphinx_protocol::wire::ModelId,
    client: Client,
    params: std::sync::Arc<sphinx_he::Parameters>,
}

impl Networked {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let name = AccountName::new("bench").unwrap();
        let token = sphinx_server::add_account(dir.path(), &name).unwrap();
        let server = ServerHandle::spawn(ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().to_path_buf(),
        ))
        .unwrap();
        let params = sphinx_protocol::params::build_training_parameters().unwrap();
        let (client, setup) = client(1);
        let mut conn = Connection::connect(server.addr(), server.fingerprint()).unwrap();
        conn.auth(&name, &token).unwrap();
        let model = conn.create_model(&setup, &params).unwrap();
        Self {
            _dir: dir,
            server,
            conn,
            model,
            client,
            params,
        }
    }

    fn step(&mut self) {
        self.conn
            .train_step(self.model, &mut self.client, &self.params)
            .unwrap();
    }

    fn stop(self) {
        drop(self.conn);
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
    let mut group = c.benchmark_group("training_step_mlp30_batch64");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(20));

    let (cl, setup) = client(1);
    let mut session = Session::new(cl, setup, &mut ChaCha20Rng::seed_from_u64(2)).unwrap();
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
    let (cl, setup) = client(1);
    let mut session = Session::new(cl, setup, &mut ChaCha20Rng::seed_from_u64(2)).unwrap();
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

criterion_group!(benches, bench);

fn main() {
    if let Some(pairs) = std::env::var("NETWORK_STEP_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        paired(pairs);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
