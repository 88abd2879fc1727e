#!/bin/sh
# contention.sh — decode speed while other programs keep CPUs busy: -t 1
# against the default thread count, with 0, 1, ... busy processes.
#
# usage: sh bench/contention.sh [-m MODEL] [-b "0 1 2"] [-r ROUNDS] [-n TOKENS] [BIN ...]
#   -m MODEL   the model (default models/edgeseek-default.gguf; a bigger one,
#              e.g. build/gen_model --preset v2lite --layers 4 --type q4_0,
#              shows more: its decode is not dominated by the serial parts)
#   -b LIST    numbers of busy processes (default "0 1"); each is
#              `sh -c 'while :; do :; done'`, bounded by timeout, killed at the end
#   -r ROUNDS  rounds (default 3); each runs every binary at both thread
#              counts once, so a drift of the machine's speed hits all alike
#   -n TOKENS  tokens decoded per run (default 32)
#   BIN ...    edgeseek binaries to compare (default build/edgeseek)
# Prints one row per busy count and binary: the median decode t/s at -t 1
# and at the default -t, and their ratio (default / -t 1; under 1 means the
# default was slower than one thread).
set -u
model=models/edgeseek-default.gguf
busy_list="0 1"
rounds=3
ntok=32
while [ $# -gt 0 ]; do
    case "$1" in
    -m) model=$2; shift 2 ;;
    -b) busy_list=$2; shift 2 ;;
    -r) rounds=$2; shift 2 ;;
    -n) ntok=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "contention.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -gt 0 ] || set -- build/edgeseek
for b in "$@"; do
    [ -x "$b" ] || { echo "contention.sh: $b is not an executable" >&2; exit 1; }
done
[ -r "$model" ] || { echo "contention.sh: cannot read $model" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/contention.XXXXXX") || exit 1
busy_pids=""
stop_busy() {
    for p in $busy_pids; do kill "$p" 2>/dev/null; done
    for p in $busy_pids; do wait "$p" 2>/dev/null; done
    busy_pids=""
}
trap 'stop_busy; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# one run: decode t/s (and the thread count bench reports) of BIN at -t T
# (T = default: no -t)
one_run() {
    if [ "$2" = default ]; then targ=""; else targ="-t $2"; fi
    # shellcheck disable=SC2086
    "$1" bench -m "$model" -p 0 -n "$ntok" -d 0 -r 1 --no-bw $targ 2>/dev/null |
        awk -F'|' '/\| tg/ { gsub(/ /, "", $2); split($4, v, " "); print v[1], $2; exit }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2); else print 0 }'; }

cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
echo "CPU: ${cpu:-unknown}, $(nproc) CPUs usable; model $(basename "$model"), tg$ntok, median of $rounds rounds"
echo
echo "| busy processes | binary | -t 1 t/s | default -t | default t/s | default / -t 1 |"
echo "| ---: | --- | ---: | ---: | ---: | ---: |"
for nb in $busy_list; do
    i=0
    while [ "$i" -lt "$nb" ]; do
        timeout 600 sh -c 'while :; do :; done' &
        busy_pids="$busy_pids $!"
        i=$((i + 1))
    done
    sleep 0.2
    r=0
    while [ "$r" -lt "$rounds" ]; do
        k=0
        for b in "$@"; do
            for t in 1 default; do
                one_run "$b" "$t" >>"$tmp/$nb.$k.$t"
            done
            k=$((k + 1))
        done
        r=$((r + 1))
    done
    stop_busy
    k=0
    for b in "$@"; do
        m1=$(cut -d' ' -f1 "$tmp/$nb.$k.1" | median)
        md=$(cut -d' ' -f1 "$tmp/$nb.$k.default" | median)
        td=$(cut -d' ' -f2 "$tmp/$nb.$k.default" | head -n 1)
        awk -v nb="$nb" -v b="$b" -v m1="$m1" -v md="$md" -v td="${td:-?}" \
            'BEGIN { printf "| %d | %s | %.2f | %s | %.2f | %.2f |\n", nb, b, m1, td, md, (m1 > 0 ? md / m1 : 0) }'
        k=$((k + 1))
    done
done
