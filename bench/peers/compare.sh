#!/usr/bin/env bash
# Times Microsoft SEAL (TenSEAL from PyPI, in a private venv) and then sphinx-he on the
# same CKKS parameter sets, one thread each, back to back, and prints our figures beside
# SEAL's with the ratio per operation. Each tool sweeps ROUNDS times (default 3) and keeps,
# per operation, the smallest round median: the machine is shared, and the least disturbed
# round is the closest to the cost of the code. CLOCK (default thread-cpu) picks what both
# tools time: the CPU time of the timing thread, which leaves out the time other processes
# hold the core, or wall (elapsed) time.
#
#   bench/peers/compare.sh          # N = 2^13 and 2^14
#   bench/peers/compare.sh 13       # one set
#
# On a shared machine, NICE=-10 (root only) runs both timing processes at a higher
# priority than builds around them; both tools get the same priority.
#
# Writes target/peers/seal-N.json (SEAL) and target/peers/ours-N.json (ours, with the
# peer's figures and the ratios under "peer").
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/peers-venv
out=target/peers
python=${PYTHON:-python3}
rounds=${ROUNDS:-3}
clock=${CLOCK:-thread-cpu}
prio=()
[ -n "${NICE:-}" ] && prio=(nice -n "$NICE")
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install --quiet -r bench/peers/requirements.txt
cargo build --release --quiet -p sphinx
mkdir -p "$out"
for log_n in "${@:-13 14}"; do
    for n in $log_n; do
        echo "== N = 2^$n (load average: $(cut -d' ' -f1-3 /proc/loadavg); priority ${NICE:-0})"
        "${prio[@]}" "$venv/bin/python" bench/peers/tenseal_ckks.py --log-n "$n" --rounds "$rounds" --clock "$clock" --json "$out/seal-$n.json"
        "${prio[@]}" target/release/sphinx bench ckks --log-n "$n" --threads 1 --rounds "$rounds" --clock "$clock" \
            --peer "$out/seal-$n.json" --json "$out/ours-$n.json"
    done
done
