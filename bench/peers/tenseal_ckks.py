#!/usr/bin/env python3
"""Time Microsoft SEAL's CKKS primitives (through TenSEAL's bundled bindings).

This is the peer half of `sphinx bench ckks`: it runs the same operations on the
same parameters, one thread, and writes JSON with the same keys (`ops_ns`,
`ciphertext_bytes`) so `sphinx bench ckks --peer FILE` can print the ratios.

TenSEAL's high-level `ckks_vector` API bundles steps (a product relinearizes
and rescales, encryption encodes), so every figure here goes through
`tenseal.sealapi`, TenSEAL's pybind11 bindings of SEAL itself, where each SEAL
call is reachable on its own. `labels` in the JSON says exactly which SEAL calls
each figure times. SEAL is single-threaded for all of these calls.

Every figure includes one pybind11 call (well under a microsecond); `encode`
and `decrypt_decode` also include converting the N/2 slot values between a
Python list and a std::vector<double>, which SEAL's C++ users do not pay.

Usage:
    python3 bench/peers/tenseal_ckks.py --log-n 13 --json seal-13.json
    python3 bench/peers/tenseal_ckks.py --log-n 14 --json seal-14.json
"""

import argparse
import json
import os
import platform
import random
import statistics
import struct
import sys
import tempfile
import time

import tenseal
import tenseal.sealapi as seal

# The parameter sets of issue 2: SEAL's standard N=8192 set and a deeper N=16384 one.
PRESETS = {
    13: [60, 40, 40, 60],
    14: [60] + [40] * 6 + [60],
}

SCALE_BITS = 40

# The clock timings read: elapsed time, or the CPU time of this thread (which leaves
# out the time other processes hold the core on a shared machine). Set by --clock.
CLOCKS = {"wall": time.perf_counter_ns, "thread-cpu": time.thread_time_ns}
clock = CLOCKS["wall"]


def median_ns(fn, setup=None, min_reps=20, max_reps=2000, budget_s=0.4, warmup=3):
    """(median, 10th percentile, count) of individually timed calls to fn(state).

    setup() makes fresh state, untimed. The 10th percentile shows what an
    undisturbed call costs when the machine is shared; the median is the headline.
    """
    for _ in range(warmup):
        fn(setup() if setup else None)
    samples = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < max_reps and (len(samples) < min_reps or time.perf_counter() < deadline):
        state = setup() if setup else None
        t0 = clock()
        fn(state)
        samples.append(clock() - t0)
    samples.sort()
    return int(statistics.median(samples)), samples[len(samples) // 10], len(samples)


def saved_bytes(obj):
    """Size of SEAL's own serialization (its default compression) and the header's compression mode."""
    fd, path = tempfile.mkstemp(suffix=".seal")
    os.close(fd)
    try:
        obj.save(path)
        with open(path, "rb") as f:
            data = f.read()
    finally:
        os.unlink(path)
    # SEALHeader: u16 magic, u8 header size, u8 major, u8 minor, u8 compression, u16 reserved, u64 size.
    magic, _hsize, major, minor, compr, _res, size = struct.unpack("<HBBBBHQ", data[:16])
    if magic != 0xA15E or size != len(data):
        raise RuntimeError("unexpected SEAL serialization header")
    mode = {0: "none", 1: "zlib", 2: "zstd"}.get(compr, f"unknown({compr})")
    return len(data), mode, f"{major}.{minor}"


def run(log_n, min_reps, budget_s):
    n = 1 << log_n
    bits = PRESETS[log_n]
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(n)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(n, bits))
    ctx = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
    if not ctx.parameters_set():
        raise RuntimeError(f"SEAL refused the parameters: {ctx.parameters_error_message()}")

    keygen = seal.KeyGenerator(ctx)
    sk = keygen.secret_key()
    pk = seal.PublicKey()
    keygen.create_public_key(pk)
    rk = seal.RelinKeys()
    keygen.create_relin_keys(rk)
    gk = seal.GaloisKeys()
    keygen.create_galois_keys(gk)  # SEAL's default set: ±2^i steps, includes step 1

    encoder = seal.CKKSEncoder(ctx)
    enc_pk = seal.Encryptor(ctx, pk)
    enc_sk = seal.Encryptor(ctx, sk)
    dec = seal.Decryptor(ctx, sk)
    ev = seal.Evaluator(ctx)
    scale = float(2**SCALE_BITS)
    slots = encoder.slot_count()
    top = ctx.first_parms_id()

    rng = random.Random(1)
    one = [0.5]
    xs = [rng.uniform(-1.0, 1.0) for _ in range(slots)]
    ys = [rng.uniform(-1.0, 1.0) for _ in range(slots)]

    def encode(v):
        pt = seal.Plaintext()
        encoder.encode(v, scale, pt)
        return pt

    def encrypt(pt):
        ct = seal.Ciphertext()
        enc_pk.encrypt(pt, ct)
        return ct

    pt_x, pt_y = encode(xs), encode(ys)
    ct_x, ct_y = encrypt(pt_x), encrypt(pt_y)
    ct3 = seal.Ciphertext()
    ev.multiply(ct_x, ct_y, ct3)
    ct_relin = seal.Ciphertext()  # a 2-component product at scale 2^80, ready to rescale
    ev.relinearize(ct3, rk, ct_relin)

    # Sanity: the pipeline computes x*y before any figure is trusted.
    chk = seal.Ciphertext()
    ev.multiply(ct_x, ct_y, chk)
    ev.relinearize_inplace(chk, rk)
    ev.rescale_to_next_inplace(chk)
    out = seal.Plaintext()
    dec.decrypt(chk, out)
    got = encoder.decode_double(out)
    max_err = max(abs(g - a * b) for g, a, b in zip(got, xs, ys))
    if max_err > 1e-3:
        raise RuntimeError(f"SEAL sanity check failed: max error {max_err}")

    ops, p10, labels, reps = {}, {}, {}, {}

    def timed(name, label, fn, setup=None):
        ops[name], p10[name], reps[name] = median_ns(fn, setup, min_reps=min_reps, budget_s=budget_s)
        labels[name] = label
        print(f"  {name:<18} {ops[name] / 1e3:>10.1f} us  ({reps[name]} reps)", file=sys.stderr)

    dest = seal.Ciphertext()
    ptmp = seal.Plaintext()

    # Binding costs SEAL's C++ users do not pay, measured so they can be taken out:
    # a full N/2-value list converted to std::vector<double> on the way in, and a
    # std::vector<double> of N/2 values converted to a list on the way out (the same
    # pybind11 conversion, timed on TenSEAL's PlainTensorDouble.data()).
    raw, raw_p10 = {}, {}
    raw["encode_full_list"], raw_p10["encode_full_list"], _ = median_ns(
        lambda _: encoder.encode(xs, scale, ptmp), min_reps=min_reps, budget_s=budget_s)
    out_list = tenseal.plain_tensor(xs).data
    raw["vector_to_list"], raw_p10["vector_to_list"], _ = median_ns(
        lambda _: out_list.data(), min_reps=min_reps, budget_s=budget_s)

    timed("encode", "CKKSEncoder.encode of a one-value list at scale 2^40, top level: SEAL zero-pads to N/2 "
          "slots and runs the same FFT and RNS conversion as for a full vector, without the binding's "
          "conversion of N/2 Python floats (the full-list figure is ops_ns_raw.encode_full_list)",
          lambda _: encoder.encode(one, scale, ptmp))
    timed("encrypt_pk", "Encryptor(public key).encrypt(plaintext) -> 2-component ciphertext",
          lambda _: enc_pk.encrypt(pt_x, dest))
    timed("encrypt_sk", "Encryptor(secret key).encrypt_symmetric(plaintext) -> full ciphertext in memory "
          "(c1 expanded from its seed; the seeded form is only a serialization)",
          lambda _: enc_sk.encrypt_symmetric(pt_x, dest))
    timed("decrypt_decode", "Decryptor.decrypt + CKKSEncoder.decode_double of a fresh ciphertext, minus the "
          "median cost of converting N/2 doubles to a Python list (ops_ns_raw.vector_to_list; the "
          "uncorrected figure is ops_ns_raw.decrypt_decode_with_list)",
          lambda _: (dec.decrypt(ct_x, ptmp), encoder.decode_double(ptmp)))
    raw["decrypt_decode_with_list"], raw_p10["decrypt_decode_with_list"] = ops["decrypt_decode"], p10["decrypt_decode"]
    ops["decrypt_decode"] -= raw["vector_to_list"]
    p10["decrypt_decode"] -= raw_p10["vector_to_list"]
    print(f"  {'':<18} {ops['decrypt_decode'] / 1e3:>10.1f} us  (decrypt_decode without the list conversion)",
          file=sys.stderr)
    timed("add", "Evaluator.add(ct, ct, dest), top level", lambda _: ev.add(ct_x, ct_y, dest))
    timed("mul_plain", "Evaluator.multiply_plain(ct, pre-encoded N/2-slot plaintext, dest), top level, no rescale",
          lambda _: ev.multiply_plain(ct_x, pt_y, dest))
    timed("mul_scalar", "CKKSEncoder.encode(float scalar, top parms_id, scale 2^40) + Evaluator.multiply_plain "
          "(SEAL has no ciphertext-by-scalar product)",
          lambda _: (encoder.encode(0.75, top, scale, ptmp), ev.multiply_plain(ct_x, ptmp, dest)))
    timed("mul", "Evaluator.multiply(ct, ct, dest): 3-component result, no relinearization, no rescale",
          lambda _: ev.multiply(ct_x, ct_y, dest))
    timed("relinearize", "Evaluator.relinearize(3-component ct, relin keys, dest), top level",
          lambda _: ev.relinearize(ct3, rk, dest))
    timed("rescale", "Evaluator.rescale_to_next(relinearized 2-component product, dest), top level "
          "(includes SEAL's copy into dest)",
          lambda _: ev.rescale_to_next(ct_relin, dest))

    def mrr(_):
        ev.multiply(ct_x, ct_y, dest)
        ev.relinearize_inplace(dest, rk)
        ev.rescale_to_next_inplace(dest)

    timed("mul_relin_rescale", "Evaluator.multiply + relinearize_inplace + rescale_to_next_inplace, top level", mrr)
    timed("rotate", "Evaluator.rotate_vector(ct, 1 step, Galois keys, dest), top level",
          lambda _: ev.rotate_vector(ct_x, 1, gk, dest))

    def coeff_form():
        c = seal.Ciphertext()
        ev.transform_from_ntt(ct_x, c)
        return c

    ntt_ns, ntt_p10, ntt_reps = median_ns(lambda c: ev.transform_to_ntt_inplace(c), coeff_form,
                                 min_reps=min_reps, budget_s=budget_s)
    # SEAL exposes the NTT only per object; a ciphertext holds two polynomials, ours times one.
    ops["ntt_forward"] = ntt_ns // 2
    p10["ntt_forward"] = ntt_p10 // 2
    reps["ntt_forward"] = ntt_reps
    labels["ntt_forward"] = (f"half of Evaluator.transform_to_ntt_inplace on a 2-component top-level ciphertext "
                             f"({ntt_ns} ns for 2 x {len(bits) - 1} limb NTTs): one polynomial, all "
                             f"{len(bits) - 1} ciphertext primes")
    print(f"  {'ntt_forward':<18} {ops['ntt_forward'] / 1e3:>10.1f} us  ({ntt_reps} reps, per polynomial)",
          file=sys.stderr)

    fresh, compr, header_version = saved_bytes(ct_x)
    seeded_ser = enc_sk.encrypt_symmetric(pt_x)
    seeded, _, _ = saved_bytes(seeded_ser)
    low = encrypt(pt_x)
    ev.mod_switch_to_inplace(low, ctx.last_parms_id())
    level0, _, _ = saved_bytes(low)

    # Keys as a client would upload them: KeyGenerator's Serializable forms, which
    # store the uniform halves of the keys as seeds. The bindings cannot return a
    # Serializable<PublicKey>, so the public key is SEAL's full (unseeded) form.
    pk_bytes, _, _ = saved_bytes(pk)
    rk_bytes, _, _ = saved_bytes(keygen.create_relin_keys())
    gk_all_bytes, _, _ = saved_bytes(keygen.create_galois_keys())
    gk_count = gk.size()

    return {
        "engine": "Microsoft SEAL via tenseal.sealapi",
        "tenseal_version": tenseal.__version__,
        "seal_serialization_version": header_version,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": 1,
        "log_n": log_n,
        "moduli_bits": bits,
        "scale_bits": SCALE_BITS,
        "security": 128,
        "slots": slots,
        "ops_ns": ops,
        "ops_ns_p10": p10,
        "ops_ns_raw": raw,
        "ops_ns_raw_p10": raw_p10,
        "reps": reps,
        "labels": labels,
        "ciphertext_bytes": {"fresh": fresh, "seeded": seeded, "level0": level0},
        "ciphertext_bytes_labels": {
            "fresh": f"Ciphertext.save of a public-key encryption at the top level ({compr} compression, SEAL's default)",
            "seeded": f"Serializable<Ciphertext>.save from encrypt_symmetric: c1 replaced by its seed ({compr})",
            "level0": f"Ciphertext.save after mod_switch_to the last level, one prime ({compr})",
        },
        "key_bytes": {
            "public_key": pk_bytes,
            "relin_key": rk_bytes,
            "galois_key": gk_all_bytes // gk_count,
        },
        "key_bytes_labels": {
            "public_key": f"PublicKey.save, full form ({compr}): TenSEAL's bindings do not return SEAL's "
                          f"seeded Serializable<PublicKey>, which would be about half",
            "relin_key": f"Serializable<RelinKeys>.save from KeyGenerator.create_relin_keys (seeded, {compr})",
            "galois_key": f"Serializable<GaloisKeys>.save of SEAL's default set ({gk_count} keys, seeded, "
                          f"{compr}) divided by the key count",
        },
        "compression": compr,
        "sanity_max_abs_error_mul_relin_rescale": max_err,
    }


def merge_round(best, new):
    """Keeps, per figure, the smaller of two rounds' medians (and 10th percentiles)."""
    for key in ("ops_ns", "ops_ns_p10", "ops_ns_raw", "ops_ns_raw_p10"):
        for op, ns in new[key].items():
            best[key][op] = min(best[key][op], ns)
    for op, n in new["reps"].items():
        best["reps"][op] += n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log-n", type=int, default=13, choices=sorted(PRESETS))
    ap.add_argument("--json", metavar="FILE", help="write the results here")
    ap.add_argument("--min-reps", type=int, default=30, help="fewest timed calls per operation")
    ap.add_argument("--budget-s", type=float, default=0.5, help="keep timing an operation until this many seconds")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the whole sweep; each figure is then the minimum over rounds of the "
                         "round's median (the least disturbed round on a shared machine)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall time, or this thread's CPU time (leaves out waiting for a core)")
    args = ap.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"SEAL via TenSEAL {tenseal.__version__}: N=2^{args.log_n}, moduli {PRESETS[args.log_n]}, "
          f"scale 2^{SCALE_BITS}, one thread", file=sys.stderr)
    result = run(args.log_n, args.min_reps, args.budget_s)
    for r in range(2, args.rounds + 1):
        print(f"round {r} of {args.rounds}", file=sys.stderr)
        merge_round(result, run(args.log_n, args.min_reps, args.budget_s))
    result["rounds"] = args.rounds
    result["clock"] = args.clock
    text = json.dumps(result, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
