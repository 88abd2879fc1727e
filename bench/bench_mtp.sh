#!/bin/sh
# bench_mtp.sh — the MTP figures of README "Multi-token prediction" on one model with an MTP
# block: greedy decode tokens/s without and with --mtp (edgeseek bench --mtp: the two
# interleaved round by round, medians and the median of the per-round ratio), the
# acceptance rate and the tokens per forward pass, at the depths given; then the same
# under paging when a budget is given (the gate keeps drafting off while experts are
# evicted).
# Usage: bench/bench_mtp.sh MODEL [THREADS] [ROUNDS] [TOKENS] [BUDGET]   (after `make`)
# The CPU and the load average are printed: on a shared machine, compare figures of one run.
set -e
M=${1:?usage: bench/bench_mtp.sh MODEL [THREADS] [ROUNDS] [TOKENS] [BUDGET]}
THR=${2:-2}
ROUNDS=${3:-5}
TOKENS=${4:-128}
BUDGET=${5:-}
B=${ES_BUILD:-build}
lscpu | grep 'Model name' || true
echo "== greedy decode, without and with --mtp ($(uptime | sed 's/.*load/load/'))"
"$B/edgeseek" bench -m "$M" --mtp -p 0 -n "$TOKENS" -d 0,512 -r "$ROUNDS" -t "$THR" --no-bw
if [ -n "$BUDGET" ]; then
    echo "== under a budget of $BUDGET for the routed experts ($(uptime | sed 's/.*load/load/'))"
    for f in "" --mtp; do
        "$B/edgeseek" run -m "$M" -p "The history of the river" -n "$TOKENS" --temp 0 -t "$THR" \
            --mem-budget "$BUDGET" $f 2>&1 >/dev/null | grep '^\[edgeseek\]' || true
    done
fi
echo "(load at the end: $(uptime | sed 's/.*load/load/'))"
