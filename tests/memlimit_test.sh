#!/bin/sh
# memlimit_test.sh — a model twice the size of its memory: a generated
# V2-Lite-shaped Q4_0 model runs greedy under tests/memlimit with a
# cap of half its file size, from a cold page cache, in each paging mode.
# Each run must finish, print the same tokens as an unconstrained run, and
# keep the group's peak (page cache included) under the cap.
#
# usage: tests/memlimit_test.sh [BUILD_DIR]        (default build)
#   ES_MEMLIMIT_MODEL  use this GGUF instead of generating one
#   ES_MEMLIMIT_ARGS   gen_model options (default: V2-Lite shape, 4 layers,
#                      a 32000-token vocabulary: a 1.0 GB file)
#   ES_MEMLIMIT_MODES  modes to run (default "mmap pread mmap-plain")
# Needs root (cgroups, drop_caches) and a memory cgroup controller; without
# them it prints SKIP, counts the test as one skip and exits 0.  The last
# line reads "N passed, N failed, N skipped".
set -u
BUILD=${1:-build}
MEMLIMIT=$(dirname "$0")/memlimit
MODES=${ES_MEMLIMIT_MODES:-mmap pread mmap-plain}
GEN_ARGS=${ES_MEMLIMIT_ARGS:---preset v2lite --layers 4 --vocab 32000 --type q4_0 --seed 7}
PROMPT="The capital of France is"
pass=0 fail=0

skip() { echo "SKIP memlimit_test: $*"; echo "0 passed, 0 failed, 1 skipped"; exit 0; }
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

[ "$(id -u)" = 0 ] || skip "needs root (memory cgroups, drop_caches)"
[ -x "$MEMLIMIT" ] || { echo "FAIL no $MEMLIMIT"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }
[ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || skip "no memory cgroup controller"
[ -w /proc/sys/vm/drop_caches ] || skip "cannot write /proc/sys/vm/drop_caches"
[ -x "$BUILD/edgeseek" ] || skip "$BUILD/edgeseek is not built (make)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model=${ES_MEMLIMIT_MODEL:-}
if [ -z "$model" ]; then
    [ -x "$BUILD/gen_model" ] || skip "$BUILD/gen_model is not built (make)"
    model=$tmp/model.gguf
    # shellcheck disable=SC2086
    "$BUILD/gen_model" $GEN_ARGS --quiet -o "$model" || { bad "gen_model $GEN_ARGS"; echo "$pass passed, $fail failed, 0 skipped"; exit 1; }
fi
size=$(stat -c %s "$model")
cap=$((size / 2))
echo "model $model: $size bytes; cap $cap bytes; load average $(cut -d' ' -f1-3 /proc/loadavg)"

run() { # run OUT ERR ARGS...: edgeseek run, greedy, 8 tokens
    out=$1 err=$2
    shift 2
    "$BUILD/edgeseek" run -m "$model" -p "$PROMPT" -n 8 --temp 0 -t 2 "$@" > "$out" 2> "$err"
}

if run "$tmp/ref.out" "$tmp/ref.err" --experts mmap-plain; then
    ok "unconstrained run"
else
    bad "unconstrained run: $(tail -1 "$tmp/ref.err")"
fi

for mode in $MODES; do
    sync
    echo 3 > /proc/sys/vm/drop_caches
    t0=$(date +%s)
    if "$MEMLIMIT" "$cap" "$BUILD/edgeseek" run -m "$model" -p "$PROMPT" -n 8 --temp 0 -t 2 \
        --experts "$mode" --stats > "$tmp/$mode.out" 2> "$tmp/$mode.err"; then
        ok "$mode under a cap of $cap bytes completes ($(( $(date +%s) - t0 )) s)"
    else
        bad "$mode under a cap of $cap bytes: $(grep -v '^\[paging\]' "$tmp/$mode.err" | tail -2)"
        continue
    fi
    if cmp -s "$tmp/ref.out" "$tmp/$mode.out"; then ok "$mode: same tokens as the unconstrained run"
    else bad "$mode: the tokens differ from the unconstrained run"; fi
    peak=$(sed -n 's/^memlimit: limit [0-9]* bytes, peak \([0-9]*\) bytes$/\1/p' "$tmp/$mode.err")
    if [ "$mode" = mmap-plain ]; then
        # the baseline leaves paging to the kernel, which fills the cap with page cache
        echo "     mmap-plain: peak ${peak:-?} bytes (the kernel's reclaim holds it at the cap)"
    elif [ -n "$peak" ] && [ "$peak" -lt "$cap" ]; then ok "$mode: peak $peak bytes < cap $cap"
    else bad "$mode: peak '${peak:-?}' bytes, cap $cap"; fi
    grep -E '^\[edgeseek\]|^\[paging\] (budget|expert|prefetch|storage|I/O)' "$tmp/$mode.err" | sed 's/^/     /'
done
echo "$pass passed, $fail failed, 0 skipped"
[ "$fail" -eq 0 ]
