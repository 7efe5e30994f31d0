#!/usr/bin/env bash
# Installs TenSEAL from PyPI into a private virtual environment and times SEAL's CKKS
# primitives for both parameter sets of issue 2. Writes target/peers/seal-13.json and
# seal-14.json (the files `sphinx bench ckks --peer FILE` reads).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/peers-venv
out=target/peers
python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install --quiet -r bench/peers/requirements.txt
mkdir -p "$out"
for log_n in 13 14; do
    "$venv/bin/python" bench/peers/tenseal_ckks.py --log-n "$log_n" --json "$out/seal-$log_n.json"
done
