//! Quick single-thread timings of the CKKS primitives at SEAL's N = 8192 preset
//! (development aid; the official benchmarks are the criterion benches and `sphinx bench ckks`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_he::*;

fn time<T>(name: &str, iters: usize, mut f: impl FnMut() -> T) {
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        std::hint::black_box(f());
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "{name:<20} {:>9.1} us (median of {iters})",
        samples[iters / 2]
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
