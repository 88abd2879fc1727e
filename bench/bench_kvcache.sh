#!/bin/sh
# bench_kvcache.sh — the figures of README "KV cache types and saved sessions" on one model:
#   1. decode tokens/s at depths 512, 4K and 16K for each --kv-type (bench_attention --decode:
#      whole decode steps, the cache filled with random rows, types interleaved round by
#      round, medians);
#   2. one layer's decode attention alone at those depths for each type (bench_attention);
#   3. time to first token with a 4K-token prompt loaded from a session file against
#      prefilling it (edgeseek run --session, rounds alternating the two, medians).
# Usage: bench/bench_kvcache.sh MODEL [THREADS] [ROUNDS]   (after `make bench`)
# The load average is printed before each part: on a shared machine, compare figures of one run.
set -e
M=${1:?usage: bench/bench_kvcache.sh MODEL [THREADS] [ROUNDS]}
THR=${2:-2}
ROUNDS=${3:-3}
B=${ES_BUILD:-build}
TYPES=f32,f16,bf16,q8_0
W=$(mktemp -d "${TMPDIR:-/tmp}/es-kvbench.XXXXXX")
trap 'rm -rf "$W"' EXIT
lscpu | grep 'Model name' || true

echo "== decode at depth ($(uptime | sed 's/.*load/load/'))"
"$B/bench/bench_attention" -m "$M" --decode 8 --pos 512,4096,16384 --reps 5 --kv-type $TYPES --threads "$THR"

echo "== one layer's decode attention ($(uptime | sed 's/.*load/load/'))"
"$B/bench/bench_attention" -m "$M" -T 1 --pos 512,4096,16384 --reps 7 --kv-type $TYPES --threads "$THR" --no-expanded

echo "== time to first token, 4K-token prompt ($(uptime | sed 's/.*load/load/'))"
# about 4,000 tokens of plain words (the count depends on the model's vocabulary: see the stats line)
awk 'BEGIN { srand(3); split("the a of and to in is was for on that with as by at from it this be river mountain engine paper window number market garden silver harbor", w, " ");
             for (i = 0; i < 1395; i++) printf "%s ", w[int(rand() * 30) + 1]; print "" }' > "$W/prompt.txt"
run() { "$B/edgeseek" run -m "$M" -f "$W/prompt.txt" -n 1 --temp 0 -c 4200 -t "$THR" "$@" 2>&1 >/dev/null |
        grep -o 'prompt [0-9]* tokens ([0-9]* from the session file).*first token [0-9.]* s' | sed 's/|.*|/|/'; }
run --session "$W/p.session" >/dev/null # writes the session file
for r in $(seq "$ROUNDS"); do
    echo "round $r, prefill: $(run)"
    echo "round $r, loaded:  $(run --session "$W/p.session")"
done
