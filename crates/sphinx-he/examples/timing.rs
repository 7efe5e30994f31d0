//! Quick single-thread timings of the CKKS primitives at SEAL's N = 8192 preset
//! (development aid; the official benchmarks are the criterion benches and `sphinx bench ckks`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_he::*;

/// CPU time of this thread in nanoseconds (Linux), so that other load on a shared machine
/// inflates the figures less than wall-clock time would.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn time<T>(name: &str, _iters: usize, mut f: impl FnMut() -> T) {
    if let Ok(only) = std::env::var("ONLY")
        && !name.starts_with(&only)
    {
        return;
    }
    let mut wall = Vec::new();
    let c0 = thread_cpu_ns();
    let start = Instant::now();
    // Run for at least 0.4 s so the tick-granular CPU-time total is meaningful.
    while wall.len() < 20
        || start.elapsed().as_secs_f64()
            < std::env::var("SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0.4)
    {
        let t = Instant::now();
        std::hint::black_box(f());
        wall.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let iters = wall.len();
    let cpu_mean = match (c0, thread_cpu_ns()) {
        (Some(a), Some(b)) => (b - a) as f64 / 1e3 / iters as f64,
        _ => f64::NAN,
    };
    wall.sort_by(f64::total_cmp);
    println!(
        "{name:<16} wall median {:>8.1} min {:>8.1} us | cpu mean {cpu_mean:>8.1} us ({iters} runs)",
        wall[iters / 2],
        wall[0]
    );
}

fn main() -> Result<()> {
    let lit = match std::env::args().nth(1).as_deref() {
        Some("16384") => ParametersLiteral::seal_n16384(),
        _ => ParametersLiteral::seal_n8192(),
    };
    let params = lit.build()?;
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let sk = SecretKey::generate(&params, &mut rng)?;
    let pk = PublicKey::new(&sk, &mut rng)?;
    let rlk = RelinearizationKey::new(&sk, &mut rng)?;
    let gk = GaloisKeys::new(&sk, &[1], false, &mut rng)?;
    let enc = Encoder::new(&params);
    let eval = Evaluator::new(&params);
    let x: Vec<f64> = (0..params.slots())
        .map(|i| (i as f64 / 100.0).sin())
        .collect();
    let top = params.max_level();
    let pt = enc.encode(&x, params.scale(), top)?;
    let ct = pk.encrypt(&pt, &mut rng)?;
    let ct2 = pk.encrypt(&pt, &mut rng)?;
    let it = 200;
    let plan = &params.q_basis(0)?.plans()[0];
    let mut buf = pt.poly().limb(0).to_vec();
    time("ntt_forward", it, || plan.forward(&mut buf));
    time("ntt_inverse", it, || plan.inverse(&mut buf));
    time("relin-ntts (15f+5i)", it, || {
        for _ in 0..15 {
            plan.forward(&mut buf);
        }
        for _ in 0..5 {
            plan.inverse(&mut buf);
        }
    });
    let m = *plan.modulus();
    let a = pt.poly().limb(0).to_vec();
    let b: Vec<u64> = ct.polys()[0].limb(0).to_vec();
    let b_shoup: Vec<u64> = b.iter().map(|&x| m.shoup(x)).collect();
    let mut out = a.clone();
    time("limb mul barrett", it, || {
        out.copy_from_slice(&a);
        m.mul_assign_slice(&mut out, &b)
    });
    time("limb mul tfhe", it, || {
        out.iter_mut().for_each(|x| *x = 0);
        plan.mul_accumulate(&mut out, &a, &b)
    });
    time("limb mul shoup", it, || {
        out.copy_from_slice(&a);
        m.mul_shoup_vec_assign_slice(&mut out, &b, &b_shoup)
    });
    time("limb copy", it, || out.copy_from_slice(&a));
    time("encode", it, || {
        enc.encode(&x, params.scale(), top).unwrap()
    });
    time("encrypt_pk", it, || pk.encrypt(&pt, &mut rng).unwrap());
    time("encrypt_sk", it, || sk.encrypt(&pt, &mut rng).unwrap());
    time("decrypt_decode", it, || {
        enc.decode(&sk.decrypt(&ct).unwrap()).unwrap()
    });
    time("add", it, || eval.add(&ct, &ct2).unwrap());
    time("mul_plain", it, || eval.mul_plain(&ct, &pt).unwrap());
    time("mul_scalar", it, || eval.mul_scalar(&ct, 0.5).unwrap());
    time("mul_integer", it, || eval.mul_integer(&ct, 3).unwrap());
    time("mul (no relin)", it, || eval.multiply(&ct, &ct2).unwrap());
    let three = eval.multiply(&ct, &ct2)?;
    time("relinearize", it, || {
        eval.relinearize(&three, &rlk).unwrap()
    });
    time("rescale", it, || eval.rescale(&ct).unwrap());
    time("rotate", it, || eval.rotate(&ct, 1, &gk).unwrap());
    time("clone (ref)", it, || ct.clone());
    Ok(())
}
